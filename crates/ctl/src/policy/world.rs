//! The stored objects read back ([`Catalog`]) and what the commands build from them: the
//! endpoints (PodLabels joined with a lab's pods), the evaluator's `World`, the tables.

use std::net::IpAddr;

use serde_json::Value;
use weft_policy::{
    Endpoint, Labels, Namespace, NetworkPolicy, Node, Object, ParseOptions, PodLabels, RunningPod,
    World,
};
use weft_store::{AnyStore, Datastore, EndpointRecord, ObjectKind};

use super::PolicyError;
use super::store::Lab;

/// Every policy object in the store, parsed, with its stored JSON.
#[derive(Default)]
pub struct Catalog {
    pub namespaces: Vec<(Namespace, Value)>,
    pub policies: Vec<(NetworkPolicy, Value)>,
    pub pod_labels: Vec<(PodLabels, Value)>,
    /// The pods the datastore knows as running (their node and addresses): without a lab,
    /// these are the endpoints.
    pub running: Vec<EndpointRecord>,
    /// Each node's underlay addresses and blocks, from the datastore.
    pub nodes: Vec<(String, Vec<IpAddr>, Vec<ipnet::IpNet>)>,
}

impl Catalog {
    pub async fn load(store: &AnyStore) -> Result<Catalog, PolicyError> {
        let mut c = Catalog::default();
        for kind in ObjectKind::ALL {
            let (_, objects) = store.list_objects(kind).await?;
            for o in objects {
                let name = if o.namespace.is_empty() {
                    o.name.clone()
                } else {
                    format!("{}/{}", o.namespace, o.name)
                };
                let corrupt = |detail: String| PolicyError::Corrupt {
                    kind: kind.name(),
                    name: name.clone(),
                    detail,
                };
                let parsed = weft_policy::parse(&o.value.to_string(), &ParseOptions::default())
                    .map_err(|e| corrupt(e.to_string()))?;
                match parsed.as_slice() {
                    [Object::Namespace(n)] => c.namespaces.push((n.clone(), o.value)),
                    [Object::NetworkPolicy(p)] => c.policies.push((p.clone(), o.value)),
                    [Object::PodLabels(p)] => c.pod_labels.push((p.clone(), o.value)),
                    _ => return Err(corrupt("not exactly one object of its kind".into())),
                }
            }
        }
        c.running = store.list_endpoints().await?.1;
        let snap = store.snapshot().await?;
        for n in &snap.nodes {
            let underlay: Vec<IpAddr> = n
                .underlay_v4
                .map(IpAddr::V4)
                .into_iter()
                .chain(n.underlay_v6.map(IpAddr::V6))
                .collect();
            let blocks = snap
                .blocks
                .iter()
                .filter(|b| b.node == n.name)
                .map(|b| b.block)
                .collect();
            c.nodes.push((n.name.clone(), underlay, blocks));
        }
        Ok(c)
    }

    /// Pods: a lab's pods (node, addresses; labels from their PodLabels object, else the
    /// lab's record), then PodLabels objects of pods nobody runs (no node, no address) —
    /// the join weftd makes too ([`weft_policy::join_endpoints`]).
    pub fn endpoints(&self, lab: Option<&Lab>) -> Vec<Endpoint> {
        let Some(lab) = lab else {
            let pods: Vec<RunningPod> = self
                .running
                .iter()
                .map(|e| RunningPod {
                    namespace: e.namespace.clone(),
                    name: e.name.clone(),
                    node: e.node.clone(),
                    addresses: e.addresses.clone(),
                    fallback_labels: Labels::default(),
                })
                .collect();
            let labels: Vec<PodLabels> = self.pod_labels.iter().map(|(p, _)| p.clone()).collect();
            return weft_policy::join_endpoints(&pods, &labels);
        };
        let pods: Vec<RunningPod> = Some(lab)
            .iter()
            .flat_map(|l| l.state.pods.iter())
            .map(|pod| RunningPod {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                node: pod.node.clone(),
                addresses: pod.addresses.iter().map(|a| a.addr()).collect(),
                fallback_labels: pod.labels.clone(),
            })
            .collect();
        let labels: Vec<PodLabels> = self.pod_labels.iter().map(|(p, _)| p.clone()).collect();
        weft_policy::join_endpoints(&pods, &labels)
    }

    /// The nodes' addresses are their underlay addresses and the pod gateways their pods'
    /// ADD results name (the bridge or ptp address the node talks to its pods from).
    pub fn world(&self, lab: Option<&Lab>) -> World {
        if lab.is_none() {
            return World {
                namespaces: self.namespaces.iter().map(|(n, _)| n.clone()).collect(),
                nodes: self
                    .nodes
                    .iter()
                    .map(|(name, underlay, blocks)| Node {
                        name: name.clone(),
                        addresses: weft_policy::node_addresses(underlay, blocks),
                        pod_cidrs: blocks.clone(),
                    })
                    .collect(),
                endpoints: self.endpoints(None),
                policies: self.policies.iter().map(|(p, _)| p.clone()).collect(),
            };
        }
        let nodes = lab
            .iter()
            .flat_map(|l| l.state.nodes.iter().map(move |n| (l, n)))
            .map(|(l, n)| {
                let underlay: Vec<IpAddr> = std::iter::once(n.address4.into())
                    .chain(n.address6.map(Into::into))
                    .collect();
                let pod_cidrs: Vec<ipnet::IpNet> =
                    n.blocks.iter().filter_map(|b| b.parse().ok()).collect();
                let mut addresses = weft_policy::node_addresses(&underlay, &pod_cidrs);
                let gateways = l
                    .state
                    .pods
                    .iter()
                    .filter(|p| p.node == n.name)
                    .filter_map(|p| p.result.as_ref()?.get("ips")?.as_array().cloned())
                    .flatten()
                    .filter_map(|ip| ip.get("gateway")?.as_str()?.parse::<IpAddr>().ok());
                for gw in gateways {
                    if !addresses.contains(&gw) {
                        addresses.push(gw);
                    }
                }
                Node {
                    name: n.name.clone(),
                    addresses,
                    pod_cidrs,
                }
            })
            .collect();
        World {
            namespaces: self.namespaces.iter().map(|(n, _)| n.clone()).collect(),
            nodes,
            endpoints: self.endpoints(lab),
            policies: self.policies.iter().map(|(p, _)| p.clone()).collect(),
        }
    }
}

fn labels(l: &Labels) -> String {
    if l.is_empty() {
        return "<none>".into();
    }
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<String>, out: &mut String| {
        let last = cells.len().saturating_sub(1);
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}   "));
            }
        }
        out.push('\n');
    };
    line(header.iter().map(|h| h.to_string()).collect(), &mut out);
    for r in rows {
        line(r, &mut out);
    }
    out
}

pub fn policy_table(c: &Catalog) -> String {
    let rows = c
        .policies
        .iter()
        .map(|(p, v)| {
            let selector = v
                .pointer("/spec/podSelector")
                .map(|s| s.to_string())
                .unwrap_or_default();
            let types: Vec<&str> = [
                weft_policy::Direction::Ingress,
                weft_policy::Direction::Egress,
            ]
            .into_iter()
            .filter(|d| p.applies(*d))
            .map(|d| d.as_str())
            .collect();
            vec![
                p.namespace.clone(),
                p.name.clone(),
                selector,
                types.join(","),
            ]
        })
        .collect();
    table(&["NAMESPACE", "NAME", "POD-SELECTOR", "POLICY-TYPES"], rows)
}

pub fn namespace_table(c: &Catalog) -> String {
    let rows = c
        .namespaces
        .iter()
        .map(|(n, _)| vec![n.name.clone(), labels(&n.labels)])
        .collect();
    table(&["NAME", "LABELS"], rows)
}

pub fn endpoint_table(eps: &[Endpoint]) -> String {
    let rows = eps
        .iter()
        .map(|e| {
            let addrs: Vec<String> = e.addresses.iter().map(|a| a.to_string()).collect();
            vec![
                e.namespace.clone(),
                e.name.clone(),
                if e.node.is_empty() {
                    "<none>".into()
                } else {
                    e.node.clone()
                },
                if addrs.is_empty() {
                    "<none>".into()
                } else {
                    addrs.join(",")
                },
                labels(&e.labels),
            ]
        })
        .collect();
    table(&["NAMESPACE", "NAME", "NODE", "ADDRESSES", "LABELS"], rows)
}
