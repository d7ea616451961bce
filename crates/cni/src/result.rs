//! The Result object in one internal model (a superset: spec 1.1.0) that can be read from and
//! written to every supported version. Conversions follow spec §5.4.

use crate::error::{CniError, Code};
use crate::version::{Layout, layout};
use ipnet::IpNet;
use serde_json::{Map, Value, json};
use std::net::IpAddr;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: Option<String>,
    pub mtu: Option<u32>,
    pub sandbox: Option<String>,
    pub socket_path: Option<String>,
    pub pci_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// Host address with the subnet's prefix length, e.g. 10.1.0.5/16.
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
    pub priority: Option<u32>,
    pub table: Option<u32>,
    pub scope: Option<u8>,
}

impl Route {
    pub fn new(dst: IpNet, gw: Option<IpAddr>) -> Route {
        Route {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dns {
    pub nameservers: Vec<String>,
    pub domain: Option<String>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_none()
            && self.search.is_empty()
            && self.options.is_empty()
    }

    pub fn from_json(v: &Value) -> Result<Dns, CniError> {
        let strings = |key: &str| -> Result<Vec<String>, CniError> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|s| {
                        s.as_str().map(str::to_string).ok_or_else(|| {
                            CniError::invalid_config(format!("dns.{key}: expected strings"))
                        })
                    })
                    .collect(),
                Some(_) => Err(CniError::invalid_config(format!(
                    "dns.{key}: expected a list of strings"
                ))),
            }
        };
        let domain = match v.get("domain") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(CniError::invalid_config("dns.domain: expected a string")),
        };
        Ok(Dns {
            nameservers: strings("nameservers")?,
            domain,
            search: strings("search")?,
            options: strings("options")?,
        })
    }

    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        if !self.nameservers.is_empty() {
            m.insert("nameservers".into(), json!(self.nameservers));
        }
        if let Some(d) = &self.domain {
            m.insert("domain".into(), json!(d));
        }
        if !self.search.is_empty() {
            m.insert("search".into(), json!(self.search));
        }
        if !self.options.is_empty() {
            m.insert("options".into(), json!(self.options));
        }
        Value::Object(m)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

fn decode_err(what: impl Into<String>) -> CniError {
    CniError::new(Code::Decoding, what)
}

fn opt_str(v: &Value, key: &str) -> Result<Option<String>, CniError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(decode_err(format!(
            "result: {key} must be a string, got {other}"
        ))),
    }
}

fn opt_u32(v: &Value, key: &str) -> Result<Option<u32>, CniError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| decode_err(format!("result: {key} must be an unsigned integer"))),
    }
}

fn parse_net(s: &str, what: &str) -> Result<IpNet, CniError> {
    s.parse::<IpNet>()
        .map_err(|_| decode_err(format!("result: invalid {what} \"{s}\"")))
}

fn parse_ip(s: &str, what: &str) -> Result<IpAddr, CniError> {
    s.parse::<IpAddr>()
        .map_err(|_| decode_err(format!("result: invalid {what} \"{s}\"")))
}

fn parse_route(r: &Value) -> Result<Route, CniError> {
    let dst = opt_str(r, "dst")?.ok_or_else(|| decode_err("result: route without dst"))?;
    let gw = opt_str(r, "gw")?
        .map(|g| parse_ip(&g, "route gw"))
        .transpose()?;
    let scope = opt_u32(r, "scope")?
        .map(|s| u8::try_from(s).map_err(|_| decode_err("result: route scope out of range")))
        .transpose()?;
    Ok(Route {
        dst: parse_net(&dst, "route dst")?,
        gw,
        mtu: opt_u32(r, "mtu")?,
        advmss: opt_u32(r, "advmss")?,
        priority: opt_u32(r, "priority")?,
        table: opt_u32(r, "table")?,
        scope,
    })
}

fn array<'a>(v: &'a Value, key: &str) -> Result<&'a [Value], CniError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(decode_err(format!("result: {key} must be a list"))),
    }
}

impl CniResult {
    /// Reads a result of any supported version. `fallback_version` is used when the object has
    /// no `cniVersion` (IPAM plugins may omit it; the spec says it is then the request's).
    pub fn from_json(v: &Value, fallback_version: &str) -> Result<CniResult, CniError> {
        if !v.is_object() {
            return Err(decode_err("result: expected a JSON object"));
        }
        let version = match v.get("cniVersion") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => fallback_version.to_string(),
        };
        let mut out = CniResult::default();
        if layout(&version)? == Layout::Legacy {
            for key in ["ip4", "ip6"] {
                let Some(block) = v.get(key).filter(|b| !b.is_null()) else {
                    continue;
                };
                let ip = opt_str(block, "ip")?
                    .ok_or_else(|| decode_err(format!("result: {key}.ip missing")))?;
                let gateway = opt_str(block, "gateway")?
                    .map(|g| parse_ip(&g, "gateway"))
                    .transpose()?;
                out.ips.push(IpConfig {
                    address: parse_net(&ip, "address")?,
                    gateway,
                    interface: None,
                });
                for r in array(block, "routes")? {
                    out.routes.push(parse_route(r)?);
                }
            }
        } else {
            for i in array(v, "interfaces")? {
                out.interfaces.push(Interface {
                    name: opt_str(i, "name")?.unwrap_or_default(),
                    mac: opt_str(i, "mac")?,
                    mtu: opt_u32(i, "mtu")?,
                    sandbox: opt_str(i, "sandbox")?,
                    socket_path: opt_str(i, "socketPath")?,
                    pci_id: opt_str(i, "pciID")?,
                });
            }
            for ip in array(v, "ips")? {
                let addr = opt_str(ip, "address")?
                    .ok_or_else(|| decode_err("result: ips[].address missing"))?;
                let interface = match ip.get("interface") {
                    None | Some(Value::Null) => None,
                    Some(n) => Some(
                        n.as_u64()
                            .and_then(|n| usize::try_from(n).ok())
                            .ok_or_else(|| {
                                decode_err("result: ips[].interface must be an index")
                            })?,
                    ),
                };
                out.ips.push(IpConfig {
                    address: parse_net(&addr, "address")?,
                    gateway: opt_str(ip, "gateway")?
                        .map(|g| parse_ip(&g, "gateway"))
                        .transpose()?,
                    interface,
                });
            }
            for r in array(v, "routes")? {
                out.routes.push(parse_route(r)?);
            }
        }
        if let Some(d) = v.get("dns").filter(|d| d.is_object()) {
            out.dns = Dns::from_json(d).map_err(|e| decode_err(e.msg))?;
        }
        Ok(out)
    }

    /// Writes the result in `version`'s layout.
    pub fn to_json(&self, version: &str) -> Result<Value, CniError> {
        let lay = layout(version)?;
        let mut m = Map::new();
        m.insert("cniVersion".into(), json!(version));
        if lay == Layout::Legacy {
            for (key, v6) in [("ip4", false), ("ip6", true)] {
                let Some(ip) = self.ips.iter().find(|i| i.address.addr().is_ipv6() == v6) else {
                    continue;
                };
                let mut b = Map::new();
                b.insert("ip".into(), json!(ip.address.to_string()));
                if let Some(g) = ip.gateway {
                    b.insert("gateway".into(), json!(g.to_string()));
                }
                let routes: Vec<Value> = self
                    .routes
                    .iter()
                    .filter(|r| r.dst.addr().is_ipv6() == v6)
                    .map(|r| {
                        let mut o = json!({ "dst": r.dst.to_string() });
                        if let Some(gw) = r.gw {
                            o["gw"] = json!(gw.to_string());
                        }
                        o
                    })
                    .collect();
                if !routes.is_empty() {
                    b.insert("routes".into(), Value::Array(routes));
                }
                m.insert(key.into(), Value::Object(b));
            }
            if self.ips.is_empty() {
                return Err(CniError::new(
                    Code::IncompatibleVersion,
                    format!("a result without IP addresses cannot be written as version {version}"),
                ));
            }
            m.insert("dns".into(), self.dns.to_json());
            return Ok(Value::Object(m));
        }
        let v1 = lay == Layout::V1;
        if !self.interfaces.is_empty() {
            let ifs: Vec<Value> = self
                .interfaces
                .iter()
                .map(|i| {
                    let mut o = json!({ "name": i.name });
                    if let Some(mac) = &i.mac {
                        o["mac"] = json!(mac);
                    }
                    if v1 && let Some(mtu) = i.mtu {
                        o["mtu"] = json!(mtu);
                    }
                    if let Some(s) = &i.sandbox {
                        o["sandbox"] = json!(s);
                    }
                    if v1 {
                        if let Some(p) = &i.socket_path {
                            o["socketPath"] = json!(p);
                        }
                        if let Some(p) = &i.pci_id {
                            o["pciID"] = json!(p);
                        }
                    }
                    o
                })
                .collect();
            m.insert("interfaces".into(), Value::Array(ifs));
        }
        if !self.ips.is_empty() {
            let ips: Vec<Value> = self
                .ips
                .iter()
                .map(|ip| {
                    let mut o = json!({ "address": ip.address.to_string() });
                    if !v1 {
                        o["version"] = json!(if ip.address.addr().is_ipv6() {
                            "6"
                        } else {
                            "4"
                        });
                    }
                    if let Some(g) = ip.gateway {
                        o["gateway"] = json!(g.to_string());
                    }
                    if let Some(i) = ip.interface {
                        o["interface"] = json!(i);
                    }
                    o
                })
                .collect();
            m.insert("ips".into(), Value::Array(ips));
        }
        if !self.routes.is_empty() {
            let routes: Vec<Value> = self
                .routes
                .iter()
                .map(|r| {
                    let mut o = json!({ "dst": r.dst.to_string() });
                    if let Some(gw) = r.gw {
                        o["gw"] = json!(gw.to_string());
                    }
                    if v1 {
                        for (k, val) in [
                            ("mtu", r.mtu),
                            ("advmss", r.advmss),
                            ("priority", r.priority),
                            ("table", r.table),
                            ("scope", r.scope.map(u32::from)),
                        ] {
                            if let Some(x) = val {
                                o[k] = json!(x);
                            }
                        }
                    }
                    o
                })
                .collect();
            m.insert("routes".into(), Value::Array(routes));
        }
        if !self.dns.is_empty() {
            m.insert("dns".into(), self.dns.to_json());
        }
        Ok(Value::Object(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "weft0".into(),
                    mac: Some("aa:bb:cc:dd:ee:01".into()),
                    mtu: Some(1500),
                    ..Default::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("aa:bb:cc:dd:ee:02".into()),
                    sandbox: Some("/run/netns/x".into()),
                    ..Default::default()
                },
            ],
            ips: vec![
                IpConfig {
                    address: "10.1.0.5/16".parse().unwrap(),
                    gateway: Some("10.1.0.1".parse().unwrap()),
                    interface: Some(1),
                },
                IpConfig {
                    address: "fd00::5/64".parse().unwrap(),
                    gateway: None,
                    interface: Some(1),
                },
            ],
            routes: vec![Route {
                scope: Some(253),
                ..Route::new("0.0.0.0/0".parse().unwrap(), None)
            }],
            dns: Dns {
                nameservers: vec!["10.0.0.10".into()],
                ..Default::default()
            },
        }
    }

    #[test]
    fn round_trips_every_layout() {
        let r = sample();
        let v11 = r.to_json("1.1.0").unwrap();
        assert_eq!(v11["ips"][0]["address"], "10.1.0.5/16");
        assert!(v11["ips"][0].get("version").is_none());
        assert_eq!(v11["interfaces"][0]["mtu"], 1500);
        assert_eq!(CniResult::from_json(&v11, "1.1.0").unwrap(), r);

        let v04 = r.to_json("0.4.0").unwrap();
        assert_eq!(v04["ips"][1]["version"], "6");
        assert!(v04["interfaces"][0].get("mtu").is_none());
        assert!(v04["routes"][0].get("scope").is_none());
        let back = CniResult::from_json(&v04, "0.4.0").unwrap();
        assert_eq!(back.ips, r.ips);

        let v02 = r.to_json("0.2.0").unwrap();
        assert_eq!(v02["ip4"]["ip"], "10.1.0.5/16");
        assert_eq!(v02["ip6"]["ip"], "fd00::5/64");
        assert_eq!(v02["ip4"]["routes"][0]["dst"], "0.0.0.0/0");
        assert!(v02.get("interfaces").is_none());
        let back = CniResult::from_json(&v02, "0.2.0").unwrap();
        assert_eq!(back.ips.len(), 2);
    }

    #[test]
    fn missing_version_means_the_fallback() {
        let v = json!({"ips": [{"address": "10.0.0.2/24", "gateway": "10.0.0.1"}]});
        let r = CniResult::from_json(&v, "1.0.0").unwrap();
        assert_eq!(r.ips[0].gateway, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(
            CniResult::from_json(&json!([]), "1.0.0").unwrap_err().code,
            6
        );
        assert_eq!(
            CniResult::from_json(&json!({"ips":[{"address":"bad"}]}), "1.0.0")
                .unwrap_err()
                .code,
            6
        );
    }
}
