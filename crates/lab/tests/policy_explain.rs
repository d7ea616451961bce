//! `policy explain --lab` (weft-ctl's command) on a whole lab: pods get PodLabels objects in
//! the lab's etcd, and the verdicts follow the lab's pods. As root, with the workspace built.

mod lab_support;

use std::process::{Command, Output};

use lab_support::{text, weftctl_bin};
use serde_json::Value;

/// The policies of weft-ctl's policy_cli test manifest, as JSON (a stream of objects): shop
/// is default-deny, web open to client on TCP 80.
const POLICIES: &str = r#"{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
 "metadata": {"name": "default-deny", "namespace": "shop"}, "spec": {"podSelector": {}}}
{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
 "metadata": {"name": "allow-web", "namespace": "shop"},
 "spec": {"podSelector": {"matchLabels": {"app": "web"}},
          "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                       "ports": [{"port": 80, "protocol": "TCP"}]}]}}
"#;

fn weftctl_in(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(weftctl_bin());
    cmd.args(args);
    weft_testkit::output_with_stdin(cmd, stdin.unwrap_or(""))
}

/// A two-node lab: pods get PodLabels objects in the lab's etcd (and their Namespace
/// object), relabelling and deleting follow, and `policy explain --lab` judges flows between
/// real pods with the policies applied through `--lab`.
#[test]
fn explain_on_a_lab() {
    lab_support::require_cluster_binaries();
    let lab = lab_support::Lab::new();
    lab.up_ok(&["--nodes", "2", "--pods-per-node", "0"]);
    lab.add_app_pods(
        "shop",
        &[
            ("web", "n1", "web"),
            ("client", "n2", "client"),
            ("other", "n2", "other"),
        ],
    );
    let at = |args: &[&str], stdin: Option<&str>| {
        let mut a = args.to_vec();
        a.extend(["--lab", &lab.name]);
        let out = weftctl_in(&a, stdin);
        assert!(out.status.success(), "weftctl {a:?}:\n{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    let eps = at(&["get", "endpoints"], None);
    for want in ["web", "client", "other", "n1", "n2", "app=client"] {
        assert!(eps.contains(want), "{want} missing:\n{eps}");
    }
    let ns = at(&["get", "namespaces"], None);
    assert!(ns.contains("kubernetes.io/metadata.name=shop"), "{ns}");

    at(&["apply", "-f", "-"], Some(POLICIES));

    let allowed = at(
        &["policy", "explain", "shop/client", "shop/web", "80/tcp"],
        None,
    );
    assert!(allowed.starts_with("ALLOWED tcp/80"), "{allowed}");
    assert!(
        allowed.contains("allowed by shop/allow-web ingress[0]"),
        "{allowed}"
    );
    let denied = at(
        &["policy", "explain", "shop/other", "shop/web", "80/tcp"],
        None,
    );
    assert!(denied.starts_with("DENIED"), "{denied}");
    assert!(
        denied.contains("isolated by shop/allow-web, shop/default-deny")
            || denied.contains("isolated by shop/default-deny, shop/allow-web"),
        "{denied}"
    );
    // From the pod's own node: its gateway address (from the ADD result) is the node's.
    let state = lab.state();
    let gw = state["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "web")
        .and_then(|p| p["result"]["ips"][0]["gateway"].as_str())
        .expect("web's ADD result names a gateway")
        .to_owned();
    let probe = at(&["policy", "explain", &gw, "shop/web", "22/tcp"], None);
    assert!(
        probe.starts_with("ALLOWED") && probe.contains("(node n1)"),
        "{probe}"
    );
    let wrong_port = at(
        &["policy", "explain", "shop/client", "shop/web", "81/tcp"],
        None,
    );
    assert!(wrong_port.starts_with("DENIED"), "{wrong_port}");

    // Relabelled through the lab, the PodLabels object follows, and so does the verdict.
    lab.ok(&["pod", "label"], &["other", "app=client"]);
    let now = at(
        &["policy", "explain", "shop/other", "shop/web", "80/tcp"],
        None,
    );
    assert!(now.starts_with("ALLOWED"), "{now}");

    lab.ok(&["pod", "del"], &["client"]);
    let eps = at(&["get", "endpoints", "-o", "json"], None);
    let eps: Value = serde_json::from_str(&eps).unwrap();
    let names: Vec<&str> = eps
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(names, ["other", "web"], "{eps:#}");

    // etcd down: the pod is still made, and the miss is said.
    lab.ok(&["etcd", "stop"], &[]);
    let out = lab.cmd(
        &["pod", "add"],
        &["late", "--node", "n1", "--namespace", "shop"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("labels not recorded"),
        "{}",
        text(&out)
    );
}
