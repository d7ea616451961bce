//! `weftctl bench scale`: one real `weftd` against a whole cluster — nodes, pods, namespaces
//! and NetworkPolicies — held by a real datastore, for weft's own etcd and for a real
//! kube-apiserver in the same run, with the same world (issue 12).
//!
//! A module of its own rather than a flag of `bench agent`: that bench simulates nodes
//! only (peers, joins, a flush-and-rebuild comparison); this one needs pods, policies, local
//! endpoints and a second datastore, and judges other targets.
//!
//! Per datastore, in namespaces this run makes and removes (`wtb<pid>ne` / `wtb<pid>nk` for
//! the agent's node, `wtb<pid>nwe` / `wtb<pid>nwk` for the far end of its underlay cable):
//!
//! 1. the datastore starts on the node namespace's loopback: the bench's etcd, or etcd plus
//!    kube-apiserver ([`crate::kubeplane`]); the world ([`world`], seeded) is written to it
//!    as a cluster's own writers write it ([`etcd`], [`kube`]), untimed; the agent's own pods
//!    are endpoint files in weftd's run dir, as the plugin leaves them;
//! 2. weftd starts in the node namespace; the clock runs from the spawn until the kernel
//!    holds a route (`proto 87`, and FDB and neighbour entries on `weft.vx`) to every peer
//!    AND weftd says its policy is in sync with the whole view (status over its socket,
//!    asked once its log says a plan was committed);
//! 3. pod writes: a new pod on a remote node, with the labels and namespace of a remote pod
//!    that a local pod's policy already admits; clock from the write that gives it an
//!    address (etcd: its endpoint record; Kubernetes: `status.podIPs`) until its address is
//!    in the policy table's peer set ([`probe`], element dumps);
//! 4. policy writes: a new policy selecting a local pod; clock from the write until that
//!    pod's address jumps to another class chain in the table;
//! 5. weftd's peak RSS (`VmHWM`).
//!
//! Everything it makes (namespaces, processes, temp dirs) is removed at the end, on error
//! and on Ctrl-C; `weftctl bench cleanup` removes what a SIGKILLed run left.

mod etcd;
mod kube;
mod probe;
mod report;
mod world;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use clap::{Args, ValueEnum};
use weft_net::Handle;
use weft_proto::{EndpointFile, EndpointMode, PolicyStatus, Request, ask};
use weft_store::{BackendKind, Revision};

use super::agent::kernel::{self, Counts};
use super::agent::{self as agent_bench, Memory};
use super::child::Daemon;
use super::error::{BenchError, Result};
use super::etcd::{self as bench_etcd, Etcd};
use super::scratch::ScratchDir;
use super::signal;
use super::stats::Summary;
use weft_kubeplane::Identity;

use crate::kubeplane::{KubePlane, KubePlaneOptions};
use crate::netns::{self, NetnsSet};
pub use report::{ScaleReport, SideReport};
use world::{Pod, Spec, World};

/// How often the kernel is counted while waiting for the full sync.
const POLL: Duration = Duration::from_millis(20);
/// Between two reads of a set while waiting for one probe.
const PROBE_POLL: Duration = Duration::from_micros(250);
const SYNC_TIMEOUT: Duration = Duration::from_secs(300);
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// After the untimed half of a pod (its labels), before the timed write: weftd coalesces
/// events for 30 ms, so the timed write starts from a quiet agent.
const PROBE_GAP: Duration = Duration::from_millis(100);
const BACKEND: BackendKind = BackendKind::Vxlan;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DatastoreChoice {
    Etcd,
    Kubernetes,
    Both,
}

/// Options of `weftctl bench scale`.
#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// Nodes in the cluster, the agent's own included.
    #[arg(long, default_value_t = 1000,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(2..=60_000))]
    pub nodes: usize,
    /// Pods in the cluster, the agent's own included.
    #[arg(long, default_value_t = 10_000,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub pods: usize,
    /// NetworkPolicies (the first of each namespace is its default-deny).
    #[arg(long, default_value_t = 1000,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    pub policies: usize,
    /// Namespaces the pods and policies are spread over.
    #[arg(long, default_value_t = 50,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    pub namespaces: usize,
    /// Pods on the agent's own node (endpoint files, as the plugin leaves them).
    #[arg(long, default_value_t = 50,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=190))]
    pub local_pods: usize,
    /// Timed writes of each kind (pods, policies) per datastore.
    #[arg(long, default_value_t = 50,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1000))]
    pub writes: usize,
    /// The world's seed.
    #[arg(long, default_value_t = 12)]
    pub seed: u64,
    #[arg(long, value_enum, default_value_t = DatastoreChoice::Both)]
    pub datastore: DatastoreChoice,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Where `weftd` is [default: weftctl-lab's directory, next to weftctl].
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Keep the logs in /tmp/weftctl-bench-<pid>/ instead of removing them.
    #[arg(long)]
    pub keep_logs: bool,
}

/// Runs the benchmark and prints the report. Missing a target is a result, not an error.
pub fn run(args: &ScaleArgs) -> Result<()> {
    run_inner(args).map_err(|e| {
        if signal::interrupted() {
            BenchError::Interrupted
        } else {
            e
        }
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Etcd,
    Kubernetes,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Etcd => "etcd",
            Kind::Kubernetes => "kubernetes",
        }
    }

    fn tag(self) -> char {
        match self {
            Kind::Etcd => 'e',
            Kind::Kubernetes => 'k',
        }
    }
}

fn run_inner(args: &ScaleArgs) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(BenchError::NotRoot);
    }
    if args.local_pods > args.pods {
        return Err(BenchError::Unexpected {
            what: "--local-pods".into(),
            detail: "cannot be more than --pods".into(),
        });
    }
    let weftd = agent_bench::weftd_binary(args.bin_dir.as_deref())?;
    signal::install()?;
    let mut scratch = ScratchDir::create(super::SCRATCH_PREFIX)?;
    if args.keep_logs {
        scratch.keep();
    }
    let shm = Path::new("/dev/shm");
    let fast = if shm.is_dir() {
        ScratchDir::create_in(shm, super::SCRATCH_PREFIX)?
    } else {
        ScratchDir::create_in(scratch.path(), "etcd-")?
    };
    let spec = Spec {
        nodes: args.nodes,
        pods: args.pods,
        policies: args.policies,
        namespaces: args.namespaces,
        local_pods: args.local_pods,
        seed: args.seed,
    };
    let peers = agent_bench::make_peers(args.nodes - 1, false)?;
    let world = world::build(&spec, peers).map_err(|detail| BenchError::Unexpected {
        what: "the world".into(),
        detail,
    })?;
    let kinds = match args.datastore {
        DatastoreChoice::Etcd => vec![Kind::Etcd],
        DatastoreChoice::Kubernetes => vec![Kind::Kubernetes],
        DatastoreChoice::Both => vec![Kind::Etcd, Kind::Kubernetes],
    };
    let load_before = super::load_average();
    let mut sides = Vec::new();
    for kind in kinds {
        signal::check()?;
        eprintln!(
            "weftctl: bench scale on {}: {} nodes, {} pods ({} local), {} policies",
            kind.name(),
            args.nodes,
            args.pods,
            args.local_pods,
            args.policies
        );
        let dirs = Dirs {
            run: scratch.path().join(kind.name()),
            fast: fast.path().join(kind.name()),
        };
        sides.push(run_side(args, &weftd, &world, kind, &dirs)?);
    }
    drop(fast);
    drop(scratch);
    let report = ScaleReport {
        weftd: weftd.display().to_string(),
        nodes: args.nodes,
        pods: args.pods,
        local_pods: world.local_pods().count(),
        policies: args.policies,
        namespaces: args.namespaces,
        writes: args.writes,
        seed: args.seed,
        load_before,
        load_after: super::load_average(),
        sides,
    };
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
    }
    Ok(())
}

struct Dirs {
    run: PathBuf,
    /// On tmpfs: the datastore's data.
    fast: PathBuf,
}

/// The run's datastore: what the world and the probes are written through.
enum Store {
    Etcd {
        world: etcd::EtcdWorld,
        _etcd: Etcd,
    },
    Kube {
        world: kube::KubeWorld,
        plane: KubePlane,
    },
}

impl Store {
    /// The untimed half of a probe pod (its labels, or the Pod without an address).
    fn pod_first(&self, world: &World, p: &Pod) -> Result<()> {
        match self {
            Store::Etcd { world: w, .. } => w.pod_labels(p),
            Store::Kube { world: w, .. } => w.pod(world, p),
        }
    }

    /// The timed half: the pod's address.
    fn pod_address(&self, world: &World, p: &Pod) -> Result<()> {
        match self {
            Store::Etcd { world: w, .. } => w.pod_endpoint(world, p),
            Store::Kube { world: w, .. } => w.pod_ips(p),
        }
    }

    fn policy(&self, p: &world::Policy) -> Result<()> {
        match self {
            Store::Etcd { world: w, .. } => w.policy(p),
            Store::Kube { world: w, .. } => w.policy(p),
        }
    }

    fn keep_alive(&self) -> Result<()> {
        match self {
            Store::Etcd { world: w, .. } => w.keep_alive(),
            Store::Kube { .. } => Ok(()),
        }
    }
}

/// One datastore, start to finish, in its own namespaces.
fn run_side(
    args: &ScaleArgs,
    weftd: &Path,
    world: &World,
    kind: Kind,
    dirs: &Dirs,
) -> Result<SideReport> {
    let pid = std::process::id();
    let (node_ns, wire_ns) = (
        format!("wtb{pid}n{}", kind.tag()),
        format!("wtb{pid}nw{}", kind.tag()),
    );
    let namespaces = NetnsSet::create(vec![node_ns.clone(), wire_ns.clone()])?;
    for d in [&dirs.run, &dirs.fast] {
        std::fs::create_dir_all(d).map_err(BenchError::io(format!("creating {}", d.display())))?;
    }
    let ns = agent_bench::open_ns(&node_ns)?;
    agent_bench::cable(&ns, &agent_bench::open_ns(&wire_ns)?, false)?;
    let cfg = agent_bench::cluster_config(BACKEND, false)?;

    let started = Instant::now();
    let (store, min_revision, control_plane) = match kind {
        Kind::Etcd => {
            let e = Etcd::start(&node_ns, &dirs.fast, &dirs.run.join("etcd.log"))?;
            let took = started.elapsed();
            let w = etcd::EtcdWorld::connect(
                agent_bench::open_ns(&node_ns)?,
                bench_etcd::endpoint(),
                &cfg,
            )?;
            eprintln!("weftctl:   writing the world to etcd (untimed)");
            let (_, revision) = w.load(world)?;
            (Store::Etcd { world: w, _etcd: e }, revision, took)
        }
        Kind::Kubernetes => {
            let kdir = dirs.run.join("kube");
            std::fs::create_dir_all(&kdir)
                .map_err(BenchError::io(format!("creating {}", kdir.display())))?;
            let mut opts =
                KubePlaneOptions::new(netns::path(&node_ns), kdir, dirs.fast.join("kube-etcd"));
            opts.users.push(weftd_identity());
            let plane = KubePlane::start(opts)?;
            let took = started.elapsed();
            let w = kube::KubeWorld::connect(
                agent_bench::open_ns(&node_ns)?,
                &plane.admin_kubeconfig(),
            )?;
            let data: BTreeMap<String, String> = [
                ("cidrV4", agent_bench::PODS_V4.to_owned()),
                ("blockSizeV4", "24".to_owned()),
                ("backend", "vxlan".to_owned()),
                ("ipam", "weft".to_owned()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            w.install(data)?;
            eprintln!(
                "weftctl:   writing the world through the API server (untimed, {} requests)",
                world.namespaces.len() * 2
                    + world.peers.len() * 2
                    + world.pods.len() * 2
                    + world.policies.len()
            );
            w.load(world)?;
            (Store::Kube { world: w, plane }, 1, took)
        }
    };
    let setup = started.elapsed() - control_plane;
    eprintln!(
        "weftctl:   datastore up in {:.1} s, world written in {:.1} s",
        control_plane.as_secs_f64(),
        setup.as_secs_f64()
    );
    write_endpoint_files(&dirs.run.join("run"), world)?;

    let mut h = Handle::new_in(&ns).map_err(BenchError::net(format!("netlink in {node_ns}")))?;
    let want = Counts::expected(weft_backend::Kind::Vxlan, world.peers.len(), 1);
    let local = world.local_pods().count();
    eprintln!(
        "weftctl:   starting weftd; waiting for {} kernel entries and the policy of {} policies",
        want.total(),
        world.policies.len()
    );
    let spawned_wall = SystemTime::now();
    let t0 = Instant::now();
    let mut agent = start_weftd(weftd, &node_ns, &dirs.run, kind, &store)?;
    let sync = wait_sync(
        &mut h,
        &mut agent,
        &dirs.run,
        &want,
        world.policies.len(),
        local,
        min_revision,
        t0,
    )?;
    let rss_synced = agent_bench::memory(agent.pid())?;
    let log = agent_bench::log_marks(&dirs.run.join("weftd.log"), spawned_wall);

    store.keep_alive()?;
    eprintln!("weftctl:   {} pod writes", args.writes);
    let pods = ns
        .run(|| pod_writes(&store, world, &mut agent, args.writes, args.seed))
        .map_err(BenchError::net("entering the node namespace"))??;
    store.keep_alive()?;
    eprintln!("weftctl:   {} policy writes", args.writes);
    let policies = ns
        .run(|| policy_writes(&store, world, &mut agent, args.writes))
        .map_err(BenchError::net("entering the node namespace"))??;
    let rss_end = agent_bench::memory(agent.pid())?;
    let after = kernel::counts(&mut h, false)?;
    if after != want {
        return Err(BenchError::Unexpected {
            what: "weft's kernel entries after the writes".into(),
            detail: format!("have {after:?}, expected {want:?}"),
        });
    }
    agent_bench::stop_weftd(&mut agent)?;
    let apiserver_rss = match &store {
        Store::Kube { plane, .. } => agent_bench::memory(plane.apiserver_pid()).ok(),
        Store::Etcd { .. } => None,
    };
    drop(h);
    drop(store);
    namespaces.remove()?;
    Ok(SideReport {
        datastore: kind.name(),
        control_plane_ms: control_plane.as_secs_f64() * 1e3,
        setup_ms: setup.as_secs_f64() * 1e3,
        entries: want,
        sync,
        log,
        pods,
        policies,
        rss_synced: mib(rss_synced),
        rss_end: mib(rss_end),
        apiserver_rss_mib: apiserver_rss.map(|m| m.rss_kib as f64 / 1024.0),
    })
}

fn mib(m: Memory) -> (f64, f64) {
    (m.rss_kib as f64 / 1024.0, m.hwm_kib as f64 / 1024.0)
}

/// The agent's pods as the plugin leaves them: one endpoint file each in weftd's run dir.
fn write_endpoint_files(run_dir: &Path, world: &World) -> Result<()> {
    let dir = run_dir.join("endpoints");
    std::fs::create_dir_all(&dir).map_err(BenchError::io(format!("creating {}", dir.display())))?;
    for (i, p) in world.local_pods().enumerate() {
        let f = EndpointFile {
            container_id: format!("c-{}", p.name),
            ifname: "eth0".into(),
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            addresses: vec![IpAddr::V4(p.address)],
            host_interface: Some(format!("wv{i}")),
            mac: None,
            mode: EndpointMode::Bridge,
            // No namespace recorded: weftd's GC leaves these pods (which have none) alone.
            network: None,
            netns: None,
            attached_at_ms: None,
        };
        let path = dir.join(format!("{}-eth0.json", f.container_id));
        let text = serde_json::to_string(&f).map_err(|e| BenchError::Unexpected {
            what: "an endpoint file".into(),
            detail: e.to_string(),
        })?;
        std::fs::write(&path, text)
            .map_err(BenchError::io(format!("writing {}", path.display())))?;
    }
    Ok(())
}

/// Who weftd is on Kubernetes: deploy/weft.yaml's ServiceAccount, with exactly its RBAC
/// (`KubeWorld::install` applies it), as on a cluster.
fn weftd_identity() -> Identity {
    Identity::service_account(kube::WEFT_NAMESPACE, "weft")
}

/// weftd as the lab runs it; on Kubernetes as its ServiceAccount.
fn start_weftd(weftd: &Path, ns: &str, dir: &Path, kind: Kind, store: &Store) -> Result<Daemon> {
    let p = |sub: &str| dir.join(sub).display().to_string();
    let mut args = vec![
        format!("--node-name={}", world::SELF_NODE),
        format!("--underlay-address={}", agent_bench::SELF_V4),
        format!("--cni-conf-dir={}", p("net.d")),
        format!("--run-dir={}", p("run")),
        format!("--state-dir={}", p("state")),
        format!("--cni-log-file={}", p("cni.log")),
    ];
    match (kind, store) {
        (Kind::Kubernetes, Store::Kube { plane, .. }) => {
            args.push("--datastore=kubernetes".into());
            args.push(format!(
                "--kubeconfig={}",
                plane.kubeconfig(&weftd_identity()).display()
            ));
            args.push(format!("--kube-namespace={}", kube::WEFT_NAMESPACE));
        }
        _ => {
            args.push("--datastore=etcd".into());
            args.push(format!("--etcd-endpoints={}", bench_etcd::endpoint()));
        }
    }
    Daemon::spawn("weftd", ns, weftd, &args, &dir.join("weftd.log"))
}

/// When each half of the full sync was first seen, from weftd's spawn.
#[derive(Debug, Clone, Default)]
pub struct Sync {
    /// Every peer's route, FDB and neighbour entry in the kernel.
    pub routes: Duration,
    /// weftd's status: policy in sync with the whole view.
    pub policy: Duration,
    /// Both.
    pub full: Duration,
    pub polls: usize,
    pub status: PolicyStatus,
}

fn status(socket: &Path) -> Option<PolicyStatus> {
    let reply = ask(socket, &Request::Status, Duration::from_secs(10)).ok()?;
    Some(reply.status?.policy)
}

/// Polls the kernel's counts every [`POLL`] and, once weftd logged a committed plan, its
/// status, until both are complete.
#[allow(clippy::too_many_arguments)]
fn wait_sync(
    h: &mut Handle,
    agent: &mut Daemon,
    dir: &Path,
    want: &Counts,
    policies: usize,
    local: usize,
    min_revision: Revision,
    t0: Instant,
) -> Result<Sync> {
    let socket = dir.join("run").join("weftd.sock");
    let log = dir.join("weftd.log");
    let mut s = Sync::default();
    let (mut routes_at, mut policy_at) = (None, None);
    loop {
        signal::check()?;
        if agent.exited().is_some() {
            return Err(agent.died());
        }
        if routes_at.is_none() {
            let routes = kernel::route_count(h, false)?;
            if routes >= want.routes && kernel::counts(h, false)?.reached(want) {
                routes_at = Some(t0.elapsed());
            }
        }
        // Status reads the drop counters from the kernel: asked only once the log says a
        // plan went in, so the poll does not compete with the first build.
        if policy_at.is_none()
            && committed(&log)
            && let Some(st) = status(&socket)
            && st.in_sync
            && st.view_loaded
            && st.policies == policies
            && st.endpoints == local
            && st.revision >= min_revision
        {
            policy_at = Some(t0.elapsed());
            s.status = st;
        }
        s.polls += 1;
        if let (Some(r), Some(p)) = (routes_at, policy_at) {
            s.routes = r;
            s.policy = p;
            s.full = r.max(p);
            return Ok(s);
        }
        if t0.elapsed() > SYNC_TIMEOUT {
            let have = kernel::counts(h, false)?;
            return Err(BenchError::Timeout {
                what: "weftd's full sync".into(),
                secs: SYNC_TIMEOUT.as_secs(),
                detail: format!(
                    "kernel {have:?} of {want:?}; policy status {:?}; weftd: {}",
                    status(&socket),
                    agent.log_tail()
                ),
            });
        }
        std::thread::sleep(POLL);
    }
}

/// Whether weftd's log has a `policy applied` line (the plan committed at least once).
fn committed(log: &Path) -> bool {
    std::fs::read_to_string(log).is_ok_and(|t| t.contains("\"policy applied\""))
}

/// Timings of one kind of write.
#[derive(Debug, Clone)]
pub struct Writes {
    /// From the write's answer to first sight in the kernel.
    pub to_kernel: Summary,
    /// From the write's start (the datastore's own commit included).
    pub from_start: Summary,
    /// The write itself (request to answer).
    pub ack: Summary,
    /// What was written and what was watched, for the report.
    pub what: String,
}

/// Pod writes: probe pods cloned from a remote pod whose address a local pod's policy
/// admits (found in the table's peer sets), each on a peer; the clock stops when its
/// address is in that peer set. Runs inside the node namespace.
fn pod_writes(
    store: &Store,
    world: &World,
    agent: &mut Daemon,
    n: usize,
    seed: u64,
) -> Result<Writes> {
    let sets = probe::peer_sets()?;
    let candidates: Vec<&Pod> = world
        .pods
        .iter()
        .filter(|p| p.peer.is_some() && sets.contains_key(&IpAddr::V4(p.address)))
        .collect();
    if candidates.is_empty() {
        return Err(BenchError::Unexpected {
            what: "the pod writes".into(),
            detail: "no remote pod is a peer of any local pod's policy (the world is too small?)"
                .into(),
        });
    }
    let template = candidates[world::Rng::new(seed).below(candidates.len())];
    let watched = sets
        .get(&IpAddr::V4(template.address))
        .and_then(|s| s.first())
        .cloned()
        .unwrap_or_default();
    let (mut to_kernel, mut from_start, mut ack) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..n {
        signal::check()?;
        let probe = world::probe_pod(world, template, k).ok_or_else(|| BenchError::Unexpected {
            what: "the pod writes".into(),
            detail: "no address left for a probe pod".into(),
        })?;
        store.pod_first(world, &probe)?;
        std::thread::sleep(PROBE_GAP);
        let addr = IpAddr::V4(probe.address);
        let start = Instant::now();
        store.pod_address(world, &probe)?;
        let answered = Instant::now();
        let seen = wait_for(
            agent,
            &format!("pod {} in set {watched}", probe.name),
            || probe::set_has(&watched, addr),
        )?;
        ack.push(answered - start);
        to_kernel.push(seen.saturating_duration_since(answered));
        from_start.push(seen - start);
    }
    Ok(Writes {
        to_kernel: Summary::of(&to_kernel),
        from_start: Summary::of(&from_start),
        ack: Summary::of(&ack),
        what: format!(
            "pods like {}/{} ({} peer sets hold it), watched in set {watched}",
            template.namespace,
            template.name,
            sets.get(&IpAddr::V4(template.address)).map_or(0, Vec::len)
        ),
    })
}

/// Policy writes: each a new policy selecting one local pod (in turn); the clock stops when
/// that pod's address jumps to another class chain. Runs inside the node namespace.
fn policy_writes(store: &Store, world: &World, agent: &mut Daemon, n: usize) -> Result<Writes> {
    let local: Vec<&Pod> = world.local_pods().collect();
    let (mut to_kernel, mut from_start, mut ack) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..n {
        signal::check()?;
        let target = local[k % local.len()];
        let addr = IpAddr::V4(target.address);
        let before = probe::ingress_class(addr)?;
        let policy = world::probe_policy(target, k);
        std::thread::sleep(PROBE_GAP);
        let start = Instant::now();
        store.policy(&policy)?;
        let answered = Instant::now();
        let seen = wait_for(
            agent,
            &format!(
                "the class of {}/{} to change",
                target.namespace, target.name
            ),
            || Ok(probe::ingress_class(addr)?.is_some_and(|c| Some(&c) != before.as_ref())),
        )?;
        ack.push(answered - start);
        to_kernel.push(seen.saturating_duration_since(answered));
        from_start.push(seen - start);
    }
    Ok(Writes {
        to_kernel: Summary::of(&to_kernel),
        from_start: Summary::of(&from_start),
        ack: Summary::of(&ack),
        what: format!(
            "a policy selecting one of {} local pods in turn, watched in its ingress verdict map",
            local.len()
        ),
    })
}

/// Polls `seen` every [`PROBE_POLL`] until true; returns when it first was.
fn wait_for(
    agent: &mut Daemon,
    what: &str,
    mut seen: impl FnMut() -> Result<bool>,
) -> Result<Instant> {
    let start = Instant::now();
    loop {
        if seen()? {
            return Ok(Instant::now());
        }
        if agent.exited().is_some() {
            return Err(agent.died());
        }
        if start.elapsed() > PROBE_TIMEOUT {
            return Err(BenchError::Timeout {
                what: what.to_owned(),
                secs: PROBE_TIMEOUT.as_secs(),
                detail: agent.log_tail(),
            });
        }
        std::thread::sleep(PROBE_POLL);
    }
}
