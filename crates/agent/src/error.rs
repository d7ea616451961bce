//! The agent's errors. Startup errors end the process with their message; errors inside the
//! control loop are logged and retried, so they carry enough context to act on.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid flag: {0}")]
    Flag(String),
    #[error("reading the cluster config {path}: {source}")]
    ConfigFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] weft_store::StoreError),
    #[error("the datastore holds no cluster config; start one weftd with --cluster-config FILE")]
    NoClusterConfig,
    #[error("underlay: {0}")]
    Underlay(String),
    /// The backend refused a change (a peer it cannot reach, the kernel saying no) or could
    /// not open; [`weft_backend::Error::is_peer_error`] tells one peer's problem from the
    /// node's.
    #[error("dataplane: {0}")]
    Dataplane(#[from] weft_backend::Error),
    #[error("masquerade table inet {table}: {source}", table = crate::dataplane::MASQ_TABLE)]
    Masquerade {
        #[from]
        source: weft_nft::Error,
    },
    #[error("the dataplane thread is gone")]
    DataplaneGone,
    #[error("cannot start the {what} thread: {source}")]
    Thread {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot watch SIGTERM: {0}")]
    Signal(#[source] std::io::Error),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The run dir cannot hold weftd's socket safely (docs/agent.md, "The local socket").
    #[error(
        "run dir {path} (mode {mode:o}) is {reason}: weftd's socket must be reachable by root \
         only; give weftd a directory of its own (--run-dir)"
    )]
    UnsafeRunDir {
        path: PathBuf,
        mode: u32,
        reason: &'static str,
    },
    #[error("local socket {path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `--metrics-address` cannot be served (in use, not an address of this node).
    #[error("metrics address {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("no {family} block could be leased: {source}")]
    NoBlock {
        family: &'static str,
        #[source]
        source: weft_store::StoreError,
    },
}
