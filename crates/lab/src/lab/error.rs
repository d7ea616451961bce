//! What can go wrong in the lab. Each message is one line a person can act on: what failed,
//! for which lab/node/pod, and where to look (a log file) when a daemon is involved.

use std::io;
use std::path::PathBuf;

use weft_cni::runtime::ExecError;
pub use weft_ctl::lab::RecordError;

use crate::netns::NetnsError;

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("the lab creates network namespaces and must run as root")]
    NotRoot,

    #[error("`{tool}` not found on PATH ({hint})")]
    MissingTool {
        tool: &'static str,
        hint: &'static str,
    },

    #[error(
        "{binary} not found or not executable in {} (--bin-dir; default: weftctl-lab's directory, next to weftctl)",
        dir.display()
    )]
    MissingBinary { binary: &'static str, dir: PathBuf },

    /// A name, an option or the lab's record (weft-ctl's `lab`, shared with `--lab`).
    #[error(transparent)]
    Record(#[from] RecordError),

    #[error("lab {lab:?} has no node {node:?}")]
    NoSuchNode { lab: String, node: String },

    #[error("lab {lab:?} has no pod {pod:?}")]
    NoSuchPod { lab: String, pod: String },

    #[error("lab {lab:?} already has a {what} named {name:?}")]
    Exists {
        lab: String,
        what: &'static str,
        name: String,
    },

    #[error(
        "lab {lab:?} already exists with {option} {recorded}, not {given}; run `weftctl lab down --name {lab}` first to change it"
    )]
    Conflict {
        lab: String,
        option: &'static str,
        recorded: String,
        given: String,
    },

    #[error(transparent)]
    Netns(#[from] NetnsError),

    #[error("{what}")]
    Net {
        what: String,
        #[source]
        source: weft_net::Error,
    },

    #[error("{daemon}: {reason}; log: {}{}", log.display(), tail_suffix(tail))]
    Daemon {
        daemon: String,
        reason: String,
        log: PathBuf,
        tail: String,
    },

    #[error("pod {pod}: CNI {verb}")]
    Plugin {
        pod: String,
        verb: &'static str,
        #[source]
        source: Box<ExecError>,
    },

    #[error("node {node} is not ready: {reason}")]
    NodeNotReady { node: String, reason: String },

    #[error(
        "no Kubernetes binaries (kube-apiserver, kube-controller-manager, kubectl) {looked}: run \
         scripts/kube-binaries.sh (it builds Kubernetes 1.20 from Debian's source into \
         /var/cache/weft/kubernetes/, ~10 minutes the first time) or set WEFT_KUBE_BIN"
    )]
    MissingKube { looked: String },

    #[error(
        "lab {lab:?} runs on etcd, not on the Kubernetes API (`weftctl lab up --datastore kubernetes` makes one that does)"
    )]
    NotKube { lab: String },

    /// A request to the lab's kube-apiserver.
    #[error("{what}")]
    Kube {
        what: String,
        #[source]
        source: Box<kube::Error>,
    },

    #[error(
        "no image archive {path}: a kubelet lab imports weft's, the pause and the probe image \
         on every node; build them with scripts/lab-images.sh (or pass --images DIR)"
    )]
    MissingImage { path: PathBuf },

    /// A helper program (openssl, kubectl) that said no.
    #[error("{what}: {detail}")]
    Tool { what: String, detail: String },
}

/// The last log line, quoted after the path: usually the daemon's own reason for exiting.
fn tail_suffix(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!(" (last line: {tail})")
    }
}

impl LabError {
    /// Wraps an I/O error with what we were doing.
    pub fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> LabError {
        let what = what.into();
        move |source| RecordError::Io { what, source }.into()
    }

    /// Wraps a kernel error with what we were doing.
    pub fn net(what: impl Into<String>) -> impl FnOnce(weft_net::Error) -> LabError {
        let what = what.into();
        move |source| LabError::Net { what, source }
    }

    /// Wraps an API error with what we were asking for.
    pub fn kube(what: impl Into<String>) -> impl FnOnce(kube::Error) -> LabError {
        let what = what.into();
        move |source| LabError::Kube {
            what,
            source: Box::new(source),
        }
    }

    pub fn invalid(
        what: &'static str,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> LabError {
        RecordError::invalid(what, value, reason).into()
    }
}

pub type Result<T, E = LabError> = std::result::Result<T, E>;
