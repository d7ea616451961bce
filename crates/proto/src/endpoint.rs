//! The files the `weft` plugin leaves for weftd: one per attached pod, in
//! `<dir of the socket>/endpoints/<containerId>-<ifname>.json`. Files written by earlier
//! releases stay on disk across an upgrade (in `/run/weft`, until the pod goes), so what
//! is read here must keep reading them.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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
    pub mode: EndpointMode,
}

/// How the plugin wired the pod (its config's `mode`), which decides whether weftd can
/// police it at all: a macvlan pod's traffic never passes the node's netfilter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    Bridge,
    Ptp,
    Macvlan,
}

impl EndpointMode {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointMode::Bridge => "bridge",
            EndpointMode::Ptp => "ptp",
            EndpointMode::Macvlan => "macvlan",
        }
    }
}

/// The directory endpoint files live in, next to the agent's socket.
pub fn endpoints_dir(socket: &Path) -> PathBuf {
    socket.parent().unwrap_or(Path::new(".")).join("endpoints")
}

/// `<dir of socket>/endpoints/<containerId>-<ifname>.json`.
pub fn endpoint_path(socket: &Path, container_id: &str, ifname: &str) -> PathBuf {
    endpoints_dir(socket).join(format!("{container_id}-{ifname}.json"))
}
