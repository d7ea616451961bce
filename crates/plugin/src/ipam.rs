//! IPAM for the `weft` plugin: `weft-ipam` runs in-process (no extra process on the pod start
//! path); any other `ipam.type` is executed from `CNI_PATH` as a standard IPAM plugin, with
//! the identical stdin and environment and only `CNI_COMMAND` changed (spec §7).

use crate::config::DEFAULT_IPAM_DIR;
use serde_json::Value;
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command as Process, Stdio};
use weft_cni::{CniError, CniResult, Code, Dns, IpConfig, Request, Route};
use weft_ipam::{AllocError, ConfigError, IpamConfig, Store, StoreError};

pub const IN_PROCESS: &str = "weft-ipam";

/// Which verb to run on the IPAM plugin.
#[derive(Debug, Clone, Copy)]
pub enum Verb {
    Add,
    Del,
    Check,
    Status,
    Gc,
}

impl Verb {
    fn as_str(self) -> &'static str {
        match self {
            Verb::Add => "ADD",
            Verb::Del => "DEL",
            Verb::Check => "CHECK",
            Verb::Status => "STATUS",
            Verb::Gc => "GC",
        }
    }
}

/// Runs `verb` on the configured IPAM. ADD returns the IPAM result; other verbs `None`.
pub fn run(ipam_type: &str, verb: Verb, req: &Request) -> Result<Option<CniResult>, CniError> {
    if ipam_type == IN_PROCESS {
        return match verb {
            Verb::Add => add(req).map(Some),
            Verb::Del => del(req).map(|_| None),
            Verb::Check => check(req).map(|_| None),
            Verb::Status => status(req).map(|_| None),
            Verb::Gc => gc(req).map(|_| None),
        };
    }
    delegate(ipam_type, verb, req)
}

fn delegate(ipam_type: &str, verb: Verb, req: &Request) -> Result<Option<CniResult>, CniError> {
    let bin = req
        .path
        .iter()
        .map(|d| d.join(ipam_type))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::invalid_config(format!(
                "ipam.type: plugin \"{ipam_type}\" not found in CNI_PATH"
            ))
        })?;
    let mut cmd = Process::new(&bin);
    cmd.env("CNI_COMMAND", verb.as_str())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = weft_cni::runtime::spawn_retrying(&mut cmd)
        .map_err(|e| CniError::internal(format!("executing {}: {e}", bin.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        // An IPAM plugin that exits without reading is judged by its exit status below.
        let _ = stdin.write_all(&req.stdin);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| CniError::internal(format!("waiting for {}: {e}", bin.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let parsed: Option<Value> = serde_json::from_str(text.trim()).ok();
    if !out.status.success() {
        return Err(match parsed.as_ref().and_then(CniError::from_json) {
            Some(e) => e,
            None => CniError::internal(format!(
                "IPAM plugin {ipam_type} {} failed ({}) without an error object: {:?}",
                verb.as_str(),
                out.status,
                text.trim()
            )),
        });
    }
    match verb {
        Verb::Add => {
            let v = parsed.ok_or_else(|| {
                CniError::new(
                    Code::Decoding,
                    format!(
                        "IPAM plugin {ipam_type} printed no JSON result: {:?}",
                        text.trim()
                    ),
                )
            })?;
            CniResult::from_json(&v, &req.version).map(Some)
        }
        _ => Ok(None),
    }
}

fn env_ips(req: &Request) -> Result<Vec<IpAddr>, CniError> {
    let Some(raw) = req.args.get("IP") else {
        return Ok(Vec::new());
    };
    raw.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let ip = s.split('/').next().unwrap_or(s);
            ip.parse::<IpAddr>().map_err(|_| {
                CniError::new(
                    Code::InvalidEnvironment,
                    format!("CNI_ARGS IP: invalid address \"{s}\""),
                )
            })
        })
        .collect()
}

fn config_error(e: ConfigError) -> CniError {
    CniError::invalid_config(e.to_string())
}

fn store_error(e: StoreError) -> CniError {
    CniError::new(Code::Io, e.to_string())
}

/// Codes 100+ are weft's own (documented in docs/plugin-contract.md).
pub const CODE_EXHAUSTED: u32 = 100;
pub const CODE_REQUESTED_UNAVAILABLE: u32 = 101;
pub const CODE_DUPLICATE: u32 = 102;

fn alloc_error(e: AllocError) -> CniError {
    let msg = e.to_string();
    match e {
        AllocError::Exhausted { .. } => CniError::raw(CODE_EXHAUSTED, msg, ""),
        AllocError::Duplicate { .. } => CniError::raw(CODE_DUPLICATE, msg, ""),
        AllocError::RequestedNotInRange(_)
        | AllocError::RequestedInUse(_)
        | AllocError::RequestedGateway(_) => CniError::raw(CODE_REQUESTED_UNAVAILABLE, msg, ""),
        AllocError::Store(s) => store_error(s),
    }
}

fn load(req: &Request, tolerate_resolv: bool) -> Result<IpamConfig, CniError> {
    match IpamConfig::from_request(&req.config, &env_ips(req)?, Path::new(DEFAULT_IPAM_DIR)) {
        Ok(c) => Ok(c),
        // DEL and GC must work even if the resolv.conf named at ADD time is gone.
        Err(e) if tolerate_resolv && e.key == "resolvConf" => {
            let mut stripped = req.config.clone();
            if let Some(ipam) = stripped.get_mut("ipam").and_then(Value::as_object_mut) {
                ipam.remove("resolvConf");
            }
            IpamConfig::from_request(&stripped, &[], Path::new(DEFAULT_IPAM_DIR))
                .map_err(config_error)
        }
        Err(e) => Err(config_error(e)),
    }
}

fn open(conf: &IpamConfig) -> Result<Store, CniError> {
    Store::open(&conf.data_dir, &conf.network).map_err(store_error)
}

/// The standalone `weft-ipam` ADD: durable before it returns.
pub fn add(req: &Request) -> Result<CniResult, CniError> {
    let conf = load(req, false)?;
    let store = open(&conf)?;
    let leases = {
        let mut locked = store.lock().map_err(store_error)?;
        locked
            .allocate(
                &req.container_id,
                &req.ifname,
                &conf.ranges,
                &conf.requested,
            )
            .map_err(alloc_error)?
    };
    Ok(ipam_result(conf, leases))
}

/// The fsyncs that make in-process leases durable, to run off the critical path.
pub struct SyncJob {
    store: Store,
    ips: Vec<IpAddr>,
}

impl SyncJob {
    pub fn run(self) -> Result<(), CniError> {
        self.store.sync_leases(&self.ips).map_err(store_error)
    }
}

/// An IPAM ADD for the `weft` main plugin, validated up front so that a bad IPAM config
/// fails before the node is touched, then run (possibly on another thread) by [`AddJob::run`].
pub enum AddJob {
    InProcess(Box<IpamConfig>),
    Delegated(String),
}

pub fn plan_add(ipam_type: &str, req: &Request) -> Result<AddJob, CniError> {
    if ipam_type == IN_PROCESS {
        load(req, false).map(|c| AddJob::InProcess(Box::new(c)))
    } else {
        Ok(AddJob::Delegated(ipam_type.to_string()))
    }
}

impl AddJob {
    /// Allocates. In-process, the leases exist (and exclude everyone) on return, and the
    /// returned [`SyncJob`] must have run before the addresses are reported. `known_new`:
    /// the caller has already refused an attachment that exists, so the store may skip its
    /// scan of every lease for the pair.
    pub fn run(
        self,
        req: &Request,
        known_new: bool,
    ) -> Result<(CniResult, Option<SyncJob>), CniError> {
        let conf = match self {
            AddJob::Delegated(ipam_type) => {
                let result = delegate(&ipam_type, Verb::Add, req)?
                    .ok_or_else(|| CniError::internal("IPAM ADD returned no result"))?;
                return Ok((result, None));
            }
            AddJob::InProcess(conf) => *conf,
        };
        let mut conf = conf;
        let store = open(&conf)?;
        let mut grown = 0;
        let leases = loop {
            let attempt = {
                let mut locked = store.lock().map_err(store_error)?;
                locked.allocate_deferred(
                    &req.container_id,
                    &req.ifname,
                    &conf.ranges,
                    &conf.requested,
                    known_new,
                )
            };
            match attempt {
                Ok(leases) => break leases,
                // The node's blocks are full: the agent leases one more, and this ADD
                // allocates from it (the agent also rewrites the conflist for later ADDs).
                Err(AllocError::Exhausted { set, .. })
                    if grown < MAX_GROW && conf.agent_socket.is_some() =>
                {
                    grow(&mut conf, set)?;
                    grown += 1;
                }
                Err(e) => return Err(alloc_error(e)),
            }
        };
        let ips = leases.iter().map(|l| l.address.addr()).collect();
        Ok((ipam_result(conf, leases), Some(SyncJob { store, ips })))
    }
}

/// Blocks one ADD may ask the agent for before giving up (another ADD may take the new
/// block's addresses first, but not twice in a row in practice).
const MAX_GROW: usize = 2;

/// Ask the node agent for another block for range set `set` and add it to the set.
fn grow(conf: &mut IpamConfig, set: usize) -> Result<(), CniError> {
    let (Some(socket), Some(family)) = (
        conf.agent_socket.clone(),
        conf.ranges.get(set).and_then(|s| s.is_ipv4()),
    ) else {
        return Err(CniError::internal("no agent socket or empty range set"));
    };
    let family = if family {
        weft_proto::Family::V4
    } else {
        weft_proto::Family::V6
    };
    let reply = weft_proto::ask(
        &socket,
        &weft_proto::Request::Grow { family },
        std::time::Duration::from_secs(10),
    )
    .map_err(|e| {
        CniError::raw(
            CODE_EXHAUSTED,
            format!(
                "no IP addresses available in the node's {family} blocks, and no new block: {e}"
            ),
            "",
        )
    })?;
    let block = reply
        .block
        .ok_or_else(|| CniError::internal("weftd granted no block"))?;
    let range = weft_ipam::Range::new(block, None, None, None).map_err(|e| {
        CniError::internal(format!(
            "weftd granted an unusable block {block}: {}",
            e.message
        ))
    })?;
    if let Some(s) = conf.ranges.get_mut(set)
        && !s.0.iter().any(|r| r.subnet == block)
    {
        s.0.push(range);
    }
    Ok(())
}

fn ipam_result(conf: IpamConfig, leases: Vec<weft_ipam::Lease>) -> CniResult {
    let dns = conf
        .dns
        .map(|d| Dns {
            nameservers: d.nameservers,
            domain: d.domain,
            search: d.search,
            options: d.options,
        })
        .unwrap_or_default();
    CniResult {
        interfaces: Vec::new(),
        ips: leases
            .into_iter()
            .map(|l| IpConfig {
                address: l.address,
                gateway: l.gateway,
                interface: None,
            })
            .collect(),
        routes: conf
            .routes
            .iter()
            .map(|r| Route::new(r.dst, r.gw))
            .collect(),
        dns,
    }
}

pub fn del(req: &Request) -> Result<(), CniError> {
    let conf = load(req, true)?;
    // prevResult (the runtime's cached ADD result) names the addresses, which spares
    // reading every lease to find them; an unreadable prevResult just means no hint.
    let hint: Vec<IpAddr> = req
        .prev_result()
        .ok()
        .flatten()
        .map(|r| r.ips.iter().map(|i| i.address.addr()).collect())
        .unwrap_or_default();
    // The same release weftd's GC does for a pod whose DEL never came.
    crate::collect::release_leases(
        &conf.data_dir,
        &conf.network,
        &req.container_id,
        &req.ifname,
        &hint,
    )
    .map_err(store_error)?;
    Ok(())
}

pub fn check(req: &Request) -> Result<(), CniError> {
    let conf = load(req, true)?;
    let store = open(&conf)?;
    let locked = store.lock().map_err(store_error)?;
    let held = locked
        .find(&req.container_id, &req.ifname)
        .map_err(store_error)?;
    if held.is_empty() {
        return Err(CniError::invalid_config(format!(
            "weft-ipam: no address is leased to container {} ifname {} in network {}",
            req.container_id, req.ifname, conf.network
        )));
    }
    if let Some(prev) = req.prev_result()? {
        for ip in &prev.ips {
            if !held.contains(&ip.address.addr()) {
                return Err(CniError::invalid_config(format!(
                    "weft-ipam: {} is in prevResult but not leased to {}/{}",
                    ip.address.addr(),
                    req.container_id,
                    req.ifname
                )));
            }
        }
    }
    Ok(())
}

pub fn status(req: &Request) -> Result<(), CniError> {
    let conf = load(req, true)?;
    let store = open(&conf)?;
    let locked = store.lock().map_err(store_error)?;
    for (i, set) in conf.ranges.iter().enumerate() {
        if locked.free_count(set).map_err(store_error)? == 0 {
            return Err(CniError::new(
                Code::NotAvailable,
                format!(
                    "weft-ipam: range set {i} of network {} has no free address",
                    conf.network
                ),
            ));
        }
    }
    Ok(())
}

pub fn gc(req: &Request) -> Result<(), CniError> {
    let conf = load(req, true)?;
    let valid = req.valid_attachments()?;
    let store = open(&conf)?;
    let mut locked = store.lock().map_err(store_error)?;
    locked.gc(&valid).map_err(store_error)?;
    Ok(())
}

/// `weft-ipam` as a standalone IPAM plugin.
pub struct IpamPlugin;

impl weft_cni::Plugin for IpamPlugin {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        add(req)
    }
    fn del(&self, req: &Request) -> Result<(), CniError> {
        del(req)
    }
    fn check(&self, req: &Request) -> Result<(), CniError> {
        check(req)
    }
    fn status(&self, req: &Request) -> Result<(), CniError> {
        status(req)
    }
    fn gc(&self, req: &Request) -> Result<(), CniError> {
        gc(req)
    }
}
