//! A lab on the Kubernetes API under continuous cross-node pod traffic: the API server
//! killed and started again, then every weftd restarted (SIGTERM, then SIGKILL): every
//! datagram of every flow arrives, and the lab checks green afterwards. During the outage,
//! an ADD is decided by weftd's cache (docs/kubernetes.md, "When the API server is down").

mod lab_support;

use std::path::Path;
use std::time::Duration;

use lab_support::traffic::{assert_no_loss, flows_between};
use lab_support::*;
use weft_proto::{AgentError, Request, ask};

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
    flowing(1000);
    adds_during_the_outage(&lab);
    flowing(1000);
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

/// What weftd answers the plugin's attach (the last step of an ADD) on n1 while the API
/// server is down: a pod its cache has is programmed; a pod it has never seen, whose labels
/// cannot be read, is refused with the documented reason (the kubelet retries).
fn adds_during_the_outage(lab: &Lab) {
    let run = lab.state_dir().join("nodes/n1/run");
    let socket = run.join("weftd.sock");
    let attach = |container_id: &str, ifname: &str| {
        ask(
            &socket,
            &Request::Attach {
                container_id: container_id.into(),
                ifname: ifname.into(),
            },
            Duration::from_secs(30),
        )
    };
    // n1-p1's own endpoint file, as its ADD left it: the same attach again.
    let (known, ifname) = endpoint_files(&run.join("endpoints"))
        .into_iter()
        .find(|f| f["name"] == "n1-p1")
        .and_then(|f| {
            Some((
                f["containerId"].as_str()?.to_string(),
                f["ifname"].as_str()?.to_string(),
            ))
        })
        .expect("n1-p1 has an endpoint file");
    let r = attach(&known, &ifname);
    assert!(r.as_ref().is_ok_and(|r| r.ok), "a cached pod's ADD: {r:?}");

    // A pod the API never told weftd about, as the plugin would leave it before asking.
    let ghost = run.join("endpoints/wtghost-eth0.json");
    std::fs::write(
        &ghost,
        r#"{"containerId":"wtghost","ifname":"eth0","namespace":"default","name":"wt-ghost",
            "addresses":["10.255.255.254"],"hostInterface":"wtghost0","mode":"bridge"}"#,
    )
    .expect("write the ghost's endpoint file");
    let r = attach("wtghost", "eth0");
    // Gone before weftd's next rescan could take it for a pod whose DEL it missed.
    std::fs::remove_file(&ghost).expect("remove the ghost's endpoint file");
    match r {
        Err(AgentError::Refused(why)) => assert!(
            why.contains(
                "pod default/wt-ghost is not in weftd's cache and its labels cannot be read"
            ) && why.contains("retry once the API server answers"),
            "{why}"
        ),
        other => panic!("an unknown pod's ADD during the outage: {other:?}"),
    }
}

/// The endpoint files of a node's run dir.
fn endpoint_files(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| {
            let path = e.ok()?.path();
            serde_json::from_slice(&std::fs::read(&path).ok()?).ok()
        })
        .collect()
}
