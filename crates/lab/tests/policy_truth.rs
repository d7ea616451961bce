//! The NetworkPolicy truth table. One two-node lab per variant (VXLAN + bridge, host-gw +
//! ptp on etcd, each also on `--datapath ebpf`; VXLAN + bridge on the Kubernetes API), seven pods in three namespaces (each
//! namespace on both nodes), echo listeners on four TCP and two UDP ports and raw SCTP
//! receivers in every pod, on both nodes and on the outside host, started once. For every
//! scenario and in-place edit of `truth::scenarios` the manifests are applied with `weftctl
//! apply --lab` (on the Kubernetes API: policies and namespaces with `kubectl apply -f`, pod
//! labels with `kubectl label`), `lab policy-sync` waits until every weftd enforces them, and the whole matrix of new connections — pod→pod, pod→node,
//! pod→outside, node→pod (from the address the node's route picks, and bound to its
//! underlay address); TCP, UDP, SCTP ports and ICMP echo; IPv4 and IPv6 — is probed in
//! parallel and compared with the matrix `truth::oracle` computes from the Kubernetes API
//! semantics (independently of weft-policy). Every differing cell is printed (source,
//! destination, port/protocol, family, same or cross node, addresses, expected, got); a
//! sample of cells is also put to `weftctl policy explain --lab`, which must agree with the
//! oracle (it reads the lab's datastore: etcd, or the API server). On the Kubernetes API
//! the oracle is given the NetworkPolicies as the API server stored them (1.20 drops
//! `endPort`, as a cluster of that version does). Before the scenarios, the no-policy
//! matrix must be all open (so a closed cell later is the policy, not a missing listener),
//! and a refused file must change no cell.

mod lab_support;
mod truth;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lab_support::{Lab, TempDir, ipj, text, weftctl};
use serde_json::Value;
use truth::oracle::{self, Cluster, End, Flow, Proto};
use truth::probe::{self, Job, Listeners, Outcome};
use truth::scenarios::{
    EDITS, NAMESPACES, NODES, OUT_V4, OUT_V6, PODS, SCENARIOS, SCTP_PORTS, TCP_PORTS, UDP_PORTS,
    base_manifest, documents, labels_arg, namespace_labels, pod_from_spec, ports_arg, render,
};

/// A dropped probe is given this long; an allowed one answers in well under a millisecond.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);
/// Cells that looked closed but should be open get a second, patient look, so a slow
/// machine is not taken for a closed port.
const RECHECK_TIMEOUT: Duration = Duration::from_millis(3000);
const WORKERS_PER_SOURCE: usize = 24;
/// Cells per scenario put to `weftctl policy explain` (half expected allowed, half denied),
/// and four more from nodes.
const EXPLAIN_SAMPLE: usize = 6;

struct Fixture {
    lab: Lab,
    cluster: Cluster,
    flows: Vec<Flow>,
    jobs: Vec<Job>,
    /// (node, v6) → its first pod block.
    blocks: BTreeMap<(String, bool), String>,
    tmp: TempDir,
    /// The lab runs on the Kubernetes API: objects are written with kubectl.
    kube: bool,
}

impl Fixture {
    fn name(&self, end: End) -> String {
        match end {
            End::Pod(i) => {
                let p = &self.cluster.pods[i];
                format!("{}/{}", p.namespace, p.name)
            }
            End::Node(n) => format!("node {}", NODES[n]),
            End::Out => "outside".into(),
        }
    }

    fn node_of(&self, end: End) -> Option<String> {
        match end {
            End::Pod(i) => Some(self.cluster.pods[i].node.clone()),
            End::Node(n) => Some(NODES[n].to_string()),
            End::Out => None,
        }
    }

    fn locality(&self, flow: &Flow) -> &'static str {
        match (self.node_of(flow.src), self.node_of(flow.dst)) {
            (Some(a), Some(b)) if a == b => "same node",
            (Some(_), Some(_)) => "cross node",
            _ => "to outside",
        }
    }

    fn describe(&self, flow: &Flow) -> String {
        format!(
            "{} → {} {}/{} {} ({}, {} → {})",
            self.name(flow.src),
            self.name(flow.dst),
            flow.proto.lower(),
            flow.port,
            if flow.dst_addr.is_ipv6() {
                "IPv6"
            } else {
                "IPv4"
            },
            self.locality(flow),
            flow.src_addr,
            flow.dst_addr
        )
    }

    fn render(&self, yaml: &str) -> String {
        render(yaml, &self.cluster, &self.blocks)
    }

    /// `apply` or `delete` the manifest's objects through the lab's datastore.
    fn write(&self, verb: &str, yaml: &str) {
        if self.kube {
            self.kubectl_write(verb, yaml);
        } else {
            self.weftctl_file(verb, yaml);
        }
    }

    /// On the Kubernetes API: NetworkPolicy and Namespace objects with `kubectl apply|delete
    /// -f`, a PodLabels object as the Pod's labels with `kubectl label` (its named ports are
    /// the Pod's, fixed when `lab pod add` made it: a scenario may not change them).
    fn kubectl_write(&self, verb: &str, yaml: &str) {
        let mut manifest = Vec::new();
        let mut pods: Option<Value> = None;
        for d in documents(yaml) {
            if d["kind"] != "PodLabels" {
                manifest.push(d.to_string());
                continue;
            }
            assert_eq!(verb, "apply", "PodLabels are Pods' labels: {d}");
            let ns = d["metadata"]["namespace"].as_str().unwrap_or("default");
            let name = d["metadata"]["name"].as_str().unwrap_or_default();
            let spec = PODS
                .iter()
                .find(|p| p.namespace == ns && p.name == name)
                .unwrap_or_else(|| panic!("no pod {ns}/{name}"));
            let ports: Vec<(String, String, u64)> = d["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap_or_default().to_owned(),
                        p["protocol"].as_str().unwrap_or("TCP").to_owned(),
                        p["containerPort"].as_u64().unwrap_or_default(),
                    )
                })
                .collect();
            let created: Vec<(String, String, u64)> = spec
                .ports
                .iter()
                .map(|(n, proto, num)| (n.to_string(), proto.to_string(), u64::from(*num)))
                .collect();
            assert_eq!(
                ports, created,
                "{ns}/{name}: a Pod's named ports cannot change on Kubernetes"
            );
            let labels = d["metadata"]["labels"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            let pods = pods.get_or_insert_with(|| self.lab.kube_get(&["pods", "-A"]));
            let current = pods["items"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["metadata"]["namespace"] == ns && p["metadata"]["name"] == name)
                .and_then(|p| p["metadata"]["labels"].as_object().cloned())
                .unwrap_or_default();
            self.lab.kubectl_set_labels(ns, name, &current, &labels);
        }
        if !manifest.is_empty() {
            let list = format!(
                "{{\"apiVersion\": \"v1\", \"kind\": \"List\", \"items\": [{}]}}",
                manifest.join(",")
            );
            self.lab.kubectl_file_ok(verb, &list);
        }
    }

    /// The NetworkPolicies as the API server stored them, in the form the oracle reads.
    fn stored_policies(&self) -> Vec<Value> {
        let list = self.lab.kube_get(&["networkpolicies", "-A"]);
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                serde_json::json!({
                    "apiVersion": "networking.k8s.io/v1",
                    "kind": "NetworkPolicy",
                    "metadata": {
                        "name": p["metadata"]["name"],
                        "namespace": p["metadata"]["namespace"],
                    },
                    "spec": p["spec"],
                })
            })
            .collect()
    }

    fn weftctl_file(&self, verb: &str, yaml: &str) -> String {
        let file = self.tmp.path().join("manifest.yaml");
        std::fs::write(&file, yaml).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let out = weftctl(&[
            verb,
            "-f",
            file.to_str().unwrap_or_default(),
            "--lab",
            &self.lab.name,
        ]);
        assert!(
            out.status.success(),
            "weftctl {verb} failed on:\n{yaml}\n{}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The node's underlay address of the family (on `eth0`, docs/lab.md).
fn node_addr(ns: &str, v6: bool) -> IpAddr {
    let fam = if v6 { "-6" } else { "-4" };
    let links = ipj(ns, &[fam, "addr", "show", "dev", "eth0", "scope", "global"]);
    links[0]["addr_info"][0]["local"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no {fam} address on eth0 in {ns}: {links}"))
}

/// The source address `ns` uses to reach `dst` (the kernel's choice).
fn source_addr(ns: &str, dst: IpAddr) -> IpAddr {
    let r = ipj(ns, &["route", "get", &dst.to_string()]);
    r[0]["prefsrc"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no source address in {ns} for {dst}: {r}"))
}

fn setup(lab_args: &[&str]) -> Fixture {
    lab_support::require_cluster_binaries();
    let lab = Lab::new();
    let mut args = vec!["--nodes", "2", "--pods-per-node", "0"];
    args.extend_from_slice(lab_args);
    lab.up_ok(&args);
    for p in PODS {
        let mut args = vec![p.name, "--node", p.node, "--namespace", p.namespace];
        let labels = labels_arg(p.labels);
        if !labels.is_empty() {
            args.extend(["--labels", &labels]);
        }
        let ports = ports_arg(p.ports);
        if !ports.is_empty() {
            args.extend(["--ports", &ports]);
        }
        lab.ok(&["pod", "add"], &args);
    }
    let pods_json: Value = serde_json::from_str(&lab.ok(&["pods"], &["-o", "json"]))
        .unwrap_or_else(|e| panic!("lab pods -o json: {e}"));
    let mut cluster = Cluster {
        namespaces: namespace_labels(),
        pods: Vec::new(),
    };
    for spec in PODS {
        let rec = pods_json
            .as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == spec.name))
            .unwrap_or_else(|| panic!("pod {} not in {pods_json}", spec.name));
        let addrs = rec["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str()?.split('/').next()?.parse().ok())
            .collect();
        let node = rec["node"].as_str().unwrap_or_default();
        cluster.pods.push(pod_from_spec(spec, node, addrs));
        assert_eq!(
            cluster.pods.last().map(|p| p.node.as_str()),
            Some(spec.node)
        );
    }
    let mut blocks = BTreeMap::new();
    for node in NODES {
        for b in lab.conflist_blocks(node) {
            let v6 = b.contains(':');
            blocks.entry((node.to_string(), v6)).or_insert(b);
        }
    }

    // Every cell: pods to pods and to the outside, nodes to pods; each port; both families.
    let pod_ns = |i: usize| {
        PathBuf::from(format!(
            "/run/netns/{}",
            lab.ns(&format!("p-{}", PODS[i].name))
        ))
    };
    let mut flows = Vec::new();
    let mut jobs = Vec::new();
    let targets: Vec<(Proto, u16)> = TCP_PORTS
        .iter()
        .map(|p| (Proto::Tcp, *p))
        .chain(UDP_PORTS.iter().map(|p| (Proto::Udp, *p)))
        .chain(SCTP_PORTS.iter().map(|p| (Proto::Sctp, *p)))
        .chain([(Proto::Icmp, 0)])
        .collect();
    let mut sources: Vec<End> = (0..PODS.len()).map(End::Pod).collect();
    sources.extend((0..NODES.len()).map(End::Node));
    let mut dests: Vec<End> = (0..PODS.len()).map(End::Pod).collect();
    dests.extend((0..NODES.len()).map(End::Node));
    dests.push(End::Out);
    for &src in &sources {
        for &dst in &dests {
            if matches!((src, dst), (End::Node(_), End::Out | End::Node(_))) {
                continue;
            }
            for v6 in [false, true] {
                let dst_addr: IpAddr = match dst {
                    End::Pod(i) => match cluster.pods[i].addr(v6) {
                        Some(a) => a,
                        None => continue,
                    },
                    End::Node(n) => node_addr(&lab.ns(NODES[n]), v6),
                    End::Out => (if v6 { OUT_V6 } else { OUT_V4 }).parse().unwrap(),
                };
                // (source address, bound or left to the route, namespace): a node sends
                // from the address its route names (its pod gateway to its own pods, its
                // VTEP or underlay address to other nodes' pods), and also, bound, from its
                // underlay address (a kubelet or a host-network pod using the node's IP).
                let mut from: Vec<(IpAddr, Option<IpAddr>, PathBuf)> = Vec::new();
                match src {
                    End::Pod(i) => match cluster.pods[i].addr(v6) {
                        Some(a) => from.push((a, None, pod_ns(i))),
                        None => continue,
                    },
                    End::Node(n) => {
                        let ns = lab.ns(NODES[n]);
                        let path = PathBuf::from(format!("/run/netns/{ns}"));
                        let routed = source_addr(&ns, dst_addr);
                        let underlay = node_addr(&ns, v6);
                        from.push((routed, None, path.clone()));
                        if underlay != routed {
                            from.push((underlay, Some(underlay), path));
                        }
                    }
                    End::Out => unreachable!(),
                }
                for (src_addr, bind, src_ns) in from {
                    for &(proto, port) in &targets {
                        flows.push(Flow {
                            src,
                            dst,
                            src_addr,
                            dst_addr,
                            proto,
                            port,
                        });
                        jobs.push(Job {
                            src_ns: src_ns.clone(),
                            bind,
                            dst: SocketAddr::new(dst_addr, port),
                            proto,
                        });
                    }
                }
            }
        }
    }
    let fixture = Fixture {
        lab,
        cluster,
        flows,
        jobs,
        blocks,
        tmp: TempDir::new("labtest"),
        kube: lab_args.contains(&"kubernetes"),
    };
    fixture.write("apply", &base_manifest());
    fixture
}

/// Waits until every node's weftd enforces what the datastore holds now.
fn wait_sync(lab: &Lab) {
    lab.policy_sync();
}

/// Probes the matrix; cells that look closed but should be open get a patient second look.
fn probe_matrix(f: &Fixture, expected: &[bool]) -> Vec<Outcome> {
    let mut got = probe::run(&f.jobs, PROBE_TIMEOUT, WORKERS_PER_SOURCE);
    let recheck: Vec<usize> = (0..got.len())
        .filter(|&i| expected[i] && !got[i].open())
        .collect();
    if !recheck.is_empty() {
        let jobs: Vec<Job> = recheck.iter().map(|&i| f.jobs[i].clone()).collect();
        for (k, o) in probe::run(&jobs, RECHECK_TIMEOUT, WORKERS_PER_SOURCE)
            .into_iter()
            .enumerate()
        {
            got[recheck[k]] = o;
        }
    }
    got
}

/// The differing cells, one line each.
fn mismatches(f: &Fixture, expected: &[bool], got: &[Outcome]) -> Vec<String> {
    f.flows
        .iter()
        .enumerate()
        .filter(|&(i, _)| expected[i] != got[i].open())
        .map(|(i, flow)| {
            format!(
                "  {}: expected {}, got {}",
                f.describe(flow),
                if expected[i] { "allowed" } else { "denied" },
                got[i]
            )
        })
        .collect()
}

/// Puts a few cells to `weftctl policy explain --lab` (half expected allowed, half denied,
/// chosen differently per scenario); the disagreements.
fn explain_sample(f: &Fixture, seed: usize, expected: &[bool]) -> Vec<String> {
    let n = f.flows.len();
    let mut picked = Vec::new();
    // Node sources get their own share: which node an address is, is where readings differ.
    let from_node = |i: usize| matches!(f.flows[i].src, End::Node(_));
    for nodes in [false, true] {
        for want in [true, false] {
            picked.extend(
                (0..n)
                    .map(|k| (seed * 7919 + k * 131) % n)
                    .filter(|&i| {
                        expected[i] == want
                            && from_node(i) == nodes
                            && f.flows[i].proto != Proto::Icmp
                    })
                    .take(if nodes { 2 } else { EXPLAIN_SAMPLE / 2 }),
            );
        }
    }
    std::thread::scope(|s| {
        let hs: Vec<_> = picked
            .iter()
            .map(|&i| {
                s.spawn(move || {
                    let flow = &f.flows[i];
                    let port = format!("{}/{}", flow.port, flow.proto.lower());
                    let out = weftctl(&[
                        "policy",
                        "explain",
                        &flow.src_addr.to_string(),
                        &flow.dst_addr.to_string(),
                        &port,
                        "--lab",
                        &f.lab.name,
                    ]);
                    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
                    let says = if stdout.starts_with("ALLOWED") {
                        Some(true)
                    } else if stdout.starts_with("DENIED") {
                        Some(false)
                    } else {
                        None
                    };
                    (says != Some(expected[i])).then(|| {
                        format!(
                            "  {}: oracle says {}, explain says:\n{}",
                            f.describe(flow),
                            if expected[i] { "allowed" } else { "denied" },
                            if says.is_some() { stdout } else { text(&out) }
                        )
                    })
                })
            })
            .collect();
        hs.into_iter()
            .filter_map(|h| h.join().expect("explain thread"))
            .collect()
    })
}

/// The default lab: VXLAN between the nodes, pods on a bridge.
#[test]
fn truth_table_vxlan_bridge() {
    truth_table(&[]);
}

/// Routed (host-gw) between the nodes, pods on point-to-point links.
#[test]
fn truth_table_hostgw_ptp() {
    truth_table(&["--backend", "host-gw", "--mode", "ptp"]);
}

/// The default lab on the Kubernetes API: policies, namespaces and pod labels written with
/// kubectl, weftd reading them from the API server.
#[test]
fn truth_table_kube_vxlan_bridge() {
    truth_table(&["--datastore", "kubernetes"]);
}

/// The same on the eBPF datapath: unpoliced pods take the fast path, policed ones nftables.
#[test]
fn truth_table_vxlan_bridge_ebpf() {
    truth_table(&["--datapath", "ebpf"]);
}

/// host-gw and ptp on the eBPF datapath.
#[test]
fn truth_table_hostgw_ptp_ebpf() {
    truth_table(&[
        "--backend",
        "host-gw",
        "--mode",
        "ptp",
        "--datapath",
        "ebpf",
    ]);
}

/// On `--datapath ebpf` the table proves something about the fast path only if the fast
/// path carried its traffic: with no policy every node's weftd runs `ebpf` and its programs
/// redirected pod packets on the node, to peers and from peers.
fn fast_path_carried_the_open_matrix(lab: &Lab) {
    for node in NODES {
        let json: Value =
            serde_json::from_str(&lab.ok(&["status"], &[node, "-o", "json"])).unwrap();
        let dp = &json[0]["status"]["datapath"];
        assert_eq!(dp["active"], "ebpf", "{node}: {dp}");
        for counter in ["redirected", "toPeer", "fromPeer"] {
            assert!(
                dp[counter].as_u64().is_some_and(|n| n > 0),
                "{node}: no packet {counter} on the fast path: {dp}"
            );
        }
    }
}

fn truth_table(lab_args: &[&str]) {
    let start = Instant::now();
    probe::raise_fd_limit();
    let f = setup(lab_args);
    let path = |short: &str| PathBuf::from(format!("/run/netns/{}", f.lab.ns(short)));
    let mut namespaces: Vec<(PathBuf, Vec<IpAddr>)> = PODS
        .iter()
        .map(|p| (path(&format!("p-{}", p.name)), Vec::new()))
        .collect();
    for n in NODES {
        let ns = f.lab.ns(n);
        let addrs = vec![node_addr(&ns, false), node_addr(&ns, true)];
        namespaces.push((path(n), addrs));
    }
    namespaces.push((path("out"), Vec::new()));
    let _listeners = Listeners::start(&namespaces, TCP_PORTS, UDP_PORTS, true);
    eprintln!(
        "truth table {lab_args:?}: lab {} up, {} cells per scenario, setup {:?}",
        f.lab.name,
        f.flows.len(),
        start.elapsed()
    );

    // With no policy everything is open: what a denied cell looks like later is not a
    // missing listener or a broken path.
    wait_sync(&f.lab);
    let all_open = vec![true; f.flows.len()];
    for flow in &f.flows {
        assert!(oracle::allowed(&f.cluster, &[], flow), "{flow:?}");
    }
    let got = probe_matrix(&f, &all_open);
    let bad = mismatches(&f, &all_open, &got);
    assert!(
        bad.is_empty(),
        "without policies, {} of {} cells are not open:\n{}",
        bad.len(),
        f.flows.len(),
        bad.join("\n")
    );
    if lab_args.contains(&"ebpf") {
        fast_path_carried_the_open_matrix(&f.lab);
    }

    // Bad input applies nothing: a file whose deny-everything policies are valid but whose
    // last document is not is refused whole, and every cell stays open. kubectl applies a
    // file object by object, so on the Kubernetes API the API server is given the invalid
    // policy alone, and must refuse it.
    let bad_policy = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: bad, namespace: alpha}\n\
         spec: {podSelector: {}, ingress: [{ports: [{port: 70000}]}]}\n";
    let mut bad_file = String::new();
    for (ns, _) in NAMESPACES {
        let _ = write!(
            bad_file,
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: deny, namespace: {ns}}}\n\
             spec: {{podSelector: {{}}, policyTypes: [Ingress, Egress]}}\n---\n"
        );
    }
    bad_file.push_str(bad_policy);
    let file = f.tmp.path().join("bad.yaml");
    std::fs::write(&file, &bad_file).unwrap();
    let out = if f.kube {
        f.lab.kubectl_file("apply", bad_policy)
    } else {
        weftctl(&[
            "apply",
            "-f",
            file.to_str().unwrap_or_default(),
            "--lab",
            &f.lab.name,
        ])
    };
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("spec.ingress[0].ports[0].port"),
        "{}",
        text(&out)
    );
    wait_sync(&f.lab);
    let got = probe_matrix(&f, &all_open);
    let bad = mismatches(&f, &all_open, &got);
    assert!(
        bad.is_empty(),
        "after a refused file, {} cells are not open:\n{}",
        bad.len(),
        bad.join("\n")
    );

    let mut failures = Vec::new();
    let mut summary = Vec::new();
    // A run: a scenario (one manifest), or an edit (a scenario's manifest, synced, then a
    // second one that changes objects in place); the matrix is probed after the last step.
    let mut runs: Vec<(&str, &str, Vec<&str>)> = SCENARIOS
        .iter()
        .map(|s| (s.name, s.covers, vec![s.yaml]))
        .collect();
    for e in EDITS {
        let base = SCENARIOS
            .iter()
            .find(|s| s.name == e.base)
            .unwrap_or_else(|| panic!("edit {}: no scenario {}", e.name, e.base));
        runs.push((e.name, e.covers, vec![base.yaml, e.yaml]));
    }
    for (k, (name, covers, steps)) in runs.iter().enumerate() {
        let t = Instant::now();
        // The objects in force: later steps replace same-named ones.
        let mut objects: BTreeMap<(String, String, String), Value> = BTreeMap::new();
        let mut np_yaml: BTreeMap<(String, String), String> = BTreeMap::new();
        let mut relabels = false;
        for (i, step) in steps.iter().enumerate() {
            let yaml = f.render(step);
            for d in documents(&yaml) {
                let key = (
                    d["kind"].as_str().unwrap_or_default().to_string(),
                    d["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    d["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                );
                objects.insert(key, d);
            }
            for doc in yaml.split("---\n").filter(|d| !d.trim().is_empty()) {
                if doc.contains("kind: NetworkPolicy") {
                    let v = documents(doc).remove(0);
                    let ns = v["metadata"]["namespace"].as_str().unwrap_or_default();
                    let n = v["metadata"]["name"].as_str().unwrap_or_default();
                    np_yaml.insert((ns.to_string(), n.to_string()), doc.to_string());
                } else {
                    relabels = true;
                }
            }
            f.write("apply", &yaml);
            if i + 1 < steps.len() {
                wait_sync(&f.lab);
            }
        }
        let mut cluster = f.cluster.clone();
        let docs: Vec<Value> = objects.into_values().collect();
        let written = oracle::take_objects(&mut cluster, &docs);
        let policies = if f.kube {
            f.stored_policies()
        } else {
            written.clone()
        };
        wait_sync(&f.lab);
        let expected: Vec<bool> = f
            .flows
            .iter()
            .map(|flow| oracle::allowed(&cluster, &policies, flow))
            .collect();
        // What the API server stored means what was written, but for the fields it drops.
        let mut dropped = Vec::new();
        if f.kube && !steps.iter().any(|y| y.contains("endPort")) {
            let differ = f
                .flows
                .iter()
                .zip(&expected)
                .filter(|(flow, e)| oracle::allowed(&cluster, &written, flow) != **e)
                .count();
            if differ > 0 {
                dropped.push(format!(
                    "  the stored policies mean something else than the written ones in \
                     {differ} cells:\n{:#?}",
                    policies
                ));
            }
        }
        let got = probe_matrix(&f, &expected);
        let bad = mismatches(&f, &expected, &got);
        let mut explain = explain_sample(&f, k, &expected);
        explain.extend(dropped);
        // Policies are deleted; relabelled pods and namespaces get their base labels back.
        let np: Vec<String> = np_yaml.into_values().collect();
        f.write("delete", &np.join("---\n"));
        if relabels {
            f.write("apply", &base_manifest());
        }
        let open = expected.iter().filter(|e| **e).count();
        summary.push(format!(
            "{:<44} {:>4}/{} allowed, {:>3} mismatches, {} explain disagreements, {:?}",
            name,
            open,
            expected.len(),
            bad.len(),
            explain.len(),
            t.elapsed()
        ));
        if !bad.is_empty() || !explain.is_empty() {
            let mut msg = format!("scenario {name} ({covers}):\n");
            if !bad.is_empty() {
                let _ = writeln!(msg, " {} cells differ from the oracle:", bad.len());
                msg.push_str(&bad.join("\n"));
                msg.push('\n');
            }
            if !explain.is_empty() {
                let _ = writeln!(
                    msg,
                    " policy explain (on the Kubernetes API: the stored policies) disagrees \
                     with the oracle:"
                );
                msg.push_str(&explain.join("\n"));
            }
            eprintln!("{msg}");
            failures.push(msg);
        }
    }
    eprintln!(
        "truth table {lab_args:?}: {} scenarios in {:?}\n{}",
        runs.len(),
        start.elapsed(),
        summary.join("\n")
    );
    assert!(
        failures.is_empty(),
        "{} of {} scenarios differ:\n{}",
        failures.len(),
        runs.len(),
        failures.join("\n")
    );
}
