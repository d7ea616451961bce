//! The lab's record of itself: `/run/weft-lab/<lab>/state.json`, plus the lock that
//! serializes commands changing a lab.
//!
//! The record says what the lab *should* contain (options, nodes, pods with their ADD
//! results); the kernel and the pidfiles say what it does contain. `lab up` reconciles the
//! two, which is what makes it idempotent and able to finish a lab a crash left half-made.
//! `lab down` needs neither: it removes by name prefix and by process scan.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::names::Names;
use super::{RecordError, Result};

/// How nodes reach each other's pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    Vxlan,
    HostGw,
    Auto,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Vxlan => "vxlan",
            Backend::HostGw => "host-gw",
            Backend::Auto => "auto",
        }
    }
}

/// The plugin's mode on every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Bridge,
    Ptp,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Bridge => "bridge",
            Mode::Ptp => "ptp",
        }
    }
}

/// Where the lab's cluster state lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Datastore {
    /// weft's own etcd keys: weftd on `--etcd-endpoints`.
    #[default]
    Etcd,
    /// The Kubernetes API: kube-apiserver and kube-controller-manager on the lab's etcd;
    /// nodes and pods are Node and Pod objects.
    Kubernetes,
}

impl Datastore {
    pub fn as_str(self) -> &'static str {
        match self {
            Datastore::Etcd => "etcd",
            Datastore::Kubernetes => "kubernetes",
        }
    }
}

/// Where a node's pod blocks come from on the Kubernetes datastore.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Ipam {
    /// weft claims blocks itself (etcd keys, or WeftBlock objects on Kubernetes).
    #[default]
    Weft,
    /// The Node's `spec.podCIDRs`, which kube-controller-manager allocates.
    Kubernetes,
}

impl Ipam {
    pub fn as_str(self) -> &'static str {
        match self {
            Ipam::Weft => "weft",
            Ipam::Kubernetes => "kubernetes",
        }
    }
}

/// What `lab up` was asked for when the lab was made; later `up`s must agree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Options {
    pub nodes: u32,
    pub pods_per_node: u32,
    pub backend: Backend,
    pub mode: Mode,
    /// One MTU per segment.
    pub mtus: Vec<u32>,
    pub ipv6: bool,
    /// Where weftd, weft and weft-ipam are (absolute).
    pub bin_dir: PathBuf,
    /// weftd's `--lease-ttl`, when not its default.
    #[serde(default)]
    pub lease_ttl: Option<u32>,
    /// weftd's `--resync-interval`, when not its default.
    #[serde(default)]
    pub resync_interval: Option<u32>,
    /// weftd runs with `--policy-cut-established`.
    #[serde(default)]
    pub policy_cut_established: bool,
    /// weftd runs with `--datapath ebpf` (its pins under `/sys/fs/bpf/weft-lab-<lab>/<node>`).
    #[serde(default)]
    pub datapath_ebpf: bool,
    /// The cluster's IPv4 block prefix length, when not the lab's default (26).
    #[serde(default)]
    pub block_size_v4: Option<u8>,
    /// The cluster's IPv6 block prefix length, when not the lab's default (122).
    #[serde(default)]
    pub block_size_v6: Option<u8>,
    /// etcd (a lab made before this option existed) or the Kubernetes API.
    #[serde(default)]
    pub datastore: Datastore,
    /// Where blocks come from (`ipam: kubernetes` only on the Kubernetes datastore).
    #[serde(default)]
    pub ipam: Ipam,
    /// The Kubernetes binaries (kube-apiserver, kube-controller-manager, kubectl) the lab
    /// runs, on the Kubernetes datastore; like `bin_dir`, what the last `up` found.
    #[serde(default)]
    pub kube_bin: Option<PathBuf>,
    /// Nodes run containerd, kubelet and kube-proxy, weft runs as the manifest's
    /// DaemonSet, and pods come from the API (`lab up --kubelet`).
    #[serde(default)]
    pub kubelet: bool,
    /// With `kubelet`: the directory of the image archives every node imports (weft's,
    /// the pause and the probe image); like `bin_dir`, what the last `up` found.
    #[serde(default)]
    pub images: Option<PathBuf>,
}

impl Options {
    pub fn segments(&self) -> u32 {
        u32::try_from(self.mtus.len()).unwrap_or(u32::MAX)
    }
}

/// One node: its namespace is `Names::node(name)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub index: u32,
    pub segment: u32,
    pub address4: Ipv4Addr,
    pub address6: Option<Ipv6Addr>,
    /// The blocks weftd reported when it became ready (for people; weftd is the authority).
    #[serde(default)]
    pub blocks: Vec<String>,
    /// weftd's pid as last started (the pidfile is what `down` trusts).
    #[serde(default)]
    pub pid: Option<u32>,
}

/// One pod: its namespace is `Names::pod(name)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    pub name: String,
    pub namespace: String,
    pub node: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Named container ports (`pod add --ports`): what a NetworkPolicy's named port means
    /// for this pod. On Kubernetes they are the Pod's, fixed when it is created.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<NamedPort>,
    pub container_id: String,
    /// The ADD's addresses; empty while the pod is only planned (crash before its ADD).
    #[serde(default)]
    pub addresses: Vec<IpNet>,
    /// The whole ADD result, the `prevResult` of its DEL.
    #[serde(default)]
    pub result: Option<Value>,
}

/// A named container port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedPort {
    pub name: String,
    /// TCP, UDP or SCTP, as Kubernetes spells them.
    pub protocol: String,
    pub port: u16,
}

impl Pod {
    pub fn is_wired(&self) -> bool {
        self.result.is_some()
    }
}

/// The whole record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub lab: String,
    pub options: Options,
    #[serde(default)]
    pub etcd_pid: Option<u32>,
    pub nodes: Vec<Node>,
    pub pods: Vec<Pod>,
    /// The highest node index ever used: `node add` counts on from here, so a removed
    /// node's name is only reused when asked for.
    #[serde(default)]
    pub last_node_index: u32,
}

impl State {
    pub fn path(names: &Names) -> PathBuf {
        names.state_dir().join("state.json")
    }

    /// The record, or `None` when the lab has none (never made, or a crash before the first
    /// save).
    pub fn load(names: &Names) -> Result<Option<State>> {
        let path = State::path(names);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(RecordError::io(format!("reading {}", path.display()))(e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| RecordError::State {
                what: path.display().to_string(),
                source,
            })
    }

    /// The record of a lab that must exist.
    pub fn load_existing(names: &Names) -> Result<State> {
        State::load(names)?.ok_or_else(|| RecordError::NoSuchLab {
            lab: names.lab().to_owned(),
        })
    }

    /// Writes the record whole (temp file + rename): a reader never sees half of it.
    pub fn save(&self, names: &Names) -> Result<()> {
        let path = State::path(names);
        let bytes = serde_json::to_vec_pretty(self).map_err(|source| RecordError::State {
            what: "lab state (serializing)".to_owned(),
            source,
        })?;
        write_atomic(&path, &bytes)
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn node_mut(&mut self, name: &str) -> Option<&mut Node> {
        self.nodes.iter_mut().find(|n| n.name == name)
    }

    pub fn pod(&self, name: &str) -> Option<&Pod> {
        self.pods.iter().find(|p| p.name == name)
    }

    pub fn pod_mut(&mut self, name: &str) -> Option<&mut Pod> {
        self.pods.iter_mut().find(|p| p.name == name)
    }
}

/// Writes `path` via a temp file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let write = || -> io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        fs::rename(&tmp, path)
    };
    write().map_err(RecordError::io(format!("writing {}", path.display())))
}

/// An exclusive `flock` on the lab's lock file, held until dropped: commands that change a
/// lab run one at a time; readers (`pods`, `check`) need none, since the record is replaced
/// whole.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl Lock {
    /// Takes the lock of a lab whose state dir exists, waiting for a holder to finish.
    pub fn acquire(names: &Names) -> Result<Lock> {
        let path = names.state_dir().join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(RecordError::io(format!("opening {}", path.display())))?;
        // SAFETY: flock on an fd we own; blocking until the other command finishes.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(RecordError::io(format!("locking {}", path.display()))(
                io::Error::last_os_error(),
            ));
        }
        Ok(Lock { _file: file })
    }
}
