//! Errors of the dataplane. The agent acts on the variants: a peer-specific refusal
//! ([`Error::NotOnSegment`], [`Error::InvalidPeer`], a resync's [`Error::PeersRefused`]) is
//! reported and the other peers carry on; anything else is a kernel or setup problem for the
//! whole node.

use std::net::{IpAddr, Ipv4Addr};

use crate::model::Drift;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// host-gw was asked to reach a peer that is not on the underlay's L2 segment. Nothing
    /// is programmed for that peer.
    #[error(
        "host-gw cannot reach peer {peer}: its underlay address {addr} is not on a subnet \
         directly connected to {iface}; put the nodes on one L2 segment or use the vxlan or \
         auto backend"
    )]
    NotOnSegment {
        peer: String,
        addr: IpAddr,
        iface: String,
    },

    /// The peer's description cannot be programmed (no IPv6 underlay for IPv6 blocks under
    /// host-gw, a block overlapping this node's own, an unusable VTEP MAC). Nothing is
    /// programmed for that peer.
    #[error("peer {peer}: {reason}")]
    InvalidPeer { peer: String, reason: String },

    /// No interface in this network namespace holds the node's underlay address.
    #[error("no interface holds the underlay address {addr}")]
    NoUnderlay { addr: Ipv4Addr },

    /// The node's own settings are unusable (VNI out of range, ...).
    #[error("invalid local settings: {0}")]
    InvalidLocal(String),

    /// A resync finished, but the kernel refused some peers' entries (one message per
    /// peer); every other peer and the cleanup were done, and `drift` counts what was.
    #[error("resync left {} peer(s) unprogrammed: {}", refused.len(), refused.join("; "))]
    PeersRefused { refused: Vec<String>, drift: Drift },

    /// The kernel refused or failed a request.
    #[error("{context}: {source}")]
    Net {
        context: String,
        #[source]
        source: weft_net::Error,
    },
}

impl Error {
    /// A refusal concerning one peer only; the dataplane as a whole is fine.
    pub fn is_peer_error(&self) -> bool {
        matches!(
            self,
            Error::NotOnSegment { .. } | Error::InvalidPeer { .. } | Error::PeersRefused { .. }
        )
    }

    pub(crate) fn net(context: impl Into<String>) -> impl FnOnce(weft_net::Error) -> Error {
        let context = context.into();
        move |source| Error::Net { context, source }
    }
}
