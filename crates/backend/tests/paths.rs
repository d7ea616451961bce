//! Each backend carries real pod traffic between node namespaces, and the kernel holds
//! exactly the entries the backend promises.

mod common;

use common::{Lab, assert_pods_talk};
use weft_backend::{Error, IpNet, Kind, Path, Peer};
use weft_testkit::require_root;

fn ip(s: &str) -> std::net::IpAddr {
    s.parse().unwrap()
}

/// Every node opens `kind` and upserts every other node.
fn program_all(lab: &Lab, kind: Kind) -> Vec<weft_backend::Dataplane> {
    let mut dps: Vec<_> = lab.nodes.iter().map(|n| n.open(kind)).collect();
    for (i, dp) in dps.iter_mut().enumerate() {
        for (j, other) in lab.nodes.iter().enumerate() {
            if i != j {
                dp.upsert_peer(&other.peer())
                    .unwrap_or_else(|e| panic!("node {i} upsert {j}: {e}"));
            }
        }
    }
    dps
}

#[test]
fn vxlan_carries_ipv4_and_ipv6_between_pods() {
    require_root!();
    let lab = Lab::new(&[1500], &[0, 0, 0], false);
    let mut dps = program_all(&lab, Kind::Vxlan);
    for (from, to) in [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)] {
        assert_pods_talk(&lab, from, to);
    }
    let n0 = &lab.nodes[0].ns;
    let routes = n0.weft_routes();
    for want in [
        "10.244.2.0/24 via 10.244.2.0 dev weft.vx onlink",
        "10.244.3.0/24 via 10.244.3.0 dev weft.vx onlink",
        "fd44:0:0:2::/64 via fd44:0:0:2:: dev weft.vx metric 1024 onlink",
    ] {
        assert!(routes.contains(want), "{want:?} not in\n{routes}");
    }
    assert_eq!(routes.lines().count(), 4, "{routes}");
    let neigh = n0.neigh_vx();
    assert!(
        neigh.contains("10.244.2.0 lladdr 02:57:00:00:00:02 PERMANENT"),
        "{neigh}"
    );
    assert!(
        neigh.contains("fd44:0:0:3:: lladdr 02:57:00:00:00:03 PERMANENT"),
        "{neigh}"
    );
    let fdb = n0.fdb_vx();
    assert!(
        fdb.contains("02:57:00:00:00:02 dst 192.168.1.12 self permanent"),
        "{fdb}"
    );
    assert!(
        fdb.contains("02:57:00:00:00:03 dst 192.168.1.13 self permanent"),
        "{fdb}"
    );
    let vx = n0.ip(&["-d", "addr", "show", "weft.vx"]);
    for want in [
        "vxlan id 4242",
        "local 192.168.1.11",
        "dstport 4789",
        "nolearning",
        "link/ether 02:57:00:00:00:01",
        "inet 10.244.1.0/32",
        "inet6 fd44:0:0:1::/128",
        "mtu 1450",
        "UP",
    ] {
        assert!(vx.contains(want), "{want:?} not in\n{vx}");
    }
    assert_eq!(dps[0].pod_mtu(), 1450);
    let mut names = dps[0].peers();
    names.sort();
    assert_eq!(names, vec![lab.nodes[1].name(), lab.nodes[2].name()]);

    // Node 1 gets a second block (a second subnet behind its pod veth): peers add one
    // route for it and nothing else.
    let n1 = &lab.nodes[1];
    n1.ns.ip(&["addr", "add", "10.245.2.1/24", "dev", "pod0"]);
    n1.pod.ip(&["addr", "add", "10.245.2.2/24", "dev", "eth0"]);
    let mut blocks = n1.blocks.clone();
    blocks.push("10.245.2.0/24".parse().unwrap());
    dps[1].set_local_blocks(&blocks).unwrap();
    let grown = Peer {
        blocks,
        ..n1.peer()
    };
    assert_eq!(dps[0].upsert_peer(&grown).unwrap(), Path::Vxlan);
    let after = n0.weft_routes();
    assert_eq!(after.lines().count(), 5, "{after}");
    assert!(
        after.contains("10.245.2.0/24 via 10.244.2.0 dev weft.vx onlink"),
        "{after}"
    );
    assert_eq!(n0.neigh_vx(), neigh, "neighbours must not change");
    let (ok, out) = lab.nodes[0].pod.ping(ip("10.245.2.2"), &[]);
    assert!(ok, "second block unreachable:\n{out}\n{}", lab.dump());
    // The VTEP address stays on the first block.
    let vx1 = n1.ns.ip(&["addr", "show", "weft.vx"]);
    assert!(vx1.contains("inet 10.244.2.0/32"), "{vx1}");
    assert!(!vx1.contains("10.245.2.0"), "{vx1}");
}

#[test]
fn host_gw_carries_ipv4_and_ipv6_between_pods() {
    require_root!();
    let lab = Lab::new(&[1500], &[0, 0], false);
    // A VXLAN device left from an earlier vxlan run goes when host-gw opens.
    drop(lab.nodes[0].open(Kind::Vxlan));
    assert!(lab.nodes[0].ns.ifindex("weft.vx").is_some());
    let dps = program_all(&lab, Kind::HostGw);
    assert!(lab.nodes[0].ns.ifindex("weft.vx").is_none());
    assert_pods_talk(&lab, 0, 1);
    assert_pods_talk(&lab, 1, 0);
    let routes = lab.nodes[0].ns.weft_routes();
    assert!(
        routes.contains("10.244.2.0/24 via 192.168.1.12 dev eth0"),
        "{routes}"
    );
    assert!(
        routes.contains("fd44:0:0:2::/64 via fd00:1::12 dev eth0"),
        "{routes}"
    );
    assert_eq!(routes.lines().count(), 2, "{routes}");
    assert_eq!(dps[0].pod_mtu(), 1500);
    assert_eq!(dps[0].underlay_mtu(), 1500);
}

#[test]
fn auto_uses_host_gw_on_segment_and_vxlan_across_router() {
    require_root!();
    // Nodes 0 and 1 share segment 0; node 2 sits on segment 1 behind the router.
    let lab = Lab::new(&[1500, 1500], &[0, 0, 1], true);
    let mut dps: Vec<_> = lab.nodes.iter().map(|n| n.open(Kind::Auto)).collect();
    let path = |dps: &mut Vec<weft_backend::Dataplane>, i: usize, j: usize| {
        dps[i].upsert_peer(&lab.nodes[j].peer()).unwrap()
    };
    assert_eq!(path(&mut dps, 0, 1), Path::HostGw);
    assert_eq!(path(&mut dps, 0, 2), Path::Vxlan);
    assert_eq!(path(&mut dps, 1, 0), Path::HostGw);
    assert_eq!(path(&mut dps, 1, 2), Path::Vxlan);
    assert_eq!(path(&mut dps, 2, 0), Path::Vxlan);
    assert_eq!(path(&mut dps, 2, 1), Path::Vxlan);
    for (from, to) in [(0, 1), (1, 0), (0, 2), (2, 0), (1, 2), (2, 1)] {
        assert_pods_talk(&lab, from, to);
    }

    let n0 = &lab.nodes[0].ns;
    let routes = n0.weft_routes();
    for want in [
        "10.244.2.0/24 via 192.168.1.12 dev eth0",
        "fd44:0:0:2::/64 via fd00:1::12 dev eth0",
        "10.244.3.0/24 via 10.244.3.0 dev weft.vx onlink",
        "fd44:0:0:3::/64 via fd44:0:0:3:: dev weft.vx metric 1024 onlink",
    ] {
        assert!(routes.contains(want), "{want:?} not in\n{routes}");
    }
    assert_eq!(routes.lines().count(), 4, "{routes}");
    let fdb = n0.fdb_vx();
    assert!(
        fdb.contains("02:57:00:00:00:03 dst 192.168.2.13 self permanent"),
        "{fdb}"
    );
    assert!(!fdb.contains("02:57:00:00:00:02"), "{fdb}");
    let neigh = n0.neigh_vx();
    assert!(
        neigh.contains("10.244.3.0 lladdr 02:57:00:00:00:03"),
        "{neigh}"
    );
    assert!(!neigh.contains("10.244.2.0"), "{neigh}");
    // auto sizes pods for the overlay: some peers need it.
    assert_eq!(dps[0].pod_mtu(), 1450);
}

#[test]
fn host_gw_refuses_off_segment_peer() {
    require_root!();
    let lab = Lab::new(&[1500, 1500], &[0, 1], true);
    let mut dp = lab.nodes[0].open(Kind::HostGw);
    let far = lab.nodes[1].peer();
    let err = dp.upsert_peer(&far).unwrap_err();
    match &err {
        Error::NotOnSegment { peer, addr, iface } => {
            assert_eq!(peer, &far.name);
            assert_eq!(*addr, ip("192.168.2.12"));
            assert_eq!(iface, "eth0");
        }
        other => panic!("expected NotOnSegment, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(&far.name) && msg.contains("192.168.2.12") && msg.contains("eth0"),
        "{msg}"
    );
    assert!(err.is_peer_error());
    assert_eq!(lab.nodes[0].ns.weft_routes(), "");
    assert!(dp.peers().is_empty());
    let (ok, _) = lab.nodes[0].pod.ping_once(lab.nodes[1].pod_v4, &[]);
    assert!(!ok);

    // A peer that was on the segment and moves off it loses what it had.
    let mut moving = Peer {
        name: "mover".to_owned(),
        underlay_v4: "192.168.1.50".parse().unwrap(),
        underlay_v6: None,
        vtep_mac: [0x02, 0x57, 0, 0, 0, 0x50],
        blocks: vec!["10.250.0.0/24".parse::<IpNet>().unwrap()],
    };
    assert_eq!(dp.upsert_peer(&moving).unwrap(), Path::HostGw);
    assert!(
        lab.nodes[0]
            .ns
            .weft_routes()
            .contains("10.250.0.0/24 via 192.168.1.50 dev eth0")
    );
    moving.underlay_v4 = "192.168.9.50".parse().unwrap();
    assert!(matches!(
        dp.upsert_peer(&moving),
        Err(Error::NotOnSegment { .. })
    ));
    assert_eq!(lab.nodes[0].ns.weft_routes(), "");
    assert!(dp.peers().is_empty());
}

/// Pods on two nodes with underlay MTU `mtu`: a DF packet of exactly the pod MTU crosses
/// the overlay in both directions, one byte more does not, and nothing is fragmented.
fn full_size_over_vxlan(mtu: u32, v6_too: bool) -> Lab {
    let lab = Lab::new(&[mtu], &[0, 0], false);
    let dps = program_all(&lab, Kind::Vxlan);
    let pod_mtu = mtu - 50;
    assert_eq!(dps[0].underlay_mtu(), mtu);
    assert_eq!(dps[0].pod_mtu(), pod_mtu);
    let vx = lab.nodes[0].ns.ip(&["link", "show", "weft.vx"]);
    assert!(vx.contains(&format!("mtu {pod_mtu} ")), "{vx}");
    let frags_before = lab.nodes[0].ns.ip_counter("FragCreates");
    let reasm_before = lab.nodes[1].ns.ip_counter("ReasmReqds");

    let mut cases = vec![(false, pod_mtu - 28)];
    if v6_too {
        cases.push((true, pod_mtu - 48));
    }
    for (v6, payload) in cases {
        for (a, b) in [(0, 1), (1, 0)] {
            let dst = if v6 {
                lab.nodes[b].pod_v6
            } else {
                lab.nodes[b].pod_v4
            };
            let full = payload.to_string();
            let (ok, out) = lab.nodes[a].pod.ping(dst, &["-M", "do", "-s", &full]);
            assert!(ok, "full-size ({full}) DF ping {a}->{b} {dst}:\n{out}");
            let over = (payload + 1).to_string();
            let (ok, out) = lab.nodes[a].pod.ping_once(dst, &["-M", "do", "-s", &over]);
            assert!(!ok, "one byte over the pod MTU crossed {a}->{b}:\n{out}");
        }
    }
    assert_eq!(lab.nodes[0].ns.ip_counter("FragCreates"), frags_before);
    assert_eq!(lab.nodes[1].ns.ip_counter("ReasmReqds"), reasm_before);
    lab
}

#[test]
fn full_size_df_packet_crosses_vxlan_one_byte_more_does_not() {
    require_root!();
    full_size_over_vxlan(1500, true);
}

#[test]
fn pod_mtu_follows_underlay_of_9000() {
    require_root!();
    let lab = full_size_over_vxlan(9000, false);
    // The same nodes under host-gw: the pods get the whole underlay MTU.
    // (IPv6: the pods remember the overlay's smaller path MTU for the IPv4 addresses.)
    let dps = program_all(&lab, Kind::HostGw);
    assert_eq!(dps[0].pod_mtu(), 9000);
    let (ok, out) = lab.nodes[0]
        .pod
        .ping(lab.nodes[1].pod_v6, &["-M", "do", "-s", "8952"]);
    assert!(ok, "{out}");
}

#[test]
fn pod_mtu_follows_underlay_of_1400() {
    require_root!();
    let lab = full_size_over_vxlan(1400, false);
    let dps = program_all(&lab, Kind::HostGw);
    assert_eq!(dps[0].pod_mtu(), 1400);
    let (ok, out) = lab.nodes[1]
        .pod
        .ping(lab.nodes[0].pod_v6, &["-M", "do", "-s", "1352"]);
    assert!(ok, "{out}");
}
