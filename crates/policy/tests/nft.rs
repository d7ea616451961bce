//! The rendered text against the real `nft` (nftables 1.0.6 here), inside a private network
//! namespace per test (`unshare -n`: it vanishes with the process, nothing on the host is
//! touched): `nft -c` accepts every plan, and applying a diff op by op on top of a plan gives
//! exactly what applying the new plan from scratch gives.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;
use weft_policy::plan::{self, Plan, PlanOptions};
use weft_policy::testing::*;

/// A scratch directory removed on drop (also when the test fails).
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "weft-policy-nft-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    fn file(&self, name: &str, text: &str) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a shell script in a fresh network namespace; returns stdout, panics with stderr.
fn in_netns(script: &str) -> String {
    let out = Command::new("unshare")
        .args(["-n", "sh", "-ec", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "script failed: {}\n{}",
        script,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn check_mode(text: &str, what: &str) {
    let s = Scratch::new();
    let f = s.file("plan.nft", text);
    let out = Command::new("unshare")
        .args(["-n", "nft", "-c", "-f", &f])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nft -c refused {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `nft -j list table` in a comparable form: handles dropped, set elements sorted, rules in
/// chain order.
fn normalize(json: &str) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("handle");
                for x in m.values_mut() {
                    strip(x);
                }
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v: Value = serde_json::from_str(json).unwrap();
    strip(&mut v);
    let mut objects = Vec::new();
    for item in v["nftables"].as_array().cloned().unwrap_or_default() {
        if item.get("metainfo").is_some() {
            continue;
        }
        let mut item = item;
        for kind in ["set", "map"] {
            if let Some(elem) = item.get_mut(kind).and_then(|s| s.get_mut("elem")) {
                let mut e: Vec<String> = elem
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.to_string())
                    .collect();
                e.sort();
                *elem = serde_json::json!(e);
            }
        }
        objects.push(item);
    }
    // Sets and chains in name order; rules keep their order within each chain.
    let key = |o: &Value| -> (u8, String) {
        for (i, k) in ["table", "set", "map", "chain", "rule"].iter().enumerate() {
            if let Some(x) = o.get(*k) {
                let name = x
                    .get("name")
                    .or(x.get("chain"))
                    .cloned()
                    .unwrap_or_default();
                return (i as u8, name.to_string());
            }
        }
        (9, String::new())
    };
    objects.sort_by_key(key);
    Value::Array(objects)
}

#[test]
fn nft_accepts_compiled_and_linear_plans() {
    weft_testkit::require_root!();
    for seed in [1u64, 2, 3, 4, 5, 6] {
        let w = random_world(&mut Rng::new(seed));
        for node in ["a", "b"] {
            let mut o = PlanOptions::new(node);
            o.log_per_second = Some(5);
            // Node b's plans carry the cut rule first in every base chain, and a union
            // atom for every port region.
            o.cut_established = node == "b";
            if node == "b" {
                o.union_above = 0;
            }
            let text = plan::render(&plan::compile(&w, &o));
            let bases = text.matches("type filter hook").count();
            let cut_rules = text
                .matches("ct mark & 0x00200000 == 0x00200000 drop")
                .count();
            assert_eq!(cut_rules, if o.cut_established { bases } else { 0 });
            check_mode(&text, &format!("seed {seed} plan"));
            check_mode(
                &plan::render(&plan::compile_linear(&w, &o)),
                &format!("seed {seed} linear"),
            );
        }
    }
}

#[test]
fn diffs_applied_op_by_op_in_the_kernel_equal_the_new_plan() {
    weft_testkit::require_root!();
    let mut compared = 0;
    for seed in 0..40u64 {
        let mut r = Rng::new(seed + 500);
        let w = random_world(&mut r);
        let m = *r.pick(ALL_MUTATIONS);
        let Some(w2) = mutate(&mut r, &w, m) else {
            continue;
        };
        let mut o = PlanOptions::new("a");
        // Every other world with a union atom per port region (their sets recut in place).
        if seed % 2 == 1 {
            o.union_above = 0;
        }
        let (old, new) = (plan::compile(&w, &o), plan::compile(&w2, &o));
        let ops = plan::diff(&old, &new);
        if ops.is_empty() {
            continue;
        }
        let s = Scratch::new();
        let old_f = s.file("old.nft", &plan::render(&old));
        let new_f = s.file("new.nft", &plan::render(&new));
        // Each op as its own transaction: every op must be valid where it stands.
        let mut steps = String::new();
        for (i, op) in ops.iter().enumerate() {
            let f = s.file(
                &format!("op{i}.nft"),
                &plan::render_ops(&o.table, std::slice::from_ref(op)),
            );
            steps.push_str(&format!("nft -f {f}\n"));
        }
        let list = format!("nft -j list table inet {}", o.table);
        let stepped = in_netns(&format!("nft -f {old_f}\n{steps}{list}\n"));
        let fresh = in_netns(&format!("nft -f {new_f}\n{list}\n"));
        assert_eq!(
            normalize(&stepped),
            normalize(&fresh),
            "seed {seed} {m:?}: kernel state after the diff differs from the new plan\n{}",
            plan::render_ops(&o.table, &ops)
        );
        compared += 1;
    }
    assert!(compared >= 10, "{compared}");
}

#[test]
fn the_whole_diff_is_one_transaction_too() {
    weft_testkit::require_root!();
    let mut r = Rng::new(77);
    let w = random_world(&mut r);
    let w2 = mutate(&mut r, &w, Mutation::AddPolicy).unwrap();
    let o = PlanOptions::new("b");
    let (old, new) = (plan::compile(&w, &o), plan::compile(&w2, &o));
    let s = Scratch::new();
    let old_f = s.file("old.nft", &plan::render(&old));
    let diff_f = s.file(
        "diff.nft",
        &plan::render_ops(&o.table, &plan::diff(&old, &new)),
    );
    let back_f = s.file(
        "back.nft",
        &plan::render_ops(&o.table, &plan::diff(&new, &old)),
    );
    let list = format!("nft -j list table inet {}", o.table);
    let there_and_back = in_netns(&format!(
        "nft -f {old_f}\nnft -f {diff_f}\nnft -f {back_f}\n{list}\n"
    ));
    let fresh = in_netns(&format!("nft -f {old_f}\n{list}\n"));
    assert_eq!(normalize(&there_and_back), normalize(&fresh));
}

#[test]
fn a_large_plan_loads() {
    weft_testkit::require_root!();
    // 600 pods, 60 policies: the plan is accepted and loads in one transaction.
    let mut r = Rng::new(9);
    let mut w = random_world(&mut r);
    w.endpoints = (0..600)
        .map(|i| {
            let mut e = random_pod(&mut r, i % 200);
            e.name = format!("big{i}");
            let net = if e.node == "a" { 1 } else { 2 };
            e.addresses = vec![ip(&format!("10.0.{net}.{}", i % 250 + 2))];
            if i >= 250 {
                e.addresses = vec![ip(&format!("fd00:{net}::{:x}", i))];
            }
            e
        })
        .collect();
    let mut yaml = String::new();
    for i in 0..60 {
        yaml.push_str(&random_policy_yaml(&mut r, &format!("p{i}")));
    }
    w.policies = policies(&yaml);
    let p: Plan = plan::compile(&w, &PlanOptions::new("a"));
    let s = Scratch::new();
    let f = s.file("big.nft", &plan::render(&p));
    in_netns(&format!(
        "nft -f {f}\nnft list table inet weft_policy >/dev/null\n"
    ));
}
