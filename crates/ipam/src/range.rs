//! Address ranges and range sets: validation with host-local's defaults, membership, and the
//! integer arithmetic the allocator walks with.
//!
//! Addresses are handled as `u128` (IPv4 zero-extended) so one code path serves both
//! families and a /64 is never expanded into a list.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// One validated range: `start..=end` inside `subnet`. `gateway` is never handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub subnet: IpNet,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: Option<IpAddr>,
}

/// The ranges one address is allocated from (host-local's "range set"); all one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet(pub Vec<Range>);

/// Why a range is invalid; `field` is the range object's key (`subnet`, `rangeStart`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeError {
    pub field: &'static str,
    pub message: String,
}

fn err(field: &'static str, message: String) -> RangeError {
    RangeError { field, message }
}

pub(crate) fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Inverse of [`to_u128`] for the family of `like`. Callers only pass values that came from
/// an address of that family plus/minus steps kept inside a range, so truncation cannot occur.
pub(crate) fn from_u128(value: u128, like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(value as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

impl Range {
    /// Validate and fill host-local's defaults: gateway = network+1, start = network+1 (the
    /// allocator skips the gateway), end = broadcast−1 (IPv4) or the last address (IPv6).
    ///
    /// Rejected: host bits in `subnet`, prefixes leaving fewer than 4 addresses (longer than
    /// /30 or /126, so /31 and /32 too), `start`/`end`/`gateway` outside the subnet or of the
    /// other family, `start > end`.
    pub fn new(
        subnet: IpNet,
        start: Option<IpAddr>,
        end: Option<IpAddr>,
        gateway: Option<IpAddr>,
    ) -> Result<Range, RangeError> {
        if subnet.addr() != subnet.network() {
            return Err(err(
                "subnet",
                format!(
                    "{subnet} has host bits set; the network address for /{} is {}",
                    subnet.prefix_len(),
                    subnet.network()
                ),
            ));
        }
        if subnet.prefix_len() + 2 > subnet.max_prefix_len() {
            return Err(err(
                "subnet",
                format!(
                    "{subnet} is too small to allocate from (at most /30 for IPv4, /126 for IPv6)"
                ),
            ));
        }
        let network = to_u128(subnet.network());
        let first = from_u128(network + 1, subnet.network());
        let last = match subnet {
            IpNet::V4(n) => IpAddr::V4(Ipv4Addr::from(u32::from(n.broadcast()) - 1)),
            IpNet::V6(n) => IpAddr::V6(n.broadcast()),
        };
        let inside = |field: &'static str, ip: IpAddr| {
            if subnet.contains(&ip) {
                Ok(ip)
            } else {
                Err(err(field, format!("{ip} is not in subnet {subnet}")))
            }
        };
        let start = start
            .map(|ip| inside("rangeStart", ip))
            .transpose()?
            .unwrap_or(first);
        let end = end
            .map(|ip| inside("rangeEnd", ip))
            .transpose()?
            .unwrap_or(last);
        let gateway = gateway
            .map(|ip| inside("gateway", ip))
            .transpose()?
            .unwrap_or(first);
        if to_u128(start) > to_u128(end) {
            return Err(err(
                "rangeStart",
                format!("rangeStart {start} is after rangeEnd {end}"),
            ));
        }
        Ok(Range {
            subnet,
            start,
            end,
            gateway: Some(gateway),
        })
    }

    /// Whether `ip` lies in `start..=end` (host-local's `Range.Contains`).
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.start.is_ipv4()
            && (to_u128(self.start)..=to_u128(self.end)).contains(&to_u128(ip))
    }

    /// Whether the two ranges share an address (different families never do).
    pub fn overlaps(&self, other: &Range) -> bool {
        self.start.is_ipv4() == other.start.is_ipv4()
            && to_u128(self.start) <= to_u128(other.end)
            && to_u128(other.start) <= to_u128(self.end)
    }

    /// How many addresses this range can hand out (its size minus the gateway if inside).
    pub fn capacity(&self) -> u128 {
        let span = to_u128(self.end) - to_u128(self.start);
        // span + 1 only overflows for ::/0 with explicit bounds, which the /126 rule allows
        // in theory; saturate rather than wrap.
        let size = span.saturating_add(1);
        match self.gateway {
            Some(gw) if self.contains(gw) => size - 1,
            _ => size,
        }
    }

    pub fn is_ipv4(&self) -> bool {
        self.start.is_ipv4()
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

impl RangeSet {
    /// The range containing `ip`, if any.
    pub fn range_for(&self, ip: IpAddr) -> Option<&Range> {
        self.0.iter().find(|r| r.contains(ip))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.range_for(ip).is_some()
    }

    /// Whether any range of `self` overlaps any range of `other`.
    pub fn overlaps(&self, other: &RangeSet) -> bool {
        self.0.iter().any(|a| other.0.iter().any(|b| a.overlaps(b)))
    }

    /// The family of the set; `None` only for an empty set (config never yields one).
    pub fn is_ipv4(&self) -> Option<bool> {
        self.0.first().map(Range::is_ipv4)
    }
}

impl fmt::Display for RangeSet {
    /// host-local's form: `start-end` of every range, comma separated.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("test CIDR")
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test IP")
    }

    #[test]
    fn v4_defaults() {
        let r = Range::new(net("10.99.0.0/24"), None, None, None).expect("valid");
        assert_eq!(r.start, ip("10.99.0.1"));
        assert_eq!(r.end, ip("10.99.0.254"));
        assert_eq!(r.gateway, Some(ip("10.99.0.1")));
        assert_eq!(r.capacity(), 253);
        assert_eq!(r.to_string(), "10.99.0.1-10.99.0.254");
    }

    #[test]
    fn v6_defaults_end_at_last_address() {
        let r = Range::new(net("fd00:99::/120"), None, None, None).expect("valid");
        assert_eq!(r.start, ip("fd00:99::1"));
        assert_eq!(r.end, ip("fd00:99::ff"));
        assert_eq!(r.gateway, Some(ip("fd00:99::1")));
        let big = Range::new(net("fd00::/64"), None, None, None).expect("valid");
        assert_eq!(big.capacity(), (1u128 << 64) - 2);
    }

    #[test]
    fn smallest_allowed_and_rejected_prefixes() {
        let r = Range::new(net("10.0.0.0/30"), None, None, None).expect("/30 ok");
        assert_eq!((r.start, r.end), (ip("10.0.0.1"), ip("10.0.0.2")));
        assert_eq!(r.capacity(), 1);
        Range::new(net("fd00::/126"), None, None, None).expect("/126 ok");
        for bad in ["10.0.0.0/31", "10.0.0.0/32", "fd00::/127", "fd00::/128"] {
            let e = Range::new(net(bad), None, None, None).expect_err(bad);
            assert_eq!(e.field, "subnet", "{bad}");
            assert!(e.message.contains("too small"), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn rejects_host_bits_bounds_and_gateway() {
        let e = Range::new(net("10.99.0.1/24"), None, None, None).expect_err("host bits");
        assert_eq!(e.field, "subnet");
        assert!(e.message.contains("10.99.0.0"));
        let s = net("10.99.0.0/24");
        let cases = [
            (Some(ip("10.99.1.5")), None, None, "rangeStart"),
            (None, Some(ip("10.98.0.5")), None, "rangeEnd"),
            (None, None, Some(ip("10.99.1.1")), "gateway"),
            (Some(ip("fd00::1")), None, None, "rangeStart"),
            (
                Some(ip("10.99.0.20")),
                Some(ip("10.99.0.10")),
                None,
                "rangeStart",
            ),
        ];
        for (start, end, gw, field) in cases {
            let e = Range::new(s, start, end, gw).expect_err(field);
            assert_eq!(e.field, field, "{e:?}");
        }
    }

    #[test]
    fn explicit_bounds_and_overlap() {
        let a = Range::new(
            net("10.0.0.0/24"),
            Some(ip("10.0.0.10")),
            Some(ip("10.0.0.20")),
            None,
        )
        .expect("valid");
        let b = Range::new(net("10.0.0.0/24"), Some(ip("10.0.0.21")), None, None).expect("valid");
        let c = Range::new(net("10.0.0.0/24"), Some(ip("10.0.0.20")), None, None).expect("valid");
        assert!(!a.overlaps(&b));
        assert!(a.overlaps(&c));
        // Gateway .1 lies outside 10..20, so nothing is subtracted.
        assert_eq!(a.capacity(), 11);
        assert!(a.contains(ip("10.0.0.10")) && a.contains(ip("10.0.0.20")));
        assert!(!a.contains(ip("10.0.0.21")) && !a.contains(ip("fd00::a")));
    }
}
