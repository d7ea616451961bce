//! Plans and diffs as `nft -f` text (nftables 1.0.6 syntax): one command per line, so the
//! whole text is one atomic transaction when given to `nft -f`.

use std::fmt::Write;
use std::net::IpAddr;

use super::ranges::{self, addr_u128};
use super::{
    CUT_MARK, Chain, Elem, Field, HookPoint, KeyType, Op, Plan, Role, Rule, Verdict, diff,
};

/// The whole plan, from nothing (the first apply): `render_ops` of `diff(empty, plan)`.
pub fn render(plan: &Plan) -> String {
    render_ops(&plan.table, &diff(&Plan::empty(&plan.table), plan))
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
            } => {
                let ty = key_type(*key);
                let mut flags = if *interval { " flags interval;" } else { "" }.to_string();
                if *role == Role::Counted {
                    flags.push_str(" counter;");
                }
                if *map {
                    let _ = writeln!(out, "add map {t} {name} {{ type {ty} : verdict;{flags} }}");
                } else {
                    let _ = writeln!(out, "add set {t} {name} {{ type {ty};{flags} }}");
                }
            }
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

fn add_elements(out: &mut String, t: &str, set: &str, elements: &[(Elem, Option<Verdict>)]) {
    for chunk in elements.chunks(CHUNK) {
        let items: Vec<String> = chunk
            .iter()
            .map(|(e, v)| match v {
                Some(v) => format!("{} : {}", elem(e), verdict(v)),
                None => elem(e),
            })
            .collect();
        let _ = writeln!(out, "add element {t} {set} {{ {} }}", items.join(", "));
    }
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
