//! A node that joins a cluster whose every block is taken: its weftd keeps running without a
//! conflist (so a runtime reports the node's network as not ready instead of starting pods
//! that cannot get an address), says why in its log, and takes the first block that frees up.

mod lab_support;

use std::time::Duration;

use lab_support::traffic::flows_between;
use lab_support::*;

/// Four blocks per family (v4 /18 of the /16, v6 /58 of the /56): n1–n4 take them all.
#[test]
fn node_joining_a_full_cluster_waits_for_a_block() {
    require_cluster_binaries();
    let lab = Lab::new();
    lab.up_ok(&[
        "--nodes",
        "4",
        "--pods-per-node",
        "0",
        "--lease-ttl",
        "3",
        "--resync-interval",
        "1",
        "--block-size-v4",
        "18",
        "--block-size-v6",
        "58",
    ]);
    let n4 = lab.view().blocks_of("n4");
    assert_eq!(n4.len(), 2, "n4 holds one block per family: {n4:?}");

    // `node add` waits for the node to be ready, which n5 cannot be until a block frees.
    let joining = {
        let name = lab.name.clone();
        std::thread::spawn(move || weftctl(&["lab", "--name", &name, "node", "add", "n5"]))
    };
    let log_path = lab.state_dir().join("nodes/n5/weftd.log");
    let conflist = lab.state_dir().join("nodes/n5/net.d/10-weft.conflist");
    wait_for(
        Duration::from_secs(20),
        || {
            std::fs::read_to_string(&log_path)
                .ok()
                .filter(|l| l.contains("no block for this node"))
        },
        || format!("n5's log: {:?}", std::fs::read_to_string(&log_path)),
    );
    // Two resync periods later it still runs, still without a conflist or a block key.
    std::thread::sleep(Duration::from_secs(2));
    assert!(!conflist.exists(), "n5 has a conflist without a block");
    assert!(lab.view().blocks_of("n5").is_empty());
    assert!(
        !joining.is_finished(),
        "node add returned while n5 had no block"
    );

    // n4 dies (its weftd killed outright: `lab node del` would wait for the lab lock, which
    // `node add` holds while it waits); once n4's lease runs out n5 takes its blocks and
    // becomes ready.
    let pid_file = lab.state_dir().join("nodes/n4/weftd.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()))
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill(2) on a pid we read from the lab's own pid file.
    assert_eq!(
        unsafe { libc::kill(pid, libc::SIGKILL) },
        0,
        "killing n4's weftd"
    );
    let out = joining.join().expect("node add thread");
    assert!(out.status.success(), "node add n5: {}", text(&out));
    let view = lab.view();
    assert_eq!(view.blocks_of("n5"), n4, "{view:#?}");
    assert_eq!(lab.conflist_blocks("n5"), n4);
    view.assert_single_owners();

    // And it is a working node: a pod on it talks to a pod on n1, both families.
    lab.ok(&["pod", "add"], &["a", "--node", "n1"]);
    lab.ok(&["pod", "add"], &["b", "--node", "n5"]);
    for n in ["n1", "n2", "n3"] {
        wait_for(
            Duration::from_secs(5),
            || view.check_routes(&lab, n).ok(),
            || view.check_routes(&lab, n).unwrap_err(),
        );
    }
    let flows = flows_between(&lab, "a", "b", 7002, Duration::from_millis(2));
    assert_eq!(flows.len(), 4, "both families, both ways");
    for f in &flows {
        f.wait_flowing(50, Duration::from_secs(5));
    }
    lab_support::traffic::assert_no_loss(flows, "pods on n1 and n5");
}
