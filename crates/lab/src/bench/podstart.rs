//! `weftctl bench podstart`: pod start-up in a real cluster, weft against the reference
//! `bridge` + `host-local`, in the same run.
//!
//! A kubelet lab (`lab up --kubelet --nodes 2`: kubelet, containerd and kube-proxy on each
//! node, weft installed from its manifest) is made for the run and removed at its end. Each
//! round creates `--pods` pods at once (one `kubectl apply`, spread evenly over the two
//! nodes by `nodeName`: the scheduler is not what is compared) and times each pod from that
//! moment until the API reports it Running with an address **and** it answers a TCP connect
//! on its port from its node; then deletes them all and waits for every DEL.
//!
//! The variants differ only in the network config containerd reads: a conflist
//! `05-bench.conflist` that sorts before weft's own. For weft it is the conflist weftd
//! wrote, for the reference a `bridge` (own bridge, `isGateway`, hairpin) with `host-local`
//! on a /24 per node. In both the main plugin is called through the same timing shim (a
//! two-line shell script, `timed-<plugin>`), which logs each call's start and end: the
//! CNI's share of a pod's start is the ADD's time over the pod's.
//!
//! Rounds go in ABBA order (weft, reference, reference, weft, …) so drift on the machine
//! favours neither; samples of all rounds are pooled per variant.
//!
//! Must not: leave the lab behind (a guard brings it down, also on error), or touch a node
//! file but the bench's conflist, shim and log in the node's own directories.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use serde_json::{Value, json};
use weft_net::NetNs;

use super::error::{BenchError, Result};
use super::stats::Summary;
use crate::lab::names::Names;
use crate::lab::{PodState, Session};

/// The lab's nodes.
const NODES: [&str; 2] = ["n1", "n2"];
const POD_PORT: u16 = 8080;
const PROBE_IMAGE: &str = "localhost/weft-probe:lab";
const SELECTOR: &str = "bench=podstart";
const BENCH_CONFLIST: &str = "05-bench.conflist";
/// The shim's log, in the node's /run.
const CNI_LOG: &str = "weft-bench-cni.log";
const POLL: Duration = Duration::from_millis(50);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(200);

/// Options of `weftctl bench podstart`.
#[derive(Debug, Args)]
pub struct PodstartArgs {
    /// Pods created at once per round (half on each node).
    #[arg(long, default_value_t = 60)]
    pub pods: usize,
    /// Rounds per variant (in ABBA order).
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Where the lab's image archives are (see `lab up --images`).
    #[arg(long, value_name = "DIR")]
    pub images: Option<PathBuf>,
    /// Give up on a round after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Variant {
    Weft,
    Reference,
}

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Variant::Weft => "weft",
            Variant::Reference => "bridge+host-local",
        }
    }
}

/// The timing shim: the plugin it stands for is its own name less `timed-`. stdin and
/// stdout pass through to the plugin untouched.
const SHIM: &str = "#!/bin/sh\n\
# weftctl bench podstart: times one CNI call of the plugin this link is named after.\n\
start=$(date +%s%N)\n\
/opt/cni/bin/\"${0##*/timed-}\"\n\
rc=$?\n\
echo \"$CNI_COMMAND $CNI_CONTAINERID $start $(date +%s%N) $rc\" >> /run/weft-bench-cni.log\n\
exit $rc\n";

/// The lab of the run, brought down when dropped.
struct LabGuard {
    name: String,
    exe: PathBuf,
}

impl LabGuard {
    fn lab(&self, args: &[&str]) -> Result<Output> {
        let out = Command::new(&self.exe)
            .arg("lab")
            .args(args)
            .args(["--name", &self.name])
            .stdin(Stdio::null())
            .output()
            .map_err(BenchError::io("running weftctl-lab lab"))?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(BenchError::Command {
                what: format!("weftctl lab {}", args.join(" ")),
                status: out.status.to_string(),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            })
        }
    }

    /// The lab's kubectl, in its router namespace (as `lab kubectl`), which must succeed.
    fn kubectl(&self, args: &[&str], input: Option<&str>) -> Result<String> {
        let lab_error = |what: &str, e: crate::lab::LabError| BenchError::Unexpected {
            what: what.to_owned(),
            detail: e.to_string(),
        };
        let names = Names::new(&self.name).map_err(|e| lab_error("lab name", e.into()))?;
        let bin = crate::lab::kube_bin(None).map_err(|e| lab_error("kubectl", e))?;
        crate::lab::kubectl_ok(&names, &bin, args, input)
            .map_err(|e| lab_error(&format!("kubectl {}", args.join(" ")), e))
    }

    fn node_dir(&self, node: &str) -> PathBuf {
        Names::new(&self.name)
            .map(|n| n.state_dir())
            .unwrap_or_default()
            .join("nodes")
            .join(node)
            .join("view")
    }
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        if let Err(e) = self.lab(&["down"]) {
            eprintln!("bench podstart: bringing lab {} down: {e}", self.name);
        }
    }
}

/// A variant's samples pooled over its rounds: pod starts, ADDs, each round's slowest (ms).
#[derive(Default)]
struct Samples(Vec<Duration>, Vec<Duration>, Vec<f64>);

/// One variant's figures.
#[derive(Debug, Serialize)]
struct VariantReport {
    variant: Variant,
    /// Creation to Running + address + answering, per pod.
    start: Summary,
    /// The CNI ADD (through the shim), per pod.
    cni_add: Summary,
    /// Median ADD over median start.
    cni_share: f64,
    /// Slowest pod of each round, in ms.
    round_max_ms: Vec<f64>,
}

#[derive(Debug, Serialize)]
struct PodstartReport {
    pods: usize,
    rounds: usize,
    nodes: usize,
    variants: Vec<VariantReport>,
    /// weft's p99 over the reference's: the target is at most 1.
    p99_ratio: f64,
    p50_ratio: f64,
}

pub fn run(args: &PodstartArgs) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(BenchError::NotRoot);
    }
    if args.pods < 2 || !args.pods.is_multiple_of(2) || args.pods > 200 {
        return Err(BenchError::Unexpected {
            what: "--pods".to_owned(),
            detail: format!("{}: give an even number from 2 to 200", args.pods),
        });
    }
    let exe = std::env::current_exe().map_err(BenchError::io("finding weftctl-lab"))?;
    let guard = LabGuard {
        name: format!("bps{}", std::process::id()),
        exe,
    };
    let mut up = vec![
        "up",
        "--datastore",
        "kubernetes",
        "--kubelet",
        "--nodes",
        "2",
    ];
    let images = args.images.as_ref().map(|p| p.display().to_string());
    if let Some(dir) = &images {
        up.extend(["--images", dir]);
    }
    eprintln!("bench podstart: lab {} (2 kubelet nodes)", guard.name);
    guard.lab(&up)?;
    let names = Names::new(&guard.name).map_err(|e| BenchError::Unexpected {
        what: "lab name".to_owned(),
        detail: e.to_string(),
    })?;
    let session = Session::connect(&names).map_err(|e| BenchError::Unexpected {
        what: "connecting to the lab's API server".to_owned(),
        detail: e.to_string(),
    })?;
    let weft_conflists = prepare_nodes(&guard)?;

    let mut samples: BTreeMap<&str, Samples> = BTreeMap::new();
    let order: Vec<Variant> = (0..args.rounds)
        .flat_map(|r| {
            if r % 2 == 0 {
                [Variant::Weft, Variant::Reference]
            } else {
                [Variant::Reference, Variant::Weft]
            }
        })
        .collect();
    for (i, variant) in order.iter().enumerate() {
        use_variant(&guard, *variant, &weft_conflists)?;
        let (starts, adds) = round(&guard, &session, args, *variant)?;
        let slowest = starts.iter().max().copied().unwrap_or_default();
        eprintln!(
            "round {}/{}: {}: {} pods, slowest {:.0} ms",
            i + 1,
            order.len(),
            variant.label(),
            starts.len(),
            slowest.as_secs_f64() * 1e3
        );
        let entry = samples.entry(variant.label()).or_default();
        entry.0.extend(starts);
        entry.1.extend(adds);
        entry.2.push(slowest.as_secs_f64() * 1e3);
    }
    let mut report = |variant: Variant| {
        let Samples(starts, adds, maxes) = samples.remove(variant.label()).unwrap_or_default();
        let (start, cni_add) = (Summary::of(&starts), Summary::of(&adds));
        VariantReport {
            variant,
            cni_share: if start.p50_ms > 0.0 {
                cni_add.p50_ms / start.p50_ms
            } else {
                0.0
            },
            start,
            cni_add,
            round_max_ms: maxes,
        }
    };
    let (weft, reference) = (report(Variant::Weft), report(Variant::Reference));
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let out = PodstartReport {
        pods: args.pods,
        rounds: args.rounds,
        nodes: NODES.len(),
        p99_ratio: ratio(weft.start.p99_ms, reference.start.p99_ms),
        p50_ratio: ratio(weft.start.p50_ms, reference.start.p50_ms),
        variants: vec![weft, reference],
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        print_report(&out);
    }
    Ok(())
}

fn print_report(r: &PodstartReport) {
    println!(
        "pod start-up: {} pods at once on {} nodes, {} round(s) per variant (ABBA)",
        r.pods, r.nodes, r.rounds
    );
    println!(
        "{:<20} {:>9} {:>9} {:>9} {:>11} {:>11} {:>9}",
        "variant", "p50 ms", "p99 ms", "max ms", "ADD p50 ms", "ADD p99 ms", "CNI share"
    );
    for v in &r.variants {
        println!(
            "{:<20} {:>9.0} {:>9.0} {:>9.0} {:>11.1} {:>11.1} {:>8.1}%",
            v.variant_label(),
            v.start.p50_ms,
            v.start.p99_ms,
            v.start.max_ms,
            v.cni_add.p50_ms,
            v.cni_add.p99_ms,
            v.cni_share * 100.0
        );
    }
    println!(
        "weft / reference: p50 {:.2}, p99 {:.2} (target: p99 at most 1.00)",
        r.p50_ratio, r.p99_ratio
    );
}

impl VariantReport {
    fn variant_label(&self) -> &'static str {
        self.variant.label()
    }
}

/// The shim links on every node, and weftd's conflist of each node (the weft variant's
/// config, read once: weftd rewrites its own file, never the bench's).
fn prepare_nodes(guard: &LabGuard) -> Result<BTreeMap<String, Value>> {
    let mut conflists = BTreeMap::new();
    for node in NODES {
        let view = guard.node_dir(node);
        let bin = view.join("cni-bin");
        let shim = bin.join("weft-bench-timed");
        write(&shim, SHIM)?;
        set_mode(&shim, 0o755)?;
        for plugin in ["weft", "bridge"] {
            let link = bin.join(format!("timed-{plugin}"));
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink("weft-bench-timed", &link)
                .map_err(BenchError::io(format!("linking {}", link.display())))?;
        }
        let path = view.join("cni-conf/10-weft.conflist");
        let text = std::fs::read_to_string(&path)
            .map_err(BenchError::io(format!("reading {}", path.display())))?;
        let conf: Value = serde_json::from_str(&text).map_err(|e| BenchError::Unexpected {
            what: format!("{}", path.display()),
            detail: e.to_string(),
        })?;
        conflists.insert(node.to_owned(), conf);
    }
    Ok(conflists)
}

fn write(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(BenchError::io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(BenchError::io(format!("renaming {}", tmp.display())))
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(BenchError::io(format!("chmod {}", path.display())))
}

/// Writes the variant's conflist on every node, its main plugin through the shim.
fn use_variant(guard: &LabGuard, variant: Variant, weft: &BTreeMap<String, Value>) -> Result<()> {
    for (k, node) in NODES.iter().enumerate() {
        let conf = match variant {
            Variant::Weft => {
                let mut c = weft.get(*node).cloned().unwrap_or(Value::Null);
                c["plugins"][0]["type"] = json!("timed-weft");
                c
            }
            // What a reference-plugin cluster's node has: its own bridge and a /24 of
            // host-local per node (outside weft's 10.244.0.0/16), hairpin as kubenet sets it.
            Variant::Reference => json!({
                "cniVersion": "1.0.0",
                "name": "bench-reference",
                "plugins": [{
                    "type": "timed-bridge",
                    "bridge": "cni-bench",
                    "isGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": format!("10.246.{}.0/24", k + 1)}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": "/var/lib/weft-bench/host-local"
                    }
                }]
            }),
        };
        let path = guard.node_dir(node).join("cni-conf").join(BENCH_CONFLIST);
        write(&path, &conf.to_string())?;
    }
    // containerd reloads its network config on the directory's change (fsnotify).
    std::thread::sleep(Duration::from_secs(2));
    Ok(())
}

fn pods_manifest(n: usize) -> String {
    let mut docs = Vec::new();
    for i in 0..n {
        let node = NODES[i % NODES.len()];
        docs.push(format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: ps-{i}, namespace: default, labels: {{bench: podstart}}}}\n\
             spec:\n  nodeName: {node}\n  terminationGracePeriodSeconds: 0\n  containers:\n  \
             - name: probe\n    image: {PROBE_IMAGE}\n    imagePullPolicy: Never\n    \
             command: [httpd, -f, -p, \"{POD_PORT}\", -h, /var/www]\n"
        ));
    }
    docs.join("---\n")
}

/// The bench's pods as the API has them now.
fn bench_pods(session: &Session) -> Result<Vec<PodState>> {
    session
        .pod_states("default", SELECTOR)
        .map_err(|e| BenchError::Unexpected {
            what: "listing the bench's pods".to_owned(),
            detail: e.to_string(),
        })
}

/// Whether a TCP connect to `addr` from `node`'s namespace succeeds.
fn answers(netns: &NetNs, addr: SocketAddr) -> bool {
    netns
        .run(|| TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).is_ok())
        .unwrap_or(false)
}

/// One round: the pods created at once, timed until each answers; then deleted. Returns
/// each pod's start time and each ADD's time.
fn round(
    guard: &LabGuard,
    session: &Session,
    args: &PodstartArgs,
    variant: Variant,
) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let names = Names::new(&guard.name).map_err(|e| BenchError::Unexpected {
        what: "lab name".to_owned(),
        detail: e.to_string(),
    })?;
    let netns: BTreeMap<&str, NetNs> = NODES
        .iter()
        .map(|n| {
            let path = crate::netns::path(&names.node(n));
            NetNs::open(&path)
                .map(|ns| (*n, ns))
                .map_err(BenchError::net(format!("opening {}", path.display())))
        })
        .collect::<Result<_>>()?;
    for node in NODES {
        let _ = std::fs::remove_file(guard.node_dir(node).join("run").join(CNI_LOG));
    }
    let manifest = pods_manifest(args.pods);
    let t0 = Instant::now();
    guard.kubectl(&["apply", "-f", "-"], Some(&manifest))?;
    let deadline = t0 + Duration::from_secs(args.timeout);
    let mut started: BTreeMap<String, Duration> = BTreeMap::new();
    while started.len() < args.pods {
        for p in bench_pods(session)? {
            if started.contains_key(&p.name) || p.phase != "Running" {
                continue;
            }
            let (Some(ip), Some(ns)) = (p.ip, netns.get(p.node.as_str())) else {
                continue;
            };
            if answers(ns, SocketAddr::new(ip, POD_PORT)) {
                started.insert(p.name, t0.elapsed());
            }
        }
        if Instant::now() >= deadline {
            return Err(BenchError::Timeout {
                what: format!("{} pods answering ({})", args.pods, variant.label()),
                secs: args.timeout,
                detail: format!("{} answered", started.len()),
            });
        }
        std::thread::sleep(POLL);
    }
    // No `--wait`: the lab's kubectl bounds every request (--request-timeout), and the
    // wait is one long request. The pods are watched go here instead.
    guard.kubectl(&["delete", "pods", "-l", SELECTOR, "--wait=false"], None)?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    loop {
        let left = bench_pods(session)?.len();
        if left == 0 {
            break;
        }
        if Instant::now() >= deadline {
            return Err(BenchError::Timeout {
                what: format!("the deletion of the bench's pods ({})", variant.label()),
                secs: args.timeout,
                detail: format!("{left} left"),
            });
        }
        std::thread::sleep(POLL);
    }
    // Every pod's DEL through the shim, so the next round starts from a clean node.
    let adds = wait_dels(guard, args, variant)?;
    Ok((started.into_values().collect(), adds))
}

/// Waits until the shim logged a DEL for every ADD on both nodes; returns the ADD times.
fn wait_dels(guard: &LabGuard, args: &PodstartArgs, variant: Variant) -> Result<Vec<Duration>> {
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    loop {
        let mut adds = Vec::new();
        let mut added = BTreeMap::new();
        let mut deleted = 0usize;
        for node in NODES {
            let log = guard.node_dir(node).join("run").join(CNI_LOG);
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            for line in text.lines() {
                let f: Vec<&str> = line.split_whitespace().collect();
                let [cmd, id, start, end, _rc] = f[..] else {
                    continue;
                };
                let (Ok(start), Ok(end)) = (start.parse::<u128>(), end.parse::<u128>()) else {
                    continue;
                };
                match cmd {
                    "ADD" => {
                        added.insert(id.to_owned(), ());
                        adds.push(Duration::from_nanos(
                            u64::try_from(end.saturating_sub(start)).unwrap_or(u64::MAX),
                        ));
                    }
                    "DEL" if added.contains_key(id) => deleted += 1,
                    _ => {}
                }
            }
        }
        if adds.len() >= args.pods && deleted >= adds.len() {
            return Ok(adds);
        }
        if Instant::now() >= deadline {
            return Err(BenchError::Timeout {
                what: format!("every pod's DEL ({})", variant.label()),
                secs: args.timeout,
                detail: format!("{} ADDs, {deleted} DELs logged", adds.len()),
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_alternate_over_the_nodes() {
        let m = pods_manifest(4);
        assert_eq!(m.matches("kind: Pod").count(), 4);
        assert_eq!(m.matches("nodeName: n1").count(), 2);
        assert_eq!(m.matches("nodeName: n2").count(), 2);
        assert!(m.contains("name: ps-3"));
    }

    #[test]
    fn the_shim_runs_the_plugin_named_after_it() {
        assert!(SHIM.contains("/opt/cni/bin/\"${0##*/timed-}\""));
        assert!(SHIM.contains(CNI_LOG));
    }
}
