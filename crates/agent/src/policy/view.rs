//! The cluster as the policy plan needs it, loaded from the datastore: Namespaces,
//! NetworkPolicies, PodLabels, every node's published endpoints, the nodes and their blocks;
//! and the [`World`] built from it plus this node's own endpoint files.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use weft_policy::{Namespace, NetworkPolicy, Node, Object, ParseOptions, PodLabels, World};
use weft_store::{Datastore, EndpointRecord, ObjectKind, Revision, StoreError};

use super::endpoints::Local;
use crate::log;

/// Everything the datastore says, as of (at least) `revision`.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// The earliest revision of the listings (each is consistent on its own; a change after
    /// it arrives as an event and triggers another load).
    pub revision: Revision,
    pub namespaces: Vec<Namespace>,
    pub policies: Vec<NetworkPolicy>,
    pub pod_labels: Vec<PodLabels>,
    pub endpoints: Vec<EndpointRecord>,
    /// Node → (underlay addresses, blocks it owns).
    pub nodes: BTreeMap<String, (Vec<IpAddr>, Vec<IpNet>)>,
}

impl View {
    pub async fn load<S: Datastore>(store: &S) -> Result<View, StoreError> {
        let mut v = View::default();
        let mut first: Option<Revision> = None;
        let mut note = |rev: Revision| first = Some(first.map_or(rev, |f: Revision| f.min(rev)));
        for kind in ObjectKind::ALL {
            let (rev, objects) = store.list_objects(kind).await?;
            note(rev);
            for o in objects {
                // weftctl validated it before writing; an object that no longer parses (a
                // newer weftctl, a hand edit) is skipped loudly rather than stopping policy.
                match weft_policy::parse(&o.value.to_string(), &ParseOptions::default()) {
                    Ok(parsed) => {
                        for obj in parsed {
                            match obj {
                                Object::Namespace(n) => v.namespaces.push(n),
                                Object::NetworkPolicy(p) => v.policies.push(p),
                                Object::PodLabels(p) => v.pod_labels.push(p),
                            }
                        }
                    }
                    Err(e) => log::error(
                        "stored policy object unreadable; ignored",
                        &[
                            ("kind", kind.name().into()),
                            ("namespace", o.namespace.clone().into()),
                            ("name", o.name.clone().into()),
                            ("error", e.to_string().into()),
                        ],
                    ),
                }
            }
        }
        let (rev, endpoints) = store.list_endpoints().await?;
        note(rev);
        v.endpoints = endpoints;
        let snap = store.snapshot().await?;
        note(snap.revision);
        for n in &snap.nodes {
            let underlay: Vec<IpAddr> = n
                .underlay_v4
                .map(IpAddr::V4)
                .into_iter()
                .chain(n.underlay_v6.map(IpAddr::V6))
                .collect();
            v.nodes.insert(n.name.clone(), (underlay, Vec::new()));
        }
        for b in &snap.blocks {
            v.nodes.entry(b.node.clone()).or_default().1.push(b.block);
        }
        v.revision = first.unwrap_or(0);
        Ok(v)
    }

    /// The world this node enforces: the datastore's view, with this node's pods taken from
    /// its endpoint files (the datastore's copy of them may lag) and its own blocks.
    pub fn world(
        &self,
        me: &str,
        local: &Local,
        my_blocks: &[IpNet],
        my_underlay: &[IpAddr],
    ) -> World {
        let mut pods: BTreeMap<(String, String), weft_policy::RunningPod> = BTreeMap::new();
        let mut add = |ns: &str, name: &str, node: &str, addrs: &[IpAddr]| {
            let p = pods
                .entry((ns.to_string(), name.to_string()))
                .or_insert_with(|| weft_policy::RunningPod {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                    node: node.to_string(),
                    addresses: Vec::new(),
                    fallback_labels: Default::default(),
                });
            for a in addrs {
                if !p.addresses.contains(a) {
                    p.addresses.push(*a);
                }
            }
        };
        for f in local.values() {
            add(&f.namespace, &f.name, me, &f.addresses);
        }
        for e in self.endpoints.iter().filter(|e| e.node != me) {
            add(&e.namespace, &e.name, &e.node, &e.addresses);
        }
        let pods: Vec<weft_policy::RunningPod> = pods.into_values().collect();
        let mut nodes = self.nodes.clone();
        let mine = nodes.entry(me.to_string()).or_default();
        for a in my_underlay {
            if !mine.0.contains(a) {
                mine.0.push(*a);
            }
        }
        for b in my_blocks {
            if !mine.1.contains(b) {
                mine.1.push(*b);
            }
        }
        World {
            namespaces: self.namespaces.clone(),
            nodes: nodes
                .into_iter()
                .map(|(name, (underlay, blocks))| Node {
                    name,
                    addresses: weft_policy::node_addresses(&underlay, &blocks),
                    pod_cidrs: blocks,
                })
                .collect(),
            endpoints: weft_policy::join_endpoints(&pods, &self.pod_labels),
            policies: self.policies.clone(),
        }
    }
}
