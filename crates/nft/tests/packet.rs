//! Real packets through the masquerade rules: pod -> node (router) -> out.
//!
//! ```text
//!  pod  10.77.0.2/24  fd77::2/64 ── n0 node 10.77.0.1  fd77::1 ── n1 192.0.2.1/24 2001:db8::1/64 ── out 192.0.2.2 2001:db8::2
//!  pod2 10.77.1.2/24  fd77:1::2  ── n2 node 10.77.1.1  fd77:1::1
//! ```
//! `out` has no route back to the pod ranges, so a connection from the pod to `out` only
//! completes if it was masqueraded to the node's 192.0.2.1 / 2001:db8::1.

mod common;

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::Netns;
use ipnet::IpNet;
use weft_nft::Masquerade;

/// Accept one connection on `addr` inside `ns` and report the peer address the server saw.
fn listen_once(ns: &Netns, addr: SocketAddr) -> std::thread::JoinHandle<IpAddr> {
    let (tx, rx) = mpsc::channel();
    let h = ns.spawn(move || {
        let l = TcpListener::bind(addr).expect("bind");
        l.set_nonblocking(true).unwrap();
        tx.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match l.accept() {
                Ok((_, peer)) => return peer.ip(),
                Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("accept on {addr}: {e}"),
            }
        }
    });
    rx.recv().expect("listener ready");
    h
}

/// Connect from inside `ns` to `to` and return the address the server saw.
fn peer_seen(from: &Netns, server: &Netns, to: SocketAddr) -> IpAddr {
    let bind = SocketAddr::new(to.ip(), to.port());
    let l = listen_once(server, bind);
    from.run(move || {
        TcpStream::connect_timeout(&to, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to {to}: {e}"));
    });
    l.join().expect("listener thread")
}

#[test]
fn masquerades_pod_traffic_leaving_the_pod_ranges() {
    let pod = Netns::new();
    let pod2 = Netns::new();
    let node = Netns::new();
    let out = Netns::new();

    let link = |a: &Netns, an: &str, b: &Netns, bn: &str| {
        a.exec(&[
            "ip", "link", "add", an, "type", "veth", "peer", "name", bn, "netns", &b.name,
        ]);
        a.exec(&["ip", "link", "set", an, "up"]);
        b.exec(&["ip", "link", "set", bn, "up"]);
    };
    let addr = |ns: &Netns, dev: &str, a: &str| {
        ns.exec(&["ip", "addr", "add", a, "dev", dev, "nodad"]);
    };
    link(&node, "n0", &pod, "eth0");
    link(&node, "n2", &pod2, "eth0");
    link(&node, "n1", &out, "eth0");
    for (dev, v4, v6) in [
        ("n0", "10.77.0.1/24", "fd77::1/64"),
        ("n2", "10.77.1.1/24", "fd77:1::1/64"),
        ("n1", "192.0.2.1/24", "2001:db8::1/64"),
    ] {
        addr(&node, dev, v4);
        addr(&node, dev, v6);
    }
    for (ns, v4, v6, gw4, gw6) in [
        (&pod, "10.77.0.2/24", "fd77::2/64", "10.77.0.1", "fd77::1"),
        (
            &pod2,
            "10.77.1.2/24",
            "fd77:1::2/64",
            "10.77.1.1",
            "fd77:1::1",
        ),
    ] {
        addr(ns, "eth0", v4);
        addr(ns, "eth0", v6);
        ns.exec(&["ip", "route", "add", "default", "via", gw4]);
        ns.exec(&["ip", "-6", "route", "add", "default", "via", gw6]);
    }
    addr(&out, "eth0", "192.0.2.2/24");
    addr(&out, "eth0", "2001:db8::2/64");
    node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    node.exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);

    let ranges: Vec<IpNet> = ["10.77.0.0/24", "10.77.1.0/24", "fd77::/64", "fd77:1::/64"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let table = format!("wt{}pkt", std::process::id());
    let t = table.clone();
    node.run(move || Masquerade::new(&t).ensure(&ranges))
        .expect("ensure in node");

    let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    // Leaving the pod ranges: masqueraded to the node's outgoing address.
    assert_eq!(peer_seen(&pod, &out, sa("192.0.2.2:8080")), ip("192.0.2.1"));
    assert_eq!(
        peer_seen(&pod, &out, sa("[2001:db8::2]:8080")),
        ip("2001:db8::1")
    );
    // To the node itself: locally delivered, the pod's own address is kept.
    assert_eq!(
        peer_seen(&pod, &node, sa("10.77.0.1:8081")),
        ip("10.77.0.2")
    );
    // Forwarded between pod ranges: `daddr != @masq4` keeps the pod's address.
    assert_eq!(
        peer_seen(&pod, &pod2, sa("10.77.1.2:8082")),
        ip("10.77.0.2")
    );
    assert_eq!(
        peer_seen(&pod, &pod2, sa("[fd77:1::2]:8082")),
        ip("fd77::2")
    );

    // Without the pod range in the set, pod -> out is no longer masqueraded and, with no
    // route back, never completes: the element is what drives the rule.
    let t = table.clone();
    node.run(move || Masquerade::new(&t).remove(&["10.77.0.0/24".parse().unwrap()]))
        .expect("remove");
    let l = listen_once(&out, sa("192.0.2.2:8083"));
    let failed = pod.run(|| {
        TcpStream::connect_timeout(
            &"192.0.2.2:8083".parse().unwrap(),
            Duration::from_millis(500),
        )
        .is_err()
    });
    assert!(failed, "connection completed without masquerade");
    // Unblock the listener so its thread ends: connect from the out namespace itself.
    out.run(|| TcpStream::connect("192.0.2.2:8083").map(drop))
        .unwrap();
    assert_eq!(l.join().unwrap(), ip("192.0.2.2"));
}
