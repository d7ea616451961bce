//! A lab on the Kubernetes API under continuous cross-node pod traffic: the API server
//! killed and started again, then every weftd restarted (SIGTERM, then SIGKILL): every
//! datagram of every flow arrives, and the lab checks green afterwards.

mod lab_support;

use std::time::Duration;

use lab_support::traffic::{assert_no_loss, flows_between};
use lab_support::*;

#[test]
fn api_server_and_weftd_restarts_lose_no_packet() {
    require_cluster_binaries();
    let lab = Lab::new();
    lab.up_ok(&[
        "--nodes",
        "2",
        "--pods-per-node",
        "1",
        "--backend",
        "vxlan",
        "--datastore",
        "kubernetes",
    ]);
    // 1 datagram per ms each way, IPv4 and IPv6.
    let flows = flows_between(&lab, "n1-p1", "n2-p1", 7001, Duration::from_millis(1));
    let flowing = |n: u64| {
        for f in &flows {
            f.wait_flowing(n, Duration::from_secs(5));
        }
    };
    flowing(100);

    // The API server gone: pods keep talking; started again, nothing moves.
    lab.kill_apiserver();
    flowing(2000);
    lab.up_ok(&[]);
    flowing(200);

    // weftd restarted on both nodes, politely and not.
    for kill in [false, true] {
        for node in ["n1", "n2"] {
            let mut args = vec![node];
            if kill {
                args.push("--kill");
            }
            lab.ok(&["weftd", "restart"], &args);
            flowing(200);
        }
    }
    let reports = assert_no_loss(flows, "kubernetes: API server and weftd restarts");
    let sent: u64 = reports.iter().map(|r| r.sent).sum();
    eprintln!("kubernetes: {sent} datagrams over an API outage and 4 weftd restarts, 0 lost");
    let (ok, report) = lab.check_json();
    assert!(ok, "{report:#}");
}
