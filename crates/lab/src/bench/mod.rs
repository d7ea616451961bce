//! `weftctl bench …`: the benchmarks. `agent` (one real weftd against thousands of synthetic
//! nodes in a real etcd), `dataplane` (pod-to-pod iperf3/sockperf over the lab's paths
//! against raw veth and hand-built VXLAN) and `policy` (NetworkPolicy tables at 100–10,000
//! rules: apply times and per-packet cost, against iptables-style chains) live in their own
//! modules, as does `scale` (one weftd against a whole cluster of nodes, pods and policies
//! on etcd and on a real kube-apiserver) and `podstart` (pod start-up in a kubelet lab,
//! weft against the reference plugins), and share `child`
//! (processes tied to the run), `etcd`, `scratch`, `signal` and `stats`; this file is
//! `bench cni` and `bench cleanup`.
//!
//! `weftctl bench cni`: weft against the reference `bridge` + `host-local`, in the same run.
//!
//! Everything happens in namespaces this run creates and removes (`wtb<pid>…`): one "node"
//! namespace per variant — so one plugin's bridge, sysctls and nftables/iptables state never
//! meet the other's — and N pod namespaces shared by all variants (each phase leaves them
//! empty again). Setup is not timed. Per variant: sequential ADD×N, sequential DEL×N, then
//! `--parallel`-way churn (each worker ADD then DEL on its share of the pods). The kernel
//! floor, a bare veth create/delete, is measured in weft's node namespace.
//!
//! Drift on the machine (thermal, other load) must not favour one side, so there are two
//! rounds in ABBA order: variants then floor, then floor then variants reversed; the samples
//! of both rounds are pooled. Each variant gets one untimed ADD+DEL first in every round, so
//! the one-off bridge creation and a cold page cache are not in anybody's figures.

mod agent;
mod child;
mod config;
mod dataplane;
mod error;
mod etcd;
mod floor;
mod pluginlog;
mod podstart;
pub mod policy;
mod report;
mod runner;
mod scale;
mod scratch;
mod signal;
mod stats;

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use clap::Args;
use clap::builder::RangedU64ValueParser;

use crate::netns::{self, NetnsSet};
pub use agent::{AgentArgs, run as run_agent};
pub use dataplane::{DataplaneArgs, run as run_dataplane};
pub use error::{BenchError, Result};
pub use podstart::{PodstartArgs, run as run_podstart};
pub use policy::{PolicyArgs, run as run_policy};
use report::{FloorReport, Report, RunInfo, Samples, VariantReport};
use runner::{Plugin, Pod};
pub use scale::{ScaleArgs, run as run_scale};
use scratch::ScratchDir;
use stats::Summary;
use weft_ctl::exe::is_executable;

/// The pod range both sides allocate from; it only exists inside the bench's namespaces.
const SUBNET: &str = "10.250.0.0/16";
/// Temp dir name prefix; the pid follows.
const SCRATCH_PREFIX: &str = "weftctl-bench-";
/// Rounds of the ABBA schedule.
const ROUNDS: usize = 2;
/// Upper bound on --pods: addresses in SUBNET, minus gateway and broadcast, with headroom.
const MAX_PODS: u64 = 60_000;

/// Options of `weftctl bench cni`.
#[derive(Debug, Args)]
pub struct CniArgs {
    /// Pods per phase.
    #[arg(long, default_value_t = 100, value_parser = in_range(MAX_PODS))]
    pub pods: usize,
    /// Workers in the churn phase.
    #[arg(long, default_value_t = 8, value_parser = in_range(256))]
    pub parallel: usize,
    /// Set `ipMasq: true` on both sides (and also run weft without it, as the baseline of the
    /// "no slower with ipMasq" target).
    #[arg(long)]
    pub ipmasq: bool,
    /// The weft plugin binary [default: `weft` next to weftctl, else ./target/release/weft].
    #[arg(long)]
    pub weft: Option<PathBuf>,
    /// Directory of the reference plugins (`bridge`, `host-local`).
    #[arg(long, default_value = "/usr/lib/cni")]
    pub ref_dir: PathBuf,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A count from 1 to `max`, checked by clap with a clear message.
fn in_range(max: u64) -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::new().range(1..=max)
}

/// What to run: one plugin with one ipMasq setting.
struct Spec {
    /// Suffix of the node namespace and of the temp files.
    tag: &'static str,
    label: &'static str,
    weft: bool,
    ipmasq: bool,
}

/// The variants of a run. The first is the weft judged against the second (the reference);
/// with ipMasq a third, weft without ipMasq, is the baseline of the ipMasq target.
fn specs(ipmasq: bool) -> Vec<Spec> {
    let mut specs = vec![
        Spec {
            tag: "w",
            label: if ipmasq { "weft+ipMasq" } else { "weft" },
            weft: true,
            ipmasq,
        },
        Spec {
            tag: "r",
            label: if ipmasq {
                "bridge+host-local+ipMasq"
            } else {
                "bridge+host-local"
            },
            weft: false,
            ipmasq,
        },
    ];
    if ipmasq {
        specs.push(Spec {
            tag: "b",
            label: "weft",
            weft: true,
            ipmasq: false,
        });
    }
    specs
}

/// One variant, ready to run, with the samples gathered so far.
struct Variant {
    label: &'static str,
    ipmasq: bool,
    plugin: Plugin,
    /// weft's JSON-lines log, for its self-reported durations (the reference has none).
    log: Option<PathBuf>,
    samples: Samples,
}

/// The resolved binaries.
struct Binaries {
    weft: PathBuf,
    bridge: PathBuf,
    ref_dir: PathBuf,
}

/// Runs the benchmark and prints the report. MISSing a target is a result, not an error.
pub fn run_cni(args: &CniArgs) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(BenchError::NotRoot);
    }
    let bins = Binaries {
        weft: resolve_weft(args.weft.as_deref())?,
        bridge: executable("reference bridge", args.ref_dir.join("bridge"))?,
        ref_dir: args.ref_dir.clone(),
    };
    executable("reference host-local", args.ref_dir.join("host-local"))?;
    signal::install()?;

    let pid = std::process::id();
    let scratch = ScratchDir::create(SCRATCH_PREFIX)?;
    let specs = specs(args.ipmasq);
    let node_name = |tag: &str| format!("wtb{pid}n{tag}");
    let pod_name = |i: usize| format!("wtb{pid}p{i}");
    let pods: Vec<Pod> = (0..args.pods)
        .map(|i| Pod {
            index: i,
            container_id: format!("wtbbench-{pid}-{i}"),
            netns: netns::path(&pod_name(i)),
        })
        .collect();
    let names: Vec<String> = specs
        .iter()
        .map(|s| node_name(s.tag))
        .chain((0..args.pods).map(pod_name))
        .collect();
    eprintln!("weftctl: creating {} network namespaces", names.len());
    let namespaces = NetnsSet::create(names)?;

    let mut variants = specs
        .iter()
        .map(|spec| variant(spec, &bins, scratch.path(), &node_name(spec.tag)))
        .collect::<Result<Vec<_>>>()?;
    let floor = run_schedule(&mut variants, &pods, args.parallel, &node_name("w"))?;

    let variant_reports: Vec<VariantReport> = variants
        .iter()
        .map(|v| VariantReport::new(v.label, v.ipmasq, &v.samples))
        .collect();
    let floor_report = FloorReport {
        veth_create: Summary::of(&floor.create),
        veth_delete: Summary::of(&floor.delete),
        veth_delete_up: Summary::of(&floor.delete_up),
    };
    let targets = report::targets(
        &variant_reports[0],
        &variant_reports[1],
        variant_reports.get(2),
        &floor_report,
    );
    let report = Report {
        run: RunInfo {
            kernel: kernel_release(),
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            cpu_model: cpu_model(),
            pods: args.pods,
            parallel: args.parallel,
            rounds: ROUNDS,
            ipmasq: args.ipmasq,
            cni_version: config::CNI_VERSION,
            weft: bins.weft.display().to_string(),
            reference_dir: bins.ref_dir.display().to_string(),
        },
        variants: variant_reports,
        floor: floor_report,
        targets,
    };

    // Tear down before printing so a cleanup failure is reported, not just logged by Drop.
    drop(variants);
    namespaces.remove()?;
    drop(scratch);

    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
    }
    Ok(())
}

/// Builds the plugin, config and temp paths of one variant.
fn variant(spec: &Spec, bins: &Binaries, scratch: &Path, node_ns: &str) -> Result<Variant> {
    let data_dir = scratch.join(format!("ipam-{}", spec.tag));
    let (binary, cni_path, conf, log) = if spec.weft {
        let log = scratch.join(format!("weft-{}.log", spec.tag));
        let conf = config::weft(SUBNET, spec.ipmasq, &data_dir, &log);
        // weft's own directory first (weft-ipam), the reference plugins after it.
        let path = cni_path(&[bins.weft.parent(), Some(&bins.ref_dir)]);
        (bins.weft.clone(), path, conf, Some(log))
    } else {
        let conf = config::reference(SUBNET, spec.ipmasq, &data_dir);
        let path = cni_path(&[Some(&bins.ref_dir)]);
        (bins.bridge.clone(), path, conf, None)
    };
    let node = netns::open(node_ns)?;
    Ok(Variant {
        label: spec.label,
        ipmasq: spec.ipmasq,
        plugin: Plugin::new(spec.label, binary, cni_path, conf, node),
        log,
        samples: Samples::default(),
    })
}

/// Runs every variant and the floor, [`ROUNDS`] times in ABBA order, pooling the samples.
fn run_schedule(
    variants: &mut [Variant],
    pods: &[Pod],
    parallel: usize,
    floor_ns: &str,
) -> Result<floor::Floor> {
    let floor_ns = netns::path(floor_ns);
    let mut floor = floor::Floor::default();
    for round in 0..ROUNDS {
        // Even rounds: variants then floor; odd rounds: the mirror image.
        let mut order: Vec<Option<usize>> = (0..variants.len()).map(Some).collect();
        order.push(None);
        if round % 2 == 1 {
            order.reverse();
        }
        for step in order {
            match step {
                Some(i) => run_variant(&mut variants[i], pods, parallel, round)?,
                None => {
                    eprintln!(
                        "weftctl: round {}: kernel floor, {} veth pairs",
                        round + 1,
                        pods.len()
                    );
                    let f = floor::measure(&floor_ns, pods)?;
                    floor.create.extend(f.create);
                    floor.delete.extend(f.delete);
                    floor.delete_up.extend(f.delete_up);
                }
            }
        }
    }
    Ok(floor)
}

/// Warm-up, sequential ADD×N / DEL×N, then churn, for one variant in one round.
fn run_variant(v: &mut Variant, pods: &[Pod], parallel: usize, round: usize) -> Result<()> {
    eprintln!(
        "weftctl: round {}: {}: warm-up, sequential ADD/DEL ×{}, {parallel}-way churn",
        round + 1,
        v.label,
        pods.len()
    );
    let (_, result) = v.plugin.add(&pods[0])?;
    v.plugin.del(&pods[0], Some(&result))?;

    let log_start = v.log.as_deref().map(pluginlog::offset);
    let seq = runner::sequential(&v.plugin, pods)?;
    if let (Some(log), Some(from)) = (v.log.as_deref(), log_start) {
        let (add, del) = pluginlog::durations_since(log, from)?;
        v.samples.self_add.extend(add);
        v.samples.self_del.extend(del);
    }
    v.samples.seq_add.extend(seq.add);
    v.samples.seq_del.extend(seq.del);
    v.samples.seq_wall += seq.add_wall + seq.del_wall;
    v.samples.seq_pods += pods.len();

    let churn = runner::churn(&v.plugin, pods, parallel)?;
    v.samples.churn_add.extend(churn.add);
    v.samples.churn_del.extend(churn.del);
    v.samples.churn_wall += churn.wall;
    v.samples.churn_pods += pods.len();
    Ok(())
}

/// `--weft`, or `weft` next to this executable, or `./target/release/weft`.
fn resolve_weft(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = given {
        return executable("weft plugin (--weft)", path.to_owned());
    }
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("weft")));
    let candidates = sibling
        .into_iter()
        .chain([PathBuf::from("target/release/weft")]);
    for candidate in candidates {
        if is_executable(&candidate) {
            // Absolute, so the CNI_PATH we derive from it means the same in every child.
            return fs::canonicalize(&candidate)
                .map_err(BenchError::io(format!("resolving {}", candidate.display())));
        }
    }
    Err(BenchError::MissingBinary {
        what: "weft plugin (pass --weft PATH)",
        path: PathBuf::from("target/release/weft"),
    })
}

fn executable(what: &'static str, path: PathBuf) -> Result<PathBuf> {
    if is_executable(&path) {
        fs::canonicalize(&path).map_err(BenchError::io(format!("resolving {}", path.display())))
    } else {
        Err(BenchError::MissingBinary { what, path })
    }
}

/// A `CNI_PATH` value from directories, in order.
fn cni_path(dirs: &[Option<&Path>]) -> OsString {
    let joined = std::env::join_paths(dirs.iter().flatten());
    // A directory with ':' in its name cannot be on CNI_PATH at all; fall back to the first.
    joined.unwrap_or_else(|_| {
        dirs.iter()
            .flatten()
            .next()
            .map_or_else(OsString::new, |d| d.as_os_str().to_owned())
    })
}

/// `/proc/loadavg`'s three averages ("0.52 0.61 0.70"), to say how busy the machine was.
fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".to_owned())
}

fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned())
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// `weftctl bench cleanup`: removes the namespaces (`wtb<pid>…`), labs (`wtb<pid>h|v`) and
/// temp dirs (`weftctl-bench-<pid>` in the temp dir and `/dev/shm`) of runs that are gone
/// (SIGKILL, power loss); a live run's are left alone. Returns how many namespaces and dirs
/// it removed. (Daemons die with the run: see `child`.)
pub fn cleanup_stale() -> Result<(usize, usize)> {
    let dead = |pid: u32| !alive(pid);
    let stale_ns: Vec<String> = netns::list()?
        .into_iter()
        .filter(|name| stale_owner(name).is_some_and(dead))
        .collect();
    let namespaces = stale_ns.len();
    NetnsSet::adopt(stale_ns).remove()?;

    // The dataplane bench's labs (`wtb<pid>h`, `wtb<pid>v`), removed by `lab down`.
    for lab in list_dir(Path::new(dataplane::LAB_STATE_ROOT))? {
        if stale_lab_owner(&lab).is_some_and(dead) {
            dataplane::lab_down(&lab)?;
        }
    }

    let mut dirs = 0;
    // The agent bench keeps etcd's data on tmpfs.
    for base in [std::env::temp_dir(), PathBuf::from("/dev/shm")] {
        for name in list_dir(&base)? {
            let pid = name
                .strip_prefix(SCRATCH_PREFIX)
                .and_then(|p| p.parse().ok());
            if pid.is_some_and(dead) {
                let path = base.join(&name);
                fs::remove_dir_all(&path)
                    .map_err(BenchError::io(format!("removing {}", path.display())))?;
                dirs += 1;
            }
        }
    }
    Ok((namespaces, dirs))
}

/// Whether `pid` exists and is not a zombie (a killed run whose parent is gone lingers as
/// one until init reaps it).
fn alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z" | "X" | "x"))
}

/// The pid in a dataplane bench lab name `wtb<pid>h` / `wtb<pid>v`.
fn stale_lab_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("wtb")?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    match rest.split_at(digits) {
        (pid, "h" | "v") if !pid.is_empty() => pid.parse().ok(),
        _ => None,
    }
}

/// File names in `dir`; a missing dir is empty.
fn list_dir(dir: &Path) -> Result<Vec<String>> {
    match fs::read_dir(dir) {
        Ok(entries) => Ok(entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(err) => Err(BenchError::io(format!("listing {}", dir.display()))(err)),
    }
}

/// The pid in a bench namespace name `wtb<pid>n<tag>` / `wtb<pid>p<i>`.
fn stale_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("wtb")?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let (pid, tail) = rest.split_at(digits);
    let kind_ok = matches!(tail.as_bytes().first(), Some(b'n' | b'p'));
    if kind_ok && tail.len() > 1 {
        pid.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_of_bench_names() {
        assert_eq!(stale_owner("wtb123p7"), Some(123));
        assert_eq!(stale_owner("wtb123nw"), Some(123));
        assert_eq!(stale_owner("wtb123"), None);
        assert_eq!(stale_owner("wtbxp1"), None);
        assert_eq!(stale_owner("wtf2981"), None);
        assert_eq!(stale_owner("weftdemo-a"), None);
        // The agent and dataplane benches' namespaces.
        assert_eq!(stale_owner("wtb123na0"), Some(123));
        assert_eq!(stale_owner("wtb123nr1"), Some(123));
    }

    #[test]
    fn owner_of_bench_labs() {
        assert_eq!(stale_lab_owner("wtb123h"), Some(123));
        assert_eq!(stale_lab_owner("wtb123v"), Some(123));
        assert_eq!(stale_lab_owner("wtbh"), None);
        assert_eq!(stale_lab_owner("wtb123x"), None);
        assert_eq!(stale_lab_owner("weft"), None);
    }

    #[test]
    fn cni_path_joins_dirs() {
        let p = cni_path(&[Some(Path::new("/a")), None, Some(Path::new("/b"))]);
        assert_eq!(p, OsString::from("/a:/b"));
    }
}
