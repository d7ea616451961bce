//! Kubernetes objects into weft's model, and back where weft writes: a Node into a
//! [`NodeRecord`] (from the annotations weftd publishes), a Pod into an endpoint and a
//! PodLabels object, Namespaces and NetworkPolicies into the canonical JSON weft-policy
//! parses, WeftBlock names to and from CIDRs.
//!
//! Only what weft reads is carried over: a change of an unrelated field (a status
//! heartbeat, managedFields) converts to the same value, so the mirror reports no change.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{Value, json};

use crate::model::{EndpointRecord, NodeRecord};

/// Annotations weftd publishes on its Node (merge patch of `nodes/status`).
pub const ANN_UNDERLAY_V4: &str = "weft.dev/underlay-v4";
pub const ANN_UNDERLAY_V6: &str = "weft.dev/underlay-v6";
pub const ANN_VTEP_MAC: &str = "weft.dev/vtep-mac";
pub const ANN_MTU: &str = "weft.dev/mtu";
pub const ANN_BLOCKS: &str = "weft.dev/blocks";
/// "true" once the node's network is up: before it, peers do not route to the node.
pub const ANN_READY: &str = "weft.dev/ready";
/// Set by an operator: the node's underlay address(es), comma separated, instead of its
/// InternalIP.
pub const ANN_UNDERLAY_OVERRIDE: &str = "weft.dev/underlay-address";
/// The label 1.21+ servers put on every namespace; weft adds it on older ones, so a policy
/// can select a namespace by name on any version.
pub const LABEL_NS_NAME: &str = "kubernetes.io/metadata.name";

fn annotations(n: &Node) -> BTreeMap<String, String> {
    n.metadata.annotations.clone().unwrap_or_default()
}

/// The node as a weft peer, once its weftd has published itself ready.
pub fn node_record(n: &Node) -> Option<NodeRecord> {
    let name = n.metadata.name.clone()?;
    let ann = annotations(n);
    if ann.get(ANN_READY).map(String::as_str) != Some("true") {
        return None;
    }
    let rec = NodeRecord {
        underlay_v4: ann.get(ANN_UNDERLAY_V4).and_then(|s| s.parse().ok()),
        underlay_v6: ann.get(ANN_UNDERLAY_V6).and_then(|s| s.parse().ok()),
        vtep_mac: ann.get(ANN_VTEP_MAC).cloned().unwrap_or_default(),
        mtu: ann.get(ANN_MTU).and_then(|s| s.parse().ok()).unwrap_or(0),
        blocks: ann
            .get(ANN_BLOCKS)
            .map(|s| s.split(',').filter_map(|b| b.trim().parse().ok()).collect())
            .unwrap_or_default(),
        name,
    };
    rec.validate().is_ok().then_some(rec)
}

/// The annotations that publish `rec`.
pub fn node_annotations(rec: &NodeRecord) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    if let Some(v4) = rec.underlay_v4 {
        a.insert(ANN_UNDERLAY_V4.to_string(), v4.to_string());
    }
    if let Some(v6) = rec.underlay_v6 {
        a.insert(ANN_UNDERLAY_V6.to_string(), v6.to_string());
    }
    a.insert(ANN_VTEP_MAC.to_string(), rec.vtep_mac.clone());
    a.insert(ANN_MTU.to_string(), rec.mtu.to_string());
    let blocks: Vec<String> = rec.blocks.iter().map(IpNet::to_string).collect();
    a.insert(ANN_BLOCKS.to_string(), blocks.join(","));
    a.insert(ANN_READY.to_string(), "true".to_string());
    a
}

/// The node's underlay addresses: the operator's annotation if set, else its InternalIPs.
pub fn node_addresses(n: &Node) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
    let mut found: Vec<IpAddr> = Vec::new();
    if let Some(over) = annotations(n).get(ANN_UNDERLAY_OVERRIDE) {
        found.extend(
            over.split(',')
                .filter_map(|s| s.trim().parse::<IpAddr>().ok()),
        );
    } else if let Some(st) = &n.status {
        for a in st.addresses.iter().flatten() {
            if a.type_ == "InternalIP"
                && let Ok(ip) = a.address.parse::<IpAddr>()
            {
                found.push(ip);
            }
        }
    }
    let v4 = found.iter().find_map(|a| match a {
        IpAddr::V4(v) => Some(*v),
        IpAddr::V6(_) => None,
    });
    let v6 = found.iter().find_map(|a| match a {
        IpAddr::V6(v) => Some(*v),
        IpAddr::V4(_) => None,
    });
    (v4, v6)
}

/// `spec.podCIDRs` (or the older single `podCIDR`).
pub fn pod_cidrs(n: &Node) -> Vec<IpNet> {
    let Some(spec) = &n.spec else {
        return Vec::new();
    };
    let mut list: Vec<IpNet> = spec
        .pod_cidrs
        .iter()
        .flatten()
        .filter_map(|s| s.parse().ok())
        .collect();
    if list.is_empty()
        && let Some(one) = spec.pod_cidr.as_deref().and_then(|s| s.parse().ok())
    {
        list.push(one);
    }
    list
}

/// A namespace in the form weft-policy parses, with its name label on servers that do not
/// set it.
pub fn namespace_json(ns: &Namespace) -> Option<Value> {
    let name = ns.metadata.name.clone()?;
    let mut labels = ns.metadata.labels.clone().unwrap_or_default();
    labels
        .entry(LABEL_NS_NAME.to_string())
        .or_insert_with(|| name.clone());
    Some(json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": labels},
    }))
}

/// A NetworkPolicy reduced to name, namespace and spec.
pub fn policy_json(p: &NetworkPolicy) -> Option<(String, String, Value)> {
    let name = p.metadata.name.clone()?;
    let namespace = p.metadata.namespace.clone()?;
    let spec = serde_json::to_value(p.spec.as_ref()?).ok()?;
    Some((
        namespace.clone(),
        name.clone(),
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }),
    ))
}

/// What weft reads of a Pod, and no more: the mirror holds one per pod of the cluster,
/// keyed by namespace and name. Its PodLabels object ([`PodView::labels_json`]) is built
/// when read, not kept: as a `serde_json::Value` it is ~2.5 KiB a pod, ten times this.
#[derive(Clone, Debug, PartialEq)]
pub struct PodView {
    pub node: String,
    pub addresses: Vec<IpAddr>,
    /// Sorted by key: a pod's few labels as a list cost a third of a `BTreeMap` (whose
    /// smallest node has room for eleven).
    pub labels: Vec<(String, String)>,
    /// Named container ports: name, number, protocol.
    pub ports: Vec<(String, i32, String)>,
}

/// Host-network pods carry the node's addresses and no policy applies to them: not a pod of
/// the pod network. Finished pods hold no address any more.
pub fn pod_view(p: &Pod) -> Option<PodView> {
    let spec = p.spec.as_ref()?;
    if spec.host_network == Some(true) {
        return None;
    }
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    let finished = matches!(phase, Some("Succeeded") | Some("Failed"));
    let mut addresses = Vec::new();
    if !finished && let Some(st) = &p.status {
        for ip in st.pod_ips.iter().flatten() {
            if let Ok(a) = ip.ip.parse::<IpAddr>()
                && !addresses.contains(&a)
            {
                addresses.push(a);
            }
        }
        if addresses.is_empty()
            && let Some(a) = st.pod_ip.as_deref().and_then(|s| s.parse().ok())
        {
            addresses.push(a);
        }
    }
    let mut ports = Vec::new();
    for c in &spec.containers {
        for port in c.ports.iter().flatten() {
            if let Some(pname) = &port.name {
                ports.push((
                    pname.clone(),
                    port.container_port,
                    port.protocol.clone().unwrap_or_else(|| "TCP".into()),
                ));
            }
        }
    }
    Some(PodView {
        node: spec.node_name.clone().unwrap_or_default(),
        addresses,
        labels: p
            .metadata
            .labels
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        ports,
    })
}

impl PodView {
    /// The endpoint a scheduled pod with an address is.
    pub fn endpoint(&self, namespace: &str, name: &str) -> Option<EndpointRecord> {
        (!self.node.is_empty() && !self.addresses.is_empty()).then(|| EndpointRecord {
            node: self.node.clone(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            container_id: String::new(),
            ifname: String::new(),
            addresses: self.addresses.clone(),
        })
    }

    /// The pod's PodLabels object (labels and named container ports).
    pub fn labels_json(&self, namespace: &str, name: &str) -> Value {
        let map: serde_json::Map<String, Value> = self
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let mut labels = json!({
            "apiVersion": "weft.dev/v1",
            "kind": "PodLabels",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": map,
            },
        });
        if !self.ports.is_empty() {
            let ports: Vec<Value> = self
                .ports
                .iter()
                .map(|(name, port, protocol)| {
                    json!({"name": name, "containerPort": port, "protocol": protocol})
                })
                .collect();
            labels["spec"] = json!({ "ports": ports });
        }
        labels
    }
}

/// A WeftBlock's object name: the CIDR with '.', ':' and '/' as '-' (`10-244-0-64-26`).
pub fn block_name(b: &IpNet) -> String {
    b.to_string().replace(['.', ':', '/'], "-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_names_are_dns_labels() {
        let v4: IpNet = "10.244.0.64/26".parse().unwrap();
        assert_eq!(block_name(&v4), "10-244-0-64-26");
        let v6: IpNet = "fd00:10:244::40/122".parse().unwrap();
        assert_eq!(block_name(&v6), "fd00-10-244--40-122");
    }

    #[test]
    fn a_node_is_a_peer_only_once_ready_and_valid() {
        let mut n = Node::default();
        n.metadata.name = Some("n1".into());
        assert_eq!(node_record(&n), None);
        let rec = NodeRecord {
            name: "n1".into(),
            underlay_v4: Some("192.0.2.1".parse().unwrap()),
            underlay_v6: None,
            vtep_mac: "02:00:00:00:00:01".into(),
            mtu: 1450,
            blocks: vec!["10.244.0.0/26".parse().unwrap()],
        };
        n.metadata.annotations = Some(node_annotations(&rec));
        assert_eq!(node_record(&n), Some(rec));
        n.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(ANN_VTEP_MAC.into(), "nonsense".into());
        assert_eq!(node_record(&n), None);
    }
}
