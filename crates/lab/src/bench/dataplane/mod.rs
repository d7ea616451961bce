//! `weftctl bench dataplane`: pod-to-pod TCP throughput (iperf3) and TCP request/response
//! rate (sockperf ping-pong) over weft's paths, each against baselines measured in the same
//! run:
//!
//! | path | client → server |
//! |---|---|
//! | raw veth (baseline) | `wtb<pid>nr1` → `wtb<pid>nr2`, one veth pair |
//! | same node | lab `wtb<pid>h` pod a → pod b, both on n1 (bridge `weft0`) |
//! | same node, eBPF (`--datapath ebpf`) | lab `wtb<pid>e` (weftd `--datapath ebpf`) pod a → pod b on n1 |
//! | host-gw, eBPF (`--datapath ebpf`) | lab `wtb<pid>e` pod a (n1) → pod c (n2) |
//! | VXLAN, eBPF (`--datapath ebpf`) | lab `wtb<pid>x` (vxlan, weftd `--datapath ebpf`) pod a (n1) → pod c (n2) |
//! | host-gw | lab `wtb<pid>h` pod a (n1) → pod c (n2) |
//! | VXLAN | lab `wtb<pid>v` pod a (n1) → pod c (n2) |
//! | hand-built VXLAN (baseline) | `wtb<pid>nx1` → `wtb<pid>nx2`, kernel vxlan over one veth |
//! | lab underlay (informational) | lab `wtb<pid>h` node n1 → node n2, no overlay |
//! | kernel VXLAN on the lab underlay (informational) | lab `wtb<pid>v` n1 → n2, hand-built `wbvx0` |
//! | weft.vx node to node (informational) | lab `wtb<pid>v` n1 → n2's VTEP address, over `weft.vx` |
//!
//! The informational paths cross the same underlay as weft's cross-node paths (the lab's
//! router bridge and two more veths), so weft's own share is host-gw / underlay and VXLAN /
//! kernel VXLAN on the lab underlay, and weft.vx against the hand-built device on the same
//! nodes isolates weft's VXLAN device from its pod side. The targets are against the
//! raw veth pair.
//!
//! The VM is noisy, so every path is measured once per round, rounds are repeated and the
//! order rotates each round. A path's figure is the median over rounds; a ratio is the
//! median over rounds of the ratio within each round (so a slow spell of the machine that
//! hits one round hits both sides of its ratios). CPU placement is pinned, see `tools`.
//! All traffic stays inside namespaces this run made.

mod baseline;
mod lab;
pub(in crate::bench) mod report;
pub(in crate::bench) mod tools;

use std::path::PathBuf;

use clap::Args;
use clap::builder::RangedU64ValueParser;

use super::child::Daemon;
use super::error::{BenchError, Result};
use super::scratch::ScratchDir;
use super::signal;
use crate::netns::NetnsSet;
use lab::Lab;
pub use lab::{LAB_STATE_ROOT, down_by_name as lab_down};
use report::{DataplaneReport, PathReport};
use tools::{Placement, Tools};

/// Options of `weftctl bench dataplane`.
#[derive(Debug, Args)]
pub struct DataplaneArgs {
    /// Seconds per measurement (iperf3 adds one unmeasured second of warm-up).
    #[arg(long, default_value_t = 5, value_parser = RangedU64ValueParser::<u32>::new().range(1..=600))]
    pub seconds: u32,
    /// Rounds over all paths; each path's figure is the median over rounds.
    #[arg(long, default_value_t = 3, value_parser = RangedU64ValueParser::<usize>::new().range(1..=50))]
    pub rounds: usize,
    /// Where weftd, weft and weft-ipam are, for the labs [default: weftctl's own directory].
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// `ebpf` adds the same-node and cross-node host-gw and VXLAN paths on weftd's eBPF
    /// datapath (two more labs), measured in the same rounds as the others.
    #[arg(long, default_value = "nft", value_parser = ["nft", "ebpf"])]
    pub datapath: String,
}

/// Which path a measurement is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Raw,
    SameNode,
    SameNodeEbpf,
    HostGw,
    HostGwEbpf,
    Vxlan,
    VxlanEbpf,
    HandVxlan,
    Underlay,
    LabVxlan,
    WeftVx,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Raw => "raw veth (baseline)",
            Kind::SameNode => "same node (bridge)",
            Kind::SameNodeEbpf => "same node (bridge, eBPF)",
            Kind::HostGw => "cross-node host-gw",
            Kind::HostGwEbpf => "cross-node host-gw, eBPF",
            Kind::Vxlan => "cross-node VXLAN",
            Kind::VxlanEbpf => "cross-node VXLAN, eBPF",
            Kind::HandVxlan => "hand-built VXLAN (baseline)",
            Kind::Underlay => "lab underlay n1->n2 (info)",
            Kind::LabVxlan => "kernel VXLAN, lab underlay (info)",
            Kind::WeftVx => "weft.vx n1->n2 (info)",
        }
    }
}

/// One path: where the client runs and which server it talks to.
struct Path {
    kind: Kind,
    client_ns: String,
    server_ns: String,
    addr: String,
}

/// Runs the benchmark and prints the report. Missing a target is a result, not an error.
/// A Ctrl-C also reaches the children (same process group), so whatever failed after it is
/// reported as the interruption it is.
pub fn run(args: &DataplaneArgs) -> Result<()> {
    run_inner(args).map_err(|e| {
        if signal::interrupted() {
            BenchError::Interrupted
        } else {
            e
        }
    })
}

/// Set-up, the rounds, tear-down, then the report.
fn run_inner(args: &DataplaneArgs) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(BenchError::NotRoot);
    }
    let tools = Tools::find()?;
    signal::install()?;
    let load_before = super::load_average();
    let pid = std::process::id();
    let scratch = ScratchDir::create(super::SCRATCH_PREFIX)?;

    eprintln!("weftctl: bench dataplane: baselines (raw veth, hand-built VXLAN)");
    let [r1, r2, x1, x2] = ["r1", "r2", "x1", "x2"].map(|t| format!("wtb{pid}n{t}"));
    let namespaces = NetnsSet::create(vec![r1.clone(), r2.clone(), x1.clone(), x2.clone()])?;
    baseline::raw_pair(&r1, &r2)?;
    baseline::vxlan_pair(&x1, &x2)?;

    eprintln!(
        "weftctl: bench dataplane: lab wtb{pid}h (host-gw, 2 nodes, pods a b on n1, c on n2)"
    );
    let pods = [("a", 1), ("b", 1), ("c", 2)];
    let hg = Lab::up(
        &format!("wtb{pid}h"),
        "host-gw",
        args.bin_dir.as_deref(),
        &pods,
        &[],
    )?;
    signal::check()?;
    let ebpf = if args.datapath == "ebpf" {
        eprintln!(
            "weftctl: bench dataplane: lab wtb{pid}e (--datapath ebpf, host-gw, pods a b on n1, c on n2)"
        );
        Some(Lab::up(
            &format!("wtb{pid}e"),
            "host-gw",
            args.bin_dir.as_deref(),
            &pods,
            &["--datapath", "ebpf"],
        )?)
    } else {
        None
    };
    signal::check()?;
    let ebpf_vx = if args.datapath == "ebpf" {
        eprintln!(
            "weftctl: bench dataplane: lab wtb{pid}x (--datapath ebpf, vxlan, pod a on n1, c on n2)"
        );
        Some(Lab::up(
            &format!("wtb{pid}x"),
            "vxlan",
            args.bin_dir.as_deref(),
            &[("a", 1), ("c", 2)],
            &["--datapath", "ebpf"],
        )?)
    } else {
        None
    };
    signal::check()?;
    eprintln!("weftctl: bench dataplane: lab wtb{pid}v (vxlan, 2 nodes, pod a on n1, c on n2)");
    let vx = Lab::up(
        &format!("wtb{pid}v"),
        "vxlan",
        args.bin_dir.as_deref(),
        &[("a", 1), ("c", 2)],
        &[],
    )?;
    signal::check()?;

    // Node n1 and n2 of a two-node lab on one segment (docs/lab.md).
    let lab_underlay = ["192.168.100.11", "192.168.100.12"];
    baseline::vxlan_on([&vx.node_ns(1), &vx.node_ns(2)], lab_underlay)?;
    let (ha, hb, hc) = (hg.pod("a")?, hg.pod("b")?, hg.pod("c")?);
    let (va, vc) = (vx.pod("a")?, vx.pod("c")?);
    // n2's VTEP address on weft.vx: the network address of its block (pod c's).
    let vtep = vc.block.network().to_string();
    let mut paths = vec![
        Path {
            kind: Kind::Raw,
            client_ns: r1.clone(),
            server_ns: r2.clone(),
            addr: baseline::RAW_SERVER.to_owned(),
        },
        Path {
            kind: Kind::SameNode,
            client_ns: ha.netns.clone(),
            server_ns: hb.netns.clone(),
            addr: hb.addr.clone(),
        },
        Path {
            kind: Kind::HostGw,
            client_ns: ha.netns.clone(),
            server_ns: hc.netns.clone(),
            addr: hc.addr.clone(),
        },
        Path {
            kind: Kind::Vxlan,
            client_ns: va.netns.clone(),
            server_ns: vc.netns.clone(),
            addr: vc.addr.clone(),
        },
        Path {
            kind: Kind::HandVxlan,
            client_ns: x1.clone(),
            server_ns: x2.clone(),
            addr: baseline::VX_SERVER.to_owned(),
        },
        Path {
            kind: Kind::Underlay,
            client_ns: hg.node_ns(1),
            server_ns: hg.node_ns(2),
            addr: lab_underlay[1].to_owned(),
        },
        Path {
            kind: Kind::LabVxlan,
            client_ns: vx.node_ns(1),
            server_ns: vx.node_ns(2),
            addr: baseline::LAB_VX_SERVER.to_owned(),
        },
        Path {
            kind: Kind::WeftVx,
            client_ns: vx.node_ns(1),
            server_ns: vx.node_ns(2),
            addr: vtep,
        },
    ];
    if let Some(e) = &ebpf {
        let (ea, eb, ec) = (e.pod("a")?, e.pod("b")?, e.pod("c")?);
        paths.insert(
            2,
            Path {
                kind: Kind::SameNodeEbpf,
                client_ns: ea.netns.clone(),
                server_ns: eb.netns.clone(),
                addr: eb.addr.clone(),
            },
        );
        paths.insert(
            4,
            Path {
                kind: Kind::HostGwEbpf,
                client_ns: ea.netns.clone(),
                server_ns: ec.netns.clone(),
                addr: ec.addr.clone(),
            },
        );
    }
    if let Some(x) = &ebpf_vx {
        let (xa, xc) = (x.pod("a")?, x.pod("c")?);
        let at = paths
            .iter()
            .position(|p| p.kind == Kind::Vxlan)
            .map_or(paths.len(), |i| i + 1);
        paths.insert(
            at,
            Path {
                kind: Kind::VxlanEbpf,
                client_ns: xa.netns.clone(),
                server_ns: xc.netns.clone(),
                addr: xc.addr.clone(),
            },
        );
    }

    let mut servers: Vec<Daemon> = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        servers.extend(tools.servers(&p.server_ns, &p.addr, scratch.path(), &i.to_string())?);
    }

    let mut results: Vec<PathReport> = paths.iter().map(|p| PathReport::new(p.kind)).collect();
    for round in 0..args.rounds {
        let n = paths.len();
        for step in 0..n {
            let i = (step + round) % n;
            let p = &paths[i];
            signal::check()?;
            for server in servers.iter_mut() {
                if server.exited().is_some() {
                    return Err(server.died());
                }
            }
            eprintln!(
                "weftctl: round {}/{}: {}: iperf3 on 2 CPUs and on 1, sockperf ping-pong ({} s each)",
                round + 1,
                args.rounds,
                p.kind.label(),
                args.seconds
            );
            let tp = tools.throughput(&p.client_ns, &p.addr, args.seconds, Placement::TwoCpus)?;
            let tp1 = tools.throughput(&p.client_ns, &p.addr, args.seconds, Placement::OneCpu)?;
            let rr = tools.request_response(&p.client_ns, &p.addr, args.seconds)?;
            results[i].throughput.push(tp);
            results[i].throughput_one_cpu.push(tp1);
            results[i].rr.push(rr);
        }
    }
    let load_after = super::load_average();

    drop(servers);
    vx.down()?;
    if let Some(x) = ebpf_vx {
        x.down()?;
    }
    if let Some(e) = ebpf {
        e.down()?;
    }
    hg.down()?;
    namespaces.remove()?;
    drop(scratch);

    let report = DataplaneReport {
        seconds: args.seconds,
        rounds: args.rounds,
        cpus: std::thread::available_parallelism().map_or(0, usize::from),
        pinned: tools.cpus,
        load_before,
        load_after,
        paths: results,
    };
    print!("{}", report.to_table());
    Ok(())
}
