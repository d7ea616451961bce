//! Interface addresses (RTM_NEWADDR / RTM_DELADDR / RTM_GETADDR).

use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage as Rt;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};

use crate::error::Result;
use crate::handle::Handle;
use crate::socket::netlink::Op;

pub const IFA_F_NODAD: u32 = 0x02;
pub const IFA_F_TENTATIVE: u32 = 0x40;
pub const IFA_F_DADFAILED: u32 = 0x08;
pub const IFA_F_PERMANENT: u32 = 0x80;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub index: u32,
    pub addr: IpNet,
    /// `IFA_F_*` bits (the full 32-bit IFA_FLAGS when the kernel sends it).
    pub flags: u32,
    /// RT_SCOPE_*: 0 universe, 253 link, 254 host.
    pub scope: u8,
}

impl Address {
    /// IPv6 duplicate address detection still running: the address cannot be used as a
    /// source yet.
    pub fn is_tentative(&self) -> bool {
        self.flags & IFA_F_TENTATIVE != 0
    }

    fn from_message(msg: AddressMessage) -> Option<Address> {
        let mut local = None;
        let mut address = None;
        let mut flags = u32::from(msg.header.flags.bits());
        for attr in msg.attributes {
            match attr {
                AddressAttribute::Local(a) => local = Some(a),
                AddressAttribute::Address(a) => address = Some(a),
                AddressAttribute::Flags(f) => flags = f.bits(),
                _ => {}
            }
        }
        // On point-to-point links IFA_ADDRESS is the peer; IFA_LOCAL is ours.
        let ip = local.or(address)?;
        let addr = IpNet::new(ip, msg.header.prefix_len).ok()?;
        Some(Address {
            index: msg.header.index,
            addr,
            flags,
            scope: msg.header.scope.into(),
        })
    }
}

fn family(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn addr_msg(index: u32, addr: IpNet) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = family(addr.addr());
    msg.header.prefix_len = addr.prefix_len();
    msg.header.index = index;
    msg.attributes = vec![
        AddressAttribute::Local(addr.addr()),
        AddressAttribute::Address(addr.addr()),
    ];
    msg
}

impl Handle {
    /// Adds `addr` to link `index`. `Error::Exists` if the link already has it. With
    /// `nodad`, an IPv6 address is usable at once instead of tentative for ~1-2 s.
    pub fn addr_add(&mut self, index: u32, addr: IpNet, nodad: bool) -> Result<()> {
        let mut msg = addr_msg(index, addr);
        msg.header.scope = match addr.addr() {
            IpAddr::V4(ip) if ip.is_loopback() => AddressScope::Host,
            _ => AddressScope::Universe,
        };
        if let IpNet::V4(net) = addr
            && net.prefix_len() < 31
        {
            // The kernel does not derive it; without it broadcasts to the subnet fail.
            msg.attributes
                .push(AddressAttribute::Broadcast(broadcast(net)));
        }
        if nodad && addr.addr().is_ipv6() {
            msg.header.flags = AddressHeaderFlags::Nodad;
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        let ctx = format!("{addr} on link #{index}");
        self.nl.ack(
            Rt::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            Op::new("RTM_NEWADDR", &ctx),
        )
    }

    /// Addresses of one link, or of all links with `None`.
    pub fn addrs(&mut self, index: Option<u32>) -> Result<Vec<Address>> {
        let mut msg = AddressMessage::default();
        // With strict checking on, a non-zero index makes the kernel filter for us.
        msg.header.index = index.unwrap_or(0);
        let ctx = match index {
            Some(i) => format!("dump link #{i}"),
            None => "dump".to_owned(),
        };
        let replies = self
            .nl
            .dump(Rt::GetAddress(msg), Op::new("RTM_GETADDR", &ctx))?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                Rt::NewAddress(m) => Address::from_message(m),
                _ => None,
            })
            .filter(|a| index.is_none_or(|i| a.index == i))
            .collect())
    }

    /// Removes `addr` from link `index`. `Error::NotFound` if it was not there.
    pub fn addr_del(&mut self, index: u32, addr: IpNet) -> Result<()> {
        let ctx = format!("{addr} on link #{index}");
        self.nl.ack(
            Rt::DelAddress(addr_msg(index, addr)),
            0,
            Op::new("RTM_DELADDR", &ctx).gone(&[libc::EADDRNOTAVAIL, libc::ENOENT]),
        )
    }
}

fn broadcast(net: Ipv4Net) -> Ipv4Addr {
    net.broadcast()
}
