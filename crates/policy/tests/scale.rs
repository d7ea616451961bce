//! Compile/diff/render times at benchmark scale (1,000 pods; 100, 1,000, 10,000 rules).
//! Ignored by default; run with `cargo test --release -p weft-policy --test scale -- --ignored --nocapture`.

use std::time::Instant;

use weft_policy::plan::{self, PlanOptions};
use weft_policy::testing::*;
use weft_policy::{Endpoint, Node, World};

fn world(rules: usize) -> World {
    let mut r = Rng::new(1);
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
    let endpoints: Vec<Endpoint> = (0..1000u32)
        .map(|i| {
            let (node, net) = if i % 2 == 0 { ("a", 1) } else { ("b", 2) };
            let host = i / 2 + 2;
            pod(
                &format!("n{}", r.below(10)),
                &format!("p{i}"),
                node,
                &[&format!("10.{net}.{}.{}", host / 256, host % 256)],
                &format!("app=a{},tier=t{}", r.below(50), r.below(5)),
            )
        })
        .collect();
    // Policies of 10 rules each, selecting one app in one namespace, allowing another app's
    // pods and a CIDR on a port each.
    let mut yaml = String::new();
    for k in 0..rules / 10 {
        yaml.push_str(&format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: p{k}, namespace: n{}}}\nspec:\n  podSelector: {{matchLabels: {{app: a{}}}}}\n  ingress:\n",
            k % 10,
            k % 50
        ));
        for j in 0..10 {
            yaml.push_str(&format!(
                "  - from: [{{namespaceSelector: {{}}, podSelector: {{matchLabels: {{app: a{}}}}}}}, {{ipBlock: {{cidr: 172.{}.{}.0/24}}}}]\n    ports: [{{port: {}}}]\n",
                (k + j) % 50,
                16 + j,
                k % 256,
                1000 + (k * 10 + j) % 5000
            ));
        }
    }
    World {
        namespaces: vec![],
        nodes,
        endpoints,
        policies: policies(&yaml),
    }
}

#[test]
#[ignore]
fn scale() {
    for rules in [100, 1000, 10_000] {
        let w = world(rules);
        let o = PlanOptions::new("a");
        let t = Instant::now();
        let p = plan::compile(&w, &o);
        let compile = t.elapsed();
        let t = Instant::now();
        let text = plan::render(&p);
        let render = t.elapsed();
        let elements: usize = p.sets.values().map(|s| s.elements.len()).sum();
        let mut w2 = w.clone();
        let e = w2.endpoints.iter_mut().find(|e| e.node == "a").unwrap();
        e.labels.insert("app".into(), "a7".into());
        let t = Instant::now();
        let p2 = plan::compile(&w2, &o);
        let ops = plan::diff(&p, &p2);
        let change = t.elapsed();
        let mut c = plan::Compiler::new(w.clone(), o.clone());
        let e2 = w2.endpoints.iter().find(|e| e.node == "a").unwrap().clone();
        let t = Instant::now();
        c.upsert_endpoint(e2);
        let inc_ops = c.take_ops();
        let incremental = t.elapsed();
        assert_eq!(c.plan(), &p2);
        // Flip the label back and forth: the best of 20 says what the work costs.
        let mut best = std::time::Duration::MAX;
        for i in 0..20 {
            let mut e = c
                .world()
                .endpoints
                .iter()
                .find(|e| e.node == "a")
                .unwrap()
                .clone();
            e.labels.insert("app".into(), format!("a{}", 7 + i % 2));
            let t = Instant::now();
            c.upsert_endpoint(e);
            let _ = c.take_ops();
            best = best.min(t.elapsed());
        }
        eprintln!("{rules} rules: best incremental relabel {best:?}");
        let t = Instant::now();
        let lin = plan::render(&plan::compile_linear(&w, &o));
        let linear = t.elapsed();
        eprintln!(
            "{rules} rules: compile {compile:?}, render {render:?} ({} KiB, {} chains, {} sets, {elements} elements); one relabel: recompile+diff {change:?}, {} ops / {} elements, incremental {incremental:?} ({} ops); linear compile+render {linear:?} ({} rules)",
            text.len() / 1024,
            p.chains.len(),
            p.sets.len(),
            ops.len(),
            ops.iter().map(plan::Op::weight).sum::<usize>(),
            inc_ops.len(),
            lin.lines().filter(|l| l.starts_with("add rule")).count(),
        );
    }
}
