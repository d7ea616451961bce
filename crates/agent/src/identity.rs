//! Who this node is on the underlay: its addresses and its VTEP MAC.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use weft_net::Handle;

use crate::error::Error;

/// A stable, locally administered unicast MAC derived from the node name, so a restarted
/// agent (or a rebuilt VXLAN device) keeps the MAC its peers already have in their FDB.
pub fn vtep_mac(node: &str) -> [u8; 6] {
    // FNV-1a 64: stable across versions and platforms, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    [(b[0] & 0xfe) | 0x02, b[1], b[2], b[3], b[4], b[5]]
}

/// The address a packet to the rest of the cluster would leave from: the first global
/// address of the default route's interface, of the wanted family.
fn default_route_address(v6: bool) -> Result<Option<IpAddr>, Error> {
    let mut h = Handle::new().map_err(|e| Error::Underlay(e.to_string()))?;
    let routes = h.routes(v6).map_err(|e| Error::Underlay(e.to_string()))?;
    let Some(oif) = routes
        .iter()
        .find(|r| r.dst.prefix_len() == 0 && r.table.unwrap_or(254) == 254)
        .and_then(|r| r.oif)
    else {
        return Ok(None);
    };
    let addrs = h
        .addrs(Some(oif))
        .map_err(|e| Error::Underlay(e.to_string()))?;
    Ok(addrs
        .iter()
        .filter(|a| a.scope == 0)
        .map(|a| a.addr.addr())
        .find(|ip| ip.is_ipv6() == v6))
}

pub fn underlay_v4(flag: Option<Ipv4Addr>) -> Result<Ipv4Addr, Error> {
    if let Some(a) = flag {
        return Ok(a);
    }
    match default_route_address(false)? {
        Some(IpAddr::V4(a)) => Ok(a),
        _ => Err(Error::Underlay(
            "no --underlay-address given and no IPv4 default route to take it from".into(),
        )),
    }
}

pub fn underlay_v6(flag: Option<Ipv6Addr>) -> Result<Option<Ipv6Addr>, Error> {
    if flag.is_some() {
        return Ok(flag);
    }
    Ok(match default_route_address(true)? {
        Some(IpAddr::V6(a)) => Some(a),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vtep_mac_is_stable_unicast_and_local() {
        let a = vtep_mac("node-1");
        assert_eq!(a, vtep_mac("node-1"));
        assert_ne!(a, vtep_mac("node-2"));
        assert_eq!(a[0] & 0x01, 0, "multicast bit must be clear");
        assert_eq!(a[0] & 0x02, 0x02, "locally administered bit must be set");
    }
}
