//! A real Kubernetes cluster networked by weft (`lab up --datastore kubernetes --kubelet`):
//! two nodes, each a network namespace with its own view of the host's paths running
//! containerd, kubelet and kube-proxy; weft installed from deploy/weft.yaml (its DaemonSet
//! pods install the plugins and write the conflist containerd reads). Everything below goes
//! through kubectl as an operator's would, dual-stack (1.20's alpha gate): a 4-replica
//! Deployment spread over both nodes, the pod×pod matrix over IPv4 and over IPv6 (HTTP,
//! each pod asking every other), node → pod, pod → both ClusterIPs of a dual-stack Service
//! (kube-proxy's DNAT, hairpin included), pod → outside over each family (masqueraded to
//! the node's address of that family, as the outside's listener sees it), `kubectl exec` and `kubectl logs`, and a default-deny
//! policy plus an allow rule flipping exactly the probes they name. Then the Deployment is
//! deleted (containerd's DELs leave no veth and no lease) and `lab down` leaves no
//! process, namespace, mount, cgroup or file.
//!
//! Needs the Kubernetes binaries (scripts/kube-binaries.sh, or WEFT_KUBE_BIN) and the
//! image archives (WEFT_LAB_IMAGES, else scripts/lab-images.sh is run: a static release
//! build the first time).
//!
//! A second cluster lives through faults: counted traffic where a step claims that running
//! flows lose nothing:
//! - a Deployment created before weft is installed waits (Pending on NotReady nodes), then
//!   starts once `lab up` has installed weft from the manifest;
//! - UDP flows both ways between two of its pods on different nodes, each datagram
//!   numbered, run through: weftd's pod deleted (the DaemonSet makes another), the
//!   DaemonSet rolled (`kubectl rollout restart`), kubelet restarted on a node; not one
//!   datagram lost, and the pods never restarted;
//! - a node added after install joins (Ready, weftd on it, its pod reachable from the
//!   others), and removed again: its WeftBlocks go with its Node;
//! - a node whose runtime lost its pods (every process killed, containerd's state and
//!   the pods' namespace files wiped): no DEL comes, and weftd's GC collects the old
//!   pods' endpoints and leases once the node is back.
//!
//! The two run at once (one test binary): two labs, each with its own names and nodes.

mod lab_support;

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lab_support::kube::lab_images;
use lab_support::traffic::{UdpFlow, assert_no_loss};
use lab_support::*;
use serde_json::Value;
use weft_net::NetNs;

const PROBE_IMAGE: &str = "localhost/weft-probe:lab";
const HTTP_PORT: u16 = 8080;
/// The outside's addresses (topology: TEST-NET-3 and the documentation prefix).
const OUTSIDE: &str = "203.0.113.1";
const OUTSIDE_V6: &str = "2001:db8:ff::1";
const OUTSIDE_PORT: u16 = 18080;

/// Runs `f` on a thread inside the named network namespace.
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{ns}");
    let handle = NetNs::open(Path::new(&path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    handle
        .run(f)
        .unwrap_or_else(|e| panic!("entering {path}: {e}"))
}

struct Cluster {
    lab: Lab,
}

impl Cluster {
    /// Running pods of the Deployment: name → (node, address of the family as a URL host:
    /// `10.244.0.2` or `[fd00:10:244::2]`).
    fn probe_pods(&self, v6: bool) -> BTreeMap<String, (String, String)> {
        let list = self.lab.kube_get(&["pods", "-l", "app=probe"]);
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| {
                p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
            })
            .map(|p| {
                let ip = p["status"]["podIPs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a["ip"].as_str()?.parse::<IpAddr>().ok())
                    .find(|ip| ip.is_ipv6() == v6)
                    .map(url_host)
                    .unwrap_or_default();
                let name = p["metadata"]["name"].as_str().unwrap_or_default();
                let node = p["spec"]["nodeName"].as_str().unwrap_or_default();
                (name.to_owned(), (node.to_owned(), ip))
            })
            .collect()
    }

    /// `kubectl exec pod -- sh -c script`, its stdout (whatever the exit status).
    fn exec(&self, pod: &str, script: &str) -> String {
        let out = self.lab.kubectl(&["exec", pod, "--", "sh", "-c", script]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// From pod `from`, an HTTP GET to each target, all at once; which answered with the
    /// probe's page. (busybox 1.35's `wget -T` crashes: the timeout is `timeout`'s. And
    /// `busybox wget`, not `wget`: the suite's exec-guard judges a program by its path on
    /// the host, where /bin/wget may be another package's.)
    fn http_from(&self, from: &str, targets: &[String]) -> BTreeMap<String, bool> {
        let mut script: String = targets
            .iter()
            .map(|t| {
                format!(
                    "(if timeout 2 busybox wget -q -O - http://{t}/ 2>/dev/null | grep -q weft-probe; \
                     then echo '{t} ok'; else echo '{t} no'; fi) & "
                )
            })
            .collect();
        script.push_str("wait");
        let out = self.exec(from, &script);
        targets
            .iter()
            .map(|t| (t.clone(), out.lines().any(|l| l == format!("{t} ok"))))
            .collect()
    }

    /// The pod×pod matrix over HTTP: (from, to) → answered.
    fn matrix(
        &self,
        pods: &BTreeMap<String, (String, String)>,
    ) -> BTreeMap<(String, String), bool> {
        let mut cells = BTreeMap::new();
        for from in pods.keys() {
            let targets: Vec<String> = pods
                .iter()
                .filter(|(to, _)| *to != from)
                .map(|(_, (_, ip))| format!("{ip}:{HTTP_PORT}"))
                .collect();
            let answers = self.http_from(from, &targets);
            for (to, (_, ip)) in pods.iter().filter(|(to, _)| *to != from) {
                let ok = answers[&format!("{ip}:{HTTP_PORT}")];
                cells.insert((from.clone(), to.clone()), ok);
            }
        }
        cells
    }
}

/// An address as the host part of a URL or a socket address.
fn url_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// A Deployment `name` (pods labelled `app: <name>`) of probe pods serving HTTP on
/// HTTP_PORT, spread evenly over the nodes (maxSkew 1): both nodes get pods, so a matrix
/// holds same-node and cross-node pairs.
fn spread_deployment(name: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: default}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 1
      topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: kubernetes.io/hostname
        whenUnsatisfiable: DoNotSchedule
        labelSelector: {{matchLabels: {{app: {name}}}}}
      containers:
      - name: probe
        image: {PROBE_IMAGE}
        imagePullPolicy: Never
        command: ["httpd", "-f", "-v", "-p", "{HTTP_PORT}", "-h", "/var/www"]
"#
    )
}

/// The `probe` Deployment and its dual-stack Service.
fn deployment(replicas: u32) -> String {
    format!(
        r#"{}---
apiVersion: v1
kind: Service
metadata: {{name: probe, namespace: default}}
spec:
  ipFamilyPolicy: PreferDualStack
  selector: {{app: probe}}
  ports:
  - {{port: 80, targetPort: {HTTP_PORT}}}
"#,
        spread_deployment("probe", replicas)
    )
}

const DEFAULT_DENY: &str = r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny, namespace: default}
spec:
  podSelector: {}
  policyTypes: [Ingress]
"#;

const ALLOW_FROM_TRUSTED: &str = r#"apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-trusted, namespace: default}
spec:
  podSelector: {matchLabels: {app: probe}}
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector: {matchLabels: {trusted: "yes"}}
    ports:
    - {protocol: TCP, port: 8080}
"#;

/// A listener in the outside's namespace that reports the source address of each
/// connection it accepts (the masqueraded address of a pod's node).
fn outside_listener(lab: &Lab, ip: IpAddr) -> TcpListener {
    let addr = SocketAddr::new(ip, OUTSIDE_PORT);
    let listener = in_netns(&lab.ns("out"), || TcpListener::bind(addr))
        .unwrap_or_else(|e| panic!("listen on {addr} in the outside: {e}"));
    listener.set_nonblocking(true).expect("nonblocking");
    listener
}

/// The sources of the connections waiting on `listener`, within `wait`.
fn accepted_sources(listener: &TcpListener, wait: Duration) -> Vec<IpAddr> {
    let deadline = Instant::now() + wait;
    let mut sources = Vec::new();
    while Instant::now() < deadline {
        match listener.accept() {
            Ok((mut stream, peer)) => {
                sources.push(peer.ip());
                // Read the request, answer nothing: wget's exit status is not the point.
                let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
                let mut buf = [0u8; 512];
                let _ = stream.read(&mut buf);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    sources
}

/// Mount points whose path names the lab's state dir, in the host's view.
fn lab_mounts(lab: &Lab) -> Vec<String> {
    let marker = format!("/run/weft-lab/{}/", lab.name);
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&marker) || l.contains(&format!("/run/weft-lab/{} ", lab.name)))
        .map(str::to_owned)
        .collect()
}

/// cgroup directories of the lab's kubelets, in every hierarchy.
fn lab_cgroups(lab: &Lab) -> Vec<String> {
    let prefix = format!("weft-lab.{}.", lab.name);
    let mut found = Vec::new();
    for h in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        for e in std::fs::read_dir(h.path()).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                found.push(e.path().display().to_string());
            }
        }
    }
    found
}

#[test]
fn a_kubelet_cluster_runs_pods_on_weft_installed_from_the_manifest() {
    require_cluster_binaries();
    let images = lab_images();
    let images_arg = images.display().to_string();
    let cluster = Cluster { lab: Lab::new() };
    let lab = &cluster.lab;
    let progress = lab.up_ok(&[
        "--datastore",
        "kubernetes",
        "--kubelet",
        "--ipv6",
        "--nodes",
        "2",
        "--images",
        &images_arg,
    ]);
    assert!(
        progress.contains("installing weft: kubectl apply -f deploy/weft.yaml"),
        "{progress}"
    );

    // Installed from the manifest: the DaemonSet's pods ready on both nodes, both nodes
    // Ready, and on each node the plugins its init container installed and the conflist
    // weftd wrote, in the node's own directories.
    let ds = lab.kube_get(&["-n", "weft-system", "daemonset", "weft"]);
    assert_eq!(ds["status"]["numberReady"], 2, "{}", ds["status"]);
    let nodes = lab.kube_get(&["nodes"]);
    for node in nodes["items"].as_array().expect("nodes") {
        let ready = node["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        assert!(ready, "{}", node["status"]["conditions"]);
    }
    for n in ["n1", "n2"] {
        let view = lab.state_dir().join("nodes").join(n).join("view");
        for plugin in ["weft", "weft-ipam", "loopback", "portmap"] {
            assert!(view.join("cni-bin").join(plugin).is_file(), "{n}: {plugin}");
        }
        let conflist: Value = serde_json::from_slice(
            &std::fs::read(view.join("cni-conf/10-weft.conflist")).expect("conflist"),
        )
        .expect("conflist json");
        // containerd 1.6 speaks CNI up to 1.0.0: the manifest says so.
        assert_eq!(conflist["cniVersion"], "1.0.0", "{n}");
    }

    // A Deployment spread over both nodes, and its Service.
    lab.kubectl_file_ok("apply", &deployment(4));
    lab.kubectl_ok(&["rollout", "status", "deployment/probe", "--timeout=120s"]);
    let pods = cluster.probe_pods(false);
    assert_eq!(pods.len(), 4, "{pods:?}");
    let per_node = |n: &str| pods.values().filter(|(node, _)| node == n).count();
    assert_eq!((per_node("n1"), per_node("n2")), (2, 2), "{pods:?}");
    // Dual-stack (1.20's alpha gate, on every component of the lab): both families'
    // addresses, from weft's two cluster CIDRs.
    let pods6 = cluster.probe_pods(true);
    for (name, (_, ip)) in &pods {
        assert!(
            ip.starts_with("10.244."),
            "{name}: {ip} is not in 10.244.0.0/16"
        );
        let ip6 = &pods6[name].1;
        assert!(
            ip6.starts_with("[fd00:10:244:"),
            "{name}: {ip6} is not in fd00:10:244::/56"
        );
    }

    // Every pod reaches every other pod, over each family.
    for (family, pods) in [("IPv4", &pods), ("IPv6", &pods6)] {
        let all = cluster.matrix(pods);
        let failed: Vec<_> = all.iter().filter(|(_, ok)| !**ok).collect();
        assert!(failed.is_empty(), "{family} pod→pod failed: {failed:?}");
        assert_eq!(all.len(), 12);
    }

    // Every node reaches every pod (the node's own namespace, as kubelet's probes do).
    for n in ["n1", "n2"] {
        for (name, (_, ip)) in pods.iter().chain(pods6.iter()) {
            let addr: SocketAddr = format!("{ip}:{HTTP_PORT}").parse().expect("address");
            let ok = in_netns(&lab.ns(n), || {
                TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
            });
            assert!(ok, "node {n} → pod {name} ({addr})");
        }
    }

    // Every pod reaches both of the Service's ClusterIPs (kube-proxy's DNAT next to
    // weft's rules), its own endpoint among them (hairpin).
    let svc = lab.kube_get(&["service", "probe"]);
    let cluster_ips: Vec<String> = svc["spec"]["clusterIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip.as_str()?.parse().ok())
        .map(|ip| format!("{}:80", url_host(ip)))
        .collect();
    assert_eq!(cluster_ips.len(), 2, "{}", svc["spec"]);
    for name in pods.keys() {
        for _ in 0..3 {
            let answers = cluster.http_from(name, &cluster_ips);
            assert!(
                answers.values().all(|ok| *ok),
                "{name} → service: {answers:?}"
            );
        }
    }

    // Every pod reaches the outside over each family, masqueraded to its node's address
    // of that family.
    let node_addrs: BTreeMap<(String, bool), IpAddr> = lab.kube_get(&["nodes"])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|n| {
            let node = n["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            n["status"]["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|a| a["type"] == "InternalIP")
                .filter_map(|a| a["address"].as_str()?.parse::<IpAddr>().ok())
                .map(move |ip| ((node.clone(), ip.is_ipv6()), ip))
                .collect::<Vec<_>>()
        })
        .collect();
    for outside in [OUTSIDE, OUTSIDE_V6] {
        let outside: IpAddr = outside.parse().expect("address");
        let listener = outside_listener(lab, outside);
        for (name, (node, _)) in &pods {
            let url = format!("http://{}:{OUTSIDE_PORT}/", url_host(outside));
            cluster.exec(
                name,
                &format!("timeout 2 busybox wget -q -O /dev/null {url}; true"),
            );
            let sources = accepted_sources(&listener, Duration::from_millis(300));
            let want = node_addrs[&(node.clone(), outside.is_ipv6())];
            assert_eq!(sources, vec![want], "{name} on {node} → outside {outside}");
        }
    }

    // kubectl exec (above) and kubectl logs: httpd -v logs each answer it gave.
    let first = pods.keys().next().expect("a pod").clone();
    let logs = lab.kubectl_ok(&["logs", &first]);
    assert!(
        logs.contains("response:200"),
        "kubectl logs {first}: {logs}"
    );

    // NetworkPolicy with kubectl: default-deny closes every pod→pod probe; an allow rule
    // for pods labelled trusted=yes reopens exactly those from the one pod so labelled.
    lab.kubectl_file_ok("apply", DEFAULT_DENY);
    let started = Instant::now();
    let (closed, took) = wait_for(
        Duration::from_secs(10),
        || {
            let m = cluster.matrix(&pods);
            m.values().all(|ok| !*ok).then_some(m)
        },
        || format!("{:?}", cluster.matrix(&pods)),
    );
    eprintln!(
        "default-deny enforced {took:?} after apply ({:?} total)",
        started.elapsed()
    );
    assert_eq!(closed.len(), 12);
    lab.kubectl_ok(&["label", "pod", &first, "trusted=yes"]);
    lab.kubectl_file_ok("apply", ALLOW_FROM_TRUSTED);
    let expected = |from: &str| from == first;
    let (opened, took) = wait_for(
        Duration::from_secs(10),
        || {
            let m = cluster.matrix(&pods);
            m.iter()
                .all(|((from, _), ok)| *ok == expected(from))
                .then_some(m)
        },
        || format!("{:?}", cluster.matrix(&pods)),
    );
    eprintln!("allow rule enforced {took:?} after apply");
    assert_eq!(opened.values().filter(|ok| **ok).count(), 3);

    // Each node's weftd holds its two pods as policy endpoints…
    for n in ["n1", "n2"] {
        let st = lab.weftd_status(n);
        assert_eq!(st["policy"]["endpoints"], 2, "{n}: {st}");
    }
    // …until the Deployment is deleted: containerd's DELs remove every pod's veth, lease
    // and endpoint.
    lab.kubectl_ok(&[
        "delete",
        "deployment",
        "probe",
        "--wait=true",
        "--timeout=60s",
    ]);
    wait_for(
        Duration::from_secs(60),
        || cluster.probe_pods(false).is_empty().then_some(()),
        || format!("{:?}", cluster.probe_pods(false)),
    );
    for n in ["n1", "n2"] {
        // The pods' host ends were weft0's ports; their leases, files named by address in
        // weft-ipam's store (the node's /var/lib/weft/ipam/weft).
        let ports = || {
            ipj(&lab.ns(n), &["link", "show", "master", "weft0"])
                .as_array()
                .map(Vec::len)
                .unwrap_or(0)
        };
        let store = lab
            .state_dir()
            .join("nodes")
            .join(n)
            .join("view/weft/ipam/weft");
        let leases = || {
            std::fs::read_dir(&store)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().parse::<IpAddr>().is_ok())
                .count()
        };
        let endpoints = || lab.weftd_status(n)["policy"]["endpoints"].as_u64();
        wait_for(
            Duration::from_secs(30),
            || (ports() == 0 && leases() == 0 && endpoints() == Some(0)).then_some(()),
            || {
                format!(
                    "{n}: {} bridge ports, {} leases, {:?} endpoints left",
                    ports(),
                    leases(),
                    endpoints()
                )
            },
        );
    }

    // Down: nothing of the lab is left on the machine.
    let name = lab.name.clone();
    lab.ok(&["down"], &[]);
    lab.assert_gone();
    assert!(lab_mounts(lab).is_empty(), "{:?}", lab_mounts(lab));
    assert!(lab_cgroups(lab).is_empty(), "{:?}", lab_cgroups(lab));
    let survivors: Vec<u32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        // Zombies (killed, their parent gone, not reaped yet) still name their cgroup.
        .filter(|pid| {
            alive(*pid)
                && std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                    .is_ok_and(|c| c.contains(&format!("/weft-lab.{name}.")))
        })
        .collect();
    assert!(
        survivors.is_empty(),
        "processes in the lab's cgroups: {survivors:?}"
    );
}

const FLOW_PORT: u16 = 17001;
const FLOW_INTERVAL: Duration = Duration::from_millis(10);

/// A pod as the API has it.
#[derive(Debug, Clone)]
struct PodInfo {
    uid: String,
    node: String,
    ip: String,
    phase: String,
    restarts: u64,
}

fn pods_of(lab: &Lab, selector: &str) -> BTreeMap<String, PodInfo> {
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
    pods_of(lab, "app.kubernetes.io/name=weft")
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
    lab.kubectl_file_ok("apply", &spread_deployment("early", 2));
    std::thread::sleep(Duration::from_secs(3));
    let waiting = pods_of(&lab, "app=early");
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
    let before = pods_of(&lab, "app=early");
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
    let after = pods_of(&lab, "app=early");
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
    let now = pods_of(&lab, "app=early");
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
        &format!("timeout 3 busybox wget -q -O - http://{on_n3}:{HTTP_PORT}/"),
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

    // A node whose runtime lost its pods: every process of n2 killed (containerd, its
    // shims, kubelet, kube-proxy, the pods, weftd's pod too) and containerd's state wiped
    // with its pods' namespace files, but not weft's /run/weft or its leases. No DEL ever
    // comes for the pods that were there; when `lab up` has restarted the node, kubelet
    // makes its pods anew, and weftd's GC collects the old ones: their endpoint files and
    // their leases go.
    let view = lab.state_dir().join("nodes/n2/view");
    let endpoints_dir = view.join("run/weft/endpoints");
    let store = view.join("weft/ipam/weft");
    let endpoint_files = || -> Vec<String> {
        std::fs::read_dir(&endpoints_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    let leases = || -> Vec<String> {
        std::fs::read_dir(&store)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.parse::<IpAddr>().is_ok())
            .collect()
    };
    let old_endpoints = endpoint_files();
    assert!(!old_endpoints.is_empty() && !leases().is_empty());
    let n2_ns = netns_inode(&lab.ns("n2"));
    let n2_cgroup = format!("/weft-lab.{}.n2/", lab.name);
    let doomed: Vec<u32> = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            use std::os::unix::fs::MetadataExt;
            let in_ns =
                std::fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| m.ino() == n2_ns);
            let in_pods = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .is_ok_and(|c| c.contains(&n2_cgroup));
            in_ns || in_pods
        })
        .collect();
    assert!(doomed.len() > 5, "n2's processes: {doomed:?}");
    for pid in &doomed {
        // SAFETY: pids of the lab's node n2, found just above.
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
    wait_for(
        Duration::from_secs(20),
        || doomed.iter().all(|p| !alive(*p)).then_some(()),
        || "n2's processes survived SIGKILL".to_owned(),
    );
    // Emptied, not removed: each directory is the source of a bind mount in the node's
    // view, which would keep showing the removed one.
    for dir in ["containerd", "run/containerd", "run/netns"] {
        for e in std::fs::read_dir(view.join(dir))
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = e.path();
            let gone = if e.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            gone.unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        }
    }
    lab.up_ok(&[]);
    wait_for(
        Duration::from_secs(120),
        || {
            let now = endpoint_files();
            let left: Vec<&String> = old_endpoints.iter().filter(|e| now.contains(e)).collect();
            let on_n2 = pods_of(&lab, "app=early")
                .into_values()
                .any(|p| p.node == "n2" && p.phase == "Running" && !p.ip.is_empty());
            (left.is_empty() && on_n2).then_some(())
        },
        || {
            format!(
                "old endpoints {old_endpoints:?}, now {:?}",
                endpoint_files()
            )
        },
    );
    // A lease file names its container on its first line; the old pods' are gone.
    let old_ids: Vec<String> = old_endpoints
        .iter()
        .filter_map(|e| e.strip_suffix("-eth0.json").map(str::to_owned))
        .collect();
    assert!(!old_ids.is_empty(), "{old_endpoints:?}");
    let now = leases();
    let kept: Vec<&String> = now
        .iter()
        .filter(|l| {
            let text = std::fs::read_to_string(store.join(l)).unwrap_or_default();
            old_ids
                .iter()
                .any(|id| text.lines().next() == Some(id.as_str()))
        })
        .collect();
    assert!(kept.is_empty(), "old leases kept: {kept:?} (now {now:?})");

    lab.ok(&["down"], &[]);
    lab.assert_gone();
}
