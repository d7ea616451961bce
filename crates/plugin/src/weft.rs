//! The `weft` main plugin: the order of each verb, undo on failure, and what DEL, CHECK,
//! STATUS and GC must tolerate. Mode-specific kernel work lives in `modes`.

use crate::collect;
use crate::config::{MASQ_TABLE, Mode, NetConf};
use crate::endpoint;
use crate::errors::{kernel, nft};
use crate::ipam::{self, Verb};
use crate::modes::{self, Ctx, Links};
use crate::names;
use ipnet::IpNet;
use std::path::Path;
use weft_cni::{CniError, CniResult, Code, Request};
use weft_net::{Handle, NetNs};

pub struct Weft;

/// Every CPU this process may use except the one the calling thread is on, when there is
/// one. The scheduler of a small node tends to queue a new thread behind its parent on the
/// parent's CPU (on the 2-vCPU test VM, 60–80 % of ADDs), where it runs only once the parent
/// blocks or is preempted: the IPAM thread's file work and the link creation then take
/// turns instead of overlapping, and the thread's start alone waited ~0.4 ms. So the thread
/// moves itself to another CPU first thing, and the parent yields once to let it.
fn other_cpus() -> Option<libc::cpu_set_t> {
    // SAFETY: sched_getcpu(3) reads this thread's CPU; sched_getaffinity(2) writes at most
    // size_of::<cpu_set_t>() bytes into `set`; CPU_ISSET/CPU_CLR index within the set.
    unsafe {
        let cpu = usize::try_from(libc::sched_getcpu()).ok()?;
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        if cpu >= libc::CPU_SETSIZE as usize || !libc::CPU_ISSET(cpu, &set) {
            return None;
        }
        libc::CPU_CLR(cpu, &mut set);
        (libc::CPU_COUNT(&set) > 0).then_some(set)
    }
}

/// Restricts the calling thread to `cpus`. Best effort: where it fails, the thread merely
/// runs where the scheduler put it.
fn run_on(cpus: &libc::cpu_set_t) {
    // SAFETY: sched_setaffinity(2) reads size_of::<cpu_set_t>() bytes of `cpus`; pid 0 is
    // the calling thread.
    unsafe {
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), cpus);
    }
}

/// What the IPAM thread of an ADD reports, in this order.
enum IpamStep {
    Allocated(Result<CniResult, CniError>),
    Durable(Result<(), CniError>),
}

fn open_netns(path: &str) -> Result<NetNs, CniError> {
    NetNs::open(Path::new(path)).map_err(|e| {
        CniError::new(
            Code::InvalidEnvironment,
            format!("CNI_NETNS {path}: cannot use it as a network namespace: {e}"),
        )
    })
}

/// Refuses the plugin's own namespace: configuring "the pod" there would rewire the node.
fn refuse_own_netns(ns: &NetNs) -> Result<(), CniError> {
    let own = NetNs::current().map_err(|e| kernel("opening the plugin's own netns", e))?;
    if ns
        .same_as(&own)
        .map_err(|e| kernel("comparing namespaces", e))?
    {
        return Err(CniError::new(
            Code::InvalidNetns,
            format!(
                "CNI_NETNS {} is the plugin's own network namespace",
                ns.path().display()
            ),
        ));
    }
    Ok(())
}

fn masq_ranges(result: &CniResult) -> Vec<IpNet> {
    let mut v: Vec<IpNet> = result.ips.iter().map(|ip| ip.address.trunc()).collect();
    v.dedup();
    v
}

impl Weft {
    /// Everything of an ADD that needs the addresses: masquerade, then the mode's part.
    fn configure(
        &self,
        ctx: &mut Ctx<'_>,
        links: Links,
        ipam_result: CniResult,
    ) -> Result<CniResult, CniError> {
        let conf = ctx.conf;
        if ipam_result.ips.is_empty() {
            return Err(CniError::internal(format!(
                "IPAM plugin {} returned no addresses",
                conf.ipam_type
            )));
        }
        if conf.ip_masq {
            let masq = weft_nft::Masquerade::new(MASQ_TABLE);
            let want = masq_ranges(&ipam_result);
            // Reading the sets is a plain dump; ensure() commits a transaction, which costs
            // several times more, and every pod after a network's first finds its range there.
            let have = masq.ranges().unwrap_or_default();
            if !want.iter().all(|w| have.iter().any(|h| h.contains(w))) {
                masq.ensure(&want)
                    .map_err(|e| nft("installing masquerade for the pod ranges", e))?;
            }
        }
        let mut result = modes::configure(ctx, links, ipam_result)?;
        if let Some(dns) = &conf.dns {
            result.dns = dns.clone();
        }
        Ok(result)
    }

    /// Removes this attachment's links; absent links are fine. Errors are collected so a
    /// failure on one side does not leave the other behind.
    /// `detached`: leave the kernel's deferred teardown to a child process (see
    /// `teardown`); only when the process is single-threaded.
    fn detach_links(
        &self,
        req: &Request,
        conf: &NetConf,
        host: &mut Handle,
        detached: bool,
    ) -> Vec<CniError> {
        let mut errors = Vec::new();
        // Deleting either end of a veth removes both. The host end is found by its name
        // alone, with no pod namespace to enter, and works when that namespace is gone.
        if conf.mode != Mode::Macvlan {
            let name = names::host_veth(&req.name, &req.container_id, &req.ifname);
            match crate::teardown::delete_link(host, &name, detached) {
                Ok(true) => return errors,
                Ok(false) => {}
                Err(e) => errors.push(e),
            }
        }
        if let Some(path) = &req.netns
            && let Ok(ns) = NetNs::open(Path::new(path))
            && let Err(e) = Handle::new_in(&ns).and_then(|mut h| h.delete_link_by_name(&req.ifname))
        {
            errors.push(kernel(&format!("deleting {} in the pod", req.ifname), e));
        }
        errors
    }
}

fn first_error(mut errors: Vec<CniError>) -> Result<(), CniError> {
    if errors.is_empty() {
        return Ok(());
    }
    let first = errors.remove(0);
    if errors.is_empty() {
        return Err(first);
    }
    let rest: Vec<String> = errors.iter().map(|e| e.msg.clone()).collect();
    Err(CniError::raw(first.code, first.msg, rest.join("; ")))
}

impl weft_cni::Plugin for Weft {
    fn add(&self, req: &Request) -> Result<CniResult, CniError> {
        let conf = NetConf::parse(req)?;
        let netns = req.netns.as_deref().unwrap_or_default();
        let pod_ns = open_netns(netns)?;
        refuse_own_netns(&pod_ns)?;
        let mut host = Handle::new().map_err(|e| kernel("opening netlink", e))?;
        let mut pod =
            Handle::new_in(&pod_ns).map_err(|e| kernel("opening netlink in the pod", e))?;
        if pod
            .link_by_name(&req.ifname)
            .map_err(|e| kernel("looking up the pod interface", e))?
            .is_some()
        {
            return Err(CniError::raw(
                ipam::CODE_DUPLICATE,
                format!("interface {} already exists in {netns}", req.ifname),
                "",
            ));
        }
        // A veth mode's host end is named after the attachment, so its presence says the
        // attachment exists (perhaps in another netns) for the price of one lookup instead
        // of reading every lease. macvlan has no host end: the IPAM store checks instead.
        let known_new = conf.mode != Mode::Macvlan;
        if known_new {
            let name = names::host_veth(&req.name, &req.container_id, &req.ifname);
            if host
                .link_by_name(&name)
                .map_err(|e| kernel("looking up the host veth", e))?
                .is_some()
            {
                return Err(CniError::raw(
                    ipam::CODE_DUPLICATE,
                    format!(
                        "container {} already has {} attached to network {} (host veth {name})",
                        req.container_id, req.ifname, req.name
                    ),
                    "",
                ));
            }
        }
        let job = ipam::plan_add(&conf.ipam_type, req)?;
        // IPAM (file work, or another plugin's process) runs on a second thread while this
        // one makes the links, which need no address; the lease fsyncs follow on that thread
        // while this one configures the pod. The thread reports both steps on a channel and
        // is never joined: waiting for a finished thread to be torn down is time the pod
        // start would pay for nothing, and process exit ends it anyway.
        let (tx, rx) = std::sync::mpsc::channel::<IpamStep>();
        let worker_req = req.clone();
        let beside = other_cpus();
        let work = move || {
            if let Some(cpus) = &beside {
                run_on(cpus);
            }
            match job.run(&worker_req, known_new) {
                Err(e) => {
                    let _ = tx.send(IpamStep::Allocated(Err(e)));
                }
                Ok((result, sync)) => {
                    let _ = tx.send(IpamStep::Allocated(Ok(result)));
                    let _ = tx.send(IpamStep::Durable(sync.map_or(Ok(()), ipam::SyncJob::run)));
                }
            }
        };
        if let Err(e) = std::thread::Builder::new().name("ipam".into()).spawn(work) {
            return Err(CniError::internal(format!("starting the IPAM thread: {e}")));
        }
        if beside.is_some() {
            // Lets a thread queued behind this one start now and move away (see other_cpus).
            // SAFETY: sched_yield(2) has no arguments and cannot fail on Linux.
            unsafe { libc::sched_yield() };
        }
        let mut ctx = Ctx {
            req,
            conf: &conf,
            pod_ns: &pod_ns,
            host: &mut host,
            pod: &mut pod,
        };
        let links = modes::prepare(&mut ctx);
        let silent = || CniError::internal("the IPAM thread ended without an answer");
        let allocated = match rx.recv() {
            Ok(IpamStep::Allocated(r)) => r,
            _ => Err(silent()),
        };
        let ipam_done = allocated.is_ok();
        let configured = match (links, allocated) {
            (Ok(links), Ok(r)) => self.configure(&mut ctx, links, r),
            // An IPAM failure explains more than a link failure that may follow from it.
            (_, Err(e)) | (Err(e), Ok(_)) => Err(e),
        };
        // The addresses are reported only once their leases are on disk, and the pod only
        // once the agent knows it (see `endpoint`).
        let outcome = configured
            .and_then(|r| {
                match rx.recv() {
                    Ok(IpamStep::Durable(d)) if ipam_done => d,
                    _ => Err(silent()),
                }
                .map(|()| r)
            })
            .and_then(|r| match &conf.agent_socket {
                None => Ok(r),
                Some(socket) => match endpoint::attach(socket, &conf, req, &pod_ns, &r) {
                    Ok(Ok(())) => Ok(r),
                    Ok(Err(why)) => {
                        crate::log::warn(
                            req,
                            &format!("the agent has not programmed the pod's policy: {why}; the pod stays isolated until it does"),
                        );
                        Ok(r)
                    }
                    Err(e) => Err(CniError::internal(format!(
                        "writing the pod's endpoint file for the agent: {e}"
                    ))),
                },
            });
        outcome.inspect_err(|_| {
            // Undo in reverse: links first, then the lease, so no address is freed while an
            // interface still carries it. Synchronously: no child may be forked here while
            // another thread of this process might have been running.
            let _ = self.detach_links(req, &conf, ctx.host, false);
            if ipam_done {
                let _ = ipam::run(&conf.ipam_type, Verb::Del, req);
            }
        })
    }

    fn del(&self, req: &Request) -> Result<(), CniError> {
        let conf = NetConf::parse(req)?;
        let mut host = Handle::new().map_err(|e| kernel("opening netlink", e))?;
        if let Some(socket) = &conf.agent_socket {
            endpoint::detach(socket, req);
        }
        let mut errors = self.detach_links(req, &conf, &mut host, true);
        if let Err(e) = ipam::run(&conf.ipam_type, Verb::Del, req) {
            errors.push(e);
        }
        first_error(errors)
    }

    fn check(&self, req: &Request) -> Result<(), CniError> {
        let conf = NetConf::parse(req)?;
        let prev = req.prev_result()?.ok_or_else(|| {
            CniError::invalid_config("CHECK needs prevResult (the ADD result) in the config")
        })?;
        ipam::run(&conf.ipam_type, Verb::Check, req)?;
        let netns = req.netns.as_deref().unwrap_or_default();
        let pod_ns = open_netns(netns)?;
        let mut host = Handle::new().map_err(|e| kernel("opening netlink", e))?;
        let mut pod =
            Handle::new_in(&pod_ns).map_err(|e| kernel("opening netlink in the pod", e))?;
        crate::check::pod_side(&mut pod, req, &prev)?;
        let mut ctx = Ctx {
            req,
            conf: &conf,
            pod_ns: &pod_ns,
            host: &mut host,
            pod: &mut pod,
        };
        match conf.mode {
            Mode::Bridge => modes::bridge::check(&mut ctx)?,
            Mode::Ptp => modes::ptp::check(&mut ctx, &prev)?,
            Mode::Macvlan => modes::macvlan::check(&mut ctx)?,
        }
        if conf.ip_masq {
            let have = weft_nft::Masquerade::new(MASQ_TABLE)
                .ranges()
                .map_err(|e| nft("reading the masquerade sets", e))?;
            for want in prev.ips.iter().map(|i| i.address.trunc()) {
                let covered = have.iter().any(|h| h.contains(&want));
                // ptp results carry /32 addresses, which any configured range covers.
                if !covered {
                    return Err(CniError::internal(format!(
                        "masquerade for {want} is missing from table inet {MASQ_TABLE}"
                    )));
                }
            }
        }
        Ok(())
    }

    fn status(&self, req: &Request) -> Result<(), CniError> {
        let conf = NetConf::parse(req)?;
        if let (Mode::Macvlan, Some(master)) = (conf.mode, &conf.master) {
            let mut host = Handle::new().map_err(|e| kernel("opening netlink", e))?;
            if host
                .link_by_name(master)
                .map_err(|e| kernel("looking up the macvlan master", e))?
                .is_none()
            {
                return Err(CniError::new(
                    Code::NotAvailable,
                    format!("macvlan master {master} does not exist"),
                ));
            }
        }
        ipam::run(&conf.ipam_type, Verb::Status, req).map(|_| ())
    }

    fn gc(&self, req: &Request) -> Result<(), CniError> {
        let conf = NetConf::parse(req)?;
        let valid = req.valid_attachments()?;
        let mut errors = Vec::new();
        // Best effort, as DEL: without netlink the leases are still collected.
        let mut host = Handle::new()
            .map_err(|e| errors.push(kernel("opening netlink", e)))
            .ok();
        // The attachments the agent was told of go the way weftd's own GC takes them
        // (`collect`); their leases are left to the IPAM's GC below, which the IPAM plugin
        // owns (it need not be weft-ipam) and which also takes leases no file names.
        if let (Some(socket), Some(host)) = (&conf.agent_socket, host.as_mut()) {
            let stores = collect::Stores {
                agent_socket: Some(socket),
                ipam_data_dir: None,
            };
            for file in endpoint::stale(socket, &req.name, &valid) {
                let a = collect::Attachment {
                    network: &req.name,
                    container_id: &file.container_id,
                    ifname: &file.ifname,
                    host_interface: file.host_interface.as_deref(),
                    addresses: &file.addresses,
                };
                match collect::collect(host, stores, &a) {
                    // The files are the agent's hints, not state the runtime owns: a file
                    // that will not go is the agent's rescan's to notice, not a failed GC.
                    Ok(_) | Err(collect::CollectError::Endpoint { .. }) => {}
                    Err(e) => errors.push(CniError::internal(e.to_string())),
                }
            }
        }
        if let Err(e) = ipam::run(&conf.ipam_type, Verb::Gc, req) {
            errors.push(e);
        }
        // Stray veths no endpoint file names (a plugin without an agent, an ADD killed
        // before it wrote the file).
        let Some(host) = host.as_mut() else {
            return first_error(errors);
        };
        match host.links() {
            Ok(links) => {
                for link in links {
                    let Some(alias) = &link.alias else { continue };
                    let Some((id, ifname)) = names::parse_alias(alias, &req.name) else {
                        continue;
                    };
                    if valid
                        .iter()
                        .any(|(v_id, v_if)| v_id == id && v_if == ifname)
                    {
                        continue;
                    }
                    if let Err(e) = host.delete_link(link.index)
                        && !e.is_not_found()
                    {
                        errors.push(kernel(&format!("deleting stray veth {}", link.name), e));
                    }
                }
            }
            Err(e) => errors.push(kernel("listing host links", e)),
        }
        first_error(errors)
    }
}
