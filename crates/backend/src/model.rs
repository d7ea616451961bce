//! The vocabulary the agent speaks to the dataplane: this node, its peers, the backend.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Which backend carries traffic to peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Every peer through the `weft.vx` overlay.
    Vxlan,
    /// A route per peer block via the peer's underlay address; peers must share the
    /// underlay's L2 segment.
    HostGw,
    /// Host-gw to peers on a directly connected subnet of the underlay interface, VXLAN to
    /// the rest.
    Auto,
}

/// This node.
#[derive(Clone, Debug)]
pub struct Local {
    /// The node's underlay address; the interface holding it is the underlay interface.
    pub underlay_v4: Ipv4Addr,
    pub underlay_v6: Option<Ipv6Addr>,
    /// MAC of `weft.vx`; peers point their FDB and neighbour entries at it.
    pub vtep_mac: [u8; 6],
    /// The node's pod blocks; the first of each family names the VTEP address.
    pub blocks: Vec<IpNet>,
    pub vni: u32,
    /// VXLAN UDP port.
    pub port: u16,
}

/// Another node, as the cluster datastore describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Peer {
    pub name: String,
    pub underlay_v4: Ipv4Addr,
    pub underlay_v6: Option<Ipv6Addr>,
    pub vtep_mac: [u8; 6],
    pub blocks: Vec<IpNet>,
}

/// How traffic to a peer travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    HostGw,
    Vxlan,
}

/// What a resync had to change: kernel entries (routes, neighbour and FDB entries) written
/// because they were missing or wrong, and entries deleted because no peer owns them.
#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
pub struct Drift {
    pub added: usize,
    pub removed: usize,
}
