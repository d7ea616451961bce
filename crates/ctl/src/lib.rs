//! weft-ctl: the operator's commands of `weftctl`, as a library the `weftctl` binary (and
//! weft-lab's `weftctl-lab`) build on.
//!
//! Owns: `status` (a node's weftd as a person reads it), `cluster` (`status --kubernetes`:
//! every Node as the API server has it), `policy` (`apply`/`delete`/`get`
//! and `policy explain` against etcd, a lab's etcd or the local store file), `lab` (the
//! names and the on-disk record of a lab, which `--lab NAME` reads), `exe` (finding the
//! executables weftctl runs) and `install` (`install-cni`: the plugins onto a node, which
//! the DaemonSet's init container runs).
//!
//! Must not: depend on weft-lab, weft-agent, weft-backend or weft-nft (scripts/test.sh
//! checks with `cargo tree`): the lab and the benchmarks are weft-lab's `weftctl-lab`, which
//! `weftctl lab …` and `weftctl bench …` exec. Must not write a policy object that
//! `weft_policy::parse` has not accepted.

pub mod cluster;
pub mod exe;
pub mod install;
pub mod lab;
pub mod policy;
pub mod status;

use std::error::Error;
use std::process::ExitCode;

/// Prints `weftctl: <error>: <cause>: …` (the whole cause chain, on one line: "opening netns
/// …: No such file or directory") and returns the failure status. weftctl-lab speaks as
/// weftctl too: people run it as `weftctl lab …` and `weftctl bench …`.
pub fn fail(err: &dyn Error) -> ExitCode {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    eprintln!("weftctl: {message}");
    ExitCode::FAILURE
}
