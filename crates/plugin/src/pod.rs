//! The pod side of an attachment: addresses, routes and the link state inside the pod's
//! network namespace, common to every mode.

use crate::errors::kernel;
use ipnet::IpNet;
use std::net::IpAddr;
use weft_cni::{CniError, IpConfig, Route};
use weft_net::{Handle, NetNs, route};

/// Brings `index` up with `ips` and `routes`. IPv6 addresses are added without duplicate
/// address detection so the pod can use them the moment ADD returns.
pub fn configure(
    pod: &mut Handle,
    pod_ns: &NetNs,
    ifname: &str,
    index: u32,
    already_up: bool,
    ips: &[IpConfig],
    routes: &[Route],
) -> Result<(), CniError> {
    if ips.iter().any(|ip| ip.address.addr().is_ipv6()) {
        let key = format!("net/ipv6/conf/{ifname}/accept_dad");
        pod_ns
            .run(|| weft_net::sysctl::set(&key, "0"))
            .and_then(|r| r)
            .map_err(|e| kernel(&format!("disabling DAD on {ifname} in the pod"), e))?;
    }
    for ip in ips {
        match pod.addr_add(index, ip.address, true) {
            Ok(()) => {}
            Err(e) => return Err(kernel(&format!("adding {} to {ifname}", ip.address), e)),
        }
    }
    if !already_up {
        pod.set_up(index)
            .map_err(|e| kernel(&format!("setting {ifname} up in the pod"), e))?;
    }
    for r in routes {
        // A link-scoped route has no next hop by definition; the fallback would invent one.
        let link_scoped = r.scope == Some(route::RT_SCOPE_LINK);
        let gw =
            r.gw.or_else(|| family_gateway(ips, r.dst.addr().is_ipv6()))
                .filter(|_| !link_scoped);
        let mut kr = route::Route::new(r.dst).dev(index);
        if let Some(gw) = gw {
            kr = kr.via(gw);
        }
        if let Some(m) = r.priority {
            kr.metric = Some(m);
        }
        if let Some(t) = r.table {
            kr.table = Some(t);
        }
        kr.mtu = r.mtu;
        if let Some(s) = r.scope {
            kr = kr.scope(s);
        }
        match pod.route_add(&kr) {
            Ok(()) => {}
            // Two sources (IPAM routes and the mode's default route) may name the same route.
            Err(e) if e.is_exists() => {}
            Err(e) => {
                return Err(kernel(
                    &format!("adding route {} via {gw:?} on {ifname}", r.dst),
                    e,
                ));
            }
        }
    }
    Ok(())
}

/// The gateway of the first address of that family, as the reference plugins use for routes
/// without `gw`.
pub fn family_gateway(ips: &[IpConfig], v6: bool) -> Option<IpAddr> {
    ips.iter()
        .filter(|ip| ip.address.addr().is_ipv6() == v6)
        .find_map(|ip| ip.gateway)
}

pub fn default_dst(v6: bool) -> IpNet {
    if v6 {
        IpNet::V6(Default::default())
    } else {
        IpNet::V4(Default::default())
    }
}

pub fn has_default(routes: &[Route], v6: bool) -> bool {
    routes
        .iter()
        .any(|r| r.dst.prefix_len() == 0 && r.dst.addr().is_ipv6() == v6)
}
