//! Plans and diffs as `nft -f` text (nftables 1.0.6 syntax): one command per line, so the
//! whole text is one atomic transaction when given to `nft -f`.

use std::collections::{VecDeque, btree_map};
use std::fmt::Write;
use std::net::IpAddr;

use super::diff::leaves_first;
use super::ranges::{self, addr_u128};
use super::{CUT_MARK, Chain, Elem, Field, HookPoint, KeyType, Op, Plan, Role, Rule, Set, Verdict};

/// The whole plan, from nothing (the first apply): the text of `render_ops` of
/// `diff(empty, plan)`, written from the plan itself ([`render_pieces`]).
pub fn render(plan: &Plan) -> String {
    render_pieces(plan).collect()
}

/// [`render`] as a sequence of whole lines, each piece made only when it is asked for: one
/// `add element` command (at most [`CHUNK`] elements) or one set or chain. A caller can
/// stream a table's first build to `nft` holding one piece at a time, where `render_ops`
/// of a diff from nothing holds every element twice more (the diff's ops own a copy of
/// each, and the text is whole): 760k elements in `weftctl bench scale`, tens of MB each.
///
/// The order is `diff`'s for an empty old plan (the tests check the text is the same): the
/// table and every set, the widening elements (peers, self pairs, ranges), the chains
/// leaves first, then port maps, pod maps, counted twins and `known`.
pub fn render_pieces<'a>(plan: &'a Plan) -> Pieces<'a> {
    let mut stages = VecDeque::new();
    stages.push_back(Stage::Table);
    stages.extend(plan.sets.iter().map(|(n, s)| Stage::Set(n, s)));
    let elements = |stages: &mut VecDeque<Stage<'a>>, role: &dyn Fn(Role) -> bool| {
        stages.extend(
            plan.sets
                .iter()
                .filter(|(_, s)| role(s.role) && !s.elements.is_empty())
                .map(|(n, s)| Stage::Elements(n, s)),
        );
    };
    elements(&mut stages, &|r| {
        matches!(r, Role::Peers | Role::SelfPairs | Role::Blocks)
    });
    let names: Vec<&str> = plan.chains.keys().map(String::as_str).collect();
    stages.extend(
        leaves_first(plan, &names)
            .into_iter()
            .filter_map(|n| plan.chains.get_key_value(n))
            .map(|(n, c)| Stage::Chain(n, c)),
    );
    for role in [Role::PortMap, Role::PodMap, Role::Counted, Role::Known] {
        elements(&mut stages, &|r| r == role);
    }
    Pieces {
        t: format!("inet {}", plan.table),
        stages,
        current: None,
    }
}

/// What is left to write of a plan (see [`render_pieces`]).
enum Stage<'a> {
    Table,
    Set(&'a str, &'a Set),
    Elements(&'a str, &'a Set),
    Chain(&'a str, &'a Chain),
}

/// The iterator of [`render_pieces`].
pub struct Pieces<'a> {
    t: String,
    stages: VecDeque<Stage<'a>>,
    /// The set whose elements are being written, and where.
    current: Option<(&'a str, btree_map::Iter<'a, Elem, Option<Verdict>>)>,
}

impl Iterator for Pieces<'_> {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        loop {
            if let Some((set, iter)) = &mut self.current {
                let mut out = String::new();
                if element_line(&mut out, &self.t, set, iter.by_ref().take(CHUNK)) {
                    return Some(out);
                }
                self.current = None;
            }
            let mut out = String::new();
            match self.stages.pop_front()? {
                Stage::Table => {
                    let _ = writeln!(out, "add table {}", self.t);
                }
                Stage::Set(name, s) => {
                    add_set(&mut out, &self.t, name, s.key, s.interval, s.map, s.role)
                }
                Stage::Chain(name, c) => add_chain(&mut out, &self.t, name, c),
                Stage::Elements(name, s) => {
                    self.current = Some((name, s.elements.iter()));
                    continue;
                }
            }
            return Some(out);
        }
    }
}

/// Elements per `add element` command (keeps lines reasonable; nft takes any number).
const CHUNK: usize = 512;

/// Ops as commands for table `inet <table>`.
pub fn render_ops(table: &str, ops: &[Op]) -> String {
    let mut out = String::new();
    let t = format!("inet {table}");
    for op in ops {
        match op {
            Op::AddTable => {
                let _ = writeln!(out, "add table {t}");
            }
            Op::AddSet {
                name,
                key,
                interval,
                map,
                role,
            } => add_set(&mut out, &t, name, *key, *interval, *map, *role),
            Op::AddChain { name, chain } => add_chain(&mut out, &t, name, chain),
            Op::ReplaceChain { name, chain } => {
                let _ = writeln!(out, "delete chain {t} {name}");
                add_chain(&mut out, &t, name, chain);
            }
            Op::AddElements { set, elements } => add_elements(&mut out, &t, set, elements),
            Op::DeleteElements { set, elements } => delete_elements(&mut out, &t, set, elements),
            Op::ReplaceElements { set, delete, add } => {
                delete_elements(&mut out, &t, set, delete);
                add_elements(&mut out, &t, set, add);
            }
            Op::DeleteChain { name } => {
                let _ = writeln!(out, "delete chain {t} {name}");
            }
            Op::DeleteSet { name, map } => {
                let what = if *map { "map" } else { "set" };
                let _ = writeln!(out, "delete {what} {t} {name}");
            }
        }
    }
    out
}

fn key_type(k: KeyType) -> &'static str {
    match k {
        KeyType::Ipv4 => "ipv4_addr",
        KeyType::Ipv6 => "ipv6_addr",
        KeyType::Ipv4Pair => "ipv4_addr . ipv4_addr",
        KeyType::Ipv6Pair => "ipv6_addr . ipv6_addr",
        KeyType::ProtoPort => "inet_proto . inet_service",
    }
}

fn add_chain(out: &mut String, t: &str, name: &str, chain: &Chain) {
    match chain.hook {
        Some(h) => {
            let point = match h.point {
                HookPoint::Forward => "forward",
                HookPoint::Input => "input",
            };
            let _ = writeln!(
                out,
                "add chain {t} {name} {{ type filter hook {point} priority {}; policy accept; }}",
                h.priority
            );
        }
        None => {
            let _ = writeln!(out, "add chain {t} {name}");
        }
    }
    for r in &chain.rules {
        let _ = writeln!(out, "add rule {t} {name} {}", rule(r));
    }
}

fn add_set(
    out: &mut String,
    t: &str,
    name: &str,
    key: KeyType,
    interval: bool,
    map: bool,
    role: Role,
) {
    let ty = key_type(key);
    let mut flags = if interval { " flags interval;" } else { "" }.to_string();
    if role == Role::Counted {
        flags.push_str(" counter;");
    }
    if map {
        let _ = writeln!(out, "add map {t} {name} {{ type {ty} : verdict;{flags} }}");
    } else {
        let _ = writeln!(out, "add set {t} {name} {{ type {ty};{flags} }}");
    }
}

fn add_elements(out: &mut String, t: &str, set: &str, elements: &[(Elem, Option<Verdict>)]) {
    for chunk in elements.chunks(CHUNK) {
        element_line(out, t, set, chunk.iter().map(|(e, v)| (e, v)));
    }
}

/// One `add element` command of `elements` (false, and nothing written, when there are
/// none).
fn element_line<'a>(
    out: &mut String,
    t: &str,
    set: &str,
    elements: impl Iterator<Item = (&'a Elem, &'a Option<Verdict>)>,
) -> bool {
    let mut any = false;
    for (e, v) in elements {
        if any {
            out.push_str(", ");
        } else {
            let _ = write!(out, "add element {t} {set} {{ ");
            any = true;
        }
        out.push_str(&elem(e));
        if let Some(v) = v {
            out.push_str(" : ");
            out.push_str(&verdict(v));
        }
    }
    if any {
        out.push_str(" }\n");
    }
    any
}

fn delete_elements(out: &mut String, t: &str, set: &str, elements: &[Elem]) {
    for chunk in elements.chunks(CHUNK) {
        let items: Vec<String> = chunk.iter().map(elem).collect();
        let _ = writeln!(out, "delete element {t} {set} {{ {} }}", items.join(", "));
    }
}

fn range(lo: IpAddr, hi: IpAddr) -> String {
    if lo == hi {
        return lo.to_string();
    }
    let (v6, l) = addr_u128(lo);
    let (_, h) = addr_u128(hi);
    match ranges::prefix_len(v6, l, h) {
        Some(len) => format!("{lo}/{len}"),
        None => format!("{lo}-{hi}"),
    }
}

fn span<T: PartialEq + std::fmt::Display>(lo: T, hi: T) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    }
}

fn elem(e: &Elem) -> String {
    match e {
        Elem::V4(a, b) => range(IpAddr::V4(*a), IpAddr::V4(*b)),
        Elem::V6(a, b) => range(IpAddr::V6(*a), IpAddr::V6(*b)),
        Elem::V4Pair(a, b) => format!("{a} . {b}"),
        Elem::V6Pair(a, b) => format!("{a} . {b}"),
        Elem::ProtoPort { proto, port } => {
            format!("{} . {}", span(proto.0, proto.1), span(port.0, port.1))
        }
    }
}

fn verdict(v: &Verdict) -> String {
    match v {
        Verdict::Accept => "accept".into(),
        Verdict::Drop => "drop".into(),
        Verdict::Return => "return".into(),
        Verdict::Jump(c) => format!("jump {c}"),
        Verdict::Goto(c) => format!("goto {c}"),
    }
}

fn ip(v6: bool) -> &'static str {
    if v6 { "ip6" } else { "ip" }
}

fn field(f: Field) -> &'static str {
    match f {
        Field::Saddr => "saddr",
        Field::Daddr => "daddr",
    }
}

fn rule(r: &Rule) -> String {
    match r {
        Rule::CutMarked => format!("ct mark & {CUT_MARK:#010x} == {CUT_MARK:#010x} drop"),
        Rule::Established => "ct state established,related accept".into(),
        Rule::NeighborDiscovery => "icmpv6 type { nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, nd-redirect } accept".into(),
        Rule::PairIn {
            v6,
            set,
            verdict: v,
        } => {
            let i = ip(*v6);
            format!("{i} saddr . {i} daddr @{set} {}", verdict(v))
        }
        Rule::Unknown {
            v6,
            field: f,
            within,
            known,
        } => {
            let (i, f) = (ip(*v6), field(*f));
            format!("{i} {f} @{within} {i} {f} != @{known} counter drop")
        }
        Rule::AddrVmap { v6, field: f, map } => format!("{} {} vmap @{map}", ip(*v6), field(*f)),
        Rule::AddrIn {
            v6,
            field: f,
            set,
            verdict: v,
        } => format!("{} {} @{set} {}", ip(*v6), field(*f), verdict(v)),
        Rule::PortVmap { map } => format!("meta l4proto . th dport vmap @{map}"),
        Rule::Log { prefix, per_second } => {
            format!("limit rate {per_second}/second log prefix \"{prefix}\"")
        }
        Rule::CounterDrop => "counter drop".into(),
        Rule::Match {
            v6,
            saddr,
            daddr,
            proto,
            dport,
            verdict: v,
        } => {
            let i = ip(*v6);
            let mut parts = Vec::new();
            if let Some((lo, hi)) = saddr {
                parts.push(format!("{i} saddr {}", range(*lo, *hi)));
            }
            if let Some((lo, hi)) = daddr {
                parts.push(format!("{i} daddr {}", range(*lo, *hi)));
            }
            if saddr.is_none() && daddr.is_none() {
                parts.push(format!(
                    "meta nfproto {}",
                    if *v6 { "ipv6" } else { "ipv4" }
                ));
            }
            if let Some(p) = proto {
                parts.push(format!("meta l4proto {p}"));
            }
            if let Some((lo, hi)) = dport {
                parts.push(format!("th dport {}", span(*lo, *hi)));
            }
            parts.push(verdict(v));
            parts.join(" ")
        }
    }
}
