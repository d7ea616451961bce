//! A real Kubernetes cluster networked by weft (`lab up --datastore kubernetes --kubelet`):
//! two nodes, each a network namespace with its own view of the host's paths running
//! containerd, kubelet and kube-proxy; weft installed from deploy/weft.yaml (its DaemonSet
//! pods install the plugins and write the conflist containerd reads). Everything below goes
//! through kubectl as an operator's would: a 4-replica Deployment spread over both nodes,
//! the pod×pod matrix (HTTP, each pod asking every other), node → pod, pod → Service
//! (kube-proxy's ClusterIP), pod → outside (masqueraded to the node's address, as the
//! outside's listener sees it), `kubectl exec` and `kubectl logs`, and a default-deny
//! policy plus an allow rule flipping exactly the probes they name. Then the Deployment is
//! deleted (containerd's DELs leave no veth and no lease) and `lab down` leaves no
//! process, namespace, mount, cgroup or file.
//!
//! Needs the Kubernetes binaries (scripts/kube-binaries.sh, or WEFT_KUBE_BIN) and the
//! image archives (WEFT_LAB_IMAGES, else scripts/lab-images.sh is run: a static release
//! build the first time).

mod lab_support;

use std::collections::BTreeMap;
use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use lab_support::kube::lab_images;
use lab_support::*;
use serde_json::Value;
use weft_net::NetNs;

const PROBE_IMAGE: &str = "localhost/weft-probe:lab";
const HTTP_PORT: u16 = 8080;
/// The outside's address (topology: TEST-NET-3).
const OUTSIDE: &str = "203.0.113.1";
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
    /// Running pods of the Deployment: name → (node, IPv4).
    fn probe_pods(&self) -> BTreeMap<String, (String, String)> {
        let list = self.lab.kube_get(&["pods", "-l", "app=probe"]);
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| {
                p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
            })
            .map(|p| {
                (
                    p["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    (
                        p["spec"]["nodeName"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        p["status"]["podIP"].as_str().unwrap_or_default().to_owned(),
                    ),
                )
            })
            .collect()
    }

    /// `kubectl exec pod -- sh -c script`, its stdout (whatever the exit status).
    fn exec(&self, pod: &str, script: &str) -> String {
        let out = self.lab.kubectl(&["exec", pod, "--", "sh", "-c", script]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// From pod `from`, an HTTP GET to each target, all at once; which answered with the
    /// probe's page. (busybox 1.35's `wget -T` crashes: the timeout is busybox's
    /// `timeout`.)
    fn http_from(&self, from: &str, targets: &[String]) -> BTreeMap<String, bool> {
        let mut script: String = targets
            .iter()
            .map(|t| {
                format!(
                    "(if timeout 2 wget -q -O - http://{t}/ 2>/dev/null | grep -q weft-probe; \
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

fn deployment(replicas: u32) -> String {
    // Spread evenly (maxSkew 1 over the nodes): both nodes get pods, so the matrix holds
    // same-node and cross-node pairs.
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: probe, namespace: default}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: probe}}}}
  template:
    metadata: {{labels: {{app: probe}}}}
    spec:
      terminationGracePeriodSeconds: 1
      topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: kubernetes.io/hostname
        whenUnsatisfiable: DoNotSchedule
        labelSelector: {{matchLabels: {{app: probe}}}}
      containers:
      - name: probe
        image: {PROBE_IMAGE}
        imagePullPolicy: Never
        command: ["httpd", "-f", "-v", "-p", "{HTTP_PORT}", "-h", "/var/www"]
---
apiVersion: v1
kind: Service
metadata: {{name: probe, namespace: default}}
spec:
  selector: {{app: probe}}
  ports:
  - {{port: 80, targetPort: {HTTP_PORT}}}
"#
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
fn outside_listener(lab: &Lab) -> TcpListener {
    let addr: SocketAddr = format!("{OUTSIDE}:{OUTSIDE_PORT}")
        .parse()
        .expect("address");
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
    let pods = cluster.probe_pods();
    assert_eq!(pods.len(), 4, "{pods:?}");
    let per_node = |n: &str| pods.values().filter(|(node, _)| node == n).count();
    assert_eq!((per_node("n1"), per_node("n2")), (2, 2), "{pods:?}");
    for (name, (_, ip)) in &pods {
        let ip: IpAddr = ip.parse().unwrap_or_else(|e| panic!("{name}: {ip}: {e}"));
        assert!(
            matches!(ip, IpAddr::V4(v4) if v4.octets()[..2] == [10, 244]),
            "{name}: {ip} is not in the cluster CIDR"
        );
    }

    // Every pod reaches every other pod.
    let all = cluster.matrix(&pods);
    let failed: Vec<_> = all.iter().filter(|(_, ok)| !**ok).collect();
    assert!(failed.is_empty(), "pod→pod failed: {failed:?}");
    assert_eq!(all.len(), 12);

    // Every node reaches every pod (the node's own namespace, as kubelet's probes do).
    for n in ["n1", "n2"] {
        for (name, (_, ip)) in &pods {
            let addr: SocketAddr = format!("{ip}:{HTTP_PORT}").parse().expect("address");
            let ok = in_netns(&lab.ns(n), || {
                TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
            });
            assert!(ok, "node {n} → pod {name} ({addr})");
        }
    }

    // Every pod reaches the Service's ClusterIP (kube-proxy's DNAT next to weft's rules).
    let svc = lab.kube_get(&["service", "probe"]);
    let cluster_ip = svc["spec"]["clusterIP"]
        .as_str()
        .expect("clusterIP")
        .to_owned();
    for name in pods.keys() {
        let answers = cluster.http_from(name, &[format!("{cluster_ip}:80")]);
        assert!(
            answers.values().all(|ok| *ok),
            "{name} → service {cluster_ip}"
        );
    }

    // Every pod reaches the outside, masqueraded to its node's address.
    let listener = outside_listener(lab);
    let node_addr: BTreeMap<String, IpAddr> = lab.kube_get(&["nodes"])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            let ip = n["status"]["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["type"] == "InternalIP")
                .and_then(|a| a["address"].as_str())
                .and_then(|a| a.parse().ok())
                .expect("InternalIP");
            (
                n["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                ip,
            )
        })
        .collect();
    for (name, (node, _)) in &pods {
        cluster.exec(
            name,
            &format!("timeout 2 wget -q -O /dev/null http://{OUTSIDE}:{OUTSIDE_PORT}/; true"),
        );
        let sources = accepted_sources(&listener, Duration::from_millis(300));
        assert_eq!(sources, vec![node_addr[node]], "{name} on {node} → outside");
    }
    drop(listener);

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
        || cluster.probe_pods().is_empty().then_some(()),
        || format!("{:?}", cluster.probe_pods()),
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
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .is_ok_and(|c| c.contains(&format!("/weft-lab.{name}.")))
        })
        .collect();
    assert!(
        survivors.is_empty(),
        "processes in the lab's cgroups: {survivors:?}"
    );
}
