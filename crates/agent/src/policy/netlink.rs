//! Committing an element-only plan diff over netlink: the common policy change (a pod added
//! or relabelled, a policy's peers or ports edited) touches only set elements, and one
//! nf_tables batch sent from this process commits it atomically without the cost of
//! spawning `nft` (which re-reads the table's interval sets on every run).
//!
//! This module only translates: [`plan::Op`] element ops and plan elements into
//! [`weft_nft::ElementBatch`] calls. Anything else in a diff (tables, sets, chains) is not
//! its business: [`element_batch`] then answers `None` and the caller renders the diff for
//! `nft -f` as before. Like `nft -f`, a commit is all or nothing.

use std::net::{Ipv4Addr, Ipv6Addr};

use weft_nft::{Element, ElementBatch, Session, SetKind, Verdict, concat_key};
use weft_policy::plan::{self, Elem, KeyType, Op, Plan};

/// The ops as one element batch for table `inet <table>`, in the ops' order (a
/// [`Op::ReplaceElements`] deletes, then adds). `None` when some op is not an element op, or
/// names a set neither plan knows: the caller falls back to `nft -f`. Set metadata comes
/// from `new`, or from `old` for a set that is gone from `new`.
pub fn element_batch(table: &str, ops: &[Op], old: &Plan, new: &Plan) -> Option<ElementBatch> {
    let spec = |set: &str| new.sets.get(set).or_else(|| old.sets.get(set));
    let mut b = ElementBatch::new(table);
    for op in ops {
        match op {
            Op::AddElements { set, elements } => {
                let s = spec(set)?;
                b.add(set, kind(s), &adds(elements));
            }
            Op::DeleteElements { set, elements } => {
                let s = spec(set)?;
                b.delete(set, kind(s), &dels(elements));
            }
            Op::ReplaceElements { set, delete, add } => {
                let s = spec(set)?;
                b.delete(set, kind(s), &dels(delete));
                b.add(set, kind(s), &adds(add));
            }
            _ => return None,
        }
    }
    Some(b)
}

/// Commit `batch` in the calling thread's network namespace on a socket of its own
/// (blocking: one netlink round trip, plus an RCU grace period when the socket closes after
/// a batch that deleted elements; run it off the async loop). Err says which set and
/// operation the kernel refused; nothing was applied then.
pub fn commit(batch: ElementBatch) -> Result<(), String> {
    batch
        .commit()
        .map_err(|e| format!("netlink element commit: {e}"))
}

/// As [`commit`], on a socket kept open across commits ([`Session`]): no grace-period wait
/// on the caller's path. The session's socket is in the namespace where it was opened.
pub fn commit_on(session: &mut Session, batch: ElementBatch) -> Result<(), String> {
    session
        .commit(batch)
        .map_err(|e| format!("netlink element commit: {e}"))
}

fn kind(s: &plan::Set) -> SetKind {
    let concat = matches!(
        s.key,
        KeyType::Ipv4Pair | KeyType::Ipv6Pair | KeyType::ProtoPort
    );
    match (s.interval, concat) {
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
    fn non_element_ops_fall_back() {
        let p = Plan::empty("t");
        assert!(element_batch("t", &[Op::AddTable], &p, &p).is_none());
        let op = Op::AddElements {
            set: "nowhere".into(),
            elements: vec![],
        };
        assert!(element_batch("t", &[op], &p, &p).is_none());
        assert!(element_batch("t", &[], &p, &p).is_some_and(|b| b.is_empty()));
    }
}
