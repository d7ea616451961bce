//! Smoke tests of `weftctl bench agent` and `weftctl bench dataplane` at a tiny size: they
//! run to the end with the real weftd, etcd, plugin, iperf3 and sockperf, print their tables
//! and leave nothing behind. They judge nothing about speed (a debug build under `cargo
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
