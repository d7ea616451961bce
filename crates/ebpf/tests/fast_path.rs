//! The fast path on a real kernel (root): a node namespace (`wteb…`) with a bridge and two
//! bridged pods, plus one routed pod (ptp-like), all namespaces of this test; the program
//! loaded, pinned in a bpffs directory of this test's own and attached by weft-ebpf as weftd
//! does it. Proves by the counters which path each packet took:
//!
//! - bridged pod → pod and routed pod → pod are delivered by `bpf_redirect_peer`;
//! - pod → node, ARP and a policed pod's packets go on down the kernel path, where an
//!   nftables drop still drops;
//! - pod → "Service" DNATed to a pod on the same node: the backend's replies are left to
//!   conntrack (a kernel-path flow), which gives them the Service's address back;
//! - reopening the pins (a weftd restart) attaches nothing again; detach and `remove_all`
//!   leave no link, pin, program or qdisc;
//! - a pod policed mid-connection keeps that connection on the fast path while established
//!   connections are kept (its new ones meet nftables); marked cut, its packets are dropped
//!   until released; rejudged, it meets nftables' verdict.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use weft_ebpf::{Datapath, EndpointValue, Established, FLAG_POLICED, FastConn};
use weft_testkit::TestNs;

use common::{Pins, counters, ifindex, mac_of, serve, tcp};

fn ping(from: &TestNs, to: &str) -> bool {
    from.exec(&["ping", "-c", "2", "-i", "0.05", "-W", "1", "-q", to])
        .0
}

/// A pod namespace wired to `node` by a veth whose host end is `host`.
fn pod(node: &TestNs, host: &str) -> TestNs {
    let p = TestNs::new("wtebp");
    node.ip(&[
        "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", &p.name,
    ]);
    node.ip(&["link", "set", host, "up"]);
    p.ip(&["link", "set", "eth0", "up"]);
    p
}

/// The node of these tests: a bridge `br0` (10.98.0.1/24) with pods A (10.98.0.2) and B
/// (10.98.0.3), and C (10.98.1.2/32) routed as weft's ptp mode does it; all three in the
/// endpoint map, unpoliced, and attached.
struct World {
    pins: Pins,
    node: TestNs,
    a: TestNs,
    b: TestNs,
    c: TestNs,
}

fn world(tag: &str) -> World {
    let pins = Pins::new(tag);
    let node = TestNs::new("wteb");
    node.exec_ok(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
    node.ip(&["link", "add", "br0", "type", "bridge"]);
    node.ip(&["addr", "add", "10.98.0.1/24", "dev", "br0"]);
    node.ip(&["link", "set", "br0", "up"]);
    let a = pod(&node, "hA");
    let b = pod(&node, "hB");
    let c = pod(&node, "hC");
    for (p, h, addr) in [(&a, "hA", "10.98.0.2/24"), (&b, "hB", "10.98.0.3/24")] {
        node.ip(&["link", "set", h, "master", "br0"]);
        p.ip(&["addr", "add", addr, "dev", "eth0"]);
        p.ip(&["route", "add", "default", "via", "10.98.0.1"]);
    }
    // C is routed, as weft's ptp mode does it: a /32 and a link-local gateway.
    node.ip(&["addr", "add", "169.254.1.1/32", "dev", "hC"]);
    node.ip(&["route", "add", "10.98.1.2/32", "dev", "hC"]);
    c.ip(&["addr", "add", "10.98.1.2/32", "dev", "eth0"]);
    c.ip(&[
        "route",
        "add",
        "169.254.1.1",
        "dev",
        "eth0",
        "scope",
        "link",
    ]);
    c.ip(&["route", "add", "default", "via", "169.254.1.1"]);

    let br_mac = mac_of(&node, "br0");
    let entries = [
        (
            "10.98.0.2",
            ifindex(&node, "hA"),
            mac_of(&a, "eth0"),
            br_mac,
        ),
        (
            "10.98.0.3",
            ifindex(&node, "hB"),
            mac_of(&b, "eth0"),
            br_mac,
        ),
        (
            "10.98.1.2",
            ifindex(&node, "hC"),
            mac_of(&c, "eth0"),
            mac_of(&node, "hC"),
        ),
    ];
    let dir = pins.0.clone();
    node.run(move || {
        let mut dp = Datapath::open(&dir).unwrap();
        for (addr, ifindex, mac, gw_mac) in entries {
            let v = EndpointValue {
                ifindex,
                flags: 0,
                mac,
                gw_mac,
            };
            dp.insert(addr.parse().unwrap(), v).unwrap();
        }
        for h in ["hA", "hB", "hC"] {
            assert!(dp.attach(h).unwrap(), "{h} attached anew");
            assert!(dp.is_attached(h).unwrap());
        }
    });

    World {
        pins,
        node,
        a,
        b,
        c,
    }
}

#[test]
fn same_node_traffic_is_redirected_policed_and_node_traffic_is_not() {
    weft_testkit::require_root!();
    // C is bound though only addressed: a field left to `..` would be dropped here, and
    // its namespace with it.
    let World {
        pins,
        node,
        a,
        b,
        c: _c,
    } = world("fp");

    // Bridged pod → pod: every IPv4 packet both ways by redirect (ARP passes).
    let before = counters(&node, &pins.0);
    assert!(ping(&a, "10.98.0.3"), "A → B");
    let after = counters(&node, &pins.0);
    assert!(
        after.redirected >= before.redirected + 4,
        "2 requests + 2 replies redirected: {before:?} → {after:?}"
    );

    // Routed pod → pod: rewritten to the destination's MAC, TTL down by one.
    let before = after;
    assert!(ping(&a, "10.98.1.2"), "A → C (routed)");
    let out = a.exec_ok(&["ping", "-c", "1", "-W", "1", "10.98.1.2"]);
    assert!(out.contains("ttl=63"), "one routed hop: {out}");
    let after = counters(&node, &pins.0);
    assert!(
        after.redirected >= before.redirected + 4,
        "{before:?} → {after:?}"
    );

    // Pod → node: the kernel path (and the ARP before it).
    let before = after;
    assert!(ping(&a, "10.98.0.1"), "A → node");
    let after = counters(&node, &pins.0);
    assert_eq!(
        after.redirected, before.redirected,
        "nothing for the node redirected"
    );
    assert!(after.passed >= before.passed + 2, "{before:?} → {after:?}");

    // A → "Service" 10.96.0.10:80, DNATed to B by the kernel path (as kube-proxy does it):
    // B's replies, from B's own address to A, must reach conntrack to get the Service's
    // address back; redirected, A would drop them.
    node.exec_ok(&["nft", "add table ip wtebnat"]);
    node.exec_ok(&[
        "nft",
        "add chain ip wtebnat pre { type nat hook prerouting priority -100 ; }",
    ]);
    node.exec_ok(&[
        "nft",
        "add rule ip wtebnat pre ip daddr 10.96.0.10 tcp dport 80 dnat to 10.98.0.3:8080",
    ]);
    serve(&b, "10.98.0.3:8080");
    let before = counters(&node, &pins.0);
    assert_eq!(tcp(&a, "10.96.0.10:80").as_deref(), Ok("10.98.0.2"));
    let after = counters(&node, &pins.0);
    assert!(
        after.kernel_flow >= before.kernel_flow + 3,
        "B's replies passed as a kernel flow: {before:?} → {after:?}"
    );
    assert_eq!(tcp(&a, "10.98.0.3:8080").as_deref(), Ok("10.98.0.2"));
    assert!(
        counters(&node, &pins.0).redirected >= after.redirected + 6,
        "a direct connection to B is still redirected"
    );
    node.exec_ok(&["nft", "delete table ip wtebnat"]);

    // C policed: its packets keep the kernel path, where a drop still drops.
    set_policed(&node, &pins.0, "10.98.1.2");
    node.exec_ok(&["nft", "add table inet wteb"]);
    node.exec_ok(&[
        "nft", "add", "chain", "inet", "wteb", "wtfwd", "{", "type", "filter", "hook", "forward",
        "priority", "0", ";", "}",
    ]);
    node.exec_ok(&["nft", "add rule inet wteb wtfwd ip daddr 10.98.1.2 drop"]);
    let before = counters(&node, &pins.0);
    assert!(
        !ping(&a, "10.98.1.2"),
        "the nftables drop of a policed pod holds"
    );
    let after = counters(&node, &pins.0);
    assert_eq!(
        after.redirected, before.redirected,
        "{before:?} → {after:?}"
    );
    assert!(after.passed >= before.passed + 2, "{before:?} → {after:?}");
    node.exec_ok(&["nft", "delete table inet wteb"]);
    assert!(
        ping(&a, "10.98.1.2"),
        "without the drop the kernel path delivers"
    );

    // A restart: the pins are reopened, nothing is attached again; then a DEL.
    let dir = pins.0.clone();
    node.run(move || {
        let mut dp = Datapath::open(&dir).unwrap();
        assert!(!dp.attach("hA").unwrap(), "still attached: left as it is");
        assert_eq!(dp.attached().unwrap(), ["hA", "hB", "hC"]);
        dp.detach("hB").unwrap();
        dp.remove("10.98.0.3".parse().unwrap()).unwrap();
        assert!(!dp.is_attached("hB").unwrap(), "DEL detaches");
        assert!(dp.is_attached("hA").unwrap());
    });
    let before = counters(&node, &pins.0);
    assert!(
        ping(&b, "10.98.0.2"),
        "B → A on the kernel path (B's program gone)"
    );
    let after = counters(&node, &pins.0);
    assert_eq!(
        after.redirected, before.redirected,
        "B is out of the map: its replies from A pass too"
    );

    // Uninstall: no pin, no program on any veth, no qdisc.
    assert!(weft_ebpf::remove_all(&pins.0).unwrap());
    assert!(!pins.0.exists());
    for h in ["hA", "hB", "hC"] {
        let qd = node.exec_ok(&["tc", "qdisc", "show", "dev", h]);
        assert!(
            !qd.contains("clsact") && !qd.contains("ingress"),
            "{h}: {qd}"
        );
        let (_, progs) = node.run(move || {
            aya::programs::SchedClassifier::query_tcx(h, aya::programs::TcAttachType::Ingress)
                .unwrap()
        });
        assert!(progs.is_empty(), "{h}: still {} programs", progs.len());
    }
    assert!(
        ping(&a, "10.98.0.3"),
        "the kernel path alone still delivers"
    );
}

#[test]
fn a_pin_dir_off_bpffs_fails_to_load() {
    weft_testkit::require_root!();
    let dir = weft_testkit::TempDir::new("weft-ebpf-notbpffs");
    let err = Datapath::open(&dir.path().join("pins")).unwrap_err();
    assert!(matches!(err, weft_ebpf::Error::NotBpffs { .. }), "{err}");
}

/// A TCP server in `ns` on `addr` that answers every line of every connection with itself.
fn echo_lines(ns: &TestNs, addr: &'static str) {
    weft_testkit::tcp::listen(ns, addr, |s| {
        std::thread::spawn(move || {
            let mut w = &s;
            for line in BufReader::new(&s).lines() {
                let Ok(line) = line else { return };
                if writeln!(w, "{line}").is_err() {
                    return;
                }
            }
        });
    });
}

/// One line there and back on `s`; an error when the answer does not come within a second.
fn roundtrip(s: &TcpStream, line: &str) -> Result<(), String> {
    let mut w = s;
    writeln!(w, "{line}").map_err(|e| e.to_string())?;
    let mut got = String::new();
    BufReader::new(s)
        .read_line(&mut got)
        .map_err(|e| e.to_string())?;
    if got.trim() == line {
        Ok(())
    } else {
        Err(format!("answered {got:?}"))
    }
}

/// A connection from `ns` to `to`, opened inside `ns` (the socket stays in its namespace).
fn connect(ns: &TestNs, to: &'static str) -> Result<TcpStream, String> {
    ns.run(move || {
        let s = TcpStream::connect_timeout(&to.parse().unwrap(), Duration::from_secs(1))
            .map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(1)))
            .map_err(|e| e.to_string())?;
        Ok(s)
    })
}

fn set_policed(node: &TestNs, dir: &std::path::Path, addr: &'static str) {
    let dir = dir.to_path_buf();
    node.run(move || {
        let mut dp = Datapath::open(&dir).unwrap();
        let addr = addr.parse().unwrap();
        let (_, v) = dp
            .endpoints()
            .unwrap()
            .into_iter()
            .find(|(a, _)| *a == addr)
            .unwrap();
        let v = EndpointValue {
            flags: FLAG_POLICED,
            ..v
        };
        dp.insert(addr, v).unwrap();
    });
}

fn established(node: &TestNs, dir: &std::path::Path, mode: Established) {
    let dir = dir.to_path_buf();
    node.run(move || {
        let mut dp = Datapath::open(&dir).unwrap();
        dp.set_established(mode).unwrap();
        assert_eq!(dp.established().unwrap(), mode);
    });
}

/// The fast connections with an end on `port`.
fn conns_on(node: &TestNs, dir: &std::path::Path, port: u16) -> Vec<FastConn> {
    let dir = dir.to_path_buf();
    node.run(move || {
        let dp = Datapath::open(&dir).unwrap();
        let mut all = dp.fast_conns().unwrap();
        all.retain(|c| c.orig.1 == port || c.resp.1 == port);
        all
    })
}

fn set_cut(node: &TestNs, dir: &std::path::Path, conn: FastConn, cut: bool) {
    let dir = dir.to_path_buf();
    node.run(move || {
        let mut dp = Datapath::open(&dir).unwrap();
        assert!(dp.set_cut(&conn.key, cut).unwrap(), "the mark changed");
        assert!(!dp.set_cut(&conn.key, cut).unwrap(), "set once only");
    });
}

/// A pod that becomes policed mid-connection: nftables (here a drop of every new connection
/// to C, which conntrack also calls a connection it meets mid-stream) judges its new
/// connections; its established one stays on the fast path while established connections
/// are kept. Marked cut (weftd's sweep under `--policy-cut-established`) its packets are
/// dropped until the mark is cleared; with `Rejudge` it meets nftables' drop.
#[test]
fn a_pod_policed_mid_connection_keeps_it_unless_it_is_cut() {
    weft_testkit::require_root!();
    let World {
        pins, node, a, c, ..
    } = world("ke");
    established(&node, &pins.0, Established::Keep);
    echo_lines(&c, "10.98.1.2:8090");
    let conn = connect(&a, "10.98.1.2:8090").expect("A → C");
    let before = counters(&node, &pins.0);
    roundtrip(&conn, "unpoliced").expect("A → C, unpoliced");
    let after = counters(&node, &pins.0);
    assert!(
        after.redirected >= before.redirected + 2,
        "{before:?} → {after:?}"
    );

    // C is now selected by a policy whose rules deny A's new connections.
    node.exec_ok(&["nft", "add table inet wtebk"]);
    node.exec_ok(&[
        "nft", "add", "chain", "inet", "wtebk", "wtfwd", "{", "type", "filter", "hook", "forward",
        "priority", "0", ";", "}",
    ]);
    node.exec_ok(&[
        "nft",
        "add rule inet wtebk wtfwd ip daddr 10.98.1.2 ct state new drop",
    ]);
    set_policed(&node, &pins.0, "10.98.1.2");
    let before = counters(&node, &pins.0);
    for i in 0..5 {
        roundtrip(&conn, &format!("kept {i}")).expect("the established connection goes on");
    }
    let after = counters(&node, &pins.0);
    assert!(after.kept >= before.kept + 10, "{before:?} → {after:?}");
    assert!(
        after.redirected >= before.redirected + 10,
        "{before:?} → {after:?}"
    );
    assert!(
        connect(&a, "10.98.1.2:8090").is_err(),
        "a new connection meets the policy"
    );
    // Its SYN passed (the 5-tuple is new); the SYN of a reused 5-tuple is new too.
    let later = counters(&node, &pins.0);
    assert!(later.passed > after.passed, "{after:?} → {later:?}");

    // The table knows who opened it: A, from its own port, to C:8090.
    let conns = conns_on(&node, &pins.0, 8090);
    let local = conn.local_addr().unwrap();
    assert_eq!(conns.len(), 1, "{conns:?}");
    let fc = conns[0];
    assert_eq!(
        (fc.protocol, fc.orig, fc.resp, fc.cut),
        (
            6,
            ("10.98.0.2".parse().unwrap(), local.port()),
            ("10.98.1.2".parse().unwrap(), 8090),
            false
        ),
        "{fc:?}"
    );

    // Cut (the plan denies it): dropped both ways while marked; a mark without
    // KeepUnlessCut drops nothing.
    set_cut(&node, &pins.0, fc, true);
    roundtrip(&conn, "marked").expect("Keep ignores the mark");
    established(&node, &pins.0, Established::KeepUnlessCut);
    let before = counters(&node, &pins.0);
    assert!(roundtrip(&conn, "cut").is_err(), "a cut connection stops");
    let after = counters(&node, &pins.0);
    assert!(after.cut > before.cut, "{before:?} → {after:?}");
    // Released: TCP's next retransmission gets through, and the connection goes on.
    set_cut(&node, &pins.0, fc, false);
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut late = String::new();
    BufReader::new(&conn).read_line(&mut late).unwrap();
    assert_eq!(late.trim(), "cut", "the held line, retransmitted");
    roundtrip(&conn, "released").expect("a released connection goes on");
    conn.set_read_timeout(Some(Duration::from_secs(1))).unwrap();

    // Rejudged: the next packet meets nftables, which drops it.
    established(&node, &pins.0, Established::Rejudge);
    let before = counters(&node, &pins.0);
    assert!(
        roundtrip(&conn, "cut").is_err(),
        "the connection is judged again, and denied"
    );
    let after = counters(&node, &pins.0);
    assert_eq!(after.kept, before.kept, "{before:?} → {after:?}");
    assert!(after.passed > before.passed, "{before:?} → {after:?}");
    node.exec_ok(&["nft", "delete table inet wtebk"]);
}
