//! weftd's periodic resync repairs kernel drift on a live node: a peer route deleted by hand
//! comes back, a stray route in weft's protocol goes away, and routes of any other protocol
//! are left alone. Needs weftd next to weftctl (a workspace build).

mod lab_support;

use std::time::{Duration, Instant};

use lab_support::{Lab, in_ns, ipj, require_cluster_binaries};
use serde_json::Value;

/// Destinations of the routes in protocol 87 (weft's) in node namespace `ns`.
fn weft_routes(ns: &str) -> Vec<String> {
    let mut dsts: Vec<String> = ["-4", "-6"]
        .iter()
        .flat_map(|fam| {
            ipj(ns, &[fam, "route", "show", "proto", "87"])
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|r: Value| r["dst"].as_str().map(str::to_owned))
        .collect();
    dsts.sort();
    dsts
}

fn wait_for(what: &str, deadline: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

#[test]
fn resync_repairs_deleted_and_stray_routes_and_spares_others() {
    require_cluster_binaries();
    let lab = Lab::new();
    lab.up_ok(&[
        "--nodes",
        "2",
        "--pods-per-node",
        "1",
        "--backend",
        "host-gw",
        "--resync-interval",
        "1",
    ]);
    let n1 = lab.ns("n1");
    let before = weft_routes(&n1);
    assert_eq!(before.len(), 2, "one v4 and one v6 block of n2: {before:?}");

    // Drift: one of weft's routes gone, a stray one in weft's protocol, and an operator's
    // own route (another protocol) that must survive.
    let victim = before[0].clone();
    let del = in_ns(&n1, "ip", &["route", "del", &victim, "proto", "87"]);
    assert!(del.status.success(), "{del:?}");
    let stray = in_ns(
        &n1,
        "ip",
        &[
            "route",
            "add",
            "10.244.250.0/26",
            "via",
            "192.168.100.1",
            "proto",
            "87",
        ],
    );
    assert!(stray.status.success(), "{stray:?}");
    let own = in_ns(
        &n1,
        "ip",
        &[
            "route",
            "add",
            "10.244.251.0/26",
            "via",
            "192.168.100.1",
            "proto",
            "static",
        ],
    );
    assert!(own.status.success(), "{own:?}");

    let took = wait_for(
        "the resync to repair the drift",
        Duration::from_secs(10),
        || weft_routes(&n1) == before,
    );
    eprintln!("drift repaired within {took:?} (resync interval 1 s)");
    let statics = ipj(&n1, &["route", "show", "proto", "static"]);
    assert!(
        statics
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["dst"] == "10.244.251.0/26")),
        "the operator's route was removed: {statics}"
    );
    let (ok, report) = lab.check_json();
    assert!(ok, "{report:#}");
}
