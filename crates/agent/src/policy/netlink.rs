//! Committing a plan diff over netlink: after the table's first build, a policy change is
//! set elements (a pod added or relabelled, a policy's peers edited) plus, for a policy
//! edit, new and vanished *atom* and *class* chains with their sets and port maps. One
//! nf_tables batch sent from this process commits all of it atomically, without the cost
//! of spawning `nft` (which re-reads the table's interval sets on every run).
//!
//! This module only translates: [`plan::Op`]s and plan objects into
//! [`weft_nft::TableBatch`] calls, keeping the diff's order (its safety order). What the
//! batch cannot express — the table itself, base chains with hooks, a replaced chain, a
//! rule shape regular chains never use — makes [`batch`] answer `None`, and the caller
//! renders the diff for `nft -f` as before. Like `nft -f`, a commit is all or nothing.

use std::net::{Ipv4Addr, Ipv6Addr};

use weft_nft::{Element, Session, SetKind, SetSpec, TableBatch, Verdict, concat_key};
use weft_policy::plan::{self, Elem, KeyType, Op, Plan, Role};

use super::Error;

/// The ops as one batch for table `inet <table>`, in the ops' order (a
/// [`Op::ReplaceElements`] deletes, then adds). `None` when some op can't go over netlink
/// (`AddTable`, `ReplaceChain`, a base chain, a rule kind regular chains don't use) or names
/// a set neither plan nor the diff itself knows: the caller falls back to `nft -f`. Element
/// encoding follows the set's spec from an `AddSet` earlier in `ops`, else from `new`, else
/// from `old` (a set gone from `new`).
pub fn batch(table: &str, ops: &[Op], old: &Plan, new: &Plan) -> Option<TableBatch> {
    let mut created: std::collections::HashMap<&str, SetKind> = Default::default();
    let mut b = TableBatch::new(table);
    for op in ops {
        let kind_of = |set: &str| {
            created
                .get(set)
                .copied()
                .or_else(|| new.sets.get(set).or_else(|| old.sets.get(set)).map(kind))
        };
        match op {
            Op::AddElements { set, elements } => {
                let k = kind_of(set)?;
                b.add_elements(set, k, &adds(elements));
            }
            Op::DeleteElements { set, elements } => {
                let k = kind_of(set)?;
                b.delete_elements(set, k, &dels(elements));
            }
            Op::ReplaceElements { set, delete, add } => {
                let k = kind_of(set)?;
                b.delete_elements(set, k, &dels(delete));
                b.add_elements(set, k, &adds(add));
            }
            Op::AddSet {
                name,
                key,
                interval,
                map,
                role,
            } => {
                let spec = SetSpec {
                    key: key_type(*key),
                    interval: *interval,
                    verdict_map: *map,
                    counter: *role == Role::Counted,
                };
                b.add_set(name, &spec);
                created.insert(name, set_kind(*key, *interval));
            }
            Op::AddChain { name, chain } => {
                if chain.hook.is_some() {
                    return None;
                }
                let rules = chain.rules.iter().map(rule).collect::<Option<Vec<_>>>()?;
                b.add_chain(name);
                for r in &rules {
                    b.add_rule(name, r);
                }
            }
            Op::DeleteChain { name } => {
                b.delete_chain(name);
            }
            Op::DeleteSet { name, .. } => {
                b.delete_set(name);
            }
            Op::AddTable | Op::ReplaceChain { .. } => return None,
        }
    }
    Some(b)
}

/// Commit `batch` in the calling thread's network namespace on a socket of its own
/// (blocking: one netlink round trip, plus an RCU grace period when the socket closes after
/// a batch that deleted elements; run it off the async loop). Err says which set and
/// operation the kernel refused; nothing was applied then.
pub fn commit(batch: TableBatch) -> Result<(), Error> {
    batch.commit().map_err(Error::Commit)
}

/// As [`commit`], on a socket kept open across commits ([`Session`]): no grace-period wait
/// on the caller's path. The session's socket is in the namespace where it was opened.
pub fn commit_on(session: &mut Session, batch: TableBatch) -> Result<(), Error> {
    session.commit(batch).map_err(Error::Commit)
}

fn kind(s: &plan::Set) -> SetKind {
    set_kind(s.key, s.interval)
}

fn set_kind(key: KeyType, interval: bool) -> SetKind {
    let concat = matches!(
        key,
        KeyType::Ipv4Pair | KeyType::Ipv6Pair | KeyType::ProtoPort
    );
    match (interval, concat) {
        (false, _) => SetKind::Hash,
        (true, false) => SetKind::Interval,
        (true, true) => SetKind::ConcatInterval,
    }
}

fn adds(elements: &[(Elem, Option<plan::Verdict>)]) -> Vec<Element> {
    elements
        .iter()
        .map(|(e, v)| {
            let mut el = element(e);
            el.verdict = v.as_ref().map(verdict);
            el
        })
        .collect()
}

fn dels(elements: &[Elem]) -> Vec<Element> {
    elements.iter().map(element).collect()
}

fn v4(a: &Ipv4Addr) -> Vec<u8> {
    a.octets().to_vec()
}

fn v6(a: &Ipv6Addr) -> Vec<u8> {
    a.octets().to_vec()
}

/// The key layout of each plan key type (concatenation fields padded to 4 bytes).
fn element(e: &Elem) -> Element {
    match e {
        Elem::V4(lo, hi) => Element::range(v4(lo), v4(hi)),
        Elem::V6(lo, hi) => Element::range(v6(lo), v6(hi)),
        Elem::V4Pair(a, b) => Element::key(concat_key(&[&a.octets(), &b.octets()])),
        Elem::V6Pair(a, b) => Element::key(concat_key(&[&a.octets(), &b.octets()])),
        Elem::ProtoPort { proto, port } => Element::range(
            concat_key(&[&[proto.0], &port.0.to_be_bytes()]),
            concat_key(&[&[proto.1], &port.1.to_be_bytes()]),
        ),
    }
}

fn key_type(k: KeyType) -> weft_nft::KeyType {
    match k {
        KeyType::Ipv4 => weft_nft::KeyType::Ipv4,
        KeyType::Ipv6 => weft_nft::KeyType::Ipv6,
        KeyType::Ipv4Pair => weft_nft::KeyType::Ipv4Pair,
        KeyType::Ipv6Pair => weft_nft::KeyType::Ipv6Pair,
        KeyType::ProtoPort => weft_nft::KeyType::ProtoPort,
    }
}

/// The rules of class and atom chains; `None` for the rest (base-chain rules, the linear
/// baseline's `Match`), which stay with `nft -f`.
fn rule(r: &plan::Rule) -> Option<weft_nft::Rule> {
    Some(match r {
        plan::Rule::AddrIn {
            v6,
            field,
            set,
            verdict: v,
        } => weft_nft::Rule::AddrIn {
            v6: *v6,
            field: match field {
                plan::Field::Saddr => weft_nft::Field::Saddr,
                plan::Field::Daddr => weft_nft::Field::Daddr,
            },
            set: set.clone(),
            verdict: verdict(v),
        },
        plan::Rule::PortVmap { map } => weft_nft::Rule::PortVmap { map: map.clone() },
        plan::Rule::Log { prefix, per_second } => weft_nft::Rule::Log {
            prefix: prefix.clone(),
            per_second: *per_second,
        },
        plan::Rule::CounterDrop => weft_nft::Rule::CounterDrop,
        plan::Rule::Established
        | plan::Rule::CutMarked
        | plan::Rule::NeighborDiscovery
        | plan::Rule::PairIn { .. }
        | plan::Rule::Unknown { .. }
        | plan::Rule::AddrVmap { .. }
        | plan::Rule::Match { .. } => return None,
    })
}

fn verdict(v: &plan::Verdict) -> Verdict {
    match v {
        plan::Verdict::Accept => Verdict::Accept,
        plan::Verdict::Drop => Verdict::Drop,
        plan::Verdict::Return => Verdict::Return,
        plan::Verdict::Jump(c) => Verdict::Jump(c.clone()),
        plan::Verdict::Goto(c) => Verdict::Goto(c.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_port_keys_are_padded_fields() {
        let e = element(&Elem::ProtoPort {
            proto: (6, 6),
            port: (80, 90),
        });
        assert_eq!(e.key, vec![6, 0, 0, 0, 0, 80, 0, 0]);
        assert_eq!(e.key_end, Some(vec![6, 0, 0, 0, 0, 90, 0, 0]));
        let single = element(&Elem::V4(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 1),
        ));
        assert_eq!(single.key_end, None);
    }

    #[test]
    fn table_base_chains_and_unknown_sets_fall_back() {
        let p = Plan::empty("t");
        assert!(batch("t", &[Op::AddTable], &p, &p).is_none());
        let op = Op::AddElements {
            set: "nowhere".into(),
            elements: vec![],
        };
        assert!(batch("t", &[op], &p, &p).is_none());
        assert!(batch("t", &[], &p, &p).is_some_and(|b| b.is_empty()));
        let base = plan::Chain {
            hook: Some(plan::Hook {
                point: plan::HookPoint::Forward,
                priority: 0,
            }),
            rules: vec![],
        };
        let add_base = Op::AddChain {
            name: "c".into(),
            chain: base,
        };
        assert!(batch("t", &[add_base], &p, &p).is_none());
        let base_rule = Op::AddChain {
            name: "c".into(),
            chain: plan::Chain {
                hook: None,
                rules: vec![plan::Rule::Established],
            },
        };
        assert!(batch("t", &[base_rule], &p, &p).is_none());
    }

    #[test]
    fn objects_and_elements_of_new_sets_go_over_netlink() {
        let p = Plan::empty("t");
        let ops = vec![
            Op::AddSet {
                name: "s".into(),
                key: KeyType::ProtoPort,
                interval: true,
                map: true,
                role: Role::PortMap,
            },
            Op::AddChain {
                name: "c".into(),
                chain: plan::Chain {
                    hook: None,
                    rules: vec![
                        plan::Rule::PortVmap { map: "s".into() },
                        plan::Rule::CounterDrop,
                    ],
                },
            },
            Op::AddElements {
                set: "s".into(),
                elements: vec![(
                    Elem::ProtoPort {
                        proto: (6, 6),
                        port: (80, 80),
                    },
                    Some(plan::Verdict::Accept),
                )],
            },
            Op::DeleteChain { name: "old".into() },
            Op::DeleteSet {
                name: "old_s".into(),
                map: false,
            },
        ];
        assert!(batch("t", &ops, &p, &p).is_some_and(|b| !b.is_empty()));
    }
}
