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
    /// The pod interface's MAC (`aa:bb:cc:dd:ee:ff`), which the eBPF datapath writes as the
    /// destination of the frames it delivers. None in files of earlier releases: such a
    /// pod keeps the kernel path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    pub mode: EndpointMode,
    /// The CNI network (the conflist's `name`): which IPAM store holds the pod's leases
    /// (`<dataDir>/<network>/`) and whose veth alias names it. None in files of earlier
    /// releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// The pod's network namespace as ADD found it, so weftd can tell when the pod is gone
    /// without a DEL (docs/agent.md, "Pods whose DEL never came"). None in files of
    /// earlier releases, and when the plugin could not read it: such a pod is never
    /// collected by weftd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<NetnsRecord>,
    /// When ADD registered the pod, in milliseconds since the Unix epoch (wall clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached_at_ms: Option<u64>,
}

/// Which network namespace a pod had at ADD, and where it was seen.
///
/// `path` is `CNI_NETNS` with its directory resolved (`/var/run/netns/x` becomes
/// `/run/netns/x` where `/var/run` links to `/run`), so a reader in another mount
/// namespace finds it without the host's symlinks. `dev`/`ino` identify the namespace
/// (its nsfs inode); `dirDev`/`dirIno` identify the directory holding `path`, which tells
/// a reader whether it sees the same directory the plugin did or only one of that name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetnsRecord {
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    pub dir_dev: u64,
    pub dir_ino: u64,
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
