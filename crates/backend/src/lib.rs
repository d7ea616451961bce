//! Weft's node-to-node dataplane: how packets for another node's pod blocks leave this node.
//!
//! **Owns**, in the network namespace it is opened in: the VXLAN device `weft.vx` and its
//! VTEP addresses; the main-table routes to peer blocks, all tagged with `rtm_protocol`
//! [`RTPROT_WEFT`] (87, `proto 87` in `ip route`), which is how weft finds its own routes
//! again after a restart and tells them from everyone else's; and the permanent neighbour
//! and FDB entries on `weft.vx`. Three backends ([`Kind`]): `vxlan` (every peer through the
//! overlay), `host-gw` (a plain route via the peer's underlay address; only for peers on the
//! same L2 segment) and `auto` (host-gw where the peer is on a directly connected subnet of
//! the underlay interface, VXLAN otherwise).
//!
//! Changes are incremental: [`Dataplane`] remembers what it installed (read back from the
//! kernel in [`Dataplane::open`] and [`Dataplane::resync`], the only places that dump) and
//! per peer writes or deletes only the difference, a few netlink requests on one long-lived
//! socket. An unchanged peer costs no request at all, so a restarted agent re-programming
//! the same peers leaves the kernel (and traffic) untouched.
//!
//! **Must not:** go async, start threads or processes (no `ip`), flush tables, or touch a
//! route that does not carry [`RTPROT_WEFT`], a device other than `weft.vx`, or anything
//! outside the calling thread's network namespace at `open`. It knows nothing about etcd or
//! leases: the agent tells it the peers.
//!
//! ```text
//! Dataplane::open(kind, local)      find the underlay, create or adopt weft.vx, read state
//! upsert_peer / remove_peer         one peer's difference, no dumps
//! resync(peers)                     dump, repair drift, drop entries of unknown peers
//! set_local_blocks, pod_mtu, underlay_mtu, peers
//! synthetic_peers                   made-up peers for benchmarks (feature `bench`)
//! ```

mod dataplane;
mod device;
mod error;
mod installed;
mod model;
mod plan;
#[cfg(feature = "bench")]
mod synthetic;
mod underlay;

pub use dataplane::Dataplane;
pub use device::{DEVICE, VXLAN_OVERHEAD_V4};
pub use error::Error;
pub use ipnet::IpNet;
pub use model::{Drift, Kind, Local, Path, Peer};
#[cfg(feature = "bench")]
pub use synthetic::synthetic_peers;

/// The `rtm_protocol` number on every route weft installs (`proto 87` in `ip route`, "W").
/// Unassigned in iproute2's `rt_protos` and not used by the common routing daemons or CNI
/// plugins (BIRD 12, Calico 80, kernel 2, boot 3, static 4, dhcp 16, ...).
pub const RTPROT_WEFT: u8 = 0x57;
