//! What the kernel should hold for one peer: the path it takes and its entries. Pure, so
//! the rules (which path, which VTEP address, which gateway) are tested without a kernel.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::Error;
use crate::installed::{Key, Value};
use crate::model::{Kind, Path, Peer};
use crate::underlay::Underlay;

#[derive(Debug, PartialEq)]
pub(crate) struct Plan {
    pub path: Path,
    /// In write order: FDB, then neighbours, then routes, so a route never points at an
    /// overlay next hop that cannot be resolved yet.
    pub entries: Vec<(Key, Value)>,
}

/// The VTEP address of a node: the network address of its first block of that family
/// (flannel's scheme), as a host address.
pub(crate) fn vtep_ip(blocks: &[IpNet], v6: bool) -> Option<IpAddr> {
    blocks
        .iter()
        .find(|b| b.addr().is_ipv6() == v6)
        .map(|b| b.network())
}

pub(crate) fn plan(
    kind: Kind,
    underlay: &Underlay,
    vx: Option<u32>,
    local_blocks: &[IpNet],
    peer: &Peer,
) -> Result<Plan, Error> {
    let invalid = |reason: String| Error::InvalidPeer {
        peer: peer.name.clone(),
        reason,
    };
    if peer.name.is_empty() {
        return Err(invalid("empty name".to_owned()));
    }
    for b in &peer.blocks {
        if let Some(mine) = local_blocks.iter().find(|l| overlaps(l, b)) {
            return Err(invalid(format!(
                "block {b} overlaps this node's block {mine}"
            )));
        }
    }
    let path = match kind {
        Kind::Vxlan => Path::Vxlan,
        Kind::HostGw => {
            host_gw_reachable(underlay, peer)?;
            Path::HostGw
        }
        Kind::Auto => match host_gw_reachable(underlay, peer) {
            Ok(()) => Path::HostGw,
            Err(_) => Path::Vxlan,
        },
    };
    let mut entries: Vec<(Key, Value)> = Vec::with_capacity(peer.blocks.len() + 3);
    let mut push = |key: Key, value: Value| {
        if !entries.iter().any(|(k, _)| *k == key) {
            entries.push((key, value));
        }
    };
    match path {
        Path::HostGw => {
            for b in &peer.blocks {
                let gateway = match b {
                    IpNet::V4(_) => IpAddr::V4(peer.underlay_v4),
                    // host_gw_reachable made sure it is there.
                    IpNet::V6(_) => match peer.underlay_v6 {
                        Some(a) => IpAddr::V6(a),
                        None => continue,
                    },
                };
                push(
                    Key::Route(b.trunc()),
                    Value::Route {
                        gateway: Some(gateway),
                        oif: Some(underlay.index),
                        onlink: false,
                    },
                );
            }
        }
        Path::Vxlan => {
            let dev = vx.ok_or_else(|| {
                Error::InvalidLocal("internal: VXLAN path without a VXLAN device".to_owned())
            })?;
            if peer.blocks.is_empty() {
                return Ok(Plan {
                    path,
                    entries: Vec::new(),
                });
            }
            let mac = peer.vtep_mac;
            if mac[0] & 1 != 0 || mac == [0; 6] {
                return Err(invalid(format!(
                    "VTEP MAC {} is not a unicast address",
                    weft_net::format_mac(mac)
                )));
            }
            push(
                Key::Fdb(mac),
                Value::Fdb {
                    dev,
                    dst: IpAddr::V4(peer.underlay_v4),
                },
            );
            let vteps = [vtep_ip(&peer.blocks, false), vtep_ip(&peer.blocks, true)];
            for ip in vteps.into_iter().flatten() {
                push(Key::Neigh(ip), Value::Neigh { dev, mac });
            }
            for b in &peer.blocks {
                push(
                    Key::Route(b.trunc()),
                    Value::Route {
                        gateway: vteps[usize::from(b.addr().is_ipv6())],
                        oif: Some(dev),
                        onlink: true,
                    },
                );
            }
        }
    }
    Ok(Plan { path, entries })
}

/// Ok when plain routes via the peer's underlay addresses work: IPv4 always needed, IPv6
/// when the peer has IPv6 blocks.
fn host_gw_reachable(underlay: &Underlay, peer: &Peer) -> Result<(), Error> {
    let off = |addr: IpAddr| Error::NotOnSegment {
        peer: peer.name.clone(),
        addr,
        iface: underlay.name.clone(),
    };
    let v4 = IpAddr::V4(peer.underlay_v4);
    if !underlay.on_segment(v4) {
        return Err(off(v4));
    }
    if peer.blocks.iter().any(|b| b.addr().is_ipv6()) {
        let v6 = peer
            .underlay_v6
            .map(IpAddr::V6)
            .ok_or_else(|| Error::InvalidPeer {
                peer: peer.name.clone(),
                reason: "has IPv6 blocks but no IPv6 underlay address to route them via \
                     (host-gw)"
                    .to_owned(),
            })?;
        if !underlay.on_segment(v6) {
            return Err(off(v6));
        }
    }
    Ok(())
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn underlay() -> Underlay {
        Underlay {
            index: 2,
            name: "eth0".to_owned(),
            mtu: 1500,
            nets: vec![net("192.168.1.10/24"), net("fd00:1::10/64")],
        }
    }

    fn peer(v4: &str, v6: Option<&str>, blocks: &[&str]) -> Peer {
        Peer {
            name: "n2".to_owned(),
            underlay_v4: v4.parse().unwrap(),
            underlay_v6: v6.map(|s| s.parse().unwrap()),
            vtep_mac: [0x02, 0x57, 0, 0, 0, 2],
            blocks: blocks.iter().map(|b| net(b)).collect(),
        }
    }

    const LOCAL: &[&str] = &["10.244.1.0/24", "fd44:0:0:1::/64"];

    fn local() -> Vec<IpNet> {
        LOCAL.iter().map(|b| net(b)).collect()
    }

    #[test]
    fn vxlan_routes_via_peer_vtep_onlink() {
        let p = peer(
            "10.0.0.5",
            None,
            &["10.244.2.0/24", "fd44:0:0:2::/64", "10.244.7.0/24"],
        );
        let plan = plan(Kind::Vxlan, &underlay(), Some(9), &local(), &p).unwrap();
        assert_eq!(plan.path, Path::Vxlan);
        let mac = p.vtep_mac;
        let route = |gw: &str| Value::Route {
            gateway: Some(ip(gw)),
            oif: Some(9),
            onlink: true,
        };
        assert_eq!(
            plan.entries,
            vec![
                (
                    Key::Fdb(mac),
                    Value::Fdb {
                        dev: 9,
                        dst: ip("10.0.0.5")
                    }
                ),
                (Key::Neigh(ip("10.244.2.0")), Value::Neigh { dev: 9, mac }),
                (Key::Neigh(ip("fd44:0:0:2::")), Value::Neigh { dev: 9, mac }),
                (Key::Route(net("10.244.2.0/24")), route("10.244.2.0")),
                (Key::Route(net("fd44:0:0:2::/64")), route("fd44:0:0:2::")),
                // A second block goes through the same VTEP: one more route only.
                (Key::Route(net("10.244.7.0/24")), route("10.244.2.0")),
            ]
        );
    }

    #[test]
    fn host_gw_routes_via_underlay() {
        let p = peer(
            "192.168.1.11",
            Some("fd00:1::11"),
            &["10.244.2.0/24", "fd44:0:0:2::/64"],
        );
        let plan = plan(Kind::HostGw, &underlay(), None, &local(), &p).unwrap();
        assert_eq!(plan.path, Path::HostGw);
        let route = |gw: &str| Value::Route {
            gateway: Some(ip(gw)),
            oif: Some(2),
            onlink: false,
        };
        assert_eq!(
            plan.entries,
            vec![
                (Key::Route(net("10.244.2.0/24")), route("192.168.1.11")),
                (Key::Route(net("fd44:0:0:2::/64")), route("fd00:1::11")),
            ]
        );
    }

    #[test]
    fn host_gw_refuses_off_segment_and_auto_falls_back() {
        let off = peer("192.168.2.11", None, &["10.244.2.0/24"]);
        let err = plan(Kind::HostGw, &underlay(), None, &local(), &off).unwrap_err();
        match &err {
            Error::NotOnSegment { peer, addr, iface } => {
                assert_eq!(
                    (peer.as_str(), *addr, iface.as_str()),
                    ("n2", ip("192.168.2.11"), "eth0")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(err.is_peer_error());
        let msg = err.to_string();
        assert!(
            msg.contains("192.168.2.11") && msg.contains("eth0"),
            "{msg}"
        );
        let auto = plan(Kind::Auto, &underlay(), Some(9), &local(), &off).unwrap();
        assert_eq!(auto.path, Path::Vxlan);

        // On segment for IPv4 but its IPv6 underlay is elsewhere: host-gw cannot carry
        // the IPv6 block, so auto takes the overlay for the whole peer.
        let half = peer(
            "192.168.1.11",
            Some("fd00:9::11"),
            &["10.244.2.0/24", "fd44:0:0:2::/64"],
        );
        assert!(matches!(
            plan(Kind::HostGw, &underlay(), None, &local(), &half),
            Err(Error::NotOnSegment { addr, .. }) if addr == ip("fd00:9::11")
        ));
        assert_eq!(
            plan(Kind::Auto, &underlay(), Some(9), &local(), &half)
                .unwrap()
                .path,
            Path::Vxlan
        );
        let no_v6 = peer("192.168.1.11", None, &["fd44:0:0:2::/64"]);
        assert!(matches!(
            plan(Kind::HostGw, &underlay(), None, &local(), &no_v6),
            Err(Error::InvalidPeer { .. })
        ));
        // Our own address is not a peer on the segment.
        let me = peer("192.168.1.10", None, &["10.244.2.0/24"]);
        assert!(plan(Kind::HostGw, &underlay(), None, &local(), &me).is_err());
        let on = peer("192.168.1.11", None, &["10.244.2.0/24"]);
        assert_eq!(
            plan(Kind::Auto, &underlay(), Some(9), &local(), &on)
                .unwrap()
                .path,
            Path::HostGw
        );
    }

    #[test]
    fn refuses_overlap_and_bad_mac() {
        let p = peer("10.0.0.5", None, &["10.244.1.128/25"]);
        assert!(matches!(
            plan(Kind::Vxlan, &underlay(), Some(9), &local(), &p),
            Err(Error::InvalidPeer { .. })
        ));
        let mut p = peer("10.0.0.5", None, &["10.244.2.0/24"]);
        p.vtep_mac = [0x01, 0, 0x5e, 0, 0, 1];
        assert!(matches!(
            plan(Kind::Vxlan, &underlay(), Some(9), &local(), &p),
            Err(Error::InvalidPeer { .. })
        ));
        // No blocks: nothing to route, nothing to program.
        let empty = peer("10.0.0.5", None, &[]);
        let plan = plan(Kind::Vxlan, &underlay(), Some(9), &local(), &empty).unwrap();
        assert!(plan.entries.is_empty());
    }

    #[test]
    fn vtep_ip_is_first_block_network() {
        let blocks = [net("fd44::/64"), net("10.244.3.0/24"), net("10.244.9.0/24")];
        assert_eq!(vtep_ip(&blocks, false), Some(ip("10.244.3.0")));
        assert_eq!(vtep_ip(&blocks, true), Some(ip("fd44::")));
        assert_eq!(vtep_ip(&blocks[1..], true), None);
    }
}
