//! What can go wrong while benchmarking. A failed ADD/DEL, a daemon that dies or a tool that
//! fails is an error, not a data point: the figures would be meaningless, so the run stops
//! and shows what the plugin, daemon or tool said.

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

    #[error(transparent)]
    KubePlane(#[from] crate::kubeplane::KubePlaneError),

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

    #[error("`{tool}` not found on PATH ({hint})")]
    MissingTool {
        tool: &'static str,
        hint: &'static str,
    },

    #[error("{what}")]
    Net {
        what: String,
        #[source]
        source: weft_net::Error,
    },

    #[error("{what}")]
    Store {
        what: String,
        #[source]
        source: weft_store::StoreError,
    },

    #[error("{what}: {reason}\n--- end of its log ---\n{tail}")]
    Daemon {
        what: String,
        reason: String,
        tail: String,
    },

    #[error("{what} did not happen within {secs} s ({detail})")]
    Timeout {
        what: String,
        secs: u64,
        detail: String,
    },

    #[error("{what} failed ({status}):\n{output}")]
    Command {
        what: String,
        status: String,
        output: String,
    },

    #[error("{what}: {detail}")]
    Unexpected { what: String, detail: String },

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

impl BenchError {
    /// Wraps a kernel (netlink) error with what we were doing.
    pub fn net(what: impl Into<String>) -> impl FnOnce(weft_net::Error) -> BenchError {
        let what = what.into();
        move |source| BenchError::Net { what, source }
    }

    /// Wraps a datastore error with what we were doing.
    pub fn store(what: impl Into<String>) -> impl FnOnce(weft_store::StoreError) -> BenchError {
        let what = what.into();
        move |source| BenchError::Store { what, source }
    }
}

pub type Result<T, E = BenchError> = std::result::Result<T, E>;
