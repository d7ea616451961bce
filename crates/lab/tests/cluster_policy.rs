//! NetworkPolicy enforced by weftd in a real lab: real TCP connections and UDP datagrams
//! between pods on one node and across nodes, after `weftctl lab policy-sync` (or right after
//! `lab pod add`, which returns once the pod's policy is in the kernel).

mod lab_support;

use std::time::Duration;

use lab_support::policy::{assert_matrix, tcp_open, udp_open};
use lab_support::traffic::UdpFlow;
use lab_support::*;

const DENY_ALL_SHOP: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: shop}
spec: {podSelector: {}, policyTypes: [Ingress]}
";

/// A 2-node lab with pods a, b on n1 and c on n2, all in namespace `shop`.
fn shop_lab(mode: &str) -> Lab {
    shop_lab_on(mode, "nft")
}

fn shop_lab_on(mode: &str, datapath: &str) -> Lab {
    require_cluster_binaries();
    let lab = Lab::new();
    lab.up_ok(&[
        "--nodes",
        "2",
        "--pods-per-node",
        "0",
        "--no-ipv6",
        "--mode",
        mode,
        "--datapath",
        datapath,
    ]);
    lab.add_app_pods(
        "shop",
        &[("a", "1", "web"), ("b", "1", "db"), ("c", "2", "db")],
    );
    lab
}

fn all_pairs(open: bool) -> Vec<(&'static str, &'static str, bool)> {
    let pods = ["a", "b", "c"];
    let mut cells = Vec::new();
    for from in pods {
        for to in pods {
            if from != to {
                cells.push((from, to, open));
            }
        }
    }
    cells
}

fn deny_all_cuts_and_delete_restores(mode: &str) {
    let lab = shop_lab(mode);
    assert_matrix(&lab, &all_pairs(true), 7100, "before any policy");
    lab.apply(DENY_ALL_SHOP);
    lab.policy_sync();
    // Same node (a ↔ b, bridged in bridge mode) and across nodes (↔ c).
    assert_matrix(&lab, &all_pairs(false), 7110, "under deny-all");
    let dropped: u64 = ["n1", "n2"]
        .iter()
        .map(|n| lab.denied_by(n, "shop/deny-all"))
        .sum();
    assert!(dropped > 0, "the drops are counted against shop/deny-all");
    // And per pod: every pod was a probe's target and a probe's source.
    for pod in ["a", "b", "c"] {
        let per_pod: u64 = ["n1", "n2"]
            .iter()
            .map(|n| lab.denied_pod(n, &format!("shop/{pod}"), "shop/deny-all"))
            .sum();
        assert!(per_pod > 0, "no denied packet counted for shop/{pod}");
    }
    let st = lab.wait_policy_in_sync("n1");
    assert_eq!(st["policy"]["classes"], 1, "{st}");
    // deny-all made a class chain: after the table's first build even that is one netlink
    // batch, no `nft` process.
    assert_eq!(st["policy"]["lastChange"]["via"], "netlink", "{st}");
    // What a person sees: `weftctl lab status` names each denied pod and its policy.
    let text = lab.ok(&["status"], &[]);
    for pod in ["a", "b", "c"] {
        assert!(
            text.lines().any(
                |l| l.contains(&format!("shop/{pod} ")) && l.contains("policies shop/deny-all")
            ),
            "shop/{pod} not listed as denied:\n{text}"
        );
    }
    assert!(
        text.contains("node n1:") && text.contains("node n2:"),
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&lab.ok(&["status"], &["n2", "-o", "json"])).unwrap();
    assert_eq!(json.as_array().map(Vec::len), Some(1), "{json}");
    assert_eq!(json[0]["node"], "n2", "{json}");
    assert_eq!(json[0]["status"]["policy"]["classes"], 1, "{json}");
    lab.delete(DENY_ALL_SHOP);
    lab.policy_sync();
    assert_matrix(&lab, &all_pairs(true), 7120, "after deleting deny-all");
}

#[test]
fn deny_all_cuts_a_pod_off_same_node_and_cross_node_bridge() {
    deny_all_cuts_and_delete_restores("bridge");
}

#[test]
fn deny_all_cuts_a_pod_off_same_node_and_cross_node_ptp() {
    deny_all_cuts_and_delete_restores("ptp");
}

#[test]
fn a_new_pod_is_policed_from_its_first_packet() {
    let lab = shop_lab("bridge");
    lab.apply(DENY_ALL_SHOP);
    lab.policy_sync();
    // Added under default-deny: probed the moment `pod add` returns, no sync, one attempt.
    lab.ok(
        &["pod", "add"],
        &["d", "--node", "1", "--namespace", "shop"],
    );
    assert!(!tcp_open(&lab, "c", "d", 7200), "cross-node TCP to d");
    assert!(!tcp_open(&lab, "a", "d", 7201), "same-node TCP to d");
    assert!(!udp_open(&lab, "c", "d", 7202), "cross-node UDP to d");
    // And a pod no policy selects is reachable just as soon: ADD waited until the agent
    // programmed it (an unprogrammed pod address is default-denied).
    lab.ok(
        &["pod", "add"],
        &["e", "--node", "1", "--namespace", "open"],
    );
    assert!(tcp_open(&lab, "c", "e", 7203), "cross-node TCP to e");
    assert!(tcp_open(&lab, "a", "e", 7204), "same-node TCP to e");
    assert!(udp_open(&lab, "c", "e", 7205), "cross-node UDP to e");
}

#[test]
fn a_pod_added_while_weftd_is_down_is_denied_until_weftd_programs_it() {
    let lab = shop_lab("bridge");
    lab.ok(&["weftd", "stop"], &["n1"]);
    // The ADD succeeds without the agent (its socket is gone).
    lab.ok(
        &["pod", "add"],
        &["d", "--node", "1", "--namespace", "open"],
    );
    assert!(
        !tcp_open(&lab, "c", "d", 7300),
        "cross-node to d before weftd"
    );
    assert!(
        !tcp_open(&lab, "a", "d", 7301),
        "same-node to d before weftd"
    );
    // Ready means serving: the first policy view (with d's endpoint file) is committed.
    lab.ok(&["weftd", "start"], &["n1"]);
    assert!(
        tcp_open(&lab, "c", "d", 7302),
        "cross-node to d after weftd"
    );
    assert!(tcp_open(&lab, "a", "d", 7303), "same-node to d after weftd");
    assert!(tcp_open(&lab, "d", "c", 7304), "d out to c after weftd");
    // And the other nodes learnt of d from the datastore.
    lab.policy_sync();
    let eps = lab_support::etcd::etcdctl_at(
        &lab.ns("ul"),
        "http://127.0.0.1:2379",
        &[
            "get",
            "--prefix",
            "--keys-only",
            "/weft/v1/policy/endpoints/n1/open/d",
        ],
    );
    assert!(
        String::from_utf8_lossy(&eps.stdout).contains("/weft/v1/policy/endpoints/n1/open/d"),
        "{}",
        text(&eps)
    );
}

const ALLOW_WEB_TO_DB: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-to-db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: web}}
";

#[test]
fn restarting_weftd_opens_no_denied_flow_and_drops_no_allowed_one() {
    restarting_weftd_keeps_policy("nft");
}

fn restarting_weftd_keeps_policy(datapath: &str) {
    let lab = shop_lab_on("bridge", datapath);
    lab.apply(ALLOW_WEB_TO_DB);
    lab.policy_sync();
    let addr = |p: &str| lab.pod_addr(p, false).unwrap();
    let interval = Duration::from_millis(2);
    // Allowed: web → db, across nodes and on one node.
    let allowed = vec![
        UdpFlow::start(&lab, "a", "c", addr("c"), 7400, interval),
        UdpFlow::start(&lab, "a", "b", addr("b"), 7401, interval),
    ];
    // Denied: db → db, both ways across nodes.
    let denied = vec![
        UdpFlow::start(&lab, "b", "c", addr("c"), 7402, interval),
        UdpFlow::start(&lab, "c", "b", addr("b"), 7403, interval),
    ];
    for f in &allowed {
        f.wait_flowing(100, Duration::from_secs(5));
    }
    for kill in [false, true] {
        for node in ["n1", "n2"] {
            let mut args = vec![node];
            if kill {
                args.push("--kill");
            }
            lab.ok(&["weftd", "restart"], &args);
            for f in &allowed {
                f.wait_flowing(50, Duration::from_secs(5));
            }
        }
    }
    lab.policy_sync();
    for f in denied {
        let r = f.finish();
        eprintln!("denied: {r}");
        assert!(r.sent > 200, "{r}");
        assert_eq!(r.received, 0, "a denied flow got packets through: {r}");
    }
    traffic::assert_no_loss(allowed, "allowed flow across weftd restarts");
}

#[test]
fn with_etcd_down_policy_stays_and_new_pods_are_programmed_from_the_last_view() {
    let lab = shop_lab("bridge");
    lab.apply(DENY_ALL_SHOP);
    lab.policy_sync();
    lab.ok(&["etcd", "stop"], &[]);
    assert_matrix(&lab, &all_pairs(false), 7500, "deny-all with etcd down");
    // A new pod of an open namespace: programmed at attach from the view in memory.
    lab.ok(
        &["pod", "add"],
        &["d", "--node", "1", "--namespace", "open"],
    );
    assert_matrix(
        &lab,
        &[("a", "d", true), ("c", "d", true), ("d", "a", false)],
        7510,
        "a pod added with etcd down",
    );
    lab.ok(&["etcd", "start"], &[]);
    lab.policy_sync();
    let st = lab.wait_policy_in_sync("n1");
    assert_eq!(st["policy"]["endpoints"], 3, "{st}");
    assert_matrix(
        &lab,
        &[("c", "d", true), ("c", "a", false)],
        7520,
        "etcd back",
    );
}

/// The `auto` backend has two paths: host-gw to a peer on the same underlay segment, VXLAN
/// through the router to one on the other. Policy is enforced on both (web → db allowed,
/// db ↔ db and db → web denied), and deleting it opens everything again.
#[test]
fn policy_holds_on_both_paths_of_the_auto_backend() {
    require_cluster_binaries();
    let lab = Lab::new();
    // Nodes go round-robin over two segments: n1 and n3 on one, n2 on the other.
    lab.up_ok(&[
        "--nodes",
        "3",
        "--pods-per-node",
        "0",
        "--no-ipv6",
        "--backend",
        "auto",
    ]);
    lab.add_app_pods(
        "shop",
        &[("a", "1", "web"), ("b", "2", "db"), ("c", "3", "db")],
    );
    assert_matrix(
        &lab,
        &all_pairs(true),
        7500,
        "auto backend, before any policy",
    );
    lab.apply(ALLOW_WEB_TO_DB);
    lab.policy_sync();
    // web-to-db isolates the db pods (b, c) for ingress and lets web (a) in; web itself
    // is not isolated.
    let cells = [
        ("a", "b", true),  // web → db over VXLAN (n1 → n2, across the router)
        ("a", "c", true),  // web → db over host-gw (n1 → n3, same segment)
        ("b", "c", false), // db → db, n2 → n3: across segments, VXLAN
        ("c", "b", false), // and back
        ("b", "a", true),  // to web: not isolated
        ("c", "a", true),  // to web over host-gw
    ];
    assert_matrix(&lab, &cells, 7510, "auto backend, web-to-db");
    lab.delete(ALLOW_WEB_TO_DB);
    lab.policy_sync();
    assert_matrix(
        &lab,
        &all_pairs(true),
        7520,
        "auto backend, after deleting web-to-db",
    );
}
