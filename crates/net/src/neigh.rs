//! Static neighbour (ARP/NDP) and bridge-FDB entries, for an overlay agent that programs
//! its peers explicitly instead of relying on learning or multicast (VXLAN backend).
//!
//! Adds use create-or-replace semantics (`ip neigh replace`, `bridge fdb replace`): the
//! agent converges to a desired state and must not trip over an entry it wrote before.

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage as Rt;
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};

use crate::error::Result;
use crate::handle::Handle;
use crate::mac::format_mac;
use crate::socket::netlink::Op;

fn neigh_addr(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    }
}

fn neigh_msg(index: u32, ip: IpAddr) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = if ip.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    msg.header.ifindex = index;
    msg.attributes
        .push(NeighbourAttribute::Destination(neigh_addr(ip)));
    msg
}

/// An FDB entry on the device itself (NTF_SELF), e.g. "MAC m lives behind VTEP dst".
fn fdb_msg(index: u32, mac: [u8; 6], dst: IpAddr) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = index;
    msg.header.flags = NeighbourFlags::Own;
    msg.attributes = vec![
        NeighbourAttribute::LinkLayerAddress(mac.to_vec()),
        NeighbourAttribute::Destination(neigh_addr(dst)),
    ];
    msg
}

impl Handle {
    /// Sets a permanent neighbour entry `ip -> mac` on link `index`.
    pub fn neigh_add(&mut self, index: u32, ip: IpAddr, mac: [u8; 6]) -> Result<()> {
        let mut msg = neigh_msg(index, ip);
        msg.header.state = NeighbourState::Permanent;
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        let ctx = format!("{ip} lladdr {} dev #{index}", format_mac(mac));
        self.nl.ack(
            Rt::NewNeighbour(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
            Op::new("RTM_NEWNEIGH", &ctx),
        )
    }

    /// Removes the neighbour entry for `ip` on link `index`; `Error::NotFound` if absent.
    pub fn neigh_del(&mut self, index: u32, ip: IpAddr) -> Result<()> {
        let ctx = format!("{ip} dev #{index}");
        self.nl.ack(
            Rt::DelNeighbour(neigh_msg(index, ip)),
            0,
            Op::new("RTM_DELNEIGH", &ctx).gone(&[libc::ENOENT]),
        )
    }

    /// Sets a permanent FDB entry `mac -> dst` on device `index` (a VXLAN device).
    pub fn fdb_add(&mut self, index: u32, mac: [u8; 6], dst: IpAddr) -> Result<()> {
        let mut msg = fdb_msg(index, mac, dst);
        msg.header.state = NeighbourState::Permanent;
        let ctx = format!("fdb {} dst {dst} dev #{index}", format_mac(mac));
        self.nl.ack(
            Rt::NewNeighbour(msg),
            NLM_F_CREATE | NLM_F_REPLACE,
            Op::new("RTM_NEWNEIGH", &ctx),
        )
    }

    /// Removes the FDB entry `mac -> dst` from device `index`; `Error::NotFound` if absent.
    pub fn fdb_del(&mut self, index: u32, mac: [u8; 6], dst: IpAddr) -> Result<()> {
        let ctx = format!("fdb {} dst {dst} dev #{index}", format_mac(mac));
        self.nl.ack(
            Rt::DelNeighbour(fdb_msg(index, mac, dst)),
            0,
            Op::new("RTM_DELNEIGH", &ctx).gone(&[libc::ENOENT]),
        )
    }
}
