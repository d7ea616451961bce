//! Nodes joining and leaving a running cluster: how fast every peer programs a new node
//! (read back from the peers' kernels), how fast a killed node disappears after its lease
//! expires, that its blocks go to nobody before then and to new nodes only after every
//! never-used block, and that an agent down past its lease while its pods run gets its blocks
//! back with nobody else having taken them.

mod lab_support;

use std::time::{Duration, Instant};

use lab_support::*;

/// A join must be programmed on every node this soon after `lab node add` was started.
const JOIN_BOUND: Duration = Duration::from_secs(3);

fn join(backend: &str) {
    require_cluster_binaries();
    let lab = Lab::new();
    lab.up_ok(&["--nodes", "3", "--pods-per-node", "1", "--backend", backend]);
    let old = lab.node_names();

    let started = Instant::now();
    lab.ok(&["node", "add"], &[]);
    let added = started.elapsed();
    let view = lab.view();
    let new_blocks = view.blocks_of("n4");
    assert_eq!(new_blocks.len(), 2, "one block per family: {view:#?}");
    let everyone: Vec<String> = old.iter().cloned().chain(["n4".to_owned()]).collect();
    let (_, waited) = wait_for(
        JOIN_BOUND.saturating_sub(added),
        || {
            everyone
                .iter()
                .all(|n| view.check_routes(&lab, n).is_ok())
                .then_some(())
        },
        || {
            everyone
                .iter()
                .filter_map(|n| view.check_routes(&lab, n).err())
                .collect::<Vec<_>>()
                .join("\n")
        },
    );
    let total = added + waited;
    eprintln!(
        "{backend}: join programmed on all {} old nodes {:.0} ms after `node add` started \
         ({:.0} ms until it returned, {:.0} ms after)",
        old.len(),
        total.as_secs_f64() * 1e3,
        added.as_secs_f64() * 1e3,
        waited.as_secs_f64() * 1e3
    );
    assert!(total < JOIN_BOUND, "join took {total:?}");

    // The new node's pods reach every pod and every pod reaches them.
    lab.ok(&["pod", "add"], &["late", "--node", "n4"]);
    let (ok, report) = lab.check_json();
    assert!(ok, "{report:#}");
    let late_cells = cells(&report)
        .into_iter()
        .filter(|c| c["section"] == "pod-pod" && (c["from"] == "late" || c["to"] == "late"))
        .count();
    // late ↔ 3 others both ways, and to itself: 7 pairs × 2 families × TCP/UDP.
    assert_eq!(late_cells, 7 * 2 * 2, "{report:#}");
}

#[test]
fn join_vxlan_programmed_everywhere_within_bound() {
    join("vxlan");
}

#[test]
fn join_host_gw_programmed_everywhere_within_bound() {
    join("host-gw");
}

/// How long after its lease would allow it a dead node may still be programmed anywhere.
const LEAVE_SLACK: Duration = Duration::from_secs(3);
const LEASE_TTL: u64 = 3;

fn leave(backend: &str) {
    require_cluster_binaries();
    let lab = Lab::new();
    let ttl = LEASE_TTL.to_string();
    lab.up_ok(&[
        "--nodes",
        "3",
        "--pods-per-node",
        "1",
        "--lease-ttl",
        &ttl,
        "--backend",
        backend,
    ]);
    let before = lab.view();
    let dead_rec = before.records["n3"].clone();
    let dead_blocks = before.blocks_of("n3");
    let dead_lease = before.owners[&dead_blocks[0]].lease;
    assert_eq!(dead_blocks.len(), 2, "{before:#?}");
    for n in ["n1", "n2"] {
        assert!(
            !lab.kernel(n).mentions(&dead_rec).is_empty(),
            "{n} knows n3 first"
        );
    }

    let out = lab.ok(&["node", "del"], &["n3"]);
    let killed = Instant::now();
    assert!(out.contains("weftd killed with SIGKILL"), "{out}");

    // While its lease lives, its blocks are its own: a node joining now gets others.
    lab.ok(&["node", "add"], &[]);
    let during = lab.view();
    for b in &dead_blocks {
        assert_eq!(
            during.owners.get(b).map(|o| (o.node.as_str(), o.lease)),
            Some(("n3", dead_lease)),
            "{b} while n3's lease lives: {during:#?}"
        );
    }
    let n4_blocks = during.blocks_of("n4");
    assert_eq!(n4_blocks.len(), 2, "{during:#?}");
    assert!(
        n4_blocks.iter().all(|b| !dead_blocks.contains(b)),
        "n4 got {n4_blocks:?} while n3 still held {dead_blocks:?}"
    );
    during.assert_single_owners();

    // Then the lease expires: the keys go, and every peer forgets n3 (routes, FDB, neigh).
    let remaining = ["n1", "n2", "n4"];
    let bound = Duration::from_secs(LEASE_TTL) + LEAVE_SLACK;
    wait_for(
        bound.saturating_sub(killed.elapsed()),
        || {
            let keys_gone = lab.block_owners().values().all(|o| o.node != "n3");
            let forgotten = remaining
                .iter()
                .all(|n| lab.kernel(n).mentions(&dead_rec).is_empty());
            (keys_gone && forgotten).then_some(())
        },
        || {
            let left: Vec<String> = remaining
                .iter()
                .map(|n| format!("{n}: {:?}", lab.kernel(n).mentions(&dead_rec)))
                .collect();
            format!("n3 still in {left:?}; keys {:?}", lab.block_owners())
        },
    );
    let gone_after = killed.elapsed();
    eprintln!(
        "{backend} leave: n3 gone from every peer and from etcd {:.0} ms after its weftd was killed \
         (lease TTL {LEASE_TTL} s)",
        gone_after.as_secs_f64() * 1e3
    );
    assert!(gone_after < bound, "{gone_after:?}");
    assert!(!lab.node_records().contains_key("n3"));
    for n in remaining {
        let k = lab.kernel(n);
        for b in &dead_blocks {
            assert!(
                k.routes.iter().all(|r| &r.dst != b),
                "{n} still routes {b}: {k:?}"
            );
        }
        lab.routes_follow_owners(n).unwrap();
    }

    // Now the blocks are free (no key names them), but a block freed by an expired lease
    // goes back into circulation last — its owner might only have been cut off — so the
    // next node takes never-used blocks (the store's tests cover the reuse order).
    lab.ok(&["node", "add"], &[]);
    let after = lab.view();
    let n5_blocks = after.blocks_of("n5");
    assert_eq!(n5_blocks.len(), 2, "{after:#?}");
    assert!(
        n5_blocks.iter().all(|b| !dead_blocks.contains(b)),
        "n5 got {n5_blocks:?}, freed blocks {dead_blocks:?} should come last"
    );
    assert!(
        dead_blocks.iter().all(|b| !after.owners.contains_key(b)),
        "{after:#?}"
    );
    after.assert_single_owners();
    lab.ok(&["pod", "add"], &["reborn", "--node", "n5"]);
    let (ok, report) = lab.check_json();
    assert!(ok, "{report:#}");
}

#[test]
fn leave_vxlan_killed_node_vanishes_after_lease_and_blocks_wait_for_expiry() {
    leave("vxlan");
}

#[test]
fn leave_host_gw_killed_node_vanishes_after_lease_and_blocks_wait_for_expiry() {
    leave("host-gw");
}

/// weftd stopped longer than its lease while its pods keep running (the case a partitioned
/// node looks like): its block keys expire, but a node joining meanwhile takes never-used
/// blocks, so no address of the still-running pods is handed out again; the restarted agent
/// adopts its old blocks and everything reaches everything.
#[test]
fn agent_down_past_its_lease_gets_its_blocks_back_untaken() {
    require_cluster_binaries();
    let lab = Lab::new();
    let ttl = LEASE_TTL.to_string();
    lab.up_ok(&["--nodes", "2", "--pods-per-node", "1", "--lease-ttl", &ttl]);
    let before = lab.view();
    let n1_blocks = before.blocks_of("n1");
    assert_eq!(n1_blocks.len(), 2, "{before:#?}");

    lab.ok(&["weftd", "stop"], &["n1", "--kill"]);
    let bound = Duration::from_secs(LEASE_TTL) + LEAVE_SLACK;
    wait_for(
        bound,
        || {
            lab.block_owners()
                .values()
                .all(|o| o.node != "n1")
                .then_some(())
        },
        || format!("n1's keys still there: {:?}", lab.block_owners()),
    );

    lab.ok(&["node", "add"], &[]);
    let during = lab.view();
    let n3_blocks = during.blocks_of("n3");
    assert_eq!(n3_blocks.len(), 2, "{during:#?}");
    assert!(
        n3_blocks.iter().all(|b| !n1_blocks.contains(b)),
        "n3 got {n3_blocks:?}, the blocks n1's running pods use: {n1_blocks:?}"
    );

    lab.ok(&["weftd", "start"], &["n1"]);
    wait_for(
        Duration::from_secs(10),
        || {
            let mut now = lab.view().blocks_of("n1");
            now.sort();
            let mut want = n1_blocks.clone();
            want.sort();
            (now == want).then_some(())
        },
        || format!("n1 owns {:?}", lab.view().blocks_of("n1")),
    );
    lab.view().assert_single_owners();
    lab.ok(&["pod", "add"], &["late", "--node", "n3"]);
    let (ok, report) = lab.check_json();
    assert!(ok, "{report:#}");
}
