//! Diffs: applying `diff(old, new)` to `old` gives `new`; the ops are small for small causes,
//! never flush, and come in an order where every prefix is safe for single causes.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Instant;

use weft_policy::plan::{self, HookPoint, Op, Packet, Plan, PlanOptions};
use weft_policy::testing::*;
use weft_policy::{Direction, Endpoint, Node, Protocol, World};

fn same_ruleset(a: &Plan, b: &Plan) -> bool {
    a.sets == b.sets && a.chains == b.chains
}

fn check_diff(old: &Plan, new: &Plan, what: &str) -> Vec<Op> {
    let ops = plan::diff(old, new);
    let mut p = old.clone();
    p.apply(&ops)
        .unwrap_or_else(|e| panic!("{what}: {e}\nops: {ops:#?}"));
    assert!(same_ruleset(&p, new), "{what}: apply(old, diff) != new");
    let text = plan::render_ops(&new.table, &ops);
    assert!(!text.contains("flush"), "{what}: a diff flushed:\n{text}");
    ops
}

#[test]
fn applying_the_diff_gives_the_new_plan() {
    // A fixed number of worlds, not a time budget (time-bounded loops failed their
    // minimum count on a loaded CI machine).
    let mut checked = 0;
    for seed in 0..120u64 {
        let mut r = Rng::new(seed);
        let w = random_world(&mut r);
        let m = *r.pick(ALL_MUTATIONS);
        let Some(w2) = mutate(&mut r, &w, m) else {
            continue;
        };
        for (node, union_above) in [("a", plan::UNION_ABOVE), ("b", plan::UNION_ABOVE), ("a", 0)] {
            let o = PlanOptions {
                union_above,
                ..PlanOptions::new(node)
            };
            let (old, new) = (plan::compile(&w, &o), plan::compile(&w2, &o));
            check_diff(
                &Plan::empty(&o.table),
                &old,
                &format!("seed {seed} from empty"),
            );
            let ops = check_diff(&old, &new, &format!("seed {seed} {m:?} on {node}"));
            // No chain ever changes in place.
            assert!(
                !ops.iter().any(|op| matches!(op, Op::ReplaceChain { .. })),
                "seed {seed}"
            );
            // Back again.
            check_diff(&new, &old, &format!("seed {seed} {m:?} reversed on {node}"));
            checked += 1;
        }
    }
    assert!(checked > 100, "{checked}");
    // Nothing changed: nothing to do.
    let w = random_world(&mut Rng::new(7));
    let p = plan::compile(&w, &PlanOptions::new("a"));
    assert!(plan::diff(&p, &p).is_empty());
}

/// Every packet worth trying at one node, on both hooks.
fn packets(w: &World) -> Vec<Packet> {
    let addrs = probe_addresses(w);
    let mut out = Vec::new();
    for &src in &addrs {
        for &dst in &addrs {
            if src.is_ipv4() != dst.is_ipv4() {
                continue;
            }
            for proto in [Protocol::Tcp, Protocol::Udp] {
                for &port in &[53u16, 80, 443, 8080, 9999] {
                    out.push(Packet {
                        src,
                        dst,
                        protocol: proto.number(),
                        port,
                    });
                }
            }
        }
    }
    out
}

/// The policies selecting each pod, per direction (a relabel that keeps this keeps classes).
fn selection(w: &World) -> BTreeMap<(String, String), Vec<(usize, Direction)>> {
    w.endpoints
        .iter()
        .map(|e| {
            let sel = w
                .policies
                .iter()
                .enumerate()
                .flat_map(|(i, p)| {
                    [Direction::Ingress, Direction::Egress]
                        .into_iter()
                        .filter(move |d| p.applies(*d) && p.selects(e))
                        .map(move |d| (i, d))
                })
                .collect();
            ((e.namespace.clone(), e.name.clone()), sel)
        })
        .collect()
}

#[test]
fn every_prefix_is_safe_for_single_causes() {
    every_prefix_is_safe_with(1000..1120, |_| {});
}

/// The same with union atoms: a rule leaving a region takes its peers out of the region's
/// union sets, a rule joining puts them in, and neither may flip a flow on the way.
#[test]
fn every_prefix_is_safe_for_single_causes_with_union_atoms() {
    every_prefix_is_safe_with(3000..3030, |o| o.union_above = 0);
    every_prefix_is_safe_with(4000..4030, |o| o.union_above = 1);
}

fn every_prefix_is_safe_with(seeds: std::ops::Range<u64>, tune: impl Fn(&mut PlanOptions)) {
    let mut checked = 0;
    let worlds = seeds.end - seeds.start;
    let safe = [
        Mutation::AddPod,
        Mutation::RemovePod,
        Mutation::Relabel,
        Mutation::EditPort,
        Mutation::EditCidr,
    ];
    for seed in seeds {
        let mut r = Rng::new(seed);
        let w = random_world(&mut r);
        let m = *r.pick(&safe);
        let Some(w2) = mutate(&mut r, &w, m) else {
            continue;
        };
        // A relabel that moves a pod between classes changes its own isolation and its peer
        // memberships at once: that needs the whole diff in one transaction (the documented
        // way to apply it); single-sided relabels must be safe op by op.
        if m == Mutation::Relabel && selection(&w) != selection(&w2) {
            continue;
        }
        let pkts = packets(&w2);
        for node in ["a", "b"] {
            let mut o = PlanOptions::new(node);
            tune(&mut o);
            let (old, new) = (plan::compile(&w, &o), plan::compile(&w2, &o));
            let ops = plan::diff(&old, &new);
            let verdicts = |p: &Plan| -> Vec<bool> {
                pkts.iter()
                    .flat_map(|k| {
                        [HookPoint::Forward, HookPoint::Input].map(|h| p.walk(h, k).unwrap())
                    })
                    .collect()
            };
            let (vo, vn) = (verdicts(&old), verdicts(&new));
            let mut cur = old.clone();
            for (i, op) in ops.iter().enumerate() {
                cur.apply(std::slice::from_ref(op)).unwrap();
                let vc = verdicts(&cur);
                for (k, ((o, n), c)) in vo.iter().zip(&vn).zip(&vc).enumerate() {
                    if o == n {
                        assert_eq!(
                            c,
                            o,
                            "seed {seed} {m:?} node {node}: after op {i} ({op:?}) packet {:?} {} flipped",
                            pkts[k / 2],
                            if k % 2 == 0 { "forward" } else { "input" }
                        );
                    }
                }
            }
            checked += 1;
        }
    }
    // Some worlds have no mutation of the kinds above, or a relabel that moves classes.
    assert!(checked as u64 > worlds / 3, "{checked}");
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn index_of(ops: &[Op], f: impl Fn(&Op) -> bool) -> usize {
    ops.iter().position(f).expect("op present")
}

fn adds_to(set: &str, addr: &str) -> impl Fn(&Op) -> bool {
    let e = plan::Elem::addr(ip(addr));
    let set = set.to_string();
    move |op| matches!(op, Op::AddElements { set: s, elements } if *s == set && elements.iter().any(|(k, _)| *k == e))
}

fn deletes_from(set: &str, addr: &str) -> impl Fn(&Op) -> bool {
    let e = plan::Elem::addr(ip(addr));
    let set = set.to_string();
    move |op| matches!(op, Op::DeleteElements { set: s, elements } if *s == set && elements.contains(&e))
}

fn small_world() -> World {
    world(
        vec![namespace("shop", "")],
        vec![
            pod("shop", "web", "a", &["10.0.1.10"], "app=web"),
            pod("shop", "db", "a", &["10.0.1.11"], "app=db"),
        ],
        policies(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: db, namespace: shop}\nspec:\n  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {app: web}}}]\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web, namespace: shop}\nspec:\n  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {app: db}}}]\n",
        ),
    )
}

#[test]
fn a_new_selected_pod_is_isolated_before_it_leaves_default_deny() {
    let w = small_world();
    let mut w2 = w.clone();
    // A second web pod: a peer of db's rule, and selected by policy `web`.
    w2.endpoints
        .push(pod("shop", "web2", "a", &["10.0.1.12"], "app=web"));
    let o = PlanOptions::new("a");
    let (old, new) = (plan::compile(&w, &o), plan::compile(&w2, &o));
    let ops = check_diff(&old, &new, "new pod");
    let peer = index_of(&ops, |op| match op {
        Op::AddElements { set, elements } => {
            set.starts_with("pp_")
                && elements
                    .iter()
                    .any(|(k, _)| *k == plan::Elem::addr(ip("10.0.1.12")))
        }
        _ => false,
    });
    let isolated = index_of(&ops, adds_to("in4", "10.0.1.12"));
    let known = index_of(&ops, adds_to("known4", "10.0.1.12"));
    assert!(peer < isolated && isolated < known, "{ops:#?}");
    // It joins an existing class: no chain is created, the ops are few.
    assert!(
        !ops.iter()
            .any(|op| matches!(op, Op::AddChain { .. } | Op::AddSet { .. }))
    );
    // (peer, pod map, its per-pod counter element, known, self pair)
    assert!(ops.iter().map(Op::weight).sum::<usize>() <= 5, "{ops:#?}");

    // The first pod of a new class: its chains and sets come before its isolation entry.
    let mut w3 = w.clone();
    w3.endpoints
        .push(pod("shop", "lone", "a", &["10.0.1.13"], "app=db,extra=1"));
    w3.policies.extend(policies(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: extra, namespace: shop}\nspec:\n  podSelector: {matchLabels: {extra: '1'}}\n  ingress: [{ports: [{port: 80}]}]\n",
    ));
    let new3 = plan::compile(&w3, &o);
    let ops = check_diff(&old, &new3, "new class");
    let isolated = index_of(&ops, adds_to("in4", "10.0.1.13"));
    let class = match &ops[isolated] {
        Op::AddElements { elements, .. } => match &elements[0].1 {
            Some(plan::Verdict::Jump(c)) => c.clone(),
            v => panic!("{v:?}"),
        },
        _ => unreachable!(),
    };
    let chain = index_of(
        &ops,
        |op| matches!(op, Op::AddChain { name, .. } if *name == class),
    );
    let ports = index_of(
        &ops,
        |op| matches!(op, Op::AddElements { set, .. } if *set == format!("{class}_ports")),
    );
    let known = index_of(&ops, adds_to("known4", "10.0.1.13"));
    assert!(
        chain < ports && ports < isolated && isolated < known,
        "{ops:#?}"
    );
}

#[test]
fn a_removed_pod_falls_back_to_default_deny_before_isolation_goes() {
    let w = small_world();
    let mut w2 = w.clone();
    w2.endpoints.retain(|e| e.name != "web");
    let o = PlanOptions::new("a");
    let (old, new) = (plan::compile(&w, &o), plan::compile(&w2, &o));
    let ops = check_diff(&old, &new, "removed pod");
    let known = index_of(&ops, deletes_from("known4", "10.0.1.10"));
    let isolation = index_of(&ops, deletes_from("in4", "10.0.1.10"));
    let peer = index_of(&ops, |op| match op {
        Op::DeleteElements { set, elements } => {
            set.starts_with("pp_") && elements.contains(&plan::Elem::addr(ip("10.0.1.10")))
        }
        _ => false,
    });
    assert!(known < isolation && isolation < peer, "{ops:#?}");
    // The removed pod's class had only it: its chain goes, after the map entry.
    let class_gone = ops
        .iter()
        .position(|op| matches!(op, Op::DeleteChain { name } if name.starts_with("ci_")));
    if let Some(c) = class_gone {
        assert!(c > isolation);
    }
}

/// 1,000 pods on two nodes, 5 namespaces, 10 apps, 11 policies.
fn big_world() -> World {
    let nodes = vec![
        Node {
            name: "a".into(),
            addresses: vec![ip("192.168.0.1")],
            pod_cidrs: vec!["10.1.0.0/16".parse().unwrap()],
        },
        Node {
            name: "b".into(),
            addresses: vec![ip("192.168.0.2")],
            pod_cidrs: vec!["10.2.0.0/16".parse().unwrap()],
        },
    ];
    let mut r = Rng::new(42);
    let endpoints: Vec<Endpoint> = (0..1000u32)
        .map(|i| {
            let (node, net) = if i % 2 == 0 { ("a", 1) } else { ("b", 2) };
            let host = i / 2 + 2;
            let addr = format!("10.{net}.{}.{}", host / 256, host % 256);
            pod(
                &format!("n{}", r.below(5)),
                &format!("p{i}"),
                node,
                &[&addr],
                &format!("app=a{},tier=t{}", r.below(10), r.below(3)),
            )
        })
        .collect();
    let mut yaml = String::new();
    for k in 0..10 {
        yaml.push_str(&format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p{k}, namespace: n{}}}\nspec:\n  podSelector: {{matchLabels: {{app: a{k}}}}}\n  ingress:\n  - from: [{{podSelector: {{matchLabels: {{app: a{}}}}}}}, {{podSelector: {{matchLabels: {{app: a{}}}}}}}]\n    ports: [{{port: {}}}]\n  egress:\n  - to: [{{namespaceSelector: {{}}, podSelector: {{matchLabels: {{tier: t{}}}}}}}]\n    ports: [{{port: 443}}, {{protocol: UDP, port: 53}}]\n",
            k % 5,
            (k + 5) % 10,
            k,
            8000 + k,
            k % 3
        ));
    }
    yaml.push_str("---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: n0}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress, Egress]\n");
    World {
        namespaces: (0..5).map(|i| namespace(&format!("n{i}"), "")).collect(),
        nodes,
        endpoints,
        policies: policies(&yaml),
    }
}

#[test]
fn small_causes_give_small_diffs_among_1000_pods() {
    let w = big_world();
    let o = PlanOptions::new("a");
    let t = Instant::now();
    let old = plan::compile(&w, &o);
    let compile_time = t.elapsed();
    let weight = |ops: &[Op]| ops.iter().map(Op::weight).sum::<usize>();
    let no_objects = |ops: &[Op]| {
        !ops.iter().any(|op| {
            matches!(
                op,
                Op::AddChain { .. }
                    | Op::DeleteChain { .. }
                    | Op::AddSet { .. }
                    | Op::DeleteSet { .. }
                    | Op::ReplaceChain { .. }
            )
        })
    };

    // Local pods that share a namespace: relabel one into the labels of another, which is
    // isolated (so the class exists and only elements move).
    let local: Vec<&Endpoint> = w.endpoints.iter().filter(|e| e.node == "a").collect();
    let selected = |e: &Endpoint| {
        w.policies
            .iter()
            .filter(|p| p.name != "deny" && p.selects(e))
            .count()
    };
    let (x, y) = local
        .iter()
        .flat_map(|x| local.iter().map(move |y| (*x, *y)))
        .find(|(x, y)| {
            x.namespace == y.namespace && x.labels != y.labels && selected(y) > 0 && selected(x) > 0
        })
        .expect("a relabel pair");
    let mut w2 = w.clone();
    let e = w2.endpoints.iter_mut().find(|e| e.name == x.name).unwrap();
    e.labels = y.labels.clone();
    let new = plan::compile(&w2, &o);
    let ops = check_diff(&old, &new, "relabel");
    let mut weights = vec![("relabel", weight(&ops))];
    assert!(
        weight(&ops) <= 16 && no_objects(&ops),
        "weight {}: {ops:#?}",
        weight(&ops)
    );

    // A pod added to an existing class, and one removed from a class that keeps members.
    let mut w3 = w.clone();
    let mut twin = y.clone();
    twin.name = "new".into();
    twin.addresses = vec![ip("10.1.9.9")];
    w3.endpoints.push(twin);
    let ops = check_diff(&old, &plan::compile(&w3, &o), "add pod");
    weights.push(("add pod", weight(&ops)));
    assert!(
        weight(&ops) <= 16 && no_objects(&ops),
        "weight {}: {ops:#?}",
        weight(&ops)
    );
    let mut w4 = w.clone();
    w4.endpoints.retain(|e| e.name != x.name);
    let ops = check_diff(&old, &plan::compile(&w4, &o), "remove pod");
    weights.push(("remove pod", weight(&ops)));
    assert!(weight(&ops) <= 16, "weight {}: {ops:#?}", weight(&ops));

    // A policy edit (one port moved to a port nothing else covers): atoms are named after
    // the peer sets they read, so the new region jumps to an atom reading just that rule's
    // peer sets (shared, already there) and the old region's atom may go — in the classes
    // of that policy only.
    let mut w5 = w.clone();
    let p = w5
        .policies
        .iter_mut()
        .find(|p| p.name != "deny" && p.selects(y))
        .unwrap();
    p.spec.ingress[0].ports[0].port = Some(weft_policy::PortRef::Number(9003));
    let edited = p.reference();
    let peers = w
        .endpoints
        .iter()
        .filter(|e| {
            p.spec.ingress[0].peers.iter().any(|peer| match peer {
                weft_policy::PolicyPeer::Pods { pod_selector, .. } => {
                    e.namespace == p.namespace
                        && pod_selector.as_ref().is_none_or(|s| s.matches(&e.labels))
                }
                _ => false,
            })
        })
        .count();
    let new5 = plan::compile(&w5, &o);
    let ops = check_diff(&old, &new5, "edit port");
    weights.push(("edit port", weight(&ops)));
    let classes: Vec<&String> = new5
        .classes
        .iter()
        .filter(|(_, c)| c.policies.contains(&edited))
        .map(|(n, _)| n)
        .collect();
    assert!(
        weight(&ops) <= classes.len() * (peers + 12),
        "weight {} for {} class(es) and {peers} peers: {ops:#?}",
        weight(&ops),
        classes.len()
    );

    eprintln!("compile of 1000 pods / 11 policies: {compile_time:?}; diff weights {weights:?}");
}

#[test]
fn plans_round_trip_through_json() {
    // The agent persists the plan it applied and reads it back after a restart.
    for seed in 0..20u64 {
        let mut r = Rng::new(seed);
        let w = random_world(&mut r);
        let p = plan::compile(&w, &PlanOptions::new("n1"));
        let text = serde_json::to_string(&p).expect("a plan serializes");
        let back: Plan = serde_json::from_str(&text).expect("and reads back");
        assert_eq!(back, p, "seed {seed}");
    }
}

#[test]
fn the_first_build_renders_as_the_diff_from_nothing() {
    // `render` streams the plan in pieces (the agent pipes them to `nft`) instead of
    // rendering the ops of a diff from an empty plan; the text must be the same, in the
    // diff's safe order, with sets of more than one command's worth of elements too.
    let check = |p: &Plan, what: &str| {
        let via_diff = plan::render_ops(&p.table, &plan::diff(&Plan::empty(&p.table), p));
        assert_eq!(plan::render(p), via_diff, "{what}");
        assert!(
            plan::render_pieces(p).all(|piece| piece.ends_with('\n') && !piece.is_empty()),
            "{what}: a piece is not whole lines"
        );
    };
    for seed in 0..60u64 {
        let w = random_world(&mut Rng::new(seed));
        for node in ["a", "b"] {
            check(
                &plan::compile(&w, &PlanOptions::new(node)),
                &format!("seed {seed} on {node}"),
            );
        }
    }
    let mut big = plan::compile(&big_world(), &PlanOptions::new("a"));
    // And a set of more than two commands' worth of elements (512 each).
    let mut many = plan::Set::new(plan::KeyType::Ipv4, false, false, plan::Role::Peers);
    for i in 0..1300u32 {
        let a = std::net::Ipv4Addr::from(0x0a63_0000 + i);
        many.elements.insert(plan::Elem::addr(a.into()), None);
    }
    big.sets.insert("many".into(), many);
    check(&big, "big world");
}

fn overlap(a: &plan::Elem, b: &plan::Elem) -> bool {
    use plan::Elem::{V4, V6};
    match (a, b) {
        (V4(a, b), V4(c, d)) => a <= d && c <= b,
        (V6(a, b), V6(c, d)) => a <= d && c <= b,
        _ => false,
    }
}

/// `plan` as an agent from before 2026-12-07 built it: every atom with sets of its own
/// (`<atom>_a4`…, the union of what it reads) and a name of its own kind, no shared peer
/// sets. What a restarted agent may restore from its plan file.
fn with_atoms_of_their_own(plan: &Plan) -> Plan {
    let mut old = plan.clone();
    let atoms: Vec<String> = plan
        .chains
        .keys()
        .filter(|n| n.starts_with("ai_") || n.starts_with("ae_"))
        .cloned()
        .collect();
    let mut renamed = BTreeMap::new();
    for (i, a) in atoms.iter().enumerate() {
        let name = format!("{}{:016x}", &a[..3], 0xfeed_0000_u64 + i as u64);
        let chain = old.chains.remove(a).expect("atom");
        let mut rules = Vec::new();
        for v6 in [false, true] {
            let mut set = plan::Set::new(
                if v6 {
                    plan::KeyType::Ipv6
                } else {
                    plan::KeyType::Ipv4
                },
                true,
                false,
                plan::Role::Peers,
            );
            let mut field = None;
            for r in &chain.rules {
                if let plan::Rule::AddrIn {
                    v6: rv6,
                    field: f,
                    set: s,
                    ..
                } = r
                    && *rv6 == v6
                {
                    field = Some(*f);
                    // Interval elements of different peer sets may overlap: keep the
                    // first (the old plan need not be exact, only well formed).
                    for (e, v) in &plan.sets[s].elements {
                        if !set.elements.keys().any(|k| overlap(k, e)) {
                            set.elements.insert(*e, v.clone());
                        }
                    }
                }
            }
            let Some(field) = field else { continue };
            let sname = format!("{name}_n{}", if v6 { 6 } else { 4 });
            rules.push(plan::Rule::AddrIn {
                v6,
                field,
                set: sname.clone(),
                verdict: plan::Verdict::Accept,
            });
            old.sets.insert(sname, set);
        }
        old.chains
            .insert(name.clone(), plan::Chain { hook: None, rules });
        renamed.insert(a.clone(), name);
    }
    old.sets
        .retain(|n, _| !n.starts_with("pp_") && !n.starts_with("pn_"));
    for s in old.sets.values_mut() {
        for v in s.elements.values_mut() {
            if let Some(plan::Verdict::Jump(t)) = v
                && let Some(n) = renamed.get(t)
            {
                *t = n.clone();
            }
        }
    }
    old
}

#[test]
fn a_restored_plan_of_atoms_with_their_own_sets_is_replaced_by_the_diff() {
    // A restart diffs the new plan against the restored one: the old atoms and their sets
    // go after the port maps stop jumping to them, the shared peer sets come first.
    let mut checked = 0;
    for seed in 0..40u64 {
        let mut r = Rng::new(seed);
        let w = random_world(&mut r);
        let new = plan::compile(&w, &PlanOptions::new("a"));
        let old = with_atoms_of_their_own(&new);
        if old == new {
            continue;
        }
        let back: Plan =
            serde_json::from_str(&serde_json::to_string(&old).expect("json")).expect("read");
        let ops = check_diff(&back, &new, &format!("seed {seed}"));
        assert!(
            ops.iter()
                .any(|op| matches!(op, Op::DeleteSet { name, .. } if name.contains("_n"))),
            "seed {seed}: old sets deleted"
        );
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} worlds with atoms");
}
