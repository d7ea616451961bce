//! The wire types of weftd's local socket (`<run-dir>/weftd.sock`) and the files the plugin
//! leaves for it, shared by the `weft` plugin, `weftd` and `weftctl`.
//!
//! **Owns:** the request and reply lines, the endpoint files under `<run-dir>/endpoints/`
//! and their paths, and the synchronous client ([`ask`]). One JSON request line, one JSON
//! reply line, then the agent closes the connection.
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

use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// What a client may ask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    /// Lease one more block of this family for the node (`family`: "v4" or "v6").
    Grow { family: String },
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
    /// Load the policy view from the datastore now, apply it, and answer with the policy
    /// state once committed (a barrier for tools and tests).
    PolicySync,
}

/// What the plugin records of a pod it attached, for the agent (JSON, camelCase).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointFile {
    pub container_id: String,
    pub ifname: String,
    /// `K8S_POD_NAMESPACE`, else `default`.
    pub namespace: String,
    /// `K8S_POD_NAME`, else the container id.
    pub name: String,
    pub addresses: Vec<IpAddr>,
    /// The node-side interface (veth) in bridge and ptp modes; none in macvlan mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_interface: Option<String>,
    /// `bridge`, `ptp` or `macvlan`.
    pub mode: String,
}

/// The directory endpoint files live in, next to the agent's socket.
pub fn endpoints_dir(socket: &Path) -> PathBuf {
    socket.parent().unwrap_or(Path::new(".")).join("endpoints")
}

/// `<dir of socket>/endpoints/<containerId>-<ifname>.json`.
pub fn endpoint_path(socket: &Path, container_id: &str, ifname: &str) -> PathBuf {
    endpoints_dir(socket).join(format!("{container_id}-{ifname}.json"))
}

/// The agent's answer. `error` is set exactly when `ok` is false.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<IpNet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
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
mod tests {
    use super::*;

    #[test]
    fn wire_format_is_stable() {
        let r = Request::Grow {
            family: "v4".into(),
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"op":"grow","family":"v4"}"#
        );
        assert_eq!(
            serde_json::to_string(&Request::Status).unwrap(),
            r#"{"op":"status"}"#
        );
        assert_eq!(
            serde_json::to_string(&Request::Attach {
                container_id: "c1".into(),
                ifname: "eth0".into()
            })
            .unwrap(),
            r#"{"op":"attach","containerId":"c1","ifname":"eth0"}"#
        );
        assert_eq!(
            serde_json::to_string(&Request::PolicySync).unwrap(),
            r#"{"op":"policy-sync"}"#
        );
        assert_eq!(
            endpoint_path(Path::new("/run/weft/weftd.sock"), "c1", "eth0"),
            Path::new("/run/weft/endpoints/c1-eth0.json")
        );
        let reply: Reply = serde_json::from_str(r#"{"ok":true,"block":"10.244.0.64/26"}"#).unwrap();
        assert_eq!(reply.block, Some("10.244.0.64/26".parse().unwrap()));
    }

    #[test]
    fn missing_socket_is_an_io_error_naming_the_path() {
        let err = ask(
            Path::new("/nonexistent/weftd.sock"),
            &Request::Status,
            Duration::from_millis(100),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/weftd.sock"), "{err}");
    }
}
