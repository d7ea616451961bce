//! Addresses and routes, read back through this crate and cross-checked with `ip`.

mod common;

use std::net::IpAddr;

use common::TestNs;
use weft_net::addr::{IFA_F_NODAD, IFA_F_TENTATIVE};
use weft_net::route::{RT_SCOPE_LINK, RT_SCOPE_UNIVERSE};
use weft_net::{Handle, IpNet, NetNs, Route, VethSpec};
use weft_testkit::require_root;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A veth pair with both ends up inside `ns` (real carrier, so IPv6 DAD really runs).
fn veth_pair(h: &mut Handle, ns: &NetNs) -> u32 {
    h.create_veth(&VethSpec {
        host_name: "v0",
        host_alias: None,
        peer_name: "v1",
        peer_ns: ns,
        mtu: None,
        peer_mac: None,
    })
    .unwrap();
    let v0 = h.link_by_name("v0").unwrap().unwrap();
    let v1 = h.link_by_name("v1").unwrap().unwrap();
    h.set_up(v1.index).unwrap();
    h.set_up(v0.index).unwrap();
    v0.index
}

#[test]
fn addresses_v4_and_v6_nodad() {
    require_root!();
    let a = TestNs::new();
    let nsa = a.open();
    let mut h = Handle::new_in(&nsa).unwrap();
    let idx = veth_pair(&mut h, &nsa);

    h.addr_add(idx, net("10.1.2.3/24"), false).unwrap();
    assert!(
        h.addr_add(idx, net("10.1.2.3/24"), false)
            .unwrap_err()
            .is_exists()
    );
    h.addr_add(idx, net("fd00:1::5/64"), true).unwrap();
    h.addr_add(idx, net("fd00:2::6/64"), false).unwrap();

    let addrs = h.addrs(Some(idx)).unwrap();
    assert!(addrs.iter().all(|a| a.index == idx));
    let find = |s: &str| addrs.iter().find(|a| a.addr == net(s)).cloned();
    let v4 = find("10.1.2.3/24").expect("v4 address");
    assert_eq!(v4.scope, 0);
    let nodad = find("fd00:1::5/64").expect("v6 nodad");
    assert!(nodad.flags & IFA_F_NODAD != 0, "flags {:#x}", nodad.flags);
    assert!(!nodad.is_tentative(), "flags {:#x}", nodad.flags);
    // Control: without nodad the same kind of address starts out tentative.
    let dad = find("fd00:2::6/64").expect("v6 with dad");
    assert!(dad.flags & IFA_F_TENTATIVE != 0, "flags {:#x}", dad.flags);

    let shown = a.ip(&["addr", "show", "dev", "v0"]);
    assert!(shown.contains("inet 10.1.2.3/24 brd 10.1.2.255"), "{shown}");
    assert!(
        !shown
            .lines()
            .any(|l| l.contains("fd00:1::5") && l.contains("tentative")),
        "{shown}"
    );

    // All-links dump includes lo's addresses too.
    let all = h.addrs(None).unwrap();
    assert!(all.iter().any(|a| a.addr == net("127.0.0.1/8")));
    assert!(all.len() > addrs.len());

    h.addr_del(idx, net("10.1.2.3/24")).unwrap();
    assert!(
        h.addr_del(idx, net("10.1.2.3/24"))
            .unwrap_err()
            .is_not_found()
    );
    h.addr_del(idx, net("fd00:1::5/64")).unwrap();
    let left = h.addrs(Some(idx)).unwrap();
    assert!(
        !left
            .iter()
            .any(|a| a.addr == net("10.1.2.3/24") || a.addr == net("fd00:1::5/64"))
    );
}

#[test]
fn routes_add_replace_delete() {
    require_root!();
    let a = TestNs::new();
    let nsa = a.open();
    let mut h = Handle::new_in(&nsa).unwrap();
    let idx = veth_pair(&mut h, &nsa);
    h.addr_add(idx, net("10.9.0.1/24"), false).unwrap();
    h.addr_add(idx, net("fd00:9::1/64"), true).unwrap();

    let via_gw = Route::new(net("10.20.0.0/16"))
        .via(ip("10.9.0.254"))
        .dev(idx);
    h.route_add(&via_gw).unwrap();
    assert!(h.route_add(&via_gw).unwrap_err().is_exists());

    let onlink = Route::new(net("0.0.0.0/0"))
        .via(ip("169.254.1.1"))
        .dev(idx)
        .onlink();
    h.route_add(&onlink).unwrap();
    let scoped = Route::new(net("10.40.0.0/24"))
        .dev(idx)
        .scope(RT_SCOPE_LINK);
    h.route_add(&scoped).unwrap();
    let mut with_mtu = Route::new(net("10.50.0.0/24")).via(ip("10.9.0.254"));
    with_mtu.mtu = Some(1300);
    with_mtu.metric = Some(77);
    h.route_add(&with_mtu).unwrap();

    let routes = h.routes(false).unwrap();
    let find = |dst: &str| routes.iter().find(|r| r.dst == net(dst)).cloned();
    let r = find("10.20.0.0/16").expect("gateway route");
    assert_eq!(
        (r.gateway, r.oif, r.scope),
        (Some(ip("10.9.0.254")), Some(idx), RT_SCOPE_UNIVERSE)
    );
    assert_eq!(r.table, Some(254));
    let r = find("0.0.0.0/0").expect("default onlink route");
    assert!(r.onlink);
    assert_eq!(r.gateway, Some(ip("169.254.1.1")));
    let r = find("10.40.0.0/24").expect("scope link route");
    assert_eq!((r.scope, r.gateway), (RT_SCOPE_LINK, None));
    let r = find("10.50.0.0/24").expect("mtu route");
    assert_eq!((r.mtu, r.metric, r.oif), (Some(1300), Some(77), Some(idx)));
    // The kernel's own connected route is there too.
    assert!(find("10.9.0.0/24").is_some());
    let shown = a.ip(&["route"]);
    assert!(
        shown.contains("default via 169.254.1.1 dev v0 onlink"),
        "{shown}"
    );

    let replaced = Route::new(net("10.20.0.0/16"))
        .via(ip("10.9.0.253"))
        .dev(idx);
    h.route_replace(&replaced).unwrap();
    let routes = h.routes(false).unwrap();
    let same_dst: Vec<_> = routes
        .iter()
        .filter(|r| r.dst == net("10.20.0.0/16"))
        .collect();
    assert_eq!(same_dst.len(), 1, "{same_dst:?}");
    assert_eq!(same_dst[0].gateway, Some(ip("10.9.0.253")));
    // Replace also creates.
    h.route_replace(
        &Route::new(net("10.60.0.0/24"))
            .dev(idx)
            .scope(RT_SCOPE_LINK),
    )
    .unwrap();

    // IPv6: a gateway route and a link-local default like ptp mode's.
    let v6 = Route::new(net("fd00:77::/64"))
        .via(ip("fd00:9::2"))
        .dev(idx);
    h.route_add(&v6).unwrap();
    let v6_default = Route::new(net("::/0")).via(ip("fe80::1")).dev(idx);
    h.route_add(&v6_default).unwrap();
    let routes6 = h.routes(true).unwrap();
    let r = routes6
        .iter()
        .find(|r| r.dst == net("fd00:77::/64"))
        .expect("v6 route");
    assert_eq!(r.gateway, Some(ip("fd00:9::2")));
    let r = routes6
        .iter()
        .find(|r| r.dst == net("::/0"))
        .expect("v6 default");
    assert_eq!((r.gateway, r.oif), (Some(ip("fe80::1")), Some(idx)));
    assert!(
        h.routes(false)
            .unwrap()
            .iter()
            .all(|r| matches!(r.dst, IpNet::V4(_)))
    );

    for r in [&replaced, &onlink, &scoped, &with_mtu, &v6, &v6_default] {
        h.route_del(r).unwrap();
    }
    let err = h.route_del(&replaced).unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    let left = h.routes(false).unwrap();
    assert!(
        !left
            .iter()
            .any(|r| r.dst == net("10.20.0.0/16") || r.dst == net("0.0.0.0/0"))
    );

    // Mixed families are refused before reaching the kernel.
    assert!(
        h.route_add(&Route::new(net("10.0.0.0/8")).via(ip("fe80::1")))
            .is_err()
    );
}

#[test]
fn sysctl_is_per_namespace() {
    require_root!();
    let (a, b) = (TestNs::new(), TestNs::new());
    let (nsa, nsb) = (a.open(), b.open());
    let before_b = nsb
        .run(|| weft_net::sysctl::get("net/ipv4/ip_forward"))
        .unwrap()
        .unwrap();
    nsa.run(|| weft_net::sysctl::set("net/ipv4/ip_forward", "1"))
        .unwrap()
        .unwrap();
    assert_eq!(
        nsa.run(|| weft_net::sysctl::get("net/ipv4/ip_forward"))
            .unwrap()
            .unwrap(),
        "1"
    );
    assert_eq!(
        nsb.run(|| weft_net::sysctl::get("net/ipv4/ip_forward"))
            .unwrap()
            .unwrap(),
        before_b
    );
    let (ok, out) = a.exec(&["cat", "/proc/sys/net/ipv4/ip_forward"]);
    assert!(ok && out.trim() == "1", "{out}");
    assert!(
        weft_net::sysctl::get("net/ipv4/conf/nosuchif/forwarding")
            .unwrap_err()
            .is_not_found()
    );
    assert!(weft_net::sysctl::set("net/../../etc/passwd", "x").is_err());
}

#[test]
fn neighbours_and_fdb() {
    require_root!();
    let a = TestNs::new();
    let nsa = a.open();
    let mut h = Handle::new_in(&nsa).unwrap();
    let idx = veth_pair(&mut h, &nsa);
    let mac = weft_net::parse_mac("02:aa:bb:cc:dd:ee").unwrap();
    h.neigh_add(idx, ip("10.9.0.77"), mac).unwrap();
    // Replace semantics: a second add is fine.
    h.neigh_add(idx, ip("10.9.0.77"), mac).unwrap();
    h.neigh_add(idx, ip("fd00:9::77"), mac).unwrap();
    let shown = a.ip(&["neigh", "show", "dev", "v0"]);
    assert!(
        shown.contains("10.9.0.77 lladdr 02:aa:bb:cc:dd:ee PERMANENT"),
        "{shown}"
    );
    assert!(
        shown.contains("fd00:9::77 lladdr 02:aa:bb:cc:dd:ee PERMANENT"),
        "{shown}"
    );
    h.neigh_del(idx, ip("10.9.0.77")).unwrap();
    assert!(
        h.neigh_del(idx, ip("10.9.0.77"))
            .unwrap_err()
            .is_not_found()
    );

    a.ip(&[
        "link",
        "add",
        "vx0",
        "type",
        "vxlan",
        "id",
        "42",
        "dstport",
        "4789",
        "nolearning",
    ]);
    let vx = h.link_by_name("vx0").unwrap().unwrap();
    assert_eq!(vx.kind.as_deref(), Some("vxlan"));
    h.fdb_add(vx.index, mac, ip("192.0.2.10")).unwrap();
    h.fdb_add(vx.index, mac, ip("192.0.2.10")).unwrap();
    let (ok, fdb) = a.exec(&["bridge", "fdb", "show", "dev", "vx0"]);
    assert!(ok, "{fdb}");
    assert!(
        fdb.contains("02:aa:bb:cc:dd:ee dst 192.0.2.10 self permanent"),
        "{fdb}"
    );
    h.fdb_del(vx.index, mac, ip("192.0.2.10")).unwrap();
    assert!(
        h.fdb_del(vx.index, mac, ip("192.0.2.10"))
            .unwrap_err()
            .is_not_found()
    );
}
