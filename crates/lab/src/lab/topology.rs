//! The lab's underlay: what stands for the data-centre network the nodes sit on.
//!
//! ```text
//!   wlX-out (the internet)           203.0.113.1/24, 2001:db8:ff::1/64
//!      │ eth0 ── out                 routes back to the segments only, never to pod CIDRs,
//!   wlX-ul (the router)              so pods reach it through masquerade or not at all
//!      seg0 (bridge) 192.168.100.1/24  fd00:192:168:100::1/64   etcd listens here
//!      seg1 (bridge) 192.168.101.1/24  fd00:192:168:101::1/64   …one per segment, own MTU
//!      │ n1 ── eth0  wlX-n1           192.168.100.11, fd00:192:168:100::11, default via .1
//!      │ n2 ── eth0  wlX-n2           192.168.101.12 (nodes go round-robin over segments)
//! ```
//!
//! Every step is "make it so": an existing namespace, link, address or route is kept, a
//! missing one is made. That is what lets `lab up` finish a lab a crash left half-made.
//! The lab's own links skip IPv6 DAD (addresses and link-local alike), so IPv6 works the
//! moment the lab is up; what weft itself creates on a node keeps the kernel's defaults.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use weft_net::{Handle, NetNs, Route, VethOptions, VethSpec};

use super::error::{LabError, Result};
use super::names::Names;
use super::state::{Node, Options};
use crate::netns;

/// The outside's addresses (TEST-NET-3 and the documentation prefix: never real hosts).
pub const OUTSIDE_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub const OUTSIDE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 1);
const ROUTER_OUT_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 254);
const ROUTER_OUT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 0xfe);
const OUTSIDE_PREFIX_V4: u8 = 24;
const OUTSIDE_PREFIX_V6: u8 = 64;
/// Segment `i` is 192.168.(100+i).0/24.
const FIRST_SEGMENT_OCTET: u32 = 100;
/// Node `k` is host .(10+k) on its segment.
const NODE_HOST_OFFSET: u32 = 10;
/// The most segments: 192.168.100–115.
pub const MAX_SEGMENTS: u32 = 16;
/// The most nodes ever numbered: .11 to .254.
pub const MAX_NODE_INDEX: u32 = 244;
/// Where the nodes find etcd (on segment 0's router address): weft-ctl's, since
/// `weftctl … --lab` reaches the same etcd.
pub use weft_ctl::lab::{ETCD_ADDRESS, ETCD_ENDPOINT, ETCD_PORT};

/// The router's address on segment `seg`.
pub fn router_v4(seg: u32) -> Ipv4Addr {
    segment_v4_host(seg, 1)
}

pub fn router_v6(seg: u32) -> Ipv6Addr {
    segment_v6_host(seg, 1)
}

/// The segment of node `index`: round-robin.
pub fn segment_of(index: u32, segments: u32) -> u32 {
    (index.saturating_sub(1)) % segments.max(1)
}

pub fn node_v4(seg: u32, index: u32) -> Ipv4Addr {
    segment_v4_host(seg, NODE_HOST_OFFSET + index)
}

pub fn node_v6(seg: u32, index: u32) -> Ipv6Addr {
    segment_v6_host(seg, NODE_HOST_OFFSET + index)
}

fn segment_v4_host(seg: u32, host: u32) -> Ipv4Addr {
    let third = u8::try_from(FIRST_SEGMENT_OCTET + seg).unwrap_or(u8::MAX);
    let fourth = u8::try_from(host).unwrap_or(u8::MAX);
    Ipv4Addr::new(192, 168, third, fourth)
}

/// fd00:192:168:<100+seg>::<host>, the decimal numbers written as they read (as in the
/// IPv4 address they mirror), not converted to hex.
fn segment_v6_host(seg: u32, host: u32) -> Ipv6Addr {
    let group = |n: u32| u16::from_str_radix(&n.to_string(), 16).unwrap_or(u16::MAX);
    Ipv6Addr::new(
        0xfd00,
        0x192,
        0x168,
        group(FIRST_SEGMENT_OCTET + seg),
        0,
        0,
        0,
        group(host),
    )
}

pub fn segment_v4(seg: u32) -> Ipv4Net {
    Ipv4Net::new(segment_v4_host(seg, 0), 24).unwrap_or_default()
}

pub fn segment_v6(seg: u32) -> Ipv6Net {
    Ipv6Net::new(segment_v6_host(seg, 0), 64).unwrap_or_default()
}

/// The name of segment `seg`'s bridge in the router namespace.
fn bridge(seg: u32) -> String {
    format!("seg{seg}")
}

/// A fixed MAC for segment `seg`'s bridge. Without one a bridge takes its lowest port's
/// MAC and changes it when that port goes (`lab node del`), and every node's neighbour
/// entry for the router then points at a MAC nobody has: the nodes lose the router and
/// etcd until their entries expire, long enough for their leases to run out.
fn bridge_mac(seg: u32) -> [u8; 6] {
    let [_, _, hi, lo] = seg.to_be_bytes();
    // Locally administered unicast; "wl".
    [0x02, 0x77, 0x6c, 0x00, hi, lo]
}

/// The router's end of node `index`'s cable.
fn router_port(index: u32) -> String {
    format!("n{index}")
}

/// The router's end of the cable to the outside.
const ROUTER_OUT_PORT: &str = "out";
/// The one interface of a node or of the outside.
const UPLINK: &str = "eth0";

fn open(name: &str) -> Result<NetNs> {
    NetNs::open(&netns::path(name)).map_err(LabError::net(format!("opening netns {name}")))
}

fn handle_in(ns: &NetNs, name: &str) -> Result<Handle> {
    Handle::new_in(ns).map_err(LabError::net(format!("netlink socket in netns {name}")))
}

/// Creates the namespaces of `names` that do not exist yet.
pub fn ensure_namespaces(names: &[String]) -> Result<()> {
    let missing: Vec<String> = names
        .iter()
        .filter(|n| !netns::exists(n))
        .cloned()
        .collect();
    netns::create(&missing)?;
    Ok(())
}

fn sysctls(ns: &NetNs, name: &str, settings: &[(&str, &str)]) -> Result<()> {
    ns.run(|| {
        for (key, value) in settings {
            weft_net::sysctl::set(key, value).map_err(LabError::net(format!(
                "sysctl {key}={value} in netns {name}"
            )))?;
        }
        Ok(())
    })
    .map_err(LabError::net(format!("entering netns {name}")))?
}

fn forwarding(ipv6: bool) -> Vec<(&'static str, &'static str)> {
    let mut s = vec![("net/ipv4/ip_forward", "1")];
    if ipv6 {
        s.push(("net/ipv6/conf/all/forwarding", "1"));
    }
    s
}

fn add_addr(h: &mut Handle, index: u32, addr: IpNet, ns: &str, ifname: &str) -> Result<()> {
    match h.addr_add(index, addr, true) {
        Err(e) if e.is_exists() => Ok(()),
        other => other.map_err(LabError::net(format!("adding {addr} to {ifname} in {ns}"))),
    }
}

fn replace_route(h: &mut Handle, route: &Route, ns: &str) -> Result<()> {
    h.route_replace(route)
        .map_err(LabError::net(format!("route to {} in {ns}", route.dst)))
}

fn link_index(h: &mut Handle, name: &str, ns: &str) -> Result<Option<u32>> {
    h.link_by_name(name)
        .map(|l| l.map(|l| l.index))
        .map_err(LabError::net(format!("looking up {name} in {ns}")))
}

fn up(h: &mut Handle, index: u32, ifname: &str, ns: &str) -> Result<()> {
    h.set_up(index)
        .map_err(LabError::net(format!("bringing {ifname} up in {ns}")))
}

fn net(addr: impl Into<IpAddr>, prefix: u8) -> IpNet {
    IpNet::new(addr.into(), prefix).unwrap_or_else(|_| IpNet::from(IpAddr::from([0, 0, 0, 0])))
}

/// The router namespace with one bridge per segment, and the outside behind it.
pub fn ensure_underlay(names: &Names, opts: &Options) -> Result<()> {
    let (ul_name, out_name) = (names.underlay(), names.outside());
    ensure_namespaces(&[ul_name.clone(), out_name.clone()])?;
    let ul = open(&ul_name)?;
    let out = open(&out_name)?;
    sysctls(&ul, &ul_name, &forwarding(opts.ipv6))?;
    if opts.ipv6 {
        // No DAD on the router's and the outside's links (link-local addresses included):
        // the first IPv6 packets to the outside would otherwise wait out the DAD timer.
        let no_dad = [
            ("net/ipv6/conf/default/accept_dad", "0"),
            ("net/ipv6/conf/all/accept_dad", "0"),
        ];
        sysctls(&ul, &ul_name, &no_dad)?;
        sysctls(&out, &out_name, &no_dad)?;
    }
    let mut h = handle_in(&ul, &ul_name)?;

    for (seg, mtu) in (0u32..).zip(&opts.mtus) {
        let name = bridge(seg);
        let br = h
            .create_bridge(&name, Some(*mtu), Some(bridge_mac(seg)))
            .map_err(LabError::net(format!(
                "creating bridge {name} in {ul_name}"
            )))?;
        up(&mut h, br.index, &name, &ul_name)?;
        add_addr(&mut h, br.index, net(router_v4(seg), 24), &ul_name, &name)?;
        if opts.ipv6 {
            add_addr(&mut h, br.index, net(router_v6(seg), 64), &ul_name, &name)?;
        }
    }

    let port = match link_index(&mut h, ROUTER_OUT_PORT, &ul_name)? {
        Some(index) => index,
        None => {
            let spec = VethSpec {
                host_name: ROUTER_OUT_PORT,
                host_alias: None,
                peer_name: UPLINK,
                peer_ns: &out,
                mtu: None,
                peer_mac: None,
            };
            h.create_veth_with(
                &spec,
                VethOptions {
                    master: None,
                    up: true,
                },
            )
            .map_err(LabError::net(format!(
                "creating the veth {ul_name} ↔ {out_name}"
            )))?;
            link_index(&mut h, ROUTER_OUT_PORT, &ul_name)?.ok_or_else(|| LabError::Net {
                what: format!("veth {ROUTER_OUT_PORT} in {ul_name}"),
                source: weft_net::Error::NotFound {
                    what: "the link just created".to_owned(),
                },
            })?
        }
    };
    up(&mut h, port, ROUTER_OUT_PORT, &ul_name)?;
    add_addr(
        &mut h,
        port,
        net(ROUTER_OUT_V4, OUTSIDE_PREFIX_V4),
        &ul_name,
        ROUTER_OUT_PORT,
    )?;
    if opts.ipv6 {
        add_addr(
            &mut h,
            port,
            net(ROUTER_OUT_V6, OUTSIDE_PREFIX_V6),
            &ul_name,
            ROUTER_OUT_PORT,
        )?;
    }

    let mut o = handle_in(&out, &out_name)?;
    let eth0 = uplink(&mut o, &out_name)?;
    up(&mut o, eth0, UPLINK, &out_name)?;
    add_addr(
        &mut o,
        eth0,
        net(OUTSIDE_V4, OUTSIDE_PREFIX_V4),
        &out_name,
        UPLINK,
    )?;
    if opts.ipv6 {
        add_addr(
            &mut o,
            eth0,
            net(OUTSIDE_V6, OUTSIDE_PREFIX_V6),
            &out_name,
            UPLINK,
        )?;
    }
    for seg in 0..opts.segments() {
        let route = Route::new(IpNet::V4(segment_v4(seg))).via(ROUTER_OUT_V4.into());
        replace_route(&mut o, &route, &out_name)?;
        if opts.ipv6 {
            let route = Route::new(IpNet::V6(segment_v6(seg))).via(ROUTER_OUT_V6.into());
            replace_route(&mut o, &route, &out_name)?;
        }
    }
    Ok(())
}

fn uplink(h: &mut Handle, ns: &str) -> Result<u32> {
    link_index(h, UPLINK, ns)?.ok_or_else(|| LabError::Net {
        what: format!("{UPLINK} in {ns}"),
        source: weft_net::Error::NotFound {
            what: format!("{UPLINK} (its cable to the router was not made)"),
        },
    })
}

/// A node namespace cabled to its segment's bridge, addressed, with default routes via the
/// router, and forwarding on (what any Kubernetes node is provisioned with).
pub fn ensure_node(names: &Names, opts: &Options, node: &Node) -> Result<()> {
    let (ul_name, node_ns) = (names.underlay(), names.node(&node.name));
    ensure_namespaces(std::slice::from_ref(&node_ns))?;
    let ul = open(&ul_name)?;
    let ns = open(&node_ns)?;
    sysctls(&ns, &node_ns, &forwarding(opts.ipv6))?;
    let mtu = opts.mtus.get(node.segment as usize).copied();

    let mut h = handle_in(&ul, &ul_name)?;
    let mut n = handle_in(&ns, &node_ns)?;
    let port = router_port(node.index);
    if link_index(&mut n, UPLINK, &node_ns)?.is_none() {
        // A router port without its node end belongs to a node namespace that was deleted
        // (the kernel tears the pair down a moment later): replace it.
        h.delete_link_by_name(&port).map_err(LabError::net(format!(
            "removing the stale {port} in {ul_name}"
        )))?;
        let br_name = bridge(node.segment);
        let br = link_index(&mut h, &br_name, &ul_name)?.ok_or_else(|| LabError::Net {
            what: format!("bridge {br_name} in {ul_name}"),
            source: weft_net::Error::NotFound {
                what: format!("segment {} (the underlay is incomplete)", node.segment),
            },
        })?;
        let spec = VethSpec {
            host_name: &port,
            host_alias: None,
            peer_name: UPLINK,
            peer_ns: &ns,
            mtu,
            peer_mac: None,
        };
        let opts = VethOptions {
            master: Some(br),
            up: true,
        };
        h.create_veth_with(&spec, opts)
            .map_err(LabError::net(format!(
                "creating the veth {ul_name} ↔ {node_ns}"
            )))?;
    }

    let eth0 = uplink(&mut n, &node_ns)?;
    if opts.ipv6 {
        // The underlay NIC's link-local address must be usable at once: the kernel sends
        // neighbour solicitations for *forwarded* packets (host-gw next hops) only from a
        // non-tentative link-local, so DAD would drop them for a second or two. Only this
        // interface: what weft creates on the node keeps the node's defaults.
        let key = format!("net/ipv6/conf/{UPLINK}/accept_dad");
        sysctls(&ns, &node_ns, &[(key.as_str(), "0")])?;
    }
    up(&mut n, eth0, UPLINK, &node_ns)?;
    add_addr(&mut n, eth0, net(node.address4, 24), &node_ns, UPLINK)?;
    let default4 = Route::new(net(Ipv4Addr::UNSPECIFIED, 0)).via(router_v4(node.segment).into());
    replace_route(&mut n, &default4, &node_ns)?;
    if let Some(v6) = node.address6 {
        add_addr(&mut n, eth0, net(v6, 64), &node_ns, UPLINK)?;
        let default6 =
            Route::new(net(Ipv6Addr::UNSPECIFIED, 0)).via(router_v6(node.segment).into());
        replace_route(&mut n, &default6, &node_ns)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_follow_the_plan() {
        assert_eq!(router_v4(0), Ipv4Addr::new(192, 168, 100, 1));
        assert_eq!(node_v4(1, 2), Ipv4Addr::new(192, 168, 101, 12));
        assert_eq!(
            node_v6(1, 11),
            "fd00:192:168:101::21".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            router_v6(0),
            "fd00:192:168:100::1".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(segment_v4(2).to_string(), "192.168.102.0/24");
        assert_eq!(segment_v6(2).to_string(), "fd00:192:168:102::/64");
        assert_eq!(ETCD_ADDRESS, router_v4(0));
    }

    #[test]
    fn nodes_go_round_robin() {
        let segs: Vec<u32> = (1..=5).map(|k| segment_of(k, 2)).collect();
        assert_eq!(segs, [0, 1, 0, 1, 0]);
        assert_eq!(segment_of(3, 1), 0);
    }
}
