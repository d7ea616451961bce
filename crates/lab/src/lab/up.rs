//! `lab up` and `lab node add`: reconcile the lab with its record, stage by stage.
//!
//! Prerequisites are checked before anything is made, so a missing one costs one line and
//! leaves the machine as it was. Then the record is written first (what the lab should be),
//! and every stage makes what is missing and keeps what exists: a second `up` finds
//! everything in place and only waits for readiness; an `up` after a crash finishes the job.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use clap::{Args, ValueEnum};

use super::error::{LabError, Result};
use super::kubeapi::Session;
use super::names::{self, Names};
use super::node::{self, Starting};
use super::records::Objects;
use super::state::{Backend, Datastore, Ipam, Lock, Mode, Node, Options, Pod, State, write_atomic};
use super::topology::{self, MAX_NODE_INDEX, MAX_SEGMENTS};
use super::{controlplane, etcd, kubelet, owner, pod};
use weft_ctl::exe;

pub const ETCD_HINT: &str = "Debian: apt-get install etcd-server";
const IP_HINT: &str = "Debian: apt-get install iproute2";
const OPENSSL_HINT: &str = "Debian: apt-get install openssl";
const DEFAULT_NODES: u32 = 3;
const DEFAULT_PODS_PER_NODE: u32 = 2;
const DEFAULT_MTU: u32 = 1500;
const MAX_PODS_PER_NODE: u32 = 200;
/// IPv6 needs links of at least 1280 bytes; IPv4 of 576.
const MIN_MTU_V6: u32 = 1280;
const MIN_MTU_V4: u32 = 576;

/// How far `lab up` goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Stage {
    /// Router, segments, outside.
    Underlay,
    /// …and etcd (with `--datastore kubernetes` also kube-apiserver, kube-controller-manager
    /// and weft's CRD and ConfigMap in them).
    Etcd,
    /// …and the node namespaces on their segments (and their Node objects; no weftd).
    Nodes,
    /// …and weftd on every node.
    Agents,
    /// Everything, pods included.
    Pods,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Nodes [new lab default: 3].
    #[arg(long)]
    nodes: Option<u32>,
    /// Pods made on each node [new lab default: 2].
    #[arg(long)]
    pods_per_node: Option<u32>,
    /// How nodes reach each other's pods [new lab default: vxlan].
    #[arg(long, value_enum)]
    backend: Option<Backend>,
    /// The plugin's mode [new lab default: bridge].
    #[arg(long, value_enum)]
    mode: Option<Mode>,
    /// Underlay segments behind the router; nodes go round-robin [default: 2 with
    /// --backend auto, else 1, or as many as --mtu lists].
    #[arg(long)]
    segments: Option<u32>,
    /// Underlay MTU: one for every segment, or one per segment (1500,9000).
    #[arg(long, value_name = "MTU[,MTU…]")]
    mtu: Option<String>,
    /// Give pods and the underlay IPv6 addresses too [new lab default].
    #[arg(long, overrides_with = "no_ipv6")]
    ipv6: bool,
    /// IPv4 only.
    #[arg(long, overrides_with = "ipv6")]
    no_ipv6: bool,
    /// Where weftd, weft and weft-ipam are [default: weftctl-lab's directory, next to weftctl].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// weftd's --lease-ttl, in seconds [default: weftd's].
    #[arg(long, value_name = "SECS")]
    lease_ttl: Option<u32>,
    /// weftd's --resync-interval, in seconds [default: weftd's].
    #[arg(long, value_name = "SECS")]
    resync_interval: Option<u32>,
    /// Run weftd with --policy-cut-established (conntrack entries of flows a policy change
    /// denies are deleted).
    #[arg(long)]
    policy_cut_established: bool,
    /// weftd's --datapath: `nft` or `ebpf` (the eBPF fast path, docs/agent.md "Datapath")
    /// [new lab default: nft].
    #[arg(long, value_parser = ["nft", "ebpf"])]
    datapath: Option<String>,
    /// Where the cluster's state lives [new lab default: etcd]: `kubernetes` runs
    /// kube-apiserver and kube-controller-manager on the lab's etcd, the lab's nodes and
    /// pods are Node and Pod objects, and policies are written with kubectl.
    #[arg(long, value_enum)]
    datastore: Option<Datastore>,
    /// Where a node's blocks come from on the Kubernetes datastore [new lab default: weft]:
    /// `weft` (WeftBlock objects) or `kubernetes` (the Node's podCIDRs, which
    /// kube-controller-manager allocates; IPv6 blocks are then /64 unless asked otherwise).
    #[arg(long, value_enum)]
    ipam: Option<Ipam>,
    /// The cluster's IPv4 block prefix length (pods per block) [new lab default: 26].
    #[arg(long, value_name = "LEN")]
    block_size_v4: Option<u8>,
    /// The cluster's IPv6 block prefix length [new lab default: 122; 64 with --ipam
    /// kubernetes].
    #[arg(long, value_name = "LEN")]
    block_size_v6: Option<u8>,
    /// Real nodes (with `--datastore kubernetes`): every node runs containerd, kubelet and
    /// kube-proxy (and the control plane kube-scheduler), weft is installed from
    /// deploy/weft.yaml as a DaemonSet, and pods come from the API (`lab kubectl`), not
    /// from the lab [new lab default: off; IPv4 only unless --ipv6].
    #[arg(long)]
    kubelet: bool,
    /// With --kubelet: the directory of the image archives the nodes import (weft.oci.tar,
    /// pause.oci.tar, probe.oci.tar, made by scripts/lab-images.sh, required; any other
    /// *.oci.tar there too) [default:
    /// $WEFT_LAB_IMAGES, else lab-images next to the binaries' directory].
    #[arg(long, value_name = "DIR")]
    images: Option<PathBuf>,
    /// Stop after this stage (for looking at, or testing, the lab's own plumbing).
    #[arg(long, value_enum, default_value_t = Stage::Pods)]
    until: Stage,
}

impl UpArgs {
    fn ipv6(&self) -> Option<bool> {
        match (self.ipv6, self.no_ipv6) {
            (_, true) => Some(false),
            (true, _) => Some(true),
            _ => None,
        }
    }
}

/// `tool` on PATH, or the one-line error saying how to get it.
pub fn require_tool(tool: &'static str, hint: &'static str) -> Result<PathBuf> {
    exe::which(tool).ok_or(LabError::MissingTool { tool, hint })
}

/// `binary` in `dir`, executable.
pub fn require_binary(dir: &Path, binary: &'static str) -> Result<PathBuf> {
    let path = dir.join(binary);
    if exe::is_executable(&path) {
        Ok(path)
    } else {
        Err(LabError::MissingBinary {
            binary,
            dir: dir.to_owned(),
        })
    }
}

fn bin_dir(given: Option<&Path>) -> Result<PathBuf> {
    let dir = match given {
        Some(d) => d.to_owned(),
        None => super::own_dir().ok_or_else(|| {
            LabError::invalid(
                "--bin-dir",
                "",
                "weftctl-lab cannot tell its own directory; pass --bin-dir",
            )
        })?,
    };
    // Absolute, so the paths given to daemons mean the same from their working directories;
    // a directory that does not exist is reported by the prerequisites, with its binary.
    Ok(std::fs::canonicalize(&dir).unwrap_or(dir))
}

/// The options of the lab: the record's, with what the command line says checked against
/// them; or, for a new lab, the command line's with defaults.
fn resolve(lab: &str, args: &UpArgs, recorded: Option<&Options>) -> Result<Options> {
    let mtus_given = args.mtu.as_deref().map(parse_mtus).transpose()?;
    let bin_dir = bin_dir(args.bin_dir.as_deref())?;
    let opts = match recorded {
        Some(rec) => {
            let mut opts = rec.clone();
            // A different --bin-dir is no conflict: it only says where the binaries are now.
            if args.images.is_some() || opts.images.is_none() {
                opts.images = opts
                    .kubelet
                    .then(|| kubelet::images_dir(args.images.as_deref(), &bin_dir));
            }
            opts.bin_dir = bin_dir;
            opts
        }
        None => {
            let backend = args.backend.unwrap_or(Backend::Vxlan);
            let from_mtus = mtus_given.as_ref().filter(|m| m.len() > 1).map(Vec::len);
            let segments = args
                .segments
                .or(from_mtus.and_then(|n| u32::try_from(n).ok()))
                .unwrap_or(if backend == Backend::Auto { 2 } else { 1 });
            if !(1..=MAX_SEGMENTS).contains(&segments) {
                return Err(LabError::invalid(
                    "--segments",
                    segments.to_string(),
                    format!("must be 1 to {MAX_SEGMENTS}"),
                ));
            }
            let mtus = match mtus_given.clone() {
                None => vec![DEFAULT_MTU; segments as usize],
                Some(m) if m.len() == 1 => vec![m[0]; segments as usize],
                Some(m) if m.len() == segments as usize => m,
                Some(m) => {
                    return Err(LabError::invalid(
                        "--mtu",
                        args.mtu.clone().unwrap_or_default(),
                        format!("{} MTUs for {segments} segments", m.len()),
                    ));
                }
            };
            // A kubelet lab's pods come from the API; its nodes are IPv4 unless asked (the
            // 1.20 kubelet and kube-proxy take dual-stack as an alpha feature).
            let (default_pods, default_v6) = if args.kubelet {
                (0, false)
            } else {
                (DEFAULT_PODS_PER_NODE, true)
            };
            let images = args
                .kubelet
                .then(|| kubelet::images_dir(args.images.as_deref(), &bin_dir));
            Options {
                nodes: args.nodes.unwrap_or(DEFAULT_NODES),
                pods_per_node: args.pods_per_node.unwrap_or(default_pods),
                backend,
                mode: args.mode.unwrap_or(Mode::Bridge),
                mtus,
                ipv6: args.ipv6().unwrap_or(default_v6),
                bin_dir,
                lease_ttl: args.lease_ttl,
                resync_interval: args.resync_interval,
                policy_cut_established: args.policy_cut_established,
                datapath_ebpf: args.datapath.as_deref() == Some("ebpf"),
                block_size_v4: args.block_size_v4,
                block_size_v6: args.block_size_v6,
                datastore: args.datastore.unwrap_or_default(),
                ipam: args.ipam.unwrap_or_default(),
                kube_bin: None,
                kubelet: args.kubelet,
                images,
            }
        }
    };
    if let Some(rec) = recorded {
        let conflict = |option: &'static str, recorded: String, given: String| {
            Err(LabError::Conflict {
                lab: lab.to_owned(),
                option,
                recorded,
                given,
            })
        };
        let check = |option: &'static str, rec: String, given: Option<String>| match given {
            Some(g) if g != rec => conflict(option, rec, g),
            _ => Ok(()),
        };
        check(
            "--nodes",
            rec.nodes.to_string(),
            args.nodes.map(|n| n.to_string()),
        )?;
        check(
            "--pods-per-node",
            rec.pods_per_node.to_string(),
            args.pods_per_node.map(|n| n.to_string()),
        )?;
        check(
            "--backend",
            rec.backend.as_str().to_owned(),
            args.backend.map(|b| b.as_str().to_owned()),
        )?;
        check(
            "--mode",
            rec.mode.as_str().to_owned(),
            args.mode.map(|m| m.as_str().to_owned()),
        )?;
        check(
            "--segments",
            rec.segments().to_string(),
            args.segments.map(|s| s.to_string()),
        )?;
        let rec_mtus = join(&rec.mtus);
        let given_mtus = mtus_given.map(|m| {
            if m.len() == 1 {
                join(&vec![m[0]; rec.mtus.len()])
            } else {
                join(&m)
            }
        });
        check("--mtu", rec_mtus, given_mtus)?;
        let v6 = |b: bool| if b { "--ipv6" } else { "--no-ipv6" }.to_owned();
        check("IPv6", v6(rec.ipv6), args.ipv6().map(v6))?;
        check(
            "--lease-ttl",
            format!("{:?}", rec.lease_ttl),
            args.lease_ttl.map(|t| format!("{:?}", Some(t))),
        )?;
        check(
            "--resync-interval",
            format!("{:?}", rec.resync_interval),
            args.resync_interval.map(|t| format!("{:?}", Some(t))),
        )?;
        check(
            "--policy-cut-established",
            rec.policy_cut_established.to_string(),
            args.policy_cut_established.then(|| true.to_string()),
        )?;
        check(
            "--datapath",
            if rec.datapath_ebpf { "ebpf" } else { "nft" }.to_owned(),
            args.datapath.clone(),
        )?;
        check(
            "--block-size-v4",
            node::block_size_v4(rec).to_string(),
            args.block_size_v4.map(|b| b.to_string()),
        )?;
        check(
            "--block-size-v6",
            node::block_size_v6(rec).to_string(),
            args.block_size_v6.map(|b| b.to_string()),
        )?;
        check(
            "--datastore",
            rec.datastore.as_str().to_owned(),
            args.datastore.map(|d| d.as_str().to_owned()),
        )?;
        check(
            "--ipam",
            rec.ipam.as_str().to_owned(),
            args.ipam.map(|i| i.as_str().to_owned()),
        )?;
        check(
            "--kubelet",
            rec.kubelet.to_string(),
            args.kubelet.then(|| true.to_string()),
        )?;
    }
    validate(&opts)?;
    Ok(opts)
}

fn join(mtus: &[u32]) -> String {
    mtus.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_mtus(list: &str) -> Result<Vec<u32>> {
    list.split(',')
        .map(|m| {
            m.trim()
                .parse::<u32>()
                .map_err(|_| LabError::invalid("--mtu", list, "write MTUs as numbers: 1500,9000"))
        })
        .collect()
}

fn validate(opts: &Options) -> Result<()> {
    if !(1..=MAX_NODE_INDEX).contains(&opts.nodes) {
        return Err(LabError::invalid(
            "--nodes",
            opts.nodes.to_string(),
            format!("must be 1 to {MAX_NODE_INDEX}"),
        ));
    }
    if opts.pods_per_node > MAX_PODS_PER_NODE {
        return Err(LabError::invalid(
            "--pods-per-node",
            opts.pods_per_node.to_string(),
            format!("must be at most {MAX_PODS_PER_NODE}"),
        ));
    }
    if opts.ipam == Ipam::Kubernetes && opts.datastore != Datastore::Kubernetes {
        return Err(LabError::invalid(
            "--ipam",
            opts.ipam.as_str(),
            "node podCIDRs exist on the Kubernetes datastore only (add --datastore kubernetes)",
        ));
    }
    if opts.kubelet {
        let refuse = |what: &'static str, value: String, reason: &str| {
            Err(LabError::invalid(what, value, reason.to_owned()))
        };
        if opts.datastore != Datastore::Kubernetes {
            return refuse(
                "--kubelet",
                String::new(),
                "kubelets need the Kubernetes API (add --datastore kubernetes)",
            );
        }
        if opts.pods_per_node != 0 {
            return refuse(
                "--pods-per-node",
                opts.pods_per_node.to_string(),
                "a kubelet lab's pods come from the API (kubectl), not from the lab",
            );
        }
        if opts.mode != Mode::Bridge {
            return refuse(
                "--mode",
                opts.mode.as_str().to_owned(),
                "deploy/weft.yaml runs weftd in bridge mode",
            );
        }
    }
    // The lab's CIDRs are 10.244.0.0/16 and fd00:10:244::/56; weftd refuses blocks too small
    // for a pod next to the gateway, so the lab does too, before anything is made; and
    // kube-controller-manager allocates IPv6 node CIDRs at most 16 bits below the cluster's.
    let v6_largest = match opts.ipam {
        Ipam::Weft => 126,
        Ipam::Kubernetes => 72,
    };
    for (flag, size, range) in [
        ("--block-size-v4", opts.block_size_v4, 16..=30),
        ("--block-size-v6", opts.block_size_v6, 56..=v6_largest),
    ] {
        if let Some(size) = size
            && !range.contains(&size)
        {
            return Err(LabError::invalid(
                flag,
                size.to_string(),
                format!(
                    "must be {} to {} (blocks inside the lab's CIDR, room for pods)",
                    range.start(),
                    range.end()
                ),
            ));
        }
    }
    let min = if opts.ipv6 { MIN_MTU_V6 } else { MIN_MTU_V4 };
    if let Some(bad) = opts.mtus.iter().find(|m| !(min..=65535).contains(*m)) {
        return Err(LabError::invalid(
            "--mtu",
            bad.to_string(),
            format!(
                "must be {min} to 65535{}",
                if opts.ipv6 { " with IPv6" } else { "" }
            ),
        ));
    }
    Ok(())
}

/// Everything `up` will need, checked before anything is made.
struct Tools {
    etcd: Option<PathBuf>,
    /// The Kubernetes binaries, on the Kubernetes datastore.
    kube: Option<PathBuf>,
}

fn prerequisites(stage: Stage, opts: &Options) -> Result<Tools> {
    require_tool("ip", IP_HINT)?;
    let etcd = if stage >= Stage::Etcd {
        Some(require_tool("etcd", ETCD_HINT)?)
    } else {
        None
    };
    let kube = if stage >= Stage::Etcd && opts.datastore == Datastore::Kubernetes {
        require_tool("openssl", OPENSSL_HINT)?;
        Some(controlplane::find_bin(opts.kube_bin.as_deref())?)
    } else {
        None
    };
    if opts.kubelet {
        if stage >= Stage::Nodes {
            for (tool, hint) in [
                ("containerd", "apt-get install containerd"),
                ("ctr", "apt-get install containerd"),
                ("runc", "apt-get install runc"),
                ("iptables", "apt-get install iptables (kube-proxy runs it)"),
                (
                    "conntrack",
                    "apt-get install conntrack (kube-proxy runs it)",
                ),
            ] {
                require_tool(tool, hint)?;
            }
            if let Some(dir) = &opts.images {
                kubelet::require_images(dir)?;
            }
        }
        // weftd comes in weft's image; the lab runs none of its own binaries on nodes.
        return Ok(Tools { etcd, kube });
    }
    if stage >= Stage::Agents {
        require_binary(&opts.bin_dir, "weftd")?;
    }
    if stage >= Stage::Pods {
        require_binary(&opts.bin_dir, "weft")?;
        require_binary(&opts.bin_dir, "weft-ipam")?;
    }
    Ok(Tools { etcd, kube })
}

/// A node record for number `index` on `segment`.
fn plan_node(opts: &Options, index: u32, segment: u32) -> Node {
    Node {
        name: names::node_name(index),
        index,
        segment,
        address4: topology::node_v4(segment, index),
        address6: opts.ipv6.then(|| topology::node_v6(segment, index)),
        blocks: Vec::new(),
        pid: None,
    }
}

/// The record of a new lab: its nodes and pods planned, nothing made yet.
fn plan(names: &Names, opts: &Options) -> State {
    let nodes: Vec<Node> = (1..=opts.nodes)
        .map(|k| plan_node(opts, k, topology::segment_of(k, opts.segments())))
        .collect();
    let pods = nodes
        .iter()
        .flat_map(|n| {
            (1..=opts.pods_per_node).map(move |j| {
                let name = names::planned_pod_name(n.index, j);
                Pod {
                    container_id: names.container_id(&name),
                    name,
                    namespace: "default".to_owned(),
                    node: n.name.clone(),
                    labels: Default::default(),
                    ports: Vec::new(),
                    addresses: Vec::new(),
                    result: None,
                }
            })
        })
        .collect();
    State {
        lab: names.lab().to_owned(),
        options: opts.clone(),
        etcd_pid: None,
        nodes,
        pods,
        last_node_index: opts.nodes,
    }
}

pub fn run(names: &Names, args: &UpArgs) -> Result<()> {
    // Everything that can fail without touching the machine, first.
    let recorded = State::load(names)?;
    let opts = resolve(names.lab(), args, recorded.as_ref().map(|s| &s.options))?;
    let tools = prerequisites(args.until, &opts)?;

    let dir = names.state_dir();
    std::fs::create_dir_all(&dir).map_err(LabError::io(format!("creating {}", dir.display())))?;
    let _lock = Lock::acquire(names)?;
    // Re-read under the lock: another `up` may have got there first.
    let mut state = match State::load(names)? {
        Some(mut s) => {
            s.options = resolve(names.lab(), args, Some(&s.options))?;
            eprintln!("lab {}: exists; completing it", names.lab());
            s
        }
        None => plan(names, &opts),
    };
    if tools.kube.is_some() {
        state.options.kube_bin.clone_from(&tools.kube);
    }
    state.save(names)?;

    eprintln!(
        "creating underlay ({} segment(s), MTU {})",
        state.options.segments(),
        join(&state.options.mtus)
    );
    topology::ensure_underlay(names, &state.options)?;
    let Some(etcd_bin) = tools.etcd else {
        return done(names, &state, args.until);
    };

    eprintln!("starting etcd");
    let pid = etcd::ensure(names, &owner(names)?, &etcd_bin)?;
    state.etcd_pid = Some(pid);
    state.save(names)?;
    let config =
        serde_json::to_vec_pretty(&node::cluster_config(&state.options)).unwrap_or_default();
    write_atomic(&node::cluster_config_path(names), &config)?;
    if let Some(bin) = &tools.kube {
        eprintln!("starting kube-apiserver and kube-controller-manager");
        controlplane::ensure(names, &owner(names)?, &state.options, bin)?;
    }
    if args.until == Stage::Etcd {
        return done(names, &state, args.until);
    }

    eprintln!("creating {} node(s)", state.nodes.len());
    for n in &state.nodes {
        topology::ensure_node(names, &state.options, n)?;
    }
    if state.options.kubelet {
        let owner = owner(names)?;
        for n in &state.nodes {
            eprintln!("node {}: containerd, kubelet, kube-proxy", n.name);
            kubelet::ensure(names, &owner, &state.options, n)?;
        }
        if args.until == Stage::Nodes {
            return done(names, &state, args.until);
        }
        let bin = controlplane::find_bin(state.options.kube_bin.as_deref())?;
        eprintln!("installing weft: kubectl apply -f deploy/weft.yaml");
        let nodes: Vec<String> = state.nodes.iter().map(|n| n.name.clone()).collect();
        controlplane::install_weft(names, &bin, &nodes)?;
        return done(names, &state, Stage::Pods);
    }
    // Before any weftd: on Kubernetes, weftd waits for its Node (as a kubelet registers it).
    if state.options.datastore == Datastore::Kubernetes {
        let session = Session::connect(names)?;
        for n in &state.nodes {
            session.ensure_node(n)?;
        }
    }
    if args.until == Stage::Nodes {
        return done(names, &state, args.until);
    }

    start_agents(names, &mut state)?;
    if args.until == Stage::Agents {
        return done(names, &state, args.until);
    }

    wire_pods(names, &mut state)?;
    done(names, &state, args.until)
}

/// Starts weftd where it does not run, and waits for every node to be ready.
fn start_agents(names: &Names, state: &mut State) -> Result<()> {
    let owner = owner(names)?;
    let mut pending = Vec::new();
    let mut started = 0;
    for n in &state.nodes {
        match node::running(names, &owner, &n.name) {
            Some(pid) => pending.push((n.name.clone(), Starting::Running(pid))),
            None => {
                let child = node::start(names, &state.options, n)?;
                started += 1;
                pending.push((n.name.clone(), Starting::Child(child)));
            }
        }
    }
    let pids: Vec<(String, u32)> = pending
        .iter()
        .map(|(n, s)| {
            let pid = match s {
                Starting::Child(c) => c.id(),
                Starting::Running(p) => *p,
            };
            (n.clone(), pid)
        })
        .collect();
    eprintln!(
        "starting weftd on {} node(s) ({} already running)",
        started,
        state.nodes.len() - started
    );
    let ready = node::wait_ready(names, pending)?;
    for (name, pid) in pids {
        if let Some(n) = state.node_mut(&name) {
            n.pid = Some(pid);
        }
    }
    for (name, blocks) in ready {
        if let Some(n) = state.node_mut(&name) {
            n.blocks = blocks;
        }
    }
    Ok(state.save(names)?)
}

/// ADD for every pod without a result: nodes in parallel, one pod at a time per node (what
/// a kubelet does), the record saved after each pod; each pod's objects before and after
/// its ADD (`records::Objects`), and those of pods wired before made sure of.
fn wire_pods(names: &Names, state: &mut State) -> Result<()> {
    let total = state.pods.len();
    let todo: Vec<Pod> = state
        .pods
        .iter()
        .filter(|p| !p.is_wired())
        .cloned()
        .collect();
    let done_before = total - todo.len();
    let shared = Mutex::new((state.clone(), done_before));
    let opts = state.options.clone();
    let already: Vec<Pod> = state
        .pods
        .iter()
        .filter(|p| p.is_wired())
        .cloned()
        .collect();
    let nodes: Vec<(String, IpAddr)> = state
        .nodes
        .iter()
        .map(|n| (n.name.clone(), IpAddr::from(n.address4)))
        .collect();
    let outcomes: Vec<Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|(node, host)| {
                let (shared, opts, todo, already) = (&shared, &opts, &todo, &already);
                scope.spawn(move || -> Result<()> {
                    let objects = Objects::open(names, opts)?;
                    for p in already.iter().filter(|p| &p.node == node) {
                        objects.ensure_wired(p, *host)?;
                    }
                    for p in todo.iter().filter(|p| &p.node == node) {
                        let mut p = p.clone();
                        objects.before_add(&p)?;
                        pod::add(names, opts, &mut p)?;
                        objects.after_add(names, &p, *host)?;
                        let mut guard = shared.lock().map_err(|_| poisoned())?;
                        let (st, wired) = &mut *guard;
                        if let Some(slot) = st.pod_mut(&p.name) {
                            *slot = p;
                        }
                        *wired += 1;
                        st.save(names)?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(poisoned())))
            .collect()
    });
    let (st, wired) = shared.into_inner().map_err(|_| poisoned())?;
    *state = st;
    eprintln!("pods: {wired}/{total}");
    outcomes.into_iter().collect()
}

fn poisoned() -> LabError {
    LabError::io("a pod worker thread panicked")(std::io::Error::other("panic"))
}

fn done(names: &Names, state: &State, until: Stage) -> Result<()> {
    let lab = names.lab();
    if until == Stage::Pods {
        eprintln!(
            "lab {lab} is up: {} node(s), {} pod(s), backend {}, datastore {}; try `weftctl lab check --name {lab}`",
            state.nodes.len(),
            state.pods.len(),
            state.options.backend.as_str(),
            state.options.datastore.as_str()
        );
        if state.options.datastore == Datastore::Kubernetes {
            eprintln!("kubectl: `weftctl lab kubectl --name {lab} -- get nodes,pods -A`");
        }
        if state.options.kubelet {
            eprintln!(
                "pods: `weftctl lab kubectl --name {lab} -- create deployment probe --image={} --replicas=4 -- httpd -f -p 8080`",
                kubelet::PROBE_IMAGE
            );
        }
    } else {
        eprintln!("lab {lab}: stopped after stage {until:?} (as asked)");
    }
    Ok(())
}

/// `lab node add`: a node joins a running lab.
pub fn node_add(names: &Names, given: Option<&str>, segment: Option<u32>) -> Result<()> {
    let (_lock, mut state) = super::open_lab(names)?;
    if !state.options.kubelet {
        require_binary(&state.options.bin_dir, "weftd")?;
    }
    let index = match given {
        Some(g) => names::node_index(g)?,
        None => {
            state
                .last_node_index
                .max(state.nodes.iter().map(|n| n.index).max().unwrap_or(0))
                + 1
        }
    };
    if index > MAX_NODE_INDEX {
        return Err(LabError::invalid(
            "node",
            names::node_name(index),
            format!("numbers go up to {MAX_NODE_INDEX}"),
        ));
    }
    let name = names::node_name(index);
    if state.node(&name).is_some() {
        return Err(LabError::Exists {
            lab: names.lab().to_owned(),
            what: "node",
            name,
        });
    }
    let segments = state.options.segments();
    let segment = segment.unwrap_or_else(|| topology::segment_of(index, segments));
    if segment >= segments {
        return Err(LabError::invalid(
            "--segment",
            segment.to_string(),
            format!("the lab has segments 0 to {}", segments - 1),
        ));
    }
    let record = plan_node(&state.options, index, segment);
    state.nodes.push(record.clone());
    state.last_node_index = state.last_node_index.max(index);
    state.save(names)?;
    topology::ensure_node(names, &state.options, &record)?;
    if state.options.kubelet {
        // Its kubelet registers it, the DaemonSet puts weftd on it, weftd makes it Ready.
        kubelet::ensure(names, &owner(names)?, &state.options, &record)?;
        let bin = controlplane::find_bin(state.options.kube_bin.as_deref())?;
        controlplane::install_weft(names, &bin, &[name])?;
        return Ok(());
    }
    if state.options.datastore == Datastore::Kubernetes {
        Session::connect(names)?.ensure_node(&record)?;
    }
    let child = node::start(names, &state.options, &record)?;
    let pid = child.id();
    let ready = node::wait_ready(names, vec![(name.clone(), Starting::Child(child))])?;
    if let Some(n) = state.node_mut(&name) {
        n.pid = Some(pid);
        if let Some((_, blocks)) = ready.into_iter().next() {
            n.blocks = blocks;
        }
    }
    Ok(state.save(names)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        up: UpArgs,
    }

    fn args(line: &[&str]) -> UpArgs {
        let mut argv = vec!["t"];
        argv.extend(line);
        T::parse_from(argv).up
    }

    fn new_lab(line: &[&str]) -> Result<Options> {
        let mut a = args(line);
        a.bin_dir = Some(PathBuf::from("/"));
        resolve("t", &a, None)
    }

    #[test]
    fn segments_follow_backend_and_mtus() {
        assert_eq!(new_lab(&[]).unwrap().mtus, [1500]);
        assert_eq!(new_lab(&["--backend", "auto"]).unwrap().mtus, [1500, 1500]);
        assert_eq!(new_lab(&["--mtu", "9000,1400"]).unwrap().mtus, [9000, 1400]);
        assert_eq!(
            new_lab(&["--mtu", "9000", "--segments", "3"]).unwrap().mtus,
            [9000, 9000, 9000]
        );
        assert!(new_lab(&["--mtu", "9000,1400", "--segments", "3"]).is_err());
        assert!(new_lab(&["--mtu", "1000"]).is_err());
        assert!(new_lab(&["--mtu", "1000", "--no-ipv6"]).is_ok());
        assert!(new_lab(&["--mtu", "x"]).is_err());
        assert!(new_lab(&["--segments", "0"]).is_err());
        assert!(new_lab(&["--nodes", "0"]).is_err());
    }

    #[test]
    fn block_sizes_are_checked_and_kept() {
        let opts = new_lab(&["--block-size-v4", "29", "--block-size-v6", "125"]).unwrap();
        assert_eq!(
            (opts.block_size_v4, opts.block_size_v6),
            (Some(29), Some(125))
        );
        assert!(new_lab(&["--block-size-v4", "31"]).is_err());
        assert!(new_lab(&["--block-size-v4", "15"]).is_err());
        assert!(new_lab(&["--block-size-v6", "127"]).is_err());
        let again = |line: &[&str]| {
            let mut a = args(line);
            a.bin_dir = Some(PathBuf::from("/"));
            resolve("t", &a, Some(&opts))
        };
        assert!(again(&["--block-size-v4", "29"]).is_ok());
        let err = again(&["--block-size-v4", "28"]).unwrap_err().to_string();
        assert!(err.contains("--block-size-v4 29, not 28"), "{err}");
        // A lab made with the default keeps it: asking for the default again is no conflict.
        let plain = new_lab(&[]).unwrap();
        let mut a = args(&["--block-size-v6", "122"]);
        a.bin_dir = Some(PathBuf::from("/"));
        assert!(resolve("t", &a, Some(&plain)).is_ok());
    }

    #[test]
    fn kubernetes_ipam_needs_the_kubernetes_datastore_and_small_enough_blocks() {
        let err = new_lab(&["--ipam", "kubernetes"]).unwrap_err().to_string();
        assert!(err.contains("--datastore kubernetes"), "{err}");
        let kube = ["--datastore", "kubernetes", "--ipam", "kubernetes"];
        let opts = new_lab(&kube).unwrap();
        assert_eq!(node::block_size_v6(&opts), 64);
        let mut big = kube.to_vec();
        big.extend(["--block-size-v6", "80"]);
        assert!(new_lab(&big).is_err());
        // Recorded: asking again for what the lab has is no conflict, another datastore is.
        let again = |line: &[&str]| {
            let mut a = args(line);
            a.bin_dir = Some(PathBuf::from("/"));
            resolve("t", &a, Some(&opts))
        };
        assert!(again(&["--block-size-v6", "64", "--ipam", "kubernetes"]).is_ok());
        let err = again(&["--datastore", "etcd"]).unwrap_err().to_string();
        assert!(err.contains("--datastore kubernetes, not etcd"), "{err}");
    }

    #[test]
    fn ipv6_defaults_on() {
        assert!(new_lab(&[]).unwrap().ipv6);
        assert!(!new_lab(&["--no-ipv6"]).unwrap().ipv6);
        assert!(new_lab(&["--no-ipv6", "--ipv6"]).unwrap().ipv6);
    }

    #[test]
    fn an_existing_lab_keeps_its_options() {
        let rec = new_lab(&["--nodes", "2", "--backend", "auto"]).unwrap();
        let again = |line: &[&str]| {
            let mut a = args(line);
            a.bin_dir = Some(PathBuf::from("/"));
            resolve("t", &a, Some(&rec))
        };
        assert_eq!(again(&[]).unwrap(), rec);
        assert_eq!(again(&["--nodes", "2", "--mtu", "1500"]).unwrap(), rec);
        let err = again(&["--nodes", "3"]).unwrap_err().to_string();
        assert!(err.contains("--nodes 2, not 3"), "{err}");
        assert!(again(&["--backend", "vxlan"]).is_err());
        assert!(again(&["--no-ipv6"]).is_err());
    }

    #[test]
    fn plan_names_nodes_and_pods() {
        let names = Names::new("t").unwrap();
        let opts = new_lab(&["--nodes", "3", "--pods-per-node", "2", "--backend", "auto"]).unwrap();
        let s = plan(&names, &opts);
        let nodes: Vec<(&str, u32, String)> = s
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n.segment, n.address4.to_string()))
            .collect();
        assert_eq!(
            nodes,
            [
                ("n1", 0, "192.168.100.11".to_owned()),
                ("n2", 1, "192.168.101.12".to_owned()),
                ("n3", 0, "192.168.100.13".to_owned())
            ]
        );
        let pods: Vec<&str> = s.pods.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(pods, ["n1-p1", "n1-p2", "n2-p1", "n2-p2", "n3-p1", "n3-p2"]);
        assert_eq!(s.pods[0].container_id, "weftlab-t-n1-p1");
    }
}
