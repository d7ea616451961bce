//! The `weft` plugin's own configuration keys (design.md "Plugin configuration"), read from
//! the request and validated before anything touches the node.

use serde_json::Value;
use weft_cni::{CniError, Code, Dns, Request};

pub const DEFAULT_BRIDGE: &str = "weft0";
pub const DEFAULT_MTU: u32 = 1500;
pub const DEFAULT_LOG_FILE: &str = "/var/log/weft/cni.log";
pub const DEFAULT_IPAM_DIR: &str = "/var/lib/weft/ipam";
/// The nftables table that holds masquerade sets shared by all weft networks on the node.
pub const MASQ_TABLE: &str = "weft";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bridge,
    Ptp,
    Macvlan,
}

#[derive(Debug, Clone)]
pub struct NetConf {
    pub mode: Mode,
    pub bridge: String,
    pub is_gateway: bool,
    pub master: Option<String>,
    pub mtu: u32,
    pub hairpin: bool,
    pub ip_masq: bool,
    /// The IPAM plugin's type; "weft-ipam" runs in-process.
    pub ipam_type: String,
    pub dns: Option<Dns>,
    /// From `runtimeConfig.mac`, `args.cni.mac` or `CNI_ARGS` `MAC` (the later wins, as in ref).
    pub mac: Option<[u8; 6]>,
    /// The node agent's socket (`agentSocket`, written by weftd): when set, every attached
    /// pod is registered with the agent for NetworkPolicy.
    pub agent_socket: Option<std::path::PathBuf>,
}

fn get_bool(cfg: &Value, key: &str, default: bool) -> Result<bool, CniError> {
    match cfg.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        // libcni accepts the strings too.
        Some(Value::String(s)) if s == "true" => Ok(true),
        Some(Value::String(s)) if s == "false" => Ok(false),
        Some(_) => Err(CniError::invalid_config(format!(
            "{key}: expected true or false"
        ))),
    }
}

fn get_str<'a>(cfg: &'a Value, key: &str) -> Result<Option<&'a str>, CniError> {
    match cfg.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(CniError::invalid_config(format!(
            "{key}: expected a string"
        ))),
    }
}

/// Interface names the kernel accepts (same rule as CNI_IFNAME).
pub fn valid_link_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && !s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
}

pub fn parse_mac(key: &str, s: &str) -> Result<[u8; 6], CniError> {
    weft_net::parse_mac(s)
        .map_err(|_| CniError::invalid_config(format!("{key}: invalid MAC address \"{s}\"")))
}

impl NetConf {
    pub fn parse(req: &Request) -> Result<NetConf, CniError> {
        let cfg = &req.config;
        let mode = match get_str(cfg, "mode")? {
            None | Some("bridge") => Mode::Bridge,
            Some("ptp") => Mode::Ptp,
            Some("macvlan") => Mode::Macvlan,
            Some(_) => {
                return Err(CniError::unsupported_field("mode", &cfg["mode"])
                    .with_details("mode is one of bridge, ptp, macvlan"));
            }
        };
        let bridge = get_str(cfg, "bridge")?
            .unwrap_or(DEFAULT_BRIDGE)
            .to_string();
        if !valid_link_name(&bridge) {
            return Err(CniError::invalid_config(format!(
                "bridge: \"{bridge}\" is not a valid interface name"
            )));
        }
        let is_default_gateway = get_bool(cfg, "isDefaultGateway", false)?;
        let is_gateway = get_bool(cfg, "isGateway", false)? || is_default_gateway;
        let master = get_str(cfg, "master")?.map(str::to_string);
        if mode == Mode::Macvlan {
            match &master {
                None => {
                    return Err(CniError::invalid_config(
                        "master: macvlan mode needs the parent interface",
                    ));
                }
                Some(m) if !valid_link_name(m) => {
                    return Err(CniError::invalid_config(format!(
                        "master: \"{m}\" is not a valid interface name"
                    )));
                }
                _ => {}
            }
        }
        let mtu = match cfg.get("mtu") {
            None | Some(Value::Null) => DEFAULT_MTU,
            Some(v) => {
                let n = v
                    .as_u64()
                    .ok_or_else(|| CniError::invalid_config("mtu: expected a positive integer"))?;
                if !(68..=65535).contains(&n) {
                    return Err(CniError::unsupported_field("mtu", v)
                        .with_details("the MTU must be between 68 and 65535"));
                }
                n as u32
            }
        };
        let ipam = cfg.get("ipam").filter(|v| !v.is_null());
        let ipam_type = match ipam {
            None => {
                return Err(CniError::invalid_config(
                    "ipam: missing; weft needs an IPAM plugin",
                ));
            }
            Some(Value::Object(o)) => match o.get("type") {
                Some(Value::String(t)) if !t.is_empty() && !t.contains('/') => t.clone(),
                _ => {
                    return Err(CniError::invalid_config(
                        "ipam.type: missing or not a plugin name",
                    ));
                }
            },
            Some(_) => return Err(CniError::invalid_config("ipam: expected an object")),
        };
        let dns = match cfg.get("dns").filter(|v| !v.is_null()) {
            None => None,
            Some(d) if d.is_object() => Some(Dns::from_json(d)?).filter(|d| !d.is_empty()),
            Some(_) => return Err(CniError::invalid_config("dns: expected an object")),
        };
        let mut mac = None;
        if let Some(m) = req.args.get("MAC") {
            mac = Some(parse_mac("CNI_ARGS MAC", m)?);
        }
        if let Some(m) = cfg.pointer("/args/cni/mac").and_then(Value::as_str) {
            mac = Some(parse_mac("args.cni.mac", m)?);
        }
        if let Some(m) = cfg.pointer("/runtimeConfig/mac") {
            let s = m
                .as_str()
                .ok_or_else(|| CniError::invalid_config("runtimeConfig.mac: expected a string"))?;
            mac = Some(parse_mac("runtimeConfig.mac", s)?);
        }
        if let Some(mac) = mac
            && (mac[0] & 1 == 1 || mac == [0; 6])
        {
            return Err(CniError::new(
                Code::InvalidConfig,
                "mac: a multicast or all-zero MAC cannot be an interface address",
            ));
        }
        Ok(NetConf {
            mode,
            bridge,
            is_gateway,

            master,
            mtu,
            hairpin: get_bool(cfg, "hairpinMode", false)?,
            ip_masq: get_bool(cfg, "ipMasq", false)?,
            ipam_type,
            dns,
            mac,
            agent_socket: get_str(cfg, "agentSocket")?
                .filter(|s| !s.is_empty())
                .map(Into::into),
        })
    }
}

/// The log file: the config's `logFile` (`""` disables logging), else the environment's
/// `WEFT_LOG_FILE` (for invocations whose config cannot be read, and for test harnesses that
/// must not write to the node's log), else the default path.
pub fn log_file(cfg: Option<&Value>) -> Option<std::path::PathBuf> {
    match cfg.and_then(|c| c.get("logFile")) {
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.into()),
        _ => match std::env::var_os("WEFT_LOG_FILE") {
            Some(p) if !p.is_empty() => Some(p.into()),
            _ => Some(DEFAULT_LOG_FILE.into()),
        },
    }
}
