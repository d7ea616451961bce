//! The lab's pods as policy objects: `pod add`/`label` write the pod's `PodLabels` object
//! into the lab's etcd (and its `Namespace` object, labelled
//! `kubernetes.io/metadata.name=<ns>` as Kubernetes does, when none exists), `pod del`
//! removes it. Best effort: the pod itself never depends on etcd answering; a failure is
//! reported and the pod command still succeeds.

use std::collections::BTreeMap;

use weft_policy::{NAMESPACE_NAME_LABEL, Namespace, Object, PodLabels};
use weft_store::{AnyStore, Datastore, ObjectKind};

use super::names::Names;
use super::state;
use weft_ctl::policy::{PolicyError, StoreArgs};

fn lab_store(names: &Names) -> StoreArgs {
    StoreArgs {
        etcd_endpoints: Vec::new(),
        etcd_prefix: weft_store::DEFAULT_PREFIX.to_string(),
        lab: Some(names.lab().to_owned()),
        store_path: None,
        kube: weft_ctl::policy::KubeArgs {
            kubernetes: false,
            kubeconfig: None,
            kube_namespace: "weft-system".to_owned(),
        },
    }
}

/// Writes (or rewrites) `pod`'s PodLabels object, keeping named ports an applied object
/// gave it, and creates its Namespace object when missing.
pub fn record(names: &Names, pod: &state::Pod) {
    let outcome = lab_store(names).session(async |store: AnyStore| {
        let (_, existing) = store.list_objects(ObjectKind::PodLabels).await?;
        let ports = existing
            .iter()
            .find(|o| o.namespace == pod.namespace && o.name == pod.name)
            .and_then(|o| weft_policy::parse(&o.value.to_string(), &Default::default()).ok())
            .and_then(|objs| match objs.into_iter().next() {
                Some(Object::PodLabels(p)) => Some(p.ports),
                _ => None,
            })
            .unwrap_or_default();
        let (_, namespaces) = store.list_objects(ObjectKind::Namespace).await?;
        if !namespaces.iter().any(|n| n.name == pod.namespace) {
            let ns = Object::Namespace(Namespace {
                name: pod.namespace.clone(),
                labels: BTreeMap::from([(NAMESPACE_NAME_LABEL.to_string(), pod.namespace.clone())]),
            });
            store
                .put_object(ObjectKind::Namespace, "", &pod.namespace, &ns.to_json())
                .await?;
        }
        let obj = Object::PodLabels(PodLabels {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            labels: pod.labels.clone(),
            ports,
        });
        store
            .put_object(
                ObjectKind::PodLabels,
                &pod.namespace,
                &pod.name,
                &obj.to_json(),
            )
            .await?;
        Ok::<(), PolicyError>(())
    });
    if let Err(e) = outcome {
        eprintln!(
            "pod {}: labels not recorded in the lab's datastore: {e}",
            pod.name
        );
    }
}

/// Removes `pod`'s PodLabels object (its Namespace object stays, as in Kubernetes).
pub fn forget(names: &Names, pod: &state::Pod) {
    let outcome = lab_store(names).session(async |store: AnyStore| {
        store
            .delete_object(ObjectKind::PodLabels, &pod.namespace, &pod.name)
            .await?;
        Ok::<(), PolicyError>(())
    });
    if let Err(e) = outcome {
        eprintln!(
            "pod {}: labels not removed from the lab's datastore: {e}",
            pod.name
        );
    }
}
