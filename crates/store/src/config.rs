//! The cluster config: pod CIDRs, block sizes, backend and VXLAN parameters. One per cluster,
//! written once by [`crate::Datastore::init_config`] and never changed afterwards.
//!
//! Parsing goes through a loose raw form (every key an untyped JSON value) so that each
//! error names its field; `deny_unknown_fields` makes a typo such as `cidrv4` fail instead of
//! silently leaving the default in place.
//!
//! Limits, and why:
//! - block size at most /30 (IPv4) or /126 (IPv6): a smaller block cannot hold a pod address
//!   next to network/gateway addresses.
//! - block size at least the CIDR's prefix length: a block must fit inside the CIDR.
//! - at most 2^20 blocks per IPv4 CIDR (a /8 cut into /28s) and 2^80 per IPv6 CIDR (a /42
//!   cut into /122s): more is almost certainly a typo in the block size, and a v4 cluster that
//!   size could not be listed in one watch anyway. Enumeration itself is offset arithmetic and
//!   never materialises the candidates, so the limits are about catching mistakes.
//! - CIDRs must not overlap loopback, link-local, multicast or other reserved ranges, and an
//!   IPv6 CIDR must not overlap IPv4-mapped space (`::ffff:0:0/96`), which aliases IPv4.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ConfigError;

/// How a node reaches its peers' pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    Vxlan,
    HostGw,
    Auto,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Vxlan => "vxlan",
            BackendKind::HostGw => "host-gw",
            BackendKind::Auto => "auto",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An address family. Displays as `IPv4`/`IPv6`; [`Family::key`] is the short form used in
/// datastore keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// `v4` or `v6`.
    pub fn key(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        }
    }

    pub fn of(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }

    /// Address width in bits.
    pub fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    /// The longest block prefix that still leaves room for pods.
    pub fn max_block_size(self) -> u8 {
        match self {
            Family::V4 => 30,
            Family::V6 => 126,
        }
    }

    /// log2 of the most blocks one CIDR may be cut into (see the module doc).
    pub fn max_block_count_bits(self) -> u8 {
        match self {
            Family::V4 => 20,
            Family::V6 => 80,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

pub const DEFAULT_BLOCK_SIZE_V4: u8 = 26;
pub const DEFAULT_BLOCK_SIZE_V6: u8 = 122;
pub const DEFAULT_VXLAN_VNI: u32 = 1;
pub const DEFAULT_VXLAN_PORT: u16 = 4789;
pub const MAX_VNI: u32 = (1 << 24) - 1;

/// The cluster config, JSON with camelCase keys, e.g.
/// `{"cidrV4":"10.244.0.0/16","cidrV6":"fd00:10:244::/56","blockSizeV4":26,"blockSizeV6":122,
///   "backend":"vxlan","vxlanVni":1,"vxlanPort":4789}`.
///
/// Omitted keys take their defaults (block sizes 26/122, backend vxlan, VNI 1, port 4789);
/// unknown keys are an error. Deserializing (serde or [`ClusterConfig::from_json`]) always
/// validates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "serde_json::Map<String, Value>")]
pub struct ClusterConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidr_v4: Option<Ipv4Net>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidr_v6: Option<Ipv6Net>,
    pub block_size_v4: u8,
    pub block_size_v6: u8,
    pub backend: BackendKind,
    pub vxlan_vni: u32,
    pub vxlan_port: u16,
}

impl ClusterConfig {
    /// A config with these CIDRs and every other field at its default (not yet validated).
    pub fn new(cidr_v4: Option<Ipv4Net>, cidr_v6: Option<Ipv6Net>) -> ClusterConfig {
        ClusterConfig {
            cidr_v4,
            cidr_v6,
            block_size_v4: DEFAULT_BLOCK_SIZE_V4,
            block_size_v6: DEFAULT_BLOCK_SIZE_V6,
            backend: BackendKind::Vxlan,
            vxlan_vni: DEFAULT_VXLAN_VNI,
            vxlan_port: DEFAULT_VXLAN_PORT,
        }
    }

    /// Parse and validate.
    pub fn from_json(s: &str) -> Result<ClusterConfig, ConfigError> {
        match serde_json::from_str(s).map_err(|e| ConfigError::Malformed(e.to_string()))? {
            Value::Object(map) => ClusterConfig::try_from(map),
            other => Err(ConfigError::Malformed(format!(
                "expected a JSON object, got {}",
                describe(&other)
            ))),
        }
    }

    /// Compact JSON, the form stored in the datastore.
    pub fn to_json(&self) -> String {
        // Serializing plain fields cannot fail; fall back to Debug rather than panic.
        serde_json::to_string(self).unwrap_or_else(|_| format!("{self:?}"))
    }

    pub fn cidr(&self, f: Family) -> Option<IpNet> {
        match f {
            Family::V4 => self.cidr_v4.map(IpNet::V4),
            Family::V6 => self.cidr_v6.map(IpNet::V6),
        }
    }

    pub fn block_size(&self, f: Family) -> u8 {
        match f {
            Family::V4 => self.block_size_v4,
            Family::V6 => self.block_size_v6,
        }
    }

    /// The families that have a CIDR, IPv4 first.
    pub fn families(&self) -> Vec<Family> {
        Family::ALL
            .into_iter()
            .filter(|f| self.cidr(*f).is_some())
            .collect()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.cidr_v4.is_none() && self.cidr_v6.is_none() {
            return Err(ConfigError::NoCidr);
        }
        for family in Family::ALL {
            let field = block_field(family);
            let size = self.block_size(family);
            if size > family.max_block_size() {
                return Err(ConfigError::BlockTooSmall {
                    field,
                    size,
                    max: family.max_block_size(),
                });
            }
            let Some(cidr) = self.cidr(family) else {
                continue;
            };
            let cfield = cidr_field(family);
            if cidr.trunc() != cidr {
                return Err(ConfigError::HostBits {
                    field: cfield,
                    net: cidr,
                    canonical: cidr.trunc(),
                });
            }
            for (reserved, what) in reserved_ranges(family) {
                if overlaps(&cidr, &reserved) {
                    return Err(ConfigError::Overlap {
                        field: cfield,
                        net: cidr,
                        other: reserved,
                        what,
                    });
                }
            }
            if size < cidr.prefix_len() {
                return Err(ConfigError::BlockDoesNotFit { field, size, cidr });
            }
            let bits = size - cidr.prefix_len();
            if bits > family.max_block_count_bits() {
                return Err(ConfigError::TooManyBlocks {
                    field,
                    size,
                    cidr,
                    bits,
                    limit: family.max_block_count_bits(),
                });
            }
        }
        if self.vxlan_vni == 0 || self.vxlan_vni > MAX_VNI {
            return Err(ConfigError::Vni(self.vxlan_vni));
        }
        if self.vxlan_port == 0 {
            return Err(ConfigError::Port);
        }
        Ok(())
    }
}

fn cidr_field(f: Family) -> &'static str {
    match f {
        Family::V4 => "cidrV4",
        Family::V6 => "cidrV6",
    }
}

fn block_field(f: Family) -> &'static str {
    match f {
        Family::V4 => "blockSizeV4",
        Family::V6 => "blockSizeV6",
    }
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Ranges no pod network may use: traffic to them is special-cased by every host.
fn reserved_ranges(f: Family) -> Vec<(IpNet, &'static str)> {
    let v4 = |a: [u8; 4], p: u8, what| {
        Ipv4Net::new(Ipv4Addr::from(a), p)
            .ok()
            .map(|n| (IpNet::V4(n), what))
    };
    let v6 = |a: u128, p: u8, what| {
        Ipv6Net::new(Ipv6Addr::from(a), p)
            .ok()
            .map(|n| (IpNet::V6(n), what))
    };
    let list = match f {
        Family::V4 => vec![
            v4([0, 0, 0, 0], 8, "\"this network\", reserved"),
            v4([127, 0, 0, 0], 8, "loopback"),
            v4([169, 254, 0, 0], 16, "link-local"),
            v4([224, 0, 0, 0], 4, "multicast"),
            v4([240, 0, 0, 0], 4, "reserved, includes broadcast"),
        ],
        Family::V6 => vec![
            v6(0, 128, "the unspecified address"),
            v6(1, 128, "loopback"),
            v6(
                0xffff_0000_0000,
                96,
                "IPv4-mapped addresses, which alias the IPv4 space",
            ),
            v6(0xfe80 << 112, 10, "link-local"),
            v6(0xff00 << 112, 8, "multicast"),
        ],
    };
    list.into_iter().flatten().collect()
}

/// The wire form before typing: every field untyped so that errors can name it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawClusterConfig {
    #[serde(default)]
    cidr_v4: Option<Value>,
    #[serde(default)]
    cidr_v6: Option<Value>,
    #[serde(default)]
    block_size_v4: Option<Value>,
    #[serde(default)]
    block_size_v6: Option<Value>,
    #[serde(default)]
    backend: Option<Value>,
    #[serde(default)]
    vxlan_vni: Option<Value>,
    #[serde(default)]
    vxlan_port: Option<Value>,
}

impl TryFrom<serde_json::Map<String, Value>> for ClusterConfig {
    type Error = ConfigError;

    fn try_from(map: serde_json::Map<String, Value>) -> Result<ClusterConfig, ConfigError> {
        let raw: RawClusterConfig = serde_json::from_value(Value::Object(map))
            .map_err(|e| ConfigError::Malformed(e.to_string()))?;
        let cfg = ClusterConfig {
            cidr_v4: match raw_cidr(raw.cidr_v4, Family::V4)? {
                Some(IpNet::V4(n)) => Some(n),
                _ => None,
            },
            cidr_v6: match raw_cidr(raw.cidr_v6, Family::V6)? {
                Some(IpNet::V6(n)) => Some(n),
                _ => None,
            },
            block_size_v4: raw_int(raw.block_size_v4, "blockSizeV4", 0, 32u8)?
                .unwrap_or(DEFAULT_BLOCK_SIZE_V4),
            block_size_v6: raw_int(raw.block_size_v6, "blockSizeV6", 0, 128u8)?
                .unwrap_or(DEFAULT_BLOCK_SIZE_V6),
            backend: raw_backend(raw.backend)?.unwrap_or(BackendKind::Vxlan),
            vxlan_vni: raw_int(raw.vxlan_vni, "vxlanVni", 0, u32::MAX)?
                .unwrap_or(DEFAULT_VXLAN_VNI),
            vxlan_port: raw_int(raw.vxlan_port, "vxlanPort", 0, u16::MAX)?
                .unwrap_or(DEFAULT_VXLAN_PORT),
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn raw_cidr(v: Option<Value>, family: Family) -> Result<Option<IpNet>, ConfigError> {
    let field = cidr_field(family);
    let s = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(ConfigError::Field {
                field,
                reason: format!(
                    "expected a CIDR string such as \"10.244.0.0/16\", got {}",
                    describe(&other)
                ),
            });
        }
    };
    let net: IpNet = s.trim().parse().map_err(|_| ConfigError::Field {
        field,
        reason: format!("{s:?} is not a CIDR (address/prefix-length)"),
    })?;
    if Family::of(&net) != family {
        return Err(ConfigError::WrongFamily {
            field,
            net,
            expected: family,
        });
    }
    if net.trunc() != net {
        return Err(ConfigError::HostBits {
            field,
            net,
            canonical: net.trunc(),
        });
    }
    Ok(Some(net))
}

fn raw_int<T: TryFrom<u64>>(
    v: Option<Value>,
    field: &'static str,
    min: u64,
    max: impl Into<u64>,
) -> Result<Option<T>, ConfigError> {
    let max = max.into();
    let v = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => v,
    };
    let n = v.as_u64().filter(|n| (min..=max).contains(n));
    match n.and_then(|n| T::try_from(n).ok()) {
        Some(n) => Ok(Some(n)),
        None => Err(ConfigError::Field {
            field,
            reason: match &v {
                Value::Number(num) => format!("{num} is outside {min}..={max}"),
                other => format!("expected an integer, got {}", describe(other)),
            },
        }),
    }
}

fn raw_backend(v: Option<Value>) -> Result<Option<BackendKind>, ConfigError> {
    let field = "backend";
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => match s.as_str() {
            "vxlan" => Ok(Some(BackendKind::Vxlan)),
            "host-gw" => Ok(Some(BackendKind::HostGw)),
            "auto" => Ok(Some(BackendKind::Auto)),
            _ => Err(ConfigError::Field {
                field,
                reason: format!(
                    "unknown backend {s:?}; expected \"vxlan\", \"host-gw\" or \"auto\""
                ),
            }),
        },
        Some(other) => Err(ConfigError::Field {
            field,
            reason: format!("expected a string, got {}", describe(&other)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> ConfigError {
        match ClusterConfig::from_json(s) {
            Ok(c) => panic!("{s} was accepted as {c:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn full_example_parses_and_round_trips() {
        let s = r#"{"cidrV4":"10.244.0.0/16","cidrV6":"fd00:10:244::/56","blockSizeV4":26,"blockSizeV6":122,"backend":"vxlan","vxlanVni":1,"vxlanPort":4789}"#;
        let c = ClusterConfig::from_json(s).unwrap();
        assert_eq!(c.cidr(Family::V4).unwrap().to_string(), "10.244.0.0/16");
        assert_eq!(c.cidr(Family::V6).unwrap().to_string(), "fd00:10:244::/56");
        assert_eq!(c.to_json(), s);
        let again: ClusterConfig = serde_json::from_str(&c.to_json()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn serde_path_validates_too() {
        assert!(serde_json::from_str::<ClusterConfig>("[]").is_err());
        assert!(serde_json::from_str::<ClusterConfig>(r#"["10.0.0.0/8"]"#).is_err());
        let e = serde_json::from_str::<ClusterConfig>(r#"{"cidrV4":"10.0.0.1/8"}"#).unwrap_err();
        assert!(e.to_string().contains("did you mean 10.0.0.0/8"), "{e}");
        let e =
            serde_json::from_str::<ClusterConfig>(r#"{"cidrV4":"10.0.0.0/8","x":1}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `x`"), "{e}");
    }

    #[test]
    fn defaults_fill_omitted_keys() {
        let c = ClusterConfig::from_json(r#"{"cidrV6":"fd00::/48"}"#).unwrap();
        assert_eq!(c.cidr_v4, None);
        assert_eq!(c.block_size_v4, 26);
        assert_eq!(c.block_size_v6, 122);
        assert_eq!(c.backend, BackendKind::Vxlan);
        assert_eq!((c.vxlan_vni, c.vxlan_port), (1, 4789));
        assert_eq!(c.families(), vec![Family::V6]);
        let c = ClusterConfig::from_json(r#"{"cidrV4":"10.0.0.0/8","backend":"host-gw"}"#).unwrap();
        assert_eq!(c.backend, BackendKind::HostGw);
    }

    #[test]
    fn every_bad_input_names_its_field() {
        let cases: &[(&str, &str)] = &[
            ("not json", "not valid"),
            ("[]", "not valid"),
            (r#"{"cidrv4":"10.0.0.0/8"}"#, "unknown field `cidrv4`"),
            (
                r#"{"cidrV4":"10.0.0.0/8","backend":"geneve"}"#,
                "backend: unknown backend \"geneve\"",
            ),
            (
                r#"{"cidrV4":"10.0.0.0/8","backend":1}"#,
                "backend: expected a string",
            ),
            (r#"{}"#, "no pod CIDR"),
            (r#"{"cidrV4":null}"#, "no pod CIDR"),
            (
                r#"{"cidrV4":"10.244.0.1/16"}"#,
                "cidrV4: 10.244.0.1/16 has host bits set; did you mean 10.244.0.0/16",
            ),
            (r#"{"cidrV6":"fd00::1/64"}"#, "did you mean fd00::/64"),
            (
                r#"{"cidrV4":"fd00::/64"}"#,
                "cidrV4: fd00::/64 is not an IPv4 network",
            ),
            (
                r#"{"cidrV6":"10.0.0.0/8"}"#,
                "cidrV6: 10.0.0.0/8 is not an IPv6 network",
            ),
            (
                r#"{"cidrV4":"10.0.0.0"}"#,
                "cidrV4: \"10.0.0.0\" is not a CIDR",
            ),
            (r#"{"cidrV4":16}"#, "cidrV4: expected a CIDR string"),
            (
                r#"{"cidrV4":"127.0.0.0/16"}"#,
                "overlaps 127.0.0.0/8 (loopback)",
            ),
            (
                r#"{"cidrV4":"0.0.0.0/0","blockSizeV4":24}"#,
                "cidrV4: 0.0.0.0/0 overlaps",
            ),
            (r#"{"cidrV6":"::ffff:10.0.0.0/120"}"#, "IPv4-mapped"),
            (r#"{"cidrV6":"fe80::/64"}"#, "link-local"),
            (
                r#"{"cidrV4":"10.244.0.0/24","blockSizeV4":20}"#,
                "blockSizeV4: /20 blocks do not fit in 10.244.0.0/24",
            ),
            (
                r#"{"cidrV4":"10.244.0.0/16","blockSizeV4":31}"#,
                "blockSizeV4: /31 blocks are too small",
            ),
            (
                r#"{"cidrV4":"10.244.0.0/16","blockSizeV6":127}"#,
                "blockSizeV6: /127 blocks are too small",
            ),
            (
                r#"{"cidrV4":"10.244.0.0/16","blockSizeV4":33}"#,
                "blockSizeV4: 33 is outside 0..=32",
            ),
            (
                r#"{"cidrV4":"10.244.0.0/16","blockSizeV4":-1}"#,
                "blockSizeV4: -1 is outside",
            ),
            (
                r#"{"cidrV4":"10.244.0.0/16","blockSizeV4":"26"}"#,
                "blockSizeV4: expected an integer, got a string",
            ),
            (
                r#"{"cidrV4":"10.0.0.0/8","blockSizeV4":30}"#,
                "blockSizeV4: /30 blocks cut 10.0.0.0/8 into 2^22 blocks",
            ),
            (r#"{"cidrV6":"fd00::/16"}"#, "2^106 blocks"),
            (
                r#"{"cidrV4":"10.0.0.0/8","vxlanVni":0}"#,
                "vxlanVni: 0 is outside 1..=16777215",
            ),
            (
                r#"{"cidrV4":"10.0.0.0/8","vxlanVni":16777216}"#,
                "vxlanVni: 16777216 is outside",
            ),
            (
                r#"{"cidrV4":"10.0.0.0/8","vxlanPort":0}"#,
                "vxlanPort: 0 is not",
            ),
            (
                r#"{"cidrV4":"10.0.0.0/8","vxlanPort":65536}"#,
                "vxlanPort: 65536 is outside 0..=65535",
            ),
        ];
        for (input, want) in cases {
            let msg = err(input).to_string();
            assert!(
                msg.contains(want),
                "{input}: {msg:?} does not contain {want:?}"
            );
        }
    }

    #[test]
    fn limits_at_the_edge_are_accepted() {
        for ok in [
            r#"{"cidrV4":"10.0.0.0/8","blockSizeV4":28}"#,
            r#"{"cidrV4":"10.0.0.0/30","blockSizeV4":30}"#,
            r#"{"cidrV6":"fd00::/48","blockSizeV6":122}"#,
            r#"{"cidrV6":"fd00::/46","blockSizeV6":126}"#,
            r#"{"cidrV4":"10.0.0.0/8","vxlanVni":16777215,"vxlanPort":65535}"#,
        ] {
            ClusterConfig::from_json(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn validate_catches_hand_built_configs() {
        let mut c = ClusterConfig::new(Some("10.244.0.0/16".parse().unwrap()), None);
        c.validate().unwrap();
        c.cidr_v4 = Some("10.244.0.1/16".parse().unwrap());
        assert!(matches!(c.validate(), Err(ConfigError::HostBits { .. })));
        let c = ClusterConfig::new(None, None);
        assert_eq!(c.validate(), Err(ConfigError::NoCidr));
    }
}
