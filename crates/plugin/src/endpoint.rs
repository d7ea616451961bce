//! Registering a pod with the node agent (`agentSocket` in the plugin config): on ADD the
//! endpoint file is written atomically and the agent asked to `attach`, which it answers
//! once the pod's NetworkPolicy is committed to the kernel — so ADD returns only after the
//! pod is policed. An agent that is down or slow does not fail the ADD: the pod's address
//! lies in the node's pod range, where the agent's table drops every address it has not
//! programmed, so the pod stays isolated until the agent (at start, or its periodic rescan
//! of the endpoints directory) programs it. DEL removes the file and tells the agent, best
//! effort, never failing and never waiting long.
//!
//! The file also says which network namespace the pod had and when it was attached, so that
//! weftd can collect a pod whose DEL never came (its namespace gone): see `collect`.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use weft_cni::{CniResult, Request};
use weft_net::NetNs;
use weft_proto::{self as agent, EndpointFile, EndpointMode, NetnsRecord, Request as AgentRequest};

use crate::config::{Mode, NetConf};
use crate::names;

/// How long ADD waits for the agent to commit the pod's policy.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long DEL gives the agent.
const DETACH_TIMEOUT: Duration = Duration::from_millis(500);

/// What a pod is called: `K8S_POD_NAMESPACE`/`K8S_POD_NAME` from `CNI_ARGS`, else namespace
/// `default` and the container id as its name (a runtime that is not Kubernetes).
pub fn pod_identity(req: &Request) -> (String, String) {
    let get = |k: &str| {
        req.args
            .get(k)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    (
        get("K8S_POD_NAMESPACE").unwrap_or_else(|| "default".into()),
        get("K8S_POD_NAME").unwrap_or_else(|| req.container_id.clone()),
    )
}

fn endpoint_mode(m: Mode) -> EndpointMode {
    match m {
        Mode::Bridge => EndpointMode::Bridge,
        Mode::Ptp => EndpointMode::Ptp,
        Mode::Macvlan => EndpointMode::Macvlan,
    }
}

/// Write the endpoint file and wait for the agent's `attach`. Ok(()) when the agent has
/// programmed the pod; Err(why) otherwise — a warning for the log, never an ADD failure
/// (except when the file cannot be written: then the agent could never learn of the pod).
pub fn attach(
    socket: &Path,
    conf: &NetConf,
    req: &Request,
    pod_ns: &NetNs,
    result: &CniResult,
) -> Result<Result<(), String>, std::io::Error> {
    let (namespace, name) = pod_identity(req);
    let file = EndpointFile {
        container_id: req.container_id.clone(),
        ifname: req.ifname.clone(),
        namespace,
        name,
        addresses: result.ips.iter().map(|i| i.address.addr()).collect(),
        host_interface: (conf.mode != Mode::Macvlan)
            .then(|| names::host_veth(&req.name, &req.container_id, &req.ifname)),
        // The interface inside the pod (the one with a sandbox): weftd cannot read it from
        // the node's namespace, and its eBPF datapath addresses frames to it.
        mac: result
            .interfaces
            .iter()
            .find(|i| i.sandbox.is_some() && i.name == req.ifname)
            .and_then(|i| i.mac.clone()),
        mode: endpoint_mode(conf.mode),
        network: Some(req.name.clone()),
        netns: netns_record(pod_ns),
        attached_at_ms: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()
            .and_then(|d| u64::try_from(d.as_millis()).ok()),
    };
    let path = agent::endpoint_path(socket, &req.container_id, &req.ifname);
    write_atomic(
        &path,
        &serde_json::to_vec(&file).map_err(std::io::Error::other)?,
    )?;
    let ask = AgentRequest::Attach {
        container_id: req.container_id.clone(),
        ifname: req.ifname.clone(),
    };
    Ok(agent::ask(socket, &ask, ATTACH_TIMEOUT)
        .map(|_| ())
        .map_err(|e| e.to_string()))
}

/// Remove the endpoint file and tell the agent; every failure is ignored (the agent's
/// rescan notices a vanished file).
pub fn detach(socket: &Path, req: &Request) {
    let _ = remove_file(socket, &req.container_id, &req.ifname);
    let ask = AgentRequest::Detach {
        container_id: req.container_id.clone(),
        ifname: req.ifname.clone(),
    };
    let _ = agent::ask(socket, &ask, DETACH_TIMEOUT);
}

/// The pod's network namespace as weftd will look for it. None when it cannot be read
/// (the pod is then never collected by weftd, only by DEL or the GC verb).
fn netns_record(ns: &NetNs) -> Option<NetnsRecord> {
    let (dev, ino) = ns.id().ok()?;
    let path = ns.path();
    // The directory resolved, the name kept: the name may be a magic link
    // (`/proc/<pid>/ns/net`) that resolving would turn into `net:[…]`.
    let dir = std::fs::canonicalize(path.parent()?).ok()?;
    let seen = std::fs::metadata(&dir).ok()?;
    Some(NetnsRecord {
        path: dir.join(path.file_name()?),
        dev,
        ino,
        dir_dev: seen.dev(),
        dir_ino: seen.ino(),
    })
}

/// Removes the pair's endpoint file; `Ok(false)` when there was none.
pub(crate) fn remove_file(
    socket: &Path,
    container_id: &str,
    ifname: &str,
) -> std::io::Result<bool> {
    match std::fs::remove_file(agent::endpoint_path(socket, container_id, ifname)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// GC: the endpoint files of `network`'s attachments that are not in `valid` (their DEL
/// never came), for `collect`. Files of other networks are not this GC's (a file of an
/// earlier release names no network and counts as this one's, as it always did).
/// Unreadable files are skipped: the files are the agent's hints, not state the runtime
/// owns.
pub fn stale(socket: &Path, network: &str, valid: &[(String, String)]) -> Vec<EndpointFile> {
    let Ok(entries) = std::fs::read_dir(agent::endpoints_dir(socket)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        let Some(file) = std::fs::read(entry.path())
            .ok()
            .and_then(|b| serde_json::from_slice::<EndpointFile>(&b).ok())
        else {
            continue;
        };
        if file.network.as_deref().is_some_and(|n| n != network) {
            continue;
        }
        let kept = valid
            .iter()
            .any(|(id, ifname)| *id == file.container_id && *ifname == file.ifname);
        if !kept {
            out.push(file);
        }
    }
    out
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A dot name the agent's scan skips while it is being written.
    let tmp: PathBuf = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
