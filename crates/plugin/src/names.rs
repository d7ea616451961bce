//! Names and marks of what the plugin creates on the node, derived from the attachment so
//! that DEL, CHECK and GC can find them again without any stored state.

/// FNV-1a, 64-bit: stable across releases and platforms (std's hasher is not).
fn fnv64(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0u8)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// `wv` + 13 hex digits: 15 bytes, the kernel's limit.
pub fn host_veth(network: &str, container_id: &str, ifname: &str) -> String {
    let h = fnv64(&[network, container_id, ifname]);
    format!("wv{:013x}", h & 0x000f_ffff_ffff_ffff)
}

/// A stable, locally administered unicast MAC for a bridge, so the gateway's MAC never
/// changes as ports come and go (and is the same after the bridge is recreated).
pub fn bridge_mac(bridge: &str) -> [u8; 6] {
    let h = fnv64(&["weft-bridge", bridge]).to_be_bytes();
    [(h[0] & 0xfc) | 0x02, h[1], h[2], h[3], h[4], h[5]]
}

const ALIAS_PREFIX: &str = "weft:";

/// The host veth's alias: how GC recognises weft's links and their owner.
pub fn alias(network: &str, container_id: &str, ifname: &str) -> String {
    format!("{ALIAS_PREFIX}{network}:{container_id}:{ifname}")
}

/// (container id, ifname) of a link alias written by `alias` for `network`.
pub fn parse_alias<'a>(alias: &'a str, network: &str) -> Option<(&'a str, &'a str)> {
    let rest = alias.strip_prefix(ALIAS_PREFIX)?.strip_prefix(network)?;
    let rest = rest.strip_prefix(':')?;
    // Container IDs and ifnames cannot contain ':' (CNI validation), so this split is exact.
    rest.split_once(':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_fit() {
        let n = host_veth("net", "c1", "eth0");
        assert_eq!(n.len(), 15);
        assert_eq!(n, host_veth("net", "c1", "eth0"));
        assert_ne!(n, host_veth("net", "c1", "eth1"));
        assert_ne!(host_veth("a", "bc", "eth0"), host_veth("ab", "c", "eth0"));
    }

    #[test]
    fn alias_round_trips_per_network() {
        let a = alias("net", "c1", "eth0");
        assert_eq!(parse_alias(&a, "net"), Some(("c1", "eth0")));
        assert_eq!(parse_alias(&a, "ne"), None);
        assert_eq!(parse_alias(&a, "other"), None);
    }
}
