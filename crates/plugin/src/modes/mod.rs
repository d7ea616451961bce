//! The three ways weft attaches a pod. Each mode creates its links and programs both sides;
//! the caller (`weft.rs`) owns IPAM, undo on failure and the verbs' order.

pub mod bridge;
pub mod macvlan;
pub mod ptp;

use crate::config::{Mode, NetConf};
use crate::errors::kernel;
use weft_cni::{CniError, CniResult, Interface, Request};
use weft_net::{Handle, Link, NetNs, VethOptions, VethSpec};

/// The mode's links for one attachment; needs no address, so it runs while IPAM allocates.
pub fn prepare(ctx: &mut Ctx<'_>) -> Result<Links, CniError> {
    match ctx.conf.mode {
        Mode::Bridge => bridge::prepare(ctx),
        Mode::Ptp => ptp::prepare(ctx),
        Mode::Macvlan => macvlan::prepare(ctx),
    }
}

/// The mode's part of an ADD once the addresses are known.
pub fn configure(ctx: &mut Ctx<'_>, links: Links, ipam: CniResult) -> Result<CniResult, CniError> {
    match ctx.conf.mode {
        Mode::Bridge => bridge::configure(ctx, links, ipam),
        Mode::Ptp => ptp::configure(ctx, links, ipam),
        Mode::Macvlan => macvlan::configure(ctx, links, ipam),
    }
}

/// The links a mode made for one attachment, before any address is known.
pub struct Links {
    pub bridge: Option<Link>,
    pub host: Option<Link>,
    pub pod: Link,
}

pub struct Ctx<'a> {
    pub req: &'a Request,
    pub conf: &'a NetConf,
    pub pod_ns: &'a NetNs,
    pub host: &'a mut Handle,
    pub pod: &'a mut Handle,
}

impl Ctx<'_> {
    pub fn host_veth_name(&self) -> String {
        crate::names::host_veth(&self.req.name, &self.req.container_id, &self.req.ifname)
    }

    /// Creates the veth pair in one request: its pod end already inside the pod namespace,
    /// its host end up and enslaved to `master`. Returns (host end, pod end).
    pub fn create_veth(&mut self, master: Option<u32>) -> Result<(Link, Link), CniError> {
        let host_name = self.host_veth_name();
        let alias = crate::names::alias(&self.req.name, &self.req.container_id, &self.req.ifname);
        // Choosing the pod's MAC here (the kernel would pick a random one just the same)
        // means the pod end need not be looked up: with the host end echoed by the kernel,
        // its index is the host end's peer index.
        let pod_mac = self.conf.mac.or_else(random_mac);
        let spec = VethSpec {
            host_name: &host_name,
            host_alias: Some(&alias),
            peer_name: &self.req.ifname,
            peer_ns: self.pod_ns,
            mtu: Some(self.conf.mtu),
            peer_mac: pod_mac,
        };
        let opts = VethOptions { master, up: true };
        let echoed = self
            .host
            .create_veth_with(&spec, opts)
            .map_err(|e| kernel(&format!("creating veth {host_name}/{}", self.req.ifname), e))?;
        let host = match echoed {
            Some(h) => h,
            None => find(self.host, &host_name, "host veth")?,
        };
        let pod = match (host.peer_index, pod_mac) {
            (Some(index), Some(pod_mac)) => Link {
                index,
                name: self.req.ifname.clone(),
                kind: Some("veth".into()),
                mac: Some(pod_mac),
                mtu: self.conf.mtu,
                master: None,
                up: false,
                oper_up: false,
                alias: None,
                peer_index: Some(host.index),
                link_netnsid: None,
            },
            _ => find(self.pod, &self.req.ifname, "pod interface")?,
        };
        Ok((host, pod))
    }

    /// For CHECK: the attachment's host veth, which must exist.
    pub fn existing_host_veth(&mut self) -> Result<(String, Link), CniError> {
        let name = self.host_veth_name();
        let veth = self
            .host
            .link_by_name(&name)
            .map_err(|e| kernel("looking up the host veth", e))?
            .ok_or_else(|| CniError::internal(format!("host veth {name} is missing")))?;
        Ok((name, veth))
    }

    pub fn pod_interface(&self, link: &Link) -> Interface {
        Interface {
            name: link.name.clone(),
            mac: link.mac.map(weft_net::format_mac),
            mtu: Some(link.mtu),
            sandbox: self.req.netns.clone(),
            ..Default::default()
        }
    }
}

/// A random locally administered unicast MAC, as the kernel would give a new veth; `None`
/// if no randomness is to be had, and then the kernel picks one.
fn random_mac() -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    // SAFETY: getrandom writes at most `mac.len()` bytes into the buffer it is given.
    let n = unsafe { libc::getrandom(mac.as_mut_ptr().cast(), mac.len(), 0) };
    if n != mac.len() as isize {
        return None;
    }
    mac[0] = (mac[0] & 0xfe) | 0x02;
    Some(mac)
}

pub fn host_interface(link: &Link) -> Interface {
    Interface {
        name: link.name.clone(),
        mac: link.mac.map(weft_net::format_mac),
        mtu: Some(link.mtu),
        ..Default::default()
    }
}

pub fn find(h: &mut Handle, name: &str, what: &str) -> Result<Link, CniError> {
    h.link_by_name(name)
        .map_err(|e| kernel(&format!("looking up {what} {name}"), e))?
        .ok_or_else(|| CniError::internal(format!("{what} {name} vanished right after creation")))
}

/// Turns on forwarding for the families in use, in the node's namespace (the calling
/// thread's). Written only when not already on: the write is what costs, not the read.
pub fn enable_forwarding(v4: bool, v6: bool) -> Result<(), CniError> {
    let keys = [
        (v4, "net/ipv4/ip_forward"),
        (v6, "net/ipv6/conf/all/forwarding"),
    ];
    for (on, key) in keys {
        if !on {
            continue;
        }
        let current = weft_net::sysctl::get(key).unwrap_or_default();
        if current.trim() != "1" {
            weft_net::sysctl::set(key, "1").map_err(|e| kernel(&format!("enabling {key}"), e))?;
        }
    }
    Ok(())
}
