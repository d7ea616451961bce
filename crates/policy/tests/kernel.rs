//! Real packets through a compiled plan: a node namespace routing between pod namespaces
//! (ptp style), the plan loaded with `nft -f`, TCP connections that succeed or time out as
//! the evaluator says; then a diff applied under the same sockets flips exactly the changed
//! flow. Every namespace carries a unique prefix and is removed on drop.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use weft_policy::plan::{self, PlanOptions};
use weft_policy::testing::*;
use weft_policy::{Protocol, World, evaluate_addrs};
use weft_testkit::TestNs;

/// The namespaces by role (`wpt<role>…`, removed when the lab drops, after its servers).
struct Lab {
    namespaces: BTreeMap<&'static str, TestNs>,
    servers: Vec<Child>,
}

impl Lab {
    fn ns(&self, role: &str) -> String {
        self.namespaces[role].name.clone()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

fn run(args: &[&str]) {
    weft_testkit::run(args[0], &args[1..]);
}

fn nft(lab: &Lab, text: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &lab.ns("node"), "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Debian's python3 (scripts/lib/deps.sh installs it), by path: PATH may find another one
/// first (pyenv's, on the image these tests run on), which a fresh machine does not have.
const PYTHON: &str = "/usr/bin/python3";

/// Whether a TCP connection from namespace `from` to addr:port is established in time.
fn connects(lab: &Lab, from: &str, addr: &str, port: u16) -> bool {
    let code = format!(
        "import socket,sys\ntry:\n  socket.create_connection(('{addr}', {port}), timeout=0.6).close()\nexcept OSError:\n  sys.exit(1)\n"
    );
    Command::new("ip")
        .args(["netns", "exec", &lab.ns(from), PYTHON, "-c", &code])
        .status()
        .unwrap()
        .success()
}

fn lab_world(client_label: &str) -> World {
    let mut w = World {
        namespaces: vec![],
        nodes: vec![weft_policy::Node {
            name: "a".into(),
            addresses: vec![ip("10.0.1.1")],
            pod_cidrs: vec!["10.0.1.0/24".parse().unwrap()],
        }],
        endpoints: vec![
            pod("default", "p1", "a", &["10.0.1.2"], client_label),
            pod("default", "p2", "a", &["10.0.1.3"], "app=server"),
        ],
        policies: vec![],
    };
    w.policies = policies(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: server, namespace: default}\nspec:\n  podSelector: {matchLabels: {app: server}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {app: client}}}]\n    ports: [{port: 8080}]\n",
    );
    w
}

#[test]
fn packets_follow_the_plan() {
    weft_testkit::require_root!();
    let mut lab = Lab {
        namespaces: ["node", "p1", "p2", "p3"]
            .into_iter()
            .map(|role| (role, TestNs::new(&format!("wpt{role}"))))
            .collect(),
        servers: Vec::new(),
    };
    let node = lab.ns("node");
    run(&[
        "ip",
        "netns",
        "exec",
        &node,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ]);
    for (i, role) in ["p1", "p2", "p3"].iter().enumerate() {
        let pod_ns = lab.ns(role);
        let host_if = format!("v{}", i + 1);
        let pod_ip = format!("10.0.1.{}", i + 2);
        run(&[
            "ip", "link", "add", &host_if, "netns", &node, "type", "veth", "peer", "name", "eth0",
            "netns", &pod_ns,
        ]);
        run(&["ip", "-n", &node, "link", "set", &host_if, "up"]);
        run(&[
            "ip",
            "-n",
            &node,
            "addr",
            "add",
            "10.0.1.1/32",
            "dev",
            &host_if,
        ]);
        run(&[
            "ip",
            "-n",
            &node,
            "route",
            "add",
            &format!("{pod_ip}/32"),
            "dev",
            &host_if,
        ]);
        run(&["ip", "-n", &pod_ns, "link", "set", "eth0", "up"]);
        run(&[
            "ip",
            "-n",
            &pod_ns,
            "addr",
            "add",
            &format!("{pod_ip}/32"),
            "dev",
            "eth0",
        ]);
        run(&[
            "ip",
            "-n",
            &pod_ns,
            "route",
            "add",
            "10.0.1.1/32",
            "dev",
            "eth0",
        ]);
        run(&[
            "ip", "-n", &pod_ns, "route", "add", "default", "via", "10.0.1.1", "dev", "eth0",
        ]);
    }
    let server = "import socket,threading\ndef serve(p):\n  s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', p)); s.listen(64)\n  while True:\n    c,_=s.accept(); c.close()\nfor p in (8080, 9090):\n  threading.Thread(target=serve, args=(p,), daemon=True).start()\nthreading.Event().wait()\n";
    for role in ["p1", "p2", "p3"] {
        lab.servers.push(
            Command::new("ip")
                .args(["netns", "exec", &lab.ns(role), PYTHON, "-c", server])
                .spawn()
                .unwrap(),
        );
    }
    std::thread::sleep(Duration::from_millis(400));
    assert!(
        connects(&lab, "p1", "10.0.1.3", 9090),
        "the lab routes before any policy"
    );

    let w = lab_world("app=client");
    let o = PlanOptions::new("a");
    let p = plan::compile(&w, &o);
    nft(&lab, &plan::render(&p));
    // (from, to address, port, expected): p3 (10.0.1.4) is inside the node's pod range but
    // no known pod: default-deny both ways; the node itself may reach any pod.
    let cases = [
        ("p1", "10.0.1.3", 8080, true),
        ("p1", "10.0.1.3", 9090, false),
        ("p2", "10.0.1.2", 9090, true),
        ("p3", "10.0.1.3", 8080, false),
        ("p1", "10.0.1.4", 8080, false),
        ("node", "10.0.1.3", 9090, true),
    ];
    let from_addr = |f: &str| match f {
        "p1" => "10.0.1.2",
        "p2" => "10.0.1.3",
        "p3" => "10.0.1.4",
        _ => "10.0.1.1",
    };
    for (from, to, port, want) in cases {
        let v = evaluate_addrs(&w, ip(from_addr(from)), ip(to), port, Protocol::Tcp);
        assert_eq!(v.allowed, want, "evaluator: {v}");
        assert_eq!(
            connects(&lab, from, to, port),
            want,
            "kernel: {from} -> {to}:{port}\n{v}"
        );
    }

    // Relabel p1: the diff, applied as one transaction, cuts p1's new connections to p2:8080
    // and changes nothing else.
    let w2 = lab_world("app=other");
    let p2 = plan::compile(&w2, &o);
    nft(&lab, &plan::render_ops(&o.table, &plan::diff(&p, &p2)));
    assert!(!connects(&lab, "p1", "10.0.1.3", 8080));
    assert!(connects(&lab, "p2", "10.0.1.2", 9090));
    assert!(connects(&lab, "node", "10.0.1.3", 9090));
    // And back.
    nft(&lab, &plan::render_ops(&o.table, &plan::diff(&p2, &p)));
    assert!(connects(&lab, "p1", "10.0.1.3", 8080));
}
