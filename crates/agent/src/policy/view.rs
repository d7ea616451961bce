//! The cluster as the policy plan needs it, loaded from the datastore: Namespaces,
//! NetworkPolicies, PodLabels, every node's published endpoints, the nodes and their blocks;
//! and the [`World`] built from it plus this node's own endpoint files.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;
use weft_policy::{Namespace, NetworkPolicy, Node, Object, ParseOptions, PodLabels, World};
use weft_store::{Datastore, EndpointRecord, ObjectEvent, ObjectKind, Revision, StoreError};

use super::endpoints::Local;
use crate::log;

/// Everything the datastore says, as of (at least) `revision`.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// The datastore revision the whole view was read at.
    pub revision: Revision,
    pub namespaces: Vec<Namespace>,
    pub policies: Vec<NetworkPolicy>,
    pub pod_labels: Vec<PodLabels>,
    pub endpoints: Vec<EndpointRecord>,
    /// Node → (underlay addresses, blocks it owns).
    pub nodes: BTreeMap<String, (Vec<IpAddr>, Vec<IpNet>)>,
}

/// Parsed objects by kind, namespace and name, with the JSON they were parsed from: a load
/// parses only objects whose stored JSON changed (parsing and validating thousands of
/// policies on every change would dominate the time to apply one).
pub type ParseCache = HashMap<(ObjectKind, String, String), (serde_json::Value, Vec<Object>)>;

impl View {
    pub async fn load<S: Datastore>(store: &S, cache: &mut ParseCache) -> Result<View, StoreError> {
        // One read, one revision: the view is a state the datastore really was in.
        let pv = store.policy_view().await?;
        let mut v = View {
            revision: pv.snapshot.revision,
            endpoints: pv.endpoints,
            ..View::default()
        };
        let mut seen = HashSet::new();
        for o in pv.objects {
            let key = (o.kind, o.namespace.clone(), o.name.clone());
            seen.insert(key.clone());
            if let Some((json, parsed)) = cache.get(&key)
                && *json == o.value
            {
                v.add(parsed.clone());
                continue;
            }
            if let Some(parsed) = parse(&o) {
                v.add(parsed.clone());
                cache.insert(key, (o.value, parsed));
            }
        }
        cache.retain(|k, _| seen.contains(k));
        for n in &pv.snapshot.nodes {
            let underlay: Vec<IpAddr> = n
                .underlay_v4
                .map(IpAddr::V4)
                .into_iter()
                .chain(n.underlay_v6.map(IpAddr::V6))
                .collect();
            v.nodes.insert(n.name.clone(), (underlay, Vec::new()));
        }
        for b in &pv.snapshot.blocks {
            v.nodes.entry(b.node.clone()).or_default().1.push(b.block);
        }
        Ok(v)
    }

    /// Folds one event of the object watch into the view (the view then is the datastore's
    /// state as of that event, as long as every event since the view's load is folded in
    /// order). False for `Resync`: the caller must load the view again.
    pub fn apply_event(&mut self, ev: ObjectEvent, cache: &mut ParseCache) -> bool {
        match ev {
            ObjectEvent::Resync => return false,
            ObjectEvent::Put(o) => {
                self.remove_object(o.kind, &o.namespace, &o.name);
                let key = (o.kind, o.namespace.clone(), o.name.clone());
                match parse(&o) {
                    Some(parsed) => {
                        self.add(parsed.clone());
                        cache.insert(key, (o.value, parsed));
                    }
                    None => {
                        cache.remove(&key);
                    }
                }
            }
            ObjectEvent::Deleted {
                kind,
                namespace,
                name,
            } => {
                self.remove_object(kind, &namespace, &name);
                cache.remove(&(kind, namespace, name));
            }
            ObjectEvent::EndpointPut(rec) => {
                self.remove_endpoint(&rec.node, &rec.namespace, &rec.name);
                self.endpoints.push(rec);
            }
            ObjectEvent::EndpointDeleted {
                node,
                namespace,
                name,
            } => self.remove_endpoint(&node, &namespace, &name),
        }
        true
    }

    fn remove_object(&mut self, kind: ObjectKind, namespace: &str, name: &str) {
        match kind {
            ObjectKind::Namespace => self.namespaces.retain(|n| n.name != name),
            ObjectKind::NetworkPolicy => self
                .policies
                .retain(|p| !(p.namespace == namespace && p.name == name)),
            ObjectKind::PodLabels => self
                .pod_labels
                .retain(|p| !(p.namespace == namespace && p.name == name)),
        }
    }

    fn remove_endpoint(&mut self, node: &str, namespace: &str, name: &str) {
        self.endpoints
            .retain(|e| !(e.node == node && e.namespace == namespace && e.name == name));
    }

    fn add(&mut self, objects: Vec<Object>) {
        for obj in objects {
            match obj {
                Object::Namespace(n) => self.namespaces.push(n),
                Object::NetworkPolicy(p) => self.policies.push(p),
                Object::PodLabels(p) => self.pod_labels.push(p),
            }
        }
    }

    /// This node's pods from its endpoint files (the datastore's copy of them may lag) and
    /// the other nodes' from the datastore, one per namespace and name (addresses merged):
    /// all of them, or only the one named by `only`.
    fn running(
        &self,
        me: &str,
        local: &Local,
        only: Option<(&str, &str)>,
    ) -> Vec<weft_policy::RunningPod> {
        let wanted = |ns: &str, name: &str| only.is_none_or(|o| o == (ns, name));
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
        for f in local.values().filter(|f| wanted(&f.namespace, &f.name)) {
            add(&f.namespace, &f.name, me, &f.addresses);
        }
        for e in self
            .endpoints
            .iter()
            .filter(|e| e.node != me && wanted(&e.namespace, &e.name))
        {
            add(&e.namespace, &e.name, &e.node, &e.addresses);
        }
        pods.into_values().collect()
    }

    /// The pod `namespace/name` as [`View::world`] would have it, without building the
    /// world: what one event changed, fed to the compiler on its own.
    pub fn endpoint(
        &self,
        me: &str,
        local: &Local,
        namespace: &str,
        name: &str,
    ) -> Option<weft_policy::Endpoint> {
        let pods = self.running(me, local, Some((namespace, name)));
        let labels: Vec<PodLabels> = self
            .pod_labels
            .iter()
            .filter(|p| p.namespace == namespace && p.name == name)
            .take(1)
            .cloned()
            .collect();
        weft_policy::join_endpoints(&pods, &labels).pop()
    }

    /// Whether the view has the labels of pod `namespace/name`.
    pub fn has_pod_labels(&self, namespace: &str, name: &str) -> bool {
        self.pod_labels
            .iter()
            .any(|p| p.namespace == namespace && p.name == name)
    }

    /// The policy `namespace/name`, if the view holds it.
    pub fn policy(&self, namespace: &str, name: &str) -> Option<&NetworkPolicy> {
        self.policies
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
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
        let pods = self.running(me, local, None);
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

/// A stored object, parsed. weftctl validated it before writing; an object that no longer
/// parses (a newer weftctl, a hand edit) is skipped loudly rather than stopping policy.
fn parse(o: &weft_store::StoredObject) -> Option<Vec<Object>> {
    match weft_policy::parse(&o.value.to_string(), &ParseOptions::default()) {
        Ok(parsed) => Some(parsed),
        Err(e) => {
            log::error(
                "stored policy object unreadable; ignored",
                &[
                    ("kind", o.kind.name().into()),
                    ("namespace", o.namespace.clone().into()),
                    ("name", o.name.clone().into()),
                    ("error", e.to_string().into()),
                ],
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_proto::EndpointFile;

    fn file(cid: &str, name: &str, addr: &str) -> EndpointFile {
        EndpointFile {
            container_id: cid.into(),
            ifname: "eth0".into(),
            namespace: "shop".into(),
            name: name.into(),
            addresses: vec![addr.parse().unwrap()],
            host_interface: Some("wv0".into()),
            mac: None,
            mode: weft_proto::EndpointMode::Bridge,
            network: None,
            netns: None,
            attached_at_ms: None,
        }
    }

    fn record(node: &str, name: &str, addr: &str) -> EndpointRecord {
        EndpointRecord {
            node: node.into(),
            namespace: "shop".into(),
            name: name.into(),
            container_id: format!("c-{name}"),
            ifname: "eth0".into(),
            addresses: vec![addr.parse().unwrap()],
        }
    }

    #[test]
    fn local_files_are_the_authority_for_this_nodes_pods() {
        // The datastore's copy of n1's pods is stale (an old pod, an old address).
        let mut v = View {
            endpoints: vec![
                record("n1", "gone", "10.244.0.9"),
                record("n1", "web", "10.244.0.8"),
                record("n2", "db", "10.244.0.66"),
            ],
            ..View::default()
        };
        v.nodes.insert(
            "n2".into(),
            (
                vec!["192.0.2.2".parse().unwrap()],
                vec!["10.244.0.64/26".parse().unwrap()],
            ),
        );
        v.pod_labels = vec![PodLabels {
            namespace: "shop".into(),
            name: "web".into(),
            labels: [("app".to_string(), "web".to_string())].into(),
            ports: Default::default(),
        }];
        let mut local = Local::new();
        let f = file("c1", "web", "10.244.0.2");
        local.insert((f.container_id.clone(), f.ifname.clone()), f);
        let w = v.world(
            "n1",
            &local,
            &["10.244.0.0/26".parse().unwrap()],
            &["192.0.2.1".parse().unwrap()],
        );
        let eps: Vec<(String, String, Vec<IpAddr>)> = w
            .endpoints
            .iter()
            .map(|e| (e.name.clone(), e.node.clone(), e.addresses.clone()))
            .collect();
        assert_eq!(
            eps,
            vec![
                (
                    "db".into(),
                    "n2".into(),
                    vec!["10.244.0.66".parse().unwrap()]
                ),
                (
                    "web".into(),
                    "n1".into(),
                    vec!["10.244.0.2".parse().unwrap()]
                ),
            ]
        );
        assert_eq!(w.endpoints[1].labels["app"], "web");
        let n1 = w.nodes.iter().find(|n| n.name == "n1").unwrap();
        assert_eq!(
            n1.pod_cidrs,
            vec!["10.244.0.0/26".parse::<IpNet>().unwrap()]
        );
        assert!(n1.addresses.contains(&"10.244.0.1".parse().unwrap()));
        assert!(n1.addresses.contains(&"192.0.2.1".parse().unwrap()));
        let n2 = w.nodes.iter().find(|n| n.name == "n2").unwrap();
        assert!(n2.addresses.contains(&"10.244.0.64".parse().unwrap()));
    }
}
