//! The cluster config as an operator writes it on Kubernetes: the ConfigMap `weft-config`,
//! every value a string (`cidrV4: "10.244.0.0/16"`, `blockSizeV4: "26"`, …), plus the two
//! settings only this datastore has, `ipam` and `mtu`.
//!
//! The keys are the cluster config's own JSON keys, so one validator (and one set of error
//! messages) serves both; a number-valued key is read as a JSON number. Any error refuses
//! the whole map, naming the key and the reason: half a config is never applied.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::config::ClusterConfig;
use crate::error::ConfigError;

/// Where a node's pod addresses come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpamMode {
    /// weft's own blocks (WeftBlock objects), claimed and fenced like in etcd.
    Weft,
    /// The node's `spec.podCIDRs`, allocated by kube-controller-manager.
    Kubernetes,
}

impl IpamMode {
    pub fn as_str(self) -> &'static str {
        match self {
            IpamMode::Weft => "weft",
            IpamMode::Kubernetes => "kubernetes",
        }
    }
}

/// Everything the ConfigMap sets.
#[derive(Clone, Debug, PartialEq)]
pub struct KubeConfig {
    pub cluster: ClusterConfig,
    pub ipam: IpamMode,
    /// The pod MTU; `None` derives it from the node's uplink.
    pub mtu: Option<u32>,
}

const NUMBER_KEYS: [&str; 4] = ["blockSizeV4", "blockSizeV6", "vxlanVni", "vxlanPort"];
const STRING_KEYS: [&str; 3] = ["cidrV4", "cidrV6", "backend"];
/// The smallest MTU IPv4 guarantees (RFC 791) and the largest jumbo frame in common use.
const MTU_RANGE: (u32, u32) = (576, 9000);
/// IPv6 needs 1280 on every link (RFC 8200).
const MTU_MIN_V6: u32 = 1280;

fn field(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::ConfigMap {
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// Parses the ConfigMap's `data`.
pub fn parse(data: &BTreeMap<String, String>) -> Result<KubeConfig, ConfigError> {
    let mut json = Map::new();
    let mut ipam = IpamMode::Weft;
    let mut mtu = None;
    for (key, raw) in data {
        let value = raw.trim();
        match key.as_str() {
            "ipam" => {
                ipam = match value {
                    "weft" => IpamMode::Weft,
                    "kubernetes" => IpamMode::Kubernetes,
                    _ => {
                        return Err(field(
                            key,
                            format!("{value:?} is not one of \"weft\", \"kubernetes\""),
                        ));
                    }
                }
            }
            "mtu" => {
                if value.is_empty() {
                    continue;
                }
                let n: u32 = value
                    .parse()
                    .map_err(|_| field(key, format!("{value:?} is not a whole number")))?;
                if !(MTU_RANGE.0..=MTU_RANGE.1).contains(&n) {
                    return Err(field(
                        key,
                        format!("{n} is outside {}..={}", MTU_RANGE.0, MTU_RANGE.1),
                    ));
                }
                mtu = Some(n);
            }
            k if NUMBER_KEYS.contains(&k) => {
                let n: u64 = value
                    .parse()
                    .map_err(|_| field(key, format!("{value:?} is not a whole number")))?;
                json.insert(key.clone(), Value::from(n));
            }
            k if STRING_KEYS.contains(&k) => {
                if !value.is_empty() {
                    json.insert(key.clone(), Value::from(value));
                }
            }
            _ => {
                let mut known: Vec<&str> =
                    STRING_KEYS.iter().chain(&NUMBER_KEYS).copied().collect();
                known.extend(["ipam", "mtu"]);
                return Err(field(
                    key,
                    format!("unknown key (known: {})", known.join(", ")),
                ));
            }
        }
    }
    let cluster = ClusterConfig::try_from(json)?;
    if let Some(m) = mtu
        && cluster.cidr_v6.is_some()
        && m < MTU_MIN_V6
    {
        return Err(field(
            "mtu",
            format!("{m} is below {MTU_MIN_V6}, the least IPv6 allows, and cidrV6 is set"),
        ));
    }
    Ok(KubeConfig { cluster, ipam, mtu })
}

/// The ConfigMap data that [`parse`] reads back to `cfg`.
pub fn render(cfg: &KubeConfig) -> BTreeMap<String, String> {
    let mut data = BTreeMap::new();
    if let Ok(Value::Object(m)) = serde_json::to_value(&cfg.cluster) {
        for (k, v) in m {
            let s = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            data.insert(k, s);
        }
    }
    data.insert("ipam".into(), cfg.ipam.as_str().into());
    if let Some(m) = cfg.mtu {
        data.insert("mtu".into(), m.to_string());
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_full_map_parses_and_renders_back() {
        let c = parse(&map(&[
            ("cidrV4", "10.244.0.0/16"),
            ("cidrV6", "fd00:10:244::/56"),
            ("blockSizeV4", "26"),
            ("backend", "host-gw"),
            ("ipam", "kubernetes"),
            ("mtu", "1400"),
        ]))
        .unwrap();
        assert_eq!(c.ipam, IpamMode::Kubernetes);
        assert_eq!(c.mtu, Some(1400));
        assert_eq!(c.cluster.block_size_v4, 26);
        assert_eq!(parse(&render(&c)).unwrap(), c);
    }

    #[test]
    fn every_error_names_the_key_and_the_reason() {
        for (pairs, key, why) in [
            (vec![("cidrV4", "10.244.0.1/16")], "cidrV4", "host bits"),
            (vec![("cidrV4", "banana")], "cidrV4", ""),
            (
                vec![("cidrV4", "10.244.0.0/16"), ("backend", "ipip")],
                "backend",
                "",
            ),
            (
                vec![("cidrV4", "10.244.0.0/16"), ("mtu", "100")],
                "mtu",
                "outside",
            ),
            (
                vec![("cidrV4", "10.244.0.0/16"), ("mtu", "lots")],
                "mtu",
                "whole number",
            ),
            (
                vec![("cidrV4", "10.244.0.0/16"), ("blockSizeV4", "x")],
                "blockSizeV4",
                "whole number",
            ),
            (
                vec![("cidrV4", "10.244.0.0/16"), ("ipam", "host-local")],
                "ipam",
                "not one of",
            ),
            (
                vec![("cidrV4", "10.244.0.0/16"), ("cidrv4", "10.0.0.0/8")],
                "cidrv4",
                "unknown key",
            ),
            (
                vec![("cidrV6", "fd00::/56"), ("mtu", "1000")],
                "mtu",
                "IPv6",
            ),
            (vec![("ipam", "weft")], "", "no pod CIDR"),
        ] {
            let e = parse(&map(&pairs)).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(why), "{pairs:?}: {e}");
        }
    }
}
