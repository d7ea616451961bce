//! The cluster as the policy plan needs it, loaded from the datastore: Namespaces,
//! NetworkPolicies, PodLabels, every node's published endpoints, the nodes and their blocks;
//! and the [`World`] built from it plus this node's own endpoint files.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, LazyLock};

use ipnet::IpNet;
use weft_policy::{Namespace, NetworkPolicy, Node, Object, ParseOptions, PodLabels, World};
use weft_store::{Datastore, EndpointRecord, ObjectEvent, ObjectKind, Revision, StoreError};

use super::endpoints::Local;
use crate::log;

/// Objects are kept by kind, namespace and name (the datastore's key).
type Key = (ObjectKind, String, String);

/// A stored object as parsed, and the fingerprint of the JSON it was parsed from: a load
/// parses only objects whose JSON changed (parsing and validating thousands of policies on
/// every load would dominate the time to apply one). The JSON itself is not kept — at
/// 10,000 pods a copy of every object's `serde_json::Value` was ~25 MiB — and the parsed
/// objects are shared (`Arc`) between the view a load replaces and the next one.
#[derive(Debug, Clone)]
struct Parsed {
    fingerprint: Fingerprint,
    objects: Arc<[Object]>,
}

/// 128 bits of two SipHash states keyed at random once per process: a changed object is
/// taken for unchanged only on a collision, which a writer of objects cannot aim for
/// without the keys.
type Fingerprint = (u64, u64);

static KEYS: LazyLock<(std::hash::RandomState, std::hash::RandomState)> =
    LazyLock::new(|| (std::hash::RandomState::new(), std::hash::RandomState::new()));

/// Hashes what it is written: `serde_json::to_writer` into it needs no buffer.
struct FingerprintWriter(std::hash::DefaultHasher, std::hash::DefaultHasher);

impl std::io::Write for FingerprintWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf);
        self.1.write(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The fingerprint of `value` as compact JSON (serde_json's maps are ordered: equal values
/// give equal text).
fn fingerprint(value: &serde_json::Value) -> Fingerprint {
    let mut w = FingerprintWriter(KEYS.0.build_hasher(), KEYS.1.build_hasher());
    // Writing to a hasher cannot fail, and a Value always serializes.
    let _ = serde_json::to_writer(&mut w, value);
    (w.0.finish(), w.1.finish())
}

/// Everything the datastore says, as of (at least) `revision`.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// The datastore revision the whole view was read at.
    pub revision: Revision,
    /// Every readable stored object, parsed.
    objects: BTreeMap<Key, Parsed>,
    pub endpoints: Vec<EndpointRecord>,
    /// Node → (underlay addresses, blocks it owns).
    pub nodes: BTreeMap<String, (Vec<IpAddr>, Vec<IpNet>)>,
}

impl View {
    /// Reads the whole view; objects whose JSON is the same as in `previous` are taken from
    /// it instead of parsed again. The objects come one at a time
    /// ([`Datastore::policy_view_each`]): only their parsed form is kept.
    pub async fn load<S: Datastore>(
        store: &S,
        previous: Option<&View>,
    ) -> Result<View, StoreError> {
        let mut objects = BTreeMap::new();
        // One read, one revision: the view is a state the datastore really was in.
        let pv = store
            .policy_view_each(|o| {
                let fingerprint = fingerprint(&o.value);
                let key = (o.kind, o.namespace, o.name);
                if let Some(p) = previous.and_then(|v| v.objects.get(&key))
                    && p.fingerprint == fingerprint
                {
                    objects.insert(key, p.clone());
                    return;
                }
                if let Some(parsed) = parse(&key, &o.value) {
                    objects.insert(
                        key,
                        Parsed {
                            fingerprint,
                            objects: parsed.into(),
                        },
                    );
                }
            })
            .await?;
        let mut v = View {
            revision: pv.snapshot.revision,
            objects,
            endpoints: pv.endpoints,
            nodes: BTreeMap::new(),
        };
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
    pub fn apply_event(&mut self, ev: ObjectEvent) -> bool {
        match ev {
            ObjectEvent::Resync => return false,
            ObjectEvent::Put(o) => {
                let key = (o.kind, o.namespace, o.name);
                match parse(&key, &o.value) {
                    Some(parsed) => {
                        let fingerprint = fingerprint(&o.value);
                        self.objects.insert(
                            key,
                            Parsed {
                                fingerprint,
                                objects: parsed.into(),
                            },
                        );
                    }
                    None => {
                        self.objects.remove(&key);
                    }
                }
            }
            ObjectEvent::Deleted {
                kind,
                namespace,
                name,
            } => {
                self.objects.remove(&(kind, namespace, name));
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

    fn remove_endpoint(&mut self, node: &str, namespace: &str, name: &str) {
        self.endpoints
            .retain(|e| !(e.node == node && e.namespace == namespace && e.name == name));
    }

    /// The parsed objects stored under `kind`, in key order.
    fn of_kind(&self, kind: ObjectKind) -> impl Iterator<Item = &Object> {
        self.objects
            .range((kind, String::new(), String::new())..)
            .take_while(move |(k, _)| k.0 == kind)
            .flat_map(|(_, p)| p.objects.iter())
    }

    pub fn namespaces(&self) -> impl Iterator<Item = &Namespace> {
        self.of_kind(ObjectKind::Namespace).filter_map(|o| match o {
            Object::Namespace(n) => Some(n),
            _ => None,
        })
    }

    pub fn policies(&self) -> impl Iterator<Item = &NetworkPolicy> {
        self.of_kind(ObjectKind::NetworkPolicy)
            .filter_map(|o| match o {
                Object::NetworkPolicy(p) => Some(p),
                _ => None,
            })
    }

    fn all_pod_labels(&self) -> impl Iterator<Item = &PodLabels> {
        self.of_kind(ObjectKind::PodLabels).filter_map(|o| match o {
            Object::PodLabels(p) => Some(p),
            _ => None,
        })
    }

    /// The PodLabels object of pod `namespace/name`.
    fn pod_labels(&self, namespace: &str, name: &str) -> Option<&PodLabels> {
        self.named(ObjectKind::PodLabels, namespace, name)
            .find_map(|o| match o {
                Object::PodLabels(p) if p.namespace == namespace && p.name == name => Some(p),
                _ => None,
            })
    }

    /// The parsed objects stored under `kind`'s key for `namespace/name` (none if absent).
    fn named(
        &self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
    ) -> impl Iterator<Item = &Object> {
        let key = (kind, namespace.to_string(), name.to_string());
        self.objects
            .get(&key)
            .into_iter()
            .flat_map(|entry| entry.objects.iter())
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
            .pod_labels(namespace, name)
            .cloned()
            .into_iter()
            .collect();
        weft_policy::join_endpoints(&pods, &labels).pop()
    }

    /// Whether the view has the labels of pod `namespace/name`.
    pub fn has_pod_labels(&self, namespace: &str, name: &str) -> bool {
        self.pod_labels(namespace, name).is_some()
    }

    /// The policy `namespace/name`, if the view holds it.
    pub fn policy(&self, namespace: &str, name: &str) -> Option<&NetworkPolicy> {
        self.named(ObjectKind::NetworkPolicy, namespace, name)
            .find_map(|o| match o {
                Object::NetworkPolicy(p) if p.namespace == namespace && p.name == name => Some(p),
                _ => None,
            })
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
            namespaces: self.namespaces().cloned().collect(),
            nodes: nodes
                .into_iter()
                .map(|(name, (underlay, blocks))| Node {
                    name,
                    addresses: weft_policy::node_addresses(&underlay, &blocks),
                    pod_cidrs: blocks,
                })
                .collect(),
            endpoints: join(&pods, self.all_pod_labels()),
            policies: self.policies().cloned().collect(),
        }
    }
}

/// [`weft_policy::join_endpoints`] over borrowed labels: the world's endpoints are then the
/// only copy of the labels it adds, not a second one made for the join.
fn join<'a>(
    pods: &[weft_policy::RunningPod],
    labels: impl Iterator<Item = &'a PodLabels>,
) -> Vec<weft_policy::Endpoint> {
    // The first object of a name wins, as in join_endpoints.
    let mut by_name: HashMap<(&str, &str), (&PodLabels, bool)> = HashMap::new();
    let mut order = Vec::new();
    for p in labels {
        let k = (p.namespace.as_str(), p.name.as_str());
        if let std::collections::hash_map::Entry::Vacant(e) = by_name.entry(k) {
            e.insert((p, false));
            order.push(k);
        }
    }
    let mut out = Vec::with_capacity(pods.len() + order.len());
    for pod in pods {
        let record = by_name
            .get_mut(&(pod.namespace.as_str(), pod.name.as_str()))
            .map(|(r, used)| {
                *used = true;
                *r
            });
        out.push(weft_policy::Endpoint {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            labels: record.map_or_else(|| pod.fallback_labels.clone(), |r| r.labels.clone()),
            node: pod.node.clone(),
            addresses: pod.addresses.clone(),
            ports: record.map(|r| r.ports.clone()).unwrap_or_default(),
        });
    }
    for k in order {
        if let Some((p, false)) = by_name.get(&k) {
            out.push(weft_policy::Endpoint {
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

/// A stored object, parsed. weftctl validated it before writing; an object that no longer
/// parses (a newer weftctl, a hand edit) is skipped loudly rather than stopping policy.
fn parse(key: &Key, value: &serde_json::Value) -> Option<Vec<Object>> {
    match weft_policy::parse(&value.to_string(), &ParseOptions::default()) {
        Ok(parsed) => Some(parsed),
        Err(e) => {
            log::error(
                "stored policy object unreadable; ignored",
                &[
                    ("kind", key.0.name().into()),
                    ("namespace", key.1.clone().into()),
                    ("name", key.2.clone().into()),
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
        v.objects.insert(
            (ObjectKind::PodLabels, "shop".into(), "web".into()),
            Parsed {
                fingerprint: (0, 0),
                objects: vec![Object::PodLabels(PodLabels {
                    namespace: "shop".into(),
                    name: "web".into(),
                    labels: [("app".to_string(), "web".to_string())].into(),
                    ports: Default::default(),
                })]
                .into(),
            },
        );
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
