//! Shared by the agent's tests: a private network namespace with an underlay address, a
//! weftd child process and a temp dir, each removed on drop.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use weft_net::NetNs;

pub fn ip(args: &[&str]) -> Output {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {out:?}");
    out
}

/// A network namespace with loopback up and an underlay veth holding 192.0.2.10/24;
/// removed on drop.
pub struct TestNs(pub String);

impl TestNs {
    pub fn new() -> TestNs {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "wtag{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        let ns = TestNs(name);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"]);
        ip(&[
            "-n", &ns.0, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
        ]);
        ip(&["-n", &ns.0, "addr", "add", "192.0.2.10/24", "dev", "eth0"]);
        ip(&["-n", &ns.0, "link", "set", "eth0", "up"]);
        ip(&["-n", &ns.0, "link", "set", "eth1", "up"]);
        ns
    }

    pub fn open(&self) -> NetNs {
        NetNs::open(Path::new(&format!("/run/netns/{}", self.0))).expect("open netns")
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

pub struct Weftd(pub Child);

impl Weftd {
    pub fn stderr(&mut self) -> String {
        let mut err = String::new();
        if let Some(mut e) = self.0.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        err
    }
}

impl Drop for Weftd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Dir(pub PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The weftd command line both test files share: node `name` on underlay 192.0.2.10 with
/// every file under `dir` and the cluster config `dir/cluster.json`; the caller adds the
/// datastore flags. stderr is piped for [`Weftd::stderr`].
pub fn weftd_command(dir: &Path, name: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weftd"));
    cmd.args(["--node-name", name, "--underlay-address", "192.0.2.10"])
        .arg("--cluster-config")
        .arg(dir.join("cluster.json"))
        .arg("--cni-conf-dir")
        .arg(dir.join("net.d"))
        .arg("--run-dir")
        .arg(dir.join("run"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}
