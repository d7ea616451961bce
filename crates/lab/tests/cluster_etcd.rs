//! The control plane going away: etcd stopped (and a node's weftd with it) while pods keep
//! talking, pods started, checked and deleted meanwhile without waiting on anything; then
//! etcd back, and agents catching up on their own. And etcd down for longer than the lease
//! TTL: afterwards every block has the owner whose pods use it, every node routes to that
//! owner, and a block is only reused once its owner is proven gone.

mod lab_support;

use std::time::{Duration, Instant};

use lab_support::traffic::{assert_no_loss, flows_between};
use lab_support::*;

/// A plugin verb during an outage must not wait on the control plane: this is ample for
/// forking weftctl and the plugin, and far below any datastore or socket timeout.
const PLUGIN_BOUND: Duration = Duration::from_secs(2);
const JOIN_BOUND: Duration = Duration::from_secs(3);
const LEASE_TTL: u64 = 3;

/// `lab <sub> args` must succeed within `PLUGIN_BOUND`; returns how long it took.
fn quick(lab: &Lab, sub: &[&str], args: &[&str], when: &str) -> Duration {
    let start = Instant::now();
    lab.ok(sub, args);
    let took = start.elapsed();
    eprintln!(
        "{when}: {sub:?} {args:?} took {:.0} ms",
        took.as_secs_f64() * 1e3
    );
    assert!(
        took < PLUGIN_BOUND,
        "{when}: {sub:?} {args:?} took {took:?}"
    );
    took
}

/// Every old node programs a node added now, within `JOIN_BOUND`: their watches work.
fn join_is_programmed(lab: &Lab, old: &[String], new: &str) -> Duration {
    let started = Instant::now();
    lab.ok(&["node", "add"], &[new]);
    eprintln!(
        "`node add {new}` returned after {:.0} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    let view = lab.view();
    assert_eq!(view.blocks_of(new).len(), 2, "{view:#?}");
    wait_for(
        JOIN_BOUND.saturating_sub(started.elapsed()),
        || {
            old.iter()
                .all(|n| view.check_routes(lab, n).is_ok())
                .then_some(())
        },
        || {
            old.iter()
                .filter_map(|n| view.check_routes(lab, n).err())
                .collect::<Vec<_>>()
                .join("\n")
        },
    );
    started.elapsed()
}

#[test]
fn etcd_outage_keeps_pods_working_and_agents_catch_up() {
    require_cluster_binaries();
    let lab = Lab::new();
    let ttl = LEASE_TTL.to_string();
    lab.up_ok(&["--nodes", "3", "--pods-per-node", "1", "--lease-ttl", &ttl]);
    let old = lab.node_names();
    let flows = flows_between(&lab, "n1-p1", "n2-p1", 7002, Duration::from_millis(1));
    let flowing = |n: u64| {
        for f in &flows {
            f.wait_flowing(n, Duration::from_secs(5));
        }
    };
    flowing(100);

    lab.ok(&["etcd", "stop"], &[]);
    flowing(200);
    // etcd down: a pod starts on a node with free block space, CHECK and DEL are quick.
    let when = "etcd down";
    quick(&lab, &["pod", "add"], &["offline", "--node", "n1"], when);
    quick(&lab, &["pod", "check"], &["offline"], when);
    quick(&lab, &["pod", "check"], &["n1-p1"], when);
    quick(&lab, &["pod", "add"], &["brief", "--node", "n1"], when);
    quick(&lab, &["pod", "del"], &["brief"], when);

    // …and n1's weftd dead too.
    lab.ok(&["weftd", "stop"], &["n1", "--kill"]);
    let when = "etcd and n1's weftd down";
    quick(&lab, &["pod", "check"], &["offline"], when);
    quick(&lab, &["pod", "check"], &["n1-p1"], when);
    quick(&lab, &["pod", "add"], &["brief2", "--node", "n1"], when);
    quick(&lab, &["pod", "check"], &["brief2"], when);
    quick(&lab, &["pod", "del"], &["brief2"], when);
    flowing(200);

    lab.ok(&["etcd", "start"], &[]);
    lab.ok(&["weftd", "start"], &["n1"]);
    flowing(200);
    let reports = assert_no_loss(flows, "etcd and weftd outage");
    let sent: u64 = reports.iter().map(|r| r.sent).sum();
    eprintln!("etcd outage: {sent} datagrams, 0 lost");

    // No manual step: a node joining now is programmed by every old node.
    let took = join_is_programmed(&lab, &old, "n4");
    eprintln!(
        "after etcd came back: n4 programmed on all old nodes {:.0} ms after `node add` started",
        took.as_secs_f64() * 1e3
    );
    lab.ok(&["pod", "add"], &["after", "--node", "n4"]);
    let (ok, report) = lab.check_json();
    assert!(ok, "{report:#}");
}

/// Every pod's addresses lie in blocks its own node owns; every node's conflist holds
/// exactly the blocks etcd gives it; every node routes to the owners; ownership is single.
fn assert_fenced(lab: &Lab, view: &View) {
    view.assert_single_owners();
    for (pod, node, addr) in lab.pod_addresses() {
        assert_eq!(
            view.owner_of(addr),
            Some(node.as_str()),
            "pod {pod} on {node} uses {addr}: {view:#?}"
        );
    }
    for n in lab.node_names() {
        assert_eq!(
            lab.conflist_blocks(&n),
            view.blocks_of(&n),
            "{n}'s conflist"
        );
        view.check_routes(lab, &n).unwrap();
    }
}

#[test]
fn etcd_down_longer_than_lease_ttl_leaves_no_block_with_two_users() {
    require_cluster_binaries();
    let lab = Lab::new();
    let ttl = LEASE_TTL.to_string();
    lab.up_ok(&["--nodes", "3", "--pods-per-node", "1", "--lease-ttl", &ttl]);
    let before = lab.view();
    assert_fenced(&lab, &before);
    let dead_rec = before.records["n3"].clone();
    let dead_blocks = before.blocks_of("n3");

    lab.ok(&["etcd", "stop"], &[]);
    // During the outage n3 dies: nobody can tell yet, since nobody can reach etcd.
    lab.ok(&["node", "del"], &["n3"]);
    // The outage itself, longer than every lease's TTL (not an assertion).
    std::thread::sleep(Duration::from_millis(LEASE_TTL * 1000 + 1500));
    lab.ok(&["etcd", "start"], &[]);
    let restarted = Instant::now();

    // n3 is not proven gone until its lease runs out after the restart: a node joining
    // now must not be given its blocks.
    lab.ok(&["node", "add"], &["n4"]);
    let view = lab.view();
    for b in &dead_blocks {
        assert_eq!(
            view.owners.get(b).map(|o| o.node.as_str()),
            Some("n3"),
            "{b} right after the restart: {view:#?}"
        );
    }
    assert!(
        view.blocks_of("n4")
            .iter()
            .all(|b| !dead_blocks.contains(b)),
        "n4 got one of n3's blocks {dead_blocks:?}: {view:#?}"
    );

    // Then n3 goes everywhere, and the others are exactly as they were.
    let remaining = ["n1", "n2", "n4"];
    wait_for(
        Duration::from_secs(LEASE_TTL + 4),
        || {
            let gone = lab.block_owners().values().all(|o| o.node != "n3")
                && remaining
                    .iter()
                    .all(|n| lab.kernel(n).mentions(&dead_rec).is_empty());
            gone.then_some(())
        },
        || format!("n3 still known: {:#?}", lab.view()),
    );
    eprintln!(
        "n3 (killed during the outage) gone everywhere {:.0} ms after etcd restarted",
        restarted.elapsed().as_secs_f64() * 1e3
    );
    lab.ok(&["pod", "add"], &["n4-p1", "--node", "n4"]);
    let after = lab.view();
    for n in ["n1", "n2"] {
        assert_eq!(
            after.blocks_of(n),
            before.blocks_of(n),
            "{n} kept its blocks"
        );
        for b in after.blocks_of(n) {
            assert_eq!(
                after.owners[&b].lease, before.owners[&b].lease,
                "{n} kept its lease through the outage"
            );
        }
    }
    assert_fenced(&lab, &after);
    let (ok, report) = lab.check_json();
    assert!(ok, "{report:#}");

    // A node added now gets blocks no pod uses.
    lab.ok(&["node", "add"], &["n5"]);
    let last = lab.view();
    let n5_blocks: Vec<ipnet::IpNet> = last
        .blocks_of("n5")
        .iter()
        .map(|b| b.parse().unwrap())
        .collect();
    assert_eq!(n5_blocks.len(), 2);
    for (pod, node, addr) in lab.pod_addresses() {
        assert!(
            n5_blocks.iter().all(|b| !b.contains(&addr)),
            "n5 got a block holding {addr} of pod {pod} on {node}"
        );
    }
    assert_fenced(&lab, &last);
}
