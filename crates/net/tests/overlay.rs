//! What an overlay agent needs beyond the plugin's links: a VXLAN device it can read back,
//! routes it can tell apart by protocol, and per-device neighbour/FDB dumps.

mod common;

use std::net::IpAddr;

use common::TestNs;
use weft_net::{Error, Handle, IpNet, NetNs, Route, VethSpec, VxlanSpec};
use weft_testkit::require_root;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// An "underlay" veth (both ends in `ns`, up) holding 192.0.2.1/24; returns its index.
fn underlay(h: &mut Handle, ns: &NetNs, mtu: u32) -> u32 {
    h.create_veth(&VethSpec {
        host_name: "u0",
        host_alias: None,
        peer_name: "u1",
        peer_ns: ns,
        mtu: Some(mtu),
        peer_mac: None,
    })
    .unwrap();
    let u0 = h.link_by_name("u0").unwrap().unwrap().index;
    let u1 = h.link_by_name("u1").unwrap().unwrap().index;
    h.set_up(u1).unwrap();
    h.set_up(u0).unwrap();
    h.addr_add(u0, net("192.0.2.1/24"), false).unwrap();
    u0
}

#[test]
fn vxlan_created_and_read_back() {
    require_root!();
    let a = TestNs::new();
    let nsa = a.open();
    let mut h = Handle::new_in(&nsa).unwrap();
    let u0 = underlay(&mut h, &nsa, 1500);
    let mac = weft_net::parse_mac("02:57:00:00:00:01").unwrap();
    let spec = VxlanSpec {
        name: "vx0",
        vni: 4097,
        local: ip("192.0.2.1"),
        port: 4789,
        underlay: Some(u0),
        mtu: Some(1450),
        mac: Some(mac),
        learning: false,
        df_inherit: true,
        up: true,
    };
    let link = h.create_vxlan(&spec).unwrap();
    assert_eq!(link.kind.as_deref(), Some("vxlan"));
    assert_eq!((link.mtu, link.mac, link.up), (1450, Some(mac), true));
    assert!(h.create_vxlan(&spec).unwrap_err().is_exists());

    let (again, p) = h.vxlan_by_name("vx0").unwrap().unwrap();
    assert_eq!(again.index, link.index);
    assert_eq!(p.vni, 4097);
    assert_eq!(p.local, Some(ip("192.0.2.1")));
    assert_eq!(p.port, 4789);
    assert_eq!(p.underlay, Some(u0));
    assert_eq!(p.group, None);
    assert!(!p.learning);
    assert!(p.df_inherit);
    let shown = a.ip(&["-d", "link", "show", "vx0"]);
    for want in [
        "vxlan id 4097",
        "local 192.0.2.1",
        "dev u0",
        "dstport 4789",
        "nolearning",
        "df inherit",
    ] {
        assert!(shown.contains(want), "{want:?} missing in {shown}");
    }

    assert!(h.vxlan_by_name("nosuch").unwrap().is_none());
    assert!(matches!(
        h.vxlan_by_name("u0").unwrap_err(),
        Error::WrongKind { .. }
    ));
    // The kernel caps the MTU by the underlay's minus the VXLAN overhead.
    let too_big = VxlanSpec {
        name: "vx1",
        mtu: Some(1451),
        ..spec
    };
    assert!(h.create_vxlan(&too_big).is_err());
    let bad_vni = VxlanSpec {
        name: "vx2",
        vni: 1 << 24,
        ..spec
    };
    assert!(matches!(
        h.create_vxlan(&bad_vni).unwrap_err(),
        Error::Invalid(_)
    ));
}

#[test]
fn routes_by_protocol_and_device_dumps() {
    require_root!();
    let a = TestNs::new();
    let nsa = a.open();
    let mut h = Handle::new_in(&nsa).unwrap();
    let u0 = underlay(&mut h, &nsa, 1500);
    h.addr_add(u0, net("fd00:2::1/64"), true).unwrap();
    let vx = h
        .create_vxlan(&VxlanSpec {
            name: "vx0",
            vni: 1,
            local: ip("192.0.2.1"),
            port: 4789,
            underlay: Some(u0),
            mtu: None,
            mac: None,
            learning: false,
            df_inherit: false,
            up: true,
        })
        .unwrap()
        .index;

    const P: u8 = 0x57;
    let ours = Route::new(net("10.1.0.0/24"))
        .via(ip("10.1.0.0"))
        .dev(vx)
        .onlink()
        .protocol(P);
    let ours6 = Route::new(net("fd10:1::/64"))
        .via(ip("fd10:1::"))
        .dev(vx)
        .onlink()
        .protocol(P);
    let theirs = Route::new(net("10.2.0.0/24")).via(ip("192.0.2.2"));
    h.route_replace(&ours).unwrap();
    h.route_replace(&ours6).unwrap();
    h.route_add(&theirs).unwrap();
    let shown = a.ip(&["route"]);
    assert!(
        shown.contains("10.1.0.0/24 via 10.1.0.0 dev vx0 proto 87 onlink"),
        "{shown}"
    );

    let mine = h.routes_by_protocol(false, P).unwrap();
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(
        (mine[0].dst, mine[0].gateway, mine[0].oif, mine[0].onlink),
        (net("10.1.0.0/24"), Some(ip("10.1.0.0")), Some(vx), true)
    );
    assert_eq!(mine[0].protocol, Some(P));
    let mine6 = h.routes_by_protocol(true, P).unwrap();
    assert_eq!(mine6.len(), 1, "{mine6:?}");
    assert_eq!(
        (mine6[0].dst, mine6[0].gateway, mine6[0].onlink),
        (net("fd10:1::/64"), Some(ip("fd10:1::")), true)
    );
    // Unfiltered dumps still see everything, with the protocol filled in.
    let all = h.routes(false).unwrap();
    let t = all.iter().find(|r| r.dst == net("10.2.0.0/24")).unwrap();
    assert_eq!(t.protocol, Some(3)); // boot, as `ip route add` writes

    // A protocol-scoped delete leaves a route of another protocol alone.
    let err = h
        .route_del(&Route::new(net("10.2.0.0/24")).protocol(P))
        .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    h.route_del(&Route::new(net("10.1.0.0/24")).protocol(P))
        .unwrap();
    h.route_del(&Route::new(net("fd10:1::/64")).protocol(P))
        .unwrap();
    assert!(h.routes_by_protocol(false, P).unwrap().is_empty());
    assert!(h.routes_by_protocol(true, P).unwrap().is_empty());

    let mac = weft_net::parse_mac("02:57:00:00:00:02").unwrap();
    h.neigh_add(vx, ip("10.1.0.0"), mac).unwrap();
    h.neigh_add(vx, ip("fd10:1::"), mac).unwrap();
    h.neigh_add(u0, ip("192.0.2.9"), mac).unwrap();
    let n4 = h.neighbours(vx, false).unwrap();
    assert_eq!(n4.len(), 1, "{n4:?}");
    assert_eq!((n4[0].ip, n4[0].mac), (ip("10.1.0.0"), Some(mac)));
    assert!(n4[0].is_permanent());
    let n6: Vec<_> = h
        .neighbours(vx, true)
        .unwrap()
        .into_iter()
        .filter(|n| n.is_permanent())
        .collect();
    assert_eq!(n6.len(), 1, "{n6:?}");
    assert_eq!(n6[0].ip, ip("fd10:1::"));
    assert!(
        h.neighbours(u0, false)
            .unwrap()
            .iter()
            .any(|n| n.ip == ip("192.0.2.9"))
    );

    let other = weft_net::parse_mac("02:57:00:00:00:03").unwrap();
    h.fdb_add(vx, mac, ip("192.0.2.2")).unwrap();
    h.fdb_add(vx, other, ip("192.0.2.3")).unwrap();
    let mut fdb = h.fdb_entries(vx).unwrap();
    fdb.sort_by_key(|e| e.mac);
    assert_eq!(fdb.len(), 2, "{fdb:?}");
    assert_eq!((fdb[0].mac, fdb[0].dst), (mac, Some(ip("192.0.2.2"))));
    assert_eq!((fdb[1].mac, fdb[1].dst), (other, Some(ip("192.0.2.3"))));
    assert!(fdb.iter().all(|e| e.is_permanent() && e.index == vx));
    // Replace moves an entry to another VTEP instead of adding a second one.
    h.fdb_add(vx, mac, ip("192.0.2.4")).unwrap();
    let fdb = h.fdb_entries(vx).unwrap();
    assert_eq!(fdb.len(), 2, "{fdb:?}");
    assert!(
        fdb.iter()
            .any(|e| e.mac == mac && e.dst == Some(ip("192.0.2.4")))
    );
}

#[test]
fn route_lookup_finds_the_fib_entry_without_a_dump() {
    require_root!();
    let a = TestNs::new();
    let nsa = a.open();
    let mut h = Handle::new_in(&nsa).unwrap();
    let u0 = underlay(&mut h, &nsa, 1500);
    h.addr_add(u0, net("fd00:2::1/64"), true).unwrap();

    // Nothing covers it yet: no default route in a fresh namespace.
    assert_eq!(h.route_lookup(ip("10.9.0.7")).unwrap(), None);
    assert_eq!(h.route_lookup(ip("fd10:9::7")).unwrap(), None);

    const P: u8 = 0x57;
    h.route_replace(
        &Route::new(net("10.9.0.0/24"))
            .via(ip("192.0.2.2"))
            .protocol(P),
    )
    .unwrap();
    h.route_replace(
        &Route::new(net("fd10:9::/64"))
            .via(ip("fd00:2::2"))
            .protocol(P),
    )
    .unwrap();
    let r = h.route_lookup(ip("10.9.0.7")).unwrap().unwrap();
    assert_eq!(
        (r.dst, r.gateway, r.protocol),
        (net("10.9.0.0/24"), Some(ip("192.0.2.2")), Some(P))
    );
    let r6 = h.route_lookup(ip("fd10:9::7")).unwrap().unwrap();
    assert_eq!(
        (r6.dst, r6.gateway, r6.protocol),
        (net("fd10:9::/64"), Some(ip("fd00:2::2")), Some(P))
    );
    // The connected route of the underlay answers for its own subnet.
    let c = h.route_lookup(ip("192.0.2.77")).unwrap().unwrap();
    assert_eq!(c.dst, net("192.0.2.0/24"));
    assert_ne!(c.protocol, Some(P));
}
