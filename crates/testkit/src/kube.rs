//! A real Kubernetes control plane for one test ([`KubeApi`]): a throw-away etcd, the
//! project's own kube-apiserver 1.20 build, and on request kube-controller-manager (node CIDR
//! allocation, garbage collection of owned objects). Never a fake: what weft does against it
//! is what it does on a cluster.
//!
//! Identities: the API server reads a static token file, so every identity a test needs is
//! made at start ([`KubeOptions::users`]). `admin` is in `system:masters`; the user
//! `system:serviceaccount:<ns>:<name>` authenticates exactly as that ServiceAccount, which is
//! how weftd is run with only the RBAC of its manifest.
//!
//! The binaries come from `$WEFT_KUBE_BIN` (scripts/test.sh builds and exports it through
//! scripts/lib/kube.sh), else from the newest cache directory under
//! `/var/cache/weft/kubernetes/`. Processes are killed when the handle drops, and (through
//! `PR_SET_PDEATHSIG`) when the thread that started them ends: start the control plane on
//! the test's own thread (in an async test, inside `block_in_place`), never on a pool
//! thread that the runtime may retire.

use std::fs::File;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use weft_kubeplane::{ApiServer, ControllerManager, Identity, NodeCidrs, PkiOptions, pki};

use crate::etcd::EtcdServer;
use crate::temp_dir;

const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the project's Kubernetes build is.
pub fn bin_dir() -> io::Result<PathBuf> {
    weft_kubeplane::bin_dir(&["kube-apiserver", "kubectl"]).map_err(|looked| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "no Kubernetes binaries {looked}: run scripts/kube-binaries.sh (scripts/test.sh \
                 does) or set WEFT_KUBE_BIN"
            ),
        )
    })
}

/// How to start a control plane.
#[derive(Debug, Clone)]
pub struct KubeOptions {
    /// Address the API server binds and advertises (default 127.0.0.1). A lab whose nodes
    /// live in network namespaces passes an address they can reach.
    pub address: IpAddr,
    /// Identities besides `admin`: (user name, groups).
    pub users: Vec<(String, Vec<String>)>,
    /// Start kube-controller-manager, allocating node CIDRs from this range with this mask
    /// when given.
    pub controller_manager: Option<ControllerOptions>,
}

#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// `--cluster-cidr` and `--node-cidr-mask-size` (IPv4 only), or none: no allocation.
    pub node_cidrs: Option<(String, u8)>,
}

impl Default for KubeOptions {
    fn default() -> KubeOptions {
        KubeOptions {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            users: Vec::new(),
            controller_manager: None,
        }
    }
}

/// A ServiceAccount's user name and groups, as the API server would authenticate its token.
pub fn service_account(namespace: &str, name: &str) -> (String, Vec<String>) {
    let id = Identity::service_account(namespace, name);
    (id.user, id.groups)
}

/// etcd + kube-apiserver (+ kube-controller-manager), all killed on drop.
pub struct KubeApi {
    dir: PathBuf,
    bin: PathBuf,
    etcd: EtcdServer,
    /// What `weft_kubeplane::make_pki` wrote, and the token file.
    pki: PathBuf,
    address: IpAddr,
    port: u16,
    apiserver: Option<Child>,
    controller: Option<Child>,
    controller_opts: Option<ControllerOptions>,
    users: Vec<String>,
}

fn free_port(addr: IpAddr) -> io::Result<u16> {
    Ok(TcpListener::bind((addr, 0))?.local_addr()?.port())
}

/// Dies with the thread that spawned it, so a killed test leaves no server behind.
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn token_of(user: &str) -> String {
    // Tokens only need to differ per user within one server; the server is private to the
    // test and listens on loopback or the test's own namespace.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in user.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("weft-test-{h:016x}")
}

impl KubeApi {
    pub fn start(opts: KubeOptions) -> io::Result<KubeApi> {
        let bin = bin_dir()?;
        let dir = temp_dir("kube")?;
        let etcd = EtcdServer::start()?;
        let pki = dir.join("pki");
        std::fs::create_dir_all(&pki)?;
        weft_kubeplane::make_pki(
            &pki,
            &PkiOptions {
                ca_name: "weft-test-ca".into(),
                ips: vec![opts.address],
                in_cluster: false,
                days: 2,
            },
        )?;
        let mut ids = vec![Identity::admin()];
        ids.extend(opts.users.iter().map(|(user, groups)| Identity {
            user: user.clone(),
            groups: groups.clone(),
        }));
        let mut tokens = File::create(pki.join(pki::TOKENS))?;
        for id in &ids {
            tokens.write_all(id.token_line(&token_of(&id.user)).as_bytes())?;
        }
        drop(tokens);
        let users = ids.into_iter().map(|id| id.user).collect();
        let mut api = KubeApi {
            port: 0,
            bin,
            etcd,
            pki,
            address: opts.address,
            apiserver: None,
            controller: None,
            controller_opts: opts.controller_manager.clone(),
            users,
            dir,
        };
        let mut last = None;
        // A port picked as free can be taken by a parallel test before the server binds it.
        for _ in 0..3 {
            api.port = free_port(api.address)?;
            for u in api.users.clone() {
                api.write_kubeconfig(&u)?;
            }
            match api.start_apiserver() {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        if let Some(e) = last {
            return Err(e);
        }
        if api.controller_opts.is_some() {
            api.start_controller_manager()?;
        }
        Ok(api)
    }

    /// `https://<address>:<port>`.
    pub fn url(&self) -> String {
        match self.address {
            IpAddr::V4(a) => format!("https://{a}:{}", self.port),
            IpAddr::V6(a) => format!("https://[{a}]:{}", self.port),
        }
    }

    /// The CA that signed the API server's certificate.
    pub fn ca(&self) -> PathBuf {
        self.pki.join(pki::CA)
    }

    /// The etcd behind the API server, for a test that changes it behind the server's back.
    pub fn etcd_endpoint(&self) -> String {
        self.etcd.endpoint()
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// A kubeconfig (kubectl's format) for `user`: `admin` or one of [`KubeOptions::users`].
    pub fn kubeconfig(&self, user: &str) -> PathBuf {
        self.dir
            .join(format!("kubeconfig-{}", user.replace(':', "_")))
    }

    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.kubeconfig("admin")
    }

    /// The bearer token of `user`.
    pub fn token(&self, user: &str) -> String {
        token_of(user)
    }

    fn write_kubeconfig(&self, user: &str) -> io::Result<()> {
        let text =
            weft_kubeplane::kubeconfig("weft-test", &self.url(), &self.ca(), user, &token_of(user));
        std::fs::write(self.kubeconfig(user), text)
    }

    fn log(&self, name: &str) -> io::Result<File> {
        File::options()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))
    }

    fn start_apiserver(&mut self) -> io::Result<()> {
        let log = self.log("kube-apiserver")?;
        let etcd = self.etcd.endpoint();
        let args = ApiServer {
            etcd: &etcd,
            pki: &self.pki,
            cert_dir: &self.dir.join("certs"),
            address: self.address,
            port: self.port,
            service_ranges: weft_kubeplane::SERVICE_RANGE,
            dual_stack: false,
        }
        .args();
        let mut cmd = Command::new(self.bin.join("kube-apiserver"));
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("starting kube-apiserver: {e}")))?;
        self.apiserver = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let out = self.kubectl(&["get", "--raw", "/readyz"]);
            if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok" {
                return Ok(());
            }
            let exited = match &mut self.apiserver {
                Some(c) => c.try_wait()?.is_some(),
                None => true,
            };
            if exited || Instant::now() > deadline {
                self.kill_apiserver();
                return Err(io::Error::other(format!(
                    "kube-apiserver on {} did not become ready; the end of its log:\n{}",
                    self.url(),
                    self.log_tail("kube-apiserver")
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn start_controller_manager(&mut self) -> io::Result<()> {
        let opts = self
            .controller_opts
            .clone()
            .unwrap_or(ControllerOptions { node_cidrs: None });
        let log = self.log("kube-controller-manager")?;
        let kubeconfig = self.admin_kubeconfig();
        let args = ControllerManager {
            kubeconfig: &kubeconfig,
            pki: &self.pki,
            address: self.address,
            port: free_port(self.address)?,
            service_ranges: weft_kubeplane::SERVICE_RANGE,
            node_cidrs: opts.node_cidrs.map(|v4| NodeCidrs { v4, v6: None }),
            without_node_lifecycle: false,
        }
        .args();
        let mut cmd = Command::new(self.bin.join("kube-controller-manager"));
        cmd.args(args);
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        die_with_parent(&mut cmd);
        self.controller = Some(cmd.spawn().map_err(|e| {
            io::Error::new(e.kind(), format!("starting kube-controller-manager: {e}"))
        })?);
        Ok(())
    }

    /// `kubectl --kubeconfig <admin> args…`, its output whatever the status.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_as("admin", args, None)
    }

    /// `kubectl` as `user`, with `stdin` piped in when given.
    pub fn kubectl_as(&self, user: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(self.bin.join("kubectl"));
        cmd.arg(format!("--kubeconfig={}", self.kubeconfig(user).display()))
            .arg("--request-timeout=10s")
            .args(args);
        match stdin {
            Some(s) => crate::output_with_stdin(cmd, s),
            None => cmd
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|e| panic!("running kubectl: {e}")),
        }
    }

    /// `kubectl apply -f -` of `yaml` as admin, which must succeed.
    #[track_caller]
    pub fn apply(&self, yaml: &str) {
        let out = self.kubectl_as("admin", &["apply", "-f", "-"], Some(yaml));
        assert!(
            out.status.success(),
            "kubectl apply failed: {}\n{yaml}",
            crate::text(&out)
        );
    }

    /// Applies (as admin) the documents of the multi-document YAML file `path` whose `kind`
    /// is one of `kinds` (all of them when `kinds` is empty), and waits until every
    /// CustomResourceDefinition among them is Established: the tests install exactly what
    /// the project ships, not a copy of it.
    #[track_caller]
    pub fn apply_manifest(&self, path: &Path, kinds: &[&str]) {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let kind_of = |doc: &str| {
            doc.lines()
                .find_map(|l| l.strip_prefix("kind:"))
                .map(|k| k.trim().to_string())
                .unwrap_or_default()
        };
        let docs: Vec<&str> = text
            .split("\n---")
            .filter(|d| {
                let k = kind_of(d);
                !k.is_empty() && (kinds.is_empty() || kinds.contains(&k.as_str()))
            })
            .collect();
        assert!(!docs.is_empty(), "no {kinds:?} in {}", path.display());
        self.apply(&docs.join("\n---\n"));
        for d in docs
            .iter()
            .filter(|d| kind_of(d) == "CustomResourceDefinition")
        {
            let name = d
                .lines()
                .skip_while(|l| !l.starts_with("metadata:"))
                .find_map(|l| l.trim().strip_prefix("name:"))
                .map(|n| n.trim().to_string())
                .unwrap_or_default();
            self.kubectl_ok(&[
                "wait",
                "--for=condition=Established",
                &format!("crd/{name}"),
                "--timeout=30s",
            ]);
        }
    }

    /// `kubectl args…` as admin, which must succeed; its stdout.
    #[track_caller]
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {}: {}",
            args.join(" "),
            crate::text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Kills the API server (SIGKILL); etcd and the controller manager keep running.
    pub fn stop_apiserver(&mut self) {
        self.kill_apiserver();
    }

    /// Starts the API server again on the same address and port, and waits until ready.
    pub fn start_apiserver_again(&mut self) -> io::Result<()> {
        self.kill_apiserver();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.start_apiserver() {
                Ok(()) => return Ok(()),
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200))
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn kill_apiserver(&mut self) {
        if let Some(mut c) = self.apiserver.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The last 40 lines of a component's log (`kube-apiserver`, `kube-controller-manager`).
    pub fn log_tail(&self, component: &str) -> String {
        let text =
            std::fs::read_to_string(self.dir.join(format!("{component}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        if let Some(mut c) = self.controller.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.kill_apiserver();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
