//! `weftctl`: the person-facing tool of Weft.
//!
//! It holds the CNI benchmark (`weftctl bench cni`), which runs the real `weft` plugin and the
//! reference `bridge` + `host-local` exactly as a container runtime does, in namespaces it
//! creates and removes, and judges weft against the project's speed targets; and the lab
//! (`weftctl lab …`), a whole cluster — etcd, one `weftd` per node, pods — in network
//! namespaces of one machine. Unlike the plugins, weftctl is a person's tool: it may spawn
//! `ip`, `etcd`, `weftd` and the plugins. `apply`/`delete`/`get`/`policy explain` manage
//! NetworkPolicy objects in the datastore.

mod bench;
mod exe;
mod lab;
mod netns;
mod policy;
mod status;

use std::error::Error;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "weftctl", version, about = "Weft diagnostics and benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// What this node's weftd says: lease, blocks, peers, datastore, NetworkPolicy (in sync,
    /// last change, denied packets per pod and policy).
    Status(status::StatusArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// A multi-node cluster in network namespaces on this machine: real etcd, one weftd per
    /// node, pods wired by the real plugin.
    Lab(lab::LabArgs),
    /// Store the NetworkPolicy, Namespace and PodLabels objects of a manifest (validated
    /// whole first: one invalid object and nothing is written).
    Apply(policy::FileArgs),
    /// Remove the objects a manifest names (missing ones are reported, not fatal).
    Delete(policy::FileArgs),
    /// List policies, namespaces or endpoints (pods).
    Get(policy::GetArgs),
    /// NetworkPolicy tools.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
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
        Command::Bench(BenchCommand::Cleanup) => bench::cleanup_stale()
            .map(|(namespaces, dirs)| {
                eprintln!("weftctl: removed {namespaces} stale namespace(s), {dirs} temp dir(s)");
            })
            .map_err(Into::into),
        Command::Apply(args) => policy::apply(&args).map_err(Into::into),
        Command::Delete(args) => policy::delete(&args).map_err(Into::into),
        Command::Get(args) => policy::get(&args).map_err(Into::into),
        Command::Status(args) => status::run(&args).map_err(Into::into),
        Command::Policy(policy::PolicyCommand::Explain(args)) => {
            policy::explain(&args).map_err(Into::into)
        }
        Command::Lab(args) => match lab::run(args) {
            // A failed `lab check` has printed its report and only sets the status.
            Ok(lab::Outcome::Exit(code)) => return code,
            Ok(lab::Outcome::Done) => Ok(()),
            Err(err) => Err(err.into()),
        },
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // The whole cause chain: "opening netns …: No such file or directory".
            let mut message = err.to_string();
            let mut source = err.source();
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("weftctl: {message}");
            ExitCode::FAILURE
        }
    }
}
