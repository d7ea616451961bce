//! ctnetlink against the real kernel: flows between two test namespaces show up in the
//! receiving namespace's conntrack table, and deleting one entry removes exactly that one —
//! the connection's next packet is then judged by netfilter as a new connection.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use common::TestNs;
use weft_net::conntrack::{Conntrack, CtEntry};
use weft_testkit::require_root;

/// Namespaces a and b on one veth (10.98.0.1|2, fd98::1|2); b tracks connections (an nft
/// input chain using conntrack, in b only).
fn pair() -> (TestNs, TestNs) {
    let (a, b) = (TestNs::new(), TestNs::new());
    a.ip(&["link", "add", "ca", "type", "veth", "peer", "name", "cb"]);
    a.ip(&["link", "set", "cb", "netns", &b.name]);
    a.ip(&["addr", "add", "10.98.0.1/24", "dev", "ca"]);
    a.ip(&["addr", "add", "fd98::1/64", "dev", "ca", "nodad"]);
    b.ip(&["addr", "add", "10.98.0.2/24", "dev", "cb"]);
    b.ip(&["addr", "add", "fd98::2/64", "dev", "cb", "nodad"]);
    a.ip(&["link", "set", "ca", "up"]);
    b.ip(&["link", "set", "cb", "up"]);
    nft(&b, "add table inet wtct");
    nft(
        &b,
        "add chain inet wtct in { type filter hook input priority 0; policy accept; }",
    );
    nft(&b, "add rule inet wtct in ct state established accept");
    (a, b)
}

fn nft(ns: &TestNs, cmd: &str) {
    let mut args = vec!["nft"];
    args.extend(cmd.split(' '));
    let (ok, out) = ns.exec(&args);
    assert!(ok, "nft {cmd}: {out}");
}

fn dump(b: &TestNs) -> Vec<CtEntry> {
    b.open().run(|| Conntrack::new()?.dump()).unwrap().unwrap()
}

fn find(entries: &[CtEntry], proto: u8, dst: IpAddr, port: u16) -> Option<CtEntry> {
    entries
        .iter()
        .find(|e| e.orig.protocol == proto && e.orig.dst == dst && e.orig.dport == port)
        .copied()
}

#[test]
fn entries_are_listed_and_one_deleted_entry_is_gone_and_its_flow_new_again() {
    require_root!();
    let (a, b) = pair();
    let (na, nb) = (a.open(), b.open());
    let v4: IpAddr = "10.98.0.2".parse().unwrap();
    let v6: IpAddr = "fd98::2".parse().unwrap();
    let tcp_at = SocketAddr::new(v4, 5001);
    let listener = nb.run(|| TcpListener::bind(tcp_at)).unwrap().unwrap();
    let tcp6_at = SocketAddr::new(v6, 5003);
    let listener6 = nb.run(|| TcpListener::bind(tcp6_at)).unwrap().unwrap();
    let udp = nb
        .run(|| UdpSocket::bind(SocketAddr::new(v4, 5002)))
        .unwrap()
        .unwrap();
    // The first SYN may wait for neighbour resolution: connect with a generous limit.
    let mut client = na
        .run(|| TcpStream::connect_timeout(&tcp_at, Duration::from_secs(5)))
        .unwrap()
        .unwrap();
    let (mut server, _) = listener.accept().unwrap();
    let _client6 = na
        .run(|| TcpStream::connect_timeout(&tcp6_at, Duration::from_secs(5)))
        .unwrap()
        .unwrap();
    let (_server6, _) = listener6.accept().unwrap();
    let sender = na.run(|| UdpSocket::bind("0.0.0.0:0")).unwrap().unwrap();
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

    let deleted = nb.run(|| Conntrack::new()?.delete(&tcp)).unwrap().unwrap();
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
    let again = nb.run(|| Conntrack::new()?.delete(&tcp)).unwrap().unwrap();
    assert!(!again);

    // The connection's next segment is a new connection to b's netfilter: dropped.
    client.write_all(b"z").unwrap();
    let r = server.read(&mut buf);
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut),
        "data after the delete arrived: {r:?}"
    );
}
