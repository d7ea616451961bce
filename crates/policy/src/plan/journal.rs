//! The change journal of a [`Compiler`](super::Compiler): the objects a change touched, as
//! they were before it, so the ops of a change cost what it touched and not the size of
//! the plan. The compiler records every set, element and chain before it changes them
//! (`touch_*`); at the end of a change the touched objects before and after are diffed
//! ([`Journal::ops`]).
//!
//! Keyed by the objects' names as the plan holds them (rendered [`SetName`](super::SetName)s
//! and [`ChainName`](super::ChainName)s): the journal does not care what an object is for,
//! only what it was.

use std::collections::BTreeMap;

use super::{Chain, Elem, Op, Plan, Set, Verdict, diff};

/// A set as it was before the changes being journalled.
enum SetBefore {
    /// It did not exist.
    Absent,
    /// It existed and only single elements were touched: its type, and each touched
    /// element's value before (`None`: not in the set) — so a diff costs what was touched,
    /// not the size of the set.
    Elements {
        spec: Set,
        before: BTreeMap<Elem, Option<Option<Verdict>>>,
    },
    /// It existed and was replaced or removed as a whole: all of it.
    Whole(Set),
}

/// The objects changes touched, as they were before them (`None`: did not exist).
#[derive(Default)]
pub(super) struct Journal {
    /// The plan was empty: the ops start with `add table`.
    was_empty: bool,
    /// The whole plan as it was, when the world was replaced (`set_world`).
    full: Option<Plan>,
    sets: BTreeMap<String, SetBefore>,
    chains: BTreeMap<String, Option<Chain>>,
}

impl Journal {
    /// Starts recording changes to `plan`.
    pub(super) fn begin(plan: &Plan) -> Journal {
        Journal {
            was_empty: plan.is_empty(),
            ..Journal::default()
        }
    }

    /// A journal whose change replaced everything: its ops are the diff from `before`.
    pub(super) fn replacing(before: Plan, was_empty: bool) -> Journal {
        Journal {
            was_empty,
            full: Some(before),
            ..Journal::default()
        }
    }

    pub(super) fn was_empty(&self) -> bool {
        self.was_empty
    }

    /// Records element `e` of set `name` of `plan` before it changes.
    pub(super) fn touch_elem(&mut self, plan: &Plan, name: &str, e: &Elem) {
        let current = plan.sets.get(name);
        let entry = self
            .sets
            .entry(name.to_string())
            .or_insert_with(|| match current {
                Some(s) => SetBefore::Elements {
                    spec: Set::new(s.key, s.interval, s.map, s.role),
                    before: BTreeMap::new(),
                },
                None => SetBefore::Absent,
            });
        if let SetBefore::Elements { before, .. } = entry {
            before
                .entry(*e)
                .or_insert_with(|| current.and_then(|s| s.elements.get(e).cloned()));
        }
    }

    /// Records set `name` of `plan` whole before it is created, replaced or removed.
    pub(super) fn touch_set(&mut self, plan: &Plan, name: &str) {
        let current = plan.sets.get(name);
        match self.sets.get_mut(name) {
            None => {
                let before = current.map_or(SetBefore::Absent, |s| SetBefore::Whole(s.clone()));
                self.sets.insert(name.to_string(), before);
            }
            Some(entry @ SetBefore::Elements { .. }) => {
                if let (SetBefore::Elements { before, .. }, Some(s)) = (&*entry, current) {
                    let mut whole = s.clone();
                    for (e, v) in before {
                        match v {
                            Some(v) => whole.elements.insert(*e, v.clone()),
                            None => whole.elements.remove(e),
                        };
                    }
                    *entry = SetBefore::Whole(whole);
                }
            }
            Some(_) => {}
        }
    }

    /// Records chain `name` of `plan` before it is created, replaced or removed.
    pub(super) fn touch_chain(&mut self, plan: &Plan, name: &str) {
        if !self.chains.contains_key(name) {
            self.chains
                .insert(name.to_string(), plan.chains.get(name).cloned());
        }
    }

    /// The plan as it was when the journal began, `plan` being what it is now.
    pub(super) fn plan_before(&self, plan: &Plan) -> Plan {
        if let Some(full) = &self.full {
            return full.clone();
        }
        let mut p = plan.clone();
        for (name, before) in &self.sets {
            match before {
                SetBefore::Absent => {
                    p.sets.remove(name);
                }
                SetBefore::Whole(s) => {
                    p.sets.insert(name.clone(), s.clone());
                }
                SetBefore::Elements { before, .. } => {
                    if let Some(s) = p.sets.get_mut(name) {
                        for (e, v) in before {
                            match v {
                                Some(v) => s.elements.insert(*e, v.clone()),
                                None => s.elements.remove(e),
                            };
                        }
                    }
                }
            }
        }
        for (name, before) in &self.chains {
            match before {
                Some(c) => p.chains.insert(name.clone(), c.clone()),
                None => p.chains.remove(name),
            };
        }
        p
    }

    /// The ops from the touched objects as they were to what they are in `plan`.
    pub(super) fn ops(self, plan: &Plan) -> Vec<Op> {
        if let Some(before) = self.full {
            return diff(&before, plan);
        }
        let mut old = Plan::empty(&plan.table);
        let mut new = Plan::empty(&plan.table);
        for (name, before) in self.sets {
            let current = plan.sets.get(&name);
            match before {
                SetBefore::Elements { spec, before } => {
                    // Only the touched elements, before and after: the rest is the same.
                    let (mut o, mut n) = (spec.clone(), spec);
                    for (e, v) in before {
                        if let Some(v) = v {
                            o.elements.insert(e, v);
                        }
                        if let Some(v) = current.and_then(|s| s.elements.get(&e)) {
                            n.elements.insert(e, v.clone());
                        }
                    }
                    old.sets.insert(name.clone(), o);
                    if current.is_some() {
                        new.sets.insert(name, n);
                    }
                }
                SetBefore::Whole(s) => {
                    if let Some(c) = current {
                        new.sets.insert(name.clone(), c.clone());
                    }
                    old.sets.insert(name, s);
                }
                SetBefore::Absent => {
                    if let Some(c) = current {
                        new.sets.insert(name, c.clone());
                    }
                }
            }
        }
        for (name, before) in self.chains {
            if let Some(c) = plan.chains.get(&name) {
                new.chains.insert(name.clone(), c.clone());
            }
            if let Some(c) = before {
                old.chains.insert(name, c);
            }
        }
        let mut ops = diff(&old, &new);
        if !self.was_empty {
            ops.retain(|op| *op != Op::AddTable);
        }
        ops
    }
}
