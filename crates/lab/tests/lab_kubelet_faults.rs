//! The life of a real cluster networked by weft (`lab up --kubelet`), with counted traffic
//! where a step claims that running flows lose nothing:
//! - a Deployment created before weft is installed waits (Pending on NotReady nodes), then
//!   starts once `lab up` has installed weft from the manifest;
//! - UDP flows both ways between two of its pods on different nodes, each datagram
//!   numbered, run through: weftd's pod deleted (the DaemonSet makes another), the
//!   DaemonSet rolled (`kubectl rollout restart`), kubelet restarted on a node; not one
//!   datagram lost, and the pods never restarted;
//! - a node added after install joins (Ready, weftd on it, its pod reachable from the
//!   others), and removed again: its WeftBlocks go with its Node.
//!
//! Needs the Kubernetes binaries and the image archives (see lab_kubelet.rs).

mod lab_support;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use lab_support::kube::lab_images;
use lab_support::traffic::{UdpFlow, assert_no_loss};
use lab_support::*;
use serde_json::Value;

const PROBE_IMAGE: &str = "localhost/weft-probe:lab";
const FLOW_PORT: u16 = 17001;
const FLOW_INTERVAL: Duration = Duration::from_millis(10);

fn deployment(replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: early, namespace: default}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: early}}}}
  template:
    metadata: {{labels: {{app: early}}}}
    spec:
      terminationGracePeriodSeconds: 1
      topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: kubernetes.io/hostname
        whenUnsatisfiable: DoNotSchedule
        labelSelector: {{matchLabels: {{app: early}}}}
      containers:
      - name: probe
        image: {PROBE_IMAGE}
        imagePullPolicy: Never
        command: ["httpd", "-f", "-p", "8080", "-h", "/var/www"]
"#
    )
}

/// A pod as the API has it.
#[derive(Debug, Clone)]
struct PodInfo {
    uid: String,
    node: String,
    ip: String,
    phase: String,
    restarts: u64,
}

fn pods(lab: &Lab, selector: &str) -> BTreeMap<String, PodInfo> {
    lab.kube_get(&["pods", "-A", "-l", selector])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let restarts = p["status"]["containerStatuses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["restartCount"].as_u64())
                .sum();
            (
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                PodInfo {
                    uid: p["metadata"]["uid"].as_str().unwrap_or_default().to_owned(),
                    node: p["spec"]["nodeName"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    ip: p["status"]["podIP"].as_str().unwrap_or_default().to_owned(),
                    phase: p["status"]["phase"].as_str().unwrap_or_default().to_owned(),
                    restarts,
                },
            )
        })
        .collect()
}

/// The network namespace of a running pod, as a path any thread can enter: that of a
/// process in the pod's cgroup (kubelet names it `pod<uid>`).
fn pod_netns(uid: &str) -> PathBuf {
    let marker = format!("/pod{uid}/");
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.contains(&marker))
        {
            return PathBuf::from(format!("/proc/{pid}/ns/net"));
        }
    }
    panic!("no process of pod {uid}");
}

fn weft_pod_on(lab: &Lab, node: &str) -> Option<String> {
    pods(lab, "app.kubernetes.io/name=weft")
        .into_iter()
        .find(|(_, p)| p.node == node && p.phase == "Running")
        .map(|(name, _)| name)
}

fn daemonset_ready(lab: &Lab, nodes: u64) -> bool {
    let ds = lab.kube_get(&["-n", "weft-system", "daemonset", "weft"]);
    let s = &ds["status"];
    s["numberReady"] == nodes
        && s["updatedNumberScheduled"] == nodes
        && s["numberUnavailable"].is_null()
}

fn node_ready(node: &Value) -> bool {
    node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

#[test]
fn a_kubelet_cluster_keeps_its_pods_flowing_through_weft_and_kubelet_restarts() {
    require_cluster_binaries();
    let images = lab_images();
    let images_arg = images.display().to_string();
    let lab = Lab::new();

    // Nodes first, weft not yet installed: the Deployment's pods wait.
    lab.up_ok(&[
        "--datastore",
        "kubernetes",
        "--kubelet",
        "--nodes",
        "2",
        "--images",
        &images_arg,
        "--until",
        "nodes",
    ]);
    lab.kubectl_file_ok("apply", &deployment(2));
    std::thread::sleep(Duration::from_secs(3));
    let waiting = pods(&lab, "app=early");
    assert_eq!(waiting.len(), 2, "{waiting:?}");
    assert!(
        waiting
            .values()
            .all(|p| p.phase == "Pending" && p.ip.is_empty()),
        "pods started before weft: {waiting:?}"
    );
    let progress = lab.up_ok(&[]);
    assert!(progress.contains("installing weft"), "{progress}");
    lab.kubectl_ok(&["rollout", "status", "deployment/early", "--timeout=120s"]);
    let before = pods(&lab, "app=early");
    let (a, b) = {
        let on = |n: &str| {
            before
                .iter()
                .find(|(_, p)| p.node == n)
                .map(|(name, p)| (name.clone(), p.clone()))
                .unwrap_or_else(|| panic!("no pod on {n}: {before:?}"))
        };
        (on("n1"), on("n2"))
    };

    // Counted flows both ways between the two nodes' pods.
    let ends = |x: &(String, PodInfo)| (x.0.clone(), pod_netns(&x.1.uid));
    let (ea, eb) = (ends(&a), ends(&b));
    let ip = |x: &(String, PodInfo)| x.1.ip.parse::<IpAddr>().expect("pod IP");
    let flows = vec![
        UdpFlow::between(
            &[(&ea.0, ea.1.clone()), (&eb.0, eb.1.clone())],
            ip(&b),
            FLOW_PORT,
            FLOW_INTERVAL,
            false,
        ),
        UdpFlow::between(
            &[(&eb.0, eb.1.clone()), (&ea.0, ea.1.clone())],
            ip(&a),
            FLOW_PORT,
            FLOW_INTERVAL,
            false,
        ),
    ];
    for f in &flows {
        f.wait_flowing(20, Duration::from_secs(10));
    }

    // weftd's pod deleted: the DaemonSet starts another, which adopts the node's state.
    let old = weft_pod_on(&lab, "n1").expect("weftd pod on n1");
    lab.kubectl_ok(&["-n", "weft-system", "delete", "pod", &old, "--wait=true"]);
    wait_for(
        Duration::from_secs(90),
        || {
            weft_pod_on(&lab, "n1")
                .filter(|p| *p != old)
                .and_then(|_| daemonset_ready(&lab, 2).then_some(()))
        },
        || {
            format!(
                "{}",
                lab.kube_get(&["-n", "weft-system", "daemonset", "weft"])["status"]
            )
        },
    );
    for f in &flows {
        f.wait_flowing(20, Duration::from_secs(10));
    }

    // The DaemonSet rolled, one node at a time.
    lab.kubectl_ok(&["-n", "weft-system", "rollout", "restart", "daemonset/weft"]);
    lab.kubectl_ok(&[
        "-n",
        "weft-system",
        "rollout",
        "status",
        "daemonset/weft",
        "--timeout=180s",
    ]);
    for f in &flows {
        f.wait_flowing(20, Duration::from_secs(10));
    }

    // kubelet restarted on n1 (`lab up` starts what is not running).
    let pidfile = lab.state_dir().join("nodes/n1/kubelet.pid");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .expect("kubelet pidfile")
        .trim()
        .parse()
        .expect("pid");
    // SAFETY: a pid the lab recorded for its kubelet, signalled once.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    wait_for(
        Duration::from_secs(20),
        || (!alive(pid as u32)).then_some(()),
        || format!("kubelet {pid} still running"),
    );
    lab.up_ok(&[]);
    assert_ne!(
        std::fs::read_to_string(&pidfile).expect("pidfile").trim(),
        pid.to_string(),
        "a new kubelet"
    );
    wait_for(
        Duration::from_secs(60),
        || {
            let nodes = lab.kube_get(&["nodes"]);
            nodes["items"]
                .as_array()
                .is_some_and(|ns| ns.iter().all(node_ready))
                .then_some(())
        },
        || "nodes not Ready after kubelet's restart".to_owned(),
    );
    for f in &flows {
        f.wait_flowing(20, Duration::from_secs(10));
    }
    assert_no_loss(
        flows,
        "through weftd's pod deleted, the DaemonSet rolled, kubelet restarted",
    );
    let after = pods(&lab, "app=early");
    for (name, p) in &before {
        let now = after
            .get(name)
            .unwrap_or_else(|| panic!("{name} gone: {after:?}"));
        assert_eq!((&now.uid, now.restarts), (&p.uid, 0), "{name} restarted");
    }

    // A node added after install joins: Ready, weftd on it, a pod on it reachable.
    lab.ok(&["node", "add"], &[]);
    let nodes = lab.kube_get(&["node", "n3"]);
    assert!(node_ready(&nodes), "{}", nodes["status"]);
    assert!(weft_pod_on(&lab, "n3").is_some());
    lab.kubectl_ok(&["scale", "deployment/early", "--replicas=3"]);
    lab.kubectl_ok(&["rollout", "status", "deployment/early", "--timeout=120s"]);
    let now = pods(&lab, "app=early");
    let on_n3 = now
        .values()
        .find(|p| p.node == "n3")
        .unwrap_or_else(|| panic!("no pod on n3: {now:?}"))
        .ip
        .clone();
    let out = lab.kubectl_ok(&[
        "exec",
        &a.0,
        "--",
        "sh",
        "-c",
        &format!("timeout 3 wget -q -O - http://{on_n3}:8080/"),
    ]);
    assert!(
        out.contains("weft-probe"),
        "{} → n3's pod {on_n3}: {out}",
        a.0
    );
    let blocks_of = |node: &str| -> Vec<String> {
        lab.kube_get(&["weftblocks"])["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|b| b["spec"]["node"] == node)
            .filter_map(|b| b["spec"]["cidr"].as_str().map(str::to_owned))
            .collect()
    };
    assert!(!blocks_of("n3").is_empty(), "n3 leased no block");

    // …and removed: its Node goes, and its WeftBlocks with it.
    lab.ok(&["node", "del"], &["n3"]);
    wait_for(
        Duration::from_secs(60),
        || blocks_of("n3").is_empty().then_some(()),
        || format!("n3's blocks left: {:?}", blocks_of("n3")),
    );
    assert!(!lab.kubectl(&["get", "node", "n3"]).status.success());

    lab.ok(&["down"], &[]);
    lab.assert_gone();
}
