//! `weftd`: the node agent. See the `weft_agent` crate for what it does.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = weft_agent::config::Args::parse();
    let settings = match weft_agent::config::Settings::from_args(args) {
        Ok(s) => s,
        Err(err) => {
            eprintln!("weftd: {err}");
            return ExitCode::from(2);
        }
    };
    // One thread is enough for the control loop: the work is waiting on etcd and the kernel,
    // and the dataplane has its own thread (netlink calls block).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("weftd: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(weft_agent::run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            weft_agent::log::error("weftd stopped", &[("error", err.to_string().into())]);
            ExitCode::FAILURE
        }
    }
}
