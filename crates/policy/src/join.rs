//! Joining what CNI knows of a pod (node, addresses) with what its `PodLabels` object says
//! (labels, named ports) into [`Endpoint`]s, and a node's own addresses from its underlay
//! and pod ranges: the one reading that `weftd` enforces and `weftctl explain` shows.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::model::{Endpoint, Labels, PodLabels};

/// A running pod as its node reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningPod {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub addresses: Vec<IpAddr>,
    /// Labels to use when no `PodLabels` object names the pod (the lab's own record);
    /// empty elsewhere.
    pub fallback_labels: Labels,
}

/// Running pods, each with the labels and named ports of its `PodLabels` object (else its
/// fallback labels and no named ports), then the `PodLabels` objects of pods nobody runs
/// (no node, no address: they can be selected but match no packet). Sorted.
pub fn join_endpoints(pods: &[RunningPod], labels: &[PodLabels]) -> Vec<Endpoint> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    // By name: a linear search per pod made a world of 1,000 pods cost ~25 ms.
    let by_name: HashMap<(&str, &str), &PodLabels> = labels
        .iter()
        .rev()
        .map(|p| ((p.namespace.as_str(), p.name.as_str()), p))
        .collect();
    for pod in pods {
        let record = by_name.get(&(pod.namespace.as_str(), pod.name.as_str()));
        seen.insert((pod.namespace.as_str(), pod.name.as_str()));
        out.push(Endpoint {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            labels: record.map_or_else(|| pod.fallback_labels.clone(), |r| r.labels.clone()),
            node: pod.node.clone(),
            addresses: pod.addresses.clone(),
            ports: record.map(|r| r.ports.clone()).unwrap_or_default(),
        });
    }
    for p in labels {
        if !seen.contains(&(p.namespace.as_str(), p.name.as_str())) {
            out.push(Endpoint {
                namespace: p.namespace.clone(),
                name: p.name.clone(),
                labels: p.labels.clone(),
                node: String::new(),
                addresses: Vec::new(),
                ports: p.ports.clone(),
            });
        }
    }
    out.sort();
    out
}

/// A node's own addresses as its pods and peers see them: its underlay addresses, and for
/// each of its pod ranges the network address (weft's VTEP address on `weft.vx`) and the
/// first host address (the bridge gateway weft-ipam defaults to). Without them, traffic
/// from a node would fall in its pod range as an unknown pod and be default-denied.
pub fn node_addresses(underlay: &[IpAddr], pod_cidrs: &[IpNet]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = underlay.to_vec();
    for b in pod_cidrs {
        let net = b.network();
        let gw = match net {
            IpAddr::V4(a) => IpAddr::V4(u32::from(a).wrapping_add(1).into()),
            IpAddr::V6(a) => IpAddr::V6(u128::from(a).wrapping_add(1).into()),
        };
        for a in [net, gw] {
            if b.contains(&a) && !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_take_labels_from_their_object_else_the_fallback() {
        let labels = |k: &str| Labels::from([("app".to_string(), k.to_string())]);
        let pods = vec![
            RunningPod {
                namespace: "shop".into(),
                name: "web-0".into(),
                node: "n1".into(),
                addresses: vec!["10.244.0.2".parse().unwrap()],
                fallback_labels: labels("old"),
            },
            RunningPod {
                namespace: "shop".into(),
                name: "db-0".into(),
                node: "n2".into(),
                addresses: vec![],
                fallback_labels: labels("db"),
            },
        ];
        let objects = vec![
            PodLabels {
                namespace: "shop".into(),
                name: "web-0".into(),
                labels: labels("web"),
                ports: Default::default(),
            },
            PodLabels {
                namespace: "shop".into(),
                name: "idle".into(),
                labels: labels("idle"),
                ports: Default::default(),
            },
        ];
        let eps = join_endpoints(&pods, &objects);
        let summary: Vec<(&str, &str, &str)> = eps
            .iter()
            .map(|e| (e.name.as_str(), e.node.as_str(), e.labels["app"].as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("db-0", "n2", "db"),
                ("idle", "", "idle"),
                ("web-0", "n1", "web")
            ]
        );
    }

    #[test]
    fn node_addresses_cover_vtep_and_gateway() {
        let a = node_addresses(
            &["192.0.2.1".parse().unwrap()],
            &[
                "10.244.0.64/26".parse().unwrap(),
                "fd00::/122".parse().unwrap(),
            ],
        );
        let s: Vec<String> = a.iter().map(|x| x.to_string()).collect();
        assert_eq!(
            s,
            [
                "192.0.2.1",
                "10.244.0.64",
                "10.244.0.65",
                "fd00::",
                "fd00::1"
            ]
        );
    }
}
