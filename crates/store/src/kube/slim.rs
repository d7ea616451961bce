//! Pods and Nodes as the mirror's watches read them: only the fields weft uses.
//!
//! A list page of 500 full `Pod`s is ~10 MiB once decoded, most of it `managedFields`
//! (each a tree of JSON maps) and spec fields weft never reads; a real Node's status
//! carries its image list. Decoding into these types skips all of that as the bytes are
//! read (serde ignores unknown fields without building them), so a page costs about its
//! raw size. Each is turned into the `k8s_openapi` type `convert` reads with every field
//! it does not read left empty.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Node, NodeSpec, Pod, PodIP, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{ClusterResourceScope, NamespaceResourceScope};
use kube::Resource;
use serde::{Deserialize, Deserializer};

/// The metadata weft reads; `managedFields`, `ownerReferences` and the rest are skipped.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
}

/// A Pod's: its annotations (kubectl's last-applied configuration, …) are not read either.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodMeta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    labels: Option<BTreeMap<String, String>>,
}

fn pod_meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let m = PodMeta::deserialize(d)?;
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        resource_version: m.resource_version,
        labels: m.labels,
        ..ObjectMeta::default()
    })
}

fn meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let m = Meta::deserialize(d)?;
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        resource_version: m.resource_version,
        labels: m.labels,
        annotations: m.annotations,
        ..ObjectMeta::default()
    })
}

/// A Pod: name, labels, node, host network, named ports, phase and addresses.
#[derive(Clone, Debug, Deserialize)]
pub struct SlimPod {
    #[serde(default, deserialize_with = "pod_meta")]
    metadata: ObjectMeta,
    spec: Option<SlimPodSpec>,
    status: Option<SlimPodStatus>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SlimPodSpec {
    host_network: Option<bool>,
    node_name: Option<String>,
    containers: Option<Vec<SlimContainer>>,
}

#[derive(Clone, Debug, Deserialize)]
struct SlimContainer {
    ports: Option<Vec<ContainerPort>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SlimPodStatus {
    phase: Option<String>,
    #[serde(rename = "podIP")]
    pod_ip: Option<String>,
    #[serde(rename = "podIPs")]
    pod_ips: Option<Vec<PodIP>>,
}

impl SlimPod {
    /// The Pod as `convert::pod_view` reads it.
    pub fn to_pod(&self) -> Pod {
        Pod {
            metadata: self.metadata.clone(),
            spec: self.spec.as_ref().map(|s| PodSpec {
                host_network: s.host_network,
                node_name: s.node_name.clone(),
                containers: s
                    .containers
                    .iter()
                    .flatten()
                    .map(|c| Container {
                        ports: c.ports.clone(),
                        ..Container::default()
                    })
                    .collect(),
                ..PodSpec::default()
            }),
            status: self.status.as_ref().map(|s| PodStatus {
                phase: s.phase.clone(),
                pod_ip: s.pod_ip.clone(),
                pod_ips: s.pod_ips.clone(),
                ..PodStatus::default()
            }),
        }
    }
}

/// `kube::Resource` for a slim core/v1 type: the kind, plural and scope of the object it
/// stands for, so `Api<Slim…>` lists and watches that object's own path.
macro_rules! core_v1_resource {
    ($ty:ty, $scope:ty, $kind:literal, $plural:literal) => {
        impl Resource for $ty {
            type DynamicType = ();
            type Scope = $scope;

            fn kind(_: &()) -> Cow<'_, str> {
                $kind.into()
            }
            fn group(_: &()) -> Cow<'_, str> {
                "".into()
            }
            fn version(_: &()) -> Cow<'_, str> {
                "v1".into()
            }
            fn plural(_: &()) -> Cow<'_, str> {
                $plural.into()
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

core_v1_resource!(SlimPod, NamespaceResourceScope, "Pod", "pods");

/// A Node: name, UID, annotations and pod CIDRs (its status, with the image list, is
/// skipped: the underlay addresses are read from the API when weftd needs its own).
#[derive(Clone, Debug, Deserialize)]
pub struct SlimNode {
    #[serde(default, deserialize_with = "meta")]
    metadata: ObjectMeta,
    spec: Option<SlimNodeSpec>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SlimNodeSpec {
    #[serde(rename = "podCIDR")]
    pod_cidr: Option<String>,
    #[serde(rename = "podCIDRs")]
    pod_cidrs: Option<Vec<String>>,
}

impl SlimNode {
    /// The Node as `convert::node_record` and `convert::pod_cidrs` read it.
    pub fn to_node(&self) -> Node {
        Node {
            metadata: self.metadata.clone(),
            spec: self.spec.as_ref().map(|s| NodeSpec {
                pod_cidr: s.pod_cidr.clone(),
                pod_cidrs: s.pod_cidrs.clone(),
                ..NodeSpec::default()
            }),
            status: None,
        }
    }
}

core_v1_resource!(SlimNode, ClusterResourceScope, "Node", "nodes");

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_slim_pod_reads_what_pod_view_needs() {
        let full = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "web-0", "namespace": "shop", "uid": "u1", "resourceVersion": "7",
                "labels": {"app": "web"},
                "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
            },
            "spec": {
                "nodeName": "n1",
                "containers": [{"name": "c", "image": "i",
                    "ports": [{"name": "http", "containerPort": 80, "protocol": "TCP"}]}],
            },
            "status": {"phase": "Running", "podIP": "10.0.0.2", "podIPs": [{"ip": "10.0.0.2"}]},
        });
        let pod: Pod = serde_json::from_value(full.clone()).unwrap();
        let slim: SlimPod = serde_json::from_value(full).unwrap();
        assert_eq!(slim.metadata.managed_fields, None);
        assert_eq!(slim.meta().resource_version.as_deref(), Some("7"));
        assert_eq!(
            super::super::convert::pod_view(&slim.to_pod()),
            super::super::convert::pod_view(&pod)
        );
    }

    #[test]
    fn a_slim_node_reads_what_node_record_needs() {
        let full = json!({
            "metadata": {"name": "n1", "uid": "u", "annotations": {"weft.dev/ready": "true"}},
            "spec": {"podCIDR": "10.1.0.0/24", "podCIDRs": ["10.1.0.0/24"]},
            "status": {"images": [{"names": ["a"], "sizeBytes": 1}]},
        });
        let node: Node = serde_json::from_value(full.clone()).unwrap();
        let slim: SlimNode = serde_json::from_value(full).unwrap();
        let n = slim.to_node();
        assert_eq!(
            super::super::convert::pod_cidrs(&n),
            super::super::convert::pod_cidrs(&node)
        );
        assert_eq!(n.metadata.annotations, node.metadata.annotations);
        assert_eq!(n.metadata.uid, node.metadata.uid);
    }
}
