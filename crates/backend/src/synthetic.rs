//! Made-up peers for benchmarks and scale tests: a large cluster without the nodes.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::error::Error;
use crate::model::Peer;

/// `n` peers named `peer-<i>`: peer `i` has underlay address host `i + 2` of `underlay`
/// (host 1 is left for the local node), the `i + 1`-th /24 of `pods_v4` (the first is left
/// for the local node), with `pods_v6` the `i + 1`-th /80 of it as well, and VTEP MAC
/// `02:57:xx:xx:xx:xx` from `i`. Underlay IPv6 addresses, when `underlay_v6` is given, are
/// host `i + 2` of it. `Error::InvalidLocal` when a range is too small for `n`.
pub fn synthetic_peers(
    n: usize,
    underlay: Ipv4Net,
    underlay_v6: Option<Ipv6Net>,
    pods_v4: Ipv4Net,
    pods_v6: Option<Ipv6Net>,
) -> Result<Vec<Peer>, Error> {
    let too_small = |what: &str, net: IpNet| {
        Error::InvalidLocal(format!("{what} {net} is too small for {n} synthetic peers"))
    };
    let count = u128::try_from(n).unwrap_or(u128::MAX);
    let host_room = |bits: u8| 1u128.checked_shl(u32::from(bits)).unwrap_or(u128::MAX);
    if host_room(32 - underlay.prefix_len()) < count + 3 {
        return Err(too_small("underlay", underlay.into()));
    }
    if pods_v4.prefix_len() > 24 || host_room(24 - pods_v4.prefix_len()) < count + 1 {
        return Err(too_small("IPv4 pod range", pods_v4.into()));
    }
    if let Some(u6) = underlay_v6
        && host_room(128 - u6.prefix_len()) < count + 3
    {
        return Err(too_small("IPv6 underlay", u6.into()));
    }
    if let Some(p6) = pods_v6
        && (p6.prefix_len() > 80 || host_room(80 - p6.prefix_len()) < count + 1)
    {
        return Err(too_small("IPv6 pod range", p6.into()));
    }
    let base4 = u32::from(underlay.network());
    let pods4 = u32::from(pods_v4.network());
    let mut peers = Vec::with_capacity(n);
    for i in 0..n {
        // Bounded by the room checks above.
        let i32 = i as u32;
        let i128 = i as u128;
        let mut blocks = vec![IpNet::V4(Ipv4Net::new_assert(
            Ipv4Addr::from(pods4 + ((i32 + 1) << 8)),
            24,
        ))];
        if let Some(p6) = pods_v6 {
            let net = u128::from(p6.network()) + ((i128 + 1) << 48);
            blocks.push(IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::from(net), 80)));
        }
        let b = i32.to_be_bytes();
        peers.push(Peer {
            name: format!("peer-{i}"),
            underlay_v4: Ipv4Addr::from(base4 + i32 + 2),
            underlay_v6: underlay_v6.map(|u| Ipv6Addr::from(u128::from(u.network()) + i128 + 2)),
            vtep_mac: [0x02, 0x57, b[0], b[1], b[2], b[3]],
            blocks,
        });
    }
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_and_in_range() {
        let peers = synthetic_peers(
            5000,
            "192.168.0.0/16".parse().unwrap(),
            Some("fd00::/64".parse().unwrap()),
            "10.0.0.0/8".parse().unwrap(),
            Some("fd57::/48".parse().unwrap()),
        )
        .unwrap();
        assert_eq!(peers.len(), 5000);
        assert_eq!(
            peers[0].underlay_v4,
            "192.168.0.2".parse::<Ipv4Addr>().unwrap()
        );
        assert_eq!(peers[0].blocks[0], "10.0.1.0/24".parse::<IpNet>().unwrap());
        assert_eq!(
            peers[0].blocks[1],
            "fd57::1:0:0:0/80".parse::<IpNet>().unwrap()
        );
        let mut blocks: Vec<_> = peers.iter().flat_map(|p| p.blocks.clone()).collect();
        blocks.sort();
        blocks.dedup();
        assert_eq!(blocks.len(), 10_000);
        let mut macs: Vec<_> = peers.iter().map(|p| p.vtep_mac).collect();
        macs.sort();
        macs.dedup();
        assert_eq!(macs.len(), 5000);
        assert!(
            synthetic_peers(
                300,
                "192.168.0.0/24".parse().unwrap(),
                None,
                "10.0.0.0/8".parse().unwrap(),
                None
            )
            .is_err()
        );
    }
}
