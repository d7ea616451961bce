//! Support for the end-to-end tests in modes.rs, interop.rs, concurrency.rs, faults.rs and
//! bad_input.rs: namespaces that clean up after themselves (also on panic), a node that runs
//! the real `weft` binary inside its own network namespace, kernel inspection through `ip -j`,
//! real traffic (ping, TCP from a thread inside a namespace) and a small libcni-like chain
//! runner for conflists.
//!
//! Every namespace made here is named `we<kind><pid>x<k>` so it never collides with the
//! `wt…` namespaces of `common/mod.rs` and stray ones are easy to find.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weft_testkit::TestNs;

pub const PING: &str = "/usr/bin/ping";
pub const REF_CNI: &str = "/usr/lib/cni";
pub const SYS_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// The `weft` binary cargo built for this test run.
pub fn weft_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_weft"))
}

/// The `weft-ipam` binary cargo built for this test run.
pub fn weft_ipam_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_weft-ipam"))
}

/// The directory holding `weft` and `weft-ipam`: the CNI_PATH for weft-only tests.
pub fn bin_dir() -> String {
    weft_bin().parent().unwrap().to_str().unwrap().to_string()
}

/// CNI_PATH with weft's directory first and the reference plugins after it.
pub fn bin_dir_with_ref() -> String {
    format!("{}:{}", bin_dir(), REF_CNI)
}

/// Run a command, return its output; panics only if it could not be started.
pub fn run(prog: &str, args: &[&str]) -> Output {
    Command::new(prog)
        .args(args)
        .env("PATH", SYS_PATH)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {prog}: {e}"))
}

/// Run a command that must succeed; return its stdout.
pub fn must(prog: &str, args: &[&str]) -> String {
    let out = run(prog, args);
    assert!(
        out.status.success(),
        "{prog} {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A named network namespace (weft-testkit's, `/run/netns/<name>`), deleted on drop.
pub struct Ns {
    pub name: String,
    pub path: String,
    ns: TestNs,
}

impl Ns {
    /// A fresh namespace with `lo` up. `kind`: 'n' node, 'p' pod, 'o' outside, 'q' peer.
    pub fn new(kind: char) -> Ns {
        let ns = TestNs::new(&format!("we{kind}"));
        Ns {
            name: ns.name.clone(),
            path: ns.path().display().to_string(),
            ns,
        }
    }

    pub fn file(&self) -> File {
        self.ns.file()
    }

    /// `ip -n <ns> args…`, must succeed; returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        self.ns.ip(args)
    }

    /// `ip -n <ns> -j args…` parsed as JSON (empty output = empty array).
    pub fn ipj(&self, args: &[&str]) -> Value {
        let mut a = vec!["-n", &self.name, "-j"];
        a.extend_from_slice(args);
        let out = run("ip", &a);
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            // e.g. `ip link show dev X` for a missing X
            return json!([]);
        }
        if text.trim().is_empty() {
            return json!([]);
        }
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("ip -j {args:?}: {e}: {text}"))
    }

    /// `ip netns exec <ns> prog args…`.
    pub fn exec(&self, prog: &str, args: &[&str]) -> Output {
        self.ns.output(&[&[prog], args].concat())
    }

    pub fn exec_ok(&self, prog: &str, args: &[&str]) -> String {
        self.ns.exec_ok(&[&[prog], args].concat())
    }

    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec_ok("sysctl", &["-q", "-w", &format!("{key}={value}")]);
    }

    /// All links as `ip -j link show`.
    pub fn links(&self) -> Vec<Value> {
        self.ipj(&["link", "show"])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn link(&self, name: &str) -> Option<Value> {
        self.links()
            .into_iter()
            .find(|l| l["ifname"].as_str() == Some(name))
    }

    pub fn link_names(&self) -> BTreeSet<String> {
        self.links()
            .iter()
            .filter_map(|l| l["ifname"].as_str().map(str::to_string))
            .collect()
    }

    /// `addr_info` entries of one device.
    pub fn addr_info(&self, dev: &str) -> Vec<Value> {
        let v = self.ipj(&["addr", "show", "dev", dev]);
        v.as_array()
            .and_then(|a| a.first())
            .and_then(|l| l["addr_info"].as_array().cloned())
            .unwrap_or_default()
    }

    /// Routes of one family (`-4`/`-6`) in the main table.
    pub fn routes(&self, fam: &str) -> Vec<Value> {
        self.ipj(&[fam, "route", "show"])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Does `ping` from this namespace to `dst` get an answer?
    pub fn ping(&self, dst: IpAddr) -> bool {
        let d = dst.to_string();
        let fam = if dst.is_ipv6() { "-6" } else { "-4" };
        self.exec(PING, &[fam, "-n", "-q", "-c", "1", "-W", "3", &d])
            .status
            .success()
    }

    pub fn assert_ping(&self, dst: IpAddr) {
        if !self.ping(dst) {
            let d = dst.to_string();
            let fam = if dst.is_ipv6() { "-6" } else { "-4" };
            let out = self.exec(PING, &[fam, "-n", "-c", "1", "-W", "2", &d]);
            panic!(
                "ping {dst} from {} failed:\n{}{}\naddrs:\n{}\nroutes:\n{}{}",
                self.name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.ip(&["addr"]),
                self.ip(&["-4", "route"]),
                self.ip(&["-6", "route"]),
            );
        }
    }
}

/// Run `f` on a new thread whose network namespace is `ns`.
pub fn in_ns<T: Send + 'static>(ns: &Ns, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    ns.ns.spawn(f)
}

/// Open a TCP listener on `listen_ip` inside `listen_ns`, connect to it from inside
/// `conn_ns`, and return the source address the listener saw.
pub fn tcp_probe(listen_ns: &Ns, listen_ip: IpAddr, conn_ns: &Ns) -> IpAddr {
    let (tx, rx) = mpsc::channel::<Result<u16, String>>();
    let listener = in_ns(listen_ns, move || -> Result<IpAddr, String> {
        let l = match TcpListener::bind(SocketAddr::new(listen_ip, 0)) {
            Ok(l) => l,
            Err(e) => {
                let _ = tx.send(Err(format!("bind {listen_ip}: {e}")));
                return Err(format!("bind {listen_ip}: {e}"));
            }
        };
        tx.send(Ok(l.local_addr().unwrap().port())).unwrap();
        l.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(8);
        loop {
            match l.accept() {
                Ok((mut s, peer)) => {
                    let mut b = [0u8; 5];
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                    let _ = s.read(&mut b);
                    let _ = s.write_all(b"pong");
                    return Ok(peer.ip());
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return Err(format!("no connection to {listen_ip} within 8 s"));
                    }
                    thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(format!("accept: {e}")),
            }
        }
    });
    let port = rx
        .recv()
        .expect("listener thread died")
        .unwrap_or_else(|e| panic!("{e}"));
    let target = SocketAddr::new(listen_ip, port);
    let connector = in_ns(conn_ns, move || -> Result<(), String> {
        let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(5))
            .map_err(|e| format!("connect {target}: {e}"))?;
        s.write_all(b"ping!").map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).map_err(|e| format!("read: {e}"))?;
        if &b != b"pong" {
            return Err("bad reply".into());
        }
        Ok(())
    });
    let c = connector.join().expect("connector panicked");
    let l = listener.join().expect("listener panicked");
    c.unwrap_or_else(|e| panic!("TCP from {} to {target}: {e}", conn_ns.name));
    l.unwrap_or_else(|e| panic!("TCP listener {} {target}: {e}", listen_ns.name))
}

/// Output of one plugin execution.
#[derive(Debug)]
pub struct Out {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn ok(&self) -> bool {
        self.status.success()
    }

    /// Exit 0 and nothing on stdout (DEL, CHECK, GC).
    pub fn assert_quiet_ok(&self, what: &str) {
        assert!(
            self.ok() && self.stdout.trim().is_empty(),
            "{what}: expected exit 0 and no output, got {self:?}"
        );
    }

    /// Exit 0 and one JSON object on stdout.
    pub fn result(&self, what: &str) -> Value {
        assert!(self.ok(), "{what} failed: {self:?}");
        let v: Value = serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("{what}: stdout is not one JSON document ({e}): {self:?}"));
        assert!(v.is_object(), "{what}: result is not an object: {v}");
        v
    }

    /// Failure with exactly one error object carrying `code` and a non-empty msg.
    pub fn assert_error(&self, code: u64, what: &str) -> Value {
        assert!(
            !self.ok(),
            "{what}: expected failure with code {code}, got {self:?}"
        );
        let v: Value = serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("{what}: stdout is not exactly one JSON object ({e}): {self:?}")
        });
        assert_eq!(
            v["code"].as_u64(),
            Some(code),
            "{what}: wrong error code: {self:?}"
        );
        assert!(
            v["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: error without msg: {v}"
        );
        v
    }

    /// Failure with one error object (any code).
    pub fn assert_any_error(&self, what: &str) -> Value {
        assert!(!self.ok(), "{what}: expected failure, got {self:?}");
        let v: Value = serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("{what}: stdout is not exactly one JSON object ({e}): {self:?}")
        });
        assert!(v["code"].as_u64().is_some(), "{what}: no code: {v}");
        assert!(
            v["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: error without msg: {v}"
        );
        v
    }
}

/// A "node": a network namespace the plugin runs in, plus a temp dir for IPAM data and logs.
pub struct Node {
    pub ns: Ns,
    pub dir: tempfile::TempDir,
}

impl Default for Node {
    fn default() -> Self {
        Self::new()
    }
}

impl Node {
    pub fn new() -> Node {
        let ns = Ns::new('n');
        let dir = tempfile::Builder::new()
            .prefix("weft-e2e-")
            .tempdir()
            .unwrap();
        Node { ns, dir }
    }

    pub fn data_dir(&self) -> String {
        self.dir.path().join("ipam").to_str().unwrap().to_string()
    }

    pub fn log_file(&self) -> String {
        self.dir
            .path()
            .join("cni.log")
            .to_str()
            .unwrap()
            .to_string()
    }

    /// A Command for `bin` that runs inside this node's netns, with a clean environment
    /// (PATH only) plus `env`.
    pub fn command(&self, bin: &Path, env: &[(&str, &str)]) -> Command {
        let file = self.ns.file();
        let mut cmd = Command::new(bin);
        // WEFT_LOG_FILE: configs that cannot be read must not log to the node's /var/log.
        cmd.env_clear()
            .env("PATH", SYS_PATH)
            .env("WEFT_LOG_FILE", "/dev/null");
        for (k, v) in env {
            cmd.env(k, v);
        }
        enter_netns(&mut cmd, file);
        cmd
    }

    /// Run `bin` inside the node with `env` and `stdin`.
    pub fn run_env(&self, bin: &Path, env: &[(&str, &str)], stdin: &str) -> Out {
        let mut cmd = self.command(bin, env);
        exec_with_stdin(&mut cmd, stdin)
    }

    /// Start `bin` inside the node; stdin is written (errors ignored) and closed.
    pub fn spawn_env(&self, bin: &Path, env: &[(&str, &str)], stdin: &str) -> Child {
        let mut cmd = self.command(bin, env);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn plugin");
        let mut si = child.stdin.take().unwrap();
        let _ = si.write_all(stdin.as_bytes());
        drop(si);
        child
    }

    /// One CNI verb for `cid`/`ifname` in `pod` (None = CNI_NETNS unset) with weft.
    pub fn cni(&self, verb: &str, conf: &Value, cid: &str, pod: Option<&Ns>, ifname: &str) -> Out {
        let env = cni_env(verb, cid, pod.map(|p| p.path.as_str()), ifname, &bin_dir());
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.run_env(&weft_bin(), &env, &conf.to_string())
    }

    pub fn add(&self, conf: &Value, cid: &str, pod: &Ns) -> Value {
        self.cni("ADD", conf, cid, Some(pod), "eth0")
            .result(&format!("ADD {cid}"))
    }

    pub fn del(&self, conf: &Value, cid: &str, pod: Option<&Ns>) {
        self.cni("DEL", conf, cid, pod, "eth0")
            .assert_quiet_ok(&format!("DEL {cid}"));
    }

    /// Lease files of network `net` in this node's data dir: ip → content.
    pub fn leases(&self, net: &str) -> BTreeMap<IpAddr, String> {
        leases_in(&Path::new(&self.data_dir()).join(net))
    }

    /// Names of links in the node whose name starts with `wv`.
    pub fn wv_links(&self) -> Vec<String> {
        self.ns
            .link_names()
            .into_iter()
            .filter(|n| n.starts_with("wv"))
            .collect()
    }
}

/// Make `cmd` enter the network namespace `file` between fork and exec.
pub fn enter_netns(cmd: &mut Command, file: File) {
    let fd = file.as_raw_fd();
    // The File must stay open until exec; move it into the closure (the closure lives in the
    // Command, which the caller keeps until spawn returns).
    unsafe {
        cmd.pre_exec(move || {
            let _keep = &file;
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

pub fn exec_with_stdin(cmd: &mut Command, stdin: &str) -> Out {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    let mut si = child.stdin.take().unwrap();
    let data = stdin.as_bytes().to_vec();
    let w = thread::spawn(move || {
        let _ = si.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait");
    let _ = w.join();
    Out {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The CNI_* environment for a verb.
pub fn cni_env(
    verb: &str,
    cid: &str,
    netns: Option<&str>,
    ifname: &str,
    path: &str,
) -> Vec<(&'static str, String)> {
    let mut v = vec![
        ("CNI_COMMAND", verb.to_string()),
        ("CNI_CONTAINERID", cid.to_string()),
        ("CNI_IFNAME", ifname.to_string()),
        ("CNI_PATH", path.to_string()),
    ];
    if let Some(n) = netns {
        v.push(("CNI_NETNS", n.to_string()));
    }
    v
}

/// Lease files (named by an IP) in `dir`: ip → content.
pub fn leases_in(dir: &Path) -> BTreeMap<IpAddr, String> {
    let mut m = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return m;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Ok(ip) = name.parse::<IpAddr>() {
            let content = std::fs::read_to_string(e.path()).unwrap_or_default();
            m.insert(ip, content);
        }
    }
    m
}

/// `ranges` for weft-ipam/host-local: `v4`, `v6` or both (`dual`), in subnet 10.<n>.0.0/24 and
/// fd00:<n>::/64, with default routes of the same families.
pub fn ipam(kind: &str, ty: &str, n: u8, data_dir: &str) -> Value {
    let v4 = json!([{ "subnet": format!("10.{n}.0.0/24") }]);
    let v6 = json!([{ "subnet": format!("fd00:{n}::/64") }]);
    let (ranges, routes) = match kind {
        "v4" => (json!([v4]), json!([{ "dst": "0.0.0.0/0" }])),
        "v6" => (json!([v6]), json!([{ "dst": "::/0" }])),
        "dual" => (
            json!([v4, v6]),
            json!([{ "dst": "0.0.0.0/0" }, { "dst": "::/0" }]),
        ),
        other => panic!("unknown ipam kind {other}"),
    };
    json!({ "type": ty, "ranges": ranges, "routes": routes, "dataDir": data_dir })
}

/// A weft network config (cniVersion 1.1.0) for `node`: `mode`, weft-ipam with `kind` ranges
/// in subnet number `n`, `extra` keys merged on top.
pub fn weft_conf(node: &Node, name: &str, mode: &str, kind: &str, n: u8, extra: Value) -> Value {
    let mut c = json!({
        "cniVersion": "1.1.0",
        "name": name,
        "type": "weft",
        "mode": mode,
        "logFile": node.log_file(),
        "ipam": ipam(kind, "weft-ipam", n, &node.data_dir()),
    });
    if mode == "bridge" {
        c["bridge"] = json!("weft0");
        c["isGateway"] = json!(true);
    }
    merge(&mut c, extra);
    c
}

pub fn merge(dst: &mut Value, extra: Value) {
    if let (Some(d), Value::Object(e)) = (dst.as_object_mut(), extra) {
        for (k, v) in e {
            d.insert(k, v);
        }
    }
}

/// Pod addresses of a result: `ips[].address` without prefix.
pub fn result_ips(res: &Value) -> Vec<IpAddr> {
    res["ips"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| {
                    let s = i["address"].as_str().expect("ips[].address");
                    s.split('/').next().unwrap().parse().expect("address")
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn result_ip(res: &Value, v6: bool) -> IpAddr {
    *result_ips(res)
        .iter()
        .find(|a| a.is_ipv6() == v6)
        .unwrap_or_else(|| panic!("no IPv{} in {res}", if v6 { 6 } else { 4 }))
}

/// The host-side veth named in a result (the interface without sandbox whose name starts wv).
pub fn result_host_veth(res: &Value) -> String {
    res["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .find(|i| {
            i["name"].as_str().is_some_and(|n| n.starts_with("wv"))
                && i["sandbox"].as_str().unwrap_or("").is_empty()
        })
        .and_then(|i| i["name"].as_str())
        .unwrap_or_else(|| panic!("no host veth in {res}"))
        .to_string()
}

/// Is any global (pod) address on `dev` in `ns` tentative or dadfailed? Returns the
/// offending entries. (The kernel's own link-local address is not the pod address.)
pub fn tentative(ns: &Ns, dev: &str) -> Vec<Value> {
    ns.addr_info(dev)
        .into_iter()
        .filter(|a| a["scope"] == "global")
        .filter(|a| {
            a["tentative"].as_bool() == Some(true) || a["dadfailed"].as_bool() == Some(true)
        })
        .collect()
}

/// Rules of `nft -j list table inet weft` in `ns`, as the `rule` objects.
pub fn nft_rules(ns: &Ns, family: &str, table: &str) -> Vec<Value> {
    let out = ns.exec("nft", &["-j", "list", "table", family, table]);
    if !out.status.success() {
        return vec![];
    }
    let v: Value = serde_json::from_slice(&out.stdout).expect("nft -j");
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("rule").cloned())
        .collect()
}

/// Does any value in `v` (recursively) satisfy `pred`?
pub fn any_value(v: &Value, pred: &dyn Fn(&Value) -> bool) -> bool {
    if pred(v) {
        return true;
    }
    match v {
        Value::Array(a) => a.iter().any(|x| any_value(x, pred)),
        Value::Object(o) => o.values().any(|x| any_value(x, pred)),
        _ => false,
    }
}

/// Count masquerade rules in table inet weft per family (ip, ip6).
pub fn masq_rule_counts(ns: &Ns) -> (usize, usize) {
    let rules = nft_rules(ns, "inet", "weft");
    let mut v4 = 0;
    let mut v6 = 0;
    for r in &rules {
        if !any_value(&r["expr"], &|x| x.get("masquerade").is_some()) {
            continue;
        }
        let has = |p: &str| {
            any_value(&r["expr"], &|x| {
                x.get("payload")
                    .and_then(|pl| pl.get("protocol"))
                    .and_then(Value::as_str)
                    == Some(p)
            })
        };
        if has("ip6") {
            v6 += 1;
        } else if has("ip") {
            v4 += 1;
        } else {
            panic!("masquerade rule without ip/ip6 match: {r}");
        }
    }
    (v4, v6)
}

/// Wait for `child` up to `timeout`; kill it on timeout. Returns its output.
pub fn wait_out(child: Child) -> Out {
    let out = child.wait_with_output().expect("wait");
    Out {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A `weft_cni::runtime::Runtime` over `cni_path` (`:`-separated) whose plugin processes run
/// inside `node`'s network namespace.
pub fn runtime_in(node: &Node, cni_path: &str) -> weft_cni::runtime::Runtime {
    let file = std::sync::Arc::new(node.ns.file());
    weft_cni::runtime::Runtime {
        cni_path: cni_path.split(':').map(PathBuf::from).collect(),
        customize: Some(Box::new(move |cmd: &mut Command| {
            let f = file.clone();
            cmd.env("PATH", SYS_PATH).env("WEFT_LOG_FILE", "/dev/null");
            // SAFETY: only setns(2) between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        })),
    }
}

/// An attachment of `pod` as `eth0` for the runtime.
pub fn attachment(cid: &str, pod: &Ns, caps: Value) -> weft_cni::runtime::Attachment {
    weft_cni::runtime::Attachment {
        container_id: cid.to_string(),
        netns: pod.path.clone(),
        ifname: "eth0".to_string(),
        cni_args: None,
        capability_args: caps.as_object().cloned().unwrap_or_default(),
    }
}
