//! A kubelet node of the lab (`lab up --kubelet`): containerd, kubelet and kube-proxy in
//! the node's network namespace and its own view of the host's paths (`nodeview`), the
//! images imported from local archives (no registry), so that the node is what a cluster
//! operator's is, and weft reaches it the way it reaches theirs: kubelet runs the
//! manifest's DaemonSet, whose init container installs the plugins into the node's
//! `/opt/cni/bin`, and containerd runs them for every pod.
//!
//! ```text
//! /run/weft-lab/<lab>/nodes/<node>/
//!     containerd.toml  kubelet.yaml            configs (paths are the node's view's)
//!     containerd.log   kubelet.log   kube-proxy.log   and their pidfiles
//!     view/                                    the node's directories (nodeview)
//! ```
//!
//! Identity: kubelet and kube-proxy use the lab's admin kubeconfig (a lab, not a
//! hardened cluster); weftd, inside its pod, uses the ServiceAccount of the manifest.
//!
//! Must not: run anything outside the node's namespaces, or leave a cgroup outside
//! `/weft-lab.<lab>.<node>` (kubelet's cgroupRoot: `lab down` removes them by that name).

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::controlplane;
use super::error::{LabError, Result};
use super::names::Names;
use super::nodeview;
use super::procs::{self, Daemon, Owner, Place};
use super::state::{Node, Options, write_atomic};

/// The image archives every node imports, in the images directory (scripts/lab-images.sh
/// writes them): weft's (`localhost/weft:<version>`, what deploy/weft.yaml runs), the
/// pause image and the probe image.
pub const IMAGES: [&str; 3] = ["weft.oci.tar", "pause.oci.tar", "probe.oci.tar"];
/// Every pod's sandbox (deploy/lab/pause.c).
pub const PAUSE_IMAGE: &str = "localhost/weft-pause:lab";
/// busybox, for the tests' pods.
pub const PROBE_IMAGE: &str = "localhost/weft-probe:lab";
/// The reference plugins a node has next to weft's (what a node's containernetworking
/// package gives it): containerd runs `loopback` for every pod, weft's conflist chains
/// `portmap`, and the start-up benchmark swaps in `bridge` + `host-local`.
const REFERENCE_PLUGINS: [&str; 4] = ["loopback", "portmap", "bridge", "host-local"];
const REFERENCE_PLUGIN_DIR: &str = "/usr/lib/cni";
/// Inside the node's view.
const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";
const START_TIMEOUT: Duration = Duration::from_secs(60);
const DUAL_STACK_GATE: &str = "--feature-gates=IPv6DualStack=true";

pub struct Paths {
    pub dir: PathBuf,
    pub containerd_config: PathBuf,
    pub kubelet_config: PathBuf,
    pub containerd_log: PathBuf,
    pub containerd_pidfile: PathBuf,
    pub kubelet_log: PathBuf,
    pub kubelet_pidfile: PathBuf,
    pub proxy_log: PathBuf,
    pub proxy_pidfile: PathBuf,
}

pub fn paths(names: &Names, node: &str) -> Paths {
    let dir = names.state_dir().join("nodes").join(node);
    Paths {
        containerd_config: dir.join("containerd.toml"),
        kubelet_config: dir.join("kubelet.yaml"),
        containerd_log: dir.join("containerd.log"),
        containerd_pidfile: dir.join("containerd.pid"),
        kubelet_log: dir.join("kubelet.log"),
        kubelet_pidfile: dir.join("kubelet.pid"),
        proxy_log: dir.join("kube-proxy.log"),
        proxy_pidfile: dir.join("kube-proxy.pid"),
        dir,
    }
}

/// kubelet's cgroupRoot for `node`: every pod's cgroup is below it (in each hierarchy), so
/// the lab finds a pod's processes, and `down` the directories, by this name.
pub fn cgroup_root(names: &Names, node: &str) -> String {
    format!("/{}{node}", procs::cgroup_prefix(names.lab()))
}

/// Where the images are: `--images`, else `$WEFT_LAB_IMAGES`, else `lab-images` next to
/// the directory of the binaries (scripts/lab-images.sh's default, `target/lab-images`).
pub fn images_dir(given: Option<&Path>, bin_dir: &Path) -> PathBuf {
    given
        .map(Path::to_owned)
        .or_else(|| std::env::var_os("WEFT_LAB_IMAGES").map(PathBuf::from))
        .unwrap_or_else(|| bin_dir.join("../lab-images"))
}

/// Every archive of `IMAGES` in `dir`, or the error saying how to build them.
pub fn require_images(dir: &Path) -> Result<()> {
    for file in IMAGES {
        let path = dir.join(file);
        if !path.is_file() {
            return Err(LabError::MissingImage { path });
        }
    }
    Ok(())
}

fn containerd_config(names: &Names) -> String {
    // Paths are the node's view's: the standard ones. CRI runs the CNI plugins; the
    // oom_score_adj restriction lets runc start sandboxes where root lacks CAP_SYS_RESOURCE
    // (the test VMs), which otherwise fail with "can't get final child's PID from pipe".
    format!(
        "version = 2\n\
         root = \"/var/lib/containerd\"\n\
         state = \"/run/containerd\"\n\
         # lab {lab}\n\
         [grpc]\n  address = \"{CONTAINERD_SOCKET}\"\n\
         [plugins.\"io.containerd.grpc.v1.cri\"]\n\
         \x20 sandbox_image = \"{PAUSE_IMAGE}\"\n\
         \x20 restrict_oom_score_adj = true\n\
         \x20 [plugins.\"io.containerd.grpc.v1.cri\".cni]\n\
         \x20   bin_dir = \"/opt/cni/bin\"\n\
         \x20   conf_dir = \"/etc/cni/net.d\"\n\
         \x20 [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n\
         \x20   runtime_type = \"io.containerd.runc.v2\"\n\
         \x20   [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n\
         \x20     SystemdCgroup = false\n",
        lab = names.lab()
    )
}

fn kubelet_config(names: &Names, node: &str) -> String {
    // cgroupfs: the VMs' hybrid cgroup v1 without systemd. QoS cgroups stay on: without
    // them kubelet gives containerd no cgroup parent and every container lands in a shared
    // `/k8s.io` of containerd's, outside the node's cgroupRoot. The thresholds keep kubelet from evicting pods or deleting the imported images (which
    // no registry could give back) on a machine whose disk is simply shared.
    format!(
        "apiVersion: kubelet.config.k8s.io/v1beta1\n\
         kind: KubeletConfiguration\n\
         cgroupDriver: cgroupfs\n\
         cgroupsPerQOS: true\n\
         cgroupRoot: {root}\n\
         enforceNodeAllocatable: []\n\
         failSwapOn: false\n\
         authentication:\n  anonymous: {{enabled: true}}\n  webhook: {{enabled: false}}\n\
         authorization: {{mode: AlwaysAllow}}\n\
         readOnlyPort: 0\n\
         evictionHard: {{memory.available: \"1Mi\", nodefs.available: \"1%\", imagefs.available: \"1%\", nodefs.inodesFree: \"1%\"}}\n\
         imageGCHighThresholdPercent: 100\n\
         imageGCLowThresholdPercent: 99\n\
         clusterDomain: cluster.local\n\
         resolvConf: \"\"\n\
         serializeImagePulls: false\n",
        root = cgroup_root(names, node)
    )
}

fn running(owner: &Owner, pidfile: &Path) -> bool {
    procs::read_pidfile(pidfile).is_some_and(|pid| owner.owns(pid))
}

/// Makes `node` a kubelet node (keeping what runs): its view, its plugins and configs,
/// containerd with the images, kubelet and kube-proxy.
pub fn ensure(names: &Names, owner: &Owner, opts: &Options, node: &Node) -> Result<()> {
    let kube_bin = controlplane::find_bin(opts.kube_bin.as_deref())?;
    let images = opts
        .images
        .clone()
        .ok_or_else(|| LabError::invalid("--images", "", "a kubelet lab needs its images"))?;
    let view = nodeview::ensure(names, &node.name)?;
    for plugin in REFERENCE_PLUGINS {
        let to = view.cni_bin.join(plugin);
        if !to.exists() {
            let from = Path::new(REFERENCE_PLUGIN_DIR).join(plugin);
            std::fs::copy(&from, &to).map_err(LabError::io(format!(
                "copying {} (containernetworking-plugins) to {}",
                from.display(),
                to.display()
            )))?;
        }
    }
    let p = paths(names, &node.name);
    write_atomic(&p.containerd_config, containerd_config(names).as_bytes())?;
    write_atomic(
        &p.kubelet_config,
        kubelet_config(names, &node.name).as_bytes(),
    )?;
    let ns = names.node(&node.name);
    let place = || Place::Node {
        netns: &ns,
        mnt: &view.mnt,
    };
    let admin = controlplane::paths(names).admin_kubeconfig;

    if !running(owner, &p.containerd_pidfile) {
        let program = which("containerd")?;
        let mut child = procs::spawn(&Daemon {
            label: format!("containerd on {}", node.name),
            place: place(),
            program: &program,
            args: vec![format!("--config={}", p.containerd_config.display())],
            cwd: &p.dir,
            log: &p.containerd_log,
            pidfile: &p.containerd_pidfile,
        })?;
        let socket = view.in_run("containerd/containerd.sock");
        let deadline = Instant::now() + START_TIMEOUT;
        while UnixStream::connect(&socket).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(daemon_failed(
                    "containerd",
                    &node.name,
                    format!("exited during start ({status})"),
                    &p.containerd_log,
                ));
            }
            if Instant::now() >= deadline {
                return Err(daemon_failed(
                    "containerd",
                    &node.name,
                    format!("no socket after {}s", START_TIMEOUT.as_secs()),
                    &p.containerd_log,
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    import_images(&view.in_run("containerd/containerd.sock"), &images)?;

    // Dual-stack is alpha in 1.20: the gate on kubelet (both node IPs, both pod IPs in the
    // status) and kube-proxy (both families' Services).
    let dual = opts.ipv6 && node.address6.is_some();
    if !running(owner, &p.kubelet_pidfile) {
        make_cgroup_root(names, &node.name)?;
        let node_ip = match node.address6 {
            Some(v6) if dual => format!("--node-ip={},{v6}", node.address4),
            _ => format!("--node-ip={}", node.address4),
        };
        let mut args = vec![
            format!("--config={}", p.kubelet_config.display()),
            "--container-runtime=remote".to_owned(),
            format!("--container-runtime-endpoint=unix://{CONTAINERD_SOCKET}"),
            format!("--kubeconfig={}", admin.display()),
            "--root-dir=/var/lib/kubelet".to_owned(),
            format!("--hostname-override={}", node.name),
            node_ip,
            format!("--pod-infra-container-image={PAUSE_IMAGE}"),
            "--v=1".to_owned(),
        ];
        if dual {
            args.push(DUAL_STACK_GATE.to_owned());
        }
        procs::spawn(&Daemon {
            label: format!("kubelet on {}", node.name),
            place: place(),
            program: &kube_bin.join("kubelet"),
            args,
            cwd: &p.dir,
            log: &p.kubelet_log,
            pidfile: &p.kubelet_pidfile,
        })?;
    }
    if !running(owner, &p.proxy_pidfile) {
        let cluster = super::node::cluster_config(opts);
        let cidrs = ["cidrV4", "cidrV6"]
            .iter()
            .filter_map(|k| cluster[*k].as_str())
            .take(if dual { 2 } else { 1 })
            .collect::<Vec<_>>()
            .join(",");
        let mut args = vec![
            format!("--kubeconfig={}", admin.display()),
            format!("--hostname-override={}", node.name),
            format!("--cluster-cidr={cidrs}"),
            "--proxy-mode=iptables".to_owned(),
            // Leave the host's conntrack table size alone: it is the machine's, not the
            // node's.
            "--conntrack-max-per-core=0".to_owned(),
            "--metrics-bind-address=127.0.0.1:10249".to_owned(),
            "--healthz-bind-address=127.0.0.1:10256".to_owned(),
            "--v=1".to_owned(),
        ];
        if dual {
            args.push(DUAL_STACK_GATE.to_owned());
        }
        procs::spawn(&Daemon {
            label: format!("kube-proxy on {}", node.name),
            place: place(),
            program: &kube_bin.join("kube-proxy"),
            args,
            cwd: &p.dir,
            log: &p.proxy_log,
            pidfile: &p.proxy_pidfile,
        })?;
    }
    Ok(())
}

fn daemon_failed(what: &str, node: &str, reason: String, log: &Path) -> LabError {
    LabError::Daemon {
        daemon: format!("{what} on {node}"),
        reason,
        log: log.to_owned(),
        tail: procs::log_tail(log),
    }
}

fn which(tool: &'static str) -> Result<PathBuf> {
    super::up::require_tool(tool, "apt-get install containerd")
}

/// The archives a node imports: those of `IMAGES` first, then every other `*.oci.tar` of
/// `dir` in name order, so that tests bring images of their own (Kubernetes' e2e tests
/// need agnhost) by putting archives next to the required ones.
fn image_archives(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut extra = Vec::new();
    let entries =
        std::fs::read_dir(dir).map_err(LabError::io(format!("listing {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(LabError::io(format!("listing {}", dir.display())))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".oci.tar") && !IMAGES.contains(&name.as_str()) {
            extra.push(entry.path());
        }
    }
    extra.sort();
    Ok(IMAGES.iter().map(|f| dir.join(f)).chain(extra).collect())
}

/// `ctr images import` of every archive of `image_archives` into the node's containerd
/// (CRI's namespace, k8s.io), through its socket as the host sees it. A second import of
/// the same archive changes nothing.
fn import_images(socket: &Path, dir: &Path) -> Result<()> {
    let ctr = which("ctr")?;
    for archive in image_archives(dir)? {
        let out = Command::new(&ctr)
            .arg(format!("--address={}", socket.display()))
            .args(["--namespace=k8s.io", "images", "import"])
            .arg(&archive)
            .stdin(Stdio::null())
            .output()
            .map_err(LabError::io("running ctr"))?;
        if !out.status.success() {
            return Err(LabError::Tool {
                what: format!("ctr images import {}", archive.display()),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
    }
    Ok(())
}

/// The pidfiles of every daemon of `node`.
pub fn pidfiles(names: &Names, node: &str) -> [PathBuf; 3] {
    let p = paths(names, node);
    [p.containerd_pidfile, p.kubelet_pidfile, p.proxy_pidfile]
}

/// kubelet refuses a cgroupRoot that does not exist: made in every hierarchy it may use.
fn make_cgroup_root(names: &Names, node: &str) -> Result<()> {
    let root = cgroup_root(names, node);
    let hierarchies =
        std::fs::read_dir("/sys/fs/cgroup").map_err(LabError::io("listing /sys/fs/cgroup"))?;
    for h in hierarchies.flatten() {
        // Only mounted hierarchies have this file (cgroup v1 and v2 alike).
        if !h.path().join("cgroup.procs").exists() {
            continue;
        }
        let dir = h.path().join(root.trim_start_matches('/'));
        std::fs::create_dir_all(&dir)
            .map_err(LabError::io(format!("creating {}", dir.display())))?;
    }
    Ok(())
}

/// Whether `pid` runs in one of `node`'s pods (its cgroup is below the node's cgroupRoot).
pub fn in_node_pods(names: &Names, node: &str, pid: u32) -> bool {
    let root = format!("{}/", cgroup_root(names, node));
    std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|groups| {
        groups
            .lines()
            .filter_map(|l| l.splitn(3, ':').nth(2))
            .any(|path| path.starts_with(&root))
    })
}

/// Removes the cgroup directories of the lab's kubelets (of `node` only, when named) in
/// every hierarchy, deepest first (a cgroup directory goes only once it has no children
/// and no processes). Returns the paths that would not go.
pub fn remove_cgroups(names: &Names, node: Option<&str>) -> Vec<PathBuf> {
    let prefix = match node {
        Some(n) => cgroup_root(names, n).trim_start_matches('/').to_owned(),
        None => procs::cgroup_prefix(names.lab()),
    };
    let mut left = Vec::new();
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return left;
    };
    for h in hierarchies.flatten() {
        let Ok(entries) = std::fs::read_dir(h.path()) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if (node.is_some() && name == prefix) || (node.is_none() && name.starts_with(&prefix)) {
                remove_cgroup_tree(&e.path(), &mut left);
            }
        }
    }
    left
}

fn remove_cgroup_tree(dir: &Path, left: &mut Vec<PathBuf>) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path(), left);
            }
        }
    }
    // A cgroup's control files are not removable: rmdir removes the directory whole.
    if std::fs::remove_dir(dir).is_err() && dir.exists() {
        left.push(dir.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_required_archives_come_first_then_the_others_by_name() {
        let dir = weft_testkit::TempDir::new("lab-images");
        for file in [
            "probe.oci.tar",
            "zz.oci.tar",
            "weft.oci.tar",
            "agnhost.oci.tar",
            "pause.oci.tar",
            "notes.txt",
            "half.oci.tar.tmp",
        ] {
            std::fs::write(dir.path().join(file), b"").expect("write");
        }
        let names: Vec<String> = image_archives(dir.path())
            .expect("list")
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "weft.oci.tar",
                "pause.oci.tar",
                "probe.oci.tar",
                "agnhost.oci.tar",
                "zz.oci.tar"
            ]
        );
    }
}
