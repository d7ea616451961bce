//! The incremental compiler: after every change its plan equals a full `compile` of its
//! world, and its ops, applied to the plan before the change, give the plan after it.
//! Random worlds and random changes with fixed seeds, so a failure replays exactly.

use weft_policy::plan::{self, Compiler, Op, Plan, PlanOptions};
use weft_policy::testing::*;
use weft_policy::{Protocol, World};

fn same_ruleset(a: &Plan, b: &Plan) -> bool {
    a.sets == b.sets && a.chains == b.chains
}

/// What differs between two plans, for a failure message.
fn differences(a: &Plan, b: &Plan) -> String {
    let mut out = String::new();
    let names: std::collections::BTreeSet<&String> = a.sets.keys().chain(b.sets.keys()).collect();
    for n in names {
        if a.sets.get(n) != b.sets.get(n) {
            out.push_str(&format!(
                "set {n}:\n  incremental {:?}\n  full        {:?}\n",
                a.sets.get(n).map(|s| &s.elements),
                b.sets.get(n).map(|s| &s.elements)
            ));
        }
    }
    let names: std::collections::BTreeSet<&String> =
        a.chains.keys().chain(b.chains.keys()).collect();
    for n in names {
        if a.chains.get(n) != b.chains.get(n) {
            out.push_str(&format!(
                "chain {n}: incremental {} full {}\n",
                a.chains.contains_key(n),
                b.chains.contains_key(n)
            ));
        }
    }
    if a.classes != b.classes {
        out.push_str("classes differ\n");
    }
    out
}

/// One random change, made through the compiler's own calls; says what it was.
fn change(r: &mut Rng, c: &mut Compiler, next_pod: &mut usize) -> String {
    let w = c.world().clone();
    match r.below(9) {
        0 => {
            let e = random_pod(r, *next_pod);
            *next_pod += 1;
            let what = format!("add pod {}", e.name);
            c.upsert_endpoint(e);
            what
        }
        1 if !w.endpoints.is_empty() => {
            let e = r.pick(&w.endpoints).clone();
            c.remove_endpoint(&e.namespace, &e.name);
            format!("remove pod {}", e.name)
        }
        2 | 3 if !w.endpoints.is_empty() => {
            let mut e = r.pick(&w.endpoints).clone();
            e.labels = random_labels(r);
            let what = format!("relabel pod {}", e.name);
            c.upsert_endpoint(e);
            what
        }
        4 if !w.endpoints.is_empty() => {
            let mut e = r.pick(&w.endpoints).clone();
            if e.ports.is_empty() || r.chance(50) {
                e = with_port(e, "http", Protocol::Tcp, *r.pick(&[80, 81, 8080]));
            } else {
                e.ports.clear();
            }
            let what = format!("ports of pod {}", e.name);
            c.upsert_endpoint(e);
            what
        }
        5 => {
            let name = format!("extra{}", r.below(1000));
            let Some(p) = policies(&random_policy_yaml(r, &name)).pop() else {
                return "nothing".into();
            };
            c.upsert_policy(p);
            format!("add policy {name}")
        }
        6 if !w.policies.is_empty() => {
            // An edit: a new spec under an existing policy's name.
            let old = r.pick(&w.policies).clone();
            let Some(mut p) = policies(&random_policy_yaml(r, &old.name)).pop() else {
                return "nothing".into();
            };
            p.namespace = old.namespace.clone();
            c.upsert_policy(p);
            format!("edit policy {}", old.name)
        }
        7 if !w.policies.is_empty() => {
            // A port or CIDR edit, as the diff tests make them.
            let m = if r.chance(50) {
                Mutation::EditPort
            } else {
                Mutation::EditCidr
            };
            let Some(w2) = mutate(r, &w, m) else {
                return "nothing".into();
            };
            let Some(p) = w2
                .policies
                .iter()
                .zip(&w.policies)
                .find(|(a, b)| a != b)
                .map(|(a, _)| a.clone())
            else {
                return "nothing".into();
            };
            let what = format!("{m:?} in {}", p.name);
            c.upsert_policy(p);
            what
        }
        8 if !w.policies.is_empty() => {
            let p = r.pick(&w.policies).clone();
            c.remove_policy(&p.namespace, &p.name);
            format!("remove policy {}", p.name)
        }
        _ => {
            let Some(w2) = mutate(r, &w, Mutation::NamespaceLabel) else {
                return "nothing".into();
            };
            c.set_world(w2);
            "namespace label".into()
        }
    }
}

#[test]
fn every_change_equals_a_full_compile() {
    every_change_equals_a_full_compile_with(0..60, |_| {});
}

/// Union atoms kept up to date change by change: every region one (0), or those of more
/// than one peer set (1), so regions also move between union and shared atoms.
#[test]
fn every_change_equals_a_full_compile_with_union_atoms() {
    every_change_equals_a_full_compile_with(100..130, |o| o.union_above = 0);
    every_change_equals_a_full_compile_with(200..230, |o| o.union_above = 1);
}

fn every_change_equals_a_full_compile_with(
    seeds: std::ops::Range<u64>,
    tune: impl Fn(&mut PlanOptions),
) {
    // A fixed number of worlds, not a time budget (see tests/diff.rs).
    let mut changes = 0;
    let worlds = seeds.end - seeds.start;
    for seed in seeds {
        let mut r = Rng::new(seed);
        let w: World = random_world(&mut r);
        for node in ["a", "b"] {
            let mut opts = PlanOptions::new(node);
            tune(&mut opts);
            let mut c = Compiler::new(w.clone(), opts.clone());
            assert_eq!(c.plan(), &plan::compile(&w, &opts), "seed {seed}: fresh");
            let mut next_pod = 20;
            let mut log = Vec::new();
            for _ in 0..15 {
                let before = c.plan().clone();
                // One change, or a burst of up to three in one transaction.
                let burst = if r.chance(70) { 1 } else { 2 + r.below(2) };
                for _ in 0..burst {
                    log.push(change(&mut r, &mut c, &mut next_pod));
                }
                let ops = c.take_ops();
                let full = plan::compile(c.world(), &opts);
                assert!(
                    c.plan() == &full,
                    "seed {seed} node {node}: after {log:?} the incremental plan differs from a full compile:\n{}",
                    differences(c.plan(), &full)
                );
                let mut applied = before.clone();
                applied.apply(&ops).unwrap_or_else(|e| {
                    panic!("seed {seed} node {node}: after {log:?}: {e}\nops: {ops:#?}")
                });
                assert!(
                    same_ruleset(&applied, &full),
                    "seed {seed} node {node}: after {log:?} its ops do not lead to the new plan"
                );
                // Never more than a full diff would do.
                let full_ops = plan::diff(&before, &full);
                let weight = |ops: &[Op]| ops.iter().map(Op::weight).sum::<usize>();
                assert!(
                    weight(&ops) <= weight(&full_ops),
                    "seed {seed}: after {log:?}: {} > {}",
                    weight(&ops),
                    weight(&full_ops)
                );
                changes += 1;
            }
        }
    }
    assert!(
        changes as u64 > worlds * 2 * 15 * 9 / 10,
        "only {changes} changes checked"
    );
}

/// A policy whose peers other policies name already: the peers' address sets are shared by
/// the table, so the change is the new class's chain, port map and atoms (and the pod
/// map's entries) — not one pod address.
#[test]
fn a_policy_naming_existing_peers_adds_no_peer_addresses() {
    let prod = "env=prod";
    let mut pods = Vec::new();
    for (i, ns) in ["a", "b", "c"].into_iter().enumerate() {
        for j in 0..20 {
            let app = if j % 2 == 0 { "web" } else { "db" };
            let addr = format!("10.0.1.{}", 10 + i * 30 + j);
            pods.push(pod(
                ns,
                &format!("{app}{j}"),
                "a",
                &[&addr],
                &format!("app={app}"),
            ));
        }
    }
    let allow = |ns: &str, port: u16| {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: db, namespace: {ns}}}\nspec:\n  podSelector: {{matchLabels: {{app: db}}}}\n  ingress:\n  - from: [{{namespaceSelector: {{matchLabels: {{env: prod}}}}, podSelector: {{matchLabels: {{app: web}}}}}}, {{ipBlock: {{cidr: 192.168.0.0/16, except: [192.168.1.0/24]}}}}]\n    ports: [{{port: {port}}}]\n"
        )
    };
    let w = world(
        vec![
            namespace("a", prod),
            namespace("b", prod),
            namespace("c", prod),
        ],
        pods,
        policies(&allow("a", 80)),
    );
    let o = PlanOptions::new("a");
    let mut c = Compiler::new(w, o.clone());
    c.take_ops();
    let before = c.plan().clone();
    for (ns, port) in [("b", 443), ("c", 80)] {
        let p = policies(&allow(ns, port)).remove(0);
        c.upsert_policy(p);
        let ops = c.take_ops();
        let peer = |s: &str| s.starts_with("pp_") || s.starts_with("pn_");
        for op in &ops {
            match op {
                Op::AddSet { name, .. } | Op::DeleteSet { name, .. } => {
                    assert!(!peer(name), "{ns}: peer set {name} made: {ops:#?}")
                }
                Op::AddElements { set, .. }
                | Op::DeleteElements { set, .. }
                | Op::ReplaceElements { set, .. } => {
                    assert!(!peer(set), "{ns}: peer set {set} changed: {ops:#?}")
                }
                _ => {}
            }
        }
        assert!(
            ops.iter()
                .any(|op| matches!(op, Op::AddChain { name, .. } if name.starts_with("ci_"))),
            "{ns}: a class chain: {ops:#?}"
        );
        // 10 selected pods: in4 and denied_in4 each; a port map entry or two.
        let weight: usize = ops.iter().map(Op::weight).sum();
        assert!(weight <= 30, "{ns}: weight {weight}: {ops:#?}");
        assert!(same_ruleset(c.plan(), &plan::compile(c.world(), &o)));
    }
    // For the three namespaces' peers: one pod-address set per family of the nodes' pod
    // ranges (dual-stack here) and one CIDR set (IPv4 only).
    let peers = |p: &Plan| {
        p.sets
            .keys()
            .filter(|n| n.starts_with("pp_") || n.starts_with("pn_"))
            .count()
    };
    assert_eq!(peers(&before), 3, "{:?}", before.sets.keys());
    assert_eq!(peers(c.plan()), 3, "{:?}", c.plan().sets.keys());
}
