//! The underlay interface: the one holding the node's underlay address. Its MTU sizes the
//! overlay and the pods; its subnets decide which peers are "on the same segment".

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use weft_net::Handle;

use crate::error::Error;

#[derive(Debug, Clone)]
pub(crate) struct Underlay {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    /// The interface's addresses with their prefixes: the directly connected subnets.
    pub nets: Vec<IpNet>,
}

impl Underlay {
    /// Finds the interface holding `addr` (one address dump, one link lookup).
    pub fn find(h: &mut Handle, addr: Ipv4Addr) -> Result<Underlay, Error> {
        let addrs = h
            .addrs(None)
            .map_err(Error::net("reading addresses to find the underlay"))?;
        let index = addrs
            .iter()
            .find(|a| a.addr.addr() == IpAddr::V4(addr))
            .map(|a| a.index)
            .ok_or(Error::NoUnderlay { addr })?;
        let link = h
            .link_by_index(index)
            .map_err(Error::net(format!("reading underlay link #{index}")))?
            .ok_or(Error::NoUnderlay { addr })?;
        Ok(Underlay {
            index,
            name: link.name,
            mtu: link.mtu,
            nets: addrs
                .into_iter()
                .filter(|a| a.index == index)
                .map(|a| a.addr)
                .collect(),
        })
    }

    /// `ip` is on a subnet directly connected to the underlay interface (and is not this
    /// node's own address), so a route via it needs no router.
    pub fn on_segment(&self, ip: IpAddr) -> bool {
        self.nets
            .iter()
            .any(|n| n.addr() != ip && n.prefix_len() < n.max_prefix_len() && n.contains(&ip))
    }
}
