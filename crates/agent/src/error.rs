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
    #[error("dataplane: {0}")]
    Dataplane(String),
    #[error("the dataplane thread is gone")]
    DataplaneGone,
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("local socket {path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no {family} block could be leased: {detail}")]
    NoBlock {
        family: &'static str,
        detail: String,
    },
}
