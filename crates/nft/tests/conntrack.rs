//! ctnetlink against the real kernel: flows between two test namespaces show up in the
//! receiving namespace's conntrack table, and deleting one entry removes exactly that one —
//! the connection's next packet is then judged by netfilter as a new connection.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use common::Netns;
use weft_nft::conntrack::{Conntrack, CtEntry};

/// Namespaces a and b on one veth (10.98.0.1|2, fd98::1|2); b tracks connections (an nft
/// input chain using conntrack, in b only).
fn pair() -> (Netns, Netns) {
    let (a, b) = (Netns::new(), Netns::new());
    let ip = |ns: &Netns, args: &[&str]| {
        let mut full = vec!["ip"];
        full.extend_from_slice(args);
        ns.exec(&full);
    };
    ip(
        &a,
        &["link", "add", "ca", "type", "veth", "peer", "name", "cb"],
    );
    ip(&a, &["link", "set", "cb", "netns", &b.name]);
    ip(&a, &["addr", "add", "10.98.0.1/24", "dev", "ca"]);
    ip(&a, &["addr", "add", "fd98::1/64", "dev", "ca", "nodad"]);
    ip(&b, &["addr", "add", "10.98.0.2/24", "dev", "cb"]);
    ip(&b, &["addr", "add", "fd98::2/64", "dev", "cb", "nodad"]);
    ip(&a, &["link", "set", "ca", "up"]);
    ip(&b, &["link", "set", "cb", "up"]);
    nft(&b, "add table inet wtct");
    nft(
        &b,
        "add chain inet wtct in { type filter hook input priority 0; policy accept; }",
    );
    nft(&b, "add rule inet wtct in ct state established accept");
    (a, b)
}

/// `nft <cmd>` in `ns` (panics, with nft's complaint, when it fails).
fn nft(ns: &Netns, cmd: &str) {
    let mut args = vec!["nft"];
    args.extend(cmd.split(' '));
    ns.exec(&args);
}

fn dump(b: &Netns) -> Vec<CtEntry> {
    b.run(|| Conntrack::new()?.dump()).unwrap()
}

fn find(entries: &[CtEntry], proto: u8, dst: IpAddr, port: u16) -> Option<CtEntry> {
    entries
        .iter()
        .find(|e| e.orig.protocol == proto && e.orig.dst == dst && e.orig.dport == port)
        .copied()
}

#[test]
fn entries_are_listed_and_one_deleted_entry_is_gone_and_its_flow_new_again() {
    let (a, b) = pair();
    let v4: IpAddr = "10.98.0.2".parse().unwrap();
    let v6: IpAddr = "fd98::2".parse().unwrap();
    let tcp_at = SocketAddr::new(v4, 5001);
    let listener = b.run(move || TcpListener::bind(tcp_at)).unwrap();
    let tcp6_at = SocketAddr::new(v6, 5003);
    let listener6 = b.run(move || TcpListener::bind(tcp6_at)).unwrap();
    let udp = b
        .run(move || UdpSocket::bind(SocketAddr::new(v4, 5002)))
        .unwrap();
    // The first SYN may wait for neighbour resolution: connect with a generous limit.
    let mut client = a
        .run(move || TcpStream::connect_timeout(&tcp_at, Duration::from_secs(5)))
        .unwrap();
    let (mut server, _) = listener.accept().unwrap();
    let _client6 = a
        .run(move || TcpStream::connect_timeout(&tcp6_at, Duration::from_secs(5)))
        .unwrap();
    let (_server6, _) = listener6.accept().unwrap();
    let sender = a.run(|| UdpSocket::bind("0.0.0.0:0")).unwrap();
    sender.send_to(b"u", SocketAddr::new(v4, 5002)).unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 16];
    udp.recv(&mut buf).unwrap();

    let entries = dump(&b);
    let tcp = find(&entries, 6, v4, 5001).unwrap_or_else(|| panic!("no TCP entry: {entries:?}"));
    assert_eq!(tcp.orig.src, "10.98.0.1".parse::<IpAddr>().unwrap());
    assert_eq!(tcp.reply.src, v4, "reply direction comes from the server");
    assert_eq!(tcp.reply.dport, tcp.orig.sport);
    assert!(tcp.id.is_some(), "the kernel gives entry ids");
    find(&entries, 17, v4, 5002).unwrap_or_else(|| panic!("no UDP entry: {entries:?}"));
    find(&entries, 6, v6, 5003).unwrap_or_else(|| panic!("no IPv6 TCP entry: {entries:?}"));

    // From now on b drops new connections to 5001: the established one still passes.
    nft(&b, "add rule inet wtct in tcp dport 5001 ct state new drop");
    server
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    client.write_all(b"y").unwrap();
    assert_eq!(server.read(&mut buf).unwrap(), 1, "established data passes");

    let deleted = b.run(move || Conntrack::new()?.delete(&tcp)).unwrap();
    assert!(deleted);
    let entries = dump(&b);
    assert!(find(&entries, 6, v4, 5001).is_none(), "{entries:?}");
    assert!(
        find(&entries, 17, v4, 5002).is_some(),
        "UDP kept: {entries:?}"
    );
    assert!(
        find(&entries, 6, v6, 5003).is_some(),
        "IPv6 TCP kept: {entries:?}"
    );
    // Deleting it again: already gone.
    let again = b.run(move || Conntrack::new()?.delete(&tcp)).unwrap();
    assert!(!again);

    // The connection's next segment is a new connection to b's netfilter: dropped.
    client.write_all(b"z").unwrap();
    let r = server.read(&mut buf);
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut),
        "data after the delete arrived: {r:?}"
    );
}

#[test]
fn a_mark_bit_is_set_and_cleared_alone_and_a_rule_on_it_stops_the_flow() {
    let (a, b) = pair();
    const CUT: u32 = 0x0020_0000;
    let v4: IpAddr = "10.98.0.2".parse().unwrap();
    let server = b
        .run(move || UdpSocket::bind(SocketAddr::new(v4, 5004)))
        .unwrap();
    server
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let client = a.run(|| UdpSocket::bind("0.0.0.0:0")).unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 16];
    let delivered = |s: &UdpSocket, buf: &mut [u8]| s.recv_from(buf).is_ok();
    client.send_to(b"1", SocketAddr::new(v4, 5004)).unwrap();
    let (_, peer) = server.recv_from(&mut buf).unwrap();
    let e = find(&dump(&b), 17, v4, 5004).expect("UDP entry");
    assert_eq!(e.mark, 0);

    // Another user's bit first, then weft's: neither disturbs the other.
    assert!(b.run(move || Conntrack::new()?.set_mark(&e, 1, 1)).unwrap());
    assert!(
        b.run(move || Conntrack::new()?.set_mark(&e, CUT, CUT))
            .unwrap()
    );
    assert_eq!(find(&dump(&b), 17, v4, 5004).unwrap().mark, CUT | 1);

    // b drops packets of marked connections before it accepts established ones.
    nft(
        &b,
        "insert rule inet wtct in ct mark & 0x00200000 == 0x00200000 drop",
    );
    client.send_to(b"2", SocketAddr::new(v4, 5004)).unwrap();
    assert!(
        !delivered(&server, &mut buf),
        "a datagram of the marked flow arrived"
    );

    // Cleared: the flow passes again, and the other bit is still there.
    assert!(
        b.run(move || Conntrack::new()?.set_mark(&e, 0, CUT))
            .unwrap()
    );
    assert_eq!(find(&dump(&b), 17, v4, 5004).unwrap().mark, 1);
    client.send_to(b"3", SocketAddr::new(v4, 5004)).unwrap();
    assert!(delivered(&server, &mut buf), "the unmarked flow is stopped");
    server.send_to(b"r", peer).unwrap();
    assert!(delivered(&client, &mut buf), "b's reply did not arrive");

    // An entry that is gone: nothing to mark.
    assert!(b.run(move || Conntrack::new()?.delete(&e)).unwrap());
    assert!(
        !b.run(move || Conntrack::new()?.set_mark(&e, CUT, CUT))
            .unwrap()
    );
}
