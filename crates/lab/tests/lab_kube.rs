//! Labs on the Kubernetes datastore (`lab up --datastore kubernetes`): a real etcd,
//! kube-apiserver and kube-controller-manager, one weftd per node on `--datastore
//! kubernetes`, the lab as the kubelet (Node and Pod objects). For each IPAM mode × backend:
//! `lab check` all green; every Node carries weft's annotations and `NetworkUnavailable=False`;
//! the blocks weftd wired into its conflist are the node's WeftBlocks (ipam weft) or its
//! `spec.podCIDRs` (ipam kubernetes); every Pod object is bound to its node, Running, with the
//! ADD's addresses; `pod del` removes the Pod; `down` leaves nothing. Spread over the four:
//! relabelling, node add and del (WeftBlocks freed with their Node), the admin kubeconfig
//! used with kubectl in the router namespace, and a labelled pod whose egress policy holds
//! from its first packet after `pod add` returns.
//!
//! Needs the Kubernetes binaries (scripts/kube-binaries.sh, or WEFT_KUBE_BIN) and weftd,
//! weft, weft-ipam next to weftctl.

mod lab_support;

use std::collections::BTreeMap;
use std::time::Duration;

use lab_support::policy::tcp_open;
use lab_support::*;
use serde_json::Value;

/// `lab up` on the Kubernetes datastore with 2 nodes × 2 pods.
fn up(lab: &Lab, ipam: &str, backend: &str) {
    require_cluster_binaries();
    let progress = lab.up_ok(&[
        "--datastore",
        "kubernetes",
        "--ipam",
        ipam,
        "--backend",
        backend,
        "--nodes",
        "2",
        "--pods-per-node",
        "2",
    ]);
    for line in [
        "starting kube-apiserver and kube-controller-manager",
        "weftd ready",
        "pods: 4/4",
    ] {
        assert!(progress.contains(line), "{progress}");
    }
}

/// Item name → item of a `kubectl get … -o json` list.
fn by_name(list: &Value) -> BTreeMap<String, Value> {
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            let ns = i["metadata"]["namespace"].as_str();
            let name = i["metadata"]["name"].as_str().unwrap_or_default();
            let key = match ns {
                Some(ns) => format!("{ns}/{name}"),
                None => name.to_owned(),
            };
            (key, i.clone())
        })
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// The blocks the API says `node` has: its WeftBlocks (owned by its Node object), or its
/// podCIDRs.
fn api_blocks(lab: &Lab, ipam: &str, node: &Value) -> Vec<String> {
    let name = node["metadata"]["name"].as_str().unwrap_or_default();
    if ipam == "kubernetes" {
        return sorted(
            node["spec"]["podCIDRs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect(),
        );
    }
    let blocks = lab.kube_get(&["weftblocks"]);
    let mut mine = Vec::new();
    for b in blocks["items"].as_array().into_iter().flatten() {
        if b["spec"]["node"] != name {
            continue;
        }
        let owner = &b["metadata"]["ownerReferences"][0];
        assert!(
            owner["kind"] == "Node"
                && owner["name"] == name
                && owner["uid"] == node["metadata"]["uid"],
            "WeftBlock not owned by its Node object: {b:#}"
        );
        mine.push(b["spec"]["cidr"].as_str().unwrap_or_default().to_owned());
    }
    sorted(mine)
}

/// What every lab on the API must show: green check, Nodes published by weftd, blocks
/// agreeing between the API and the conflists, Pod objects as the lab's kubelet wrote them.
fn assert_cluster(lab: &Lab, ipam: &str) {
    let (ok, report) = lab.check_json();
    assert!(ok, "lab check on ipam {ipam}:\n{report:#}");

    let nodes = by_name(&lab.kube_get(&["nodes"]));
    let state = lab.state();
    let records = state["nodes"].as_array().cloned().unwrap_or_default();
    assert_eq!(nodes.len(), records.len(), "{nodes:#?}");
    for rec in &records {
        let name = rec["name"].as_str().unwrap_or_default();
        let node = &nodes[name];
        let ann = &node["metadata"]["annotations"];
        assert_eq!(ann["weft.dev/ready"], "true", "{node:#}");
        let unavailable = node["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "NetworkUnavailable")
            .unwrap_or_else(|| panic!("no NetworkUnavailable condition: {node:#}"));
        assert_eq!(unavailable["status"], "False", "{node:#}");
        let internal: Vec<&Value> = node["status"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["type"] == "InternalIP")
            .map(|a| &a["address"])
            .collect();
        assert_eq!(internal, [&rec["address4"], &rec["address6"]], "{node:#}");
        // weftd's blocks: what it wired into the conflist, what it published, and what
        // the API holds for the node are one set.
        let wired = lab.conflist_blocks(name);
        assert!(!wired.is_empty(), "{name}: no blocks in its conflist");
        assert_eq!(api_blocks(lab, ipam, node), wired, "{name}");
        let published = sorted(
            ann["weft.dev/blocks"]
                .as_str()
                .unwrap_or_default()
                .split(',')
                .map(str::to_owned)
                .collect(),
        );
        assert_eq!(published, wired, "{name}");
    }

    let pods = by_name(&lab.kube_get(&["pods", "-A"]));
    let records = state["pods"].as_array().cloned().unwrap_or_default();
    assert_eq!(pods.len(), records.len(), "{pods:#?}");
    for rec in &records {
        let key = format!(
            "{}/{}",
            rec["namespace"].as_str().unwrap_or_default(),
            rec["name"].as_str().unwrap_or_default()
        );
        let pod = pods
            .get(&key)
            .unwrap_or_else(|| panic!("no Pod {key}: {pods:#?}"));
        assert_eq!(pod["spec"]["nodeName"], rec["node"], "{pod:#}");
        assert_eq!(pod["status"]["phase"], "Running", "{pod:#}");
        let ips: Vec<&str> = pod["status"]["podIPs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["ip"].as_str())
            .collect();
        let addrs: Vec<&str> = rec["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str()?.split('/').next())
            .collect();
        assert_eq!(ips, addrs, "{pod:#}");
        let labels = pod["metadata"]["labels"].clone();
        let want = if rec["labels"].as_object().is_some_and(|l| !l.is_empty()) {
            rec["labels"].clone()
        } else {
            Value::Null
        };
        assert_eq!(labels, want, "{pod:#}");
    }
}

/// `pod del` runs the DEL and deletes the Pod object; `down` leaves nothing.
fn del_pod_and_down(lab: Lab) {
    lab.ok(&["pod", "del"], &["n1-p1"]);
    let out = lab.kubectl(&["get", "pod", "n1-p1", "-n", "default"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("NotFound"),
        "{}",
        text(&out)
    );
    assert!(!lab.pods().contains_key("n1-p1"));
    assert!(!std::path::Path::new(&format!("/run/netns/{}", lab.ns("p-n1-p1"))).exists());
    lab.ok(&["down"], &[]);
    lab.assert_gone();
}

#[test]
fn ipam_weft_vxlan() {
    let lab = Lab::new();
    up(&lab, "weft", "vxlan");
    assert_cluster(&lab, "weft");

    // The admin kubeconfig works with any kubectl inside the router namespace.
    let kubeconfig = lab.ok(&["kubeconfig"], &[]);
    let kubectl = weft_testkit::kube::bin_dir()
        .expect("Kubernetes binaries")
        .join("kubectl");
    let out = in_ns(
        &lab.ns("ul"),
        kubectl.to_str().unwrap_or_default(),
        &["--kubeconfig", kubeconfig.trim(), "get", "node", "n1"],
    );
    assert!(out.status.success(), "{}", text(&out));
    // weftd runs as the manifest's ServiceAccount: what it did above, it did with the
    // manifest's RBAC, and its kubeconfig can do nothing more (no secrets, no Node patch).
    let weftd_kubeconfig = lab.state_dir().join("kube/weftd.kubeconfig");
    let as_weftd = |args: &[&str]| {
        let mut a = vec![
            "--kubeconfig",
            weftd_kubeconfig.to_str().unwrap_or_default(),
        ];
        a.extend_from_slice(args);
        in_ns(&lab.ns("ul"), kubectl.to_str().unwrap_or_default(), &a)
    };
    let who = as_weftd(&["auth", "can-i", "--list"]);
    assert!(who.status.success(), "{}", text(&who));
    for (verb, what, want) in [
        ("patch", "nodes --subresource=status", "yes"),
        ("create", "weftblocks.weft.dev", "yes"),
        ("patch", "nodes", "no"),
        ("get", "secrets -A", "no"),
    ] {
        let mut args = vec!["auth", "can-i", verb];
        args.extend(what.split(' '));
        let out = as_weftd(&args);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            want,
            "weftd can-i {verb} {what}: {}",
            text(&out)
        );
    }
    // weftctl's policy commands with --lab read the lab's API server.
    lab.kubectl_file_ok(
        "apply",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {name: via-kubectl, namespace: default}\nspec: {podSelector: {}}\n",
    );
    let listed = weftctl_ok(&["get", "policies", "--lab", &lab.name]);
    assert!(listed.contains("via-kubectl"), "{listed}");
    lab.kubectl_ok(&["delete", "networkpolicy", "via-kubectl"]);

    // Labels and named ports reach the Pod object; relabelling patches it.
    lab.ok(
        &["pod", "add"],
        &[
            "web",
            "--node",
            "n2",
            "--namespace",
            "alpha",
            "--labels",
            "app=web,tier=front",
            "--ports",
            "http=8080,dns=53/udp",
        ],
    );
    lab.ok(&["pod", "label"], &["web", "app-", "role=probe"]);
    let pod = lab.kube_get(&["pod", "-n", "alpha", "web"]);
    assert_eq!(
        pod["metadata"]["labels"],
        serde_json::json!({"tier": "front", "role": "probe"}),
        "{pod:#}"
    );
    let ports = &pod["spec"]["containers"][0]["ports"];
    assert_eq!(
        ports,
        &serde_json::json!([
            {"name": "http", "containerPort": 8080, "protocol": "TCP"},
            {"name": "dns", "containerPort": 53, "protocol": "UDP"}
        ]),
        "{pod:#}"
    );
    assert_cluster(&lab, "weft");

    // A node deleted: its Node and Pods go, and its WeftBlocks with the Node (owned by it).
    lab.ok(&["node", "del"], &["n2"]);
    let nodes = by_name(&lab.kube_get(&["nodes"]));
    assert_eq!(nodes.keys().collect::<Vec<_>>(), ["n1"]);
    wait_for(
        Duration::from_secs(30),
        || {
            let blocks = lab.kube_get(&["weftblocks"]);
            blocks["items"]
                .as_array()
                .is_some_and(|b| b.iter().all(|b| b["spec"]["node"] == "n1"))
                .then_some(())
        },
        || format!("{:#}", lab.kube_get(&["weftblocks"])),
    );
    assert_cluster(&lab, "weft");
    del_pod_and_down(lab);
}

#[test]
fn ipam_weft_host_gw() {
    let lab = Lab::new();
    up(&lab, "weft", "host-gw");
    assert_cluster(&lab, "weft");
    a_labelled_pod_is_policed_from_its_first_packet(&lab);
    del_pod_and_down(lab);
}

#[test]
fn ipam_kubernetes_vxlan() {
    let lab = Lab::new();
    up(&lab, "kubernetes", "vxlan");
    assert_cluster(&lab, "kubernetes");
    // A node that joins gets its podCIDRs from the controller manager, then pods.
    lab.ok(&["node", "add"], &[]);
    lab.ok(&["pod", "add"], &["n3-p1", "--node", "n3"]);
    assert_cluster(&lab, "kubernetes");
    del_pod_and_down(lab);
}

#[test]
fn ipam_kubernetes_host_gw() {
    let lab = Lab::new();
    up(&lab, "kubernetes", "host-gw");
    assert_cluster(&lab, "kubernetes");

    // A crashed API server is started again by `up`, which keeps every object: the same
    // Pods (uids), the same Nodes.
    let uids = |kind: &str| -> BTreeMap<String, Value> {
        by_name(&lab.kube_get(&[kind, "-A"]))
            .into_iter()
            .map(|(k, v)| (k, v["metadata"]["uid"].clone()))
            .collect()
    };
    let (pods, nodes) = (uids("pods"), uids("nodes"));
    lab.kill_apiserver();
    let progress = lab.up_ok(&[]);
    assert!(progress.contains("exists; completing it"), "{progress}");
    assert_eq!(uids("pods"), pods);
    assert_eq!(uids("nodes"), nodes);
    assert_cluster(&lab, "kubernetes");
    del_pod_and_down(lab);
}

/// Default-deny egress in a namespace, all egress for `app=allowed`: a pod created with that
/// label must reach a server from its first packet after `pod add` returns (its node's weftd
/// knew its labels before the ADD's answer: from its watch, or read from the API when the
/// plugin attached a pod its cache had not seen), and a pod without it must not. Five of
/// each, so a race between the Pod's watch event and the ADD has its chances to show.
fn a_labelled_pod_is_policed_from_its_first_packet(lab: &Lab) {
    lab.kubectl_file_ok(
        "apply",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: first}\n---\n\
         apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {name: deny-egress, namespace: first}\n\
         spec: {podSelector: {}, policyTypes: [Egress]}\n---\n\
         apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
         metadata: {name: allowed-out, namespace: first}\n\
         spec: {podSelector: {matchLabels: {app: allowed}}, egress: [{}]}\n",
    );
    lab.ok(
        &["pod", "add"],
        &[
            "srv",
            "--node",
            "n2",
            "--namespace",
            "first",
            "--labels",
            "role=server",
        ],
    );
    lab.policy_sync();
    let mut wrong = Vec::new();
    for i in 0..5u16 {
        for (app, want) in [("allowed", true), ("other", false)] {
            let pod = format!("{app}{i}");
            let labels = format!("app={app}");
            // Same node as the server and across, in turn.
            let node = if i % 2 == 0 { "n1" } else { "n2" };
            lab.ok(
                &["pod", "add"],
                &[
                    &pod,
                    "--node",
                    node,
                    "--namespace",
                    "first",
                    "--labels",
                    &labels,
                ],
            );
            let open = tcp_open(lab, &pod, "srv", 8000 + i);
            if open != want {
                wrong.push(format!("{pod} on {node}: open {open}, want {want}"));
            }
            lab.ok(&["pod", "del"], &[&pod]);
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    lab.ok(&["pod", "del"], &["srv"]);
}

#[test]
fn kube_commands_refuse_an_etcd_lab_and_missing_binaries_are_one_line() {
    let lab = Lab::new();
    lab.up_ok(&["--until", "underlay"]);
    let out = lab.cmd(&["kubeconfig"], &[]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("runs on etcd"),
        "{}",
        text(&out)
    );
    lab.ok(&["down"], &[]);

    let nothing = TempDir::new("labtest");
    let dir = nothing.path().to_string_lossy();
    let bin = bin_dir();
    let out = weftctl_env(
        &[
            "lab",
            "up",
            "--name",
            &lab.name,
            "--datastore",
            "kubernetes",
            "--bin-dir",
            bin.to_str().unwrap_or_default(),
        ],
        &[("WEFT_KUBE_BIN", dir.as_ref())],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("scripts/kube-binaries.sh"), "{err}");
    lab.assert_gone();
}
