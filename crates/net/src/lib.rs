//! Kernel networking for Weft over netlink: network namespaces, links (bridge, veth,
//! macvlan, vxlan), addresses, routes, static neighbour/FDB entries and sysctls.
//!
//! **Owns:** every conversation with the kernel's routing netlink family, on a blocking
//! socket with its own small request/ACK/dump loop (`socket::netlink`), and all uses of
//! the `netlink-packet-*` crates, which break their API often and so stay behind this
//! crate's types.
//!
//! **Must not:** go async or start threads (the plugin switches namespaces per thread),
//! spawn `ip` or a shell, know about CNI, or speak netfilter netlink: nf_tables and
//! conntrack entries belong to `weft-nft`, which has the one socket for that family.
//! Callers decide policy; this crate only reports typed outcomes (`Error::NotFound`,
//! `Error::Exists`, ...) with context.
//!
//! ```text
//! NetNs::open(path) / NetNs::current()      a namespace, held open by fd
//! NetNs::run(|| ...)                        run on this thread inside it, always return
//! Handle::new() / Handle::new_in(&ns)       one NETLINK_ROUTE socket, bound to a netns
//!   links:  link_by_name, link_by_index, links, create_bridge(_with), create_veth(VethSpec),
//!           create_macvlan, set_up, set_down, set_master, set_mtu, set_mac, set_alias,
//!           set_hairpin, delete_link, delete_link_by_name
//!   vxlan:  create_vxlan(VxlanSpec), vxlan_by_name (link + VxlanParams, to adopt one)
//!   addrs:  addr_add, addrs, addr_del
//!   routes: route_add, route_replace, route_del, routes, routes_by_protocol,
//!           route_lookup (the FIB entry for one address, no dump)
//!   neigh:  neigh_add, neigh_del, fdb_add, fdb_del (static entries for an overlay),
//!           neighbours, fdb_entries (per-device dumps)
//! sysctl::{get, set}                        /proc/sys, in the calling thread's netns
//! parse_mac / format_mac
//! ```

pub mod addr;
pub mod error;
mod handle;
pub mod link;
mod mac;
mod neigh;
pub mod netns;
pub mod route;
mod socket;
pub mod sysctl;
pub mod vxlan;

pub use addr::Address;
pub use error::{Error, Result};
pub use handle::Handle;
pub use ipnet::IpNet;
pub use link::{Link, VethOptions, VethSpec};
pub use mac::{format_mac, parse_mac};
pub use neigh::{FdbEntry, Neighbour};
pub use netns::NetNs;
pub use route::Route;
pub use vxlan::{VxlanParams, VxlanSpec};
