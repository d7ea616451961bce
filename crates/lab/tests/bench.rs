//! Smoke tests of `weftctl bench agent`, `weftctl bench dataplane` and `weftctl bench
//! policy` at a tiny size: they run to the end with the real weftd, etcd, plugin, nft,
//! iperf3 and sockperf, print their tables and leave nothing behind. They judge nothing about speed (a debug build under `cargo
//! test` is no benchmark); docs/benchmarks.md has the figures. As root, with the workspace
//! built (weftd, weft and weft-ipam next to weftctl).

mod lab_support;

use std::process::{Child, Command, Output, Stdio};

use lab_support::*;

fn run(args: &[&str]) -> (u32, Output) {
    let child: Child = Command::new(weftctl_bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run weftctl: {e}"));
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    (pid, out)
}

/// What a run with process id `pid` left: namespaces `wtb<pid>…`, its labs, its temp dirs.
fn bench_leftovers(pid: u32) -> Vec<String> {
    let prefix = format!("wtb{pid}");
    let mut left: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                // `wtb<pid>n…`, and the labs' `wlwtb<pid>h-…`
                .filter(|n| {
                    n.starts_with(&format!("{prefix}n")) || n.starts_with(&format!("wl{prefix}"))
                })
                .map(|n| format!("netns {n}"))
                .collect()
        })
        .unwrap_or_default();
    for lab in ["h", "v"] {
        left.extend(leftovers(&format!("{prefix}{lab}")));
    }
    for base in [std::env::temp_dir(), "/dev/shm".into()] {
        let dir = base.join(format!("weftctl-bench-{pid}"));
        if dir.exists() {
            left.push(format!("dir {}", dir.display()));
        }
    }
    left
}

/// Smoke test: 50 synthetic peers, 3 joins; the table and the verdicts are printed.
#[test]
fn smoke_bench_agent_at_50_peers() {
    require_cluster_binaries();
    let (pid, out) = run(&["bench", "agent", "--peers", "50", "--joins", "3"]);
    assert!(out.status.success(), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    for row in [
        "kernel entries (routes/fdb/neigh)",
        "50/50/50",
        "START -> ALL PROGRAMMED",
        "JOIN write -> route p99",
        "RSS programmed",
        "FLUSH + REBUILD",
        "(none lost)",
        "join programmed after write",
        "n/a (run with --peers 5000)",
    ] {
        assert!(table.contains(row), "no {row:?} in:\n{table}");
    }
    // 53 peers (50 + 3 joins) × route, FDB entry, neighbour entry.
    assert!(table.contains("159"), "rebuilt entries:\n{table}");
    let left = bench_leftovers(pid);
    assert!(left.is_empty(), "bench agent left: {left:?}");
}

/// Smoke test: one round of 1 s per path; every path has a figure and every target a verdict.
#[test]
fn smoke_bench_dataplane_one_second() {
    require_cluster_binaries();
    let (pid, out) = run(&["bench", "dataplane", "--seconds", "1", "--rounds", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    for row in [
        "raw veth (baseline)",
        "same node (bridge)",
        "cross-node host-gw",
        "cross-node VXLAN",
        "hand-built VXLAN (baseline)",
        "lab underlay n1->n2 (info)",
        "kernel VXLAN, lab underlay (info)",
        "weft.vx n1->n2 (info)",
        "VXLAN throughput / hand-built VXLAN",
        "VXLAN / kernel VXLAN on lab underlay",
        "host-gw / lab underlay",
        "VXLAN request/response / raw veth",
    ] {
        let line = table
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no {row:?} in:\n{table}"));
        // A path row's first figure (Gbit/s) or a target's value is a positive number.
        let value: f64 = line[row.len()..]
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no figure in {line:?}"));
        assert!(value > 0.0, "{line}");
    }
    let left = bench_leftovers(pid);
    assert!(left.is_empty(), "bench dataplane left: {left:?}");
}

/// Smoke test: 20 and 40 rules, one round of 1 s, two changes of each kind: every variant
/// has its figures, the policy blocked the denied probe in every policed variant, and every
/// target has a verdict. (Needs only weftctl, nft, iperf3 and sockperf.)
#[test]
fn smoke_bench_policy_tiny() {
    let (pid, out) = run(&[
        "bench",
        "policy",
        "--rules",
        "20,40",
        "--seconds",
        "1",
        "--rounds",
        "1",
        "--changes",
        "2",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    let section = |title: &str| -> Vec<&str> {
        table
            .split("\n\n")
            .find(|s| s.starts_with(title))
            .unwrap_or_else(|| panic!("no section {title:?} in:\n{table}"))
            .lines()
            .collect()
    };
    // Full apply: four policed variants, each with a positive total.
    let apply = section("full apply from scratch");
    for v in [
        "weft, 20 rules",
        "weft, 40 rules",
        "linear, 20 rules",
        "linear, 40 rules",
    ] {
        let line = apply
            .iter()
            .find(|l| l.starts_with(v))
            .unwrap_or_else(|| panic!("no apply row {v:?} in:\n{table}"));
        let total: f64 = line
            .split_whitespace()
            .rev()
            .nth(2)
            .and_then(|x| x.parse().ok())
            .unwrap_or_else(|| panic!("no total in {line:?}"));
        assert!(total > 0.0, "{line}");
    }
    // One change: both kinds at both sizes, two samples each.
    let changes = section("one change on the applied weft table");
    for (rules, kind) in [
        ("20", "relabel pod"),
        ("20", "edit policy"),
        ("40", "relabel pod"),
        ("40", "edit policy"),
    ] {
        assert!(
            changes.iter().any(|l| l.starts_with(rules)
                && l.contains(kind)
                && l.split_whitespace().nth(3) == Some("2")),
            "no {rules} {kind} row with 2 samples in:\n{table}"
        );
    }
    // Per packet: figures for every variant; the denied probe open only without policy.
    let packets = section("per packet");
    for (v, denied) in [
        ("no policy", "open"),
        ("weft, 20 rules", "blocked"),
        ("weft, 40 rules", "blocked"),
        ("linear, 20 rules", "blocked"),
        ("linear, 40 rules", "blocked"),
    ] {
        let line = packets
            .iter()
            .find(|l| l.starts_with(v))
            .unwrap_or_else(|| panic!("no per-packet row {v:?} in:\n{table}"));
        assert!(line.trim_end().ends_with(denied), "{line}");
        let gbits: f64 = line[v.len()..]
            .split_whitespace()
            .nth(1)
            .and_then(|x| x.parse().ok())
            .unwrap_or_else(|| panic!("no Gbit/s in {line:?}"));
        assert!(gbits > 0.0, "{line}");
    }
    for t in [
        "one change at 40 rules, relabel pod",
        "one change at 40 rules, edit policy",
        "throughput with 40 rules / no policy (weft)",
        "full apply of 40 rules",
    ] {
        let line = table
            .lines()
            .find(|l| l.starts_with(t))
            .unwrap_or_else(|| panic!("no target {t:?} in:\n{table}"));
        assert!(line.ends_with("PASS") || line.ends_with("FAIL"), "{line}");
    }
    let left = bench_leftovers(pid);
    assert!(left.is_empty(), "bench policy left: {left:?}");
}

/// Smoke test of `weftctl bench scale` on both datastores at a tiny size: 20 nodes, 100
/// pods (5 on the agent's node), 10 policies, 3 writes of each kind. Every figure must be a
/// real measurement (non-zero) and every count the world's. Needs the Kubernetes binaries
/// (`WEFT_KUBE_BIN`, which scripts/test.sh exports, or the cache).
#[test]
fn smoke_bench_scale_both_datastores() {
    require_cluster_binaries();
    let (pid, out) = run(&[
        "bench",
        "scale",
        "--nodes",
        "20",
        "--pods",
        "100",
        "--policies",
        "10",
        "--namespaces",
        "3",
        "--local-pods",
        "5",
        "--writes",
        "3",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out)));
    assert_eq!(report["world"]["nodes"], 20);
    assert_eq!(report["world"]["localPods"], 5);
    let sides = report["datastores"].as_array().expect("datastores");
    let names: Vec<&str> = sides
        .iter()
        .filter_map(|s| s["datastore"].as_str())
        .collect();
    assert_eq!(names, ["etcd", "kubernetes"], "{report:#}");
    let positive = |v: &serde_json::Value, what: &str| {
        let x = v
            .as_f64()
            .unwrap_or_else(|| panic!("{what} missing: {report:#}"));
        assert!(x > 0.0, "{what} is {x}: {report:#}");
    };
    for s in sides {
        let ds = s["datastore"].as_str().unwrap_or_default();
        // 19 peers: a route, an FDB entry and a neighbour each (VXLAN).
        assert_eq!(s["kernel"]["routes"], 19, "{ds}");
        assert_eq!(s["kernel"]["fdb"], 19, "{ds}");
        assert_eq!(s["kernel"]["neigh"], 19, "{ds}");
        assert_eq!(s["policy"]["policies"], 10, "{ds}");
        assert_eq!(s["policy"]["endpoints"], 5, "{ds}");
        for k in ["classes", "chains", "rules", "elements"] {
            positive(&s["policy"][k], &format!("{ds} policy {k}"));
        }
        for k in ["fullMs", "routesMs", "policyMs"] {
            positive(&s["sync"][k], &format!("{ds} sync {k}"));
        }
        let full = s["sync"]["fullMs"].as_f64().unwrap_or_default();
        assert!(full >= s["sync"]["routesMs"].as_f64().unwrap_or_default());
        assert!(full >= s["sync"]["policyMs"].as_f64().unwrap_or_default());
        for w in ["podWrites", "policyWrites"] {
            assert_eq!(s[w]["toKernel"]["n"], 3, "{ds} {w}");
            for k in ["p50_ms", "p99_ms"] {
                positive(&s[w]["toKernel"][k], &format!("{ds} {w} {k}"));
                positive(&s[w]["ack"][k], &format!("{ds} {w} ack {k}"));
            }
        }
        positive(&s["hwmEndMib"], &format!("{ds} VmHWM"));
        positive(&s["setupMs"], &format!("{ds} setup"));
        let targets = s["targets"].as_array().expect("targets");
        assert_eq!(targets.len(), 4, "{ds}");
        assert!(targets.iter().all(|t| t["pass"].is_boolean()), "{ds}");
    }
    assert!(
        sides[1]["apiserverRssMib"]
            .as_f64()
            .is_some_and(|m| m > 0.0)
    );
    let left = bench_leftovers(pid);
    assert!(left.is_empty(), "bench scale left: {left:?}");
}

/// Smoke test of `weftctl bench podstart` at a tiny size: 4 pods, one round per variant,
/// on a real 2-node kubelet lab. Every pod of both variants is timed (its start and its
/// ADD, which the shim saw), the ratios are real numbers, and the run's lab is gone at the
/// end. Needs the Kubernetes binaries and the lab's image archives.
#[test]
fn smoke_bench_podstart_both_variants() {
    require_cluster_binaries();
    let images = lab_support::kube::lab_images();
    let images = images.display().to_string();
    let (pid, out) = run(&[
        "bench", "podstart", "--pods", "4", "--rounds", "1", "--images", &images, "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out)));
    let variants = report["variants"].as_array().expect("variants");
    let names: Vec<&str> = variants
        .iter()
        .filter_map(|v| v["variant"].as_str())
        .collect();
    assert_eq!(names, ["weft", "reference"], "{report:#}");
    for v in variants {
        assert_eq!(v["start"]["n"], 4, "{report:#}");
        assert!(
            v["cni_add"]["n"].as_u64().is_some_and(|n| n >= 4),
            "{report:#}"
        );
        assert!(v["start"]["p50_ms"].as_f64().is_some_and(|x| x > 0.0));
        // The ADD is a part of the pod's start.
        assert!(v["cni_add"]["p50_ms"].as_f64() < v["start"]["p50_ms"].as_f64());
    }
    assert!(report["p99_ratio"].as_f64().is_some_and(|r| r > 0.0));
    let left = leftovers(&format!("bps{pid}"));
    assert!(left.is_empty(), "bench podstart left: {left:?}");
}
