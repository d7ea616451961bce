//! Spec versions: which ones weft speaks and how they compare.

use crate::error::{CniError, Code};

/// Versions whose results weft can both read (prevResult, IPAM output) and write.
/// 0.1.0/0.2.0 are left out on purpose: their `ip4`/`ip6` results cannot name interfaces,
/// which chained plugins (portmap, bandwidth, tuning) need.
pub const SUPPORTED: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The version weft reports when it has nothing better (VERSION output, early errors).
pub const CURRENT: &str = "1.1.0";

/// A parsed `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Semver(pub u32, pub u32, pub u32);

impl Semver {
    pub fn parse(s: &str) -> Result<Semver, CniError> {
        let bad = || {
            CniError::new(Code::Decoding, format!("invalid version \"{s}\""))
                .with_details("a CNI version is three dot-separated numbers, e.g. 1.1.0")
        };
        let mut parts = s.split('.');
        let mut next = || -> Result<u32, CniError> {
            parts
                .next()
                .ok_or_else(bad)?
                .parse::<u32>()
                .map_err(|_| bad())
        };
        let v = Semver(next()?, next()?, next()?);
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(v)
    }

    pub fn at_least(s: &str, min: Semver) -> Result<bool, CniError> {
        Ok(Semver::parse(s)? >= min)
    }
}

pub fn is_supported(v: &str) -> bool {
    SUPPORTED.contains(&v)
}

/// Result layout families: what changes on the wire between versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// 0.1.0 / 0.2.0: `ip4` / `ip6`.
    Legacy,
    /// 0.3.x / 0.4.0: `ips[].version` required.
    V03,
    /// 1.0.0 and later.
    V1,
}

pub fn layout(v: &str) -> Result<Layout, CniError> {
    let s = Semver::parse(v)?;
    Ok(if s < Semver(0, 3, 0) {
        Layout::Legacy
    } else if s < Semver(1, 0, 0) {
        Layout::V03
    } else {
        Layout::V1
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders() {
        assert!(Semver::parse("1.1.0").unwrap() > Semver::parse("0.4.0").unwrap());
        assert_eq!(Semver::parse("1.1").unwrap_err().code, 6);
        assert_eq!(Semver::parse("1.1.0.0").unwrap_err().code, 6);
        assert_eq!(Semver::parse("a.b.c").unwrap_err().code, 6);
        assert_eq!(layout("0.2.0").unwrap(), Layout::Legacy);
        assert_eq!(layout("0.4.0").unwrap(), Layout::V03);
        assert_eq!(layout("1.1.0").unwrap(), Layout::V1);
    }
}
