//! The cross-node fast path on a real kernel (root), host-gw and VXLAN. Two "nodes" are namespaces of
//! this test (`wtxn…`) joined by a veth underlay (`u1` ↔ `u2`), each with a bridge and pods
//! in namespaces of their own (`wtxp…`), routes to the peer's pod block via the peer as
//! weftd programs them (`proto 87`), and an "outside" namespace (`wtxo…`) behind node 1,
//! reached with masquerade. Each node has its own pin directory; programs are attached and
//! maps filled by weft-ebpf as weftd does it. The counters prove the path taken:
//!
//! - pod A (node 1) ↔ pod B (node 2): ping and TCP go out with `bpf_redirect_neigh` and in
//!   with `bpf_redirect_peer` on both nodes, with the TTL a routed path gives (two hops);
//! - a policed pod's traffic is not redirected on its node, and an nftables drop still drops;
//! - pod → node, pod → outside (masqueraded) and pod → "Service" (a DNAT as kube-proxy
//!   makes it) keep the kernel path; the Service's replies from B are handed to conntrack on
//!   node 1, which undoes the NAT;
//! - `remove_all` leaves no link on the uplinks.
//!
//! The VXLAN variant builds each node's `weft.vx` as the VXLAN backend does (neighbour, FDB
//! and onlink route to the peer's VTEP) and shows pod ↔ pod going into the tunnel by
//! `bpf_redirect_neigh` and out of it by `bpf_redirect_peer`, MTU-sized DF packets and a
//! GSO stream whole, a too-large DF packet answered by the kernel path with the tunnel's
//! MTU, the outer packets untouched by the underlay's program, and a policed pod's drop.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use weft_ebpf::{Counters, Datapath, EndpointValue, FLAG_POLICED, PeerValue};
use weft_testkit::TestNs;

use common::{Pins, counters, ifindex, mac_of, serve, tcp};

fn ping(from: &TestNs, to: &str) -> (bool, String) {
    from.exec(&["ping", "-c", "2", "-i", "0.05", "-W", "1", to])
}

/// A node: forwarding on, a bridge `br0` with `gw/24` for its pods.
fn node(gw: &str) -> TestNs {
    let n = TestNs::new("wtxn");
    n.exec_ok(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
    n.ip(&["link", "add", "br0", "type", "bridge"]);
    n.ip(&["addr", "add", &format!("{gw}/24"), "dev", "br0"]);
    n.ip(&["link", "set", "br0", "up"]);
    n
}

/// A bridged pod on `node`, host veth `host`, address `addr/24`, default route via `gw`.
fn pod(node: &TestNs, host: &str, addr: &str, gw: &str) -> TestNs {
    let p = TestNs::new("wtxp");
    node.ip(&[
        "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", &p.name,
    ]);
    node.ip(&["link", "set", host, "master", "br0", "up"]);
    p.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
    p.ip(&["link", "set", "eth0", "up"]);
    p.ip(&["route", "add", "default", "via", gw]);
    p
}

/// One pod as weftd records it: address, host veth, its ifindex, the pod's MAC, its
/// gateway's MAC, flags.
type PodEntry = (&'static str, &'static str, u32, [u8; 6], [u8; 6], u32);

/// At least `n` packets each way took the fast path across: out of node 1 and into node 2,
/// out of node 2 and into node 1 (counters before and after, node 1's first).
#[track_caller]
fn crossed(n: u64, before: (Counters, Counters), after: (Counters, Counters)) {
    let ((b1, b2), (c1, c2)) = (before, after);
    assert!(c1.to_peer >= b1.to_peer + n, "n1 out: {b1:?} → {c1:?}");
    assert!(c2.from_peer >= b2.from_peer + n, "n2 in: {b2:?} → {c2:?}");
    assert!(c2.to_peer >= b2.to_peer + n, "n2 out: {b2:?} → {c2:?}");
    assert!(c1.from_peer >= b1.from_peer + n, "n1 in: {b1:?} → {c1:?}");
}

/// The counters once nothing has crossed to or from a peer for 200 ms (at most 5 s).
fn quiet(node: &TestNs, dir: &Path) -> Counters {
    let mut last = counters(node, dir);
    for _ in 0..25 {
        std::thread::sleep(Duration::from_millis(200));
        let now = counters(node, dir);
        if (now.to_peer, now.from_peer) == (last.to_peer, last.from_peer) {
            return now;
        }
        last = now;
    }
    panic!("traffic to or from peers never stopped: {last:?}");
}

/// `pod`'s entry as weftd records it: behind host veth `host` on `node`, with gateway MAC
/// `gw`.
fn entry(
    node: &TestNs,
    pod: &TestNs,
    host: &'static str,
    addr: &'static str,
    gw: [u8; 6],
    flags: u32,
) -> PodEntry {
    (
        addr,
        host,
        ifindex(node, host),
        mac_of(pod, "eth0"),
        gw,
        flags,
    )
}

/// weftd's part on `node`: the pods in the endpoint map and attached, the peer's block in
/// the peer map, the uplink program on `uplink`.
fn set_up(
    node: &TestNs,
    dir: &Path,
    pods: Vec<PodEntry>,
    peer: (&'static str, u8, &'static str),
    uplink: &'static str,
) {
    let uplink_index = ifindex(node, uplink);
    let dir = dir.to_path_buf();
    node.run(move || {
        let mut dp = Datapath::open(&dir).unwrap();
        for (addr, host, ifindex, mac, gw_mac, flags) in pods {
            let v = EndpointValue {
                ifindex,
                flags,
                mac,
                gw_mac,
            };
            dp.insert(addr.parse().unwrap(), v).unwrap();
            assert!(dp.attach(host).unwrap());
        }
        let (block, prefix, gateway) = peer;
        let v = PeerValue {
            gateway: gateway.parse().unwrap(),
            ifindex: uplink_index,
        };
        dp.insert_peer(block.parse().unwrap(), prefix, v).unwrap();
        assert!(dp.attach_uplink(uplink).unwrap(), "uplink attached anew");
        assert!(!dp.attach_uplink(uplink).unwrap(), "attached once only");
        assert!(dp.is_uplink_attached(uplink).unwrap());
    });
}

/// A TCP sink in `ns` on `addr`: reads each connection to its end and answers the count.
fn sink(ns: &TestNs, addr: &'static str) {
    weft_testkit::tcp::listen(ns, addr, |mut s| {
        let n = std::io::copy(&mut s, &mut std::io::sink()).unwrap_or(0);
        let _ = writeln!(s, "{n}");
    });
}

/// Sends `bytes` from `ns` to the sink at `to` and returns the count it read.
fn bulk(ns: &TestNs, to: &'static str, bytes: usize) -> Result<usize, String> {
    ns.run(move || {
        let to: SocketAddr = to.parse().unwrap();
        let mut s =
            TcpStream::connect_timeout(&to, Duration::from_secs(2)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        let chunk = vec![0x5au8; 64 * 1024];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len());
            s.write_all(&chunk[..n]).map_err(|e| e.to_string())?;
            left -= n;
        }
        s.shutdown(std::net::Shutdown::Write)
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(&s)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        line.trim().parse().map_err(|e| format!("{line:?}: {e}"))
    })
}

#[test]
fn pods_on_two_host_gw_nodes_take_the_fast_path_policed_and_nat_do_not() {
    weft_testkit::require_root!();
    let pins1 = Pins::new("xn1");
    let pins2 = Pins::new("xn2");
    let n1 = node("10.97.1.1");
    let n2 = node("10.97.2.1");

    // The underlay, and the routes weftd's host-gw backend programs.
    n1.ip(&[
        "link", "add", "u1", "type", "veth", "peer", "name", "u2", "netns", &n2.name,
    ]);
    n1.ip(&["addr", "add", "192.168.97.1/24", "dev", "u1"]);
    n2.ip(&["addr", "add", "192.168.97.2/24", "dev", "u2"]);
    n1.ip(&["link", "set", "u1", "up"]);
    n2.ip(&["link", "set", "u2", "up"]);
    n1.ip(&[
        "route",
        "add",
        "10.97.2.0/24",
        "via",
        "192.168.97.2",
        "dev",
        "u1",
        "proto",
        "87",
    ]);
    n2.ip(&[
        "route",
        "add",
        "10.97.1.0/24",
        "via",
        "192.168.97.1",
        "dev",
        "u2",
        "proto",
        "87",
    ]);

    // The outside, behind node 1, reached with the cluster masquerade.
    let out = TestNs::new("wtxo");
    n1.ip(&[
        "link", "add", "ux", "type", "veth", "peer", "name", "eth0", "netns", &out.name,
    ]);
    n1.ip(&["addr", "add", "203.0.113.1/24", "dev", "ux"]);
    n1.ip(&["link", "set", "ux", "up"]);
    out.ip(&["addr", "add", "203.0.113.2/24", "dev", "eth0"]);
    out.ip(&["link", "set", "eth0", "up"]);
    n1.exec_ok(&["nft", "add table ip wtxn"]);
    n1.exec_ok(&[
        "nft",
        "add chain ip wtxn post { type nat hook postrouting priority 100 ; }",
    ]);
    n1.exec_ok(&[
        "nft",
        "add rule ip wtxn post ip saddr 10.97.0.0/16 ip daddr != 10.97.0.0/16 masquerade",
    ]);
    // A "Service" 10.96.0.10:80 → B:8080, as kube-proxy's DNAT makes it.
    n1.exec_ok(&[
        "nft",
        "add chain ip wtxn pre { type nat hook prerouting priority -100 ; }",
    ]);
    n1.exec_ok(&[
        "nft",
        "add rule ip wtxn pre ip daddr 10.96.0.10 tcp dport 80 dnat to 10.97.2.2:8080",
    ]);

    let a = pod(&n1, "hA", "10.97.1.2", "10.97.1.1");
    let p = pod(&n1, "hP", "10.97.1.3", "10.97.1.1");
    let b = pod(&n2, "hB", "10.97.2.2", "10.97.2.1");

    let br1 = mac_of(&n1, "br0");
    let br2 = mac_of(&n2, "br0");
    set_up(
        &n1,
        &pins1.0,
        vec![
            entry(&n1, &a, "hA", "10.97.1.2", br1, 0),
            entry(&n1, &p, "hP", "10.97.1.3", br1, FLAG_POLICED),
        ],
        ("10.97.2.0", 24, "192.168.97.2"),
        "u1",
    );
    set_up(
        &n2,
        &pins2.0,
        vec![entry(&n2, &b, "hB", "10.97.2.2", br2, 0)],
        ("10.97.1.0", 24, "192.168.97.1"),
        "u2",
    );
    serve(&b, "10.97.2.2:8080");

    // A ↔ B: out by redirect_neigh, in by redirect_peer, on both nodes; two routed hops.
    let (b1, b2) = (counters(&n1, &pins1.0), counters(&n2, &pins2.0));
    let (ok, text) = ping(&a, "10.97.2.2");
    assert!(ok, "A → B: {text}");
    assert!(text.contains("ttl=62"), "two routed hops: {text}");
    let (c1, c2) = (counters(&n1, &pins1.0), counters(&n2, &pins2.0));
    crossed(2, (b1, b2), (c1, c2));

    // TCP A → B: connects, and B sees A's own address.
    let (b1, b2) = (c1, c2);
    assert_eq!(tcp(&a, "10.97.2.2:8080").as_deref(), Ok("10.97.1.2"));
    let (c1, c2) = (counters(&n1, &pins1.0), counters(&n2, &pins2.0));
    // SYN, ACK, data, FIN at least each way.
    crossed(3, (b1, b2), (c1, c2));

    // Bulk TCP: the pods' GSO packets (far above the uplink's MTU) take the fast path too,
    // to be segmented on the uplink as the kernel path would.
    sink(&b, "10.97.2.2:8082");
    let (b1, b2) = (c1, c2);
    assert_eq!(bulk(&a, "10.97.2.2:8082", 16 << 20), Ok(16 << 20));
    let (c1, c2) = (counters(&n1, &pins1.0), counters(&n2, &pins2.0));
    assert!(c1.to_peer >= b1.to_peer + 20, "n1 out: {b1:?} → {c1:?}");
    assert!(
        c1.passed <= b1.passed + 4,
        "nothing of the stream passed on n1: {b1:?} → {c1:?}"
    );
    assert!(c2.passed <= b2.passed + 4, "nor on n2: {b2:?} → {c2:?}");

    // Policed P: nothing of its traffic redirected on its node, and a drop still drops.
    n1.exec_ok(&[
        "nft",
        "add chain ip wtxn wtfwd { type filter hook forward priority 0 ; }",
    ]);
    n1.exec_ok(&["nft", "add rule ip wtxn wtfwd ip saddr 10.97.1.3 drop"]);
    let b1 = quiet(&n1, &pins1.0);
    assert!(!ping(&p, "10.97.2.2").0, "the policed pod's drop holds");
    assert!(tcp(&p, "10.97.2.2:8080").is_err(), "and for TCP");
    let c1 = counters(&n1, &pins1.0);
    assert_eq!(
        (c1.to_peer, c1.from_peer),
        (b1.to_peer, b1.from_peer),
        "{b1:?} → {c1:?}"
    );
    assert!(c1.passed >= b1.passed + 2, "{b1:?} → {c1:?}");
    n1.exec_ok(&["nft", "flush chain ip wtxn wtfwd"]);
    let b1 = c1;
    assert_eq!(
        tcp(&p, "10.97.2.2:8080").as_deref(),
        Ok("10.97.1.3"),
        "without the drop the kernel path carries P"
    );
    let c1 = counters(&n1, &pins1.0);
    assert_eq!(
        (c1.to_peer, c1.from_peer),
        (b1.to_peer, b1.from_peer),
        "P's packets and B's replies to P stay on n1's kernel path: {b1:?} → {c1:?}"
    );

    // Pod → its node, pod → the peer node: the kernel path.
    let b1 = c1;
    assert!(ping(&a, "10.97.1.1").0, "A → n1");
    assert!(ping(&a, "192.168.97.2").0, "A → n2");
    let c1 = counters(&n1, &pins1.0);
    assert_eq!(
        (c1.to_peer, c1.from_peer),
        (b1.to_peer, b1.from_peer),
        "{b1:?} → {c1:?}"
    );

    // Pod → outside: masqueraded by the kernel path.
    serve(&out, "203.0.113.2:8081");
    let b1 = c1;
    assert_eq!(
        tcp(&a, "203.0.113.2:8081").as_deref(),
        Ok("203.0.113.1"),
        "the outside sees the node's address"
    );
    let c1 = counters(&n1, &pins1.0);
    assert_eq!(c1.to_peer, b1.to_peer, "{b1:?} → {c1:?}");

    // Pod → "Service": DNATed to B by the kernel path; B's replies come back from B's own
    // address and must reach conntrack on n1, which gives them the Service's address.
    let (b1, b2) = (c1, counters(&n2, &pins2.0));
    assert_eq!(tcp(&a, "10.96.0.10:80").as_deref(), Ok("10.97.1.2"));
    let (c1, c2) = (counters(&n1, &pins1.0), counters(&n2, &pins2.0));
    assert_eq!(c1.to_peer, b1.to_peer, "A's side is NATed: {b1:?} → {c1:?}");
    assert_eq!(c1.from_peer, b1.from_peer, "{b1:?} → {c1:?}");
    assert!(
        c1.kernel_flow >= b1.kernel_flow + 3,
        "B's replies passed as a kernel flow: {b1:?} → {c1:?}"
    );
    assert!(
        c2.to_peer >= b2.to_peer + 3,
        "n2 has no NAT for it: its side is fast: {b2:?} → {c2:?}"
    );

    // Uninstall: no link on the uplinks or the veths, no pins.
    for (n, pins, devs) in [
        (&n1, &pins1, &["u1", "hA", "hP"][..]),
        (&n2, &pins2, &["u2", "hB"][..]),
    ] {
        assert!(weft_ebpf::remove_all(&pins.0).unwrap());
        assert!(!pins.0.exists());
        for dev in devs {
            let dev = dev.to_string();
            let progs = n.run(move || weft_ebpf::tcx_ingress_programs(&dev).unwrap());
            assert!(progs.is_empty(), "{progs:?}");
        }
    }
    assert_eq!(
        tcp(&a, "10.97.2.2:8080").as_deref(),
        Ok("10.97.1.2"),
        "the kernel path alone still carries A → B"
    );
}

/// The rest of a VXLAN node as weftd's VXLAN backend makes it: `weft.vx` up with the node's
/// VTEP address `vtep`, and for the peer the permanent neighbour entry of its VTEP address, the FDB entry to its
/// underlay address and the onlink route to its block (`proto 87`).
fn vxlan_node(node: &TestNs, vtep: &str, peer: (&str, &str, &str, [u8; 6])) {
    let (block, peer_vtep, peer_underlay, peer_mac) = peer;
    let mac = peer_mac.map(|b| format!("{b:02x}")).join(":");
    node.ip(&["link", "set", "weft.vx", "up"]);
    node.ip(&["addr", "add", &format!("{vtep}/32"), "dev", "weft.vx"]);
    node.ip(&[
        "neigh",
        "replace",
        peer_vtep,
        "lladdr",
        &mac,
        "dev",
        "weft.vx",
        "nud",
        "permanent",
    ]);
    node.exec_ok(&[
        "bridge",
        "fdb",
        "append",
        &mac,
        "dev",
        "weft.vx",
        "dst",
        peer_underlay,
    ]);
    node.ip(&[
        "route", "add", block, "via", peer_vtep, "dev", "weft.vx", "onlink", "proto", "87",
    ]);
}

/// Makes `weft.vx` on `node` over `uplink` with local address `underlay`.
fn vxlan_device(node: &TestNs, uplink: &str, underlay: &str) {
    node.ip(&[
        "link",
        "add",
        "weft.vx",
        "type",
        "vxlan",
        "id",
        "1",
        "local",
        underlay,
        "dev",
        uplink,
        "dstport",
        "8472",
        "nolearning",
        "df",
        "inherit",
    ]);
}

/// A bridged pod as [`pod`] makes it, with the pod MTU of a VXLAN cluster (the underlay's
/// 1500 less VXLAN's 50) on both ends of its veth.
fn vxlan_pod(node: &TestNs, host: &str, addr: &str, gw: &str) -> TestNs {
    let p = pod(node, host, addr, gw);
    node.ip(&["link", "set", host, "mtu", "1450"]);
    p.ip(&["link", "set", "eth0", "mtu", "1450"]);
    p
}

#[test]
fn pods_on_two_vxlan_nodes_take_the_fast_path_through_weft_vx() {
    weft_testkit::require_root!();
    let pins1 = Pins::new("xv1");
    let pins2 = Pins::new("xv2");
    let n1 = node("10.98.1.1");
    let n2 = node("10.98.2.1");
    n1.ip(&[
        "link", "add", "u1", "type", "veth", "peer", "name", "u2", "netns", &n2.name,
    ]);
    n1.ip(&["addr", "add", "192.168.98.1/24", "dev", "u1"]);
    n2.ip(&["addr", "add", "192.168.98.2/24", "dev", "u2"]);
    n1.ip(&["link", "set", "u1", "up"]);
    n2.ip(&["link", "set", "u2", "up"]);
    vxlan_device(&n1, "u1", "192.168.98.1");
    vxlan_device(&n2, "u2", "192.168.98.2");
    let (vx1, vx2) = (mac_of(&n1, "weft.vx"), mac_of(&n2, "weft.vx"));
    vxlan_node(
        &n1,
        "10.98.1.0",
        ("10.98.2.0/24", "10.98.2.0", "192.168.98.2", vx2),
    );
    vxlan_node(
        &n2,
        "10.98.2.0",
        ("10.98.1.0/24", "10.98.1.0", "192.168.98.1", vx1),
    );

    let a = vxlan_pod(&n1, "hA", "10.98.1.2", "10.98.1.1");
    let p = vxlan_pod(&n1, "hP", "10.98.1.3", "10.98.1.1");
    let b = vxlan_pod(&n2, "hB", "10.98.2.2", "10.98.2.1");
    let (br1, br2) = (mac_of(&n1, "br0"), mac_of(&n2, "br0"));
    set_up(
        &n1,
        &pins1.0,
        vec![
            entry(&n1, &a, "hA", "10.98.1.2", br1, 0),
            entry(&n1, &p, "hP", "10.98.1.3", br1, FLAG_POLICED),
        ],
        ("10.98.2.0", 24, "10.98.2.0"),
        "weft.vx",
    );
    set_up(
        &n2,
        &pins2.0,
        vec![entry(&n2, &b, "hB", "10.98.2.2", br2, 0)],
        ("10.98.1.0", 24, "10.98.1.0"),
        "weft.vx",
    );
    // weftd puts the arrival program on the underlay too: the tunnel's outer packets cross
    // it, are the node's own, and go on untouched and uncounted.
    for (n, dir, u) in [(&n1, &pins1.0, "u1"), (&n2, &pins2.0, "u2")] {
        let dir = dir.clone();
        n.run(move || assert!(Datapath::open(&dir).unwrap().attach_uplink(u).unwrap()));
    }
    serve(&b, "10.98.2.2:8080");

    // A ↔ B: into weft.vx by redirect_neigh, out of it by redirect_peer; two routed hops.
    let (b1, b2) = (counters(&n1, &pins1.0), counters(&n2, &pins2.0));
    let (ok, text) = ping(&a, "10.98.2.2");
    assert!(ok, "A → B: {text}");
    assert!(text.contains("ttl=62"), "two routed hops: {text}");
    let (c1, c2) = (counters(&n1, &pins1.0), counters(&n2, &pins2.0));
    crossed(2, (b1, b2), (c1, c2));
    // The outer packets cross both underlay programs uncounted: ten pings make ten outer
    // packets arrive on each node, while `passed` grows at most by the pods' own chatter
    // (an ARP refresh, IPv6 neighbour discovery).
    let (ok, text) = a.exec(&["ping", "-c", "10", "-i", "0.02", "-W", "1", "10.98.2.2"]);
    assert!(ok, "A → B: {text}");
    let (d1, d2) = (counters(&n1, &pins1.0), counters(&n2, &pins2.0));
    assert!(d1.to_peer >= c1.to_peer + 10, "n1 out: {c1:?} → {d1:?}");
    assert!(d1.passed <= c1.passed + 3, "n1: {c1:?} → {d1:?}");
    assert!(d2.passed <= c2.passed + 3, "n2: {c2:?} → {d2:?}");

    // MTU-sized packets with DF (1422 + 8 + 20 = the pod MTU, 1450) cross the tunnel whole,
    // on the fast path both ways.
    let (b1, b2) = (d1, d2);
    let (ok, text) = a.exec(&[
        "ping",
        "-c",
        "2",
        "-i",
        "0.05",
        "-W",
        "1",
        "-M",
        "do",
        "-s",
        "1422",
        "10.98.2.2",
    ]);
    assert!(ok, "MTU-sized DF ping A → B: {text}");
    assert!(text.contains("1430 bytes from 10.98.2.2"), "{text}");
    let (c1, c2) = (counters(&n1, &pins1.0), counters(&n2, &pins2.0));
    crossed(2, (b1, b2), (c1, c2));

    // TCP, and a bulk stream whose GSO packets the tunnel segments as on the kernel path.
    assert_eq!(tcp(&a, "10.98.2.2:8080").as_deref(), Ok("10.98.1.2"));
    sink(&b, "10.98.2.2:8082");
    let (b1, b2) = (counters(&n1, &pins1.0), counters(&n2, &pins2.0));
    assert_eq!(bulk(&a, "10.98.2.2:8082", 16 << 20), Ok(16 << 20));
    let (c1, c2) = (counters(&n1, &pins1.0), counters(&n2, &pins2.0));
    assert!(c1.to_peer >= b1.to_peer + 20, "n1 out: {b1:?} → {c1:?}");
    assert!(c2.from_peer >= b2.from_peer + 20, "n2 in: {b2:?} → {c2:?}");
    assert!(
        c1.passed <= b1.passed + 4,
        "nothing of the stream passed on n1: {b1:?} → {c1:?}"
    );
    assert!(c2.passed <= b2.passed + 4, "nor on n2: {b2:?} → {c2:?}");

    // A pod whose MTU is above the tunnel's (a misconfigured one): its too-large DF packet
    // fails the FIB's MTU check, passes to the kernel path, and is answered there with
    // "fragmentation needed" and the tunnel's MTU, never dropped in silence.
    let o = pod(&n1, "hO", "10.98.1.4", "10.98.1.1");
    let (oh, om) = (ifindex(&n1, "hO"), mac_of(&o, "eth0"));
    let dir = pins1.0.clone();
    n1.run(move || {
        let mut dp = Datapath::open(&dir).unwrap();
        let v = EndpointValue {
            ifindex: oh,
            flags: 0,
            mac: om,
            gw_mac: br1,
        };
        dp.insert("10.98.1.4".parse().unwrap(), v).unwrap();
        assert!(dp.attach("hO").unwrap());
    });
    let b1 = counters(&n1, &pins1.0);
    let (ok, text) = o.exec(&[
        "ping",
        "-c",
        "1",
        "-W",
        "1",
        "-M",
        "do",
        "-s",
        "1472",
        "10.98.2.2",
    ]);
    assert!(!ok, "1500 bytes with DF do not fit the tunnel: {text}");
    assert!(
        text.contains("mtu = 1450"),
        "the kernel path says why: {text}"
    );
    let c1 = counters(&n1, &pins1.0);
    assert_eq!(c1.to_peer, b1.to_peer, "{b1:?} → {c1:?}");
    assert!(c1.passed > b1.passed, "{b1:?} → {c1:?}");
    assert!(
        ping(&o, "10.98.2.2").0,
        "small packets of O take the tunnel"
    );

    // Policed P: its traffic keeps n1's kernel path, where a drop still drops.
    n1.exec_ok(&["nft", "add table ip wtxv"]);
    n1.exec_ok(&[
        "nft",
        "add chain ip wtxv wtfwd { type filter hook forward priority 0 ; }",
    ]);
    n1.exec_ok(&["nft", "add rule ip wtxv wtfwd ip saddr 10.98.1.3 drop"]);
    // The counters are the node's: the earlier steps' stragglers (the stream's last ACKs
    // and FINs on a loaded machine) must have crossed before P's window opens.
    let b1 = quiet(&n1, &pins1.0);
    assert!(!ping(&p, "10.98.2.2").0, "the policed pod's drop holds");
    n1.exec_ok(&["nft", "delete table ip wtxv"]);
    assert_eq!(tcp(&p, "10.98.2.2:8080").as_deref(), Ok("10.98.1.3"));
    let c1 = counters(&n1, &pins1.0);
    assert_eq!(
        (c1.to_peer, c1.from_peer),
        (b1.to_peer, b1.from_peer),
        "P's packets and B's replies to P stay on n1's kernel path: {b1:?} → {c1:?}"
    );

    // Uninstall: no link on the underlay, the tunnel or the veths, no pins.
    for (n, pins, devs) in [
        (&n1, &pins1, &["u1", "weft.vx", "hA", "hP", "hO"][..]),
        (&n2, &pins2, &["u2", "weft.vx", "hB"][..]),
    ] {
        assert!(weft_ebpf::remove_all(&pins.0).unwrap());
        assert!(!pins.0.exists());
        for dev in devs {
            let dev = dev.to_string();
            let progs = n.run(move || weft_ebpf::tcx_ingress_programs(&dev).unwrap());
            assert!(progs.is_empty(), "{progs:?}");
        }
    }
    // The kernel path has never carried A ↔ B, so its neighbours are unresolved: a ping
    // first, so a loaded machine's slow resolution is not taken for a broken path.
    assert!(
        ping(&a, "10.98.2.2").0,
        "the kernel path alone carries A → B"
    );
    assert_eq!(
        tcp(&a, "10.98.2.2:8080").as_deref(),
        Ok("10.98.1.2"),
        "the kernel path alone still carries A → B"
    );
}
