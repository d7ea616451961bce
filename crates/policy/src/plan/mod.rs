//! The dataplane plan: an nftables table described as data, built from a [`World`] by
//! [`compile`], moved from one version to the next by [`diff`], written out by [`render`].
//!
//! # The table (`inet weft_policy`)
//!
//! ```text
//! chain pod_egress        hook forward priority -10   (runs first)
//!   ct state established,related accept          replies and admitted flows: one conntrack bit
//!   icmpv6 type { nd-… } accept                  IPv6 neighbour discovery (the link's ARP)
//!   ip saddr . ip daddr @self4 accept            a pod can always reach itself
//!   ip saddr @blocks4 ip saddr != @known4 drop   local pod address not programmed: default-deny
//!   ip saddr vmap @out4                          egress-isolated local pod → jump its class
//!   (same for ip6)
//! chain pod_ingress       hook forward priority 0
//!   … the same with daddr and @in4
//! chain pod_egress_local  hook input priority 0      pod → its own node: egress only
//! chain ci_<h> / ce_<h>   one per *class*: the pods selected by the same set of policies
//!   meta l4proto . th dport vmap @ci_<h>_ports  (protocol, port range) → jump an atom
//!   [limit rate N/second log prefix "…"]
//!   ip daddr @denied_in4 drop                    denied: counted per pod (element counter;
//!   ip6 daddr @denied_in6 drop                     egress classes: saddr, @denied_out4/6)
//!   counter drop                                 (anything else the class denies)
//! chain ai_<h> / ae_<h>   one per *atom*: the union of the peer sets a port region allows
//!   ip saddr @pp_<h>4 accept                     one rule per distinct peer set covering the
//!   ip saddr @pn_<h>4 accept                     region (egress atoms test daddr); no match:
//!   ip6 saddr @pp_<h>6 accept …                  back to the class, which drops
//!   — or, a *union atom* (a region of more than `union_above` peer sets, 8 by default):
//!   ip saddr @pu_<h>4 accept                     the region's pod peers merged, and
//!   ip saddr @nu_<h>4 accept                     its ipBlocks merged (per family present)
//! set pp_<h>4 / pp_<h>6   one per distinct pod peer (and family): its pods' addresses (hash)
//! set pn_<h>4 / pn_<h>6   one per distinct ipBlock (its CIDR minus excepts) or "every
//!                         address" (a rule without peers): an interval set
//! set pu_<h>4 / nu_<h>4   a union atom's own: its pod peers' addresses (hash, each counted
//!                         by how many of its peers hold it), its CIDRs (interval)
//! ```
//! Peer sets are **shared by the whole table**: every class and atom whose rules name the
//! same peer reads the same set. A pod peer's set stands for its selectors and, only when it
//! has no namespace selector, the policy's namespace (`env In [prod]` across namespaces is
//! one set), so a pod address is in the table once per distinct peer selecting it, not once
//! per class and port region. Pod peers get sets for the families of the nodes' pod ranges
//! only. An egress rule with a named port allows, for each number the name resolves to on
//! some pod, each peer's pods where it resolves so: a derived `pp_` set per (peer, name,
//! number), shared the same way.
//!
//! Node-originated packets (kubelet probes) leave through `output`, where weft filters
//! nothing: traffic from a pod's own node is always allowed.
//!
//! # Per-packet cost
//!
//! A packet of an established flow costs one `ct state` test per base chain. A new flow
//! costs, per direction, one hash lookup in `@out4`/`@in4` (miss: not isolated, done), one
//! lookup in the class's port map (an interval map with as many entries as the class has
//! distinct port boundaries, independent of pods and of how many policies share them), and
//! in the atom one lookup per rule until one accepts: as many as the distinct peers (times
//! families present) of the rules covering that port region — a hash lookup for a pod peer,
//! an interval lookup for an ipBlock. Before 2026-12-07 that was one lookup in a set of the
//! atom's own (their union), paid for with a copy of every peer's addresses per class and
//! region (760k elements at `weftctl bench scale`, and thousands of elements to write when a
//! policy made a new class). So the per-packet cost grows with the number of distinct peers
//! admitting one port of one pod's class — what its policies name, not the pods, the other
//! policies or the cluster's size — and a packet of the other family skips the rules of the
//! other family at the `nfproto` test.
//!
//! That holds up to `union_above` sets per region. A port many policies open to peers of
//! their own would otherwise be the worst case: in `weftctl bench policy`'s world at 10,000
//! rules (1,000 policies, each naming its own few pods and a /24 on the same server pod)
//! the server's regions are covered by up to 295 peer sets — as many rules, and lookups for
//! a new connection's first packet, and a table of 2,029 sets for every edit's kernel
//! commit to search by name. Such a region gets a **union atom** instead: its peers'
//! addresses merged into sets of its own (`pu_`: pod addresses, `nu_`: CIDRs, per family),
//! at most four lookups, at the price of one copy of the region's peers' addresses. That
//! world then has 151 sets and 198 rules. Regions of a few peer sets (the common case, and
//! all of `weftctl bench scale`'s) keep reading the shared sets, which cost no copy.
//!
//! No chain has a number of rules that grows with pods; adding a policy adds at most new
//! classes and atoms (chains of a few rules) and peer sets for peers nobody named before.
//!
//! # Updates
//!
//! Chains never change once created: a chain's rules are fixed by its name (names are
//! hashes of what a class or atom stands for: a class of its policies, an atom of the peer
//! sets its rules read, in name order, a union atom of its class, its region and which of
//! its own sets exist), so a change is only set elements, plus new chains for a new class
//! or atom and deleted ones for a vanished class or atom. A rule joining or leaving a
//! union atom's region changes its sets' elements — the addresses its peers add or take
//! away — and not its chain. A pod that moves
//! changes elements of the peer sets selecting it; a policy changes which atoms its classes'
//! port maps jump to (existing or new ones, never edited); peer sets are created with the
//! first atom that reads them and deleted with the last. See [`diff`] for the operations
//! and their order: sets before the chains that read them are added, chains before their
//! sets are deleted.
//!
//! [`World`]: crate::World

mod compile;
mod diff;
mod journal;
#[cfg(feature = "bench")]
mod linear;
mod names;
mod ranges;
mod render;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::model::{Direction, PolicyRef};

pub use compile::{Compiler, PlanOptions, UNION_ABOVE, compile};
pub use diff::{ApplyError, Op, diff};
#[cfg(feature = "bench")]
pub use linear::compile_linear;
pub use names::{
    AtomName, BaseChain, ChainName, ClassName, Family, NameError, PeerKind, PeerName, SetName,
};
pub use render::{Pieces, render, render_ops, render_pieces};

/// The default table name (family `inet`).
pub const DEFAULT_TABLE: &str = "weft_policy";

/// The conntrack mark bit that says "this connection was cut" (`--policy-cut-established`):
/// set on an entry by the agent when a change denies its flow, cleared when a later change
/// allows it again. One bit, touched with a mask, so other users of the mark keep theirs.
pub const CUT_MARK: u32 = 0x0020_0000;

/// A table of nftables objects. Element and chain order is canonical, so two plans are equal
/// iff they describe the same ruleset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The table's name (family `inet`).
    pub table: String,
    pub sets: BTreeMap<String, Set>,
    pub chains: BTreeMap<String, Chain>,
    /// Not in the kernel: which policies each class chain stands for, so counters and logs
    /// can be read back as "denied by policies …".
    pub classes: BTreeMap<String, ClassInfo>,
}

/// What a class chain enforces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassInfo {
    pub direction: Direction,
    pub policies: Vec<PolicyRef>,
}

/// What a set is for; decides where its changes go in a diff (see [`diff`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Local pods the agent has programmed (lifts default-deny).
    Known,
    /// The node's pod ranges (default-deny applies inside them).
    Blocks,
    /// `(addr, addr)` of local pods: a pod may always reach itself.
    SelfPairs,
    /// Pod address → jump to its class (isolation).
    PodMap,
    /// The isolated pods of one direction (the keys of its pod map), each element with a
    /// kernel counter: what the pod's class denied to or from that pod — denied packets per
    /// pod and policy set (the class names the policies).
    Counted,
    /// A class's (protocol, port) → jump to an atom.
    PortMap,
    /// Addresses an atom allows.
    Peers,
}

/// The key type of a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum KeyType {
    Ipv4,
    Ipv6,
    /// `ipv4_addr . ipv4_addr`
    Ipv4Pair,
    /// `ipv6_addr . ipv6_addr`
    Ipv6Pair,
    /// `inet_proto . inet_service`
    ProtoPort,
}

/// A set or (when `map`) a verdict map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Set {
    pub key: KeyType,
    pub interval: bool,
    /// A verdict map: every element carries a verdict.
    pub map: bool,
    pub role: Role,
    /// Written as a list of `[element, verdict]` pairs (JSON maps need string keys).
    #[serde(with = "pairs")]
    pub elements: BTreeMap<Elem, Option<Verdict>>,
}

/// A map with structured keys as a list of pairs, so plans can be written as JSON (the
/// agent persists the plan it applied).
mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};

    use super::{Elem, Verdict};

    pub fn serialize<S: Serializer>(
        m: &BTreeMap<Elem, Option<Verdict>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<Elem, Option<Verdict>>, D::Error> {
        let v: Vec<(Elem, Option<Verdict>)> = Vec::deserialize(d)?;
        Ok(v.into_iter().collect())
    }
}

impl Set {
    pub fn new(key: KeyType, interval: bool, map: bool, role: Role) -> Set {
        Set {
            key,
            interval,
            map,
            role,
            elements: BTreeMap::new(),
        }
    }

    /// Same type, flags and role (what a diff cannot change in place).
    pub(crate) fn same_spec(&self, other: &Set) -> bool {
        self.key == other.key
            && self.interval == other.interval
            && self.map == other.map
            && self.role == other.role
    }

    /// The element containing this key, if any.
    pub(crate) fn lookup(&self, probe: &Elem) -> Option<(&Elem, &Option<Verdict>)> {
        if !self.interval {
            return self.elements.get_key_value(probe);
        }
        match probe {
            Elem::V4(a, _) => self
                .elements
                .range(..=Elem::V4(*a, Ipv4Addr::from(u32::MAX)))
                .next_back()
                .filter(|(e, _)| matches!(e, Elem::V4(lo, hi) if lo <= a && a <= hi)),
            Elem::V6(a, _) => self
                .elements
                .range(..=Elem::V6(*a, Ipv6Addr::from(u128::MAX)))
                .next_back()
                .filter(|(e, _)| matches!(e, Elem::V6(lo, hi) if lo <= a && a <= hi)),
            _ => self.elements.iter().find(|(e, _)| e.overlaps(probe)),
        }
    }
}

/// A set element. Address elements are inclusive ranges (`lo == hi` for one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Elem {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
    V4Pair(Ipv4Addr, Ipv4Addr),
    V6Pair(Ipv6Addr, Ipv6Addr),
    /// Protocol range and port range (inclusive).
    ProtoPort {
        proto: (u8, u8),
        port: (u16, u16),
    },
}

impl Elem {
    pub fn addr(a: IpAddr) -> Elem {
        match a {
            IpAddr::V4(a) => Elem::V4(a, a),
            IpAddr::V6(a) => Elem::V6(a, a),
        }
    }

    pub fn pair(a: IpAddr, b: IpAddr) -> Option<Elem> {
        match (a, b) {
            (IpAddr::V4(a), IpAddr::V4(b)) => Some(Elem::V4Pair(a, b)),
            (IpAddr::V6(a), IpAddr::V6(b)) => Some(Elem::V6Pair(a, b)),
            _ => None,
        }
    }

    pub(crate) fn key_type(&self) -> KeyType {
        match self {
            Elem::V4(..) => KeyType::Ipv4,
            Elem::V6(..) => KeyType::Ipv6,
            Elem::V4Pair(..) => KeyType::Ipv4Pair,
            Elem::V6Pair(..) => KeyType::Ipv6Pair,
            Elem::ProtoPort { .. } => KeyType::ProtoPort,
        }
    }

    /// Whether two interval elements share any key.
    pub(crate) fn overlaps(&self, other: &Elem) -> bool {
        fn ov<T: Ord>(a: (T, T), b: (T, T)) -> bool {
            a.0 <= b.1 && b.0 <= a.1
        }
        match (self, other) {
            (Elem::V4(a, b), Elem::V4(c, d)) => ov((a, b), (c, d)),
            (Elem::V6(a, b), Elem::V6(c, d)) => ov((a, b), (c, d)),
            (
                Elem::ProtoPort {
                    proto: p1,
                    port: q1,
                },
                Elem::ProtoPort {
                    proto: p2,
                    port: q2,
                },
            ) => ov(*p1, *p2) && ov(*q1, *q2),
            (a, b) => a == b,
        }
    }
}

/// A verdict, in a rule or a verdict map.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Verdict {
    Accept,
    Drop,
    Return,
    Jump(String),
    Goto(String),
}

impl Verdict {
    pub(crate) fn target(&self) -> Option<&str> {
        match self {
            Verdict::Jump(c) | Verdict::Goto(c) => Some(c),
            _ => None,
        }
    }
}

/// Where a base chain hooks in (always `type filter`, `policy accept`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum HookPoint {
    Forward,
    Input,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Hook {
    pub point: HookPoint,
    pub priority: i32,
}

/// A chain: a base chain when `hook` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    pub hook: Option<Hook>,
    pub rules: Vec<Rule>,
}

/// Source or destination address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Field {
    Saddr,
    Daddr,
}

/// The rules a plan uses (a closed set, so the renderer and the walker agree on meaning).
/// `v6` selects `ip` (false) or `ip6` (true).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rule {
    /// `ct mark and CUT_MARK == CUT_MARK drop`: before [`Rule::Established`], so that a
    /// connection whose entry the agent marked as cut passes in neither direction (deleting
    /// the entry is not enough for UDP: a reply already on its way would create a reversed
    /// entry, and the denied side's next datagram would be its established reply).
    CutMarked,
    /// `ct state established,related accept`
    Established,
    /// `icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit,
    /// nd-neighbor-advert, nd-redirect } accept`: IPv6 neighbour discovery is the link's
    /// ARP, which no NetworkPolicy may cut (pods on one bridge, and a pod and its gateway,
    /// need it both ways).
    NeighborDiscovery,
    /// `ip saddr . ip daddr @set <verdict>`
    PairIn {
        v6: bool,
        set: String,
        verdict: Verdict,
    },
    /// `ip <field> @within ip <field> != @known counter drop`
    Unknown {
        v6: bool,
        field: Field,
        within: String,
        known: String,
    },
    /// `ip <field> vmap @map`
    AddrVmap { v6: bool, field: Field, map: String },
    /// `ip <field> @set <verdict>`
    AddrIn {
        v6: bool,
        field: Field,
        set: String,
        verdict: Verdict,
    },
    /// `meta l4proto . th dport vmap @map`
    PortVmap { map: String },
    /// `limit rate N/second log prefix "…"` (no verdict)
    Log { prefix: String, per_second: u32 },
    /// `counter drop`
    CounterDrop,
    /// iptables-style: `ip saddr A ip daddr B meta l4proto P th dport X-Y <verdict>`, each
    /// part optional (only in [`compile_linear`] plans).
    Match {
        v6: bool,
        saddr: Option<(IpAddr, IpAddr)>,
        daddr: Option<(IpAddr, IpAddr)>,
        proto: Option<u8>,
        dport: Option<(u16, u16)>,
        verdict: Verdict,
    },
}

impl Rule {
    /// The sets this rule reads.
    pub(crate) fn sets(&self) -> Vec<&str> {
        match self {
            Rule::PairIn { set, .. } | Rule::AddrIn { set, .. } => vec![set],
            Rule::Unknown { within, known, .. } => vec![within, known],
            Rule::AddrVmap { map, .. } | Rule::PortVmap { map } => vec![map],
            _ => vec![],
        }
    }

    /// The chain this rule jumps or goes to.
    pub(crate) fn target(&self) -> Option<&str> {
        match self {
            Rule::PairIn { verdict, .. }
            | Rule::AddrIn { verdict, .. }
            | Rule::Match { verdict, .. } => verdict.target(),
            _ => None,
        }
    }
}

/// A packet, for [`Plan::walk`]: addresses, the IP protocol number and the destination port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    pub port: u16,
}

/// A plan that cannot be walked (a dangling reference, or jumps nested deeper than nftables
/// allows).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot walk the plan: {0}")]
pub struct WalkError(pub String);

enum Flow {
    Accept,
    Drop,
    Return,
}

impl Plan {
    /// A plan with nothing in it (the state before the first apply).
    pub fn empty(table: &str) -> Plan {
        Plan {
            table: table.to_string(),
            sets: BTreeMap::new(),
            chains: BTreeMap::new(),
            classes: BTreeMap::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sets.is_empty() && self.chains.is_empty()
    }

    /// Runs the first packet of a new connection through this plan's base chains on `hook`
    /// (in priority order), the way nftables evaluates them: set and map lookups, jump, goto,
    /// return, and each base chain's `accept` policy. `Ok(true)`: the packet passes this
    /// table. Conntrack state is "new", so `ct state established` never matches.
    pub fn walk(&self, hook: HookPoint, pkt: &Packet) -> Result<bool, WalkError> {
        let mut bases: Vec<(&String, &Chain)> = self
            .chains
            .iter()
            .filter(|(_, c)| c.hook.is_some_and(|h| h.point == hook))
            .collect();
        bases.sort_by_key(|(name, c)| (c.hook.map(|h| h.priority), *name));
        for (name, _) in bases {
            if let Flow::Drop = self.run(name, pkt, 0)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn run(&self, chain: &str, pkt: &Packet, depth: usize) -> Result<Flow, WalkError> {
        // The kernel refuses rulesets with jumps nested deeper than this.
        if depth > 16 {
            return Err(WalkError(format!("jumps nested too deep at {chain}")));
        }
        let c = self
            .chains
            .get(chain)
            .ok_or_else(|| WalkError(format!("no chain {chain}")))?;
        for rule in &c.rules {
            let Some(v) = self.eval(rule, pkt)? else {
                continue;
            };
            match v {
                Verdict::Accept => return Ok(Flow::Accept),
                Verdict::Drop => return Ok(Flow::Drop),
                Verdict::Return => return Ok(Flow::Return),
                Verdict::Jump(target) => match self.run(&target, pkt, depth + 1)? {
                    Flow::Return => continue,
                    other => return Ok(other),
                },
                // goto: when the target returns, control goes back to our caller.
                Verdict::Goto(target) => return self.run(&target, pkt, depth + 1),
            }
        }
        Ok(Flow::Return)
    }

    fn set(&self, name: &str) -> Result<&Set, WalkError> {
        self.sets
            .get(name)
            .ok_or_else(|| WalkError(format!("no set {name}")))
    }

    fn contains(&self, set: &str, probe: &Elem) -> Result<Option<Option<Verdict>>, WalkError> {
        Ok(self.set(set)?.lookup(probe).map(|(_, v)| v.clone()))
    }

    fn eval(&self, rule: &Rule, pkt: &Packet) -> Result<Option<Verdict>, WalkError> {
        let is_v6 = pkt.src.is_ipv6();
        let field_addr = |f: Field| match f {
            Field::Saddr => pkt.src,
            Field::Daddr => pkt.dst,
        };
        Ok(match rule {
            // New connections of TCP/UDP/SCTP only: none of these matches (a new connection's
            // entry carries no mark of weft's).
            Rule::CutMarked | Rule::Established | Rule::NeighborDiscovery | Rule::Log { .. } => {
                None
            }
            Rule::PairIn { v6, set, verdict } => {
                let hit = *v6 == is_v6
                    && match Elem::pair(pkt.src, pkt.dst) {
                        Some(e) => self.contains(set, &e)?.is_some(),
                        None => false,
                    };
                hit.then(|| verdict.clone())
            }
            Rule::Unknown {
                v6,
                field,
                within,
                known,
            } => {
                let e = Elem::addr(field_addr(*field));
                let hit = *v6 == is_v6
                    && self.contains(within, &e)?.is_some()
                    && self.contains(known, &e)?.is_none();
                hit.then_some(Verdict::Drop)
            }
            Rule::AddrVmap { v6, field, map } => {
                if *v6 != is_v6 {
                    None
                } else {
                    self.contains(map, &Elem::addr(field_addr(*field)))?
                        .flatten()
                }
            }
            Rule::AddrIn {
                v6,
                field,
                set,
                verdict,
            } => {
                let hit = *v6 == is_v6
                    && self
                        .contains(set, &Elem::addr(field_addr(*field)))?
                        .is_some();
                hit.then(|| verdict.clone())
            }
            Rule::PortVmap { map } => {
                let probe = Elem::ProtoPort {
                    proto: (pkt.protocol, pkt.protocol),
                    port: (pkt.port, pkt.port),
                };
                self.contains(map, &probe)?.flatten()
            }
            Rule::CounterDrop => Some(Verdict::Drop),
            Rule::Match {
                v6,
                saddr,
                daddr,
                proto,
                dport,
                verdict,
            } => {
                let within = |r: &Option<(IpAddr, IpAddr)>, a: IpAddr| {
                    r.is_none_or(|(lo, hi)| lo <= a && a <= hi)
                };
                let hit = *v6 == is_v6
                    && within(saddr, pkt.src)
                    && within(daddr, pkt.dst)
                    && proto.is_none_or(|p| p == pkt.protocol)
                    && dport.is_none_or(|(lo, hi)| lo <= pkt.port && pkt.port <= hi);
                hit.then(|| verdict.clone())
            }
        })
    }
}
