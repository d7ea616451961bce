//! The three ways weft attaches a pod. Each mode creates its links and programs both sides;
//! the caller (`weft.rs`) owns IPAM, undo on failure and the verbs' order.

pub mod bridge;
pub mod macvlan;
pub mod ptp;

use crate::config::NetConf;
use crate::errors::kernel;
use weft_cni::{CniError, Interface, Request};
use weft_net::{Handle, Link, NetNs, VethOptions, VethSpec};

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
        let spec = VethSpec {
            host_name: &host_name,
            host_alias: Some(&alias),
            peer_name: &self.req.ifname,
            peer_ns: self.pod_ns,
            mtu: Some(self.conf.mtu),
            peer_mac: self.conf.mac,
        };
        let opts = VethOptions { master, up: true };
        self.host
            .create_veth_with(&spec, opts)
            .map_err(|e| kernel(&format!("creating veth {host_name}/{}", self.req.ifname), e))?;
        let host = find(self.host, &host_name, "host veth")?;
        let pod = find(self.pod, &self.req.ifname, "pod interface")?;
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
