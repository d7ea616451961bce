//! `weftctl`: the person-facing tool of Weft.
//!
//! For now it holds the CNI benchmark (`weftctl bench cni`), which runs the real `weft`
//! plugin and the reference `bridge` + `host-local` exactly as a container runtime does, in
//! namespaces it creates and removes, and judges weft against the project's speed targets.
//! Status, IPAM/policy inspection and the lab will join it as further subcommands.

mod bench;

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
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// CNI ADD/DEL latency and churn: weft vs the reference bridge + host-local.
    Cni(bench::CniArgs),
    /// Remove namespaces and temp dirs left by a bench run that was killed (pid gone).
    Cleanup,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Bench(BenchCommand::Cni(args)) => bench::run_cni(&args),
        Command::Bench(BenchCommand::Cleanup) => {
            bench::cleanup_stale().map(|(namespaces, dirs)| {
                eprintln!("weftctl: removed {namespaces} stale namespace(s), {dirs} temp dir(s)");
            })
        }
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
