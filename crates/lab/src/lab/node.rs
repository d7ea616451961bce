//! One `weftd` per node, running inside the node's namespace with its files in the node's
//! directory of the lab state dir, on the lab's etcd or on its Kubernetes API:
//!
//! ```text
//! /run/weft-lab/<lab>/nodes/<node>/
//!     net.d/10-weft.conflist   written by weftd once it holds blocks: that is "ready"
//!     run/weftd.sock           the plugin's socket; run/node.json
//!     state/                   IPAM data
//!     weftd.log  weftd.pid  cni.log
//! ```
//!
//! A node is ready when its conflist exists and its socket accepts a connection: the first
//! says it has blocks, the second that *this* weftd (not one before a restart) is serving.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::controlplane;
use super::error::{LabError, Result};
use super::names::Names;
use super::procs::{self, Daemon, Owner};
use super::state::{Datastore, Ipam, Node, Options};
use super::topology::ETCD_ENDPOINT;

/// The conflist weftd writes.
pub const CONFLIST: &str = "10-weft.conflist";
/// How long a weftd may take to register and lease its blocks.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long weftd gets to exit on SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The files of one node.
pub struct Paths {
    pub dir: PathBuf,
    pub conf_dir: PathBuf,
    pub run_dir: PathBuf,
    pub state_dir: PathBuf,
    pub log: PathBuf,
    pub pidfile: PathBuf,
    pub cni_log: PathBuf,
}

impl Paths {
    pub fn conflist(&self) -> PathBuf {
        self.conf_dir.join(CONFLIST)
    }

    pub fn socket(&self) -> PathBuf {
        self.run_dir.join("weftd.sock")
    }
}

pub fn paths(names: &Names, node: &str) -> Paths {
    let dir = names.state_dir().join("nodes").join(node);
    Paths {
        conf_dir: dir.join("net.d"),
        run_dir: dir.join("run"),
        state_dir: dir.join("state"),
        log: dir.join("weftd.log"),
        pidfile: dir.join("weftd.pid"),
        cni_log: dir.join("cni.log"),
        dir,
    }
}

/// The lab's block sizes unless `--block-size-v4/-v6` say otherwise.
pub const DEFAULT_BLOCK_SIZE_V4: u8 = 26;
pub const DEFAULT_BLOCK_SIZE_V6: u8 = 122;
/// The IPv6 block size when kube-controller-manager hands out the blocks (`--ipam
/// kubernetes`): it allocates at most 16 bits below the cluster CIDR (/56 here), and /64 is
/// what Kubernetes clusters give a node.
pub const DEFAULT_KUBE_BLOCK_SIZE_V6: u8 = 64;

/// The lab's IPv4 block prefix length.
pub fn block_size_v4(opts: &Options) -> u8 {
    opts.block_size_v4.unwrap_or(DEFAULT_BLOCK_SIZE_V4)
}

/// The lab's IPv6 block prefix length.
pub fn block_size_v6(opts: &Options) -> u8 {
    opts.block_size_v6.unwrap_or(match opts.ipam {
        Ipam::Weft => DEFAULT_BLOCK_SIZE_V6,
        Ipam::Kubernetes => DEFAULT_KUBE_BLOCK_SIZE_V6,
    })
}

/// The cluster config every weftd of the lab is given (on etcd as `--cluster-config`, on
/// Kubernetes as the ConfigMap `weft-config`).
pub fn cluster_config(opts: &Options) -> Value {
    let mut config = serde_json::json!({
        "cidrV4": "10.244.0.0/16",
        "blockSizeV4": block_size_v4(opts),
        "backend": opts.backend.as_str(),
        "vxlanVni": 1,
        "vxlanPort": 4789,
    });
    if opts.ipv6
        && let Some(obj) = config.as_object_mut()
    {
        obj.insert("cidrV6".to_owned(), "fd00:10:244::/56".into());
        obj.insert("blockSizeV6".to_owned(), block_size_v6(opts).into());
    }
    config
}

pub fn cluster_config_path(names: &Names) -> PathBuf {
    names.state_dir().join("cluster.json")
}

/// The running weftd's pid on `node`, if its pidfile names a live process of this lab.
pub fn running(names: &Names, owner: &Owner, node: &str) -> Option<u32> {
    procs::read_pidfile(&paths(names, node).pidfile).filter(|pid| owner.owns(*pid))
}

/// Starts weftd on `node`.
pub fn start(names: &Names, opts: &Options, node: &Node) -> Result<Child> {
    let p = paths(names, &node.name);
    for dir in [&p.conf_dir, &p.run_dir, &p.state_dir] {
        std::fs::create_dir_all(dir)
            .map_err(LabError::io(format!("creating {}", dir.display())))?;
    }
    let mut args = vec!["--node-name".to_owned(), node.name.clone()];
    match opts.datastore {
        Datastore::Etcd => {
            args.extend([
                "--etcd-endpoints".to_owned(),
                ETCD_ENDPOINT.to_owned(),
                "--cluster-config".to_owned(),
                cluster_config_path(names).display().to_string(),
                "--underlay-address".to_owned(),
                node.address4.to_string(),
            ]);
            if let Some(v6) = node.address6 {
                args.extend(["--underlay-address6".to_owned(), v6.to_string()]);
            }
        }
        // As a DaemonSet's weftd: the cluster config from the ConfigMap, the underlay
        // addresses from the Node's InternalIPs (which the lab wrote).
        Datastore::Kubernetes => args.extend([
            "--datastore".to_owned(),
            "kubernetes".to_owned(),
            "--kubeconfig".to_owned(),
            controlplane::paths(names)
                .weftd_kubeconfig
                .display()
                .to_string(),
            "--kube-namespace".to_owned(),
            controlplane::WEFT_NAMESPACE.to_owned(),
        ]),
    }
    args.extend([
        "--cni-conf-dir".to_owned(),
        p.conf_dir.display().to_string(),
        "--run-dir".to_owned(),
        p.run_dir.display().to_string(),
        "--state-dir".to_owned(),
        p.state_dir.display().to_string(),
        "--mode".to_owned(),
        opts.mode.as_str().to_owned(),
        "--cni-log-file".to_owned(),
        p.cni_log.display().to_string(),
    ]);
    if let Some(ttl) = opts.lease_ttl {
        args.extend(["--lease-ttl".to_owned(), ttl.to_string()]);
    }
    if let Some(secs) = opts.resync_interval {
        args.extend(["--resync-interval".to_owned(), secs.to_string()]);
    }
    if opts.policy_cut_established {
        args.push("--policy-cut-established".to_owned());
    }
    if opts.datapath_ebpf {
        mount_pins(names)?;
        args.extend([
            "--datapath".to_owned(),
            "ebpf".to_owned(),
            "--bpf-pin-dir".to_owned(),
            pin_dir(names, &node.name).display().to_string(),
        ]);
    }
    let program = opts.bin_dir.join("weftd");
    let ns = names.node(&node.name);
    procs::spawn(&Daemon {
        label: format!("weftd on {}", node.name),
        place: procs::Place::Netns(&ns),
        program: &program,
        args,
        cwd: &p.dir,
        log: &p.log,
        pidfile: &p.pidfile,
    })
}

/// The lab's own bpffs, `<state dir>/bpf`, one pin dir per node under it (`--datapath
/// ebpf`). Not `/sys/fs/bpf`: weftd runs under `ip netns exec`, which mounts a fresh `/sys`
/// in a mount namespace of the process's own, so a bpffs weftd mounted there would go (and
/// every link with it) when weftd exits. A mount made here before weftd starts is copied
/// into its namespace and outlives it.
pub fn pins_root(names: &Names) -> PathBuf {
    names.state_dir().join("bpf")
}

/// Node `node`'s weftd pins its eBPF datapath here.
pub fn pin_dir(names: &Names, node: &str) -> PathBuf {
    pins_root(names).join(node)
}

/// Mounts the lab's bpffs unless it is there.
fn mount_pins(names: &Names) -> Result<()> {
    let root = pins_root(names);
    std::fs::create_dir_all(&root).map_err(LabError::io(format!("creating {}", root.display())))?;
    let fs = nix::sys::statfs::statfs(&root)
        .map_err(|e| LabError::io(format!("statfs {}", root.display()))(e.into()))?;
    if fs.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC {
        return Ok(());
    }
    nix::mount::mount(
        Some("bpf"),
        &root,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| LabError::io(format!("mounting bpffs on {}", root.display()))(e.into()))
}

/// Removes the pins of every node (each weftd stopped first: links, programs, maps) and
/// unmounts the lab's bpffs.
pub fn remove_pins(names: &Names) -> Result<()> {
    let root = pins_root(names);
    let Ok(entries) = std::fs::read_dir(&root) else {
        return Ok(());
    };
    // Node dirs only: a bpffs also lists the kernel's own `maps.debug`, `progs.debug`.
    for e in entries.flatten().filter(|e| e.path().is_dir()) {
        weft_ebpf::remove_all(&e.path())
            .map_err(|err| LabError::invalid("lab down", names.lab(), err.to_string()))?;
    }
    let mounted = nix::sys::statfs::statfs(&root)
        .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC);
    if mounted {
        nix::mount::umount2(&root, nix::mount::MntFlags::MNT_DETACH)
            .map_err(|e| LabError::io(format!("unmounting {}", root.display()))(e.into()))?;
    }
    Ok(())
}

/// Whether `node`'s weftd has its conflist written and answers on its socket.
pub fn is_ready(p: &Paths) -> bool {
    p.conflist().is_file() && UnixStream::connect(p.socket()).is_ok()
}

/// A weftd being waited for: the process we started, or a pid found running.
pub enum Starting {
    Child(Child),
    Running(u32),
}

/// Waits until every node in `pending` is ready, printing a line per node as it gets there;
/// returns the blocks each reported. A weftd that exits first, or the timeout, ends the
/// wait with its log's last line.
pub fn wait_ready(
    names: &Names,
    mut pending: Vec<(String, Starting)>,
) -> Result<Vec<(String, Vec<String>)>> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut ready = Vec::new();
    while !pending.is_empty() {
        let mut i = 0;
        while i < pending.len() {
            let (node, starting) = &mut pending[i];
            let p = paths(names, node);
            let exited = match starting {
                Starting::Child(child) => child.try_wait().ok().flatten().map(|s| s.to_string()),
                Starting::Running(pid) => (!procs::alive(*pid)).then(|| "exited".to_owned()),
            };
            if let Some(status) = exited {
                return Err(LabError::Daemon {
                    daemon: format!("weftd on {node}"),
                    reason: format!("exited before it was ready ({status})"),
                    tail: procs::log_tail(&p.log),
                    log: p.log,
                });
            }
            if is_ready(&p) {
                let blocks = blocks(&p);
                eprintln!("node {node}: weftd ready (blocks {})", blocks.join(", "));
                let (node, _) = pending.swap_remove(i);
                ready.push((node, blocks));
                continue;
            }
            i += 1;
        }
        if pending.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            let (node, _) = &pending[0];
            let p = paths(names, node);
            return Err(LabError::Daemon {
                daemon: format!("weftd on {node}"),
                reason: format!(
                    "not ready after {}s (no {} or no answer on {})",
                    READY_TIMEOUT.as_secs(),
                    p.conflist().display(),
                    p.socket().display()
                ),
                tail: procs::log_tail(&p.log),
                log: p.log,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(ready)
}

/// Stops weftd on `node` with `signal` (SIGKILL after a grace period). Returns whether one
/// was running.
pub fn stop(names: &Names, owner: &Owner, node: &str, signal: libc::c_int) -> bool {
    match running(names, owner, node) {
        Some(pid) => {
            procs::stop(&[pid], signal, STOP_GRACE);
            true
        }
        None => false,
    }
}

/// The node's blocks, for people: the subnets in its conflist's IPAM section, else the
/// `blocks` weftd wrote in `node.json`.
pub fn blocks(p: &Paths) -> Vec<String> {
    let read =
        |path: &Path| -> Option<Value> { serde_json::from_slice(&std::fs::read(path).ok()?).ok() };
    let mut found = Vec::new();
    if let Some(conf) = read(&p.conflist()) {
        collect(&conf, "subnet", &mut found);
    }
    if found.is_empty()
        && let Some(node) = read(&p.run_dir.join("node.json"))
    {
        match node.get("blocks") {
            Some(Value::Array(items)) => {
                for item in items {
                    match item {
                        Value::String(s) => found.push(s.clone()),
                        other => collect(other, "cidr", &mut found),
                    }
                }
            }
            Some(other) => collect(other, "cidr", &mut found),
            None => {}
        }
    }
    found.dedup();
    found
}

/// Every string value under `key`, anywhere in `v`.
fn collect(v: &Value, key: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, val) in map {
                match val {
                    Value::String(s) if k == key => out.push(s.clone()),
                    other => collect(other, key, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect(i, key, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn blocks_are_found_in_the_ipam_ranges() {
        let conf = json!({"plugins": [{"type": "weft", "ipam": {"type": "weft-ipam",
            "ranges": [[{"subnet": "10.244.0.0/26"}, {"subnet": "10.244.0.64/26"}],
                       [{"subnet": "fd00:10:244::/122"}]]}}]});
        let mut out = Vec::new();
        collect(&conf, "subnet", &mut out);
        assert_eq!(
            out,
            ["10.244.0.0/26", "10.244.0.64/26", "fd00:10:244::/122"]
        );
    }

    #[test]
    fn cluster_config_matches_the_contract() {
        let opts = Options {
            nodes: 1,
            pods_per_node: 0,
            backend: super::super::state::Backend::HostGw,
            mode: super::super::state::Mode::Bridge,
            mtus: vec![1500],
            ipv6: true,
            bin_dir: PathBuf::from("/x"),
            lease_ttl: None,
            resync_interval: None,
            policy_cut_established: false,
            datapath_ebpf: false,
            block_size_v4: None,
            block_size_v6: None,
            datastore: Datastore::Etcd,
            ipam: Ipam::Weft,
            kube_bin: None,
            kubelet: false,
            images: None,
        };
        let c = cluster_config(&opts);
        assert_eq!(c["backend"], "host-gw");
        assert_eq!(c["cidrV6"], "fd00:10:244::/56");
        assert_eq!(c["blockSizeV6"], 122);
        assert_eq!(c["blockSizeV4"], 26);
        let c = cluster_config(&Options {
            block_size_v4: Some(29),
            block_size_v6: Some(125),
            ..opts.clone()
        });
        assert_eq!(
            (&c["blockSizeV4"], &c["blockSizeV6"]),
            (&29.into(), &125.into())
        );
        let c = cluster_config(&Options {
            ipv6: false,
            ..opts.clone()
        });
        assert!(c.get("cidrV6").is_none());
        // kube-controller-manager's blocks: /64 unless asked otherwise.
        let kube = Options {
            datastore: Datastore::Kubernetes,
            ipam: Ipam::Kubernetes,
            ..opts
        };
        assert_eq!(cluster_config(&kube)["blockSizeV6"], 64);
    }
}
