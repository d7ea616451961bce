//! Shared by the agent's tests: a private network namespace with an underlay address and a
//! weftd child process, each removed on drop (temp dirs and etcd: weft-testkit).

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};

use weft_net::NetNs;

/// weft-testkit's namespace (`wtag…` unless told otherwise, lo up) with an underlay veth holding 192.0.2.10/24;
/// removed on drop.
pub struct TestNs(pub weft_testkit::TestNs);

impl TestNs {
    pub fn new() -> TestNs {
        TestNs::with_prefix("wtag")
    }

    /// The same, named `<prefix>…` so a test file's namespaces are told apart.
    pub fn with_prefix(prefix: &str) -> TestNs {
        let ns = weft_testkit::TestNs::new(prefix);
        ns.ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
        ]);
        ns.ip(&["addr", "add", "192.0.2.10/24", "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        ns.ip(&["link", "set", "eth1", "up"]);
        TestNs(ns)
    }

    /// The namespace as weft-net's [`NetNs`], to run the agent inside it.
    pub fn open(&self) -> NetNs {
        NetNs::open(&self.0.path()).expect("open netns")
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
