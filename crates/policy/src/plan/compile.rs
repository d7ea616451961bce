//! World → Plan for one node.
//!
//! Vocabulary (see the module above for the table's shape):
//! - a **contribution** is what one rule allows, as (port cover, addresses): an ingress rule
//!   with its named ports resolved on the class's pods, or an egress rule (its numeric ports
//!   with the rule's peers, and for each named port and each number it resolves to on some
//!   pod, that number with just those pods' addresses);
//! - a **class** is the set of local pods selected by the same policies in one direction
//!   (and, for ingress, resolving the policies' named ports the same way); one chain each;
//! - an **atom** is, within one class, the union of the contributions that cover some
//!   (protocol, port) region (regions of equal coverage share one); one chain each, with a
//!   pod-address set per family and a CIDR set per family some covering rule has CIDRs in.
//!
//! Names are stable hashes of what they stand for (FNV-1a of a canonical string, typed as
//! [`ClassName`] and [`AtomName`], rendered and parsed in module `names`): a class
//! stands for its policies (and named-port resolution), an atom for its class, its first
//! region and which sets it has — not for the rules covering it. So recompiling after a
//! change reuses every unchanged chain and set: a peer that moves, a pod relabelled, a rule
//! added to or removed from a region, a policy joining a class's region, all change
//! elements only; new chains appear only for a new class or a new port region.
//!
//! [`compile`] builds a plan from scratch; a [`Compiler`] keeps the world, the plan and what
//! they were built from, and turns one change into ops while recomputing only what the
//! change reaches (one engine: `compile` is a `Compiler` used once).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::rc::Rc;

use super::journal::Journal;
use super::names::{AtomName, BaseChain, ChainName, ClassName, Family, SetName};
use super::ranges::{self, Range};
use super::{
    Chain, ClassInfo, DEFAULT_TABLE, Elem, Field, Hook, HookPoint, Op, Plan, Rule, Verdict,
};
use crate::model::{
    Direction, Endpoint, Labels, NetworkPolicy, PolicyPeer, PolicyRef, PortRef, Protocol,
    Rule as PolicyRule, World,
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
}

impl PlanOptions {
    pub fn new(node: &str) -> PlanOptions {
        PlanOptions {
            table: DEFAULT_TABLE.to_string(),
            node: node.to_string(),
            log_per_second: None,
            cut_established: false,
        }
    }
}

/// `pod_egress` runs before `pod_ingress` on the forward hook.
pub(crate) const EGRESS_PRIORITY: i32 = -10;

/// Addresses an atom or contribution allows: single pod addresses and CIDR-minus-except
/// ranges (not yet merged).
#[derive(Debug, Default, Clone)]
struct Addrs {
    /// The pod addresses, as the sets of the peers that select them (shared with
    /// [`State::peers`], unioned only where an atom's elements are made): a rule's own copy
    /// of its peers' addresses was most of the compiler's memory in a large cluster, where
    /// a peer like `env In [prod, staging]` holds thousands of pods and many rules name it
    /// (`weftctl bench scale`).
    pods: Vec<Rc<BTreeSet<IpAddr>>>,
    nets: Vec<Range>,
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
    id: String,
    /// The policy rule whose peers these addresses are (`None`: an egress named-port
    /// contribution, whose addresses depend on every pod's named ports).
    rule: Option<RuleKey>,
    cover: Cover,
    addrs: Rc<Addrs>,
}

/// A policy peer as seen from its policy's namespace.
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

/// An atom chain the plan holds.
struct AtomEntry {
    /// Classes whose port map jumps here (it goes when none is left).
    classes: usize,
    contributions: Vec<(String, Option<RuleKey>, Rc<Addrs>)>,
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
/// What it keeps between changes: the addresses each policy peer selects, the addresses
/// each rule allows, which policies select each local pod (its classes), and reference
/// counts of classes (by pods) and atoms (by classes). A relabelled pod patches the peer
/// sets it enters or leaves, recomputes the rules with those peers and rebuilds just the
/// atoms those rules feed; an edited policy rebuilds the classes that include it and
/// reclassifies only the local pods its old or new selector picks. Namespace and node
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
    peer_rules: HashMap<PeerKey, BTreeSet<RuleKey>>,
    rules: HashMap<RuleKey, Rc<Addrs>>,
    /// Local pods' (ingress, egress) classes.
    pods: HashMap<PodKey, [Option<ClassName>; 2]>,
    classes: HashMap<ClassName, ClassEntry>,
    atoms: HashMap<AtomName, AtomEntry>,
    policy_classes: HashMap<PolicyRef, BTreeSet<ClassName>>,
    /// The atoms each contribution (by id) feeds.
    contribution_atoms: HashMap<String, BTreeSet<AtomName>>,
    journal: Option<Journal>,
    /// The address families pods can have: those of the nodes' pod ranges (both when no
    /// node has one). An atom gets a pod-address set only for these — in a single-stack
    /// cluster half the sets, and the kernel looks every set up by name, walking the
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

fn contribution_id(policy: &PolicyRef, dir: Direction, ri: usize) -> String {
    let d = if dir == Direction::Ingress {
        "in"
    } else {
        "eg"
    };
    format!("{policy}|{d}|{ri}")
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
                peer_rules: HashMap::new(),
                rules: HashMap::new(),
                pods: HashMap::new(),
                classes: HashMap::new(),
                atoms: HashMap::new(),
                policy_classes: HashMap::new(),
                contribution_atoms: HashMap::new(),
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

    /// (Re)computes a class's port map and atoms from the current world. Atoms of regions
    /// that stay keep their chains; only those whose contributions changed are refilled,
    /// those of vanished regions go.
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
        let mut elements = BTreeMap::new();
        let mut atoms = BTreeSet::new();
        // Regions with the same coverage share one atom, named after the first of them.
        let mut groups: BTreeMap<Vec<&str>, (Vec<Elem>, Vec<usize>)> = BTreeMap::new();
        let regions = atoms_of(&contributions);
        for (elem, coverage) in &regions {
            let mut ids: Vec<&str> = coverage
                .iter()
                .map(|&i| contributions[i].id.as_str())
                .collect();
            ids.sort_unstable();
            ids.dedup();
            let g = groups
                .entry(ids)
                .or_insert_with(|| (Vec::new(), coverage.clone()));
            g.0.push(*elem);
        }
        for (_, (elems, coverage)) in groups {
            let Some(first) = elems.iter().min().copied() else {
                continue;
            };
            let atom = self.atom(name, &first, &contributions, &coverage);
            self.sync_atom(atom, &contributions, &coverage);
            for e in elems {
                elements.insert(e, Some(Verdict::Jump(atom.to_string())));
            }
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

    /// Points an existing atom at the contributions of its coverage, refilling its sets
    /// when they changed (a rule's addresses are recomputed as a new `Rc`).
    fn sync_atom(&mut self, name: AtomName, contribs: &[Contribution], coverage: &[usize]) {
        let Some(a) = self.atoms.get(&name) else {
            return;
        };
        let same = a.contributions.len() == coverage.len()
            && a.contributions
                .iter()
                .zip(coverage)
                .all(|((id, _, addrs), &i)| {
                    *id == contribs[i].id && Rc::ptr_eq(addrs, &contribs[i].addrs)
                });
        if same {
            return;
        }
        let next: Vec<(String, Option<RuleKey>, Rc<Addrs>)> = coverage
            .iter()
            .map(|&i| {
                let c = &contribs[i];
                (c.id.clone(), c.rule.clone(), c.addrs.clone())
            })
            .collect();
        let old_ids: BTreeSet<&String> = a.contributions.iter().map(|c| &c.0).collect();
        let new_ids: BTreeSet<&String> = next.iter().map(|c| &c.0).collect();
        let removed: Vec<String> = old_ids.difference(&new_ids).map(|s| (*s).clone()).collect();
        let added: Vec<String> = new_ids.difference(&old_ids).map(|s| (*s).clone()).collect();
        for id in removed {
            if let Some(set) = self.contribution_atoms.get_mut(&id) {
                set.remove(&name);
                if set.is_empty() {
                    self.contribution_atoms.remove(&id);
                }
            }
        }
        for id in added {
            self.contribution_atoms.entry(id).or_default().insert(name);
        }
        if let Some(a) = self.atoms.get_mut(&name) {
            a.contributions = next;
        }
        self.fill_atom(name);
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
        if let Some(a) = self.atoms.remove(&name) {
            for (id, _, _) in &a.contributions {
                if let Some(set) = self.contribution_atoms.get_mut(id) {
                    set.remove(&name);
                    if set.is_empty() {
                        self.contribution_atoms.remove(id);
                    }
                }
            }
        }
        self.remove_chain(name.into());
        for f in Family::ALL {
            self.remove_set(SetName::AtomPods(name, f));
            self.remove_set(SetName::AtomNets(name, f));
        }
    }

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
            let pref = policy.reference();
            for (ri, rule) in policy.rules(dir).iter().enumerate() {
                let id = contribution_id(&pref, dir, ri);
                let rk: RuleKey = (pref.clone(), dir, ri);
                let addrs = self.rule_addrs(world, pi, dir, ri);
                if rule.ports.is_empty() {
                    out.push(Contribution {
                        id,
                        rule: Some(rk),
                        cover: Cover::All,
                        addrs,
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
                        id,
                        rule: Some(rk),
                        cover: Cover::Ranges(cover),
                        addrs: addrs.clone(),
                    });
                }
                // Egress named ports resolve on each destination pod: one contribution per
                // (name, number), holding the peer addresses of pods where it resolves so.
                for (name, protocol) in egress_named {
                    let mut by_port: BTreeMap<u16, BTreeSet<IpAddr>> = BTreeMap::new();
                    for d in &world.endpoints {
                        let Some(n) = d.named_port(&name, protocol) else {
                            continue;
                        };
                        for a in &d.addresses {
                            if self.rule_matches_addr(world, policy, rule, *a) {
                                by_port.entry(n).or_default().insert(*a);
                            }
                        }
                    }
                    for (n, pods) in by_port {
                        out.push(Contribution {
                            id: format!("{pref}|eg|{ri}|{name}/{}={n}", protocol.as_str()),
                            rule: None,
                            cover: Cover::Ranges(vec![(protocol.number(), n, n)]),
                            addrs: Rc::new(Addrs {
                                pods: vec![Rc::new(pods)],
                                nets: Vec::new(),
                            }),
                        });
                    }
                }
            }
        }
        out
    }

    fn rule_matches_addr(
        &mut self,
        world: &World,
        policy: &NetworkPolicy,
        rule: &PolicyRule,
        addr: IpAddr,
    ) -> bool {
        rule.peers.is_empty()
            || rule.peers.iter().any(|peer| match peer {
                PolicyPeer::IpBlock(b) => b.contains(addr),
                PolicyPeer::Pods { .. } => self.pods_peer(world, policy, peer).contains(&addr),
            })
    }

    /// The addresses of the pods a pod peer selects (cached per namespace and peer).
    fn pods_peer(
        &mut self,
        world: &World,
        policy: &NetworkPolicy,
        peer: &PolicyPeer,
    ) -> Rc<BTreeSet<IpAddr>> {
        let key: PeerKey = (policy.namespace.clone(), peer.clone());
        if let Some(hit) = self.peers.get(&key) {
            return hit.clone();
        }
        let out = Rc::new(self.scan_peer(world, &key));
        self.peers.insert(key, out.clone());
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

    /// Everything a rule's peers allow (empty peers: every address).
    fn rule_addrs(&mut self, world: &World, pi: usize, dir: Direction, ri: usize) -> Rc<Addrs> {
        let policy = &world.policies[pi];
        let rk: RuleKey = (policy.reference(), dir, ri);
        if let Some(hit) = self.rules.get(&rk) {
            return hit.clone();
        }
        let rule = &policy.rules(dir)[ri];
        let mut addrs = Addrs::default();
        if rule.peers.is_empty() {
            addrs.nets = vec![Range::everything(false), Range::everything(true)];
        }
        for peer in &rule.peers {
            match peer {
                PolicyPeer::IpBlock(b) => addrs.nets.extend(ranges::subtract(&b.cidr, &b.except)),
                PolicyPeer::Pods { .. } => {
                    let pods = self.pods_peer(world, policy, peer);
                    addrs.pods.push(pods);
                    self.peer_rules
                        .entry((policy.namespace.clone(), peer.clone()))
                        .or_default()
                        .insert(rk.clone());
                }
            }
        }
        let addrs = Rc::new(addrs);
        self.rules.insert(rk, addrs.clone());
        addrs
    }

    /// The atom chain of `class`'s port `region` (the first of the regions with this
    /// coverage), allowing the union of the `coverage` contributions (created, with its
    /// sets; referenced by nobody yet: the class counts itself in).
    ///
    /// Its name stands for (class, region, which CIDR sets it needs), not for its
    /// contributions: a rule that starts or stops covering the region, or a peer that
    /// moves, changes the atom's elements, not its name, so such a change is a few
    /// elements and no chain (unless it splits or joins regions of equal coverage). The CIDR sets exist only for families some covering rule has
    /// an ipBlock (or no peers) in — fixed by the policies, not by the pods — which keeps
    /// the interval sets, that `nft` reads back on every change, few.
    fn atom(
        &mut self,
        class: ClassName,
        region: &Elem,
        contribs: &[Contribution],
        coverage: &[usize],
    ) -> AtomName {
        let dir = class.direction();
        let nets = |v6: bool| {
            coverage
                .iter()
                .any(|&i| contribs[i].addrs.nets.iter().any(|r| r.v6 == v6))
        };
        let shape = (nets(false), nets(true));
        let pods = self.pod_families;
        let name = AtomName::of(dir, &format!("{class}|{region:?}|{shape:?}|{pods:?}"));
        if self.atoms.contains_key(&name) {
            return name;
        }
        let field = if dir == Direction::Ingress {
            Field::Saddr
        } else {
            Field::Daddr
        };
        let mut rules = Vec::new();
        for (f, with_nets, with_pods) in
            [(Family::V4, shape.0, pods.0), (Family::V6, shape.1, pods.1)]
        {
            // One set per family: pod addresses in a hash set, or — when some rule has a
            // CIDR of the family — pods and CIDRs together in one interval set (a pod is a
            // one-address range). Fewer sets is what a change costs the kernel: it finds
            // each set of a transaction by walking the table's list of them.
            let set = if with_nets {
                SetName::AtomNets(name, f)
            } else if with_pods {
                SetName::AtomPods(name, f)
            } else {
                continue;
            };
            self.set(set);
            rules.push(Rule::AddrIn {
                v6: f.is_v6(),
                field,
                set: set.to_string(),
                verdict: Verdict::Accept,
            });
        }
        let contributions: Vec<(String, Option<RuleKey>, Rc<Addrs>)> = coverage
            .iter()
            .map(|&i| {
                let c = &contribs[i];
                (c.id.clone(), c.rule.clone(), c.addrs.clone())
            })
            .collect();
        for (id, _, _) in &contributions {
            self.contribution_atoms
                .entry(id.clone())
                .or_default()
                .insert(name);
        }
        self.atoms.insert(
            name,
            AtomEntry {
                classes: 0,
                contributions,
            },
        );
        self.fill_atom(name);
        self.add_chain(name.into(), Chain { hook: None, rules });
        name
    }

    /// Sets an atom's address sets to the union of its contributions.
    fn fill_atom(&mut self, name: AtomName) {
        let Some(a) = self.atoms.get(&name) else {
            return;
        };
        let mut pods = BTreeSet::new();
        let mut nets: Vec<Range> = Vec::new();
        for (_, _, addrs) in &a.contributions {
            for set in &addrs.pods {
                pods.extend(set.iter().copied());
            }
            nets.extend(addrs.nets.iter().copied());
        }
        let names = [
            SetName::AtomPods(name, Family::V4),
            SetName::AtomNets(name, Family::V4),
            SetName::AtomPods(name, Family::V6),
            SetName::AtomNets(name, Family::V6),
        ];
        // Pods go into the family's interval set when the atom has one (see `atom`).
        let interval = |v6: bool| {
            let nets = names[usize::from(v6) * 2 + 1];
            self.plan.sets.contains_key(&nets.to_string())
        };
        let (interval4, interval6) = (interval(false), interval(true));
        // Collected whole rather than inserted one by one: see `set_elements`.
        let mut sets: [Vec<(Elem, Option<Verdict>)>; 4] = Default::default();
        for p in pods {
            let v6 = p.is_ipv6();
            if if v6 { interval6 } else { interval4 } {
                let (_, x) = ranges::addr_u128(p);
                nets.push(Range { v6, lo: x, hi: x });
            } else {
                sets[usize::from(v6) * 2].push((Elem::addr(p), None));
            }
        }
        for r in ranges::merge(nets) {
            sets[usize::from(r.v6) * 2 + 1].push((range_elem(r), None));
        }
        for (set, elements) in names.into_iter().zip(sets) {
            self.set_elements(set, elements.into_iter().collect());
        }
    }

    // ---- changes ----

    /// After endpoint `old` became `new` (either may be `None`) in `world`: patches the
    /// peer sets that select either, recomputes the rules with those peers and the atoms
    /// they feed, and rebuilds classes with egress named ports when named ports may move.
    /// The pod's own elements and classes are the caller's.
    fn endpoint_changed(&mut self, world: &World, old: Option<&Endpoint>, new: Option<&Endpoint>) {
        let mut changed_peers = Vec::new();
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
        for (key, was, is) in candidates {
            let Some(current) = self.peers.get(&key) else {
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
                let mut s = (**current).clone();
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
            if next != **current {
                self.peers.insert(key.clone(), Rc::new(next));
                changed_peers.push(key);
            }
        }
        let mut changed_rules = BTreeSet::new();
        for key in &changed_peers {
            if let Some(rules) = self.peer_rules.get(key) {
                changed_rules.extend(rules.iter().cloned());
            }
        }
        let mut dirty_atoms = BTreeSet::new();
        for rk in changed_rules {
            if self.rules.remove(&rk).is_none() {
                continue;
            }
            let Some(&pi) = self.policy_index.get(&rk.0) else {
                continue;
            };
            if rk.2 >= world.policies[pi].rules(rk.1).len() {
                continue;
            }
            let addrs = self.rule_addrs(world, pi, rk.1, rk.2);
            let id = contribution_id(&rk.0, rk.1, rk.2);
            for atom in self.contribution_atoms.get(&id).into_iter().flatten() {
                if let Some(a) = self.atoms.get_mut(atom) {
                    for c in a.contributions.iter_mut() {
                        if c.1.as_ref() == Some(&rk) {
                            c.2 = addrs.clone();
                        }
                    }
                    dirty_atoms.insert(*atom);
                }
            }
        }
        for atom in dirty_atoms {
            self.fill_atom(atom);
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
