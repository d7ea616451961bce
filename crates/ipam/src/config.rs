//! Reading the IPAM configuration out of a whole CNI request, with host-local's keys and
//! rules (cni-spec.md §8.1): `ranges`, the legacy top-level single range, `routes`,
//! `dataDir`, `resolvConf`, and the requested IPs from CNI_ARGS, `args.cni.ips` and
//! `runtimeConfig.ips`, plus `runtimeConfig.ipRanges`.
//!
//! The JSON is walked by hand rather than through serde derives so every error can name the
//! exact key (`ranges[1][0].rangeEnd`) the user has to fix.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde_json::{Map, Value};

use crate::dns::DnsSpec;
use crate::error::ConfigError;
use crate::range::{Range, RangeSet};

/// One `routes` entry of the `ipam` object, passed through to the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
}

/// Validated IPAM configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamConfig {
    /// The network name (request `name`): the store's subdirectory.
    pub network: String,
    /// One address is allocated per set, in this order: `runtimeConfig.ipRanges`, then the
    /// legacy top-level range, then `ranges`.
    pub ranges: Vec<RangeSet>,
    pub routes: Vec<RouteSpec>,
    pub data_dir: PathBuf,
    /// Parsed from the `resolvConf` file, when that key is set.
    pub dns: Option<DnsSpec>,
    /// Requested addresses (prefixes stripped, duplicates removed) in host-local's order:
    /// CNI_ARGS `IP=`, `args.cni.ips`, `runtimeConfig.ips`.
    pub requested: Vec<IpAddr>,
    /// `agentSocket`: the node agent's socket, asked for another block when every range of
    /// a set is full (the agent writes this key into the conflist it generates).
    pub agent_socket: Option<PathBuf>,
}

impl IpamConfig {
    /// Parse and validate `request`, the whole CNI request JSON. `env_ips` are the CNI_ARGS
    /// `IP=` addresses (already parsed by the caller); `default_data_dir` applies when
    /// `ipam.dataDir` is absent or empty.
    ///
    /// A `resolvConf` that cannot be read is a `ConfigError` with key `resolvConf`, so a
    /// caller that does not need DNS (DEL, GC) may choose to tolerate exactly that key.
    pub fn from_request(
        request: &Value,
        env_ips: &[IpAddr],
        default_data_dir: &Path,
    ) -> Result<IpamConfig, ConfigError> {
        let top = request
            .as_object()
            .ok_or_else(|| ConfigError::new("", "the request is not a JSON object"))?;
        let network = network_name(top)?;
        let ipam = match top.get("ipam") {
            Some(Value::Object(m)) => m,
            Some(_) => return Err(ConfigError::new("", "must be an object")),
            None => return Err(ConfigError::new("", "missing")),
        };

        let requested = requested_ips(top, env_ips)?;
        let ranges = range_sets(top, ipam)?;
        let cni_version = top
            .get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or("0.1.0");
        check_family_count(&ranges, cni_version)?;

        let data_dir = match opt_str(ipam, "dataDir", "dataDir")? {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ => default_data_dir.to_path_buf(),
        };
        let dns = match opt_str(ipam, "resolvConf", "resolvConf")? {
            Some(p) if !p.is_empty() => Some(
                DnsSpec::from_file(Path::new(p))
                    .map_err(|e| ConfigError::new("resolvConf", format!("cannot read {p}: {e}")))?,
            ),
            _ => None,
        };
        Ok(IpamConfig {
            network,
            ranges: ranges.into_iter().map(|(_, set)| set).collect(),
            routes: routes(ipam)?,
            data_dir,
            dns,
            requested,
            agent_socket: opt_str(ipam, "agentSocket", "agentSocket")?
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
        })
    }
}

/// The network name becomes a directory under dataDir, so it must be one plain component.
fn network_name(top: &Map<String, Value>) -> Result<String, ConfigError> {
    let name = opt_str(top, "name", "name")?.ok_or_else(|| ConfigError::new("name", "missing"))?;
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(ConfigError::new(
            "name",
            format!("{name:?} cannot be used as a directory name"),
        ));
    }
    Ok(name.to_owned())
}

fn opt_str<'a>(
    map: &'a Map<String, Value>,
    name: &str,
    key: &str,
) -> Result<Option<&'a str>, ConfigError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ConfigError::new(
            key,
            format!("must be a string, got {other}"),
        )),
    }
}

fn opt_array<'a>(
    map: &'a Map<String, Value>,
    name: &str,
    key: &str,
) -> Result<Option<&'a Vec<Value>>, ConfigError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(other) => Err(ConfigError::new(
            key,
            format!("must be a list, got {other}"),
        )),
    }
}

fn join(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_owned()
    } else {
        format!("{prefix}.{field}")
    }
}

fn parse_ip(text: &str, key: &str) -> Result<IpAddr, ConfigError> {
    text.parse()
        .map_err(|_| ConfigError::new(key, format!("{text:?} is not an IP address")))
}

/// `ip` or `ip/prefix`; the prefix is validated, then dropped (the range decides it).
fn parse_requested(value: &Value, key: &str) -> Result<IpAddr, ConfigError> {
    let text = value
        .as_str()
        .ok_or_else(|| ConfigError::new(key, format!("must be a string, got {value}")))?;
    if text.contains('/') {
        text.parse::<IpNet>()
            .map(|n| n.addr())
            .map_err(|_| ConfigError::new(key, format!("{text:?} is not an IP address or CIDR")))
    } else {
        parse_ip(text, key)
    }
}

fn requested_ips(top: &Map<String, Value>, env_ips: &[IpAddr]) -> Result<Vec<IpAddr>, ConfigError> {
    let mut out: Vec<IpAddr> = env_ips.to_vec();
    // `args` and `runtimeConfig` are shared with other plugins; only the keys we own are
    // checked strictly.
    let args_ips = top
        .get("args")
        .and_then(Value::as_object)
        .and_then(|a| a.get("cni"))
        .and_then(Value::as_object)
        .map(|cni| opt_array(cni, "ips", "args.cni.ips"))
        .transpose()?
        .flatten();
    for (i, v) in args_ips.into_iter().flatten().enumerate() {
        out.push(parse_requested(v, &format!("args.cni.ips[{i}]"))?);
    }
    let rc_ips = top
        .get("runtimeConfig")
        .and_then(Value::as_object)
        .map(|rc| opt_array(rc, "ips", "runtimeConfig.ips"))
        .transpose()?
        .flatten();
    for (i, v) in rc_ips.into_iter().flatten().enumerate() {
        out.push(parse_requested(v, &format!("runtimeConfig.ips[{i}]"))?);
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|ip| seen.insert(*ip));
    Ok(out)
}

fn parse_range(value: &Value, key: &str) -> Result<Range, ConfigError> {
    let obj = value
        .as_object()
        .ok_or_else(|| ConfigError::new(key, format!("must be an object, got {value}")))?;
    let subnet_key = join(key, "subnet");
    let subnet_text = opt_str(obj, "subnet", &subnet_key)?
        .ok_or_else(|| ConfigError::new(&subnet_key, "missing"))?;
    let subnet: IpNet = subnet_text
        .parse()
        .map_err(|_| ConfigError::new(&subnet_key, format!("{subnet_text:?} is not a CIDR")))?;
    let ip_field = |field: &str| -> Result<Option<IpAddr>, ConfigError> {
        let k = join(key, field);
        opt_str(obj, field, &k)?
            .map(|t| parse_ip(t, &k))
            .transpose()
    };
    Range::new(
        subnet,
        ip_field("rangeStart")?,
        ip_field("rangeEnd")?,
        ip_field("gateway")?,
    )
    .map_err(|e| ConfigError::new(join(key, e.field), e.message))
}

fn parse_set(value: &Value, key: &str) -> Result<RangeSet, ConfigError> {
    let items = value
        .as_array()
        .ok_or_else(|| ConfigError::new(key, format!("must be a list of ranges, got {value}")))?;
    if items.is_empty() {
        return Err(ConfigError::new(key, "empty range set"));
    }
    let ranges = items
        .iter()
        .enumerate()
        .map(|(j, v)| parse_range(v, &format!("{key}[{j}]")))
        .collect::<Result<Vec<_>, _>>()?;
    for (j, r) in ranges.iter().enumerate() {
        if r.is_ipv4() != ranges[0].is_ipv4() {
            return Err(ConfigError::new(
                format!("{key}[{j}]"),
                "a range set mixes IPv4 and IPv6; use one set per family",
            ));
        }
        if let Some(k) = ranges[..j].iter().position(|earlier| earlier.overlaps(r)) {
            return Err(ConfigError::new(
                format!("{key}[{j}]"),
                format!("range {r} overlaps {key}[{k}] ({})", ranges[k]),
            ));
        }
    }
    Ok(RangeSet(ranges))
}

/// Every range set, each with the key it came from (for error messages), in allocation order.
fn range_sets(
    top: &Map<String, Value>,
    ipam: &Map<String, Value>,
) -> Result<Vec<(String, RangeSet)>, ConfigError> {
    let mut sets = Vec::new();
    let runtime = top
        .get("runtimeConfig")
        .and_then(Value::as_object)
        .map(|rc| opt_array(rc, "ipRanges", "runtimeConfig.ipRanges"))
        .transpose()?
        .flatten();
    for (i, v) in runtime.into_iter().flatten().enumerate() {
        let key = format!("runtimeConfig.ipRanges[{i}]");
        sets.push((key.clone(), parse_set(v, &key)?));
    }
    if ipam.get("subnet").is_some_and(|v| !v.is_null()) {
        sets.push((
            "subnet".to_owned(),
            RangeSet(vec![parse_range(&Value::Object(ipam.clone()), "")?]),
        ));
    } else if let Some(field) = ["rangeStart", "rangeEnd", "gateway"]
        .into_iter()
        .find(|f| ipam.get(*f).is_some_and(|v| !v.is_null()))
    {
        return Err(ConfigError::new(field, "given without a top-level subnet"));
    }
    for (i, v) in opt_array(ipam, "ranges", "ranges")?
        .into_iter()
        .flatten()
        .enumerate()
    {
        let key = format!("ranges[{i}]");
        sets.push((key.clone(), parse_set(v, &key)?));
    }
    if sets.is_empty() {
        return Err(ConfigError::new("ranges", "no IP ranges specified"));
    }
    for (i, (key_i, set_i)) in sets.iter().enumerate() {
        if let Some((key_j, _)) = sets[..i]
            .iter()
            .find(|(_, earlier)| earlier.overlaps(set_i))
        {
            return Err(ConfigError::new(
                key_i.as_str(),
                format!("range set {set_i} overlaps range set {key_j}"),
            ));
        }
    }
    Ok(sets)
}

/// CNI < 0.3.0 results hold one address per family (host-local's rule).
fn check_family_count(sets: &[(String, RangeSet)], cni_version: &str) -> Result<(), ConfigError> {
    let mut parts = cni_version
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(u32::MAX));
    let pre_030 = matches!((parts.next(), parts.next()), (Some(0), Some(minor)) if minor < 3);
    if !pre_030 {
        return Ok(());
    }
    let v4 = sets
        .iter()
        .filter(|(_, s)| s.is_ipv4() == Some(true))
        .count();
    if v4 > 1 || sets.len() - v4 > 1 {
        return Err(ConfigError::new(
            "ranges",
            format!("CNI version {cni_version} does not support more than one address per family"),
        ));
    }
    Ok(())
}

fn routes(ipam: &Map<String, Value>) -> Result<Vec<RouteSpec>, ConfigError> {
    let mut out = Vec::new();
    for (i, v) in opt_array(ipam, "routes", "routes")?
        .into_iter()
        .flatten()
        .enumerate()
    {
        let key = format!("routes[{i}]");
        let obj = v
            .as_object()
            .ok_or_else(|| ConfigError::new(&key, format!("must be an object, got {v}")))?;
        let dst_key = join(&key, "dst");
        let dst_text =
            opt_str(obj, "dst", &dst_key)?.ok_or_else(|| ConfigError::new(&dst_key, "missing"))?;
        let dst: IpNet = dst_text
            .parse()
            .map_err(|_| ConfigError::new(&dst_key, format!("{dst_text:?} is not a CIDR")))?;
        let gw_key = join(&key, "gw");
        let gw = opt_str(obj, "gw", &gw_key)?
            .map(|t| parse_ip(t, &gw_key))
            .transpose()?;
        if let Some(gw) = gw
            && gw.is_ipv4() != dst.addr().is_ipv4()
        {
            return Err(ConfigError::new(
                gw_key,
                format!("{gw} is not of the family of {dst}"),
            ));
        }
        out.push(RouteSpec { dst, gw });
    }
    Ok(out)
}
