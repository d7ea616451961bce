//! The names weft gives the objects of its policy table, as types: each kind of name is a
//! value that renders (`Display`) to the exact bytes the kernel holds and parses
//! (`FromStr`) back from them. Code that builds names and code that reads names back from
//! the kernel (the agent's counters and status) share these types instead of formatting
//! and splitting strings each on its own.
//!
//! ```text
//! pod_egress  pod_ingress  pod_egress_local     base chains           BaseChain
//! known4 blocks4 self4 in4 out4 (and …6)        fixed sets per family SetName::Known …
//! denied_in4 denied_out4 (and …6)               counted per pod       SetName::Denied
//! ci_<h> ce_<h>                                 class chains          ClassName
//! ci_<h>_ports                                  a class's port map    SetName::Ports
//! ai_<h> ae_<h>                                 atom chains           AtomName
//! pp_<h>4 / pn_<h>4 (and …6)                    a peer's addresses,   SetName::Peer (PeerName)
//!                                               shared by the table
//! pu_<h>4 / nu_<h>4 (and …6)                    one union atom's      SetName::Peer (PeerName)
//!                                               peers, merged
//! li_<h> le_<h>                                 linear plans' chains  ChainName::Linear
//! ```
//!
//! `<h>` is 16 lowercase hex digits, a stable hash of what the object stands for; a parser
//! takes nothing else, so every name it accepts renders back to the same bytes.
//!
//! Changing how any of these render changes the kernel's names: a restarted agent would no
//! longer find its own chains and sets in a table it restored (and tests listing tables pin
//! them).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use super::{KeyType, Role, Set};
use crate::model::Direction;

/// A string that is not the kind of name asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} is not the name of a weft {kind}")]
pub struct NameError {
    pub name: String,
    /// What was asked for: `set`, `chain`, `class chain`, `atom chain`.
    pub kind: &'static str,
}

fn refuse<T>(name: &str, kind: &'static str) -> Result<T, NameError> {
    Err(NameError {
        name: name.to_string(),
        kind,
    })
}

/// An address family: the digit per-family names end in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    pub fn of(addr: IpAddr) -> Family {
        Family::from_v6(addr.is_ipv6())
    }

    /// The plan's rules say `v6: bool`.
    pub fn from_v6(v6: bool) -> Family {
        if v6 { Family::V6 } else { Family::V4 }
    }

    pub fn is_v6(self) -> bool {
        self == Family::V6
    }

    fn digit(self) -> char {
        match self {
            Family::V4 => '4',
            Family::V6 => '6',
        }
    }

    /// `name` without its last character, if that is a family digit.
    fn split(name: &str) -> Option<(&str, Family)> {
        let stem = name.get(..name.len().checked_sub(1)?)?;
        match name.as_bytes().last()? {
            b'4' => Some((stem, Family::V4)),
            b'6' => Some((stem, Family::V6)),
            _ => None,
        }
    }

    fn key(self) -> KeyType {
        match self {
            Family::V4 => KeyType::Ipv4,
            Family::V6 => KeyType::Ipv6,
        }
    }
}

/// Stable 64-bit FNV-1a of what a chain stands for: the same policies give the same name in
/// every agent and after every restart.
pub(crate) fn hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// `<prefix><16 lowercase hex digits>` → the number. Upper case or another length would
/// parse to a hash that renders differently, so they are refused.
fn parse_hash(s: &str, prefix: &str) -> Option<u64> {
    let h = s.strip_prefix(prefix)?;
    if h.len() != 16 || !h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u64::from_str_radix(h, 16).ok()
}

/// `ingress`/`egress` choice of a two-letter prefix.
fn by_dir(dir: Direction, ingress: &'static str, egress: &'static str) -> &'static str {
    match dir {
        Direction::Ingress => ingress,
        Direction::Egress => egress,
    }
}

/// The three base chains, one of each per table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BaseChain {
    /// `pod_egress`: forward hook, before `pod_ingress`.
    PodEgress,
    /// `pod_ingress`: forward hook.
    PodIngress,
    /// `pod_egress_local`: input hook (a pod talking to its own node).
    PodEgressLocal,
}

impl BaseChain {
    pub const ALL: [BaseChain; 3] = [
        BaseChain::PodEgress,
        BaseChain::PodIngress,
        BaseChain::PodEgressLocal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BaseChain::PodEgress => "pod_egress",
            BaseChain::PodIngress => "pod_ingress",
            BaseChain::PodEgressLocal => "pod_egress_local",
        }
    }
}

/// A class chain, `ci_<h>` (ingress) or `ce_<h>` (egress): the pods the same policies
/// isolate in one direction.
///
/// Ordered as the rendered names are (the compiler walks classes in that order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClassName {
    dir: Direction,
    hash: u64,
}

impl ClassName {
    /// The class standing for `key` (its policies and how they resolve named ports).
    pub(crate) fn of(dir: Direction, key: &str) -> ClassName {
        ClassName {
            dir,
            hash: hash(key),
        }
    }

    pub fn direction(self) -> Direction {
        self.dir
    }

    fn prefix(self) -> &'static str {
        by_dir(self.dir, "ci_", "ce_")
    }
}

impl fmt::Display for ClassName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{:016x}", self.prefix(), self.hash)
    }
}

impl FromStr for ClassName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<ClassName, NameError> {
        for dir in [Direction::Ingress, Direction::Egress] {
            if let Some(hash) = parse_hash(s, by_dir(dir, "ci_", "ce_")) {
                return Ok(ClassName { dir, hash });
            }
        }
        refuse(s, "class chain")
    }
}

impl Ord for ClassName {
    fn cmp(&self, other: &ClassName) -> std::cmp::Ordering {
        (self.prefix(), self.hash).cmp(&(other.prefix(), other.hash))
    }
}

impl PartialOrd for ClassName {
    fn partial_cmp(&self, other: &ClassName) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// An atom chain, `ai_<h>` (ingress) or `ae_<h>` (egress): within one class, what the
/// rules covering one (protocol, port) region allow.
///
/// Ordered as the rendered names are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AtomName {
    dir: Direction,
    hash: u64,
}

impl AtomName {
    /// The atom standing for `key` (its class, region and sets).
    pub(crate) fn of(dir: Direction, key: &str) -> AtomName {
        AtomName {
            dir,
            hash: hash(key),
        }
    }

    pub fn direction(self) -> Direction {
        self.dir
    }

    fn prefix(self) -> &'static str {
        by_dir(self.dir, "ai_", "ae_")
    }
}

impl fmt::Display for AtomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{:016x}", self.prefix(), self.hash)
    }
}

impl FromStr for AtomName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<AtomName, NameError> {
        for dir in [Direction::Ingress, Direction::Egress] {
            if let Some(hash) = parse_hash(s, by_dir(dir, "ai_", "ae_")) {
                return Ok(AtomName { dir, hash });
            }
        }
        refuse(s, "atom chain")
    }
}

impl Ord for AtomName {
    fn cmp(&self, other: &AtomName) -> std::cmp::Ordering {
        (self.prefix(), self.hash).cmp(&(other.prefix(), other.hash))
    }
}

impl PartialOrd for AtomName {
    fn partial_cmp(&self, other: &AtomName) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// What a peer set holds, and so its type: pod addresses in a hash set, or CIDRs in an
/// interval set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeerKind {
    /// `pp_<h>`: the addresses of the pods a pod peer selects (or, for an egress named
    /// port, of those of them whose port resolves to one number).
    Pods,
    /// `pn_<h>`: an ipBlock minus its excepts, or every address (a rule without peers).
    Nets,
    /// `pu_<h>`: a union atom's pod peers merged into one set (see
    /// [`PlanOptions::union_above`](super::PlanOptions::union_above)), owned by that atom.
    PodUnion,
    /// `nu_<h>`: a union atom's ipBlocks merged into one interval set.
    NetUnion,
}

impl PeerKind {
    const ALL: [PeerKind; 4] = [
        PeerKind::Pods,
        PeerKind::Nets,
        PeerKind::PodUnion,
        PeerKind::NetUnion,
    ];

    /// CIDRs (an interval set) rather than single pod addresses (a hash set).
    pub fn holds_ranges(self) -> bool {
        matches!(self, PeerKind::Nets | PeerKind::NetUnion)
    }

    /// Pod addresses: a pod peer's own set or a union of them.
    pub fn holds_pods(self) -> bool {
        !self.holds_ranges()
    }
}

/// A peer set, `pp_<h>` or `pn_<h>` (the family digit follows, see [`SetName::Peer`]): the
/// addresses one distinct peer allows, shared by every class and atom whose rules name
/// that peer. `<h>` hashes what the peer is (its selectors, and the policy's namespace only
/// when it has no namespace selector), never which policy or class uses it.
///
/// Ordered as the rendered names are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerName {
    kind: PeerKind,
    hash: u64,
}

impl PeerName {
    /// The peer set standing for `key` (a canonical description of the peer).
    pub(crate) fn of(kind: PeerKind, key: &str) -> PeerName {
        PeerName {
            kind,
            hash: hash(key),
        }
    }

    pub fn kind(self) -> PeerKind {
        self.kind
    }

    fn prefix(self) -> &'static str {
        match self.kind {
            PeerKind::Pods => "pp_",
            PeerKind::Nets => "pn_",
            PeerKind::PodUnion => "pu_",
            PeerKind::NetUnion => "nu_",
        }
    }
}

impl fmt::Display for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{:016x}", self.prefix(), self.hash)
    }
}

impl FromStr for PeerName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<PeerName, NameError> {
        for kind in PeerKind::ALL {
            let prefix = PeerName { kind, hash: 0 }.prefix();
            if let Some(hash) = parse_hash(s, prefix) {
                return Ok(PeerName { kind, hash });
            }
        }
        refuse(s, "peer set")
    }
}

impl PeerName {
    /// Where its prefix sorts among the kinds' prefixes (`nu_` < `pn_` < `pp_` < `pu_`):
    /// compilers sort thousands of these per change, comparing strings was their cost.
    fn rank(self) -> u8 {
        match self.kind {
            PeerKind::NetUnion => 0,
            PeerKind::Nets => 1,
            PeerKind::Pods => 2,
            PeerKind::PodUnion => 3,
        }
    }
}

impl Ord for PeerName {
    fn cmp(&self, other: &PeerName) -> std::cmp::Ordering {
        (self.rank(), self.hash).cmp(&(other.rank(), other.hash))
    }
}

impl PartialOrd for PeerName {
    fn partial_cmp(&self, other: &PeerName) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The name of a chain of a policy table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChainName {
    Base(BaseChain),
    Class(ClassName),
    Atom(AtomName),
    /// `li_<h>` / `le_<h>`: one pod's chain in a linear (iptables-style) plan, a hash of the
    /// pod's `namespace/name` ([`compile_linear`](super::compile_linear), benchmarks only).
    Linear {
        dir: Direction,
        hash: u64,
    },
}

impl ChainName {
    /// The linear plan's chain of pod `key` (`namespace/name`).
    #[cfg(any(test, feature = "bench"))]
    pub(crate) fn linear(dir: Direction, key: &str) -> ChainName {
        ChainName::Linear {
            dir,
            hash: hash(key),
        }
    }
}

impl fmt::Display for ChainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainName::Base(b) => f.write_str(b.as_str()),
            ChainName::Class(c) => c.fmt(f),
            ChainName::Atom(a) => a.fmt(f),
            ChainName::Linear { dir, hash } => {
                write!(f, "{}{hash:016x}", by_dir(*dir, "li_", "le_"))
            }
        }
    }
}

impl FromStr for ChainName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<ChainName, NameError> {
        if let Some(b) = BaseChain::ALL.into_iter().find(|b| b.as_str() == s) {
            return Ok(ChainName::Base(b));
        }
        if let Ok(c) = s.parse() {
            return Ok(ChainName::Class(c));
        }
        if let Ok(a) = s.parse() {
            return Ok(ChainName::Atom(a));
        }
        for dir in [Direction::Ingress, Direction::Egress] {
            if let Some(hash) = parse_hash(s, by_dir(dir, "li_", "le_")) {
                return Ok(ChainName::Linear { dir, hash });
            }
        }
        refuse(s, "chain")
    }
}

impl From<BaseChain> for ChainName {
    fn from(b: BaseChain) -> ChainName {
        ChainName::Base(b)
    }
}

impl From<ClassName> for ChainName {
    fn from(c: ClassName) -> ChainName {
        ChainName::Class(c)
    }
}

impl From<AtomName> for ChainName {
    fn from(a: AtomName) -> ChainName {
        ChainName::Atom(a)
    }
}

/// The name of a set or verdict map of a policy table. A name says what the set is for,
/// and so its type ([`SetName::spec`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SetName {
    /// `known4`: local pods the agent has programmed.
    Known(Family),
    /// `blocks4`: the node's pod ranges.
    Blocks(Family),
    /// `self4`: `(addr, addr)` of local pods.
    SelfPairs(Family),
    /// `in4` / `out4`: an isolated pod's address → jump its class.
    PodMap(Direction, Family),
    /// `denied_in4` / `denied_out4`: the pod map's addresses, each with a counter of what
    /// its class denied.
    Denied(Direction, Family),
    /// `<class>_ports`: (protocol, port) → jump an atom.
    Ports(ClassName),
    /// `pp_<h>4` / `pn_<h>4`: the addresses of one family a peer allows, shared by every
    /// atom whose rules name the peer (atoms read them, `ip saddr @pp_<h>4 accept`).
    Peer(PeerName, Family),
}

impl SetName {
    pub fn role(self) -> Role {
        match self {
            SetName::Known(_) => Role::Known,
            SetName::Blocks(_) => Role::Blocks,
            SetName::SelfPairs(_) => Role::SelfPairs,
            SetName::PodMap(..) => Role::PodMap,
            SetName::Denied(..) => Role::Counted,
            SetName::Ports(_) => Role::PortMap,
            SetName::Peer(..) => Role::Peers,
        }
    }

    /// An empty set of the type this name stands for.
    pub fn spec(self) -> Set {
        let (key, interval, map) = match self {
            SetName::Known(f) | SetName::Denied(_, f) => (f.key(), false, false),
            SetName::Peer(p, f) => (f.key(), p.kind().holds_ranges(), false),
            SetName::Blocks(f) => (f.key(), true, false),
            SetName::SelfPairs(Family::V4) => (KeyType::Ipv4Pair, false, false),
            SetName::SelfPairs(Family::V6) => (KeyType::Ipv6Pair, false, false),
            SetName::PodMap(_, f) => (f.key(), false, true),
            SetName::Ports(_) => (KeyType::ProtoPort, true, true),
        };
        Set::new(key, interval, map, self.role())
    }

    /// The counted set that mirrors a pod map (`in4` → `denied_in4`).
    pub fn counted_twin(self) -> Option<SetName> {
        match self {
            SetName::PodMap(d, f) => Some(SetName::Denied(d, f)),
            _ => None,
        }
    }

    /// The pod map a counted set mirrors (`denied_in4` → `in4`).
    pub fn pod_map_of_counted(self) -> Option<SetName> {
        match self {
            SetName::Denied(d, f) => Some(SetName::PodMap(d, f)),
            _ => None,
        }
    }
}

impl fmt::Display for SetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetName::Known(fam) => write!(f, "known{}", fam.digit()),
            SetName::Blocks(fam) => write!(f, "blocks{}", fam.digit()),
            SetName::SelfPairs(fam) => write!(f, "self{}", fam.digit()),
            SetName::PodMap(d, fam) => write!(f, "{}{}", by_dir(*d, "in", "out"), fam.digit()),
            SetName::Denied(d, fam) => {
                write!(f, "denied_{}{}", by_dir(*d, "in", "out"), fam.digit())
            }
            SetName::Ports(c) => write!(f, "{c}_ports"),
            SetName::Peer(p, fam) => write!(f, "{p}{}", fam.digit()),
        }
    }
}

impl FromStr for SetName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<SetName, NameError> {
        if let Some(class) = s.strip_suffix("_ports") {
            return class
                .parse()
                .map(SetName::Ports)
                .or_else(|_| refuse(s, "set"));
        }
        let Some((stem, fam)) = Family::split(s) else {
            return refuse(s, "set");
        };
        let (ingress, egress) = (Direction::Ingress, Direction::Egress);
        let name = match stem {
            "known" => SetName::Known(fam),
            "blocks" => SetName::Blocks(fam),
            "self" => SetName::SelfPairs(fam),
            "in" => SetName::PodMap(ingress, fam),
            "out" => SetName::PodMap(egress, fam),
            "denied_in" => SetName::Denied(ingress, fam),
            "denied_out" => SetName::Denied(egress, fam),
            // Before 2026-12-07 atoms had sets of their own (`ai_<h>_a4`, `ai_<h>_n4`): such
            // names (in a restored plan, or a table an older agent left) are foreign now.
            _ => match stem.parse() {
                Ok(p) => SetName::Peer(p, fam),
                Err(_) => return refuse(s, "set"),
            },
        };
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(dir: Direction, key: &str) -> ClassName {
        ClassName::of(dir, key)
    }

    fn atom(dir: Direction, key: &str) -> AtomName {
        AtomName::of(dir, key)
    }

    fn every_set() -> Vec<SetName> {
        let mut out = Vec::new();
        for f in Family::ALL {
            out.extend([SetName::Known(f), SetName::Blocks(f), SetName::SelfPairs(f)]);
            for d in [Direction::Ingress, Direction::Egress] {
                out.extend([SetName::PodMap(d, f), SetName::Denied(d, f)]);
            }
        }
        for d in [Direction::Ingress, Direction::Egress] {
            out.push(SetName::Ports(class(d, "z")));
        }
        for f in Family::ALL {
            for k in PeerKind::ALL {
                out.push(SetName::Peer(PeerName::of(k, "x"), f));
            }
        }
        out
    }

    fn every_chain() -> Vec<ChainName> {
        let mut out: Vec<ChainName> = BaseChain::ALL.map(ChainName::from).to_vec();
        for d in [Direction::Ingress, Direction::Egress] {
            out.push(class(d, "a").into());
            out.push(atom(d, "a").into());
            out.push(ChainName::linear(d, "shop/web"));
        }
        out
    }

    #[test]
    fn names_render_as_the_kernel_holds_them() {
        let c = class(Direction::Ingress, "k");
        let h = format!("{:016x}", hash("k"));
        let a = atom(Direction::Egress, "k");
        let rendered = |n: SetName| n.to_string();
        assert_eq!(rendered(SetName::Known(Family::V4)), "known4");
        assert_eq!(rendered(SetName::Blocks(Family::V6)), "blocks6");
        assert_eq!(rendered(SetName::SelfPairs(Family::V4)), "self4");
        assert_eq!(
            rendered(SetName::PodMap(Direction::Ingress, Family::V6)),
            "in6"
        );
        assert_eq!(
            rendered(SetName::PodMap(Direction::Egress, Family::V4)),
            "out4"
        );
        assert_eq!(
            rendered(SetName::Denied(Direction::Egress, Family::V6)),
            "denied_out6"
        );
        assert_eq!(c.to_string(), format!("ci_{h}"));
        assert_eq!(rendered(SetName::Ports(c)), format!("ci_{h}_ports"));
        assert_eq!(a.to_string(), format!("ae_{h}"));
        assert_eq!(
            rendered(SetName::Peer(PeerName::of(PeerKind::Pods, "k"), Family::V4)),
            format!("pp_{h}4")
        );
        assert_eq!(
            rendered(SetName::Peer(PeerName::of(PeerKind::Nets, "k"), Family::V6)),
            format!("pn_{h}6")
        );
        assert_eq!(
            rendered(SetName::Peer(
                PeerName::of(PeerKind::PodUnion, "k"),
                Family::V4
            )),
            format!("pu_{h}4")
        );
        assert_eq!(
            rendered(SetName::Peer(
                PeerName::of(PeerKind::NetUnion, "k"),
                Family::V6
            )),
            format!("nu_{h}6")
        );
        assert_eq!(
            ChainName::Base(BaseChain::PodEgressLocal).to_string(),
            "pod_egress_local"
        );
        assert_eq!(
            ChainName::linear(Direction::Egress, "k").to_string(),
            format!("le_{h}")
        );
        // The FNV-1a the names were always made of (an empty key is its offset basis).
        assert_eq!(
            class(Direction::Egress, "").to_string(),
            "ce_cbf29ce484222325"
        );
    }

    #[test]
    fn every_name_parses_back_to_itself() {
        for n in every_set() {
            let s = n.to_string();
            assert_eq!(s.parse::<SetName>(), Ok(n), "{s}");
            assert!(s.parse::<ChainName>().is_err(), "set {s} taken for a chain");
        }
        for n in every_chain() {
            let s = n.to_string();
            assert_eq!(s.parse::<ChainName>(), Ok(n), "{s}");
            assert!(s.parse::<SetName>().is_err(), "chain {s} taken for a set");
        }
        let c = class(Direction::Egress, "q");
        assert_eq!(c.to_string().parse::<ClassName>(), Ok(c));
        let a = atom(Direction::Ingress, "q");
        assert_eq!(a.to_string().parse::<AtomName>(), Ok(a));
    }

    #[test]
    fn foreign_names_are_refused() {
        let h = "0123456789abcdef";
        for s in [
            "",
            "4",
            "known",
            "known5",
            "known46",
            "Known4",
            "denied_",
            "denied_in",
            "denied_up4",
            "masq4",
            "in",
            "_ports",
            "ci_ports",
            &format!("cx_{h}_ports"),
            &format!("ci_{h}_a4"),
            &format!("ai_{h}_b4"),
            &format!("ai_{h}_a5"),
            &format!("ai_{h}"),
            &format!("ai_{}_a4", h.to_uppercase()),
            &format!("ai_{}_a4", &h[1..]),
            &format!("ai_{h}0_a4"),
            "ai_+123456789abcdef_a4",
            // The atoms' own sets of before 2026-12-07.
            &format!("ai_{h}_a4"),
            &format!("ae_{h}_n6"),
            // Peer sets: a family digit, 16 lowercase hex digits, a known kind.
            &format!("pp_{h}"),
            &format!("pp_{h}5"),
            &format!("pp_{}4", h.to_uppercase()),
            &format!("pp_{}4", &h[1..]),
            &format!("px_{h}4"),
            &format!("pp_{h}_a4"),
            &format!("pu_{h}"),
            &format!("nu_{}4", &h[1..]),
            "pp_+123456789abcdef4",
        ] {
            assert!(s.parse::<SetName>().is_err(), "set {s:?} accepted");
        }
        for s in [
            "",
            "postrouting",
            "pod_egress_",
            "POD_INGRESS",
            "ci_",
            &format!("ci_{h}_ports"),
            &format!("cx_{h}"),
            &format!("ci_{}", h.to_uppercase()),
            &format!("ae_{}", &h[..15]),
            &format!("lx_{h}"),
            "ci_-123456789abcdef",
            &format!("pp_{h}4"),
            &format!("pn_{h}"),
        ] {
            assert!(s.parse::<ChainName>().is_err(), "chain {s:?} accepted");
        }
        assert!(format!("ai_{h}").parse::<ClassName>().is_err());
        assert!(format!("ci_{h}").parse::<AtomName>().is_err());
        let e = "masq4".parse::<SetName>().unwrap_err();
        assert_eq!(e.to_string(), "\"masq4\" is not the name of a weft set");
    }

    #[test]
    fn class_and_atom_order_is_their_names_order() {
        let mut classes: Vec<ClassName> = (0..40)
            .flat_map(|i| [Direction::Ingress, Direction::Egress].map(|d| class(d, &i.to_string())))
            .collect();
        classes.sort();
        let names: Vec<String> = classes.iter().map(ToString::to_string).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        let mut atoms: Vec<AtomName> = (0..40)
            .flat_map(|i| [Direction::Ingress, Direction::Egress].map(|d| atom(d, &i.to_string())))
            .collect();
        atoms.sort();
        let names: Vec<String> = atoms.iter().map(ToString::to_string).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
    }

    #[test]
    fn a_name_gives_its_sets_type_and_twin() {
        let s = SetName::Denied(Direction::Ingress, Family::V6);
        assert_eq!(s.role(), Role::Counted);
        assert_eq!(
            s.pod_map_of_counted(),
            Some(SetName::PodMap(Direction::Ingress, Family::V6))
        );
        assert_eq!(
            SetName::PodMap(Direction::Egress, Family::V4).counted_twin(),
            Some(SetName::Denied(Direction::Egress, Family::V4))
        );
        assert_eq!(SetName::Known(Family::V4).counted_twin(), None);
        let spec = SetName::Ports(class(Direction::Egress, "p")).spec();
        assert_eq!(
            (spec.key, spec.interval, spec.map, spec.role),
            (KeyType::ProtoPort, true, true, Role::PortMap)
        );
        let spec = SetName::SelfPairs(Family::V6).spec();
        assert_eq!((spec.key, spec.interval), (KeyType::Ipv6Pair, false));
        let spec = SetName::Peer(PeerName::of(PeerKind::Pods, "p"), Family::V6).spec();
        assert_eq!(
            (spec.key, spec.interval, spec.map, spec.role),
            (KeyType::Ipv6, false, false, Role::Peers)
        );
        let spec = SetName::Peer(PeerName::of(PeerKind::Nets, "p"), Family::V4).spec();
        assert_eq!(
            (spec.key, spec.interval, spec.map, spec.role),
            (KeyType::Ipv4, true, false, Role::Peers)
        );
        let spec = SetName::Peer(PeerName::of(PeerKind::PodUnion, "p"), Family::V4).spec();
        assert_eq!((spec.key, spec.interval), (KeyType::Ipv4, false));
        let spec = SetName::Peer(PeerName::of(PeerKind::NetUnion, "p"), Family::V6).spec();
        assert_eq!((spec.key, spec.interval), (KeyType::Ipv6, true));
    }

    #[test]
    fn peer_names_order_and_parse_apart_from_every_other_name() {
        let a = PeerName::of(PeerKind::Pods, "a");
        let b = PeerName::of(PeerKind::Nets, "a");
        assert_ne!(a, b);
        assert_eq!(a.to_string().parse::<PeerName>(), Ok(a));
        assert_eq!(b.to_string().parse::<PeerName>(), Ok(b));
        assert!(a.to_string().parse::<SetName>().is_err(), "no family digit");
        let mut peers: Vec<PeerName> = (0..40)
            .flat_map(|i| PeerKind::ALL.map(|k| PeerName::of(k, &i.to_string())))
            .collect();
        peers.sort();
        let names: Vec<String> = peers.iter().map(ToString::to_string).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        // No other kind of name takes a peer set's prefix.
        let peer_prefix = |s: &str| {
            ["pp_", "pn_", "pu_", "nu_"]
                .iter()
                .any(|p| s.starts_with(p))
        };
        for n in every_set() {
            let s = n.to_string();
            let peer = matches!(n, SetName::Peer(..));
            assert_eq!(peer_prefix(&s), peer, "{s}");
        }
        for n in every_chain() {
            let s = n.to_string();
            assert!(!peer_prefix(&s), "{s}");
        }
    }
}
