//! A real Kubernetes control plane inside one network namespace: a private etcd and the
//! project's kube-apiserver 1.20 build, both listening on an address of that namespace (its
//! loopback by default), with a CA and serving certificate made by `openssl`, a static token
//! file (`admin` in `system:masters`, and the identities asked for) and service-account
//! signing keys. What the server is (flags, PKI, kubeconfigs) is weft-kubeplane's, shared
//! with the lab's and the tests' control planes; this module runs one for a benchmark.
//!
//! Owns: the processes it starts (killed and reaped on [`KubePlane::stop`] or drop; each asks
//! the kernel for SIGKILL when the thread that started it ends, so not even a SIGKILLed
//! caller leaves one behind), and the files under the directory it is given (certificates,
//! token file, kubeconfig, logs) and the etcd data directory it is given.
//!
//! Must not: know what runs against it (no weft objects, no weftd), create or remove
//! namespaces (the caller's), touch any path it was not given, or listen anywhere but in
//! the namespace it was given. It depends on nothing else of this crate, so the lab and the
//! benchmarks can both start one.
//!
//! Binaries: `$WEFT_KUBE_BIN`, else the newest `/var/cache/weft/kubernetes/*/bin` (what
//! `scripts/kube-binaries.sh` builds); etcd from `PATH` (Debian's `etcd-server`).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use weft_net::NetNs;

use weft_kubeplane::{ApiServer, Identity, PkiOptions, pki};

/// A cold API server on the 2-vCPU VM is ready in ~4 s; a loaded machine takes longer.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
const ETCD_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum KubePlaneError {
    #[error(
        "no Kubernetes binaries {0}: set WEFT_KUBE_BIN or run scripts/kube-binaries.sh (it caches them in /var/cache/weft/kubernetes)"
    )]
    NoBinaries(String),
    #[error("`etcd` not found on PATH (Debian: apt-get install etcd-server)")]
    NoEtcd,
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{what}")]
    Netns {
        what: String,
        #[source]
        source: weft_net::Error,
    },
    #[error("{what}: {reason}\n--- end of its log ---\n{tail}")]
    Process {
        what: &'static str,
        reason: String,
        tail: String,
    },
}

type Result<T, E = KubePlaneError> = std::result::Result<T, E>;

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> KubePlaneError {
    let what = what.into();
    move |source| KubePlaneError::Io { what, source }
}

/// How to start a control plane.
#[derive(Debug, Clone)]
pub struct KubePlaneOptions {
    /// The namespace everything runs and listens in (`/run/netns/<name>`).
    pub netns: PathBuf,
    /// Certificates, token file, kubeconfig and logs go here (must exist).
    pub dir: PathBuf,
    /// etcd's data (created; tmpfs keeps etcd's fsyncs off the disk).
    pub etcd_data: PathBuf,
    /// The address the API server binds and advertises, and etcd listens on.
    pub address: IpAddr,
    pub apiserver_port: u16,
    pub etcd_port: u16,
    /// Identities besides `admin` (a ServiceAccount's, to run weftd with its RBAC only).
    pub users: Vec<Identity>,
}

impl KubePlaneOptions {
    /// On the namespace's loopback, the API server on 6443, its etcd on 2479/2480 (not
    /// etcd's default, so a weft etcd can share the namespace).
    pub fn new(netns: PathBuf, dir: PathBuf, etcd_data: PathBuf) -> KubePlaneOptions {
        KubePlaneOptions {
            netns,
            dir,
            etcd_data,
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            apiserver_port: 6443,
            etcd_port: 2479,
            users: Vec::new(),
        }
    }
}

/// A running etcd + kube-apiserver; both killed when stopped or dropped.
pub struct KubePlane {
    opts: KubePlaneOptions,
    bin: PathBuf,
    etcd: Proc,
    apiserver: Proc,
}

/// The Kubernetes binaries' directory: `$WEFT_KUBE_BIN`, else the newest cached build.
pub fn bin_dir() -> Result<PathBuf> {
    weft_kubeplane::bin_dir(&["kube-apiserver", "kubectl"]).map_err(KubePlaneError::NoBinaries)
}

impl KubePlane {
    /// Makes the PKI and token file, starts etcd and the API server in the namespace, and
    /// returns once `/readyz` answers `ok`.
    pub fn start(opts: KubePlaneOptions) -> Result<KubePlane> {
        let bin = bin_dir()?;
        let etcd_bin = which("etcd").ok_or(KubePlaneError::NoEtcd)?;
        let ns = NetNs::open(&opts.netns).map_err(|source| KubePlaneError::Netns {
            what: format!("opening {}", opts.netns.display()),
            source,
        })?;
        weft_kubeplane::make_pki(
            &opts.dir,
            &PkiOptions {
                ca_name: "weft-kubeplane-ca".into(),
                ips: vec![opts.address],
                in_cluster: false,
                days: 2,
            },
        )
        .map_err(io_err("making the control plane's PKI"))?;
        let ids: Vec<Identity> = std::iter::once(Identity::admin())
            .chain(opts.users.iter().cloned())
            .collect();
        let tokens: String = ids.iter().map(|id| id.token_line(&token(id))).collect();
        std::fs::write(opts.dir.join(pki::TOKENS), tokens)
            .map_err(io_err("writing the token file"))?;
        let etcd = start_etcd(&ns, &opts, &etcd_bin)?;
        let url = weft_kubeplane::url(opts.address, opts.apiserver_port);
        for id in &ids {
            let path = kubeconfig_path(&opts.dir, id);
            let text = weft_kubeplane::kubeconfig(
                "weft",
                &url,
                &opts.dir.join(pki::CA),
                &id.user,
                &token(id),
            );
            std::fs::write(&path, text).map_err(io_err(format!("writing {}", path.display())))?;
        }
        let apiserver = start_apiserver(&ns, &opts, &bin)?;
        let mut plane = KubePlane {
            opts,
            bin,
            etcd,
            apiserver,
        };
        plane.wait_ready(&ns)?;
        Ok(plane)
    }

    /// `https://<address>:<port>`, reachable from inside the namespace.
    pub fn url(&self) -> String {
        weft_kubeplane::url(self.opts.address, self.opts.apiserver_port)
    }

    /// A kubeconfig (kubectl's format) of the `admin` identity (`system:masters`).
    pub fn admin_kubeconfig(&self) -> PathBuf {
        kubeconfig_path(&self.opts.dir, &Identity::admin())
    }

    /// A kubeconfig of `id`, one of [`KubePlaneOptions::users`].
    pub fn kubeconfig(&self, id: &Identity) -> PathBuf {
        kubeconfig_path(&self.opts.dir, id)
    }

    /// The CA that signed the API server's certificate.
    pub fn ca(&self) -> PathBuf {
        self.opts.dir.join(pki::CA)
    }

    /// The Kubernetes binaries in use (kubectl is there too).
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The API server's process id.
    pub fn apiserver_pid(&self) -> u32 {
        self.apiserver.pid()
    }

    /// The last lines of `kube-apiserver.log` or `etcd.log`.
    pub fn log_tail(&self, component: &str) -> String {
        log_tail(&self.opts.dir.join(format!("{component}.log")), 20)
    }

    /// Kills the API server, then etcd, and reaps both.
    pub fn stop(mut self) {
        self.apiserver.kill();
        self.etcd.kill();
    }

    fn wait_ready(&mut self, ns: &NetNs) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let kubectl = self.bin.join("kubectl");
        loop {
            if self.apiserver.exited() {
                return Err(KubePlaneError::Process {
                    what: "kube-apiserver",
                    reason: "exited while starting".into(),
                    tail: self.log_tail("kube-apiserver"),
                });
            }
            let mut cmd = Command::new(&kubectl);
            cmd.arg(format!(
                "--kubeconfig={}",
                self.admin_kubeconfig().display()
            ))
            .args(["--request-timeout=5s", "get", "--raw", "/readyz"])
            .stdin(Stdio::null());
            die_with_parent(&mut cmd);
            let ready = ns
                .run(|| cmd.output())
                .map_err(|source| KubePlaneError::Netns {
                    what: "entering the control plane's namespace".into(),
                    source,
                })?
                .is_ok_and(|o| {
                    o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "ok"
                });
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(KubePlaneError::Process {
                    what: "kube-apiserver",
                    reason: format!("not ready after {} s", READY_TIMEOUT.as_secs()),
                    tail: self.log_tail("kube-apiserver"),
                });
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

fn kubeconfig_path(dir: &Path, id: &Identity) -> PathBuf {
    dir.join(format!("kubeconfig-{}", id.file_stem()))
}

/// `id`'s bearer token. Only this control plane reads it, and it listens only inside the
/// caller's namespace: a value derived from the run and the user is enough.
fn token(id: &Identity) -> String {
    let mut h: u64 = 0x5eed_ba5e_0f0f_u64 ^ u64::from(std::process::id());
    for b in id.user.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("weft-kubeplane-{h:016x}")
}

fn start_etcd(ns: &NetNs, opts: &KubePlaneOptions, program: &Path) -> Result<Proc> {
    let host = match opts.address {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    let client = format!("http://{host}:{}", opts.etcd_port);
    let peer = format!("http://{host}:{}", opts.etcd_port + 1);
    let mut cmd = Command::new(program);
    cmd.arg("--name=kube")
        .arg(format!("--data-dir={}", opts.etcd_data.display()))
        .arg(format!("--listen-client-urls={client}"))
        .arg(format!("--advertise-client-urls={client}"))
        .arg(format!("--listen-peer-urls={peer}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .arg(format!("--initial-cluster=kube={peer}"))
        .args(["--logger=zap", "--log-outputs=stderr"]);
    let mut etcd = Proc::spawn(ns, "etcd", cmd, &opts.dir.join("etcd.log"))?;
    let addr = SocketAddr::from((opts.address, opts.etcd_port));
    let deadline = Instant::now() + ETCD_TIMEOUT;
    loop {
        if etcd.exited() {
            return Err(KubePlaneError::Process {
                what: "etcd",
                reason: "exited while starting".into(),
                tail: log_tail(&opts.dir.join("etcd.log"), 20),
            });
        }
        let healthy = ns
            .run(|| etcd_healthy(addr))
            .map_err(|source| KubePlaneError::Netns {
                what: "entering the control plane's namespace".into(),
                source,
            })?;
        if healthy {
            return Ok(etcd);
        }
        if Instant::now() > deadline {
            return Err(KubePlaneError::Process {
                what: "etcd",
                reason: format!("not healthy after {} s", ETCD_TIMEOUT.as_secs()),
                tail: log_tail(&opts.dir.join("etcd.log"), 20),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One `GET /health` over HTTP/1.0, from the calling thread's namespace.
fn etcd_healthy(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: etcd\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply.replace(' ', "").contains("\"health\":\"true\"")
}

fn start_apiserver(ns: &NetNs, opts: &KubePlaneOptions, bin: &Path) -> Result<Proc> {
    let host = match opts.address {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    let etcd = format!("http://{host}:{}", opts.etcd_port);
    let args = ApiServer {
        etcd: &etcd,
        pki: &opts.dir,
        cert_dir: &opts.dir.join("certs"),
        address: opts.address,
        port: opts.apiserver_port,
        service_ranges: weft_kubeplane::SERVICE_RANGE,
        dual_stack: false,
    }
    .args();
    let mut cmd = Command::new(bin.join("kube-apiserver"));
    cmd.args(args);
    Proc::spawn(
        ns,
        "kube-apiserver",
        cmd,
        &opts.dir.join("kube-apiserver.log"),
    )
}

/// A child started inside a namespace, stdio on a log; killed and reaped on drop.
struct Proc {
    child: Option<Child>,
}

impl Proc {
    /// Forked while this thread is inside `ns`, so the child starts there (no `ip netns
    /// exec`, which would also remount /sys).
    fn spawn(ns: &NetNs, what: &str, mut cmd: Command, log: &Path) -> Result<Proc> {
        let open = || {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map_err(io_err(format!("opening {}", log.display())))
        };
        let (out, err): (File, File) = (open()?, open()?);
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        die_with_parent(&mut cmd);
        let child = ns
            .run(|| cmd.spawn())
            .map_err(|source| KubePlaneError::Netns {
                what: "entering the control plane's namespace".into(),
                source,
            })?
            .map_err(io_err(format!("starting {what}")))?;
        Ok(Proc { child: Some(child) })
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// SIGKILL for the child when the thread that forked it ends (spawn from the main thread).
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl(2) is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// The last `lines` non-empty lines of a log (at most its last 8 KiB).
fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(8192)));
    let mut buf = Vec::new();
    let _ = file.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let tail: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .rev()
        .take(lines)
        .collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}
