//! The lab's pods as the datastore's objects, which is where weftd takes their labels (and
//! named ports) from for NetworkPolicy:
//!
//! - etcd: `pod add`/`label` write the pod's `PodLabels` object into the lab's etcd (and its
//!   `Namespace` object, labelled `kubernetes.io/metadata.name=<ns>` as Kubernetes does,
//!   when none exists), `pod del` removes it. Best effort: the pod itself never depends on
//!   etcd answering; a failure is reported and the pod command still succeeds.
//! - Kubernetes: the lab does the kubelet's part (`kubeapi`): the Pod object before the CNI
//!   ADD (its namespace made when missing), its status after, its labels patched, the
//!   object deleted after the DEL. Not best effort: a pod without its object would have no
//!   labels and no addresses in the cluster, so a failure fails the command.

use std::collections::BTreeMap;
use std::net::IpAddr;

use weft_policy::{NAMESPACE_NAME_LABEL, NamedPort, Namespace, Object, PodLabels, Protocol};
use weft_store::{AnyStore, Datastore as _, ObjectKind};

use super::error::Result;
use super::kubeapi::Session;
use super::names::{LabelChange, Names};
use super::state::{self, Datastore, Options};
use weft_ctl::policy::{PolicyError, StoreArgs};

/// Where a lab's pod objects go.
pub enum Objects {
    Etcd,
    Kube(Box<Session>),
}

impl Objects {
    /// For a lab with `opts`: on Kubernetes, a session with its API server.
    pub fn open(names: &Names, opts: &Options) -> Result<Objects> {
        Ok(match opts.datastore {
            Datastore::Etcd => Objects::Etcd,
            Datastore::Kubernetes => Objects::Kube(Box::new(Session::connect(names)?)),
        })
    }

    /// Before the pod's ADD: on Kubernetes its namespace and its Pod object, so weftd can
    /// read the pod's labels when the plugin attaches it.
    pub fn before_add(&self, pod: &state::Pod) -> Result<()> {
        match self {
            Objects::Etcd => Ok(()),
            Objects::Kube(s) => {
                s.ensure_namespace(&pod.namespace)?;
                s.create_pod(pod)
            }
        }
    }

    /// The pod's ADD failed: on Kubernetes its Pod object goes (the lab forgets the pod).
    pub fn add_failed(&self, pod: &state::Pod) -> Result<()> {
        match self {
            Objects::Etcd => Ok(()),
            Objects::Kube(s) => s.delete_pod(&pod.namespace, &pod.name),
        }
    }

    /// After the pod's ADD: its PodLabels object (etcd), or its status (Kubernetes: what
    /// other nodes learn its addresses from). `host` is its node's address.
    pub fn after_add(&self, names: &Names, pod: &state::Pod, host: IpAddr) -> Result<()> {
        match self {
            Objects::Etcd => {
                record(names, pod);
                Ok(())
            }
            Objects::Kube(s) => s.pod_running(pod, host),
        }
    }

    /// A wired pod's objects as they should be (`lab up` on a lab that exists): on
    /// Kubernetes the Pod object and its status; etcd's PodLabels were written when the
    /// pod was wired.
    pub fn ensure_wired(&self, pod: &state::Pod, host: IpAddr) -> Result<()> {
        match self {
            Objects::Etcd => Ok(()),
            Objects::Kube(s) => {
                s.ensure_namespace(&pod.namespace)?;
                s.create_pod(pod)?;
                s.pod_running(pod, host)
            }
        }
    }

    /// `pod` (as the record now has it) was relabelled by `changes`.
    pub fn relabel(&self, names: &Names, pod: &state::Pod, changes: &[LabelChange]) -> Result<()> {
        match self {
            Objects::Etcd => {
                record(names, pod);
                Ok(())
            }
            Objects::Kube(s) => s.relabel_pod(pod, changes),
        }
    }

    /// The pod is gone (after its DEL, or with its node).
    pub fn forget(&self, names: &Names, pod: &state::Pod) -> Result<()> {
        match self {
            Objects::Etcd => {
                forget(names, pod);
                Ok(())
            }
            Objects::Kube(s) => s.delete_pod(&pod.namespace, &pod.name),
        }
    }
}

fn lab_store(names: &Names) -> StoreArgs {
    StoreArgs {
        etcd_endpoints: Vec::new(),
        etcd_prefix: weft_store::DEFAULT_PREFIX.to_string(),
        lab: Some(names.lab().to_owned()),
        store_path: None,
        kube: Default::default(),
    }
}

/// Writes (or rewrites) `pod`'s PodLabels object with the record's named ports (or, when
/// the record has none, the ones an applied object gave it), and creates its Namespace
/// object when missing.
fn record(names: &Names, pod: &state::Pod) {
    let outcome = lab_store(names).session(async |store: AnyStore| {
        let ports = if pod.ports.is_empty() {
            let (_, existing) = store.list_objects(ObjectKind::PodLabels).await?;
            existing
                .iter()
                .find(|o| o.namespace == pod.namespace && o.name == pod.name)
                .and_then(|o| weft_policy::parse(&o.value.to_string(), &Default::default()).ok())
                .and_then(|objs| match objs.into_iter().next() {
                    Some(Object::PodLabels(p)) => Some(p.ports),
                    _ => None,
                })
                .unwrap_or_default()
        } else {
            pod_ports(pod)
        };
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

/// The record's named ports in weft-policy's model.
fn pod_ports(pod: &state::Pod) -> BTreeMap<String, NamedPort> {
    pod.ports
        .iter()
        .filter_map(|p| {
            let protocol: Protocol = serde_json::from_value(p.protocol.as_str().into()).ok()?;
            Some((
                p.name.clone(),
                NamedPort {
                    protocol,
                    port: p.port,
                },
            ))
        })
        .collect()
}

/// Removes `pod`'s PodLabels object (its Namespace object stays, as in Kubernetes).
fn forget(names: &Names, pod: &state::Pod) {
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
