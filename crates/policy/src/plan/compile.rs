//! World → Plan for one node.
//!
//! Vocabulary (see the module above for the table's shape):
//! - a **contribution** is what one rule allows, as (port cover, addresses): an ingress rule
//!   with its named ports resolved on the class's pods, or an egress rule (its numeric ports
//!   with the rule's peers, and for each named port and each number it resolves to on some
//!   pod, that number with just those pods' addresses);
//! - a **class** is the set of local pods selected by the same policies in one direction
//!   (and, for ingress, resolving the policies' named ports the same way); one chain each;
//! - an **atom** is the union of the contributions that cover some (protocol, port) region;
//!   one chain and four address sets each, shared by every class with that region.
//!
//! Names are stable hashes of what they stand for (FNV-1a of a canonical string), so
//! recompiling after a change reuses every unchanged chain and set, and a diff touches only
//! elements.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::rc::Rc;

use super::ranges::{self, Range};
use super::{
    Chain, ClassInfo, DEFAULT_TABLE, Elem, Field, Hook, HookPoint, KeyType, Plan, Role, Rule, Set,
    Verdict,
};
use crate::model::{
    Direction, Endpoint, Labels, NetworkPolicy, PolicyPeer, PortRef, Protocol, Rule as PolicyRule,
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
}

impl PlanOptions {
    pub fn new(node: &str) -> PlanOptions {
        PlanOptions {
            table: DEFAULT_TABLE.to_string(),
            node: node.to_string(),
            log_per_second: None,
        }
    }
}

// Fixed names of the base objects.
pub(crate) const EGRESS: &str = "pod_egress";
pub(crate) const INGRESS: &str = "pod_ingress";
pub(crate) const EGRESS_LOCAL: &str = "pod_egress_local";
pub(crate) const EGRESS_PRIORITY: i32 = -10;

pub(crate) fn fam(v6: bool) -> &'static str {
    if v6 { "6" } else { "4" }
}

/// Stable 64-bit FNV-1a, as 16 hex digits.
fn hash(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Addresses an atom or contribution allows: single pod addresses and CIDR-minus-except
/// ranges (not yet merged).
#[derive(Debug, Default, Clone)]
struct Addrs {
    pods: BTreeSet<IpAddr>,
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
    cover: Cover,
    addrs: Rc<Addrs>,
}

struct Ctx<'w> {
    world: &'w World,
    opts: &'w PlanOptions,
    ns_labels: HashMap<&'w str, Labels>,
    peer_cache: HashMap<(&'w str, &'w PolicyPeer), Rc<BTreeSet<IpAddr>>>,
    rule_cache: HashMap<(usize, Direction, usize), Rc<Addrs>>,
    plan: Plan,
}

/// Builds the plan that enforces `world`'s policies for the pods of `opts.node`.
pub fn compile(world: &World, opts: &PlanOptions) -> Plan {
    let mut ns_labels = HashMap::new();
    for e in &world.endpoints {
        ns_labels
            .entry(e.namespace.as_str())
            .or_insert_with(|| world.namespace_labels(&e.namespace));
    }
    let mut ctx = Ctx {
        world,
        opts,
        ns_labels,
        peer_cache: HashMap::new(),
        rule_cache: HashMap::new(),
        plan: Plan::empty(&opts.table),
    };
    ctx.base();
    for e in world.endpoints.iter().filter(|e| e.node == opts.node) {
        ctx.local_pod(e);
    }
    ctx.plan
}

impl<'w> Ctx<'w> {
    fn set(&mut self, name: &str, key: KeyType, interval: bool, map: bool, role: Role) {
        self.plan
            .sets
            .entry(name.to_string())
            .or_insert_with(|| Set::new(key, interval, map, role));
    }

    fn elem(&mut self, set: &str, e: Elem, v: Option<Verdict>) {
        if let Some(s) = self.plan.sets.get_mut(set) {
            s.elements.insert(e, v);
        }
    }

    /// The fixed sets and base chains.
    fn base(&mut self) {
        for v6 in [false, true] {
            let f = fam(v6);
            let (addr, pair) = if v6 {
                (KeyType::Ipv6, KeyType::Ipv6Pair)
            } else {
                (KeyType::Ipv4, KeyType::Ipv4Pair)
            };
            self.set(&format!("known{f}"), addr, false, false, Role::Known);
            self.set(&format!("blocks{f}"), addr, true, false, Role::Blocks);
            self.set(&format!("self{f}"), pair, false, false, Role::SelfPairs);
            self.set(&format!("in{f}"), addr, false, true, Role::PodMap);
            self.set(&format!("out{f}"), addr, false, true, Role::PodMap);
        }
        if let Some(node) = self.world.node(&self.opts.node) {
            let blocks = ranges::merge(node.pod_cidrs.iter().map(Range::of_net).collect());
            for r in blocks {
                let e = range_elem(r);
                self.elem(&format!("blocks{}", fam(r.v6)), e, None);
            }
        }
        let chain = |point, priority, field, map: &str, with_self: bool| {
            let mut rules = vec![Rule::Established, Rule::NeighborDiscovery];
            for v6 in [false, true] {
                if with_self {
                    rules.push(Rule::PairIn {
                        v6,
                        set: format!("self{}", fam(v6)),
                        verdict: Verdict::Accept,
                    });
                }
            }
            for v6 in [false, true] {
                rules.push(Rule::Unknown {
                    v6,
                    field,
                    within: format!("blocks{}", fam(v6)),
                    known: format!("known{}", fam(v6)),
                });
            }
            for v6 in [false, true] {
                rules.push(Rule::AddrVmap {
                    v6,
                    field,
                    map: format!("{map}{}", fam(v6)),
                });
            }
            Chain {
                hook: Some(Hook { point, priority }),
                rules,
            }
        };
        let chains = [
            (
                EGRESS,
                chain(
                    HookPoint::Forward,
                    EGRESS_PRIORITY,
                    Field::Saddr,
                    "out",
                    true,
                ),
            ),
            (
                INGRESS,
                chain(HookPoint::Forward, 0, Field::Daddr, "in", true),
            ),
            (
                EGRESS_LOCAL,
                chain(HookPoint::Input, 0, Field::Saddr, "out", false),
            ),
        ];
        for (name, c) in chains {
            self.plan.chains.insert(name.to_string(), c);
        }
    }

    fn local_pod(&mut self, e: &'w Endpoint) {
        for a in &e.addresses {
            let f = fam(a.is_ipv6());
            self.elem(&format!("known{f}"), Elem::addr(*a), None);
            if let Some(p) = Elem::pair(*a, *a) {
                self.elem(&format!("self{f}"), p, None);
            }
        }
        for dir in [Direction::Ingress, Direction::Egress] {
            if let Some(class) = self.class(e, dir) {
                let map = if dir == Direction::Ingress {
                    "in"
                } else {
                    "out"
                };
                for a in &e.addresses {
                    let set = format!("{map}{}", fam(a.is_ipv6()));
                    self.elem(&set, Elem::addr(*a), Some(Verdict::Jump(class.clone())));
                }
            }
        }
    }

    /// The class chain of pod `e` in `dir` (created on first use), or `None` when no policy
    /// isolates it that way.
    fn class(&mut self, e: &'w Endpoint, dir: Direction) -> Option<String> {
        let world = self.world;
        let pols: Vec<usize> = world
            .policies
            .iter()
            .enumerate()
            .filter(|(_, p)| p.applies(dir) && p.selects(e))
            .map(|(i, _)| i)
            .collect();
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
        let refs: Vec<String> = pols
            .iter()
            .map(|&i| world.policies[i].reference().to_string())
            .collect();
        let key = format!(
            "{dir}|{}|{named:?}|{:?}",
            refs.join(","),
            self.opts.log_per_second
        );
        let prefix = if dir == Direction::Ingress {
            "ci"
        } else {
            "ce"
        };
        let name = format!("{prefix}_{}", hash(&key));
        if self.plan.chains.contains_key(&name) {
            return Some(name);
        }
        let contributions = self.contributions(&pols, dir, &named);
        let ports_map = format!("{name}_ports");
        self.set(&ports_map, KeyType::ProtoPort, true, true, Role::PortMap);
        for (elem, coverage) in atoms(&contributions) {
            let atom = self.atom(dir, &contributions, &coverage);
            self.elem(&ports_map, elem, Some(Verdict::Jump(atom)));
        }
        let mut rules = vec![Rule::PortVmap { map: ports_map }];
        if let Some(rate) = self.opts.log_per_second {
            rules.push(Rule::Log {
                prefix: format!("weft deny {name}: "),
                per_second: rate,
            });
        }
        rules.push(Rule::CounterDrop);
        self.plan
            .chains
            .insert(name.clone(), Chain { hook: None, rules });
        self.plan.classes.insert(
            name.clone(),
            ClassInfo {
                direction: dir,
                policies: pols
                    .iter()
                    .map(|&i| world.policies[i].reference())
                    .collect(),
            },
        );
        Some(name)
    }

    fn contributions(
        &mut self,
        pols: &[usize],
        dir: Direction,
        named: &BTreeMap<(String, Protocol), Option<u16>>,
    ) -> Vec<Contribution> {
        let world = self.world;
        let mut out = Vec::new();
        for &pi in pols {
            let policy = &world.policies[pi];
            let d = if dir == Direction::Ingress {
                "in"
            } else {
                "eg"
            };
            for (ri, rule) in policy.rules(dir).iter().enumerate() {
                let id = format!("{}|{d}|{ri}", policy.reference());
                let addrs = self.rule_addrs(pi, dir, ri);
                if rule.ports.is_empty() {
                    out.push(Contribution {
                        id,
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
                        cover: Cover::Ranges(cover),
                        addrs: addrs.clone(),
                    });
                }
                // Egress named ports resolve on each destination pod: one contribution per
                // (name, number), holding the peer addresses of pods where it resolves so.
                for (name, protocol) in egress_named {
                    let mut by_port: BTreeMap<u16, Addrs> = BTreeMap::new();
                    for d in &world.endpoints {
                        let Some(n) = d.named_port(&name, protocol) else {
                            continue;
                        };
                        for a in &d.addresses {
                            if self.rule_matches_addr(policy, rule, *a) {
                                by_port.entry(n).or_default().pods.insert(*a);
                            }
                        }
                    }
                    for (n, addrs) in by_port {
                        out.push(Contribution {
                            id: format!(
                                "{}|eg|{ri}|{name}/{}={n}",
                                policy.reference(),
                                protocol.as_str()
                            ),
                            cover: Cover::Ranges(vec![(protocol.number(), n, n)]),
                            addrs: Rc::new(addrs),
                        });
                    }
                }
            }
        }
        out
    }

    fn rule_matches_addr(
        &mut self,
        policy: &'w NetworkPolicy,
        rule: &'w PolicyRule,
        addr: IpAddr,
    ) -> bool {
        rule.peers.is_empty()
            || rule.peers.iter().any(|peer| match peer {
                PolicyPeer::IpBlock(b) => b.contains(addr),
                PolicyPeer::Pods { .. } => self.pods_peer(policy, peer).contains(&addr),
            })
    }

    /// The addresses of the pods a pod peer selects (cached per namespace and peer).
    fn pods_peer(
        &mut self,
        policy: &'w NetworkPolicy,
        peer: &'w PolicyPeer,
    ) -> Rc<BTreeSet<IpAddr>> {
        let key = (policy.namespace.as_str(), peer);
        if let Some(hit) = self.peer_cache.get(&key) {
            return hit.clone();
        }
        let mut out = BTreeSet::new();
        if let PolicyPeer::Pods {
            pod_selector,
            namespace_selector,
        } = peer
        {
            for e in &self.world.endpoints {
                let ns_ok = match namespace_selector {
                    None => e.namespace == policy.namespace,
                    Some(s) => self
                        .ns_labels
                        .get(e.namespace.as_str())
                        .is_some_and(|l| s.matches(l)),
                };
                if ns_ok && pod_selector.as_ref().is_none_or(|s| s.matches(&e.labels)) {
                    out.extend(e.addresses.iter().copied());
                }
            }
        }
        let out = Rc::new(out);
        self.peer_cache.insert(key, out.clone());
        out
    }

    /// Everything a rule's peers allow (empty peers: every address).
    fn rule_addrs(&mut self, pi: usize, dir: Direction, ri: usize) -> Rc<Addrs> {
        if let Some(hit) = self.rule_cache.get(&(pi, dir, ri)) {
            return hit.clone();
        }
        let policy = &self.world.policies[pi];
        let rule = &policy.rules(dir)[ri];
        let mut addrs = Addrs::default();
        if rule.peers.is_empty() {
            addrs.nets = vec![Range::everything(false), Range::everything(true)];
        }
        for peer in &rule.peers {
            match peer {
                PolicyPeer::IpBlock(b) => addrs.nets.extend(ranges::subtract(&b.cidr, &b.except)),
                PolicyPeer::Pods { .. } => {
                    let pods = self.pods_peer(policy, peer);
                    addrs.pods.extend(pods.iter().copied());
                }
            }
        }
        let addrs = Rc::new(addrs);
        self.rule_cache.insert((pi, dir, ri), addrs.clone());
        addrs
    }

    /// The atom chain for a coverage (created, with its sets, on first use).
    fn atom(&mut self, dir: Direction, contribs: &[Contribution], coverage: &[usize]) -> String {
        let mut ids: Vec<&str> = coverage.iter().map(|&i| contribs[i].id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let prefix = if dir == Direction::Ingress {
            "ai"
        } else {
            "ae"
        };
        let name = format!("{prefix}_{}", hash(&format!("{dir}|{}", ids.join(";"))));
        if self.plan.chains.contains_key(&name) {
            return name;
        }
        let mut pods = BTreeSet::new();
        let mut nets = Vec::new();
        for &i in coverage {
            pods.extend(contribs[i].addrs.pods.iter().copied());
            nets.extend(contribs[i].addrs.nets.iter().copied());
        }
        let field = if dir == Direction::Ingress {
            Field::Saddr
        } else {
            Field::Daddr
        };
        let mut rules = Vec::new();
        for v6 in [false, true] {
            let f = fam(v6);
            let (a, n) = (format!("{name}_a{f}"), format!("{name}_n{f}"));
            let key = if v6 { KeyType::Ipv6 } else { KeyType::Ipv4 };
            self.set(&a, key, false, false, Role::Peers);
            self.set(&n, key, true, false, Role::Peers);
            for set in [a, n] {
                rules.push(Rule::AddrIn {
                    v6,
                    field,
                    set,
                    verdict: Verdict::Accept,
                });
            }
        }
        for p in pods {
            self.elem(
                &format!("{name}_a{}", fam(p.is_ipv6())),
                Elem::addr(p),
                None,
            );
        }
        for r in ranges::merge(nets) {
            self.elem(&format!("{name}_n{}", fam(r.v6)), range_elem(r), None);
        }
        self.plan
            .chains
            .insert(name.clone(), Chain { hook: None, rules });
        name
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
fn atoms(contribs: &[Contribution]) -> Vec<(Elem, Vec<usize>)> {
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
