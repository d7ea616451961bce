//! From one plan to the next: the smallest set of operations, never a flush, in an order that
//! is valid for the kernel and safe for packets.
//!
//! # Applying
//!
//! Render a diff with [`render_ops`](super::render_ops) and give it to `nft -f` as one file:
//! nftables commits a batch atomically (packets see the old ruleset or the new one, never a
//! mix), so nothing in between is ever visible. Each [`Op`] is also atomic on its own (a
//! [`Op::ReplaceElements`] deletes and re-adds in the same batch), so a caller that must split
//! a very large diff can cut it between ops.
//!
//! # Order
//!
//! 1. the table (first plan only), new sets (empty);
//! 2. widening elements: addresses into peer sets, self pairs, pod ranges;
//! 3. new chains, leaves first (atoms, then classes, then base chains), so every jump target
//!    exists before anything jumps to it;
//! 4. class port maps: new and changed entries (now pointing at complete atoms);
//! 5. pod maps: isolation entries for new pods and class moves — a pod is isolated only once
//!    its class chain, port map and peer sets are in place;
//! 6. `known` additions — only now does a new pod leave default-deny, so its first packet
//!    already meets its policy;
//! 7. `known` deletions — a departing pod falls back to default-deny first …
//! 8. … then its pod-map entries go (isolation is removed only after that);
//! 9. narrowing elements: port-map entries, peer addresses, self pairs, ranges;
//! 10. chains and sets nothing references any more, referrers first.
//!
//! So for a single cause (a pod added, a pod removed, a peer relabelled, a port edited) every
//! prefix of the list is a safe state: no flow that is denied both before and after is ever
//! allowed, and no flow allowed both before and after is ever cut. Interval elements whose
//! new cut overlaps the old one are replaced in one op; a map key whose verdict changes is
//! replaced in one op.

use std::collections::{BTreeMap, BTreeSet};

use super::{Chain, Elem, KeyType, Plan, Role, Set, Verdict};
use serde::{Deserialize, Serialize};

/// One step of a diff (atomic on its own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `add table` (idempotent in nftables).
    AddTable,
    AddSet {
        name: String,
        key: KeyType,
        interval: bool,
        map: bool,
        role: Role,
    },
    /// A new chain with all its rules.
    AddChain {
        name: String,
        chain: Chain,
    },
    /// A base chain whose rules changed (only when plan options change): deleted and re-added
    /// in one batch. Never emitted for chains something jumps to.
    ReplaceChain {
        name: String,
        chain: Chain,
    },
    AddElements {
        set: String,
        elements: Vec<(Elem, Option<Verdict>)>,
    },
    DeleteElements {
        set: String,
        elements: Vec<Elem>,
    },
    /// Delete these then add those, atomically: interval elements re-cut, map values changed.
    ReplaceElements {
        set: String,
        delete: Vec<Elem>,
        add: Vec<(Elem, Option<Verdict>)>,
    },
    /// A chain (and its rules) nothing references any more.
    DeleteChain {
        name: String,
    },
    /// A set (a verdict map when `map`) nothing references any more.
    DeleteSet {
        name: String,
        map: bool,
    },
}

impl Op {
    /// How much this op touches: elements for element ops, 1 for an object.
    pub fn weight(&self) -> usize {
        match self {
            Op::AddElements { elements, .. } => elements.len(),
            Op::DeleteElements { elements, .. } => elements.len(),
            Op::ReplaceElements { delete, add, .. } => delete.len() + add.len(),
            _ => 1,
        }
    }
}

#[derive(Default)]
struct SetChange {
    add: Vec<(Elem, Option<Verdict>)>,
    del: Vec<Elem>,
    replace_del: Vec<Elem>,
    replace_add: Vec<(Elem, Option<Verdict>)>,
}

fn set_change(old: Option<&Set>, new: &Set) -> SetChange {
    let empty = BTreeMap::new();
    let old_e = old.map_or(&empty, |s| &s.elements);
    let mut c = SetChange::default();
    for (k, v) in &new.elements {
        match old_e.get(k) {
            None => c.add.push((*k, v.clone())),
            Some(ov) if ov != v => {
                c.replace_del.push(*k);
                c.replace_add.push((*k, v.clone()));
            }
            Some(_) => {}
        }
    }
    for k in old_e.keys() {
        if !new.elements.contains_key(k) {
            c.del.push(*k);
        }
    }
    if new.interval && !c.add.is_empty() && !c.del.is_empty() {
        // Additions that overlap deletions must go in the same batch, deletions first.
        let overlapping = overlap_pairs(&c.add, &c.del);
        if !overlapping.is_empty() {
            let (adds, dels): (BTreeSet<usize>, BTreeSet<usize>) = overlapping.into_iter().unzip();
            let mut keep_add = Vec::new();
            for (i, a) in c.add.drain(..).enumerate() {
                if adds.contains(&i) {
                    c.replace_add.push(a);
                } else {
                    keep_add.push(a);
                }
            }
            c.add = keep_add;
            let mut keep_del = Vec::new();
            for (i, d) in c.del.drain(..).enumerate() {
                if dels.contains(&i) {
                    c.replace_del.push(d);
                } else {
                    keep_del.push(d);
                }
            }
            c.del = keep_del;
        }
    }
    c
}

/// Index pairs (addition, deletion) whose elements overlap. Both lists are sorted (they come
/// from ordered maps), so address ranges take one sweep; port-map keys are few.
fn overlap_pairs(add: &[(Elem, Option<Verdict>)], del: &[Elem]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    if matches!(add.first(), Some((Elem::ProtoPort { .. }, _))) {
        for (i, (a, _)) in add.iter().enumerate() {
            for (j, d) in del.iter().enumerate() {
                if a.overlaps(d) {
                    out.push((i, j));
                }
            }
        }
        return out;
    }
    let mut j0 = 0;
    for (i, (a, _)) in add.iter().enumerate() {
        while j0 < del.len() && del[j0] < *a && !del[j0].overlaps(a) {
            j0 += 1;
        }
        let mut j = j0;
        while j < del.len() && (del[j] <= *a || del[j].overlaps(a)) {
            if del[j].overlaps(a) {
                out.push((i, j));
            }
            j += 1;
        }
    }
    out
}

/// The operations that turn `old` into `new` (same table), in a safe order (see above).
pub fn diff(old: &Plan, new: &Plan) -> Vec<Op> {
    let mut ops = Vec::new();
    if old.is_empty() {
        ops.push(Op::AddTable);
    }
    // 1. New sets; a set whose type changed is recreated (only possible while unreferenced).
    for (name, s) in &new.sets {
        match old.sets.get(name) {
            Some(o) if o.same_spec(s) => {}
            Some(o) => {
                ops.push(Op::DeleteSet {
                    name: name.clone(),
                    map: o.map,
                });
                ops.push(add_set(name, s));
            }
            None => ops.push(add_set(name, s)),
        }
    }
    let mut changes: BTreeMap<&str, (Role, SetChange)> = BTreeMap::new();
    for (name, s) in &new.sets {
        let old_set = old.sets.get(name).filter(|o| o.same_spec(s));
        changes.insert(name, (s.role, set_change(old_set, s)));
    }
    let widen = |r: Role| matches!(r, Role::Peers | Role::SelfPairs | Role::Blocks);
    // 2. Widening elements.
    push_adds(&mut ops, &mut changes, widen);
    // 3. New chains, leaves first; changed base chains.
    let new_chains: Vec<&str> = new
        .chains
        .keys()
        .filter(|n| !old.chains.contains_key(*n))
        .map(String::as_str)
        .collect();
    for name in leaves_first(new, &new_chains) {
        ops.push(Op::AddChain {
            name: name.to_string(),
            chain: new.chains[name].clone(),
        });
    }
    for (name, c) in &new.chains {
        if let Some(o) = old.chains.get(name)
            && o != c
        {
            ops.push(Op::ReplaceChain {
                name: name.clone(),
                chain: c.clone(),
            });
        }
    }
    // 4.–6. Port maps, pod maps, known.
    push_adds(&mut ops, &mut changes, |r| r == Role::PortMap);
    push_adds(&mut ops, &mut changes, |r| r == Role::PodMap);
    push_adds(&mut ops, &mut changes, |r| r == Role::Counted);
    push_adds(&mut ops, &mut changes, |r| r == Role::Known);
    // 7.–9. Removals: known, pod maps, then the narrowing rest.
    push_dels(&mut ops, &changes, |r| r == Role::Known);
    push_dels(&mut ops, &changes, |r| r == Role::Counted);
    push_dels(&mut ops, &changes, |r| r == Role::PodMap);
    push_dels(&mut ops, &changes, |r| r == Role::PortMap);
    push_dels(&mut ops, &changes, widen);
    // 10. Unreferenced chains and sets, referrers first.
    let gone_chains: BTreeSet<&str> = old
        .chains
        .keys()
        .filter(|n| !new.chains.contains_key(*n))
        .map(String::as_str)
        .collect();
    let gone_sets: BTreeSet<&str> = old
        .sets
        .keys()
        .filter(|n| !new.sets.contains_key(*n))
        .map(String::as_str)
        .collect();
    ops.extend(deletions(old, &gone_chains, &gone_sets));
    ops
}

fn add_set(name: &str, s: &Set) -> Op {
    Op::AddSet {
        name: name.to_string(),
        key: s.key,
        interval: s.interval,
        map: s.map,
        role: s.role,
    }
}

fn push_adds(
    ops: &mut Vec<Op>,
    changes: &mut BTreeMap<&str, (Role, SetChange)>,
    role: impl Fn(Role) -> bool,
) {
    for (set, (r, c)) in changes.iter_mut() {
        if !role(*r) {
            continue;
        }
        if !c.replace_del.is_empty() || !c.replace_add.is_empty() {
            ops.push(Op::ReplaceElements {
                set: set.to_string(),
                delete: std::mem::take(&mut c.replace_del),
                add: std::mem::take(&mut c.replace_add),
            });
        }
        if !c.add.is_empty() {
            ops.push(Op::AddElements {
                set: set.to_string(),
                elements: std::mem::take(&mut c.add),
            });
        }
    }
}

fn push_dels(
    ops: &mut Vec<Op>,
    changes: &BTreeMap<&str, (Role, SetChange)>,
    role: impl Fn(Role) -> bool,
) {
    for (set, (r, c)) in changes {
        if role(*r) && !c.del.is_empty() {
            ops.push(Op::DeleteElements {
                set: set.to_string(),
                elements: c.del.clone(),
            });
        }
    }
}

/// Chains in an order where each comes after the chains its rules jump to.
pub(super) fn leaves_first<'a>(plan: &'a Plan, names: &[&'a str]) -> Vec<&'a str> {
    let wanted: BTreeSet<&str> = names.iter().copied().collect();
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut out = Vec::new();
    fn visit<'a>(
        plan: &'a Plan,
        name: &'a str,
        wanted: &BTreeSet<&'a str>,
        done: &mut BTreeSet<&'a str>,
        out: &mut Vec<&'a str>,
    ) {
        if !done.insert(name) {
            return;
        }
        if let Some(c) = plan.chains.get(name) {
            for r in &c.rules {
                if let Some(t) = r.target()
                    && let Some(t) = wanted.get(t)
                {
                    visit(plan, t, wanted, done, out);
                }
            }
        }
        out.push(name);
    }
    // Base chains last: they are the roots.
    let mut ordered: Vec<&str> = names.to_vec();
    ordered.sort_by_key(|n| (plan.chains.get(*n).is_some_and(|c| c.hook.is_some()), *n));
    for n in ordered {
        visit(plan, n, &wanted, &mut done, &mut out);
    }
    out
}

/// Deletes chains and sets of `old` in an order where every object goes after everything
/// (also being deleted) that references it.
fn deletions(old: &Plan, chains: &BTreeSet<&str>, sets: &BTreeSet<&str>) -> Vec<Op> {
    #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum Obj<'a> {
        Chain(&'a str),
        Set(&'a str),
    }
    let mut refs: BTreeMap<Obj, Vec<Obj>> = BTreeMap::new();
    for &c in chains {
        let mut out = Vec::new();
        for r in &old.chains[c].rules {
            out.extend(
                r.sets()
                    .into_iter()
                    .filter(|s| sets.contains(s))
                    .map(Obj::Set),
            );
            out.extend(r.target().filter(|t| chains.contains(t)).map(Obj::Chain));
        }
        refs.insert(Obj::Chain(c), out);
    }
    for &s in sets {
        let out = old.sets[s]
            .elements
            .values()
            .filter_map(|v| v.as_ref().and_then(|v| v.target()))
            .filter(|t| chains.contains(t))
            .map(Obj::Chain)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        refs.insert(Obj::Set(s), out);
    }
    // Kahn: count referrers; emit objects nobody (remaining) refers to.
    let mut referrers: BTreeMap<Obj, usize> = refs.keys().map(|k| (*k, 0)).collect();
    for targets in refs.values() {
        for t in targets {
            *referrers.entry(*t).or_default() += 1;
        }
    }
    let mut ready: Vec<Obj> = referrers
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(k, _)| *k)
        .collect();
    ready.reverse();
    let mut ops = Vec::new();
    let mut emitted = BTreeSet::new();
    while let Some(o) = ready.pop() {
        emitted.insert(o);
        ops.push(match o {
            Obj::Chain(c) => Op::DeleteChain {
                name: c.to_string(),
            },
            Obj::Set(s) => Op::DeleteSet {
                name: s.to_string(),
                map: old.sets[s].map,
            },
        });
        for t in refs.get(&o).into_iter().flatten() {
            if let Some(n) = referrers.get_mut(t) {
                *n -= 1;
                if *n == 0 {
                    ready.push(*t);
                }
            }
        }
    }
    // A reference cycle (never built by `compile`): delete what is left anyway, in name order.
    for o in refs.keys() {
        if !emitted.contains(o) {
            ops.push(match o {
                Obj::Chain(c) => Op::DeleteChain {
                    name: c.to_string(),
                },
                Obj::Set(s) => Op::DeleteSet {
                    name: s.to_string(),
                    map: old.sets[*s].map,
                },
            });
        }
    }
    ops
}

/// An op that the kernel would refuse (found by [`Plan::apply`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("op {index} cannot apply: {reason}")]
pub struct ApplyError {
    pub index: usize,
    pub reason: String,
}

impl Plan {
    /// Applies ops to this plan in memory, refusing what nftables would refuse (a duplicate
    /// object or element, a missing one, overlapping interval elements, a dangling reference,
    /// deleting something still referenced). The agent keeps its view of the kernel with it;
    /// tests use it to check that `apply(old, diff(old, new)) == new`. It changes sets and
    /// chains only: take [`Plan::classes`] from the new plan.
    pub fn apply(&mut self, ops: &[Op]) -> Result<(), ApplyError> {
        for (index, op) in ops.iter().enumerate() {
            self.apply_one(op)
                .map_err(|reason| ApplyError { index, reason })?;
        }
        Ok(())
    }

    fn apply_one(&mut self, op: &Op) -> Result<(), String> {
        match op {
            Op::AddTable => Ok(()),
            Op::AddSet {
                name,
                key,
                interval,
                map,
                role,
            } => {
                if self.sets.contains_key(name) {
                    return Err(format!("set {name} exists"));
                }
                self.sets
                    .insert(name.clone(), Set::new(*key, *interval, *map, *role));
                Ok(())
            }
            Op::AddChain { name, chain } => {
                if self.chains.contains_key(name) {
                    return Err(format!("chain {name} exists"));
                }
                self.check_chain(name, chain)?;
                self.chains.insert(name.clone(), chain.clone());
                Ok(())
            }
            Op::ReplaceChain { name, chain } => {
                let old = self
                    .chains
                    .get(name)
                    .ok_or_else(|| format!("no chain {name}"))?;
                if old.hook.is_none() {
                    return Err(format!("chain {name} is not a base chain"));
                }
                self.check_chain(name, chain)?;
                self.chains.insert(name.clone(), chain.clone());
                Ok(())
            }
            Op::AddElements { set, elements } => self.add_elements(set, elements),
            Op::DeleteElements { set, elements } => self.delete_elements(set, elements),
            Op::ReplaceElements { set, delete, add } => {
                self.delete_elements(set, delete)?;
                self.add_elements(set, add)
            }
            Op::DeleteChain { name } => {
                if !self.chains.contains_key(name) {
                    return Err(format!("no chain {name}"));
                }
                let used_by_rule = self
                    .chains
                    .iter()
                    .any(|(n, c)| n != name && c.rules.iter().any(|r| r.target() == Some(name)));
                let used_by_elem = self.sets.values().any(|s| {
                    s.elements
                        .values()
                        .any(|v| v.as_ref().and_then(|v| v.target()) == Some(name.as_str()))
                });
                if used_by_rule || used_by_elem {
                    return Err(format!("chain {name} is still referenced"));
                }
                self.chains.remove(name);
                Ok(())
            }
            Op::DeleteSet { name, .. } => {
                if !self.sets.contains_key(name) {
                    return Err(format!("no set {name}"));
                }
                if self
                    .chains
                    .values()
                    .any(|c| c.rules.iter().any(|r| r.sets().contains(&name.as_str())))
                {
                    return Err(format!("set {name} is still referenced"));
                }
                self.sets.remove(name);
                Ok(())
            }
        }
    }

    fn check_chain(&self, name: &str, chain: &Chain) -> Result<(), String> {
        for r in &chain.rules {
            for s in r.sets() {
                if !self.sets.contains_key(s) {
                    return Err(format!("chain {name} uses missing set {s}"));
                }
            }
            if let Some(t) = r.target()
                && !self.chains.contains_key(t)
            {
                return Err(format!("chain {name} jumps to missing chain {t}"));
            }
        }
        Ok(())
    }

    fn add_elements(
        &mut self,
        set: &str,
        elements: &[(Elem, Option<Verdict>)],
    ) -> Result<(), String> {
        let chains: BTreeSet<String> = self.chains.keys().cloned().collect();
        let s = self
            .sets
            .get_mut(set)
            .ok_or_else(|| format!("no set {set}"))?;
        for (e, v) in elements {
            if e.key_type() != s.key {
                return Err(format!("element {e:?} does not fit set {set}"));
            }
            if s.map != v.is_some() {
                return Err(format!("element {e:?} of {set}: verdict presence mismatch"));
            }
            if let Some(t) = v.as_ref().and_then(|v| v.target())
                && !chains.contains(t)
            {
                return Err(format!("element {e:?} of {set} jumps to missing chain {t}"));
            }
            if s.elements.contains_key(e) {
                return Err(format!("element {e:?} already in {set}"));
            }
            if s.interval
                && let Some(other) = interval_clash(s, e)
            {
                return Err(format!("element {e:?} of {set} overlaps {other:?}"));
            }
            s.elements.insert(*e, v.clone());
        }
        Ok(())
    }

    fn delete_elements(&mut self, set: &str, elements: &[Elem]) -> Result<(), String> {
        let s = self
            .sets
            .get_mut(set)
            .ok_or_else(|| format!("no set {set}"))?;
        for e in elements {
            if s.elements.remove(e).is_none() {
                return Err(format!("element {e:?} not in {set}"));
            }
        }
        Ok(())
    }
}

/// An existing element of an interval set that overlaps `e`.
fn interval_clash(s: &Set, e: &Elem) -> Option<Elem> {
    match e {
        Elem::V4(..) | Elem::V6(..) => {
            // Elements are disjoint and sorted: only the neighbours can overlap.
            let before = s.elements.range(..=*e).next_back().map(|(k, _)| *k);
            let after = s.elements.range(*e..).next().map(|(k, _)| *k);
            [before, after]
                .into_iter()
                .flatten()
                .find(|k| k.overlaps(e))
        }
        _ => s.elements.keys().find(|k| k.overlaps(e)).copied(),
    }
}
