//! Support for the lab tests: the built `weftctl` run as a person would, a lab guard that
//! runs `lab down` on drop (also when a test panics), and inspection of what a lab left on
//! the machine (namespaces by prefix, the state dir, processes naming the state dir).
//!
//! Lab names are `t<pid><k>`: unique per test process and test, lowercase alphanumerics as
//! the lab requires.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn weftctl_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_weftctl"))
}

/// Where cargo put weftctl, and with a workspace build also weft, weft-ipam and weftd.
pub fn bin_dir() -> PathBuf {
    weftctl_bin()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Panics with what to build when the binaries a full lab needs are not next to weftctl.
pub fn require_cluster_binaries() {
    for bin in ["weftd", "weft", "weft-ipam"] {
        let path = bin_dir().join(bin);
        assert!(
            path.is_file(),
            "{} is missing: build the workspace first (cargo build --workspace, or cargo test --workspace)",
            path.display()
        );
    }
}

/// `weftctl args…` with the environment given.
pub fn weftctl_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(weftctl_bin());
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run weftctl: {e}"))
}

pub fn weftctl(args: &[&str]) -> Output {
    weftctl_env(args, &[])
}

pub fn text(out: &Output) -> String {
    format!(
        "status {}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `weftctl args…`, which must succeed; returns stdout.
pub fn weftctl_ok(args: &[&str]) -> String {
    let out = weftctl(args);
    assert!(
        out.status.success(),
        "weftctl {args:?} failed:\n{}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A lab name no other test (or test run) uses.
pub fn unique_name() -> String {
    let k = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("t{}{k}", std::process::id())
}

/// A lab that is brought down when the guard drops.
pub struct Lab {
    pub name: String,
}

impl Lab {
    pub fn new() -> Lab {
        Lab {
            name: unique_name(),
        }
    }

    /// `weftctl lab <sub> --name <lab> args…`.
    pub fn cmd(&self, sub: &[&str], args: &[&str]) -> Output {
        let mut a = vec!["lab"];
        a.extend_from_slice(sub);
        a.extend(["--name", &self.name]);
        a.extend_from_slice(args);
        weftctl(&a)
    }

    pub fn ok(&self, sub: &[&str], args: &[&str]) -> String {
        let out = self.cmd(sub, args);
        assert!(
            out.status.success(),
            "weftctl lab {sub:?} {args:?} failed:\n{}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `lab up` with `--bin-dir` pointing at cargo's output.
    pub fn up(&self, args: &[&str]) -> Output {
        let bin = bin_dir();
        let bin = bin.to_string_lossy();
        let mut a = vec!["--bin-dir", bin.as_ref()];
        a.extend_from_slice(args);
        self.cmd(&["up"], &a)
    }

    pub fn up_ok(&self, args: &[&str]) -> String {
        let out = self.up(args);
        assert!(
            out.status.success(),
            "lab up {args:?} failed:\n{}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn prefix(&self) -> String {
        format!("wl{}-", self.name)
    }

    pub fn ns(&self, short: &str) -> String {
        format!("{}{short}", self.prefix())
    }

    pub fn state_dir(&self) -> PathBuf {
        PathBuf::from("/run/weft-lab").join(&self.name)
    }

    pub fn state(&self) -> Value {
        let path = self.state_dir().join("state.json");
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    pub fn check_json(&self) -> (bool, Value) {
        let out = self.cmd(&["check"], &["-o", "json"]);
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("check -o json: {e}\n{}", text(&out)));
        (out.status.success(), report)
    }

    /// Namespaces, state dir and processes the lab left on the machine, for a message.
    pub fn leftovers(&self) -> Vec<String> {
        leftovers(&self.name)
    }

    pub fn assert_gone(&self) {
        let left = self.leftovers();
        assert!(left.is_empty(), "lab {} left: {left:?}", self.name);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let out = weftctl(&["lab", "down", "--name", &self.name]);
        if !out.status.success() {
            eprintln!("cleanup of lab {}: {}", self.name, text(&out));
        }
    }
}

/// Everything of lab `name` still on the machine.
pub fn leftovers(name: &str) -> Vec<String> {
    let prefix = format!("wl{name}-");
    let mut left: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(&prefix))
                .map(|n| format!("netns {n}"))
                .collect()
        })
        .unwrap_or_default();
    let dir = PathBuf::from("/run/weft-lab").join(name);
    if dir.exists() {
        left.push(format!("dir {}", dir.display()));
    }
    let marker = format!("/run/weft-lab/{name}/");
    for pid in processes_mentioning(&marker) {
        left.push(format!("process {pid}"));
    }
    left
}

/// Live (non-zombie) processes whose command line contains `marker`.
pub fn processes_mentioning(marker: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains(marker) && alive(*pid)
        })
        .collect()
}

pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next().map(str::to_owned));
        !matches!(state.as_deref(), Some("Z" | "X"))
    })
}

/// `ip -n <ns> -j args…` parsed.
pub fn ipj(ns: &str, args: &[&str]) -> Value {
    let mut a = vec!["-n", ns, "-j"];
    a.extend_from_slice(args);
    let out = Command::new("ip")
        .args(&a)
        .output()
        .unwrap_or_else(|e| panic!("ip: {e}"));
    assert!(out.status.success(), "ip {a:?}: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("ip -j {a:?}: {e}"))
}

/// `ip netns exec <ns> prog args…`.
pub fn in_ns(ns: &str, prog: &str, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", ns, prog])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip netns exec {ns} {prog}: {e}"))
}

/// The inode of a named namespace: the same inode means the same namespace, not a new one.
pub fn netns_inode(ns: &str) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/run/netns/{ns}"))
        .unwrap_or_else(|e| panic!("netns {ns}: {e}"))
        .ino()
}

/// The cells of a check report.
pub fn cells(report: &Value) -> Vec<Value> {
    report["cells"].as_array().cloned().unwrap_or_default()
}

/// A directory under /tmp removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let k = COUNTER.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("weftctl-labtest-{}-{k}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
