//! Block growth: with tiny blocks, a node with more pods than one block holds leases a
//! second block through weftd's socket (the IPAM plugin asks when its blocks are full); the
//! other nodes program it, and pods in both blocks reach pods elsewhere.

mod lab_support;

use std::time::Duration;

use ipnet::IpNet;
use lab_support::*;

#[test]
fn a_full_node_leases_a_second_block_that_peers_program() {
    require_cluster_binaries();
    let lab = Lab::new();
    // /29: pods .2–.6 (5); /125: pods ::2–::7 (6). Seven pods need a second block of each.
    lab.up_ok(&[
        "--nodes",
        "2",
        "--pods-per-node",
        "0",
        "--block-size-v4",
        "29",
        "--block-size-v6",
        "125",
    ]);
    let first = lab.view().blocks_of("n1");
    assert_eq!(first.len(), 2, "one block per family to start with");
    for k in 1..=7 {
        lab.ok(&["pod", "add"], &[&format!("g{k}"), "--node", "n1"]);
    }
    lab.ok(&["pod", "add"], &["far", "--node", "n2"]);

    let view = lab.view();
    let blocks = view.blocks_of("n1");
    assert_eq!(blocks.len(), 4, "two blocks per family: {view:#?}");
    assert!(first.iter().all(|b| blocks.contains(b)), "{view:#?}");
    let grown: Vec<IpNet> = blocks
        .iter()
        .filter(|b| !first.contains(b))
        .map(|b| b.parse().unwrap())
        .collect();
    assert_eq!(
        lab.conflist_blocks("n1"),
        blocks,
        "the conflist lists every block"
    );
    view.assert_single_owners();

    // Pods got addresses from both blocks of both families.
    let addrs: Vec<_> = lab
        .pod_addresses()
        .into_iter()
        .filter(|(_, node, _)| node == "n1")
        .collect();
    for b in &grown {
        assert!(
            addrs.iter().any(|(_, _, a)| b.contains(a)),
            "no pod in the new block {b}: {addrs:?}"
        );
    }
    for b in &first {
        let b: IpNet = b.parse().unwrap();
        assert!(addrs.iter().any(|(_, _, a)| b.contains(a)), "no pod in {b}");
    }
    for (pod, node, addr) in lab.pod_addresses() {
        assert_eq!(view.owner_of(addr), Some(node.as_str()), "{pod} {addr}");
    }

    // Leased by weftd when the plugin asked: its log says so.
    let log = std::fs::read_to_string(lab.state_dir().join("nodes/n1/weftd.log")).unwrap();
    for b in &grown {
        assert!(
            log.lines()
                .any(|l| l.contains("block leased") && l.contains(&b.to_string())),
            "{b} not leased by weftd:\n{log}"
        );
    }

    // n2 routes the new blocks to n1, and every pod reaches every pod.
    wait_for(
        Duration::from_secs(3),
        || view.check_routes(&lab, "n2").ok(),
        || view.check_routes(&lab, "n2").unwrap_err(),
    );
    let (ok, report) = lab.check_json();
    assert!(ok, "{report:#}");
    let far_cells = cells(&report)
        .into_iter()
        .filter(|c| c["section"] == "pod-pod" && c["ok"] == true)
        .filter(|c| c["from"] == "far" || c["to"] == "far")
        .count();
    // far ↔ 7 pods both ways, and itself: 15 pairs × 2 families × TCP/UDP.
    assert_eq!(far_cells, 15 * 2 * 2, "{report:#}");
}
