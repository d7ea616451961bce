//! Block arithmetic: a family's CIDR cut into equal blocks, numbered from 0 in address order.
//! Finding a free block works on the taken blocks only (sorted index intervals and a sweep),
//! never on the list of candidates, which may be 2^80 long for IPv6.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::config::{ClusterConfig, Family};
use crate::error::StoreError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlockSpace {
    pub family: Family,
    pub cidr: IpNet,
    pub size: u8,
}

pub(crate) fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

impl BlockSpace {
    pub fn new(cfg: &ClusterConfig, family: Family) -> Result<BlockSpace, StoreError> {
        let cidr = cfg.cidr(family).ok_or(StoreError::FamilyDisabled(family))?;
        Ok(BlockSpace {
            family,
            cidr,
            size: cfg.block_size(family),
        })
    }

    /// Host bits per block.
    fn shift(&self) -> u32 {
        u32::from(self.family.bits().saturating_sub(self.size))
    }

    pub fn count(&self) -> u128 {
        let bits = self.size.saturating_sub(self.cidr.prefix_len());
        1u128.checked_shl(u32::from(bits)).unwrap_or(u128::MAX)
    }

    pub fn block(&self, index: u128) -> Option<IpNet> {
        if index >= self.count() {
            return None;
        }
        let base = to_u128(self.cidr.network());
        let addr = base.checked_add(index.checked_shl(self.shift())?)?;
        let ip = match self.family {
            Family::V4 => IpAddr::V4(Ipv4Addr::from(u32::try_from(addr).ok()?)),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(addr)),
        };
        IpNet::new(ip, self.size).ok()
    }

    /// Whether `block` is exactly one of this space's blocks; the reason if not.
    pub fn check(&self, block: &IpNet) -> Result<(), String> {
        if Family::of(block) != self.family {
            return Err(format!("it is not an {} block", self.family));
        }
        if block.prefix_len() != self.size {
            return Err(format!(
                "the cluster's {} blocks are /{}",
                self.family, self.size
            ));
        }
        if block.trunc() != *block {
            return Err(format!(
                "host bits are set (the block is {})",
                block.trunc()
            ));
        }
        if !self.cidr.contains(block) {
            return Err(format!("it is outside the cluster CIDR {}", self.cidr));
        }
        Ok(())
    }

    /// The inclusive range of block indices that `net` overlaps, if any. A stored key of
    /// another size (which a config change would leave behind) still fences every block it
    /// touches.
    fn occupied(&self, net: &IpNet) -> Option<(u128, u128)> {
        if Family::of(net) != self.family {
            return None;
        }
        let (cs, ce) = (to_u128(self.cidr.network()), to_u128(self.cidr.broadcast()));
        let (ns, ne) = (to_u128(net.network()), to_u128(net.broadcast()));
        if ne < cs || ns > ce {
            return None;
        }
        let (s, e) = (ns.max(cs), ne.min(ce));
        Some(((s - cs) >> self.shift(), (e - cs) >> self.shift()))
    }

    /// The lowest block that overlaps none of `taken`.
    pub fn first_free<'a>(&self, taken: impl IntoIterator<Item = &'a IpNet>) -> Option<IpNet> {
        let mut ranges: Vec<(u128, u128)> =
            taken.into_iter().filter_map(|n| self.occupied(n)).collect();
        ranges.sort_unstable();
        let mut candidate: u128 = 0;
        for (start, end) in ranges {
            if start > candidate {
                break;
            }
            candidate = candidate.max(end.checked_add(1)?);
        }
        self.block(candidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(json: &str, f: Family) -> BlockSpace {
        BlockSpace::new(&ClusterConfig::from_json(json).unwrap(), f).unwrap()
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn first_free_in_address_order() {
        let s = space(r#"{"cidrV4":"10.244.0.0/24","blockSizeV4":26}"#, Family::V4);
        assert_eq!(s.count(), 4);
        let next = |taken: &[&str]| s.first_free(&nets(taken)).map(|n| n.to_string());
        assert_eq!(next(&[]).as_deref(), Some("10.244.0.0/26"));
        assert_eq!(next(&["10.244.0.0/26"]).as_deref(), Some("10.244.0.64/26"));
        assert_eq!(next(&["10.244.0.64/26"]).as_deref(), Some("10.244.0.0/26"));
        assert_eq!(
            next(&["10.244.0.128/26", "10.244.0.0/26", "10.244.0.64/26"]).as_deref(),
            Some("10.244.0.192/26")
        );
        assert_eq!(
            next(&[
                "10.244.0.128/26",
                "10.244.0.0/26",
                "10.244.0.64/26",
                "10.244.0.192/26"
            ]),
            None
        );
        // Other families, sizes and places: fences what they overlap, nothing else.
        assert_eq!(next(&["10.244.0.0/25"]).as_deref(), Some("10.244.0.128/26"));
        assert_eq!(next(&["10.244.0.5/32"]).as_deref(), Some("10.244.0.64/26"));
        assert_eq!(next(&["10.0.0.0/8"]), None);
        assert_eq!(
            next(&["10.245.0.0/26", "fd00::/122"]).as_deref(),
            Some("10.244.0.0/26")
        );
    }

    #[test]
    fn huge_v6_space_is_arithmetic_not_enumeration() {
        let s = space(r#"{"cidrV6":"fd00:10:244::/56"}"#, Family::V6);
        assert_eq!(s.count(), 1u128 << 66);
        let taken = nets(&["fd00:10:244::/122", "fd00:10:244::40/122"]);
        assert_eq!(
            s.first_free(&taken).unwrap().to_string(),
            "fd00:10:244::80/122"
        );
        assert_eq!(
            s.block((1u128 << 66) - 1).unwrap().to_string(),
            "fd00:10:244:ff:ffff:ffff:ffff:ffc0/122"
        );
        assert_eq!(s.block(1u128 << 66), None);
    }

    #[test]
    fn check_explains() {
        let s = space(r#"{"cidrV4":"10.244.0.0/16"}"#, Family::V4);
        assert!(s.check(&"10.244.1.64/26".parse().unwrap()).is_ok());
        for (b, why) in [
            ("10.244.1.0/24", "/26"),
            ("10.244.1.65/26", "host bits"),
            ("10.245.0.0/26", "outside"),
            ("fd00::/26", "not an IPv4"),
        ] {
            let e = s.check(&b.parse().unwrap()).unwrap_err();
            assert!(e.contains(why), "{b}: {e}");
        }
    }
}
