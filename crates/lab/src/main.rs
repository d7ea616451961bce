//! `weftctl-lab`: `weftctl lab …` and `weftctl bench …`, which weftctl execs with the rest of
//! its command line. It speaks as weftctl (usage, messages), because that is the command
//! people type; run directly it takes the same arguments (`weftctl-lab lab up …`).
//!
//! Unlike the plugins, this is a person's tool: it may spawn `ip`, `etcd`, `weftd` and the
//! plugins. It must not grow operator commands: those are weftctl's own (weft-ctl), which
//! must work on a node where weftctl-lab is not installed.

use std::error::Error;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use weft_lab::{bench, lab};

#[derive(Debug, Parser)]
#[command(
    name = "weftctl",
    bin_name = "weftctl",
    version,
    about = "Weft's lab and benchmarks (weftctl lab, weftctl bench)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// A multi-node cluster in network namespaces on this machine: real etcd, one weftd per
    /// node, pods wired by the real plugin.
    Lab(lab::LabArgs),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// CNI ADD/DEL latency and churn: weft vs the reference bridge + host-local.
    Cni(bench::CniArgs),
    /// One real weftd against 1,000s of synthetic nodes in a real etcd: start-up, joins,
    /// memory, restart, and a flush-and-rebuild of the same state.
    Agent(bench::AgentArgs),
    /// Pod-to-pod TCP throughput and request/response rate: same node, host-gw, VXLAN,
    /// against a raw veth pair and a hand-built kernel VXLAN pair.
    Dataplane(bench::DataplaneArgs),
    /// NetworkPolicy at 1,000 pods and 100/1,000/10,000 rules: full apply, one change, and
    /// per-packet cost against no policy and against iptables-style linear chains.
    Policy(bench::PolicyArgs),
    /// One real weftd against a whole cluster (1,000 nodes, 10,000 pods, 1,000
    /// NetworkPolicies) on etcd and on a real kube-apiserver: full sync, pod and policy
    /// write -> kernel latency, peak RSS.
    Scale(bench::ScaleArgs),
    /// Pod start-up in a real 2-node cluster (kubelet, containerd): N pods at once, until
    /// each is Running and answering, with weft and with the reference bridge + host-local.
    Podstart(bench::PodstartArgs),
    /// Remove namespaces and temp dirs left by a bench run that was killed (pid gone).
    Cleanup,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome: Result<(), Box<dyn Error>> = match cli.command {
        Command::Bench(BenchCommand::Cni(args)) => bench::run_cni(&args).map_err(Into::into),
        Command::Bench(BenchCommand::Agent(args)) => bench::run_agent(&args).map_err(Into::into),
        Command::Bench(BenchCommand::Dataplane(args)) => {
            bench::run_dataplane(&args).map_err(Into::into)
        }
        Command::Bench(BenchCommand::Policy(args)) => bench::run_policy(&args).map_err(Into::into),
        Command::Bench(BenchCommand::Scale(args)) => bench::run_scale(&args).map_err(Into::into),
        Command::Bench(BenchCommand::Podstart(args)) => {
            bench::run_podstart(&args).map_err(Into::into)
        }
        Command::Bench(BenchCommand::Cleanup) => bench::cleanup_stale()
            .map(|(namespaces, dirs)| {
                eprintln!("weftctl: removed {namespaces} stale namespace(s), {dirs} temp dir(s)");
            })
            .map_err(Into::into),
        Command::Lab(args) => match lab::run(args) {
            // A failed `lab check` has printed its report and only sets the status.
            Ok(lab::Outcome::Exit(code)) => return code,
            Ok(lab::Outcome::Done) => Ok(()),
            Err(err) => Err(err.into()),
        },
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => weft_ctl::fail(err.as_ref()),
    }
}
