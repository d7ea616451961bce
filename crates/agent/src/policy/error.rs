//! Why a policy step failed. The control loop logs these and retries, and `status` shows
//! them to a person (`lastError`, `lastCut.error`), so each names what it was doing and on
//! which file or table; the variants let a caller tell a datastore outage from a refused
//! commit without reading the message.

use std::path::PathBuf;
use std::process::ExitStatus;

use weft_policy::plan::ApplyError;
use weft_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The policy view could not be read from the datastore (unreachable, or an object
    /// listing failed); the kernel keeps what it has.
    #[error("loading the policy view: {0}")]
    Load(#[source] StoreError),
    /// Nothing can be applied before the first complete view.
    #[error("the policy view has not been loaded from the datastore yet")]
    NotLoaded,
    /// A commit failed; the kernel holds what it held before (commits are all or nothing).
    #[error("applying the policy plan to inet {table}: {source}")]
    Apply {
        table: String,
        #[source]
        source: Box<Error>,
    },
    /// `nft -f` could not be started, fed or waited for.
    #[error("{step} nft: {source}")]
    NftCommand {
        /// `cannot run`, `writing to`, `waiting for`.
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// `nft -f` ran and refused the script.
    #[error("nft -f failed ({status}): {stderr}")]
    NftRefused { status: ExitStatus, stderr: String },
    /// The kernel refused a netlink batch (the error names the set and operation).
    #[error("netlink commit: {0}")]
    Commit(#[source] weft_nft::Error),
    /// No nf_tables netlink socket to commit on.
    #[error("opening a netlink socket for the commit: {0}")]
    Socket(#[source] weft_nft::Error),
    /// The table's counters could not be dumped.
    #[error("reading the counters of inet {table}: {source}")]
    Counters {
        table: String,
        #[source]
        source: weft_nft::Error,
    },
    /// A state file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// `reading`, `writing`, `appending to`.
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A state file is not the JSON it should be.
    #[error("{path} unreadable: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// What was to be written to a state file did not encode.
    #[error("encoding {path}: {source}")]
    Encode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The journal's ops do not apply to the plan file it continues.
    #[error("{path} does not apply to its plan: {source}")]
    Journal {
        path: PathBuf,
        #[source]
        source: ApplyError,
    },
    /// `--policy-cut-established`: a step of the conntrack sweep failed (the policy itself
    /// is applied).
    #[error("{step}: {source}")]
    Cut {
        step: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A blocking thread the work ran on died.
    #[error("{what} thread failed: {source}")]
    Thread {
        what: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

impl Error {
    /// For `map_err`: a failed step of the conntrack sweep, whatever error type the
    /// kernel call has.
    pub fn cut<E>(step: &'static str) -> impl FnOnce(E) -> Error
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        move |source| Error::Cut {
            step,
            source: Box::new(source),
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.to_path_buf();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}
