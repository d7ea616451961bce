//! `weftctl bench agent`: one real `weftd` against a simulated large cluster in a real etcd.
//!
//! Per cluster size N, in namespaces this run makes and removes (`wtb<pid>na<i>` for the
//! agent's node, `wtb<pid>nw<i>` for the far end of its underlay cable):
//!
//! 1. the node namespace gets an underlay veth (`eth0`, 192.168.0.1/16, fd00:57::1/64 with
//!    `--ipv6`) whose other end sits in the wire namespace, and a private etcd on its
//!    loopback (data on tmpfs);
//! 2. the cluster config and N synthetic peers (weft-backend's `synthetic_peers`: underlay
//!    addresses on the same /16, so host-gw and VXLAN both apply; unique VTEP MACs; one /24,
//!    and with `--ipv6` one /80, each) are written through weft-store, as agents write them,
//!    on one lease kept alive for the run (untimed);
//! 3. `weftd` starts inside the node namespace; the clock runs from the spawn until the
//!    kernel holds every route (`proto 87`) and, for VXLAN, every FDB and neighbour entry,
//!    polled by netlink dumps every [`POLL`];
//! 4. joins: a further peer's block keys, then (clock starts) its node record; the clock
//!    stops when its route is in the FIB (polled by single route lookups, no dumps);
//! 5. weftd's VmRSS and VmHWM from `/proc`;
//! 6. a restart of weftd with nothing to change: time until its socket answers, and
//!    whether any entry disappeared meanwhile;
//! 7. weftd stopped, then the comparison: delete every weft entry and write them all again
//!    in one pass over one netlink socket (weft-net), as a flush-and-rebuild agent would.

pub(crate) mod cluster;
pub(crate) mod kernel;
mod report;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueEnum};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use weft_backend::{Kind, Peer, synthetic_peers};
use weft_net::{Handle, NetNs, VethSpec};
use weft_store::{BackendKind, ClusterConfig};

use super::child::Daemon;
use super::error::{BenchError, Result};
use super::etcd::{self, Etcd};
use super::scratch::ScratchDir;
use super::signal;
use super::stats::Summary;
use crate::netns::{self, NetnsSet};
use kernel::Counts;
pub use report::{AgentReport, SizeReport};
use weft_ctl::exe::is_executable;

/// How often the kernel is counted while waiting for all peers.
const POLL: Duration = Duration::from_millis(20);
/// How long weftd may take to program everything before the run gives up.
const PROGRAM_TIMEOUT: Duration = Duration::from_secs(180);
/// How long one join may take before the run gives up.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between joins, so each starts from a quiet agent.
const JOIN_GAP: Duration = Duration::from_millis(50);
/// The largest cluster the address plan fits (a /16 underlay, /24 blocks of a /8).
const MAX_PEERS: usize = 60_000;
/// The agent's node name.
const SELF_NAME: &str = "bench-self";
pub(crate) const UNDERLAY_V4: &str = "192.168.0.0/16";
const UNDERLAY_V6: &str = "fd00:57::/64";
pub(crate) const SELF_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 1);
const SELF_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x57, 0, 0, 0, 0, 0, 1);
const WIRE_V4: &str = "192.168.255.254/16";
const WIRE_V6: &str = "fd00:57::ffff:fffe/64";
/// The cluster's pod CIDRs and block sizes: one /24 (and /80) per node; the agent claims the
/// first block, the synthetic peers hold the ones after it.
pub(crate) const PODS_V4: &str = "10.0.0.0/8";
const PODS_V6: &str = "fd57::/48";
const BLOCK_V4: u8 = 24;
const BLOCK_V6: u8 = 80;
const TMP_PREFIX: &str = super::SCRATCH_PREFIX;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    Vxlan,
    HostGw,
    Auto,
}

impl Backend {
    fn store(self) -> BackendKind {
        match self {
            Backend::Vxlan => BackendKind::Vxlan,
            Backend::HostGw => BackendKind::HostGw,
            Backend::Auto => BackendKind::Auto,
        }
    }

    /// What the kernel ends up with: every synthetic peer is on the agent's segment, so
    /// `auto` programs them all as host-gw.
    fn effective(self) -> Kind {
        match self {
            Backend::Vxlan => Kind::Vxlan,
            Backend::HostGw | Backend::Auto => Kind::HostGw,
        }
    }
}

/// Options of `weftctl bench agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Cluster sizes to simulate (peers besides the agent's own node), comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_PEERS as u64))]
    pub peers: Vec<usize>,
    /// The cluster's backend.
    #[arg(long, value_enum, default_value_t = Backend::Vxlan)]
    pub backend: Backend,
    /// Joins timed per cluster size.
    #[arg(long, default_value_t = 20,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1000))]
    pub joins: usize,
    /// Dual-stack cluster: every peer also gets an IPv6 block and underlay address.
    #[arg(long)]
    pub ipv6: bool,
    /// Where `weftd` is [default: weftctl-lab's directory, next to weftctl].
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Keep the logs (weftd, etcd) in /tmp/weftctl-bench-<pid>/ instead of removing them.
    #[arg(long)]
    pub keep_logs: bool,
}

/// Runs the benchmark and prints the report. Missing a target is a result, not an error.
/// A Ctrl-C also reaches the children (same process group), so whatever failed after it is
/// reported as the interruption it is.
pub fn run(args: &AgentArgs) -> Result<()> {
    run_inner(args).map_err(|e| {
        if signal::interrupted() {
            BenchError::Interrupted
        } else {
            e
        }
    })
}

/// Every size in turn, then the report.
fn run_inner(args: &AgentArgs) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(BenchError::NotRoot);
    }
    let weftd = weftd_binary(args.bin_dir.as_deref())?;
    signal::install()?;
    let mut scratch = ScratchDir::create(TMP_PREFIX)?;
    if args.keep_logs {
        scratch.keep();
    }
    let shm = Path::new("/dev/shm");
    let fast = if shm.is_dir() {
        ScratchDir::create_in(shm, TMP_PREFIX)?
    } else {
        ScratchDir::create_in(scratch.path(), "etcd-")?
    };
    let mut sizes = Vec::new();
    for (i, &n) in args.peers.iter().enumerate() {
        signal::check()?;
        eprintln!(
            "weftctl: bench agent: {n} peers, backend {:?}{}",
            args.backend,
            if args.ipv6 { ", dual-stack" } else { "" }
        );
        let dirs = Dirs {
            run: scratch.path().join(format!("n{n}-{i}")),
            etcd: fast.path().join(format!("etcd-n{n}-{i}")),
        };
        sizes.push(run_size(args, &weftd, i, n, &dirs)?);
    }
    drop(fast);
    drop(scratch);
    let report = AgentReport {
        backend: args.backend,
        ipv6: args.ipv6,
        joins: args.joins,
        weftd: weftd.display().to_string(),
        sizes,
    };
    print!("{}", report.to_table());
    Ok(())
}

struct Dirs {
    run: PathBuf,
    etcd: PathBuf,
}

/// One cluster size, start to finish, in its own namespaces with its own etcd.
fn run_size(args: &AgentArgs, weftd: &Path, i: usize, n: usize, dirs: &Dirs) -> Result<SizeReport> {
    let pid = std::process::id();
    let (node_ns, wire_ns) = (format!("wtb{pid}na{i}"), format!("wtb{pid}nw{i}"));
    let namespaces = NetnsSet::create(vec![node_ns.clone(), wire_ns.clone()])?;
    for d in [&dirs.run, &dirs.etcd] {
        std::fs::create_dir_all(d).map_err(BenchError::io(format!("creating {}", d.display())))?;
    }
    let ns = open_ns(&node_ns)?;
    let underlay = cable(&ns, &open_ns(&wire_ns)?, args.ipv6)?;
    let etcd = Etcd::start(&node_ns, &dirs.etcd, &dirs.run.join("etcd.log"))?;

    let peers = make_peers(n + args.joins, args.ipv6)?;
    let (bulk, joiners) = peers.split_at(n);
    let writer = cluster::Writer::connect(
        open_ns(&node_ns)?,
        etcd::endpoint(),
        &cluster_config(args.backend.store(), args.ipv6)?,
    )?;
    eprintln!("weftctl:   writing {n} node records and their blocks to etcd");
    let load = writer.load(bulk)?;

    let mut h = Handle::new_in(&ns).map_err(BenchError::net(format!("netlink in {node_ns}")))?;
    let kind = args.backend.effective();
    let families = if args.ipv6 { 2 } else { 1 };
    let want = Counts::expected(kind, n, families);

    // Start → everything programmed.
    eprintln!(
        "weftctl:   starting weftd; waiting for {} kernel entries",
        want.total()
    );
    let started_wall = SystemTime::now();
    let t0 = Instant::now();
    let mut agent = start_weftd(weftd, &node_ns, &dirs.run, args.ipv6, "weftd.log")?;
    let (programmed, polls) = wait_counts(&mut h, &mut agent, &want, args.ipv6, t0)?;
    let rss_programmed = memory(agent.pid())?;
    // Joins are timed against an agent that finished starting: its socket is served once
    // the control loop has reconciled the whole cluster and watches.
    let (ready, _) = wait_socket(&mut h, &mut agent, &dirs.run, args.ipv6, t0)?;
    let log = log_marks(&dirs.run.join("weftd.log"), started_wall);

    // Joins.
    eprintln!("weftctl:   {} joins", joiners.len());
    let mut join_times = Vec::with_capacity(joiners.len());
    let mut write_times = Vec::with_capacity(joiners.len());
    for p in joiners {
        signal::check()?;
        writer.claim(p)?;
        std::thread::sleep(JOIN_GAP);
        let t = Instant::now();
        if args.keep_logs {
            let wall = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            eprintln!("weftctl:     join {} written at {wall:.4}", p.name);
        }
        writer.publish(p)?;
        write_times.push(t.elapsed());
        wait_routes(&mut h, &mut agent, &p.blocks, t)?;
        join_times.push(t.elapsed());
    }
    let slowest_join = join_times
        .iter()
        .enumerate()
        .max_by_key(|(_, d)| **d)
        .map_or(0, |(k, _)| k + 1);
    let rss_joined = memory(agent.pid())?;
    let total = Counts::expected(kind, n + joiners.len(), families);
    let after_joins = kernel::counts(&mut h, args.ipv6)?;
    check_counts("after the joins", &after_joins, &total)?;
    writer.keep_alive()?;

    // Restart with nothing to change.
    eprintln!("weftctl:   restarting weftd (nothing to change)");
    stop_weftd(&mut agent)?;
    let t = Instant::now();
    let mut agent = start_weftd(weftd, &node_ns, &dirs.run, args.ipv6, "weftd-restart.log")?;
    let (restart, lowest) = wait_socket(&mut h, &mut agent, &dirs.run, args.ipv6, t)?;
    let after_restart = kernel::counts(&mut h, args.ipv6)?;
    check_counts("after the restart", &after_restart, &total)?;
    stop_weftd(&mut agent)?;

    // The comparison: flush and rebuild the same state.
    eprintln!("weftctl:   flush-and-rebuild of the same state");
    let all: Vec<Peer> = bulk.iter().chain(joiners).cloned().collect();
    let flush = kernel::flush(&mut h, args.ipv6)?;
    let emptied = kernel::counts(&mut h, args.ipv6)?;
    check_counts("after the flush", &Counts::default(), &emptied)?;
    let rebuild = kernel::rebuild(&mut h, kind, underlay, &all)?;
    let rebuilt = kernel::counts(&mut h, args.ipv6)?;
    check_counts("after the rebuild", &rebuilt, &total)?;
    let count_cost = time_count(&mut h, args.ipv6)?;

    drop(writer);
    drop(etcd);
    drop(h);
    namespaces.remove()?;
    Ok(SizeReport {
        peers: n,
        entries: want,
        load,
        programmed,
        polls,
        log,
        ready,
        joins: Summary::of(&join_times),
        slowest_join,
        join_writes: Summary::of(&write_times),
        rss_programmed,
        rss_joined,
        restart,
        restart_lowest: lowest,
        restart_entries: total,
        flush,
        rebuild,
        count_cost,
    })
}

pub(crate) fn open_ns(name: &str) -> Result<NetNs> {
    NetNs::open(&netns::path(name)).map_err(BenchError::net(format!("opening netns {name}")))
}

/// The agent's underlay: `eth0` in the node namespace, its peer `eth0` in the wire
/// namespace, both up and addressed on the peers' /16 (and /64). Returns the node end's index.
pub(crate) fn cable(node: &NetNs, wire: &NetNs, v6: bool) -> Result<u32> {
    let mut h = Handle::new_in(node).map_err(BenchError::net("netlink in the node namespace"))?;
    let mut w = Handle::new_in(wire).map_err(BenchError::net("netlink in the wire namespace"))?;
    h.create_veth(&VethSpec {
        host_name: "eth0",
        host_alias: None,
        peer_name: "eth0",
        peer_ns: wire,
        mtu: Some(1500),
        peer_mac: None,
    })
    .map_err(BenchError::net("creating the underlay veth"))?;
    let mut addrs = vec![
        (true, net(&format!("{SELF_V4}/16"))?),
        (false, net(WIRE_V4)?),
    ];
    if v6 {
        addrs.push((true, net(&format!("{SELF_V6}/64"))?));
        addrs.push((false, net(WIRE_V6)?));
    }
    let mut node_index = 0;
    for (at_node, handle) in [(true, &mut h), (false, &mut w)] {
        let link = handle
            .link_by_name("eth0")
            .map_err(BenchError::net("looking up eth0"))?
            .ok_or_else(|| BenchError::Unexpected {
                what: "underlay veth".to_owned(),
                detail: "eth0 missing right after creation".to_owned(),
            })?;
        for (_, a) in addrs.iter().filter(|(n, _)| *n == at_node) {
            handle
                .addr_add(link.index, *a, true)
                .map_err(BenchError::net(format!("adding {a} to eth0")))?;
        }
        handle
            .set_up(link.index)
            .map_err(BenchError::net("bringing eth0 up"))?;
        if at_node {
            node_index = link.index;
        }
    }
    Ok(node_index)
}

fn net(s: &str) -> Result<IpNet> {
    s.parse().map_err(|e| BenchError::Unexpected {
        what: format!("address {s}"),
        detail: format!("{e}"),
    })
}

pub(crate) fn make_peers(count: usize, v6: bool) -> Result<Vec<Peer>> {
    let parse4 = |s: &str| s.parse::<Ipv4Net>();
    let parse6 = |s: &str| s.parse::<Ipv6Net>();
    let bad = |e: ipnet::AddrParseError| BenchError::Unexpected {
        what: "the address plan".to_owned(),
        detail: e.to_string(),
    };
    synthetic_peers(
        count,
        parse4(UNDERLAY_V4).map_err(bad)?,
        if v6 {
            Some(parse6(UNDERLAY_V6).map_err(bad)?)
        } else {
            None
        },
        parse4(PODS_V4).map_err(bad)?,
        if v6 {
            Some(parse6(PODS_V6).map_err(bad)?)
        } else {
            None
        },
    )
    .map_err(|e| BenchError::Unexpected {
        what: "synthetic peers".to_owned(),
        detail: e.to_string(),
    })
}

pub(crate) fn cluster_config(backend: BackendKind, v6: bool) -> Result<ClusterConfig> {
    let bad = |e: ipnet::AddrParseError| BenchError::Unexpected {
        what: "the pod CIDRs".to_owned(),
        detail: e.to_string(),
    };
    let mut cfg = ClusterConfig::new(
        Some(PODS_V4.parse().map_err(bad)?),
        if v6 {
            Some(PODS_V6.parse().map_err(bad)?)
        } else {
            None
        },
    );
    cfg.block_size_v4 = BLOCK_V4;
    cfg.block_size_v6 = BLOCK_V6;
    cfg.backend = backend;
    cfg.validate().map_err(|e| BenchError::Unexpected {
        what: "the cluster config".to_owned(),
        detail: e.to_string(),
    })?;
    Ok(cfg)
}

/// `weftd` in `--bin-dir`, or next to this executable.
pub(crate) fn weftd_binary(bin_dir: Option<&Path>) -> Result<PathBuf> {
    let dir = match bin_dir {
        Some(d) => d.to_owned(),
        None => std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf))
            .unwrap_or_default(),
    };
    let path = dir.join("weftd");
    if is_executable(&path) {
        std::fs::canonicalize(&path)
            .map_err(BenchError::io(format!("resolving {}", path.display())))
    } else {
        Err(BenchError::MissingBinary {
            what: "weftd (build it, or pass --bin-dir)",
            path,
        })
    }
}

/// weftd as the lab runs it, with the defaults of a real node otherwise (lease TTL, resync
/// interval).
fn start_weftd(weftd: &Path, ns: &str, dir: &Path, v6: bool, log: &str) -> Result<Daemon> {
    let p = |sub: &str| dir.join(sub).display().to_string();
    let mut args = vec![
        format!("--node-name={SELF_NAME}"),
        format!("--etcd-endpoints={}", etcd::endpoint()),
        format!("--underlay-address={SELF_V4}"),
        format!("--cni-conf-dir={}", p("net.d")),
        format!("--run-dir={}", p("run")),
        format!("--state-dir={}", p("state")),
        format!("--cni-log-file={}", p("cni.log")),
    ];
    if v6 {
        args.push(format!("--underlay-address6={SELF_V6}"));
    }
    Daemon::spawn("weftd", ns, weftd, &args, &dir.join(log))
}

pub(crate) fn stop_weftd(agent: &mut Daemon) -> Result<()> {
    match agent.stop(Duration::from_secs(10)) {
        Some(s) if s.success() => Ok(()),
        Some(s) => Err(BenchError::Daemon {
            what: "weftd".to_owned(),
            reason: format!("exited with {s} on SIGTERM"),
            tail: agent.log_tail(),
        }),
        None => Err(BenchError::Daemon {
            what: "weftd".to_owned(),
            reason: "did not exit within 10 s of SIGTERM".to_owned(),
            tail: agent.log_tail(),
        }),
    }
}

/// Polls the counts until they reach `want`; returns the time since `t0` (taken just before
/// weftd was spawned) and the number of polls.
fn wait_counts(
    h: &mut Handle,
    agent: &mut Daemon,
    want: &Counts,
    v6: bool,
    t0: Instant,
) -> Result<(Duration, usize)> {
    let mut polls = 0;
    loop {
        signal::check()?;
        if agent.exited().is_some() {
            return Err(agent.died());
        }
        // Routes only (the cheapest dump, and the last entry of each peer); the full count
        // once they are all there. Polling costs CPU the agent could use: keep it small.
        let routes = kernel::route_count(h, v6)?;
        polls += 1;
        if routes >= want.routes && kernel::counts(h, v6)?.reached(want) {
            return Ok((t0.elapsed(), polls));
        }
        if t0.elapsed() > PROGRAM_TIMEOUT {
            let have = kernel::counts(h, v6)?;
            return Err(BenchError::Timeout {
                what: format!("weftd programming {} entries", want.total()),
                secs: PROGRAM_TIMEOUT.as_secs(),
                detail: format!("have {have:?}, want {want:?}; weftd: {}", agent.log_tail()),
            });
        }
        std::thread::sleep(POLL);
    }
}

/// Waits until weft's route to every one of `blocks` is in the FIB.
fn wait_routes(h: &mut Handle, agent: &mut Daemon, blocks: &[IpNet], since: Instant) -> Result<()> {
    for b in blocks {
        loop {
            if kernel::has_route(h, b)? {
                break;
            }
            if agent.exited().is_some() {
                return Err(agent.died());
            }
            if since.elapsed() > JOIN_TIMEOUT {
                return Err(BenchError::Timeout {
                    what: format!("the route to joining block {b}"),
                    secs: JOIN_TIMEOUT.as_secs(),
                    detail: agent.log_tail(),
                });
            }
            // A lookup is a few microseconds of kernel time; 0.2 ms between them keeps the
            // poller off the agent's CPU and the resolution far below the target.
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    Ok(())
}

/// After a restart: the time until weftd's socket answers (it is served once the control
/// loop has loaded and reconciled the whole cluster), and the lowest counts seen meanwhile.
fn wait_socket(
    h: &mut Handle,
    agent: &mut Daemon,
    dir: &Path,
    v6: bool,
    since: Instant,
) -> Result<(Duration, Counts)> {
    let socket = dir.join("run").join("weftd.sock");
    let mut lowest: Option<Counts> = None;
    loop {
        signal::check()?;
        if agent.exited().is_some() {
            return Err(agent.died());
        }
        if UnixStream::connect(&socket).is_ok() {
            let took = since.elapsed();
            return Ok((took, lowest.unwrap_or_default()));
        }
        let c = kernel::counts(h, v6)?;
        lowest = Some(match lowest {
            None => c,
            Some(l) => Counts {
                routes: l.routes.min(c.routes),
                fdb: l.fdb.min(c.fdb),
                neigh: l.neigh.min(c.neigh),
            },
        });
        if since.elapsed() > PROGRAM_TIMEOUT {
            return Err(BenchError::Timeout {
                what: "the restarted weftd's socket".to_owned(),
                secs: PROGRAM_TIMEOUT.as_secs(),
                detail: agent.log_tail(),
            });
        }
        std::thread::sleep(POLL);
    }
}

fn check_counts(when: &str, have: &Counts, want: &Counts) -> Result<()> {
    if have == want {
        Ok(())
    } else {
        Err(BenchError::Unexpected {
            what: format!("weft's kernel entries {when}"),
            detail: format!("have {have:?}, expected {want:?}"),
        })
    }
}

/// What one poll while waiting (a route count) costs at the full size, median of 5.
fn time_count(h: &mut Handle, v6: bool) -> Result<Duration> {
    let mut samples = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        kernel::route_count(h, v6)?;
        samples.push(t.elapsed());
    }
    samples.sort_unstable();
    Ok(samples[samples.len() / 2])
}

/// weftd's memory, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

pub(crate) fn memory(pid: u32) -> Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(BenchError::io(format!("reading {path}")))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(Memory {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
    })
}

/// Points in weftd's own log (its JSON lines carry wall-clock times, ms resolution),
/// relative to the spawn: where the start-up time goes.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogMarks {
    /// "node ready": connected, lease and block held, dataplane opened, record published.
    pub ready: Option<Duration>,
    /// The first and the last "peer programmed".
    pub first_peer: Option<Duration>,
    pub last_peer: Option<Duration>,
    /// The first "policy applied" (a committed plan), and its own timings: load, world,
    /// compile, nft (ms).
    pub first_policy: Option<Duration>,
    pub first_policy_parts: Option<[f64; 4]>,
}

pub(crate) fn log_marks(log: &Path, spawned: SystemTime) -> LogMarks {
    let Ok(text) = std::fs::read_to_string(log) else {
        return LogMarks::default();
    };
    let base = spawned
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let rel = |t: f64| Duration::try_from_secs_f64((t - base).max(0.0)).ok();
    let mut marks = LogMarks::default();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(time), Some(msg)) = (v["time"].as_f64(), v["msg"].as_str()) else {
            continue;
        };
        match msg {
            "node ready" => marks.ready = marks.ready.or(rel(time)),
            "peer programmed" => {
                marks.first_peer = marks.first_peer.or(rel(time));
                marks.last_peer = rel(time);
            }
            "policy applied" if marks.first_policy.is_none() => {
                marks.first_policy = rel(time);
                let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
                marks.first_policy_parts =
                    Some([f("loadMs"), f("worldMs"), f("compileMs"), f("nftMs")]);
            }
            _ => {}
        }
    }
    marks
}
