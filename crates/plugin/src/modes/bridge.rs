//! Bridge mode: a veth pair per pod, its host end a port of a node bridge that holds the
//! gateway address(es) when `isGateway`.

use super::{Ctx, Links, enable_forwarding, host_interface};
use crate::errors::kernel;
use crate::pod;
use ipnet::IpNet;
use std::net::IpAddr;
use weft_cni::{CniError, CniResult, Route};

/// network address + 1, the reference plugins' default gateway.
fn first_host(net: &IpNet) -> Option<IpAddr> {
    match net.trunc() {
        IpNet::V4(n) => u32::from(n.network())
            .checked_add(1)
            .map(|a| IpAddr::V4(a.into())),
        IpNet::V6(n) => u128::from(n.network())
            .checked_add(1)
            .map(|a| IpAddr::V6(a.into())),
    }
}

/// The links, made before (and while) IPAM allocates: they need no address.
pub fn prepare(ctx: &mut Ctx<'_>) -> Result<Links, CniError> {
    let conf = ctx.conf;
    // The node forwards to pods through the bridge, and the kernel sends no neighbour
    // solicitation from a device whose link-local address is still tentative: with DAD on,
    // IPv6 to the first pods on a new bridge would vanish for the ~2 s DAD takes.
    let br = ctx
        .host
        .create_bridge_with(
            &conf.bridge,
            Some(conf.mtu),
            Some(crate::names::bridge_mac(&conf.bridge)),
            |br| {
                let key = format!("net/ipv6/conf/{}/accept_dad", br.name);
                if std::path::Path::new("/proc/sys").join(&key).exists() {
                    weft_net::sysctl::set(&key, "0")?;
                }
                Ok(())
            },
        )
        .map_err(|e| kernel(&format!("creating bridge {}", conf.bridge), e))?;
    let (host, pod_link) = ctx.create_veth(Some(br.index))?;
    if conf.hairpin {
        ctx.host
            .set_hairpin(host.index, true)
            .map_err(|e| kernel(&format!("hairpin mode on {}", host.name), e))?;
    }
    Ok(Links {
        bridge: Some(br),
        host: Some(host),
        pod: pod_link,
    })
}

pub fn configure(
    ctx: &mut Ctx<'_>,
    links: Links,
    mut result: CniResult,
) -> Result<CniResult, CniError> {
    let conf = ctx.conf;
    let (Some(br), Some(host)) = (links.bridge, links.host) else {
        return Err(CniError::internal(
            "bridge mode without its bridge or host veth",
        ));
    };
    if conf.is_gateway {
        for ip in &mut result.ips {
            if ip.gateway.is_none() {
                ip.gateway = first_host(&ip.address);
            }
            let Some(gw) = ip.gateway else { continue };
            let gw_net = IpNet::new(gw, ip.address.prefix_len())
                .map_err(|e| CniError::internal(format!("gateway {gw}: {e}")))?;
            match ctx.host.addr_add(br.index, gw_net, true) {
                Ok(()) => {}
                // Every pod of the network shares the gateway; the first ADD put it there.
                Err(e) if e.is_exists() => {}
                Err(e) => return Err(kernel(&format!("adding {gw_net} to {}", conf.bridge), e)),
            }
        }
        let v4 = result.ips.iter().any(|i| i.address.addr().is_ipv4());
        let v6 = result.ips.iter().any(|i| i.address.addr().is_ipv6());
        enable_forwarding(v4, v6)?;
        for v6 in [false, true] {
            if let Some(gw) = pod::family_gateway(&result.ips, v6)
                && !pod::has_default(&result.routes, v6)
            {
                result
                    .routes
                    .push(Route::new(pod::default_dst(v6), Some(gw)));
            }
        }
    }
    pod::configure(
        ctx.pod,
        ctx.pod_ns,
        &ctx.req.ifname,
        links.pod.index,
        links.pod.up,
        &result.ips,
        &result.routes,
    )?;
    for ip in &mut result.ips {
        ip.interface = Some(2);
    }
    result.interfaces = vec![
        host_interface(&br),
        host_interface(&host),
        ctx.pod_interface(&links.pod),
    ];
    Ok(result)
}

/// What CHECK verifies beyond the pod side: the bridge exists and the host veth is its port.
pub fn check(ctx: &mut Ctx<'_>) -> Result<(), CniError> {
    let br = ctx
        .host
        .link_by_name(&ctx.conf.bridge)
        .map_err(|e| kernel("looking up the bridge", e))?
        .ok_or_else(|| CniError::internal(format!("bridge {} is missing", ctx.conf.bridge)))?;
    let (name, veth) = ctx.existing_host_veth()?;
    if veth.master != Some(br.index) {
        return Err(CniError::internal(format!(
            "host veth {name} is not a port of bridge {}",
            ctx.conf.bridge
        )));
    }
    Ok(())
}
