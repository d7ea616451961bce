//! weftd's flags and the settings derived from them. Defaults are the paths of design.md;
//! every path is a flag so the lab can run several agents on one machine.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use weft_store::kube::{IpamMode, KubeOptions};
use weft_store::{ClusterConfig, EtcdOptions, TlsFiles};

pub use crate::datapath::Kind as DatapathKind;
use crate::error::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
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

/// Where the cluster's state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DatastoreKind {
    /// etcd with --etcd-endpoints, else the local store file.
    Auto,
    Etcd,
    Local,
    /// The Kubernetes API (kubeconfig from --kubeconfig, $KUBECONFIG, ~/.kube/config, or
    /// the pod's ServiceAccount).
    Kubernetes,
}

#[derive(Debug, Parser)]
#[command(name = "weftd", version, about = "Weft node agent")]
pub struct Args {
    /// This node's name in the cluster (DNS-1123); on Kubernetes the Node's name, from the
    /// downward API.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    #[arg(long, value_enum, default_value = "auto")]
    pub datastore: DatastoreKind,
    /// kubeconfig for `--datastore kubernetes`.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The namespace of weft's ConfigMap `weft-config` (`--datastore kubernetes`).
    #[arg(long, default_value = "weft-system")]
    pub kube_namespace: String,
    /// etcd v3 client URLs, comma separated. Without it weftd uses the local store.
    #[arg(long, value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    #[arg(long)]
    pub etcd_cacert: Option<PathBuf>,
    #[arg(long)]
    pub etcd_cert: Option<PathBuf>,
    #[arg(long)]
    pub etcd_key: Option<PathBuf>,
    /// Key prefix in etcd (one cluster per prefix).
    #[arg(long, default_value = "/weft/v1")]
    pub etcd_prefix: String,
    /// Local store file, used when no etcd endpoint is given.
    #[arg(long, default_value = "/var/lib/weft/store.json")]
    pub store_path: PathBuf,
    /// Cluster config (JSON) to store if the datastore has none; must match if it has one.
    #[arg(long)]
    pub cluster_config: Option<PathBuf>,
    /// This node's underlay IPv4 address (default: the source of the default route).
    #[arg(long)]
    pub underlay_address: Option<Ipv4Addr>,
    /// This node's underlay IPv6 address (needed for host-gw IPv6 routes).
    #[arg(long)]
    pub underlay_address6: Option<Ipv6Addr>,
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    #[arg(long, default_value = "/run/weft")]
    pub run_dir: PathBuf,
    #[arg(long, default_value = "/var/lib/weft")]
    pub state_dir: PathBuf,
    #[arg(long, value_enum, default_value = "bridge")]
    pub mode: Mode,
    /// Bridge name for bridge mode.
    #[arg(long, default_value = "weft0")]
    pub bridge: String,
    /// Node lease TTL in seconds: a node silent this long loses its blocks.
    #[arg(long, default_value_t = 20)]
    pub lease_ttl: u64,
    /// Seconds between drift repairs of the kernel state, and between passes of the GC of
    /// pods whose DEL never came.
    #[arg(long, default_value_t = 30)]
    pub resync_interval: u64,
    /// Seconds a pod must have been attached before weftd's GC may collect it once its
    /// network namespace is gone (docs/agent.md, "Pods whose DEL never came").
    #[arg(long, default_value_t = 60)]
    pub gc_grace: u64,
    /// Plugin log file, written into the conflist as `logFile`.
    #[arg(long)]
    pub cni_log_file: Option<PathBuf>,
    /// The conflist's cniVersion: the newest the node's container runtime speaks. 1.1.0
    /// (GC and STATUS) needs containerd 2.0 or CRI-O 1.30; containerd 1.6 and 1.7 stop at
    /// 1.0.0 and refuse to start a pod with a newer network ("unsupported CNI result
    /// version"). The plugins answer every version.
    #[arg(long, default_value = "1.1.0", value_parser = ["0.4.0", "1.0.0", "1.1.0"])]
    pub cni_version: String,
    /// Log denied new connections (kernel log, prefix `weft deny <class>: `), at most N per
    /// second per class.
    #[arg(long)]
    pub policy_log_rate: Option<u32>,
    /// After each policy change, delete the conntrack entries of flows it denies, so their
    /// established connections stop too (and turn off loose TCP pickup in this namespace).
    #[arg(long)]
    pub policy_cut_established: bool,
    /// Serve /metrics, /healthz and /readyz over HTTP on this address (e.g. 127.0.0.1:9412).
    /// Without it weftd listens on no TCP port.
    #[arg(long, value_name = "IP:PORT")]
    pub metrics_address: Option<SocketAddr>,
    /// How pod packets are forwarded: `nft` (the kernel's forwarding, nftables policy) or
    /// `ebpf` (a tcx fast path for same-node pod traffic; policed pods and everything else
    /// keep the kernel path). docs/agent.md, "Datapath".
    #[arg(long, value_enum, default_value = "nft")]
    pub datapath: DatapathKind,
    /// The bpffs directory of the eBPF datapath's pins (mounted at /sys/fs/bpf if no bpffs
    /// is there); one per weftd on a machine.
    #[arg(long, default_value = weft_ebpf::DEFAULT_PIN_DIR)]
    pub bpf_pin_dir: PathBuf,
}

#[derive(Debug, Clone)]
pub enum StoreChoice {
    Etcd(EtcdOptions),
    Local(PathBuf),
    Kubernetes(KubeOptions),
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub node_name: String,
    pub store: StoreChoice,
    pub cluster_config: Option<ClusterConfig>,
    pub underlay_v4: Option<Ipv4Addr>,
    pub underlay_v6: Option<Ipv6Addr>,
    pub cni_conf_dir: PathBuf,
    pub run_dir: PathBuf,
    pub state_dir: PathBuf,
    pub mode: Mode,
    pub bridge: String,
    pub lease_ttl: Duration,
    pub resync_interval: Duration,
    pub gc_grace: Duration,
    pub cni_log_file: Option<PathBuf>,
    pub cni_version: String,
    pub policy_log_rate: Option<u32>,
    pub policy_cut_established: bool,
    pub metrics_address: Option<SocketAddr>,
    pub datapath: DatapathKind,
    pub bpf_pin_dir: PathBuf,
}

impl Settings {
    pub fn from_args(a: Args) -> Result<Settings, Error> {
        if a.lease_ttl < 2 {
            return Err(Error::Flag("--lease-ttl must be at least 2 seconds".into()));
        }
        if a.resync_interval == 0 {
            return Err(Error::Flag(
                "--resync-interval must be at least 1 second".into(),
            ));
        }
        // No grace at all would let a pod whose namespace is still being set up look gone.
        if a.gc_grace == 0 {
            return Err(Error::Flag("--gc-grace must be at least 1 second".into()));
        }
        let cluster_config = match &a.cluster_config {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigFile {
                    path: path.clone(),
                    source,
                })?;
                Some(ClusterConfig::from_json(&text).map_err(|e| {
                    Error::Flag(format!("--cluster-config {}: {e}", path.display()))
                })?)
            }
        };
        let kind = match a.datastore {
            DatastoreKind::Auto if a.etcd_endpoints.is_empty() => DatastoreKind::Local,
            DatastoreKind::Auto => DatastoreKind::Etcd,
            k => k,
        };
        if kind == DatastoreKind::Etcd && a.etcd_endpoints.is_empty() {
            return Err(Error::Flag(
                "--datastore etcd needs --etcd-endpoints".into(),
            ));
        }
        let store = if kind == DatastoreKind::Kubernetes {
            StoreChoice::Kubernetes(KubeOptions {
                kubeconfig: a.kubeconfig.clone(),
                namespace: a.kube_namespace.clone(),
                ipam: IpamMode::Weft,
                request_timeout: Duration::from_secs(10),
            })
        } else if kind == DatastoreKind::Local {
            StoreChoice::Local(a.store_path.clone())
        } else {
            let tls = match (&a.etcd_cacert, &a.etcd_cert, &a.etcd_key) {
                (None, None, None) => None,
                (Some(ca), Some(cert), Some(key)) => Some(TlsFiles {
                    ca: ca.clone(),
                    cert: cert.clone(),
                    key: key.clone(),
                }),
                _ => {
                    return Err(Error::Flag(
                        "--etcd-cacert, --etcd-cert and --etcd-key go together".into(),
                    ));
                }
            };
            StoreChoice::Etcd(EtcdOptions {
                endpoints: a.etcd_endpoints.clone(),
                prefix: a.etcd_prefix.clone(),
                tls,
                timeout: Duration::from_secs(3),
            })
        };
        Ok(Settings {
            node_name: a.node_name,
            store,
            cluster_config,
            underlay_v4: a.underlay_address,
            underlay_v6: a.underlay_address6,
            cni_conf_dir: a.cni_conf_dir,
            run_dir: a.run_dir,
            state_dir: a.state_dir,
            mode: a.mode,
            bridge: a.bridge,
            lease_ttl: Duration::from_secs(a.lease_ttl),
            resync_interval: Duration::from_secs(a.resync_interval),
            gc_grace: Duration::from_secs(a.gc_grace),
            cni_log_file: a.cni_log_file,
            cni_version: a.cni_version,
            policy_log_rate: a.policy_log_rate.filter(|n| *n > 0),
            policy_cut_established: a.policy_cut_established,
            metrics_address: a.metrics_address,
            datapath: a.datapath,
            bpf_pin_dir: a.bpf_pin_dir,
        })
    }

    pub fn conflist_path(&self) -> PathBuf {
        self.cni_conf_dir.join("10-weft.conflist")
    }

    pub fn socket_path(&self) -> PathBuf {
        self.run_dir.join("weftd.sock")
    }

    pub fn node_state_path(&self) -> PathBuf {
        self.run_dir.join("node.json")
    }

    pub fn ipam_dir(&self) -> PathBuf {
        self.state_dir.join("ipam")
    }
}
