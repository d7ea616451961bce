//! The local cache of the API objects weft reads, and the single ordered log of what changed
//! in it, numbered by a revision of its own.
//!
//! The API server has no revision across kinds that a client may compare, so the mirror
//! makes one: each change it sees (from a watch, a relist, or a write of its own) bumps
//! [`State::rev`] and goes to the log. `snapshot`, `policy_view` and the two watches then
//! keep the contract the etcd store keeps: a view is a state the mirror really was in, and
//! a watch from its revision sees every later change, in order.
//!
//! A relist (an expired resourceVersion, a reconnect) is folded in as a diff against the
//! cache: objects that changed are updated, objects no longer listed are deleted, and
//! nothing else moves. The agent sees a handful of events, never a flush.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use ipnet::IpNet;
use serde_json::Value;
use std::sync::Arc;

use tokio::sync::{Notify, broadcast};

use super::IpamMode;
use super::convert::{self, PodView};
use crate::Revision;
use crate::model::{BlockOwner, EndpointRecord, NodeRecord, WatchEvent};
use crate::objects::{ObjectEvent, ObjectKind, StoredObject};

/// How many changes the log keeps for watches that start from an older revision; one from
/// before it starts with `Resync`. Small on purpose: the agent watches from the revision of
/// the view it just read, and a Resync only makes it read the view again from this cache;
/// each entry holds a copy of an object, and the first list of a large cluster is tens of
/// thousands of them (bench scale: 127 MiB of caches with a 50,000-entry log).
const LOG_LEN: usize = 4096;
/// Changes in flight to watchers; one that falls further behind gets `Resync`.
const FANOUT: usize = 1024;

/// The log's changes after a revision, or None when the log no longer reaches back to it.
pub(crate) type Since = (
    Option<Vec<(Revision, Arc<Change>)>>,
    broadcast::Receiver<(Revision, Arc<Change>)>,
);

#[derive(Clone, Debug)]
pub(crate) enum Change {
    Store(WatchEvent),
    Object(ObjectEvent),
}

/// The kinds the mirror lists and watches; it serves a read once all it needs are synced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    Nodes,
    Blocks,
    Namespaces,
    Policies,
    Pods,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct NodeEntry {
    pub uid: String,
    pub record: Option<NodeRecord>,
    pub pod_cidrs: Vec<IpNet>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct BlockEntry {
    pub name: String,
    pub node: String,
    pub uid: String,
    pub resource_version: String,
}

pub(crate) struct State {
    pub rev: Revision,
    pub ipam: IpamMode,
    pub nodes: BTreeMap<String, NodeEntry>,
    pub blocks: BTreeMap<IpNet, BlockEntry>,
    pub namespaces: BTreeMap<String, Value>,
    pub policies: BTreeMap<(String, String), Value>,
    pub pods: BTreeMap<(String, String), PodView>,
    /// Endpoints this process published (its node's pods, from the CNI attach): they count
    /// before the kubelet reports `status.podIPs`.
    pub local: BTreeMap<(String, String), EndpointRecord>,
    pub synced: BTreeSet<Kind>,
    /// Keys seen since the last `Init` of each kind: what a relist did not list is gone.
    relisting: BTreeMap<Kind, BTreeSet<String>>,
    /// Shared with the broadcast: one copy of each change, however many hold it.
    log: VecDeque<(Revision, Arc<Change>)>,
    tx: broadcast::Sender<(Revision, Arc<Change>)>,
    /// Woken when a Node goes: its blocks are swept at once, not at the next round.
    pub node_gone: Arc<Notify>,
}

impl State {
    pub fn new(ipam: IpamMode) -> State {
        State {
            rev: 1,
            ipam,
            nodes: BTreeMap::new(),
            blocks: BTreeMap::new(),
            namespaces: BTreeMap::new(),
            policies: BTreeMap::new(),
            pods: BTreeMap::new(),
            local: BTreeMap::new(),
            synced: BTreeSet::new(),
            relisting: BTreeMap::new(),
            log: VecDeque::new(),
            tx: broadcast::channel(FANOUT).0,
            node_gone: Arc::new(Notify::new()),
        }
    }

    fn emit(&mut self, c: Change) {
        let c = Arc::new(c);
        self.rev += 1;
        if self.log.len() == LOG_LEN {
            self.log.pop_front();
        }
        self.log.push_back((self.rev, c.clone()));
        // No receiver is not an error: nobody watches yet.
        let _ = self.tx.send((self.rev, c));
    }

    /// The changes after `from` still in the log, and a receiver for the ones to come; None
    /// when the log no longer reaches back to `from`.
    pub fn since(&self, from: Revision) -> Since {
        let rx = self.tx.subscribe();
        let oldest = self.log.front().map(|(r, _)| *r).unwrap_or(self.rev + 1);
        if from + 1 < oldest && from < self.rev {
            return (None, rx);
        }
        let past = self
            .log
            .iter()
            .filter(|(r, _)| *r > from)
            .cloned()
            .collect();
        (Some(past), rx)
    }

    // --- relists ---

    pub fn init(&mut self, kind: Kind) {
        self.relisting.insert(kind, BTreeSet::new());
    }

    fn seen(&mut self, kind: Kind, key: String) {
        if let Some(s) = self.relisting.get_mut(&kind) {
            s.insert(key);
        }
    }

    /// The end of a (re)list: whatever it did not list was deleted meanwhile.
    pub fn init_done(&mut self, kind: Kind) {
        let seen = self.relisting.remove(&kind).unwrap_or_default();
        match kind {
            Kind::Nodes => {
                let gone: Vec<String> = self
                    .nodes
                    .keys()
                    .filter(|k| !seen.contains(*k))
                    .cloned()
                    .collect();
                for n in gone {
                    self.remove_node(&n);
                }
            }
            Kind::Blocks => {
                let gone: Vec<String> = self
                    .blocks
                    .values()
                    .filter(|b| !seen.contains(&b.name))
                    .map(|b| b.name.clone())
                    .collect();
                for b in gone {
                    self.remove_block(&b);
                }
            }
            Kind::Namespaces => {
                let gone: Vec<String> = self
                    .namespaces
                    .keys()
                    .filter(|k| !seen.contains(*k))
                    .cloned()
                    .collect();
                for n in gone {
                    self.remove_namespace(&n);
                }
            }
            Kind::Policies => {
                let gone: Vec<(String, String)> = self
                    .policies
                    .keys()
                    .filter(|(ns, n)| !seen.contains(&format!("{ns}/{n}")))
                    .cloned()
                    .collect();
                for (ns, n) in gone {
                    self.remove_policy(&ns, &n);
                }
            }
            Kind::Pods => {
                let gone: Vec<(String, String)> = self
                    .pods
                    .keys()
                    .filter(|(ns, n)| !seen.contains(&format!("{ns}/{n}")))
                    .cloned()
                    .collect();
                for (ns, n) in gone {
                    self.remove_pod(&ns, &n);
                }
            }
        }
        self.synced.insert(kind);
    }

    // --- nodes and their blocks ---

    pub fn upsert_node(&mut self, n: &k8s_openapi::api::core::v1::Node) {
        let Some(name) = n.metadata.name.clone() else {
            return;
        };
        self.seen(Kind::Nodes, name.clone());
        let entry = NodeEntry {
            uid: n.metadata.uid.clone().unwrap_or_default(),
            record: convert::node_record(n),
            pod_cidrs: convert::pod_cidrs(n),
        };
        let old = self.nodes.insert(name.clone(), entry.clone());
        let (old_rec, old_cidrs) = old
            .map(|o| (o.record, o.pod_cidrs))
            .unwrap_or((None, Vec::new()));
        if self.ipam == IpamMode::Kubernetes {
            self.pod_cidr_changes(&name, &old_cidrs, &entry.pod_cidrs);
        }
        match (old_rec, entry.record) {
            (a, Some(b)) if a.as_ref() != Some(&b) => {
                self.emit(Change::Store(WatchEvent::NodePut(b)))
            }
            (Some(_), None) => self.emit(Change::Store(WatchEvent::NodeDeleted(name))),
            _ => {}
        }
    }

    pub fn remove_node(&mut self, name: &str) {
        let Some(old) = self.nodes.remove(name) else {
            return;
        };
        self.node_gone.notify_one();
        if self.ipam == IpamMode::Kubernetes {
            self.pod_cidr_changes(name, &old.pod_cidrs, &[]);
        }
        if old.record.is_some() {
            self.emit(Change::Store(WatchEvent::NodeDeleted(name.to_string())));
        }
    }

    fn pod_cidr_changes(&mut self, node: &str, old: &[IpNet], new: &[IpNet]) {
        for b in old.iter().filter(|b| !new.contains(b)) {
            self.emit(Change::Store(WatchEvent::BlockDeleted(*b)));
        }
        for b in new.iter().filter(|b| !old.contains(b)) {
            self.emit(Change::Store(WatchEvent::BlockPut(BlockOwner {
                block: *b,
                node: node.to_string(),
                lease: 0,
            })));
        }
    }

    pub fn upsert_block(&mut self, cidr: IpNet, entry: BlockEntry) {
        self.seen(Kind::Blocks, entry.name.clone());
        // A block renamed or moved by hand: the old name's entry goes.
        let stale: Vec<IpNet> = self
            .blocks
            .iter()
            .filter(|(c, b)| b.name == entry.name && **c != cidr)
            .map(|(c, _)| *c)
            .collect();
        for c in stale {
            self.blocks.remove(&c);
            self.emit(Change::Store(WatchEvent::BlockDeleted(c)));
        }
        let node = entry.node.clone();
        let old = self.blocks.insert(cidr, entry);
        if old.as_ref().map(|o| &o.node) != Some(&node) {
            self.emit(Change::Store(WatchEvent::BlockPut(BlockOwner {
                block: cidr,
                node,
                lease: 0,
            })));
        }
    }

    pub fn remove_block(&mut self, name: &str) {
        let found: Vec<IpNet> = self
            .blocks
            .iter()
            .filter(|(_, b)| b.name == name)
            .map(|(c, _)| *c)
            .collect();
        for c in found {
            self.blocks.remove(&c);
            self.emit(Change::Store(WatchEvent::BlockDeleted(c)));
        }
    }

    /// Every block and its owner: WeftBlocks, or the nodes' podCIDRs.
    pub fn block_owners(&self) -> Vec<BlockOwner> {
        match self.ipam {
            IpamMode::Weft => self
                .blocks
                .iter()
                .map(|(c, b)| BlockOwner {
                    block: *c,
                    node: b.node.clone(),
                    lease: 0,
                })
                .collect(),
            IpamMode::Kubernetes => self
                .nodes
                .iter()
                .flat_map(|(n, e)| {
                    e.pod_cidrs.iter().map(|c| BlockOwner {
                        block: *c,
                        node: n.clone(),
                        lease: 0,
                    })
                })
                .collect(),
        }
    }

    pub fn node_records(&self) -> Vec<NodeRecord> {
        self.nodes
            .values()
            .filter_map(|e| e.record.clone())
            .collect()
    }

    // --- policy objects ---

    fn put_object(&mut self, kind: ObjectKind, namespace: &str, name: &str, value: Value) {
        self.emit(Change::Object(ObjectEvent::Put(StoredObject {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
            value,
        })));
    }

    fn deleted_object(&mut self, kind: ObjectKind, namespace: &str, name: &str) {
        self.emit(Change::Object(ObjectEvent::Deleted {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
        }));
    }

    pub fn upsert_namespace(&mut self, ns: &k8s_openapi::api::core::v1::Namespace) {
        let (Some(name), Some(v)) = (ns.metadata.name.clone(), convert::namespace_json(ns)) else {
            return;
        };
        self.seen(Kind::Namespaces, name.clone());
        if self.namespaces.get(&name) != Some(&v) {
            self.namespaces.insert(name.clone(), v.clone());
            self.put_object(ObjectKind::Namespace, "", &name, v);
        }
    }

    pub fn remove_namespace(&mut self, name: &str) {
        if self.namespaces.remove(name).is_some() {
            self.deleted_object(ObjectKind::Namespace, "", name);
        }
    }

    pub fn upsert_policy(&mut self, p: &k8s_openapi::api::networking::v1::NetworkPolicy) {
        let Some((ns, name, v)) = convert::policy_json(p) else {
            return;
        };
        self.seen(Kind::Policies, format!("{ns}/{name}"));
        let key = (ns.clone(), name.clone());
        if self.policies.get(&key) != Some(&v) {
            self.policies.insert(key, v.clone());
            self.put_object(ObjectKind::NetworkPolicy, &ns, &name, v);
        }
    }

    pub fn remove_policy(&mut self, ns: &str, name: &str) {
        if self
            .policies
            .remove(&(ns.to_string(), name.to_string()))
            .is_some()
        {
            self.deleted_object(ObjectKind::NetworkPolicy, ns, name);
        }
    }

    // --- pods: labels and endpoints ---

    /// The endpoint of `namespace/name` as weft counts it: this process's own record first
    /// (it is there before the kubelet reports the pod's addresses), else the pod's status.
    fn endpoint(&self, key: &(String, String)) -> Option<EndpointRecord> {
        self.local
            .get(key)
            .cloned()
            .or_else(|| self.pods.get(key).and_then(|p| p.endpoint(&key.0, &key.1)))
    }

    fn endpoint_changes(&mut self, before: Option<EndpointRecord>, key: &(String, String)) {
        let after = self.endpoint(key);
        if before == after {
            return;
        }
        if let Some(b) = before
            && after.as_ref().is_none_or(|a| a.node != b.node)
        {
            self.emit(Change::Object(ObjectEvent::EndpointDeleted {
                node: b.node,
                namespace: b.namespace,
                name: b.name,
            }));
        }
        if let Some(a) = after {
            self.emit(Change::Object(ObjectEvent::EndpointPut(a)));
        }
    }

    pub fn upsert_pod(&mut self, p: &k8s_openapi::api::core::v1::Pod) {
        let (Some(ns), Some(name)) = (p.metadata.namespace.clone(), p.metadata.name.clone()) else {
            return;
        };
        self.seen(Kind::Pods, format!("{ns}/{name}"));
        let key = (ns, name);
        let Some(view) = convert::pod_view(p) else {
            // Host network: not (or no longer) a pod of the pod network.
            self.remove_pod(&key.0, &key.1);
            return;
        };
        let before = self.endpoint(&key);
        let labels_changed = self
            .pods
            .get(&key)
            .is_none_or(|o| (&o.labels, &o.ports) != (&view.labels, &view.ports));
        if labels_changed {
            let value = view.labels_json(&key.0, &key.1);
            self.put_object(ObjectKind::PodLabels, &key.0, &key.1, value);
        }
        self.pods.insert(key.clone(), view);
        self.endpoint_changes(before, &key);
    }

    pub fn remove_pod(&mut self, ns: &str, name: &str) {
        let key = (ns.to_string(), name.to_string());
        let before = self.endpoint(&key);
        if self.pods.remove(&key).is_some() {
            self.deleted_object(ObjectKind::PodLabels, ns, name);
        }
        self.endpoint_changes(before, &key);
    }

    pub fn put_local_endpoint(&mut self, rec: EndpointRecord) {
        let key = (rec.namespace.clone(), rec.name.clone());
        let before = self.endpoint(&key);
        self.local.insert(key.clone(), rec);
        self.endpoint_changes(before, &key);
    }

    pub fn delete_local_endpoint(&mut self, node: &str, ns: &str, name: &str) -> bool {
        let key = (ns.to_string(), name.to_string());
        if self.local.get(&key).is_none_or(|r| r.node != node) {
            return false;
        }
        let before = self.endpoint(&key);
        self.local.remove(&key);
        self.endpoint_changes(before, &key);
        true
    }

    pub fn endpoints(&self) -> Vec<EndpointRecord> {
        let keys: BTreeSet<&(String, String)> = self.pods.keys().chain(self.local.keys()).collect();
        let mut list: Vec<EndpointRecord> =
            keys.into_iter().filter_map(|k| self.endpoint(k)).collect();
        list.sort();
        list
    }

    pub fn objects(&self, kind: ObjectKind) -> Vec<StoredObject> {
        let mut list = Vec::new();
        self.each_object(kind, &mut |o| list.push(o));
        list
    }

    /// Every object of `kind`, sorted by namespace and name, built one at a time (a pod's
    /// PodLabels object exists only while it is handed over).
    pub fn each_object(&self, kind: ObjectKind, each: &mut dyn FnMut(StoredObject)) {
        let obj = |namespace: &str, name: &str, value: Value| StoredObject {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
            value,
        };
        match kind {
            ObjectKind::Namespace => {
                for (n, v) in &self.namespaces {
                    each(obj("", n, v.clone()));
                }
            }
            ObjectKind::NetworkPolicy => {
                for ((ns, n), v) in &self.policies {
                    each(obj(ns, n, v.clone()));
                }
            }
            ObjectKind::PodLabels => {
                for ((ns, n), p) in &self.pods {
                    each(obj(ns, n, p.labels_json(ns, n)));
                }
            }
        }
    }
}
