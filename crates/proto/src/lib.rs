//! The wire types of weftd's local socket (`<run-dir>/weftd.sock`) and the files the plugin
//! leaves for it, shared by the `weft` plugin, `weftd` and `weftctl`.
//!
//! **Owns:** the request and reply lines ([`Request`], [`Reply`]), the status weftd reports
//! ([`Status`], read by `weftctl status`), the endpoint files under `<run-dir>/endpoints/`
//! and their paths ([`EndpointFile`]), the socket's request size limit, and the synchronous
//! client ([`ask`]). One JSON request line, one JSON reply line, then the agent closes the
//! connection.
//!
//! **Must not:** use an async runtime, touch the kernel, or depend on anything of the
//! agent's: it is linked into the CNI plugin, which starts and ends per pod. The JSON is a
//! contract between a plugin and a weftd of one release and with files already on disk:
//! change it only in ways both sides and old files still read.
//!
//! The plugin asks only when it cannot go on alone: its node blocks are full and it needs the
//! agent to lease another one. Everything else the plugin needs is in the conflist the agent
//! wrote, so DEL, CHECK and every ADD with free addresses never touch the socket, and an agent
//! that is down never blocks a pod's teardown.
//!
//! The `weft` plugin also registers every pod it attaches: it writes an [`EndpointFile`] to
//! `<dir of the socket>/endpoints/<containerId>-<ifname>.json` ([`endpoint_path`]) and asks
//! `attach`, which the agent answers once the pod's NetworkPolicy is in the kernel; DEL
//! removes the file and says `detach`, best effort.

mod endpoint;
mod status;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use endpoint::{EndpointFile, EndpointMode, NetnsRecord, endpoint_path, endpoints_dir};
pub use status::{
    ApplyMode, ApplyTiming, CommitVia, DatapathStatus, DeniedClass, DeniedPod, Direction, LastCut,
    MapFill, PolicyStatus, Status,
};

/// The longest request line weftd reads, newline included. The largest real request (an
/// `attach` with a 64-byte container id and a 15-byte ifname) is under 200 bytes; the
/// limit only stops a client from making weftd buffer without end.
pub const MAX_REQUEST_LINE: usize = 64 * 1024;

/// What a client may ask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// Lease one more block of this family for the node.
    Grow { family: Family },
    /// The node's identity, blocks and MTU, and its policy state (for `weftctl` and tests).
    Status,
    /// A pod was attached and its [`EndpointFile`] written: program its policy, and answer
    /// only once that is committed to the kernel.
    Attach {
        #[serde(rename = "containerId")]
        container_id: String,
        ifname: String,
    },
    /// A pod was detached and its endpoint file removed (best effort, not awaited long).
    Detach {
        #[serde(rename = "containerId")]
        container_id: String,
        ifname: String,
    },
    /// Load the policy view from the datastore now, apply it, and answer with the node's
    /// [`Status`] once committed (a barrier for tools and tests).
    PolicySync,
}

/// An address family, as the wire spells it (`"v4"`, `"v6"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The agent's answer. `error` is set exactly when `ok` is false.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The block a `grow` leased.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<IpNet>,
    /// The answer to `status` and `policy-sync`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Box<Status>>,
}

impl Reply {
    /// Done, nothing to report.
    pub fn done() -> Reply {
        Reply {
            ok: true,
            ..Reply::default()
        }
    }

    /// Not done, and why (for a person: the plugin logs it, weftctl prints it).
    pub fn refused(why: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            error: Some(why.into()),
            ..Reply::default()
        }
    }
}

/// Why a request to the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("weftd socket {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("weftd socket {path}: unreadable reply {reply:?}")]
    BadReply { path: String, reply: String },
    #[error("weftd refused: {0}")]
    Refused(String),
}

/// Send one request and wait at most `timeout` for the whole exchange.
pub fn ask(socket: &Path, req: &Request, timeout: Duration) -> Result<Reply, AgentError> {
    let io = |source| AgentError::Io {
        path: socket.display().to_string(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut line = serde_json::to_string(req).map_err(|e| io(e.into()))?;
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io)?;
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply).map_err(io)?;
    let parsed: Reply = serde_json::from_str(reply.trim()).map_err(|_| AgentError::BadReply {
        path: socket.display().to_string(),
        reply: reply.trim().to_string(),
    })?;
    if !parsed.ok {
        return Err(AgentError::Refused(
            parsed.error.unwrap_or_else(|| "no reason given".into()),
        ));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests;
