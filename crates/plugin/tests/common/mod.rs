//! Shared harness for the `weft` / `weft-ipam` end-to-end tests.
//!
//! Every test builds a [`Fixture`]: a fresh "node" network namespace (the plugin is always
//! executed *inside* it, so the real host is never touched), a temp dir holding the IPAM
//! `dataDir` and the plugin `logFile`, and a unique bridge name. Pods are further network
//! namespaces ([`Pod`]). All namespaces are removed by `Drop` guards, also on panic.
//!
//! The plugin is spawned exactly like a runtime does it: `env_clear()`, then only the
//! variables the test names (plus `PATH`), the request on stdin, and the node netns entered
//! with `setns(2)` between fork and exec.
//!
//! Kernel state is read back with `ip -j` / `nft -j` (tests only; the plugin itself never
//! spawns them).
//!
//! The API of this module is shared by several test files: only ever add to it.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use weft_testkit::TestNs;

/// `PATH` given to every plugin execution.
pub const SYS_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Where the reference plugins (v1.1.1, spec <= 1.0.0) live.
pub const REF_CNI_DIR: &str = "/usr/lib/cni";
/// A plugin run that takes longer than this is killed and the test fails.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Next value of the per-process counter used in every generated name.
pub fn next_id() -> u32 {
    COUNTER.fetch_add(1, Ordering::SeqCst)
}

/// Path of the `weft` binary under test.
pub fn weft_bin() -> &'static str {
    env!("CARGO_BIN_EXE_weft")
}

/// Path of the `weft-ipam` binary under test.
pub fn ipam_bin() -> &'static str {
    env!("CARGO_BIN_EXE_weft-ipam")
}

/// The directory holding `weft` and `weft-ipam` (the natural `CNI_PATH`).
pub fn bin_dir() -> String {
    Path::new(weft_bin())
        .parent()
        .expect("binary has a parent dir")
        .to_string_lossy()
        .into_owned()
}

/// `CNI_PATH` with our binaries first and the reference plugins after them.
pub fn cni_path_with_ref() -> String {
    format!("{}:{}", bin_dir(), REF_CNI_DIR)
}

// ---------------------------------------------------------------------------------------
// Namespaces
// ---------------------------------------------------------------------------------------

/// A "node": a named network namespace (weft-testkit's) in which the plugin runs. Removed on
/// drop (which also removes every link in it, and with them the peers of its veths).
#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub path: String,
    _ns: TestNs,
}

impl Node {
    pub fn new() -> Node {
        let ns = TestNs::new("wtn");
        Node {
            name: ns.name.clone(),
            path: ns.path().display().to_string(),
            _ns: ns,
        }
    }
}

impl Default for Node {
    fn default() -> Self {
        Node::new()
    }
}

/// A pod network namespace (`CNI_NETNS` = [`Pod::path`]). Removed on drop unless
/// [`Pod::delete`] already did it.
#[derive(Debug)]
pub struct Pod {
    pub name: String,
    pub path: String,
    ns: TestNs,
}

impl Pod {
    pub fn new() -> Pod {
        let ns = TestNs::new("wtp");
        Pod {
            name: ns.name.clone(),
            path: ns.path().display().to_string(),
            ns,
        }
    }

    /// `ip netns del` now (e.g. to test DEL with a vanished netns).
    pub fn delete(&mut self) {
        self.ns.delete();
    }
}

impl Default for Pod {
    fn default() -> Self {
        Pod::new()
    }
}

// ---------------------------------------------------------------------------------------
// Running a plugin
// ---------------------------------------------------------------------------------------

/// What one plugin execution produced.
#[derive(Debug, Clone)]
pub struct PluginOutput {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

fn parse_single_object(stdout: &str) -> Result<Map<String, Value>, String> {
    let mut it = serde_json::Deserializer::from_str(stdout).into_iter::<Value>();
    let first = match it.next() {
        None => return Err("stdout is empty".into()),
        Some(Err(e)) => return Err(format!("stdout is not JSON: {e}")),
        Some(Ok(v)) => v,
    };
    match it.next() {
        None => {}
        Some(Ok(v)) => return Err(format!("stdout holds more than one JSON value (2nd: {v})")),
        Some(Err(e)) => return Err(format!("stdout has trailing garbage: {e}")),
    }
    match first {
        Value::Object(m) => Ok(m),
        other => Err(format!("stdout JSON is not an object: {other}")),
    }
}

impl PluginOutput {
    /// Human-readable dump for assertion messages.
    pub fn dump(&self) -> String {
        format!(
            "exit={}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }

    pub fn ok(&self) -> bool {
        self.status == 0
    }

    /// Exit 0 and stdout is exactly one JSON object; returns it.
    #[track_caller]
    pub fn expect_ok_json(&self) -> Value {
        assert_eq!(self.status, 0, "expected success\n{}", self.dump());
        match parse_single_object(&self.stdout) {
            Ok(m) => Value::Object(m),
            Err(e) => panic!("{e}\n{}", self.dump()),
        }
    }

    /// Exit 0 and nothing (but whitespace) on stdout.
    #[track_caller]
    pub fn expect_ok_empty(&self) {
        assert_eq!(self.status, 0, "expected success\n{}", self.dump());
        assert!(
            self.stdout.trim().is_empty(),
            "expected empty stdout\n{}",
            self.dump()
        );
    }

    /// Exit != 0 and stdout is exactly one JSON object (nothing else) with an integer
    /// `code`, a non-empty string `msg`, and optionally a string `details`. Returns the
    /// parsed object.
    #[track_caller]
    pub fn expect_any_error(&self) -> Map<String, Value> {
        assert_ne!(self.status, 0, "expected failure\n{}", self.dump());
        let m = match parse_single_object(&self.stdout) {
            Ok(m) => m,
            Err(e) => panic!("error output malformed: {e}\n{}", self.dump()),
        };
        assert!(
            m.get("code").is_some_and(|c| c.is_u64()),
            "error object has no unsigned integer `code`\n{}",
            self.dump()
        );
        assert!(
            m.get("msg")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty()),
            "error object has no non-empty `msg`\n{}",
            self.dump()
        );
        if let Some(d) = m.get("details") {
            assert!(d.is_string(), "`details` is not a string\n{}", self.dump());
        }
        m
    }

    /// "Fails N": exit != 0, stdout is exactly one JSON error object with `code` == N and a
    /// non-empty `msg`. Returns `(msg, details)`.
    #[track_caller]
    pub fn expect_error(&self, code: u64) -> (String, Option<String>) {
        let m = self.expect_any_error();
        let got = m["code"].as_u64().unwrap();
        assert_eq!(got, code, "wrong error code\n{}", self.dump());
        (
            m["msg"].as_str().unwrap().to_string(),
            m.get("details").and_then(Value::as_str).map(str::to_string),
        )
    }

    /// The error code if stdout is a well-formed error object.
    pub fn error_code(&self) -> Option<u64> {
        parse_single_object(&self.stdout)
            .ok()
            .and_then(|m| m.get("code").and_then(Value::as_u64))
    }
}

/// Spawn `bin` inside `node`'s network namespace with exactly `env` (+ `PATH`, unless `env`
/// sets it), feeding `stdin`. Panics if it runs longer than [`RUN_TIMEOUT`].
pub fn run<K: AsRef<OsStr>, V: AsRef<OsStr>>(
    bin: &str,
    env: &[(K, V)],
    stdin: &[u8],
    node: &Node,
) -> PluginOutput {
    run_in(bin, env, stdin, Some(&node.path))
}

/// Like [`run`], with an explicit netns path to enter (`None` = stay in the test's netns;
/// only for binaries that do not touch the network, e.g. VERSION probes).
pub fn run_in<K: AsRef<OsStr>, V: AsRef<OsStr>>(
    bin: &str,
    env: &[(K, V)],
    stdin: &[u8],
    netns: Option<&str>,
) -> PluginOutput {
    let mut cmd = Command::new(bin);
    cmd.env_clear();
    cmd.env("PATH", SYS_PATH);
    // Invocations whose config names no logFile (bad input, VERSION) must not write to the
    // node's /var/log/weft; a test that wants one of those lines sets WEFT_LOG_FILE itself.
    cmd.env("WEFT_LOG_FILE", "/dev/null");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_command(cmd, stdin, netns)
}

/// Run a prepared command (env already set by the caller) inside `netns`, feeding stdin,
/// with the harness' timeout.
pub fn run_command(mut cmd: Command, stdin: &[u8], netns: Option<&str>) -> PluginOutput {
    let ns_file = netns.map(|p| File::open(p).unwrap_or_else(|e| panic!("open {p}: {e}")));
    if let Some(f) = &ns_file {
        let fd = f.as_raw_fd();
        // SAFETY: only async-signal-safe calls (setns) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn_retry(&mut cmd);
    drop(ns_file);

    let mut child_in = child.stdin.take().unwrap();
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        // The plugin may exit without reading stdin (VERSION): ignore EPIPE.
        let _ = child_in.write_all(&input);
    });
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let err_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for plugin") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("plugin {cmd:?} did not finish within {RUN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = writer.join();
    let stdout = String::from_utf8_lossy(&out_t.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&err_t.join().unwrap()).into_owned();
    PluginOutput {
        status: status.code().unwrap_or_else(|| {
            128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
        }),
        stdout,
        stderr,
    }
}

/// Spawn, retrying ETXTBSY (a stub script just written by another thread of the same
/// process may still be open for writing in a forked child).
fn spawn_retry(cmd: &mut Command) -> std::process::Child {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Ok(c) => return c,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("spawn {cmd:?}: {e}"),
        }
    }
}

/// The standard environment `ENV(v)` of cni-spec.md §10: CNI_COMMAND, CNI_CONTAINERID,
/// CNI_NETNS, CNI_IFNAME and CNI_PATH (= [`bin_dir`]).
pub fn cni_env(
    command: &str,
    container_id: &str,
    netns: &str,
    ifname: &str,
) -> Vec<(String, String)> {
    vec![
        ("CNI_COMMAND".into(), command.into()),
        ("CNI_CONTAINERID".into(), container_id.into()),
        ("CNI_NETNS".into(), netns.into()),
        ("CNI_IFNAME".into(), ifname.into()),
        ("CNI_PATH".into(), bin_dir()),
    ]
}

/// Replace (or add) `key` in an env list; `None` removes it.
pub fn env_set(env: &mut Vec<(String, String)>, key: &str, value: Option<&str>) {
    env.retain(|(k, _)| k != key);
    if let Some(v) = value {
        env.push((key.to_string(), v.to_string()));
    }
}

/// Serialize a JSON value to stdin bytes.
pub fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// RFC 7386 JSON merge patch: objects merge recursively, `null` removes a key, anything
/// else replaces.
pub fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    b.remove(k);
                } else {
                    merge(b.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// Return `base` with `patch` merged in ([`merge`]).
pub fn merged(base: &Value, patch: Value) -> Value {
    let mut v = base.clone();
    merge(&mut v, &patch);
    v
}

// ---------------------------------------------------------------------------------------
// The per-test fixture
// ---------------------------------------------------------------------------------------

/// One test's world: node netns, temp dir (IPAM dataDir at `<tmp>/ipam`, log at
/// `<tmp>/cni.log`), a unique bridge name.
pub struct Fixture {
    pub node: Node,
    pub tmp: tempfile::TempDir,
    pub bridge: String,
}

impl Default for Fixture {
    fn default() -> Self {
        Fixture::new()
    }
}

impl Fixture {
    pub fn new() -> Fixture {
        let node = Node::new();
        let tmp = tempfile::Builder::new()
            .prefix("weft-test-")
            .tempdir()
            .expect("tempdir");
        let bridge = format!("wt{}b{}", std::process::id(), next_id());
        Fixture { node, tmp, bridge }
    }

    pub fn tmp_path(&self) -> &Path {
        self.tmp.path()
    }

    /// `<tmp>/ipam` (the IPAM dataDir of [`Fixture::config`]).
    pub fn ipam_dir(&self) -> PathBuf {
        self.tmp.path().join("ipam")
    }

    /// `<tmp>/ipam/<network>`.
    pub fn lease_dir(&self, network: &str) -> PathBuf {
        self.ipam_dir().join(network)
    }

    /// `<tmp>/cni.log`.
    pub fn log_file(&self) -> PathBuf {
        self.tmp.path().join("cni.log")
    }

    /// Contents of the plugin log (empty if none).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    /// Config `C` of cni-spec.md §10 with this fixture's bridge, dataDir and logFile:
    /// `{"cniVersion":"1.1.0","name":"t1","type":"weft","bridge":..,"isGateway":true,
    ///   "ipam":{"type":"weft-ipam","ranges":[[{"subnet":"10.99.0.0/24"}]],"dataDir":..},
    ///   "logFile":..}`
    pub fn config(&self) -> Value {
        json!({
            "cniVersion": "1.1.0",
            "name": "t1",
            "type": "weft",
            "bridge": self.bridge,
            "isGateway": true,
            "ipam": {
                "type": "weft-ipam",
                "ranges": [[{"subnet": "10.99.0.0/24"}]],
                "dataDir": self.ipam_dir().to_string_lossy(),
            },
            "logFile": self.log_file().to_string_lossy(),
        })
    }

    /// [`Fixture::config`] with a JSON merge patch applied (`null` removes a key).
    pub fn config_with(&self, patch: Value) -> Value {
        merged(&self.config(), patch)
    }

    /// A new pod netns.
    pub fn pod(&self) -> Pod {
        Pod::new()
    }

    /// Run `bin` in this fixture's node.
    pub fn run<K: AsRef<OsStr>, V: AsRef<OsStr>>(
        &self,
        bin: &str,
        env: &[(K, V)],
        stdin: &[u8],
    ) -> PluginOutput {
        run(bin, env, stdin, &self.node)
    }

    /// Run `weft` with `ENV(command)` for (container_id, pod, ifname) and `conf` on stdin.
    pub fn weft(
        &self,
        command: &str,
        conf: &Value,
        container_id: &str,
        netns: &str,
        ifname: &str,
    ) -> PluginOutput {
        let env = cni_env(command, container_id, netns, ifname);
        self.run(weft_bin(), &env, &bytes(conf))
    }

    /// ADD that must succeed; returns the result.
    #[track_caller]
    pub fn add(&self, conf: &Value, container_id: &str, pod: &Pod) -> Value {
        let out = self.weft("ADD", conf, container_id, &pod.path, "eth0");
        if out.status != 0 {
            panic!(
                "ADD {container_id} failed\n{}\n--- log ---\n{}",
                out.dump(),
                self.log()
            );
        }
        out.expect_ok_json()
    }

    /// DEL (with `prevResult` if given) that must succeed with empty stdout.
    #[track_caller]
    pub fn del(&self, conf: &Value, container_id: &str, netns: &str, prev: Option<&Value>) {
        let conf = with_prev(conf, prev);
        let out = self.weft("DEL", &conf, container_id, netns, "eth0");
        out.expect_ok_empty();
    }

    /// CHECK with `prevResult`.
    pub fn check(&self, conf: &Value, container_id: &str, pod: &Pod, prev: &Value) -> PluginOutput {
        let conf = with_prev(conf, Some(prev));
        self.weft("CHECK", &conf, container_id, &pod.path, "eth0")
    }

    /// Leases of `network` under the fixture's dataDir.
    pub fn leases(&self, network: &str) -> BTreeMap<IpAddr, String> {
        leases_in(&self.lease_dir(network))
    }

    /// Snapshot of the node and of `pods` (for "no side effects").
    pub fn snapshot(&self, pods: &[&Pod]) -> Snapshot {
        let mut s = Snapshot::of(&self.node.name, &self.ipam_dir());
        for p in pods {
            if !p.ns.is_deleted() {
                s.pods.push(NsState::of(&p.name));
            }
        }
        s
    }

    /// Write an executable `#!/bin/sh` script `<tmp>/bin/<name>`; returns the bin dir.
    pub fn write_stub(&self, name: &str, script: &str) -> PathBuf {
        let dir = self.tmp.path().join("bin");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        {
            let mut f = File::create(&path).unwrap();
            f.write_all(script.as_bytes()).unwrap();
            f.sync_all().unwrap();
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }
}

/// `conf` with `prevResult` set (or removed when `None`).
pub fn with_prev(conf: &Value, prev: Option<&Value>) -> Value {
    let mut c = conf.clone();
    match prev {
        Some(p) => {
            c["prevResult"] = p.clone();
        }
        None => {
            c.as_object_mut().unwrap().remove("prevResult");
        }
    }
    c
}

/// Lease files in a host-local style directory: files whose name is an IP address →
/// their content.
pub fn leases_in(dir: &Path) -> BTreeMap<IpAddr, String> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Ok(ip) = name.parse::<IpAddr>() {
            let content = std::fs::read_to_string(e.path()).unwrap_or_default();
            out.insert(ip, content);
        }
    }
    out
}

/// Every file under `dir` (recursive), relative path → content (lossy), for snapshots.
pub fn dir_listing(dir: &Path) -> BTreeMap<String, String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                out.insert(format!("{rel}/"), String::new());
                walk(base, &p, out);
            } else {
                out.insert(rel, std::fs::read_to_string(&p).unwrap_or_default());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

// ---------------------------------------------------------------------------------------
// Kernel state inspection
// ---------------------------------------------------------------------------------------

/// `ip -j -n <ns> <args..>` parsed as JSON (`[]` for empty output).
#[track_caller]
pub fn ip_json(ns: &str, args: &[&str]) -> Value {
    let out = Command::new("ip")
        .arg("-j")
        .args(["-n", ns])
        .args(args)
        .output()
        .expect("spawn ip");
    assert!(
        out.status.success(),
        "ip -j -n {ns} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8_lossy(&out.stdout);
    if s.trim().is_empty() {
        return json!([]);
    }
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("ip -j output not JSON ({e}): {s}"))
}

/// `ip -d -j link show` in `ns`: one object per link (`ifname`, `address`, `mtu`,
/// `operstate`, `flags`, `master`, `ifalias`, `linkinfo.info_kind`, ...).
pub fn links(ns: &str) -> Vec<Value> {
    ip_json(ns, &["-d", "link", "show"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Names of all links in `ns`.
pub fn link_names(ns: &str) -> Vec<String> {
    links(ns)
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(str::to_string))
        .collect()
}

/// The link called `name` in `ns`.
pub fn link(ns: &str, name: &str) -> Option<Value> {
    links(ns).into_iter().find(|l| l["ifname"] == name)
}

/// `linkinfo.info_kind` of a link object (`veth`, `bridge`, ...).
pub fn link_kind(l: &Value) -> Option<&str> {
    l["linkinfo"]["info_kind"].as_str()
}

/// Whether a link object has the `UP` admin flag.
pub fn link_is_up(l: &Value) -> bool {
    l["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == "UP"))
}

/// Host-side veths of weft in `ns` (name `wv` + 13 hex).
pub fn weft_veths(ns: &str) -> Vec<Value> {
    links(ns)
        .into_iter()
        .filter(|l| {
            let n = l["ifname"].as_str().unwrap_or("");
            n.len() == 15
                && n.starts_with("wv")
                && n[2..]
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        })
        .collect()
}

/// All veth links in `ns`.
pub fn veths(ns: &str) -> Vec<Value> {
    links(ns)
        .into_iter()
        .filter(|l| link_kind(l) == Some("veth"))
        .collect()
}

/// `ip -j addr show [dev]` raw.
pub fn addr_json(ns: &str, dev: Option<&str>) -> Vec<Value> {
    let mut args = vec!["addr", "show"];
    if let Some(d) = dev {
        args.extend(["dev", d]);
    }
    ip_json(ns, &args).as_array().cloned().unwrap_or_default()
}

/// Non-link-local addresses (`a.b.c.d/len`, `x::y/len`) on `dev` in `ns`.
pub fn addrs(ns: &str, dev: &str) -> Vec<String> {
    let mut out = Vec::new();
    for l in addr_json(ns, Some(dev)) {
        for a in l["addr_info"].as_array().cloned().unwrap_or_default() {
            let local = a["local"].as_str().unwrap_or("");
            if local.starts_with("fe80") {
                continue;
            }
            out.push(format!("{}/{}", local, a["prefixlen"]));
        }
    }
    out
}

/// Routes of the main table (IPv4 then IPv6) in `ns`, as `ip -j route` objects.
pub fn routes(ns: &str) -> Vec<Value> {
    let mut v = ip_json(ns, &["-4", "route", "show", "table", "main"])
        .as_array()
        .cloned()
        .unwrap_or_default();
    v.extend(
        ip_json(ns, &["-6", "route", "show", "table", "main"])
            .as_array()
            .cloned()
            .unwrap_or_default(),
    );
    v
}

/// Whether `ns` has a route with `dst` (as `ip` prints it: `default`, `10.99.0.0/24`,
/// `fd00::/64`), optionally via `gw`.
pub fn has_route(ns: &str, dst: &str, gw: Option<&str>) -> bool {
    routes(ns)
        .iter()
        .any(|r| r["dst"] == dst && gw.is_none_or(|g| r["gateway"].as_str() == Some(g)))
}

/// `nft -j list ruleset` in `ns` (metainfo stripped).
pub fn nft_ruleset(ns: &str) -> Value {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-j", "list", "ruleset"])
        .output()
        .expect("spawn nft");
    assert!(
        out.status.success(),
        "nft list ruleset in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8_lossy(&out.stdout);
    if s.trim().is_empty() {
        return json!([]);
    }
    let v: Value =
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("nft -j not JSON ({e}): {s}"));
    let items = v["nftables"].as_array().cloned().unwrap_or_default();
    Value::Array(
        items
            .into_iter()
            .filter(|i| i.get("metainfo").is_none())
            .collect(),
    )
}

/// `nft list ruleset` (text) in `ns`.
pub fn nft_text(ns: &str) -> String {
    let out = exec_in(ns, &["nft", "list", "ruleset"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ip netns exec <ns> <argv..>`.
pub fn exec_in(ns: &str, argv: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(argv)
        .output()
        .expect("spawn ip netns exec")
}

/// `ip -n <ns> <args..>`, asserting success.
#[track_caller]
pub fn ip(ns: &str, args: &[&str]) {
    let out = Command::new("ip")
        .args(["-n", ns])
        .args(args)
        .output()
        .expect("spawn ip");
    assert!(
        out.status.success(),
        "ip -n {ns} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One ICMP echo from `from_ns` to `addr` (IPv6 when it contains `:`), 1 s timeout.
/// Only target addresses inside namespaces the test created.
pub fn ping(from_ns: &str, addr: &str) -> bool {
    let fam = if addr.contains(':') { "-6" } else { "-4" };
    exec_in(from_ns, &["ping", fam, "-c1", "-W1", addr])
        .status
        .success()
}

/// [`ping`] retried for up to `secs` seconds (link bring-up / DAD).
pub fn ping_retry(from_ns: &str, addr: &str, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if ping(from_ns, addr) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ---------------------------------------------------------------------------------------
// Snapshots ("no side effects")
// ---------------------------------------------------------------------------------------

/// Comparable state of one netns: links (name, kind, master), non-link-local addresses,
/// main-table routes (IPv6 link-local/multicast routes left out) and the nft ruleset.
#[derive(Debug, Clone, PartialEq)]
pub struct NsState {
    pub ns: String,
    pub links: Vec<String>,
    pub addrs: Vec<String>,
    pub routes: Vec<String>,
    pub nft: Value,
}

impl NsState {
    pub fn of(ns: &str) -> NsState {
        let mut ls: Vec<String> = links(ns)
            .iter()
            .map(|l| {
                format!(
                    "{} kind={} master={}",
                    l["ifname"].as_str().unwrap_or("?"),
                    link_kind(l).unwrap_or("-"),
                    l["master"].as_str().unwrap_or("-")
                )
            })
            .collect();
        ls.sort();
        let mut addrs = Vec::new();
        for l in addr_json(ns, None) {
            for a in l["addr_info"].as_array().cloned().unwrap_or_default() {
                let local = a["local"].as_str().unwrap_or("");
                if local.starts_with("fe80") {
                    continue;
                }
                addrs.push(format!(
                    "{} {}/{}",
                    l["ifname"].as_str().unwrap_or("?"),
                    local,
                    a["prefixlen"]
                ));
            }
        }
        addrs.sort();
        let mut rs: Vec<String> = routes(ns)
            .iter()
            .filter(|r| {
                let d = r["dst"].as_str().unwrap_or("");
                !(d.starts_with("fe80") || d.starts_with("ff"))
            })
            .map(|r| {
                format!(
                    "{} via={} dev={}",
                    r["dst"].as_str().unwrap_or("?"),
                    r["gateway"].as_str().unwrap_or("-"),
                    r["dev"].as_str().unwrap_or("-")
                )
            })
            .collect();
        rs.sort();
        NsState {
            ns: ns.to_string(),
            links: ls,
            addrs,
            routes: rs,
            nft: nft_ruleset(ns),
        }
    }
}

/// Node state + pods' state + every file under the IPAM dataDir.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub node: NsState,
    pub pods: Vec<NsState>,
    pub files: BTreeMap<String, String>,
}

impl Snapshot {
    pub fn of(node_ns: &str, ipam_dir: &Path) -> Snapshot {
        Snapshot {
            node: NsState::of(node_ns),
            pods: Vec::new(),
            files: dir_listing(ipam_dir),
        }
    }

    /// Asserts `self == after` ("no side effects"). In the IPAM dataDir only a network
    /// directory and its empty `lock` file may appear; lease files and
    /// `last_reserved_ip.*` must not.
    #[track_caller]
    pub fn assert_unchanged(&self, after: &Snapshot) {
        assert_eq!(self.node, after.node, "node netns changed");
        assert_eq!(self.pods, after.pods, "pod netns changed");
        let strip = |m: &BTreeMap<String, String>| -> BTreeMap<String, String> {
            m.iter()
                .filter(|(k, _)| !(k.ends_with('/') || k.ends_with("/lock") || *k == "lock"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        assert_eq!(
            strip(&self.files),
            strip(&after.files),
            "IPAM dataDir changed"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Result helpers
// ---------------------------------------------------------------------------------------

/// Index of the interface called `name` in a 1.x/0.3+ result's `interfaces`.
pub fn iface_index(result: &Value, name: &str) -> Option<usize> {
    result["interfaces"]
        .as_array()?
        .iter()
        .position(|i| i["name"] == name)
}

/// `ips[i].address` without the prefix.
pub fn result_ip(result: &Value, i: usize) -> String {
    let a = result["ips"][i]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("result has no ips[{i}].address: {result}"));
    a.split('/').next().unwrap().to_string()
}

// ---------------------------------------------------------------------------------------
// Chaining by hand (libcni-like), for conflists with the reference meta plugins
// ---------------------------------------------------------------------------------------

/// A runtime's view of one attachment: weft-cni's, whose runtime the lab uses; the chain
/// runner below stays the tests' own, so the plugin is held against a second libcni.
pub use weft_cni::runtime::Attachment;

/// Build the request config of plugin `plugin` of a conflist as libcni does: inject
/// `name`, `cniVersion`, `runtimeConfig` (capabilities the plugin sets true and the runtime
/// has), `prevResult`.
pub fn chain_request(
    conflist: &Value,
    plugin: &Value,
    att: &Attachment,
    prev: Option<&Value>,
) -> Value {
    let mut c = plugin.clone();
    c["name"] = conflist["name"].clone();
    c["cniVersion"] = conflist["cniVersion"].clone();
    let mut rc = Map::new();
    if let Some(caps) = plugin["capabilities"].as_object() {
        for (k, v) in caps {
            if v == &Value::Bool(true)
                && let Some(a) = att.capability_args.get(k)
            {
                rc.insert(k.clone(), a.clone());
            }
        }
    }
    if !rc.is_empty() {
        c["runtimeConfig"] = Value::Object(rc);
    }
    if let Some(p) = prev {
        c["prevResult"] = p.clone();
    }
    c
}

/// Find `type` in a `:`-separated CNI path.
pub fn find_in_path(cni_path: &str, ty: &str) -> PathBuf {
    for d in cni_path.split(':') {
        let p = Path::new(d).join(ty);
        if p.is_file() {
            return p;
        }
    }
    panic!("plugin {ty} not found in {cni_path}")
}

fn chain_exec(
    node: &Node,
    cni_path: &str,
    verb: &str,
    req: &Value,
    att: Option<&Attachment>,
) -> PluginOutput {
    let ty = req["type"].as_str().expect("plugin type");
    let bin = find_in_path(cni_path, ty);
    let mut env: Vec<(String, String)> = vec![
        ("CNI_COMMAND".into(), verb.into()),
        ("CNI_PATH".into(), cni_path.into()),
    ];
    if let Some(a) = att {
        env.push(("CNI_CONTAINERID".into(), a.container_id.clone()));
        env.push(("CNI_NETNS".into(), a.netns.clone()));
        env.push(("CNI_IFNAME".into(), a.ifname.clone()));
        if let Some(args) = &a.cni_args {
            env.push(("CNI_ARGS".into(), args.clone()));
        }
    }
    run(&bin.to_string_lossy(), &env, &bytes(req), node)
}

/// ADD over a conflist, in order, each plugin getting the previous result. Returns the
/// final result, or the failing plugin's output.
pub fn chain_add(
    node: &Node,
    cni_path: &str,
    conflist: &Value,
    att: &Attachment,
) -> Result<Value, PluginOutput> {
    let mut prev: Option<Value> = None;
    for p in conflist["plugins"].as_array().expect("plugins") {
        let req = chain_request(conflist, p, att, prev.as_ref());
        let out = chain_exec(node, cni_path, "ADD", &req, Some(att));
        if out.status != 0 {
            return Err(out);
        }
        match parse_single_object(&out.stdout) {
            Ok(m) => prev = Some(Value::Object(m)),
            Err(_) => return Err(out),
        }
    }
    Ok(prev.unwrap_or(Value::Null))
}

/// CHECK over a conflist, in order, with `prevResult` = the cached final result.
pub fn chain_check(
    node: &Node,
    cni_path: &str,
    conflist: &Value,
    att: &Attachment,
    result: &Value,
) -> Result<(), PluginOutput> {
    for p in conflist["plugins"].as_array().expect("plugins") {
        let req = chain_request(conflist, p, att, Some(result));
        let out = chain_exec(node, cni_path, "CHECK", &req, Some(att));
        if out.status != 0 {
            return Err(out);
        }
    }
    Ok(())
}

/// DEL over a conflist in reverse order, `prevResult` = the cached result (if any).
pub fn chain_del(
    node: &Node,
    cni_path: &str,
    conflist: &Value,
    att: &Attachment,
    result: Option<&Value>,
) -> Result<(), PluginOutput> {
    for p in conflist["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .rev()
    {
        let req = chain_request(conflist, p, att, result);
        let out = chain_exec(node, cni_path, "DEL", &req, Some(att));
        if out.status != 0 {
            return Err(out);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Stub plugins (fixtures written into the test's temp dir)
// ---------------------------------------------------------------------------------------

/// A `#!/bin/sh` stub CNI plugin in `<tmp>/bin/<name>`. Every call appends `CNI_COMMAND`
/// to `<log>/calls`, saves its stdin to `<log>/stdin.<VERB>` and its `CNI_*` environment to
/// `<log>/env.<VERB>`, then prints `<log>/reply.<VERB>` (if any) and exits with
/// `<log>/exit.<VERB>` (default 0). VERSION answers with all of 0.3.0..1.1.0 by default.
pub struct Stub {
    pub name: String,
    pub bin_dir: PathBuf,
    pub log_dir: PathBuf,
}

impl Stub {
    /// Canned reply for `verb`: exit code and stdout.
    pub fn reply(&self, verb: &str, exit_code: i32, stdout: &str) {
        std::fs::write(self.log_dir.join(format!("reply.{verb}")), stdout).unwrap();
        std::fs::write(
            self.log_dir.join(format!("exit.{verb}")),
            exit_code.to_string(),
        )
        .unwrap();
    }

    /// The verbs it was called with, in order.
    pub fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.log_dir.join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Calls other than VERSION probes.
    pub fn verb_calls(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| c != "VERSION")
            .collect()
    }

    /// Stdin bytes of the last call with `verb`.
    pub fn stdin(&self, verb: &str) -> Option<Vec<u8>> {
        std::fs::read(self.log_dir.join(format!("stdin.{verb}"))).ok()
    }

    /// `CNI_*` environment of the last call with `verb`.
    pub fn env(&self, verb: &str) -> Option<BTreeMap<String, String>> {
        let s = std::fs::read_to_string(self.log_dir.join(format!("env.{verb}"))).ok()?;
        Some(
            s.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// `CNI_PATH` = the stub's dir, then the weft binaries' dir.
    pub fn cni_path(&self) -> String {
        format!("{}:{}", self.bin_dir.display(), bin_dir())
    }
}

impl Fixture {
    /// Create a stub plugin named `name` (see [`Stub`]).
    pub fn stub_plugin(&self, name: &str) -> Stub {
        let log_dir = self.tmp.path().join(format!("stub-{name}"));
        std::fs::create_dir_all(&log_dir).unwrap();
        let d = log_dir.display();
        let script = format!(
            r#"#!/bin/sh
d='{d}'
echo "$CNI_COMMAND" >> "$d/calls"
cat > "$d/stdin.$CNI_COMMAND"
env | grep '^CNI_' | sort > "$d/env.$CNI_COMMAND"
if [ -f "$d/reply.$CNI_COMMAND" ]; then cat "$d/reply.$CNI_COMMAND"; fi
if [ -f "$d/exit.$CNI_COMMAND" ]; then exit "$(cat "$d/exit.$CNI_COMMAND")"; fi
exit 0
"#
        );
        let bin_dir = self.write_stub(name, &script);
        let stub = Stub {
            name: name.to_string(),
            bin_dir,
            log_dir,
        };
        stub.reply(
            "VERSION",
            0,
            r#"{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}"#,
        );
        stub
    }
}
