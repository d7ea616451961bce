//! `weftctl`: the person-facing tool of Weft.
//!
//! The operator's commands are here (weft-ctl's library): `status`, and `apply`/`delete`/
//! `get`/`policy explain` for NetworkPolicy objects in the datastore. `lab …` (a whole
//! cluster in network namespaces of one machine) and `bench …` (the benchmarks) are
//! weft-lab's `weftctl-lab`, which weftctl execs — found next to this executable, else on
//! `PATH`, as kubectl finds its plugins — with the rest of the command line, so they take
//! the same arguments and end with the same status as if weftctl ran them itself. This
//! keeps the lab's and the benchmarks' dependencies (weftd's own code, the backend,
//! nf_tables) out of the operator's binary.
//!
//! Must not: link weft-lab, weft-agent, weft-backend or weft-nft.

use std::error::Error;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{self, ExitCode};

use clap::{Parser, Subcommand};
use weft_ctl::{exe, install, policy, status};

/// The executable that runs `weftctl lab …` and `weftctl bench …`.
const LAB_EXE: &str = "weftctl-lab";

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
    /// Benchmarks: cni, agent, dataplane, policy, cleanup (run by weftctl-lab).
    #[command(disable_help_flag = true)]
    Bench(External),
    /// A multi-node cluster in network namespaces on this machine (run by weftctl-lab).
    #[command(disable_help_flag = true)]
    Lab(External),
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
    /// Copy CNI plugins into a node's CNI bin dir, each replaced atomically (what the
    /// DaemonSet's init container runs: its image has no shell).
    InstallCni(install::InstallCniArgs),
}

/// A sub-command weftctl-lab runs: everything after its name, untouched (`--help` too).
#[derive(Debug, clap::Args)]
struct External {
    #[arg(num_args = 0.., trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome: Result<(), Box<dyn Error>> = match cli.command {
        Command::Bench(rest) => Err(exec_lab("bench", rest.args).into()),
        Command::Lab(rest) => Err(exec_lab("lab", rest.args).into()),
        Command::Apply(args) => policy::apply(&args).map_err(Into::into),
        Command::Delete(args) => policy::delete(&args).map_err(Into::into),
        Command::Get(args) => policy::get(&args).map_err(Into::into),
        Command::Status(args) => status::run(&args).map_err(Into::into),
        Command::Policy(policy::PolicyCommand::Explain(args)) => {
            policy::explain(&args).map_err(Into::into)
        }
        Command::InstallCni(args) => install::run(&args).map_err(Into::into),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => weft_ctl::fail(err.as_ref()),
    }
}

/// Why `weftctl lab|bench` did not run.
#[derive(Debug, thiserror::Error)]
enum ExecError {
    #[error(
        "`weftctl {command}` is run by {LAB_EXE}, which is neither next to weftctl ({}) nor on PATH; build it with `cargo build -p weft-lab` (scripts/build.sh builds it too) and put it next to weftctl",
        sibling.display()
    )]
    Missing {
        command: &'static str,
        sibling: PathBuf,
    },
    #[error("running {}", path.display())]
    Exec {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Replaces this process with `weftctl-lab <command> <args…>`; returns only on failure.
fn exec_lab(command: &'static str, args: Vec<OsString>) -> ExecError {
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(LAB_EXE)))
        .unwrap_or_else(|| PathBuf::from(LAB_EXE));
    let path = if exe::is_executable(&sibling) {
        sibling
    } else if let Some(found) = exe::which(LAB_EXE) {
        found
    } else {
        return ExecError::Missing { command, sibling };
    };
    let source = process::Command::new(&path).arg(command).args(args).exec();
    ExecError::Exec { path, source }
}
