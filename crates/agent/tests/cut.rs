//! `--policy-cut-established` on UDP against the real kernel, one packet at a time, where
//! the lab's updates test can only catch it by chance under load: a reply already on its way
//! when a change denies a request/response flow.
//!
//! A node namespace routes between two pods: e (app=batch) and g (app=db, the db policy
//! takes only web on UDP 7600). e → g:7600 is established while no policy selects g, then
//! the policy arrives and the node's conntrack is swept; g's reply to a datagram from before
//! the policy is the "late reply".

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use weft_agent::policy::cut::{Sweep, sweep_here};
use weft_nft::conntrack::{Conntrack, CtEntry};
use weft_policy::World;
use weft_policy::plan::{self, CUT_MARK, Plan, PlanOptions};
use weft_policy::testing::{ip, node, pod, policies};
use weft_testkit::{TempDir, TestNs, require_root};

const E: &str = "10.244.0.4";
const G: &str = "10.244.0.2";
const PORT: u16 = 7600;
const E_PORT: u16 = 40000;
const TABLE: &str = "wtcut_policy";

/// db takes web on UDP 7600 only.
const DB: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{protocol: UDP, port: 7600}]
";

fn plan(with_policy: bool) -> Plan {
    let world = World {
        namespaces: vec![],
        nodes: vec![node("n1", "10.244.0.1", "10.244.0.0/26")],
        endpoints: vec![
            pod("shop", "g", "n1", &[G], "app=db"),
            pod("shop", "e", "n1", &[E], "app=batch"),
        ],
        policies: if with_policy { policies(DB) } else { vec![] },
    };
    let opts = PlanOptions {
        table: TABLE.into(),
        cut_established: true,
        ..PlanOptions::new("n1")
    };
    plan::compile(&world, &opts)
}

/// The node and its two pods, routed as weft's ptp mode wires them: a /32 per pod behind
/// its veth, the pods' default route via 169.254.1.1 on the node's end.
struct Lab {
    node: TestNs,
    e: TestNs,
    g: TestNs,
    scratch: TempDir,
}

impl Lab {
    fn new() -> Lab {
        let lab = Lab {
            node: TestNs::new("wtcutn"),
            e: TestNs::new("wtcute"),
            g: TestNs::new("wtcutg"),
            scratch: TempDir::new("agent-cut"),
        };
        lab.node
            .exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        for (pod, host, addr) in [(&lab.e, "ve", E), (&lab.g, "vg", G)] {
            lab.node.ip(&[
                "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", &pod.name,
            ]);
            lab.node.ip(&["addr", "add", "169.254.1.1/32", "dev", host]);
            lab.node.ip(&["link", "set", host, "up"]);
            lab.node
                .ip(&["route", "add", &format!("{addr}/32"), "dev", host]);
            pod.ip(&["addr", "add", &format!("{addr}/32"), "dev", "eth0"]);
            pod.ip(&["link", "set", "eth0", "up"]);
            pod.ip(&[
                "route",
                "add",
                "169.254.1.1",
                "dev",
                "eth0",
                "scope",
                "link",
            ]);
            pod.ip(&[
                "route",
                "add",
                "default",
                "via",
                "169.254.1.1",
                "dev",
                "eth0",
            ]);
        }
        lab
    }

    /// Replaces the node's table with `p`, in one nft transaction.
    fn load(&self, p: &Plan) {
        let script = format!(
            "table inet {TABLE} {{}}\ndelete table inet {TABLE}\n{}",
            plan::render(p)
        );
        let file = self.scratch.path().join("plan.nft");
        std::fs::write(&file, script).unwrap();
        self.node.exec_ok(&["nft", "-f", file.to_str().unwrap()]);
    }

    fn sweep(&self, p: &Plan) -> Sweep {
        let p = p.clone();
        self.node.run(move || sweep_here(&p)).unwrap()
    }

    fn entries(&self) -> Vec<CtEntry> {
        self.node
            .run(|| Conntrack::new()?.dump())
            .unwrap()
            .into_iter()
            .filter(|e| e.orig.protocol == 17)
            .collect()
    }
}

/// A bound UDP socket inside `ns` that gives up on a read after 300 ms.
fn socket(ns: &TestNs, addr: &str, port: u16) -> UdpSocket {
    let at = SocketAddr::new(ip(addr), port);
    let s = ns.run(move || UdpSocket::bind(at)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    s
}

fn arrives(s: &UdpSocket) -> bool {
    let mut buf = [0u8; 16];
    s.recv_from(&mut buf).is_ok()
}

/// e and g have exchanged a datagram and its reply under `plan(false)`, and g holds a
/// second datagram of e's that it has not answered yet.
fn established(lab: &Lab) -> (UdpSocket, UdpSocket) {
    lab.load(&plan(false));
    let (e, g) = (socket(&lab.e, E, E_PORT), socket(&lab.g, G, PORT));
    let to_g = SocketAddr::new(ip(G), PORT);
    let to_e = SocketAddr::new(ip(E), E_PORT);
    // The first datagram may wait for neighbour resolution: allow a few.
    assert!(
        (0..5).any(|_| {
            e.send_to(b"req", to_g).unwrap();
            arrives(&g)
        }),
        "e → g does not pass without a policy"
    );
    g.send_to(b"rep", to_e).unwrap();
    assert!(arrives(&e), "g → e reply lost");
    e.send_to(b"req2", to_g).unwrap();
    assert!(arrives(&g), "e → g lost");
    (e, g)
}

#[test]
fn a_cut_udp_flow_stays_cut_when_a_late_reply_crosses_it() {
    require_root!();
    let lab = Lab::new();
    let (e, g) = established(&lab);
    let (to_g, to_e) = (SocketAddr::new(ip(G), PORT), SocketAddr::new(ip(E), E_PORT));

    let denied = plan(true);
    lab.load(&denied);
    let s = lab.sweep(&denied);
    assert_eq!((s.cut, s.released), (1, 0), "{s:?}");
    let marked: Vec<_> = lab
        .entries()
        .into_iter()
        .filter(|x| x.mark & CUT_MARK != 0)
        .collect();
    assert_eq!(marked.len(), 1, "{:?}", lab.entries());
    assert_eq!(marked[0].orig.dport, PORT);

    // g answers req2 now: the reply is dropped, and starts nothing.
    g.send_to(b"late", to_e).unwrap();
    assert!(!arrives(&e), "the late reply crossed the cut");
    for _ in 0..3 {
        e.send_to(b"again", to_g).unwrap();
        assert!(!arrives(&g), "e → g flows again after the cut");
    }
    // Nothing reversed either: the one entry of the flow is still the marked one.
    assert_eq!(lab.entries().len(), 1, "{:?}", lab.entries());
    // Swept again under the same plan: nothing more to do.
    assert_eq!(lab.sweep(&denied).cut, 0);

    // The policy goes: the mark is cleared and the flow passes at once, both ways.
    let open = plan(false);
    lab.load(&open);
    let s = lab.sweep(&open);
    assert_eq!((s.cut, s.released), (0, 1), "{s:?}");
    e.send_to(b"back", to_g).unwrap();
    assert!(arrives(&g), "e → g stays cut after the policy went");
    g.send_to(b"rep", to_e).unwrap();
    assert!(arrives(&e), "g → e stays cut after the policy went");
}

/// Why the cut marks UDP entries rather than deleting them: with the entry deleted, the late
/// reply starts the reversed entry (g's egress is allowed), and e's datagrams are then its
/// established replies. If this ever stops holding, the kernel changed, not weft.
#[test]
fn a_deleted_udp_entry_is_restarted_by_a_late_reply() {
    require_root!();
    let lab = Lab::new();
    let (e, g) = established(&lab);
    let (to_g, to_e) = (SocketAddr::new(ip(G), PORT), SocketAddr::new(ip(E), E_PORT));
    lab.load(&plan(true));
    let entries = lab.entries();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = entries[0];
    assert!(
        lab.node
            .run(move || Conntrack::new()?.delete(&entry))
            .unwrap()
    );
    e.send_to(b"denied", to_g).unwrap();
    assert!(!arrives(&g), "a new e → g passed the policy");

    g.send_to(b"late", to_e).unwrap();
    assert!(arrives(&e), "g's late reply was dropped");
    e.send_to(b"readmitted", to_g).unwrap();
    assert!(
        arrives(&g),
        "e → g did not pass as the reversed entry's reply"
    );
    let reversed = lab.entries();
    assert!(
        reversed.len() == 1 && reversed[0].orig.src == ip(G),
        "{reversed:?}"
    );
}
