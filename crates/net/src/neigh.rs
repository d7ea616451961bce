//! Static neighbour (ARP/NDP) and bridge-FDB entries, for an overlay agent that programs
//! its peers explicitly instead of relying on learning or multicast (VXLAN backend).
//!
//! Adds use create-or-replace semantics (`ip neigh replace`, `bridge fdb replace`): the
//! agent converges to a desired state and must not trip over an entry it wrote before.
//! Dumps are per device, filtered by the kernel, so an agent can read back what it wrote
//! on its own device without walking the whole neighbour table.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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

/// NUD_PERMANENT: a static entry, never aged out or probed.
const NUD_PERMANENT: u16 = 0x80;

/// A neighbour (ARP/NDP) entry as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub index: u32,
    pub ip: IpAddr,
    /// `None` while unresolved (INCOMPLETE, FAILED).
    pub mac: Option<[u8; 6]>,
    /// The `NUD_*` state bits.
    pub state: u16,
}

impl Neighbour {
    /// A static entry (what [`Handle::neigh_add`] writes).
    pub fn is_permanent(&self) -> bool {
        self.state & NUD_PERMANENT != 0
    }

    fn from_message(msg: NeighbourMessage) -> Option<Neighbour> {
        let (ip, mac) = destination_and_mac(&msg);
        Some(Neighbour {
            index: msg.header.ifindex,
            ip: ip?,
            mac,
            state: msg.header.state.into(),
        })
    }
}

/// An FDB entry of a device's own table (NTF_SELF), as a VXLAN device reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdbEntry {
    pub index: u32,
    pub mac: [u8; 6],
    /// The remote VTEP; `None` for entries without one (a bridge's local addresses).
    pub dst: Option<IpAddr>,
    pub state: u16,
}

impl FdbEntry {
    pub fn is_permanent(&self) -> bool {
        self.state & NUD_PERMANENT != 0
    }

    fn from_message(msg: NeighbourMessage) -> Option<FdbEntry> {
        let (dst, mac) = destination_and_mac(&msg);
        Some(FdbEntry {
            index: msg.header.ifindex,
            mac: mac?,
            dst,
            state: msg.header.state.into(),
        })
    }
}

/// The NDA_DST and NDA_LLADDR of a neighbour or FDB message (either may be absent).
fn destination_and_mac(msg: &NeighbourMessage) -> (Option<IpAddr>, Option<[u8; 6]>) {
    let mut dst = None;
    let mut mac = None;
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::Destination(a) => dst = ip_of(a.clone()),
            NeighbourAttribute::LinkLayerAddress(m) => {
                mac = <[u8; 6]>::try_from(m.as_slice()).ok();
            }
            _ => {}
        }
    }
    (dst, mac)
}

/// An AF_BRIDGE reply carries its NDA_DST as raw bytes; the length says the family.
fn ip_of(a: NeighbourAddress) -> Option<IpAddr> {
    match a {
        NeighbourAddress::Inet(a) => Some(IpAddr::V4(a)),
        NeighbourAddress::Inet6(a) => Some(IpAddr::V6(a)),
        NeighbourAddress::Other(bytes) => match bytes.len() {
            4 => <[u8; 4]>::try_from(bytes.as_slice())
                .ok()
                .map(|b| IpAddr::V4(Ipv4Addr::from(b))),
            16 => <[u8; 16]>::try_from(bytes.as_slice())
                .ok()
                .map(|b| IpAddr::V6(Ipv6Addr::from(b))),
            _ => None,
        },
        _ => None,
    }
}

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

    /// The neighbour entries of one family on link `index` (all states).
    pub fn neighbours(&mut self, index: u32, v6: bool) -> Result<Vec<Neighbour>> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = if v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        // Strict checking wants the device filter as NDA_IFINDEX, not in the header.
        msg.attributes.push(NeighbourAttribute::IfIndex(index));
        let ctx = format!("dump dev #{index}");
        let replies = self
            .nl
            .dump(Rt::GetNeighbour(msg), Op::new("RTM_GETNEIGH", &ctx))?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                Rt::NewNeighbour(m) => Neighbour::from_message(m),
                _ => None,
            })
            .filter(|n| n.index == index && n.ip.is_ipv6() == v6)
            .collect())
    }

    /// The FDB entries of device `index`'s own table (for a VXLAN device: MAC -> VTEP).
    pub fn fdb_entries(&mut self, index: u32) -> Result<Vec<FdbEntry>> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        // For AF_BRIDGE dumps the header's ifindex is the device filter.
        msg.header.ifindex = index;
        let ctx = format!("fdb dump dev #{index}");
        let replies = self
            .nl
            .dump(Rt::GetNeighbour(msg), Op::new("RTM_GETNEIGH", &ctx))?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                Rt::NewNeighbour(m) => FdbEntry::from_message(m),
                _ => None,
            })
            .filter(|e| e.index == index)
            .collect())
    }
}
