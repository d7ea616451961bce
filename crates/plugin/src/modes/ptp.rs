//! Routed (ptp) mode, the model Calico and Cilium use: no bridge, a veth pair per pod, the
//! pod's address as a host route over its veth, and the pod's default route via a link-local
//! next hop that every host veth answers for (169.254.1.1 and fe80::1). Pods never share an
//! L2 domain, so the node routes every packet.

use super::{Ctx, Links, enable_forwarding, host_interface};
use crate::errors::kernel;
use crate::pod;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use weft_cni::{CniError, CniResult, IpConfig, Route};
use weft_net::route;

pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

fn host_prefix(ip: IpAddr) -> IpNet {
    match ip {
        IpAddr::V4(a) => IpNet::V4(ipnet::Ipv4Net::from(a)),
        IpAddr::V6(a) => IpNet::V6(ipnet::Ipv6Net::from(a)),
    }
}

fn gateway(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(GATEWAY_V6)
    } else {
        IpAddr::V4(GATEWAY_V4)
    }
}

/// The pod's addresses and routes as ptp mode programs them (also what CHECK expects).
pub fn pod_plan(ipam: &CniResult) -> (Vec<IpConfig>, Vec<Route>) {
    let ips: Vec<IpConfig> = ipam
        .ips
        .iter()
        .map(|ip| IpConfig {
            address: host_prefix(ip.address.addr()),
            gateway: Some(gateway(ip.address.addr().is_ipv6())),
            interface: ip.interface,
        })
        .collect();
    let mut routes = Vec::new();
    for v6 in [false, true] {
        if !ips.iter().any(|i| i.address.addr().is_ipv6() == v6) {
            continue;
        }
        if !v6 {
            // The next hop must be on-link before a route can use it.
            routes.push(Route {
                scope: Some(route::RT_SCOPE_LINK),
                ..Route::new(host_prefix(IpAddr::V4(GATEWAY_V4)), None)
            });
        }
        routes.push(Route::new(pod::default_dst(v6), Some(gateway(v6))));
        for r in &ipam.routes {
            if r.dst.addr().is_ipv6() == v6 && r.dst.prefix_len() != 0 {
                routes.push(Route::new(r.dst, Some(gateway(v6))));
            }
        }
    }
    (ips, routes)
}

pub fn prepare(ctx: &mut Ctx<'_>) -> Result<Links, CniError> {
    let (host, pod) = ctx.create_veth(None)?;
    Ok(Links {
        bridge: None,
        host: Some(host),
        pod,
    })
}

pub fn configure(ctx: &mut Ctx<'_>, links: Links, ipam: CniResult) -> Result<CniResult, CniError> {
    let (ips, routes) = pod_plan(&ipam);
    let Some(host) = links.host else {
        return Err(CniError::internal("ptp mode without its host veth"));
    };
    let pod_link = links.pod;
    let v4 = ips.iter().any(|i| i.address.addr().is_ipv4());
    let v6 = ips.iter().any(|i| i.address.addr().is_ipv6());
    if v4 {
        let gw = host_prefix(IpAddr::V4(GATEWAY_V4));
        ctx.host
            .addr_add(host.index, gw, false)
            .map_err(|e| kernel(&format!("adding {gw} to {}", host.name), e))?;
    }
    if v6 {
        let gw = IpNet::new(IpAddr::V6(GATEWAY_V6), 64)
            .map_err(|e| CniError::internal(format!("fe80::1/64: {e}")))?;
        ctx.host
            .addr_add(host.index, gw, true)
            .map_err(|e| kernel(&format!("adding {gw} to {}", host.name), e))?;
    }
    enable_forwarding(v4, v6)?;
    pod::configure(
        ctx.pod,
        ctx.pod_ns,
        &ctx.req.ifname,
        pod_link.index,
        pod_link.up,
        &ips,
        &routes,
    )?;
    for ip in &ips {
        let r = route::Route::new(ip.address)
            .dev(host.index)
            .scope(route::RT_SCOPE_LINK);
        ctx.host
            .route_replace(&r)
            .map_err(|e| kernel(&format!("routing {} via {}", ip.address, host.name), e))?;
    }
    let mut result = CniResult {
        interfaces: vec![host_interface(&host), ctx.pod_interface(&pod_link)],
        ips,
        routes,
        dns: ipam.dns,
    };
    for ip in &mut result.ips {
        ip.interface = Some(1);
    }
    Ok(result)
}

/// CHECK beyond the pod side: the host veth and a host route to each pod address over it.
pub fn check(ctx: &mut Ctx<'_>, prev: &CniResult) -> Result<(), CniError> {
    let (name, veth) = ctx.existing_host_veth()?;
    for v6 in [false, true] {
        let wanted: Vec<IpNet> = prev
            .ips
            .iter()
            .filter(|i| i.address.addr().is_ipv6() == v6)
            .map(|i| host_prefix(i.address.addr()))
            .collect();
        if wanted.is_empty() {
            continue;
        }
        let routes = ctx
            .host
            .routes(v6)
            .map_err(|e| kernel("listing host routes", e))?;
        for w in wanted {
            if !routes
                .iter()
                .any(|r| r.dst == w && r.oif == Some(veth.index))
            {
                return Err(CniError::internal(format!(
                    "host route {w} dev {name} is missing"
                )));
            }
        }
    }
    Ok(())
}
