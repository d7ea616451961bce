//! NetworkPolicy in a lab: manifests applied through `weftctl apply --lab`, the sync barrier
//! (`weftctl lab policy-sync`: every node's weftd has loaded the datastore's current view and
//! committed it), weftd's policy status, and single-shot reachability probes with real TCP
//! connections and UDP datagrams. A probe makes one attempt: after a sync (or after `lab pod
//! add`, which returns once the pod's policy is in the kernel) nothing should need a retry.

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::traffic::in_pod;
use super::{Lab, TempDir, text, weftctl};

/// How long a TCP connect may take before the flow counts as denied (a dropped SYN).
pub const DENY_WAIT: Duration = Duration::from_millis(700);

impl Lab {
    /// `weftctl apply --lab <lab> -f <yaml>`; panics on failure.
    pub fn apply(&self, yaml: &str) {
        self.manifest("apply", yaml);
    }

    /// `weftctl delete --lab <lab> -f <yaml>`; panics on failure.
    pub fn delete(&self, yaml: &str) {
        self.manifest("delete", yaml);
    }

    fn manifest(&self, verb: &str, yaml: &str) {
        let dir = TempDir::new("labtest");
        let path = dir.path().join("manifest.yaml");
        std::fs::write(&path, yaml).unwrap();
        let p = path.to_string_lossy();
        let out = weftctl(&[verb, "--lab", &self.name, "-f", p.as_ref()]);
        assert!(out.status.success(), "weftctl {verb}:\n{}", text(&out));
    }

    /// Waits until every node's weftd enforces the datastore's current policy view.
    pub fn policy_sync(&self) {
        self.ok(&["policy-sync"], &[]);
    }

    /// `{"op":"status"}` on a node's weftd socket: the status object.
    pub fn weftd_status(&self, node: &str) -> Value {
        use std::io::{BufRead, BufReader, Write};
        // A kubelet node's weftd runs in the DaemonSet's pod, its run dir the node's
        // /run/weft (the node's view).
        let kubelet = self
            .state_dir()
            .join(format!("nodes/{node}/view/run/weft/weftd.sock"));
        let path = if kubelet.exists() {
            kubelet
        } else {
            self.state_dir()
                .join(format!("nodes/{node}/run/weftd.sock"))
        };
        let mut s = std::os::unix::net::UnixStream::connect(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"{\"op\":\"status\"}\n").unwrap();
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(v["ok"], true, "{v}");
        v["status"].clone()
    }

    /// Waits (10 s at most) until the node's weftd reports its policy `inSync` (loaded,
    /// applied, nothing pending); returns that status.
    pub fn wait_policy_in_sync(&self, node: &str) -> Value {
        let (st, _) = super::wait_for(
            Duration::from_secs(10),
            || {
                let st = self.weftd_status(node);
                (st["policy"]["inSync"] == true).then_some(st)
            },
            || format!("{node}: {}", self.weftd_status(node)),
        );
        st
    }

    /// Packets the node's policy table dropped for classes that involve `policy`
    /// (`ns/name`).
    pub fn denied_by(&self, node: &str, policy: &str) -> u64 {
        let st = self.weftd_status(node);
        st["policy"]["denied"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| {
                d["policies"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|x| x == policy))
            })
            .filter_map(|d| d["packets"].as_u64())
            .sum()
    }

    /// Packets weftd on `node` counted as denied to or from pod `pod` ("ns/name") by
    /// `policy` ("ns/name"): the per-pod counters of its status (`deniedPods`).
    pub fn denied_pod(&self, node: &str, pod: &str, policy: &str) -> u64 {
        let st = self.weftd_status(node);
        st["policy"]["deniedPods"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["pod"] == pod)
            .filter(|d| {
                d["policies"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|x| x == policy))
            })
            .filter_map(|d| d["packets"].as_u64())
            .sum()
    }
}

/// Whether a TCP connection from pod `from` to pod `to` (IPv4, port `port`) is accepted:
/// one attempt, `DENY_WAIT` at most.
pub fn tcp_open(lab: &Lab, from: &str, to: &str, port: u16) -> bool {
    let dst = lab.pod_addr(to, false).expect("pod has IPv4");
    let addr = SocketAddr::new(dst, port);
    let listener = in_pod(lab, to, || TcpListener::bind(addr))
        .unwrap_or_else(|e| panic!("listen {addr} in {to}: {e}"));
    let ok = in_pod(lab, from, || TcpStream::connect_timeout(&addr, DENY_WAIT)).is_ok();
    drop(listener);
    ok
}

/// Whether UDP datagrams from pod `from` reach pod `to` (IPv4, port `port`): a few
/// datagrams, any arriving counts.
pub fn udp_open(lab: &Lab, from: &str, to: &str, port: u16) -> bool {
    let dst: IpAddr = lab.pod_addr(to, false).expect("pod has IPv4");
    let addr = SocketAddr::new(dst, port);
    let rx = in_pod(lab, to, || UdpSocket::bind(addr))
        .unwrap_or_else(|e| panic!("bind {addr} in {to}: {e}"));
    rx.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let tx = in_pod(lab, from, || UdpSocket::bind("0.0.0.0:0")).unwrap();
    let deadline = Instant::now() + DENY_WAIT;
    let mut buf = [0u8; 64];
    while Instant::now() < deadline {
        let _ = tx.send_to(b"probe", addr);
        if rx.recv(&mut buf).is_ok() {
            return true;
        }
    }
    false
}

/// Asserts each (from, to, expected) cell with TCP and UDP, and prints the differing ones.
pub fn assert_matrix(lab: &Lab, cells: &[(&str, &str, bool)], port: u16, what: &str) {
    let mut wrong = Vec::new();
    for (i, (from, to, want)) in cells.iter().enumerate() {
        let p = port + i as u16;
        let tcp = tcp_open(lab, from, to, p);
        let udp = udp_open(lab, from, to, p);
        if tcp != *want || udp != *want {
            wrong.push(format!(
                "{from} → {to}: want {}, tcp {}, udp {}",
                open_str(*want),
                open_str(tcp),
                open_str(udp)
            ));
        }
    }
    assert!(wrong.is_empty(), "{what}:\n{}", wrong.join("\n"));
}

fn open_str(b: bool) -> &'static str {
    if b { "open" } else { "denied" }
}
