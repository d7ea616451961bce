//! World → Plan for one node.
//!
//! Vocabulary (see the module above for the table's shape):
//! - a **peer set** is what one distinct peer allows, per family: the pods a pod peer
//!   selects (keyed by its selectors, and by the policy's namespace only without a namespace
//!   selector), an ipBlock minus its excepts, or everything (a rule without peers); shared by
//!   the whole table;
//! - a **contribution** is what one rule allows, as (port cover, peer sets): an ingress rule
//!   with its named ports resolved on the class's pods, or an egress rule (its numeric ports
//!   with the rule's peer sets, and for each named port and each number it resolves to on
//!   some pod, that number with derived sets: each peer's pods where it resolves so);
//! - a **class** is the set of local pods selected by the same policies in one direction
//!   (and, for ingress, resolving the policies' named ports the same way); one chain each;
//! - an **atom** is the union of the peer sets of the contributions covering some (protocol,
//!   port) region of a class: one chain per distinct union, one `accept` rule per set,
//!   shared by every class and region with that union — or, for a region of more than
//!   [`PlanOptions::union_above`] sets, a **union atom** of that class and region, whose
//!   sets of its own merge the peers' addresses (counted per address, so a peer leaving
//!   takes out only what no other peer of the region holds).
//!
//! Names are stable hashes of what they stand for (FNV-1a of a canonical string, typed as
//! [`ClassName`], [`AtomName`] and [`PeerName`], rendered and parsed in module `names`): a
//! class stands for its policies (and named-port resolution), a peer set for its peer, an
//! atom for the names of the sets it reads. An atom's rules are exactly one `accept` per
//! set of its name, so its name fixes its rules and a chain never has to change: were it
//! named after its class and region (as before 2026-12-07, when it had sets of its own to
//! fill), a rule joining the region would have to add a rule to a live chain. So
//! recompiling after a change reuses every unchanged chain and set: a peer that moves, a
//! pod relabelled, change elements of the peer sets only; a rule added to or removed from
//! a region, a policy joining a class's region, point the class's port map at another atom
//! (one more chain of a few rules at most, the sets being there already).
//!
//! [`compile`] builds a plan from scratch; a [`Compiler`] keeps the world, the plan and what
//! they were built from, and turns one change into ops while recomputing only what the
//! change reaches (one engine: `compile` is a `Compiler` used once).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::rc::Rc;

use super::journal::Journal;
use super::names::{
    AtomName, BaseChain, ChainName, ClassName, Family, PeerKind, PeerName, SetName,
};
use super::ranges::{self, Range};
use super::{
    Chain, ClassInfo, DEFAULT_TABLE, Elem, Field, Hook, HookPoint, Op, Plan, Rule, Verdict,
};
use crate::model::{
    Direction, Endpoint, IpBlock, Labels, NetworkPolicy, PolicyPeer, PolicyRef, PortRef, Protocol,
    World,
};

/// How to build a node's plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanOptions {
    /// The table (family `inet`); an nftables identifier (letters, digits, `_`).
    pub table: String,
    /// The node whose pods this plan enforces (ingress to and egress from them).
    pub node: String,
    /// Log denied packets, at most this many per second per class (`None`: count only).
    pub log_per_second: Option<u32>,
    /// `--policy-cut-established`: every base chain first drops the packets of connections
    /// whose conntrack entry carries [`CUT_MARK`](super::CUT_MARK) (flows a change denied
    /// while they were established; the agent marks them).
    pub cut_established: bool,
    /// A port region whose rules name more than this many peer sets gets a *union atom*:
    /// its peers merged into sets of its own (`pu_`/`nu_`), one lookup per family and kind
    /// instead of one per peer set, at the price of a copy of those peers' addresses. A few
    /// peers per region keep reading the shared sets. [`UNION_ABOVE`] by default; tests set
    /// it low to drive every path through unions.
    pub union_above: usize,
}

/// See [`PlanOptions::union_above`]. Eight hash lookups cost a new flow's first packet
/// about what one set lookup and a jump do; a region of hundreds of peers (one port that
/// many policies open to peers of their own) costs hundreds, and its chain as many rules
/// for the kernel to resolve by name on every edit.
pub const UNION_ABOVE: usize = 8;

impl PlanOptions {
    pub fn new(node: &str) -> PlanOptions {
        PlanOptions {
            table: DEFAULT_TABLE.to_string(),
            node: node.to_string(),
            log_per_second: None,
            cut_established: false,
            union_above: UNION_ABOVE,
        }
    }
}

/// `pod_egress` runs before `pod_ingress` on the forward hook.
pub(crate) const EGRESS_PRIORITY: i32 = -10;

/// A set of one family that a contribution allows: a peer's (or an egress named port's part
/// of a peer's) addresses, shared by every atom whose rules name it.
#[derive(Debug, Clone)]
struct PeerSet {
    name: SetName,
    source: Source,
}

/// Where a peer set's elements come from.
#[derive(Debug, Clone)]
enum Source {
    /// The pods a pod peer selects: [`State::peers`], which every endpoint change patches
    /// (and the set with it, while it exists).
    Pods(Rc<PeerKey>),
    /// Fixed ranges of the set's family: an ipBlock minus its excepts, or every address.
    Nets(Rc<Vec<Range>>),
    /// Pod addresses of the set's family computed with the contribution: an egress named
    /// port's part of a peer (its pods whose port resolves to one number), which any pod's
    /// named ports can change (classes with such rules are refilled then).
    Derived(Rc<Vec<IpAddr>>),
}

/// Which (protocol, port)s a contribution covers.
#[derive(Debug, Clone)]
enum Cover {
    /// Empty `ports`: every port of every protocol (and protocols without ports).
    All,
    /// (protocol number, first port, last port)
    Ranges(Vec<(u8, u16, u16)>),
}

struct Contribution {
    cover: Cover,
    /// The peer sets whose addresses it allows (their union).
    sets: Rc<Vec<PeerSet>>,
}

/// A policy peer as seen from its policy's namespace: the namespace is `""` when the peer
/// has a namespace selector (it selects the same pods from every namespace), so the same
/// peer in two namespaces is one key, one cache entry and one set.
type PeerKey = (String, PolicyPeer);
/// A rule of a policy: (policy, direction, index).
type RuleKey = (PolicyRef, Direction, usize);
/// A pod: (namespace, name).
type PodKey = (String, String);

/// A class chain the plan holds, and what it was built from.
struct ClassEntry {
    policies: Vec<PolicyRef>,
    named: BTreeMap<(String, Protocol), Option<u16>>,
    /// Local pods in this class (it goes when none is left).
    pods: usize,
    /// The atoms its port map jumps to.
    atoms: BTreeSet<AtomName>,
    /// It has egress named-port contributions (which any pod's ports can change).
    egress_named: bool,
}

/// An atom chain the plan holds: shared by every class with a region allowing exactly the
/// union of the same peer sets, or a union atom of one class's region.
struct AtomEntry {
    /// Classes whose port map jumps here (it goes when none is left).
    classes: usize,
    /// The shared peer sets its rules read (each holds one reference to them).
    sets: Vec<SetName>,
    /// A union atom: the peer sets merged into its own sets (it reads no shared set).
    union: Option<Union>,
}

/// What a union atom merges.
#[derive(Default)]
struct Union {
    /// The peer sets, in name order.
    members: Vec<PeerSet>,
    /// How many members hold each pod address (it leaves the union with the last).
    counts: HashMap<IpAddr, i64>,
}

/// An incremental compiler: it holds a [`World`] and the [`Plan`] that [`compile`] would
/// build from it, and turns changes of the world (a pod added, removed or relabelled, a
/// policy added, edited or removed) into the [`Op`]s that move the kernel from the old plan
/// to the new — recomputing only what a change can reach.
///
/// Changes accumulate until [`Compiler::take_ops`], which returns the ops from the plan at
/// the previous `take_ops` (or at [`Compiler::new`]) to the current one: one change, or a
/// burst of them, becomes one `nft -f` transaction. The first apply is
/// [`render`](super::render) of [`Compiler::plan`].
///
/// What it keeps between changes: the addresses each policy peer selects, the peer sets
/// each rule names, which policies select each local pod (its classes), and reference
/// counts of classes (by pods), atoms (by classes) and peer sets (by atoms). A relabelled
/// pod patches the peer sets it enters or leaves — elements only, whatever classes and
/// atoms read them; an edited policy rebuilds the classes that include it and reclassifies
/// only the local pods its old or new selector picks. Namespace and node
/// changes go through [`Compiler::set_world`] (a full compile and a full diff).
///
/// `plan()` always equals `compile(world(), opts)`, and `take_ops()` applied to the plan
/// before the changes gives the plan after them (the tests check both on random changes).
///
/// [`Op`]: super::Op
pub struct Compiler {
    world: World,
    st: State,
}

struct State {
    opts: PlanOptions,
    plan: Plan,
    policy_index: HashMap<PolicyRef, usize>,
    /// Policy indices per namespace, in world order.
    ns_policies: HashMap<String, Vec<usize>>,
    endpoint_index: HashMap<PodKey, usize>,
    /// How many endpoints hold each address (a peer set can only be patched when one does).
    addr_owners: HashMap<IpAddr, usize>,
    ns_labels: HashMap<String, Labels>,
    peers: HashMap<PeerKey, Rc<BTreeSet<IpAddr>>>,
    /// The peer sets each rule names (fixed by the policy and `pod_families`).
    rules: HashMap<RuleKey, Rc<Vec<PeerSet>>>,
    /// Peer sets in the plan, with the number of atoms reading each (a set goes with the
    /// last of them).
    shared: HashMap<SetName, usize>,
    /// Pod peer sets merged into union atoms, with those atoms: a pod entering or leaving
    /// the peer patches their unions (whether the shared set exists or not).
    union_index: HashMap<SetName, BTreeSet<AtomName>>,
    /// Local pods' (ingress, egress) classes.
    pods: HashMap<PodKey, [Option<ClassName>; 2]>,
    classes: HashMap<ClassName, ClassEntry>,
    atoms: HashMap<AtomName, AtomEntry>,
    policy_classes: HashMap<PolicyRef, BTreeSet<ClassName>>,
    journal: Option<Journal>,
    /// The address families pods can have: those of the nodes' pod ranges (both when no
    /// node has one). A pod peer gets a set only for these — in a single-stack cluster
    /// half the sets, and the kernel looks every set up by name, walking the
    /// table's list of them, once per message of a transaction. Fixed between whole-world
    /// replacements (a node's ranges change only through [`Compiler::set_world`]).
    pod_families: (bool, bool),
}

/// Builds the plan that enforces `world`'s policies for the pods of `opts.node`.
pub fn compile(world: &World, opts: &PlanOptions) -> Plan {
    Compiler::new(world.clone(), opts.clone()).into_plan()
}

fn dir_index(dir: Direction) -> usize {
    match dir {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

fn pod_key(e: &Endpoint) -> PodKey {
    (e.namespace.clone(), e.name.clone())
}

/// The key of `peer` (a pod peer) of a policy in namespace `policy_ns`.
fn peer_key(policy_ns: &str, peer: &PolicyPeer) -> PeerKey {
    let ns = match peer {
        PolicyPeer::Pods {
            namespace_selector: Some(_),
            ..
        } => "",
        _ => policy_ns,
    };
    (ns.to_string(), peer.clone())
}

/// What a peer set's name stands for, canonically (hashed into its [`PeerName`]): a pod
/// peer's selectors and namespace (`""` with a namespace selector), or an ipBlock.
fn pods_key((ns, peer): &PeerKey) -> String {
    format!("pods|{ns}|{peer:?}")
}

fn block_key(b: &IpBlock) -> String {
    format!("block|{}|{:?}", b.cidr, b.except)
}

/// "every address": the peer set of a rule without peers.
const ALL_KEY: &str = "all";

fn field_of_peers(dir: Direction) -> Field {
    match dir {
        Direction::Ingress => Field::Saddr,
        Direction::Egress => Field::Daddr,
    }
}

/// Whether a pod peer of a policy in `policy_ns` selects endpoint `e`.
fn peer_selects(
    ns_labels: &HashMap<String, Labels>,
    policy_ns: &str,
    peer: &PolicyPeer,
    e: &Endpoint,
) -> bool {
    let PolicyPeer::Pods {
        pod_selector,
        namespace_selector,
    } = peer
    else {
        return false;
    };
    let ns_ok = match namespace_selector {
        None => e.namespace == policy_ns,
        Some(s) => ns_labels
            .get(e.namespace.as_str())
            .is_some_and(|l| s.matches(l)),
    };
    ns_ok && pod_selector.as_ref().is_none_or(|s| s.matches(&e.labels))
}

impl Compiler {
    /// Compiles `world` from scratch.
    pub fn new(world: World, opts: PlanOptions) -> Compiler {
        let mut c = Compiler {
            st: State {
                plan: Plan::empty(&opts.table),
                opts,
                policy_index: HashMap::new(),
                ns_policies: HashMap::new(),
                endpoint_index: HashMap::new(),
                addr_owners: HashMap::new(),
                ns_labels: HashMap::new(),
                peers: HashMap::new(),
                rules: HashMap::new(),
                shared: HashMap::new(),
                union_index: HashMap::new(),
                pods: HashMap::new(),
                classes: HashMap::new(),
                atoms: HashMap::new(),
                policy_classes: HashMap::new(),
                journal: None,
                pod_families: (true, true),
            },
            world,
        };
        let cidrs = || c.world.nodes.iter().flat_map(|n| n.pod_cidrs.iter());
        let families = (
            cidrs().any(|n| n.addr().is_ipv4()),
            cidrs().any(|n| n.addr().is_ipv6()),
        );
        if families != (false, false) {
            c.st.pod_families = families;
        }
        c.st.index_policies(&c.world);
        for (i, e) in c.world.endpoints.iter().enumerate() {
            c.st.endpoint_index.insert(pod_key(e), i);
            for a in &e.addresses {
                *c.st.addr_owners.entry(*a).or_default() += 1;
            }
            if !c.st.ns_labels.contains_key(&e.namespace) {
                let l = c.world.namespace_labels(&e.namespace);
                c.st.ns_labels.insert(e.namespace.clone(), l);
            }
        }
        c.st.base(&c.world);
        for e in &c.world.endpoints {
            if e.node == c.st.opts.node {
                c.st.add_pod(&c.world, e);
            }
        }
        c.st.begin();
        c
    }

    /// The plan for the current world.
    pub fn plan(&self) -> &Plan {
        &self.st.plan
    }

    pub fn into_plan(self) -> Plan {
        self.st.plan
    }

    pub fn world(&self) -> &World {
        &self.world
    }

    pub fn options(&self) -> &PlanOptions {
        &self.st.opts
    }

    /// The pod `namespace/name` as the compiler holds it.
    pub fn endpoint(&self, namespace: &str, name: &str) -> Option<&Endpoint> {
        let key = (namespace.to_string(), name.to_string());
        self.st
            .endpoint_index
            .get(&key)
            .and_then(|&i| self.world.endpoints.get(i))
    }

    /// The policy `namespace/name` as the compiler holds it.
    pub fn policy(&self, namespace: &str, name: &str) -> Option<&NetworkPolicy> {
        let r = PolicyRef {
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        self.st
            .policy_index
            .get(&r)
            .and_then(|&i| self.world.policies.get(i))
    }

    /// Adds the pod, or replaces the one with its namespace and name (labels, node,
    /// addresses, named ports). Returns the ops from the previous plan to the new one.
    pub fn upsert_endpoint(&mut self, e: Endpoint) {
        let key = pod_key(&e);
        let old = self
            .st
            .endpoint_index
            .get(&key)
            .map(|&i| self.world.endpoints[i].clone());
        // Its own elements go first; its classes stay referenced until the new ones are.
        let held = old
            .as_ref()
            .and_then(|o| self.st.remove_pod_elements(o))
            .unwrap_or_default();
        if let Some(o) = &old {
            self.st.own_addresses(o, false);
        }
        if !self.st.ns_labels.contains_key(&e.namespace) {
            let l = self.world.namespace_labels(&e.namespace);
            self.st.ns_labels.insert(e.namespace.clone(), l);
        }
        self.st.own_addresses(&e, true);
        match self.st.endpoint_index.get(&key) {
            Some(&i) => self.world.endpoints[i] = e.clone(),
            None => {
                self.st
                    .endpoint_index
                    .insert(key, self.world.endpoints.len());
                self.world.endpoints.push(e.clone());
            }
        }
        self.st
            .endpoint_changed(&self.world, old.as_ref(), Some(&e));
        if e.node == self.st.opts.node {
            self.st.add_pod(&self.world, &e);
        }
        for class in held.into_iter().flatten() {
            self.st.release_class(class);
        }
    }

    /// Removes a pod (nothing happens when there is none by that name).
    pub fn remove_endpoint(&mut self, namespace: &str, name: &str) {
        let key = (namespace.to_string(), name.to_string());
        if let Some(i) = self.st.endpoint_index.get(&key).copied() {
            let old = self.world.endpoints.remove(i);
            self.st.reindex_endpoints(&self.world);
            self.st.own_addresses(&old, false);
            if let Some(held) = self.st.remove_pod_elements(&old) {
                for class in held.into_iter().flatten() {
                    self.st.release_class(class);
                }
            }
            self.st.endpoint_changed(&self.world, Some(&old), None);
        }
    }

    /// Adds the policy, or replaces the one with its namespace and name.
    pub fn upsert_policy(&mut self, p: NetworkPolicy) {
        let r = p.reference();
        let old = self
            .st
            .policy_index
            .get(&r)
            .map(|&i| self.world.policies[i].clone());
        let dirty = self.st.classes_with(&r);
        match self.st.policy_index.get(&r) {
            Some(&i) => self.world.policies[i] = p.clone(),
            None => self.world.policies.push(p.clone()),
        }
        self.st.index_policies(&self.world);
        self.st.forget_rules(&r);
        self.st
            .policy_changed(&self.world, old.as_ref(), Some(&p), dirty);
    }

    /// Removes a policy (nothing happens when there is none by that name).
    pub fn remove_policy(&mut self, namespace: &str, name: &str) {
        let r = PolicyRef {
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        if let Some(i) = self.st.policy_index.get(&r).copied() {
            let dirty = self.st.classes_with(&r);
            let old = self.world.policies.remove(i);
            self.st.index_policies(&self.world);
            self.st.forget_rules(&r);
            self.st.policy_changed(&self.world, Some(&old), None, dirty);
        }
    }

    /// Replaces the whole world (namespace labels, nodes, or many changes at once): a full
    /// compile, and the diff from the previous plan.
    pub fn set_world(&mut self, world: World) {
        let before = self.st.plan_before();
        let was_empty = self.st.journal.as_ref().is_some_and(Journal::was_empty);
        *self = Compiler::new(world, self.st.opts.clone());
        self.st.journal = Some(Journal::replacing(before, was_empty));
    }

    /// The ops from the plan at the previous call (or at `new`) to the current plan, in a
    /// safe order (see [`diff`](super::diff)); empty when nothing changed.
    pub fn take_ops(&mut self) -> Vec<Op> {
        self.st.finish()
    }
}

impl State {
    // ---- the plan, with every change journalled (see `begin`/`finish`) ----

    /// Records a set's element `e` before it changes.
    fn touch_elem(&mut self, name: &str, e: &Elem) {
        if let Some(j) = &mut self.journal {
            j.touch_elem(&self.plan, name, e);
        }
    }

    /// Records a whole set before it is created, replaced or removed.
    fn touch_set(&mut self, name: &str) {
        if let Some(j) = &mut self.journal {
            j.touch_set(&self.plan, name);
        }
    }

    fn touch_chain(&mut self, name: &str) {
        if let Some(j) = &mut self.journal {
            j.touch_chain(&self.plan, name);
        }
    }

    /// Creates the set (its type follows from its name) unless it exists.
    fn set(&mut self, name: SetName) {
        let key = name.to_string();
        if !self.plan.sets.contains_key(&key) {
            self.touch_set(&key);
            self.plan.sets.insert(key, name.spec());
        }
    }

    /// Puts element `e` into a set; a pod map's counted twin gets it too (every isolated
    /// pod has a counter).
    fn elem(&mut self, set: SetName, e: Elem, v: Option<Verdict>) {
        if let Some(counted) = set.counted_twin() {
            self.elem(counted, e, None);
        }
        let set = set.to_string();
        if self
            .plan
            .sets
            .get(&set)
            .is_some_and(|s| s.elements.get(&e) != Some(&v))
        {
            self.touch_elem(&set, &e);
            if let Some(s) = self.plan.sets.get_mut(&set) {
                s.elements.insert(e, v);
            }
        }
    }

    fn unelem(&mut self, set: SetName, e: &Elem) {
        if let Some(counted) = set.counted_twin() {
            self.unelem(counted, e);
        }
        let set = set.to_string();
        if self
            .plan
            .sets
            .get(&set)
            .is_some_and(|s| s.elements.contains_key(e))
        {
            self.touch_elem(&set, e);
            if let Some(s) = self.plan.sets.get_mut(&set) {
                s.elements.remove(e);
            }
        }
    }

    /// Makes a set's elements `elements`, journalling only the elements that differ (a
    /// refilled atom or port map costs its changes, not its size).
    fn set_elements(&mut self, set: SetName, elements: BTreeMap<Elem, Option<Verdict>>) {
        let Some(current) = self.plan.sets.get(&set.to_string()) else {
            return;
        };
        if current.elements == elements {
            return;
        }
        if current.elements.is_empty() && set.counted_twin().is_none() {
            // A new (or emptied) set is moved in as it was built: a map collected at once
            // from its elements has full B-tree nodes, one grown element by element in key
            // order has them about half full — most of a large plan's memory is its atoms'
            // peer sets (760k elements in `weftctl bench scale`).
            let name = set.to_string();
            if self.journal.is_some() {
                for e in elements.keys() {
                    self.touch_elem(&name, e);
                }
            }
            if let Some(s) = self.plan.sets.get_mut(&name) {
                s.elements = elements;
            }
            return;
        }
        let gone: Vec<Elem> = current
            .elements
            .keys()
            .filter(|k| !elements.contains_key(k))
            .copied()
            .collect();
        let changed: Vec<(Elem, Option<Verdict>)> = elements
            .into_iter()
            .filter(|(k, v)| current.elements.get(k) != Some(v))
            .collect();
        for e in gone {
            self.unelem(set, &e);
        }
        for (e, v) in changed {
            self.elem(set, e, v);
        }
    }

    fn remove_set(&mut self, name: SetName) {
        let name = name.to_string();
        self.touch_set(&name);
        self.plan.sets.remove(&name);
    }

    fn add_chain(&mut self, name: ChainName, chain: Chain) {
        let name = name.to_string();
        self.touch_chain(&name);
        self.plan.chains.insert(name, chain);
    }

    fn remove_chain(&mut self, name: ChainName) {
        let name = name.to_string();
        self.touch_chain(&name);
        self.plan.chains.remove(&name);
    }

    /// Starts recording a change.
    fn begin(&mut self) {
        self.journal = Some(Journal::begin(&self.plan));
    }

    /// The plan as it was when the journal began.
    fn plan_before(&self) -> Plan {
        match &self.journal {
            Some(j) => j.plan_before(&self.plan),
            None => self.plan.clone(),
        }
    }

    /// Ends a change: the ops between the touched objects as they were and as they are.
    fn finish(&mut self) -> Vec<Op> {
        let Some(j) = self.journal.take() else {
            return Vec::new();
        };
        self.begin();
        j.ops(&self.plan)
    }

    // ---- indexes ----

    fn index_policies(&mut self, world: &World) {
        self.policy_index.clear();
        self.ns_policies.clear();
        for (i, p) in world.policies.iter().enumerate() {
            self.policy_index.insert(p.reference(), i);
            self.ns_policies
                .entry(p.namespace.clone())
                .or_default()
                .push(i);
        }
    }

    fn reindex_endpoints(&mut self, world: &World) {
        self.endpoint_index.clear();
        for (i, e) in world.endpoints.iter().enumerate() {
            self.endpoint_index.insert(pod_key(e), i);
        }
    }

    fn own_addresses(&mut self, e: &Endpoint, add: bool) {
        for a in &e.addresses {
            let n = self.addr_owners.entry(*a).or_default();
            if add {
                *n += 1;
            } else {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.addr_owners.remove(a);
                }
            }
        }
    }

    fn forget_rules(&mut self, policy: &PolicyRef) {
        self.rules.retain(|(p, _, _), _| p != policy);
    }

    // ---- building ----

    /// The fixed sets and base chains.
    fn base(&mut self, world: &World) {
        for f in Family::ALL {
            self.set(SetName::Known(f));
            self.set(SetName::Blocks(f));
            self.set(SetName::SelfPairs(f));
            self.set(SetName::PodMap(Direction::Ingress, f));
            self.set(SetName::PodMap(Direction::Egress, f));
            self.set(SetName::Denied(Direction::Ingress, f));
            self.set(SetName::Denied(Direction::Egress, f));
        }
        if let Some(node) = world.node(&self.opts.node) {
            let blocks = ranges::merge(node.pod_cidrs.iter().map(Range::of_net).collect());
            for r in blocks {
                let e = range_elem(r);
                self.elem(SetName::Blocks(Family::from_v6(r.v6)), e, None);
            }
        }
        let chain = |point, priority, field, dir: Direction, with_self: bool| {
            let cut = self.opts.cut_established.then_some(Rule::CutMarked);
            let mut rules: Vec<Rule> = cut.into_iter().collect();
            rules.extend([Rule::Established, Rule::NeighborDiscovery]);
            for f in Family::ALL {
                if with_self {
                    rules.push(Rule::PairIn {
                        v6: f.is_v6(),
                        set: SetName::SelfPairs(f).to_string(),
                        verdict: Verdict::Accept,
                    });
                }
            }
            for f in Family::ALL {
                rules.push(Rule::Unknown {
                    v6: f.is_v6(),
                    field,
                    within: SetName::Blocks(f).to_string(),
                    known: SetName::Known(f).to_string(),
                });
            }
            for f in Family::ALL {
                rules.push(Rule::AddrVmap {
                    v6: f.is_v6(),
                    field,
                    map: SetName::PodMap(dir, f).to_string(),
                });
            }
            Chain {
                hook: Some(Hook { point, priority }),
                rules,
            }
        };
        let chains = [
            (
                BaseChain::PodEgress,
                chain(
                    HookPoint::Forward,
                    EGRESS_PRIORITY,
                    Field::Saddr,
                    Direction::Egress,
                    true,
                ),
            ),
            (
                BaseChain::PodIngress,
                chain(
                    HookPoint::Forward,
                    0,
                    Field::Daddr,
                    Direction::Ingress,
                    true,
                ),
            ),
            (
                BaseChain::PodEgressLocal,
                chain(HookPoint::Input, 0, Field::Saddr, Direction::Egress, false),
            ),
        ];
        for (name, c) in chains {
            self.add_chain(name.into(), c);
        }
    }

    /// A local pod's elements and class references.
    fn add_pod(&mut self, world: &World, e: &Endpoint) {
        for a in &e.addresses {
            let f = Family::of(*a);
            self.elem(SetName::Known(f), Elem::addr(*a), None);
            if let Some(p) = Elem::pair(*a, *a) {
                self.elem(SetName::SelfPairs(f), p, None);
            }
        }
        let mut held: [Option<ClassName>; 2] = [None, None];
        for dir in [Direction::Ingress, Direction::Egress] {
            if let Some(class) = self.class(world, e, dir) {
                for a in &e.addresses {
                    let map = SetName::PodMap(dir, Family::of(*a));
                    self.elem(map, Elem::addr(*a), Some(Verdict::Jump(class.to_string())));
                }
                held[dir_index(dir)] = Some(class);
            }
        }
        self.pods.insert(pod_key(e), held);
    }

    /// Takes a local pod's elements out; returns the classes it held (still referenced: the
    /// caller releases them).
    fn remove_pod_elements(&mut self, e: &Endpoint) -> Option<[Option<ClassName>; 2]> {
        let held = self.pods.remove(&pod_key(e))?;
        for a in &e.addresses {
            let f = Family::of(*a);
            self.unelem(SetName::Known(f), &Elem::addr(*a));
            if let Some(p) = Elem::pair(*a, *a) {
                self.unelem(SetName::SelfPairs(f), &p);
            }
            for class in held.iter().flatten() {
                self.unelem(SetName::PodMap(class.direction(), f), &Elem::addr(*a));
            }
        }
        Some(held)
    }

    /// The policies of `e`'s namespace that isolate it in `dir`, in world order.
    fn selecting(&self, world: &World, e: &Endpoint, dir: Direction) -> Vec<usize> {
        self.ns_policies
            .get(&e.namespace)
            .map(|v| {
                v.iter()
                    .copied()
                    .filter(|&i| {
                        let p = &world.policies[i];
                        p.applies(dir) && p.selects(e)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The class chain of pod `e` in `dir` (created on first use), with one more reference,
    /// or `None` when no policy isolates it that way.
    fn class(&mut self, world: &World, e: &Endpoint, dir: Direction) -> Option<ClassName> {
        let pols = self.selecting(world, e, dir);
        if pols.is_empty() {
            return None;
        }
        // Ingress named ports resolve on the protected pod: part of the class's identity.
        let mut named: BTreeMap<(String, Protocol), Option<u16>> = BTreeMap::new();
        if dir == Direction::Ingress {
            for &pi in &pols {
                for r in &world.policies[pi].spec.ingress {
                    for p in &r.ports {
                        if let Some(PortRef::Name(n)) = &p.port {
                            named.insert((n.clone(), p.protocol), e.named_port(n, p.protocol));
                        }
                    }
                }
            }
        }
        let refs: Vec<PolicyRef> = pols
            .iter()
            .map(|&i| world.policies[i].reference())
            .collect();
        let key = format!(
            "{dir}|{}|{named:?}|{:?}",
            refs.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            self.opts.log_per_second
        );
        let name = ClassName::of(dir, &key);
        if let Some(c) = self.classes.get_mut(&name) {
            c.pods += 1;
            return Some(name);
        }
        let ports_map = SetName::Ports(name);
        self.set(ports_map);
        for r in &refs {
            self.policy_classes
                .entry(r.clone())
                .or_default()
                .insert(name);
        }
        self.classes.insert(
            name,
            ClassEntry {
                policies: refs.clone(),
                named,
                pods: 1,
                atoms: BTreeSet::new(),
                egress_named: false,
            },
        );
        self.fill_class(world, name);
        let mut rules = vec![Rule::PortVmap {
            map: ports_map.to_string(),
        }];
        if let Some(rate) = self.opts.log_per_second {
            rules.push(Rule::Log {
                prefix: format!("weft deny {name}: "),
                per_second: rate,
            });
        }
        let field = if dir == Direction::Ingress {
            Field::Daddr
        } else {
            Field::Saddr
        };
        for f in Family::ALL {
            rules.push(Rule::AddrIn {
                v6: f.is_v6(),
                field,
                set: SetName::Denied(dir, f).to_string(),
                verdict: Verdict::Drop,
            });
        }
        rules.push(Rule::CounterDrop);
        self.add_chain(name.into(), Chain { hook: None, rules });
        self.plan.classes.insert(
            name.to_string(),
            ClassInfo {
                direction: dir,
                policies: refs,
            },
        );
        Some(name)
    }

    /// (Re)computes a class's port map and atoms from the current world. Regions whose
    /// peer sets stay keep their atom; a region whose covering rules name other peer sets
    /// jumps to another atom (an existing one, or a new chain of a few rules), and atoms no
    /// class jumps to any more go.
    fn fill_class(&mut self, world: &World, name: ClassName) {
        let Some(entry) = self.classes.get(&name) else {
            return;
        };
        let dir = name.direction();
        let named = entry.named.clone();
        let pols: Vec<usize> = entry
            .policies
            .iter()
            .filter_map(|r| self.policy_index.get(r).copied())
            .collect();
        let contributions = self.contributions(world, &pols, dir, &named);
        // Derived sets other classes hold already: their elements as of this world (every
        // class naming one computes the same, see `Source::Derived`).
        let mut refreshed = std::collections::HashSet::new();
        for c in &contributions {
            for ps in c.sets.iter() {
                if let Source::Derived(addrs) = &ps.source
                    && self.shared.contains_key(&ps.name)
                    && refreshed.insert(ps.name)
                {
                    self.set_elements(ps.name, addr_elements(addrs.iter().copied()));
                }
            }
        }
        let mut elements = BTreeMap::new();
        let mut atoms = BTreeSet::new();
        for (elem, coverage) in atoms_of(&contributions) {
            // The union of the covering contributions' sets, in name order (peer sets'
            // names are a fixed-width hash between a kind's prefix and a family digit, so
            // (peer, family) orders them as their names do): the atom.
            let mut sets: Vec<&PeerSet> = coverage
                .iter()
                .flat_map(|&i| contributions[i].sets.iter())
                .collect();
            sets.sort_unstable_by_key(|ps| order(ps));
            sets.dedup_by_key(|ps| ps.name);
            let atom = if sets.len() > self.opts.union_above {
                let members = sets.into_iter().cloned().collect();
                self.union_atom(world, name, &elem, members)
            } else {
                let sets: Vec<(String, PeerSet)> = sets
                    .into_iter()
                    .map(|ps| (ps.name.to_string(), ps.clone()))
                    .collect();
                self.atom(world, dir, &sets)
            };
            elements.insert(elem, Some(Verdict::Jump(atom.to_string())));
            atoms.insert(atom);
        }
        let before = self
            .classes
            .get(&name)
            .map(|c| c.atoms.clone())
            .unwrap_or_default();
        for a in atoms.difference(&before) {
            if let Some(entry) = self.atoms.get_mut(a) {
                entry.classes += 1;
            }
        }
        let gone: Vec<AtomName> = before.difference(&atoms).copied().collect();
        // Named egress ports resolve on whichever pods have them: any pod's ports matter,
        // also while no pod resolves them yet.
        let egress_named = dir == Direction::Egress
            && pols.iter().any(|&pi| {
                world.policies[pi].spec.egress.iter().any(|r| {
                    r.ports
                        .iter()
                        .any(|p| matches!(p.port, Some(PortRef::Name(_))))
                })
            });
        if let Some(entry) = self.classes.get_mut(&name) {
            entry.atoms = atoms;
            entry.egress_named = egress_named;
        }
        // The port map before the atoms it stops jumping to go.
        self.set_elements(SetName::Ports(name), elements);
        for a in gone {
            self.release_atom(a);
        }
    }

    /// Releases a class's atoms (its port map keeps pointing at them until refilled or
    /// removed, so this is only ever followed by one of the two within a change).
    fn unfill_class(&mut self, name: ClassName) {
        let atoms = match self.classes.get_mut(&name) {
            Some(c) => std::mem::take(&mut c.atoms),
            None => return,
        };
        // The port map first: an atom may be removed below, and nothing may jump to it.
        self.set_elements(SetName::Ports(name), BTreeMap::new());
        for a in atoms {
            self.release_atom(a);
        }
    }

    fn release_class(&mut self, name: ClassName) {
        let Some(c) = self.classes.get_mut(&name) else {
            return;
        };
        c.pods = c.pods.saturating_sub(1);
        if c.pods > 0 {
            return;
        }
        self.unfill_class(name);
        if let Some(c) = self.classes.remove(&name) {
            for r in &c.policies {
                if let Some(set) = self.policy_classes.get_mut(r) {
                    set.remove(&name);
                    if set.is_empty() {
                        self.policy_classes.remove(r);
                    }
                }
            }
        }
        self.remove_chain(name.into());
        self.remove_set(SetName::Ports(name));
        self.plan.classes.remove(&name.to_string());
    }

    fn release_atom(&mut self, name: AtomName) {
        let Some(a) = self.atoms.get_mut(&name) else {
            return;
        };
        a.classes = a.classes.saturating_sub(1);
        if a.classes > 0 {
            return;
        }
        let Some(entry) = self.atoms.remove(&name) else {
            return;
        };
        // The chain before the sets it reads (the diff orders them so anyway).
        self.remove_chain(name.into());
        for set in entry.sets {
            self.release_set(set);
        }
        if let Some(u) = entry.union {
            self.unindex_union(name, &u.members);
            for (kind, f) in union_parts(&u.members) {
                self.remove_set(union_set(name, kind, f));
            }
        }
    }

    /// One more atom reads peer set `ps`: created and filled when it is the first.
    fn acquire_set(&mut self, world: &World, ps: &PeerSet) {
        let n = self.shared.entry(ps.name).or_default();
        *n += 1;
        if *n > 1 {
            return;
        }
        self.set(ps.name);
        let SetName::Peer(_, family) = ps.name else {
            return;
        };
        let elements = match &ps.source {
            Source::Pods(key) => {
                let pods = self.pods_peer(world, key);
                addr_elements(pods.iter().copied().filter(|a| Family::of(*a) == family))
            }
            Source::Nets(ranges) => ranges.iter().map(|r| (range_elem(*r), None)).collect(),
            Source::Derived(addrs) => addr_elements(addrs.iter().copied()),
        };
        self.set_elements(ps.name, elements);
    }

    /// One atom less reads peer set `name`: removed with the last.
    fn release_set(&mut self, name: SetName) {
        let Some(n) = self.shared.get_mut(&name) else {
            return;
        };
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.shared.remove(&name);
            self.remove_set(name);
        }
    }

    /// The peer sets of `dir` rules of `policies` (ingress named ports resolved as
    /// `named` says), each with the (protocol, port)s it covers.
    fn contributions(
        &mut self,
        world: &World,
        pols: &[usize],
        dir: Direction,
        named: &BTreeMap<(String, Protocol), Option<u16>>,
    ) -> Vec<Contribution> {
        let mut out = Vec::new();
        for &pi in pols {
            let policy = &world.policies[pi];
            for (ri, rule) in policy.rules(dir).iter().enumerate() {
                let sets = self.rule_sets(world, pi, dir, ri);
                if rule.ports.is_empty() {
                    out.push(Contribution {
                        cover: Cover::All,
                        sets,
                    });
                    continue;
                }
                let mut cover = Vec::new();
                let mut egress_named = BTreeSet::new();
                for p in &rule.ports {
                    let proto = p.protocol.number();
                    match &p.port {
                        None => cover.push((proto, 0, u16::MAX)),
                        Some(PortRef::Number(n)) => {
                            cover.push((proto, *n, p.end_port.unwrap_or(*n).max(*n)))
                        }
                        Some(PortRef::Name(name)) => {
                            if dir == Direction::Ingress {
                                if let Some(Some(n)) = named.get(&(name.clone(), p.protocol)) {
                                    cover.push((proto, *n, *n));
                                }
                            } else {
                                egress_named.insert((name.clone(), p.protocol));
                            }
                        }
                    }
                }
                if !cover.is_empty() {
                    out.push(Contribution {
                        cover: Cover::Ranges(cover),
                        sets,
                    });
                }
                // Egress named ports resolve on each destination pod: one contribution per
                // (name, number), allowing, of each peer, the pods where it resolves so —
                // a derived set per (peer, name, number), shared like the peer's own.
                for (name, protocol) in egress_named {
                    let mut by_port: BTreeMap<u16, Vec<PeerSet>> = BTreeMap::new();
                    for (peer_key, matcher) in self.rule_matchers(world, pi, dir, ri) {
                        let mut per_port: BTreeMap<u16, BTreeSet<IpAddr>> = BTreeMap::new();
                        for d in &world.endpoints {
                            let Some(n) = d.named_port(&name, protocol) else {
                                continue;
                            };
                            for a in &d.addresses {
                                if matcher.matches(*a) {
                                    per_port.entry(n).or_default().insert(*a);
                                }
                            }
                        }
                        for (n, addrs) in per_port {
                            let key = format!("named|{name}/{}={n}|{peer_key}", protocol.as_str());
                            let peer = PeerName::of(PeerKind::Pods, &key);
                            for f in Family::ALL {
                                let of: Vec<IpAddr> = addrs
                                    .iter()
                                    .copied()
                                    .filter(|a| Family::of(*a) == f)
                                    .collect();
                                if of.is_empty() {
                                    continue;
                                }
                                by_port.entry(n).or_default().push(PeerSet {
                                    name: SetName::Peer(peer, f),
                                    source: Source::Derived(Rc::new(of)),
                                });
                            }
                        }
                    }
                    for (n, sets) in by_port {
                        out.push(Contribution {
                            cover: Cover::Ranges(vec![(protocol.number(), n, n)]),
                            sets: Rc::new(sets),
                        });
                    }
                }
            }
        }
        out
    }

    /// A rule's peers as address tests, each with its set key (egress named ports).
    fn rule_matchers(
        &mut self,
        world: &World,
        pi: usize,
        dir: Direction,
        ri: usize,
    ) -> Vec<(String, Matcher)> {
        let policy = &world.policies[pi];
        let rule = &policy.rules(dir)[ri];
        if rule.peers.is_empty() {
            return vec![(ALL_KEY.to_string(), Matcher::All)];
        }
        let mut out = Vec::new();
        for peer in &rule.peers {
            match peer {
                PolicyPeer::IpBlock(b) => out.push((block_key(b), Matcher::Block(b.clone()))),
                PolicyPeer::Pods { .. } => {
                    let key = peer_key(&policy.namespace, peer);
                    let pods = self.pods_peer(world, &key);
                    out.push((pods_key(&key), Matcher::Pods(pods)));
                }
            }
        }
        out
    }

    /// The addresses of the pods a pod peer selects (cached per peer key).
    fn pods_peer(&mut self, world: &World, key: &PeerKey) -> Rc<BTreeSet<IpAddr>> {
        if let Some(hit) = self.peers.get(key) {
            return hit.clone();
        }
        let out = Rc::new(self.scan_peer(world, key));
        self.peers.insert(key.clone(), out.clone());
        out
    }

    fn scan_peer(&self, world: &World, (ns, peer): &PeerKey) -> BTreeSet<IpAddr> {
        // Collected at once (full B-tree nodes, see `set_elements`): peer sets are kept for
        // as long as a rule names them, thousands of addresses each in a large cluster.
        world
            .endpoints
            .iter()
            .filter(|e| peer_selects(&self.ns_labels, ns, peer, e))
            .flat_map(|e| e.addresses.iter().copied())
            .collect()
    }

    /// The peer sets of a rule's peers (empty peers: every address), per family.
    fn rule_sets(
        &mut self,
        world: &World,
        pi: usize,
        dir: Direction,
        ri: usize,
    ) -> Rc<Vec<PeerSet>> {
        let policy = &world.policies[pi];
        let rk: RuleKey = (policy.reference(), dir, ri);
        if let Some(hit) = self.rules.get(&rk) {
            return hit.clone();
        }
        let rule = &policy.rules(dir)[ri];
        let mut sets = Vec::new();
        let nets = |key: &str, ranges: Vec<Range>, sets: &mut Vec<PeerSet>| {
            let peer = PeerName::of(PeerKind::Nets, key);
            for f in Family::ALL {
                let of: Vec<Range> = ranges
                    .iter()
                    .copied()
                    .filter(|r| r.v6 == f.is_v6())
                    .collect();
                if of.is_empty() {
                    continue;
                }
                sets.push(PeerSet {
                    name: SetName::Peer(peer, f),
                    source: Source::Nets(Rc::new(ranges::merge(of))),
                });
            }
        };
        if rule.peers.is_empty() {
            nets(
                ALL_KEY,
                vec![Range::everything(false), Range::everything(true)],
                &mut sets,
            );
        }
        for peer in &rule.peers {
            match peer {
                PolicyPeer::IpBlock(b) => nets(
                    &block_key(b),
                    ranges::subtract(&b.cidr, &b.except),
                    &mut sets,
                ),
                PolicyPeer::Pods { .. } => {
                    let key = Rc::new(peer_key(&policy.namespace, peer));
                    let name = PeerName::of(PeerKind::Pods, &pods_key(&key));
                    let (v4, v6) = self.pod_families;
                    for (f, on) in [(Family::V4, v4), (Family::V6, v6)] {
                        if on {
                            sets.push(PeerSet {
                                name: SetName::Peer(name, f),
                                source: Source::Pods(key.clone()),
                            });
                        }
                    }
                }
            }
        }
        let sets = Rc::new(sets);
        self.rules.insert(rk, sets.clone());
        sets
    }

    /// The atom chain of `dir` that allows the union of `sets` (name-ordered, distinct):
    /// created unless some class has it already, with a reference on each of its sets;
    /// referenced by no class yet (the class counts itself in).
    ///
    /// Its name stands for the sets it reads, nothing else: its rules (one `accept` per set)
    /// are fixed by its name, so a chain never changes once created. Peers that move change
    /// their sets' elements, never an atom; a rule that starts or stops covering a region
    /// makes the region jump to another atom — a new chain of a few rules at most, since
    /// the sets exist already.
    fn atom(&mut self, world: &World, dir: Direction, sets: &[(String, PeerSet)]) -> AtomName {
        let key: Vec<&str> = sets.iter().map(|(n, _)| n.as_str()).collect();
        let name = AtomName::of(dir, &key.join(","));
        if self.atoms.contains_key(&name) {
            return name;
        }
        let field = field_of_peers(dir);
        let mut rules = Vec::new();
        for (set, ps) in sets {
            self.acquire_set(world, ps);
            let SetName::Peer(_, f) = ps.name else {
                continue;
            };
            rules.push(Rule::AddrIn {
                v6: f.is_v6(),
                field,
                set: set.clone(),
                verdict: Verdict::Accept,
            });
        }
        self.atoms.insert(
            name,
            AtomEntry {
                classes: 0,
                sets: sets.iter().map(|(_, ps)| ps.name).collect(),
                union: None,
            },
        );
        self.add_chain(name.into(), Chain { hook: None, rules });
        name
    }

    /// The union atom of `class`'s port region `region`, merging `members` (name-ordered,
    /// distinct, more than [`PlanOptions::union_above`]): created unless the class has it
    /// already, its sets made to hold exactly the members' addresses.
    ///
    /// Named after its class, its region and which of its sets exist (pod addresses and
    /// CIDRs, per family: fixed by the members' names), so its rules — one `accept` per
    /// set of its own — are fixed by its name, like a shared atom's. Unlike one, it stays
    /// when a rule starts or stops covering its region: an edited policy patches its sets'
    /// elements (what the rule's peers add or take away) instead of making a chain of
    /// hundreds of rules, and a new flow's first packet meets at most four lookups.
    fn union_atom(
        &mut self,
        world: &World,
        class: ClassName,
        region: &Elem,
        members: Vec<PeerSet>,
    ) -> AtomName {
        let parts = union_parts(&members);
        let dir = class.direction();
        let name = AtomName::of(dir, &format!("union|{class}|{region:?}|{parts:?}"));
        if !self.atoms.contains_key(&name) {
            let field = field_of_peers(dir);
            let mut rules = Vec::new();
            for &(kind, f) in &parts {
                let set = union_set(name, kind, f);
                self.set(set);
                rules.push(Rule::AddrIn {
                    v6: f.is_v6(),
                    field,
                    set: set.to_string(),
                    verdict: Verdict::Accept,
                });
            }
            self.atoms.insert(
                name,
                AtomEntry {
                    classes: 0,
                    sets: Vec::new(),
                    union: Some(Union::default()),
                },
            );
            self.add_chain(name.into(), Chain { hook: None, rules });
        }
        self.set_union_members(world, name, members);
        name
    }

    /// Makes union atom `atom` merge `members`: the pod addresses of members that joined
    /// or left are counted in or out (an address leaves with the last member holding it),
    /// CIDRs are merged again when an ipBlock joined or left, and endpoint changes of its
    /// pod peers reach it from now on. Only elements that change are journalled.
    fn set_union_members(&mut self, world: &World, atom: AtomName, members: Vec<PeerSet>) {
        let Some(old) = self.atoms.get(&atom).and_then(|a| a.union.as_ref()) else {
            return;
        };
        // Pod peers are kept current by `endpoint_changed`; derived sets only by refills,
        // so a derived member counts out what it held and in what it holds now.
        let derived = |m: &PeerSet| matches!(m.source, Source::Derived(_));
        if old.members.len() == members.len()
            && old
                .members
                .iter()
                .zip(&members)
                .all(|(a, b)| a.name == b.name)
            && !members.iter().any(derived)
        {
            return;
        }
        let stays = |m: &PeerSet, other: &[PeerSet]| {
            !matches!(m.source, Source::Derived(_))
                && other.binary_search_by(|o| order(o).cmp(&order(m))).is_ok()
        };
        let gone: Vec<PeerSet> = old
            .members
            .iter()
            .filter(|m| !stays(m, &members))
            .cloned()
            .collect();
        let joined: Vec<PeerSet> = members
            .iter()
            .filter(|m| !stays(m, &old.members))
            .cloned()
            .collect();
        if gone.is_empty() && joined.is_empty() {
            return;
        }
        self.unindex_union(atom, &gone);
        for m in &joined {
            if let Source::Pods(_) = m.source {
                self.union_index.entry(m.name).or_default().insert(atom);
            }
        }
        let mut moved: BTreeMap<IpAddr, i64> = BTreeMap::new();
        for (list, step) in [(&gone, -1), (&joined, 1)] {
            for m in list {
                for a in self.member_addrs(world, m) {
                    *moved.entry(a).or_default() += step;
                }
            }
        }
        let nets_moved = gone
            .iter()
            .chain(&joined)
            .any(|m| matches!(m.source, Source::Nets(_)));
        if let Some(u) = self.atoms.get_mut(&atom).and_then(|a| a.union.as_mut()) {
            u.members = members;
        }
        self.count_in_union(atom, moved);
        if nets_moved {
            for (kind, f) in self.union_parts_of(atom) {
                if kind.holds_ranges() {
                    let elements = self.union_nets(atom, f);
                    self.set_elements(union_set(atom, kind, f), elements);
                }
            }
        }
    }

    /// Adds `moved[a]` to the number of union atom `atom`'s members holding pod address
    /// `a`; an address enters its set at one and leaves at zero.
    fn count_in_union(&mut self, atom: AtomName, moved: BTreeMap<IpAddr, i64>) {
        let mut enter = Vec::new();
        let mut leave = Vec::new();
        let Some(u) = self.atoms.get_mut(&atom).and_then(|a| a.union.as_mut()) else {
            return;
        };
        for (a, step) in moved {
            if step == 0 {
                continue;
            }
            let n = u.counts.entry(a).or_default();
            let was = *n;
            *n = (*n + step).max(0);
            match (was, *n) {
                (0, 1..) => enter.push(a),
                (1.., 0) => leave.push(a),
                _ => {}
            }
            if *n == 0 {
                u.counts.remove(&a);
            }
        }
        for f in Family::ALL {
            let set = union_set(atom, PeerKind::PodUnion, f);
            let empty = self
                .plan
                .sets
                .get(&set.to_string())
                .is_none_or(|s| s.elements.is_empty());
            if empty && leave.is_empty() {
                // A new set is moved in whole (see `set_elements`).
                let all = enter.iter().copied().filter(|a| Family::of(*a) == f);
                self.set_elements(set, addr_elements(all));
                continue;
            }
            for &a in leave.iter().filter(|a| Family::of(**a) == f) {
                self.unelem(set, &Elem::addr(a));
            }
            for &a in enter.iter().filter(|a| Family::of(**a) == f) {
                self.elem(set, Elem::addr(a), None);
            }
        }
    }

    fn unindex_union(&mut self, atom: AtomName, members: &[PeerSet]) {
        for m in members {
            if let Some(atoms) = self.union_index.get_mut(&m.name) {
                atoms.remove(&atom);
                if atoms.is_empty() {
                    self.union_index.remove(&m.name);
                }
            }
        }
    }

    /// The pod addresses a member of a union holds (none for an ipBlock).
    fn member_addrs(&mut self, world: &World, m: &PeerSet) -> Vec<IpAddr> {
        let SetName::Peer(_, f) = m.name else {
            return Vec::new();
        };
        match &m.source {
            Source::Pods(key) => {
                let pods = self.pods_peer(world, key);
                pods.iter()
                    .copied()
                    .filter(|a| Family::of(*a) == f)
                    .collect()
            }
            Source::Derived(d) => d.to_vec(),
            Source::Nets(_) => Vec::new(),
        }
    }

    fn union_parts_of(&self, atom: AtomName) -> BTreeSet<(PeerKind, Family)> {
        self.atoms
            .get(&atom)
            .and_then(|a| a.union.as_ref())
            .map(|u| union_parts(&u.members))
            .unwrap_or_default()
    }

    /// A union atom's ipBlocks of family `f`, merged into disjoint intervals.
    fn union_nets(&self, atom: AtomName, f: Family) -> BTreeMap<Elem, Option<Verdict>> {
        let Some(u) = self.atoms.get(&atom).and_then(|a| a.union.as_ref()) else {
            return BTreeMap::new();
        };
        let ranges: Vec<Range> = u
            .members
            .iter()
            .filter(|m| matches!(m.name, SetName::Peer(_, g) if g == f))
            .filter_map(|m| match &m.source {
                Source::Nets(r) => Some(r.iter().copied()),
                _ => None,
            })
            .flatten()
            .collect();
        ranges::merge(ranges)
            .into_iter()
            .map(|r| (range_elem(r), None))
            .collect()
    }

    // ---- changes ----

    /// After endpoint `old` became `new` (either may be `None`) in `world`: patches the
    /// peer sets that select either (elements only: atoms read them by name), and rebuilds
    /// classes with egress named ports when named ports may move. The pod's own elements and
    /// classes are the caller's.
    fn endpoint_changed(&mut self, world: &World, old: Option<&Endpoint>, new: Option<&Endpoint>) {
        let selects = |ns: &str, peer: &PolicyPeer, e: Option<&Endpoint>| {
            e.is_some_and(|e| peer_selects(&self.ns_labels, ns, peer, e))
        };
        let candidates: Vec<(PeerKey, bool, bool)> = self
            .peers
            .keys()
            .filter_map(|key| {
                let (was, is) = (selects(&key.0, &key.1, old), selects(&key.0, &key.1, new));
                (was || is).then(|| (key.clone(), was, is))
            })
            .collect();
        // Only these addresses can enter or leave a peer's set: no other pod changed.
        let touched: BTreeSet<IpAddr> = old
            .into_iter()
            .chain(new)
            .flat_map(|e| e.addresses.iter().copied())
            .collect();
        // Union atoms' counts of the addresses that entered or left a member.
        let mut unions: BTreeMap<AtomName, BTreeMap<IpAddr, i64>> = BTreeMap::new();
        for (key, was, is) in candidates {
            let Some(current) = self.peers.get(&key).cloned() else {
                continue;
            };
            // Another pod holding one of the old addresses would keep it in: rescan then.
            let shared = was
                && old.is_some_and(|o| {
                    o.addresses.iter().any(|a| {
                        let owners = self.addr_owners.get(a).copied().unwrap_or(0);
                        let by_new = usize::from(new.is_some_and(|n| n.addresses.contains(a)));
                        owners > by_new
                    })
                });
            let next = if shared {
                self.scan_peer(world, &key)
            } else {
                let mut s = (*current).clone();
                if let (true, Some(o)) = (was, old) {
                    for a in &o.addresses {
                        s.remove(a);
                    }
                }
                if let (true, Some(n)) = (is, new) {
                    s.extend(n.addresses.iter().copied());
                }
                s
            };
            if next == *current {
                continue;
            }
            let peer = PeerName::of(PeerKind::Pods, &pods_key(&key));
            for &a in &touched {
                let set = SetName::Peer(peer, Family::of(a));
                let step = i64::from(next.contains(&a)) - i64::from(current.contains(&a));
                if step != 0
                    && let Some(atoms) = self.union_index.get(&set)
                {
                    for &atom in atoms {
                        *unions.entry(atom).or_default().entry(a).or_default() += step;
                    }
                }
                if !self.shared.contains_key(&set) {
                    continue;
                }
                if next.contains(&a) {
                    self.elem(set, Elem::addr(a), None);
                } else {
                    self.unelem(set, &Elem::addr(a));
                }
            }
            self.peers.insert(key, Rc::new(next));
        }
        for (atom, moved) in unions {
            self.count_in_union(atom, moved);
        }
        let named =
            old.is_some_and(|o| !o.ports.is_empty()) || new.is_some_and(|n| !n.ports.is_empty());
        if named {
            let classes: Vec<ClassName> = self
                .classes
                .iter()
                .filter(|(_, c)| c.egress_named)
                .map(|(n, _)| *n)
                .collect();
            for c in classes {
                self.fill_class(world, c);
            }
        }
    }

    /// Before a policy changes: empties the classes that include it (their atoms may hold
    /// The classes that include a policy (to be refilled once it changed).
    fn classes_with(&self, policy: &PolicyRef) -> Vec<ClassName> {
        self.policy_classes
            .get(policy)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// After policy `old` became `new` in `world`: reclassifies the local pods either
    /// selects, then refills the classes that included it and are still in use.
    fn policy_changed(
        &mut self,
        world: &World,
        old: Option<&NetworkPolicy>,
        new: Option<&NetworkPolicy>,
        dirty: Vec<ClassName>,
    ) {
        let ns = match (old, new) {
            (Some(p), _) | (None, Some(p)) => p.namespace.clone(),
            (None, None) => return,
        };
        let affected: Vec<usize> = world
            .endpoints
            .iter()
            .enumerate()
            .filter(|(_, e)| e.node == self.opts.node && e.namespace == ns)
            .filter(|(_, e)| old.is_some_and(|p| p.selects(e)) || new.is_some_and(|p| p.selects(e)))
            .map(|(i, _)| i)
            .collect();
        for i in affected {
            let e = &world.endpoints[i];
            if let Some(held) = self.remove_pod_elements(e) {
                self.add_pod(world, e);
                for class in held.into_iter().flatten() {
                    self.release_class(class);
                }
            }
        }
        for c in dirty {
            self.fill_class(world, c);
        }
    }
}
/// A peer's address test (egress named ports: which of the pods with a port it allows).
enum Matcher {
    All,
    Block(IpBlock),
    Pods(Rc<BTreeSet<IpAddr>>),
}

impl Matcher {
    fn matches(&self, a: IpAddr) -> bool {
        match self {
            Matcher::All => true,
            Matcher::Block(b) => b.contains(a),
            Matcher::Pods(pods) => pods.contains(&a),
        }
    }
}

/// Which sets a union atom of `members` has: pod addresses (pod peers, derived sets) and
/// CIDRs, per family present among them.
fn union_parts(members: &[PeerSet]) -> BTreeSet<(PeerKind, Family)> {
    members
        .iter()
        .filter_map(|m| match (m.name, &m.source) {
            (SetName::Peer(_, f), Source::Nets(_)) => Some((PeerKind::NetUnion, f)),
            (SetName::Peer(_, f), _) => Some((PeerKind::PodUnion, f)),
            _ => None,
        })
        .collect()
}

/// Where a peer set sorts among an atom's: as its name does (see `fill_class`).
fn order(ps: &PeerSet) -> (Option<PeerName>, Option<Family>) {
    match ps.name {
        SetName::Peer(p, f) => (Some(p), Some(f)),
        _ => (None, None),
    }
}

/// Union atom `atom`'s set of `kind` (pod addresses or CIDRs) and family `f`.
fn union_set(atom: AtomName, kind: PeerKind, f: Family) -> SetName {
    SetName::Peer(PeerName::of(kind, &atom.to_string()), f)
}

/// Single addresses as a set's elements, collected at once (see `set_elements`).
fn addr_elements(addrs: impl Iterator<Item = IpAddr>) -> BTreeMap<Elem, Option<Verdict>> {
    addrs.map(|a| (Elem::addr(a), None)).collect()
}

pub(crate) fn range_elem(r: Range) -> Elem {
    match (ranges::u128_addr(r.v6, r.lo), ranges::u128_addr(r.v6, r.hi)) {
        (IpAddr::V4(a), IpAddr::V4(b)) => Elem::V4(a, b),
        (IpAddr::V6(a), IpAddr::V6(b)) => Elem::V6(a, b),
        // Both ends come from one family.
        (a, _) => Elem::addr(a),
    }
}

/// Splits the (protocol, port) space into regions of equal coverage: port-map elements and
/// the contributions covering each (regions nobody covers are left out: they drop).
fn atoms_of(contribs: &[Contribution]) -> Vec<(Elem, Vec<usize>)> {
    let all: Vec<usize> = contribs
        .iter()
        .enumerate()
        .filter(|(_, c)| matches!(c.cover, Cover::All))
        .map(|(i, _)| i)
        .collect();
    let mut out = Vec::new();
    for proto in Protocol::ALL.map(Protocol::number) {
        // Sweep: +i at a range's first port, -i after its last.
        let mut events: BTreeMap<u32, Vec<(usize, bool)>> = BTreeMap::new();
        for (i, c) in contribs.iter().enumerate() {
            if let Cover::Ranges(rs) = &c.cover {
                for &(p, lo, hi) in rs {
                    if p == proto {
                        events.entry(u32::from(lo)).or_default().push((i, true));
                        events
                            .entry(u32::from(hi) + 1)
                            .or_default()
                            .push((i, false));
                    }
                }
            }
        }
        events.entry(0).or_default();
        let mut active: BTreeMap<usize, usize> = BTreeMap::new();
        let mut segments: Vec<(u16, u16, Vec<usize>)> = Vec::new();
        let points: Vec<u32> = events.keys().copied().collect();
        for (k, point) in points.iter().enumerate() {
            if *point > u32::from(u16::MAX) {
                break;
            }
            for &(i, start) in &events[point] {
                if start {
                    *active.entry(i).or_default() += 1;
                } else if let Some(n) = active.get_mut(&i) {
                    *n -= 1;
                    if *n == 0 {
                        active.remove(&i);
                    }
                }
            }
            let end = points.get(k + 1).map_or(u32::from(u16::MAX), |next| {
                (*next - 1).min(u32::from(u16::MAX))
            });
            let mut cov: Vec<usize> = all.iter().copied().chain(active.keys().copied()).collect();
            cov.sort_unstable();
            cov.dedup();
            let (lo, hi) = (*point as u16, end as u16);
            match segments.last_mut() {
                Some(last) if last.2 == cov && u32::from(last.1) + 1 == u32::from(lo) => {
                    last.1 = hi
                }
                _ => segments.push((lo, hi, cov)),
            }
        }
        for (lo, hi, cov) in segments {
            if !cov.is_empty() {
                out.push((
                    Elem::ProtoPort {
                        proto: (proto, proto),
                        port: (lo, hi),
                    },
                    cov,
                ));
            }
        }
    }
    // Protocols without ports: only rules with no `ports` allow them.
    if !all.is_empty() {
        for (lo, hi) in [(0u8, 5u8), (7, 16), (18, 131), (133, 255)] {
            out.push((
                Elem::ProtoPort {
                    proto: (lo, hi),
                    port: (0, u16::MAX),
                },
                all.clone(),
            ));
        }
    }
    out
}
