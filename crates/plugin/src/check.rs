//! CHECK of the pod side: compares the pod's interface, addresses and routes with
//! `prevResult` and names the first thing that drifted. Extra routes and addresses are
//! tolerated (later plugins in a chain may add them).

use crate::errors::kernel;
use weft_cni::{CniError, CniResult, Request};
use weft_net::Handle;

pub fn pod_side(pod: &mut Handle, req: &Request, prev: &CniResult) -> Result<(), CniError> {
    let ifname = &req.ifname;
    let link = pod
        .link_by_name(ifname)
        .map_err(|e| kernel("looking up the pod interface", e))?
        .ok_or_else(|| CniError::internal(format!("interface {ifname} is missing in the pod")))?;
    let idx = prev
        .interfaces
        .iter()
        .position(|i| &i.name == ifname && i.sandbox.as_deref().is_some_and(|s| !s.is_empty()));
    if let Some(i) = idx
        && let (Some(want), Some(have)) = (&prev.interfaces[i].mac, link.mac)
        && !want.eq_ignore_ascii_case(&weft_net::format_mac(have))
    {
        return Err(CniError::internal(format!(
            "interface {ifname} has MAC {}, prevResult says {want}",
            weft_net::format_mac(have)
        )));
    }
    if !link.up {
        return Err(CniError::internal(format!("interface {ifname} is down")));
    }
    let addrs = pod
        .addrs(Some(link.index))
        .map_err(|e| kernel("listing pod addresses", e))?;
    for ip in &prev.ips {
        if ip.interface.is_some() && ip.interface != idx {
            continue;
        }
        if !addrs.iter().any(|a| a.addr == ip.address) {
            return Err(CniError::internal(format!(
                "address {} is missing from {ifname}",
                ip.address
            )));
        }
    }
    for v6 in [false, true] {
        let wanted: Vec<_> = prev
            .routes
            .iter()
            .filter(|r| r.dst.addr().is_ipv6() == v6)
            .collect();
        if wanted.is_empty() {
            continue;
        }
        let have = pod
            .routes(v6)
            .map_err(|e| kernel("listing pod routes", e))?;
        for r in wanted {
            let gw = r.gw.or_else(|| crate::pod::family_gateway(&prev.ips, v6));
            let found = have
                .iter()
                .any(|h| h.dst == r.dst && (gw.is_none() || h.gateway == gw || r.scope.is_some()));
            if !found {
                return Err(CniError::internal(format!(
                    "route {} via {} is missing in the pod",
                    r.dst,
                    gw.map(|g| g.to_string()).unwrap_or_else(|| "link".into())
                )));
            }
        }
    }
    Ok(())
}
