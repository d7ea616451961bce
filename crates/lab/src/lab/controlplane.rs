//! The lab's Kubernetes control plane (`lab up --datastore kubernetes`): kube-apiserver and
//! kube-controller-manager next to the lab's etcd, inside the router namespace, the API
//! server listening on segment 0's router address (where every node reaches etcd today);
//! then weft's own objects in it: deploy/weft.yaml's namespace `weft-system`, WeftBlock CRD,
//! ServiceAccount and RBAC, and the ConfigMap `weft-config` rendered from the lab's cluster
//! config. weftd authenticates as that ServiceAccount: it has exactly the manifest's RBAC.
//!
//! Owns `<state>/kube/`: `pki/` (a CA and the server's certificate, made with openssl, the
//! service-account key pair and the bearer tokens: made once, atomically, and kept while the
//! lab lives), the kubeconfigs (`admin.kubeconfig` for people and the lab, `weftd.kubeconfig`
//! for the nodes' weftd), the daemons' logs and pidfiles.
//!
//! (`crate::kubeplane` is the benchmarks' control plane: processes that die with the thread
//! that started them, and no controller manager; a lab's must outlive `lab up`. What both
//! run — flags, PKI, kubeconfigs — is weft-kubeplane's, shared with the tests too.)
//!
//! With `--kubelet` it also runs kube-scheduler, and the nodes run real kubelets
//! (`kubelet`): the node lifecycle controller is then on, the API server reaches kubelets
//! by their InternalIP (`kubectl exec/logs`), and `install_weft` applies the manifest's
//! DaemonSet, the one object the lab without kubelets leaves out.
//!
//! Must not: listen anywhere but inside the router namespace, or run a scheduler without
//! kubelets: without them the lab plays the kubelet (`kubeapi`), and pods are placed by
//! name.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use weft_kubeplane::{ApiServer, ControllerManager, Identity, NodeCidrs, PkiOptions, pki};
use weft_store::ClusterConfig;
use weft_store::kube::{IpamMode, KubeConfig, configmap};

use super::error::{LabError, Result};
use super::names::Names;
use super::node;
use super::procs::{self, Daemon, Owner};
use super::state::{Ipam, Options, write_atomic};
use super::topology::{ETCD_ADDRESS, ETCD_PORT};

/// The API server's address: the router's on segment 0, like etcd's.
pub const API_ADDRESS: std::net::Ipv4Addr = ETCD_ADDRESS;
pub const API_PORT: u16 = 6443;
/// kube-controller-manager's own (health) port, on the router's loopback.
const CONTROLLER_PORT: u16 = 10257;
/// A dual-stack kubelet lab's IPv6 Service range (documentation space too, apart from the
/// outside's 2001:db8:ff::/64).
const SERVICE_RANGE_V6: &str = "2001:db8:5e7::/112";

/// The Service ranges: IPv6 too in a dual-stack kubelet lab (only kube-proxy gives them a
/// meaning, and only a kubelet lab runs one).
fn service_ranges(opts: &Options) -> String {
    if opts.kubelet && opts.ipv6 {
        format!("{},{SERVICE_RANGE_V6}", weft_kubeplane::SERVICE_RANGE)
    } else {
        weft_kubeplane::SERVICE_RANGE.to_owned()
    }
}
/// kube-scheduler's own (health) port, on the router's loopback.
const SCHEDULER_PORT: u16 = 10259;
/// How long `install_weft` waits for weft's pods and the nodes to be Ready.
const INSTALL_TIMEOUT: &str = "180s";
/// weft's objects, namespace and ConfigMap name (what weftd is told with --kube-namespace).
pub const WEFT_NAMESPACE: &str = "weft-system";
/// The project's manifest: weft's namespace, the WeftBlock CRD, weftd's ServiceAccount and
/// RBAC, which the lab applies as they are (and its ConfigMap and DaemonSet, which it
/// does not: the lab's ConfigMap is its own cluster config, and the lab runs weftd itself,
/// where no kubelet would run a DaemonSet's pods).
const MANIFEST: &str = include_str!("../../../../deploy/weft.yaml");
const MANIFEST_SKIPPED: [&str; 2] = ["ConfigMap", "DaemonSet"];
const WEFTBLOCK_CRD_NAME: &str = "weftblocks.weft.dev";
/// The binaries the lab runs.
const KUBE_BINARIES: [&str; 3] = ["kube-apiserver", "kube-controller-manager", "kubectl"];
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a kubectl call may wait for the API server.
const KUBECTL_TIMEOUT: &str = "--request-timeout=10s";

/// The identities in the API server's token file: the lab's (and people's) admin, and the
/// one every node's weftd uses: the manifest's ServiceAccount, as the API server
/// authenticates its token, so weftd has exactly the manifest's RBAC.
fn identities() -> [Identity; 2] {
    [
        Identity::admin(),
        Identity::service_account(WEFT_NAMESPACE, "weft"),
    ]
}

pub struct Paths {
    pub dir: PathBuf,
    pub pki: PathBuf,
    pub admin_kubeconfig: PathBuf,
    pub weftd_kubeconfig: PathBuf,
    apiserver_log: PathBuf,
    pub apiserver_pidfile: PathBuf,
    pub controller_log: PathBuf,
    pub controller_pidfile: PathBuf,
    pub scheduler_log: PathBuf,
    pub scheduler_pidfile: PathBuf,
}

impl Paths {
    fn ca(&self) -> PathBuf {
        self.pki.join(pki::CA)
    }
}

pub fn paths(names: &Names) -> Paths {
    let dir = names.kube_dir();
    Paths {
        pki: dir.join("pki"),
        admin_kubeconfig: names.kube_admin_kubeconfig(),
        weftd_kubeconfig: dir.join("weftd.kubeconfig"),
        apiserver_log: dir.join("kube-apiserver.log"),
        apiserver_pidfile: dir.join("kube-apiserver.pid"),
        controller_log: dir.join("kube-controller-manager.log"),
        controller_pidfile: dir.join("kube-controller-manager.pid"),
        scheduler_log: dir.join("kube-scheduler.log"),
        scheduler_pidfile: dir.join("kube-scheduler.pid"),
        dir,
    }
}

fn has_binaries(dir: &Path) -> bool {
    KUBE_BINARIES.iter().all(|b| dir.join(b).is_file())
}

/// The Kubernetes binaries: `$WEFT_KUBE_BIN`, else `recorded` (what the lab's `up` used),
/// else the newest build in the cache.
pub fn find_bin(recorded: Option<&Path>) -> Result<PathBuf> {
    if std::env::var_os("WEFT_KUBE_BIN").is_none()
        && let Some(dir) = recorded.filter(|d| has_binaries(d))
    {
        return Ok(dir.to_owned());
    }
    weft_kubeplane::bin_dir(&KUBE_BINARIES).map_err(|looked| LabError::MissingKube { looked })
}

/// The API server's URL as the nodes (and the router) reach it.
pub fn url() -> String {
    format!("https://{API_ADDRESS}:{API_PORT}")
}

/// Makes `pki/` unless it is complete: CA, server certificate for the API server's address
/// (and loopback), service-account keys, tokens. Built in a scratch directory and renamed
/// into place, so a crash leaves either nothing or all of it.
fn ensure_pki(names: &Names, p: &Paths) -> Result<()> {
    if p.pki.join(pki::TOKENS).is_file() {
        return Ok(());
    }
    std::fs::create_dir_all(&p.dir)
        .map_err(LabError::io(format!("creating {}", p.dir.display())))?;
    let tmp = p.dir.join("pki.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(LabError::io(format!("creating {}", tmp.display())))?;
    weft_kubeplane::make_pki(
        &tmp,
        &PkiOptions {
            ca_name: format!("weft-lab-{}-ca", names.lab()),
            ips: vec![API_ADDRESS.into()],
            // weftd's pod reaches the API server at the `kubernetes` Service.
            in_cluster: true,
            days: 3650,
        },
    )
    .map_err(LabError::io("making the control plane's PKI"))?;
    let mut csv = String::new();
    for id in identities() {
        let t = weft_kubeplane::random_token().map_err(LabError::io("reading /dev/urandom"))?;
        std::fs::write(tmp.join(token_file(&id)), &t).map_err(LabError::io("writing a token"))?;
        csv.push_str(&id.token_line(&t));
    }
    std::fs::write(tmp.join(pki::TOKENS), csv).map_err(LabError::io("writing tokens.csv"))?;
    let _ = std::fs::remove_dir_all(&p.pki);
    std::fs::rename(&tmp, &p.pki).map_err(LabError::io(format!("renaming {}", tmp.display())))
}

fn token_file(id: &Identity) -> String {
    format!("{}.token", id.file_stem())
}

/// Writes `id`'s kubeconfig (kubectl's format) at `path`.
fn write_kubeconfig(p: &Paths, id: &Identity, path: &Path) -> Result<()> {
    let token_path = p.pki.join(token_file(id));
    let token = std::fs::read_to_string(&token_path)
        .map_err(LabError::io(format!("reading {}", token_path.display())))?;
    let text = weft_kubeplane::kubeconfig("weft-lab", &url(), &p.ca(), &id.user, token.trim());
    write_atomic(path, text.as_bytes())?;
    Ok(())
}

/// `kubectl` with the admin kubeconfig, run inside the router namespace (the only place
/// the API server's address is reachable from).
pub fn kubectl(names: &Names, bin: &Path) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &names.underlay()])
        .arg(bin.join("kubectl"))
        .arg(format!(
            "--kubeconfig={}",
            paths(names).admin_kubeconfig.display()
        ));
    cmd
}

/// `kubectl args…` (stdin fed from `input`), which must succeed; its stdout.
pub fn kubectl_ok(names: &Names, bin: &Path, args: &[&str], input: Option<&str>) -> Result<String> {
    let out = run_kubectl(names, bin, args, input)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(LabError::Tool {
            what: format!("kubectl {}", args.join(" ")),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

fn run_kubectl(names: &Names, bin: &Path, args: &[&str], input: Option<&str>) -> Result<Output> {
    let mut cmd = kubectl(names, bin);
    cmd.arg(KUBECTL_TIMEOUT)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd.spawn().map_err(LabError::io("running kubectl"))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(LabError::io("writing to kubectl"))?;
    }
    child
        .wait_with_output()
        .map_err(LabError::io("running kubectl"))
}

fn running(owner: &Owner, pidfile: &Path) -> Option<u32> {
    procs::read_pidfile(pidfile).filter(|pid| owner.owns(*pid))
}

/// Makes the control plane run (keeping what runs), and weft's objects exist in it.
pub fn ensure(names: &Names, owner: &Owner, opts: &Options, bin: &Path) -> Result<()> {
    let p = paths(names);
    ensure_pki(names, &p)?;
    std::fs::create_dir_all(p.dir.join("apiserver-certs"))
        .map_err(LabError::io(format!("creating {}", p.dir.display())))?;
    let [admin, weftd] = identities();
    write_kubeconfig(&p, &admin, &p.admin_kubeconfig)?;
    write_kubeconfig(&p, &weftd, &p.weftd_kubeconfig)?;

    let mut apiserver = match running(owner, &p.apiserver_pidfile) {
        Some(_) => None,
        None => Some(start_apiserver(names, &p, opts, bin)?),
    };
    wait_api_ready(names, &p, bin, apiserver.as_mut())?;
    let mut controller = match running(owner, &p.controller_pidfile) {
        Some(_) => None,
        None => Some(start_controller_manager(names, &p, opts, bin)?),
    };
    apply_weft_objects(names, opts, bin)?;
    if opts.kubelet && running(owner, &p.scheduler_pidfile).is_none() {
        start_scheduler(names, &p, bin)?;
    }
    // Not waited for: its controllers start over the next seconds (node CIDRs ~10 s in,
    // 1.20's allocator sleeps before it lists the nodes), while the nodes and their weftd
    // start; what needs one waits for its work (a namespace's `default` ServiceAccount
    // before a pod, a Node's podCIDRs in weftd). Only a start that failed at once is told.
    if let Some(c) = controller.as_mut()
        && let Ok(Some(status)) = c.try_wait()
    {
        return Err(LabError::Daemon {
            daemon: "kube-controller-manager".to_owned(),
            reason: format!("exited during start ({status})"),
            tail: procs::log_tail(&p.controller_log),
            log: p.controller_log,
        });
    }
    Ok(())
}

fn start_apiserver(names: &Names, p: &Paths, opts: &Options, bin: &Path) -> Result<Child> {
    let etcd = format!("http://127.0.0.1:{ETCD_PORT}");
    let args = ApiServer {
        etcd: &etcd,
        pki: &p.pki,
        cert_dir: &p.dir.join("apiserver-certs"),
        address: API_ADDRESS.into(),
        port: API_PORT,
        service_ranges: &service_ranges(opts),
        dual_stack: opts.ipv6,
    }
    .args();
    spawn(
        names,
        "kube-apiserver",
        bin,
        args,
        &p.apiserver_log,
        &p.apiserver_pidfile,
    )
}

fn start_controller_manager(names: &Names, p: &Paths, opts: &Options, bin: &Path) -> Result<Child> {
    let node_cidrs = (opts.ipam == Ipam::Kubernetes).then(|| {
        let cfg = node::cluster_config(opts);
        let range = |cidr: &str, size: &str| {
            let mask = cfg[size].as_u64().and_then(|m| u8::try_from(m).ok());
            Some((cfg[cidr].as_str()?.to_owned(), mask.unwrap_or_default()))
        };
        NodeCidrs {
            v4: range("cidrV4", "blockSizeV4").unwrap_or_default(),
            v6: range("cidrV6", "blockSizeV6"),
        }
    });
    let args = ControllerManager {
        kubeconfig: &p.admin_kubeconfig,
        pki: &p.pki,
        address: std::net::Ipv4Addr::LOCALHOST.into(),
        port: CONTROLLER_PORT,
        service_ranges: &service_ranges(opts),
        node_cidrs,
        // Without kubelets no one posts a lab Node's status; with them the node lifecycle
        // controller is what lifts a new node's not-ready taint.
        without_node_lifecycle: !opts.kubelet,
    }
    .args();
    spawn(
        names,
        "kube-controller-manager",
        bin,
        args,
        &p.controller_log,
        &p.controller_pidfile,
    )
}

fn start_scheduler(names: &Names, p: &Paths, bin: &Path) -> Result<Child> {
    let args = vec![
        format!("--kubeconfig={}", p.admin_kubeconfig.display()),
        "--leader-elect=false".to_owned(),
        "--port=0".to_owned(),
        format!("--secure-port={SCHEDULER_PORT}"),
        "--bind-address=127.0.0.1".to_owned(),
        "--v=1".to_owned(),
    ];
    spawn(
        names,
        "kube-scheduler",
        bin,
        args,
        &p.scheduler_log,
        &p.scheduler_pidfile,
    )
}

/// Installs weft the way an operator does, `kubectl apply -f deploy/weft.yaml`, with the
/// lab's cluster config as the ConfigMap (applied with the rest of weft's objects, before
/// any node), and waits until weft's DaemonSet is rolled out and every node is Ready: a
/// node turns Ready once weftd wrote its conflist.
pub fn install_weft(names: &Names, bin: &Path, nodes: &[String]) -> Result<()> {
    // Every kubelet registered first: the DaemonSet's rollout counts the nodes there are.
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let listed = kubectl_ok(names, bin, &["get", "nodes", "-o", "name"], None)?;
        let missing: Vec<&String> = nodes
            .iter()
            .filter(|n| !listed.lines().any(|l| l == format!("node/{n}")))
            .collect();
        if missing.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            return Err(LabError::NodeNotReady {
                node: missing
                    .iter()
                    .map(|n| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                reason: format!(
                    "its kubelet did not register within {}s (see nodes/<node>/kubelet.log)",
                    READY_TIMEOUT.as_secs()
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let manifest = manifest_without(MANIFEST, &["ConfigMap"]);
    kubectl_ok(names, bin, &["apply", "-f", "-"], Some(&manifest))?;
    let timeout = format!("--timeout={INSTALL_TIMEOUT}");
    for wait in [
        vec![
            "-n",
            WEFT_NAMESPACE,
            "rollout",
            "status",
            "daemonset/weft",
            &timeout,
        ],
        vec!["wait", "--for=condition=Ready", "node", "--all", &timeout],
    ] {
        // kubectl's own --request-timeout would cut these long waits short.
        let out = kubectl(names, bin)
            .args(&wait)
            .stdin(Stdio::null())
            .output()
            .map_err(LabError::io("running kubectl"))?;
        if !out.status.success() {
            return Err(LabError::Tool {
                what: format!("kubectl {}", wait.join(" ")),
                detail: format!(
                    "{} {}",
                    String::from_utf8_lossy(&out.stdout).trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
    }
    Ok(())
}

fn spawn(
    names: &Names,
    program: &str,
    bin: &Path,
    args: Vec<String>,
    log: &Path,
    pidfile: &Path,
) -> Result<Child> {
    let ul = names.underlay();
    let dir = paths(names).dir;
    let program_path = bin.join(program);
    procs::spawn(&Daemon {
        label: program.to_owned(),
        place: procs::Place::Netns(&ul),
        program: &program_path,
        args,
        cwd: &dir,
        log,
        pidfile,
    })
}

fn wait_api_ready(names: &Names, p: &Paths, bin: &Path, child: Option<&mut Child>) -> Result<()> {
    wait_for("kube-apiserver", &p.apiserver_log, child, || {
        kubectl_ok(names, bin, &["get", "--raw", "/readyz"], None).is_ok_and(|o| o.trim() == "ok")
    })
}

/// Polls `ready` until it holds; with the child at hand, its early exit ends the wait with
/// its log's last line.
fn wait_for(
    daemon: &str,
    log: &Path,
    mut child: Option<&mut Child>,
    mut ready: impl FnMut() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let fail = |reason: String| LabError::Daemon {
        daemon: daemon.to_owned(),
        reason,
        log: log.to_owned(),
        tail: procs::log_tail(log),
    };
    loop {
        if ready() {
            return Ok(());
        }
        if let Some(c) = child.as_deref_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            return Err(fail(format!("exited during start ({status})")));
        }
        if Instant::now() >= deadline {
            return Err(fail(format!(
                "not ready after {}s",
                READY_TIMEOUT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The ConfigMap `weft-config` for the lab's cluster config and IPAM mode.
fn config_map(opts: &Options) -> Result<serde_json::Value> {
    let cluster = ClusterConfig::from_json(&node::cluster_config(opts).to_string())
        .map_err(|e| LabError::invalid("cluster config", "", e.to_string()))?;
    let data = configmap::render(&KubeConfig {
        cluster,
        ipam: match opts.ipam {
            Ipam::Weft => IpamMode::Weft,
            Ipam::Kubernetes => IpamMode::Kubernetes,
        },
        mtu: None,
    });
    Ok(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": weft_store::kube::CONFIG_MAP, "namespace": WEFT_NAMESPACE},
        "data": data,
    }))
}

/// The documents of a YAML stream whose top-level `kind:` is not one of `skipped`.
fn manifest_without(yaml: &str, skipped: &[&str]) -> String {
    let mut docs: Vec<String> = vec![String::new()];
    for line in yaml.lines() {
        if line == "---" {
            docs.push(String::new());
        } else if let Some(doc) = docs.last_mut() {
            doc.push_str(line);
            doc.push('\n');
        }
    }
    docs.retain(|d| {
        !d.lines()
            .any(|l| skipped.iter().any(|k| l == format!("kind: {k}")))
    });
    docs.join("---\n")
}

/// The manifest's objects and the lab's ConfigMap, applied (again: a no-op when
/// unchanged), then the CRD waited for until the API serves it.
fn apply_weft_objects(names: &Names, opts: &Options, bin: &Path) -> Result<()> {
    // JSON documents are YAML: one stream, one kubectl.
    let manifest = format!(
        "{}---\n{}\n",
        manifest_without(MANIFEST, &MANIFEST_SKIPPED),
        config_map(opts)?
    );
    write_atomic(
        &paths(names).dir.join("weft-objects.yaml"),
        manifest.as_bytes(),
    )?;
    kubectl_ok(names, bin, &["apply", "-f", "-"], Some(&manifest))?;
    let crd = format!("crd/{WEFTBLOCK_CRD_NAME}");
    kubectl_ok(
        names,
        bin,
        &["wait", "--for=condition=Established", "--timeout=30s", &crd],
        None,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_loses_only_its_config_map_and_daemon_set() {
        let kept = manifest_without(MANIFEST, &MANIFEST_SKIPPED);
        for kind in [
            "Namespace",
            "CustomResourceDefinition",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
        ] {
            assert!(kept.contains(&format!("\nkind: {kind}\n")), "{kind}");
        }
        for kind in MANIFEST_SKIPPED {
            assert!(!kept.contains(&format!("kind: {kind}\n")), "{kind}");
        }
        assert!(kept.contains(&format!("name: {WEFTBLOCK_CRD_NAME}")));
    }
}
