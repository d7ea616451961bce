//! weftd restarted (SIGTERM, then SIGKILL + start) on both ends of continuous cross-node pod
//! traffic: every datagram arrives, and the kernel state weftd owns is the same afterwards,
//! down to the VXLAN device's ifindex (adopted, not recreated).

mod lab_support;

use std::time::Duration;

use lab_support::kernel::{VXLAN_DEV, ifindex};
use lab_support::traffic::{assert_no_loss, flows_between};
use lab_support::*;

fn weftd_pid(lab: &Lab, node: &str) -> u32 {
    let path = lab.state_dir().join(format!("nodes/{node}/weftd.pid"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

fn restarts_under_traffic(backend: &str) {
    require_cluster_binaries();
    let lab = Lab::new();
    lab.up_ok(&["--nodes", "2", "--pods-per-node", "1", "--backend", backend]);
    let nodes = ["n1", "n2"];
    let kernel_before: Vec<_> = nodes.iter().map(|n| lab.kernel(n)).collect();
    let vx_before: Vec<_> = nodes
        .iter()
        .map(|n| ifindex(&lab.ns(n), VXLAN_DEV))
        .collect();
    for (n, k) in nodes.iter().zip(&kernel_before) {
        assert!(!k.routes.is_empty(), "{n} has routes to its peer first");
    }
    if backend == "vxlan" {
        assert!(vx_before.iter().all(Option::is_some), "{vx_before:?}");
    }

    // 1 datagram per ms each way, IPv4 and IPv6.
    let flows = flows_between(&lab, "n1-p1", "n2-p1", 7001, Duration::from_millis(1));
    assert_eq!(flows.len(), 4);
    let flowing = |n: u64| {
        for f in &flows {
            f.wait_flowing(n, Duration::from_secs(5));
        }
    };
    flowing(100);
    for (kill, how) in [(false, "SIGTERM"), (true, "SIGKILL")] {
        for node in nodes {
            let pid = weftd_pid(&lab, node);
            let mut args = vec![node];
            if kill {
                args.push("--kill");
            }
            lab.ok(&["weftd", "restart"], &args);
            assert_ne!(
                weftd_pid(&lab, node),
                pid,
                "{how}: {node}'s weftd was restarted"
            );
            // Traffic goes on through the restarted agent's first moments.
            flowing(200);
        }
    }
    let reports = assert_no_loss(flows, &format!("{backend}, weftd restarts"));
    let sent: u64 = reports.iter().map(|r| r.sent).sum();
    eprintln!("{backend}: {sent} datagrams over 4 restarts, 0 lost");

    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(
            lab.kernel(n),
            kernel_before[i],
            "{n}'s kernel entries changed"
        );
        assert_eq!(
            ifindex(&lab.ns(n), VXLAN_DEV),
            vx_before[i],
            "{n}'s {VXLAN_DEV} was recreated"
        );
    }
    let (ok, report) = lab.check_json();
    assert!(ok, "{report:#}");
}

#[test]
fn weftd_restarts_lose_no_packet_vxlan() {
    restarts_under_traffic("vxlan");
}

#[test]
fn weftd_restarts_lose_no_packet_host_gw() {
    restarts_under_traffic("host-gw");
}
