//! Address-range arithmetic for interval sets: CIDR minus exceptions, union of ranges into
//! the canonical maximal form nftables interval sets need (no two elements overlap or touch),
//! and ranges back to prefixes (for iptables-style rules, which only take CIDRs).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// An inclusive range of one family, as integers (IPv4 in the low 32 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Range {
    pub v6: bool,
    pub lo: u128,
    pub hi: u128,
}

pub(crate) fn addr_u128(a: IpAddr) -> (bool, u128) {
    match a {
        IpAddr::V4(a) => (false, u32::from(a) as u128),
        IpAddr::V6(a) => (true, u128::from(a)),
    }
}

pub(crate) fn u128_addr(v6: bool, x: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(x))
    } else {
        IpAddr::V4(Ipv4Addr::from(x as u32))
    }
}

impl Range {
    pub(crate) fn of_net(n: &IpNet) -> Range {
        let (v6, lo) = addr_u128(n.network());
        let (_, hi) = addr_u128(n.broadcast());
        Range { v6, lo, hi }
    }

    pub(crate) fn everything(v6: bool) -> Range {
        Range {
            v6,
            lo: 0,
            hi: if v6 { u128::MAX } else { u32::MAX as u128 },
        }
    }
}

/// `cidr` minus every `except` (same family; others are ignored).
pub(crate) fn subtract(cidr: &IpNet, except: &[IpNet]) -> Vec<Range> {
    let base = Range::of_net(cidr);
    let mut holes: Vec<Range> = except
        .iter()
        .map(Range::of_net)
        .filter(|r| r.v6 == base.v6)
        .collect();
    holes.sort();
    let mut out = Vec::new();
    let mut cur = base.lo;
    let mut done = false;
    for h in holes {
        if h.hi < cur || h.lo > base.hi {
            continue;
        }
        if h.lo > cur {
            out.push(Range {
                v6: base.v6,
                lo: cur,
                hi: h.lo - 1,
            });
        }
        if h.hi >= base.hi {
            done = true;
            break;
        }
        cur = cur.max(h.hi + 1);
    }
    if !done && cur <= base.hi {
        out.push(Range {
            v6: base.v6,
            lo: cur,
            hi: base.hi,
        });
    }
    out
}

/// Union into maximal ranges: sorted, and no two overlap or are adjacent.
pub(crate) fn merge(mut ranges: Vec<Range>) -> Vec<Range> {
    ranges.sort();
    let mut out: Vec<Range> = Vec::with_capacity(ranges.len());
    for r in ranges {
        if let Some(last) = out.last_mut()
            && last.v6 == r.v6
            && (r.lo <= last.hi || r.lo - 1 == last.hi)
        {
            last.hi = last.hi.max(r.hi);
            continue;
        }
        out.push(r);
    }
    out
}

/// The prefix length if `[lo, hi]` is exactly one CIDR block.
pub(crate) fn prefix_len(v6: bool, lo: u128, hi: u128) -> Option<u8> {
    let bits: u32 = if v6 { 128 } else { 32 };
    let size = hi.checked_sub(lo)?.checked_add(1);
    let host_bits = match size {
        None => 128, // the whole IPv6 space
        Some(s) if s.is_power_of_two() => s.trailing_zeros(),
        Some(_) => return None,
    };
    if host_bits > bits {
        return None;
    }
    let mask = if host_bits == 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    (lo & mask == 0).then_some((bits - host_bits) as u8)
}

/// A range as the fewest CIDR blocks covering exactly it (the linear plan's one rule per
/// block).
#[cfg(any(feature = "bench", test))]
pub(crate) fn to_prefixes(r: Range) -> Vec<(u128, u8)> {
    let bits: u32 = if r.v6 { 128 } else { 32 };
    let mut out = Vec::new();
    let mut lo = r.lo;
    loop {
        // The largest aligned block starting at `lo` that stays within `hi`.
        let mut host = if lo == 0 {
            bits
        } else {
            lo.trailing_zeros().min(bits)
        };
        loop {
            let last = if host >= 128 {
                u128::MAX
            } else {
                lo + ((1u128 << host) - 1)
            };
            if last <= r.hi {
                break;
            }
            host -= 1;
        }
        out.push((lo, (bits - host) as u8));
        let last = if host >= 128 {
            u128::MAX
        } else {
            lo + ((1u128 << host) - 1)
        };
        if last >= r.hi {
            return out;
        }
        lo = last + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn v4(s: &str) -> u128 {
        u32::from(s.parse::<Ipv4Addr>().unwrap()) as u128
    }

    #[test]
    fn cidr_minus_except() {
        let r = subtract(&net("172.17.0.0/16"), &[net("172.17.1.0/24")]);
        assert_eq!(
            r,
            vec![
                Range {
                    v6: false,
                    lo: v4("172.17.0.0"),
                    hi: v4("172.17.0.255")
                },
                Range {
                    v6: false,
                    lo: v4("172.17.2.0"),
                    hi: v4("172.17.255.255")
                },
            ]
        );
        // Excepts at both ends, overlapping each other.
        let r = subtract(
            &net("10.0.0.0/24"),
            &[net("10.0.0.0/26"), net("10.0.0.0/25"), net("10.0.0.192/26")],
        );
        assert_eq!(
            r,
            vec![Range {
                v6: false,
                lo: v4("10.0.0.128"),
                hi: v4("10.0.0.191")
            }]
        );
        assert!(subtract(&net("10.0.0.0/24"), &[net("10.0.0.0/24")]).is_empty());
        let all6 = subtract(&net("::/0"), &[]);
        assert_eq!(all6, vec![Range::everything(true)]);
    }

    #[test]
    fn merging_and_prefixes() {
        let m = merge(vec![
            Range {
                v6: false,
                lo: 5,
                hi: 9,
            },
            Range {
                v6: false,
                lo: 1,
                hi: 4,
            },
            Range {
                v6: false,
                lo: 20,
                hi: 30,
            },
            Range {
                v6: false,
                lo: 25,
                hi: 26,
            },
        ]);
        assert_eq!(
            m,
            vec![
                Range {
                    v6: false,
                    lo: 1,
                    hi: 9
                },
                Range {
                    v6: false,
                    lo: 20,
                    hi: 30
                }
            ]
        );
        assert_eq!(
            prefix_len(false, v4("10.0.0.0"), v4("10.0.0.255")),
            Some(24)
        );
        assert_eq!(prefix_len(false, v4("10.0.0.1"), v4("10.0.0.1")), Some(32));
        assert_eq!(prefix_len(false, 0, u32::MAX as u128), Some(0));
        assert_eq!(prefix_len(true, 0, u128::MAX), Some(0));
        assert_eq!(prefix_len(false, v4("10.0.0.1"), v4("10.0.0.2")), None);
        let p = to_prefixes(Range {
            v6: false,
            lo: v4("10.0.0.1"),
            hi: v4("10.0.0.6"),
        });
        assert_eq!(
            p,
            vec![
                (v4("10.0.0.1"), 32),
                (v4("10.0.0.2"), 31),
                (v4("10.0.0.4"), 31),
                (v4("10.0.0.6"), 32)
            ]
        );
        assert_eq!(to_prefixes(Range::everything(false)), vec![(0, 0)]);
        assert_eq!(to_prefixes(Range::everything(true)), vec![(0, 0)]);
    }
}
