//! Support for the lab tests: the built `weftctl` run as a person would, a lab guard that
//! runs `lab down` on drop (also when a test panics), and inspection of what a lab left on
//! the machine (namespaces by prefix, the state dir, processes naming the state dir).
//!
//! Submodules: `etcd` (the datastore read with etcdctl), `kube` (a lab on the Kubernetes
//! API, through kubectl), `kernel` (what weftd programmed in a node, and where each route
//! leads), `traffic` (counted UDP flows, TCP bulk, DF pings),
//! `policy` (manifests, `lab policy-sync`, weftd's policy status, single-shot TCP/UDP probes).
//!
//! Lab names are `t<pid><k>`: unique per test process and test, lowercase alphanumerics as
//! the lab requires.
#![allow(dead_code)]

pub mod etcd;
pub mod kernel;
pub mod kube;
pub mod policy;
pub mod traffic;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
pub use weft_testkit::{TempDir, text};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The lab binary cargo built for this test run (`weftctl lab|bench` exec it).
pub fn lab_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_weftctl-lab"))
}

/// Where cargo put weftctl-lab, and with a workspace build also weftctl, weft, weft-ipam
/// and weftd.
pub fn bin_dir() -> PathBuf {
    lab_bin()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Panics with what to build when `bin` is not next to weftctl-lab.
fn require_built(bin: &str) -> PathBuf {
    let path = bin_dir().join(bin);
    assert!(
        path.is_file(),
        "{} is missing: build the workspace first (cargo build --workspace, or cargo test --workspace)",
        path.display()
    );
    path
}

/// `weftctl` next to weftctl-lab: the tests run the commands people type, `weftctl lab …`
/// and `weftctl bench …` included, which weftctl hands to the weftctl-lab beside it.
pub fn weftctl_bin() -> PathBuf {
    require_built("weftctl")
}

/// Panics with what to build when the binaries a full lab needs are not next to weftctl.
pub fn require_cluster_binaries() {
    for bin in ["weftd", "weft", "weft-ipam"] {
        require_built(bin);
    }
}

/// `weftctl args…` with the environment given.
pub fn weftctl_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(weftctl_bin());
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run weftctl: {e}"))
}

pub fn weftctl(args: &[&str]) -> Output {
    weftctl_env(args, &[])
}

/// `weftctl args…`, which must succeed; returns stdout.
pub fn weftctl_ok(args: &[&str]) -> String {
    let out = weftctl(args);
    assert!(
        out.status.success(),
        "weftctl {args:?} failed:\n{}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A lab name no other test (or test run) uses.
pub fn unique_name() -> String {
    let k = COUNTER.fetch_add(1, Ordering::SeqCst);
    // The `x` keeps (pid, counter) pairs apart across concurrent test processes.
    format!("t{}x{k}", std::process::id())
}

/// A lab that is brought down when the guard drops.
pub struct Lab {
    pub name: String,
}

impl Lab {
    pub fn new() -> Lab {
        Lab {
            name: unique_name(),
        }
    }

    /// `weftctl lab <sub> --name <lab> args…`.
    pub fn cmd(&self, sub: &[&str], args: &[&str]) -> Output {
        let mut a = vec!["lab"];
        a.extend_from_slice(sub);
        a.extend(["--name", &self.name]);
        a.extend_from_slice(args);
        weftctl(&a)
    }

    /// `lab pod add POD --node NODE --namespace NS --labels app=APP` for each (pod, node,
    /// app), which must succeed.
    pub fn add_app_pods(&self, namespace: &str, pods: &[(&str, &str, &str)]) {
        for (pod, node, app) in pods {
            let labels = format!("app={app}");
            self.ok(
                &["pod", "add"],
                &[
                    pod,
                    "--node",
                    node,
                    "--namespace",
                    namespace,
                    "--labels",
                    &labels,
                ],
            );
        }
    }

    pub fn ok(&self, sub: &[&str], args: &[&str]) -> String {
        let out = self.cmd(sub, args);
        assert!(
            out.status.success(),
            "weftctl lab {sub:?} {args:?} failed:\n{}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `lab up` with `--bin-dir` pointing at cargo's output.
    pub fn up(&self, args: &[&str]) -> Output {
        let bin = bin_dir();
        let bin = bin.to_string_lossy();
        let mut a = vec!["--bin-dir", bin.as_ref()];
        a.extend_from_slice(args);
        self.cmd(&["up"], &a)
    }

    pub fn up_ok(&self, args: &[&str]) -> String {
        let out = self.up(args);
        assert!(
            out.status.success(),
            "lab up {args:?} failed:\n{}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn prefix(&self) -> String {
        format!("wl{}-", self.name)
    }

    pub fn ns(&self, short: &str) -> String {
        format!("{}{short}", self.prefix())
    }

    pub fn state_dir(&self) -> PathBuf {
        PathBuf::from("/run/weft-lab").join(&self.name)
    }

    pub fn state(&self) -> Value {
        let path = self.state_dir().join("state.json");
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    pub fn check_json(&self) -> (bool, Value) {
        let out = self.cmd(&["check"], &["-o", "json"]);
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("check -o json: {e}\n{}", text(&out)));
        (out.status.success(), report)
    }

    /// The nodes in the lab's record, by name.
    pub fn node_names(&self) -> Vec<String> {
        self.state()["nodes"]
            .as_array()
            .map(|n| {
                n.iter()
                    .filter_map(|n| n["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The pods in the lab's record: name → node.
    pub fn pods(&self) -> BTreeMap<String, String> {
        self.state()["pods"]
            .as_array()
            .map(|p| {
                p.iter()
                    .filter_map(|p| {
                        Some((
                            p["name"].as_str()?.to_owned(),
                            p["node"].as_str()?.to_owned(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The pod's IPv4 (or IPv6) address from its ADD result.
    pub fn pod_addr(&self, pod: &str, v6: bool) -> Option<IpAddr> {
        let state = self.state();
        let p = state["pods"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == pod)
            .unwrap_or_else(|| panic!("no pod {pod} in lab {}", self.name));
        p["addresses"]
            .as_array()?
            .iter()
            .filter_map(|a| a.as_str()?.split('/').next()?.parse::<IpAddr>().ok())
            .find(|a| a.is_ipv6() == v6)
    }

    /// Every pod address in the record: (pod, node, address).
    pub fn pod_addresses(&self) -> Vec<(String, String, IpAddr)> {
        let state = self.state();
        let mut out = Vec::new();
        for p in state["pods"].as_array().into_iter().flatten() {
            for a in p["addresses"].as_array().into_iter().flatten() {
                let addr = a.as_str().and_then(|a| a.split('/').next()?.parse().ok());
                if let (Some(name), Some(node), Some(addr)) =
                    (p["name"].as_str(), p["node"].as_str(), addr)
                {
                    out.push((name.to_owned(), node.to_owned(), addr));
                }
            }
        }
        out
    }

    /// The blocks in the IPAM ranges of the conflist weftd wrote on `node`.
    pub fn conflist_blocks(&self, node: &str) -> Vec<String> {
        let path = self
            .state_dir()
            .join(format!("nodes/{node}/net.d/10-weft.conflist"));
        let conf: Value = serde_json::from_slice(
            &std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut blocks: Vec<String> = conf["plugins"][0]["ipam"]["ranges"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|set| set.as_array().cloned().unwrap_or_default())
            .filter_map(|r| r["subnet"].as_str().map(str::to_owned))
            .collect();
        blocks.sort();
        blocks
    }

    /// weftd's kernel entries in node `node` (`n1`).
    pub fn kernel(&self, node: &str) -> kernel::Kernel {
        kernel::kernel(&self.ns(node))
    }

    /// The datastore's view of the cluster, read once.
    pub fn view(&self) -> View {
        View {
            owners: self.block_owners(),
            records: self.node_records(),
        }
    }

    /// Whether `node` routes every block of every other node to that block's owner (as etcd
    /// says now), and nothing else; the difference if not.
    pub fn routes_follow_owners(&self, node: &str) -> Result<(), String> {
        self.view().check_routes(self, node)
    }

    /// Namespaces, state dir and processes the lab left on the machine, for a message.
    pub fn leftovers(&self) -> Vec<String> {
        leftovers(&self.name)
    }

    pub fn assert_gone(&self) {
        let left = self.leftovers();
        assert!(left.is_empty(), "lab {} left: {left:?}", self.name);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = weftctl(&["lab", "down", "--name", &self.name]);
        if !out.status.success() {
            eprintln!("cleanup of lab {}: {}", self.name, text(&out));
        }
    }
}

/// Everything of lab `name` still on the machine.
pub fn leftovers(name: &str) -> Vec<String> {
    let prefix = format!("wl{name}-");
    let mut left: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(&prefix))
                .map(|n| format!("netns {n}"))
                .collect()
        })
        .unwrap_or_default();
    let dir = PathBuf::from("/run/weft-lab").join(name);
    if dir.exists() {
        left.push(format!("dir {}", dir.display()));
    }
    let marker = format!("/run/weft-lab/{name}/");
    for pid in processes_mentioning(&marker) {
        left.push(format!("process {pid}"));
    }
    left
}

/// Live (non-zombie) processes whose command line contains `marker`.
pub fn processes_mentioning(marker: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains(marker) && alive(*pid)
        })
        .collect()
}

pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next().map(str::to_owned));
        !matches!(state.as_deref(), Some("Z" | "X"))
    })
}

/// `ip -n <ns> -j args…` parsed.
pub fn ipj(ns: &str, args: &[&str]) -> Value {
    let mut a = vec!["-n", ns, "-j"];
    a.extend_from_slice(args);
    let out = Command::new("ip")
        .args(&a)
        .output()
        .unwrap_or_else(|e| panic!("ip: {e}"));
    assert!(out.status.success(), "ip {a:?}: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("ip -j {a:?}: {e}"))
}

/// `ip netns exec <ns> prog args…`.
pub fn in_ns(ns: &str, prog: &str, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", ns, prog])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip netns exec {ns} {prog}: {e}"))
}

/// The inode of a named namespace: the same inode means the same namespace, not a new one.
pub fn netns_inode(ns: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/run/netns/{ns}"))
        .unwrap_or_else(|e| panic!("netns {ns}: {e}"))
        .ino()
}

/// The cells of a check report.
pub fn cells(report: &Value) -> Vec<Value> {
    report["cells"].as_array().cloned().unwrap_or_default()
}

/// Polls `ready` every 20 ms until it returns `Some`, for at most `timeout`; returns the
/// value and how long it took. On timeout, panics with `why()` (the state that was wrong).
pub fn wait_for<T>(
    timeout: Duration,
    mut ready: impl FnMut() -> Option<T>,
    why: impl Fn() -> String,
) -> (T, Duration) {
    let start = Instant::now();
    loop {
        if let Some(v) = ready() {
            return (v, start.elapsed());
        }
        if start.elapsed() > timeout {
            panic!("not within {timeout:?}: {}", why());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Block keys and node records, as etcd held them when read.
#[derive(Debug, Clone)]
pub struct View {
    pub owners: BTreeMap<String, etcd::Owner>,
    pub records: BTreeMap<String, Value>,
}

impl View {
    /// Block → owner for every block `node` does not own: the routes it should have.
    pub fn expected_routes(&self, node: &str) -> BTreeMap<String, String> {
        self.owners
            .iter()
            .filter(|(_, o)| o.node != node)
            .map(|(b, o)| (b.clone(), o.node.clone()))
            .collect()
    }

    /// `node`'s kernel routes, resolved to nodes, against [`View::expected_routes`].
    pub fn check_routes(&self, lab: &Lab, node: &str) -> Result<(), String> {
        let expected = self.expected_routes(node);
        let actual = lab.kernel(node).route_map(&self.records);
        if actual == expected {
            Ok(())
        } else {
            Err(format!(
                "{node} routes {actual:?}, the block keys say {expected:?}"
            ))
        }
    }

    /// The owner of the block holding `addr`, if any.
    pub fn owner_of(&self, addr: IpAddr) -> Option<&str> {
        self.owners.iter().find_map(|(b, o)| {
            let net: ipnet::IpNet = b.parse().ok()?;
            net.contains(&addr).then_some(o.node.as_str())
        })
    }

    pub fn blocks_of(&self, node: &str) -> Vec<String> {
        self.owners
            .iter()
            .filter(|(_, o)| o.node == node)
            .map(|(b, _)| b.clone())
            .collect()
    }

    /// Ownership is single: every block key's owner has a record listing that block, and no
    /// block is listed by two records.
    pub fn assert_single_owners(&self) {
        let mut listed: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, rec) in &self.records {
            for b in rec["blocks"].as_array().into_iter().flatten() {
                listed
                    .entry(b.as_str().unwrap_or_default().to_owned())
                    .or_default()
                    .push(name.clone());
            }
        }
        for (block, names) in &listed {
            assert_eq!(
                names.len(),
                1,
                "block {block} is listed by {names:?}: {self:#?}"
            );
        }
        for (block, owner) in &self.owners {
            assert_eq!(
                listed.get(block),
                Some(&vec![owner.node.clone()]),
                "block {block} belongs to {} by its key: {self:#?}",
                owner.node
            );
        }
    }
}
