//! What can go wrong while benchmarking. A failed ADD/DEL is an error, not a data point: the
//! figures would be meaningless, so the run stops and shows what the plugin said.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

/// Errors of `weftctl bench`.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("the benchmark creates network namespaces and must run as root")]
    NotRoot,

    #[error("{what}: {path} not found or not executable")]
    MissingBinary { what: &'static str, path: PathBuf },

    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },

    #[error(transparent)]
    Netns(#[from] crate::netns::NetnsError),

    #[error(
        "{plugin} {verb} failed for pod {pod} (netns {netns}): {status}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
    )]
    PluginFailed {
        plugin: String,
        verb: &'static str,
        pod: usize,
        netns: PathBuf,
        status: ExitStatus,
        stdout: String,
        stderr: String,
    },

    #[error("{plugin} ADD for pod {pod} exited 0 but its result is unusable ({reason}):\n{stdout}")]
    BadResult {
        plugin: String,
        pod: usize,
        reason: String,
        stdout: String,
    },

    #[error("kernel floor: {op} for {ifname} failed: {message}")]
    Floor {
        op: &'static str,
        ifname: String,
        message: String,
    },

    #[error("a benchmark worker thread panicked")]
    WorkerPanicked,

    #[error("interrupted by a signal; cleaned up")]
    Interrupted,
}

impl BenchError {
    /// Wraps an I/O error with what we were doing.
    pub fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> BenchError {
        let what = what.into();
        move |source| BenchError::Io { what, source }
    }
}

pub type Result<T, E = BenchError> = std::result::Result<T, E>;
