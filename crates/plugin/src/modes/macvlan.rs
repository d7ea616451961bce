//! macvlan mode: the pod interface is a macvlan (bridge mode) of a node interface, for pods
//! that sit directly on an underlay network. There is no host-side interface.

use super::{Ctx, Links};
use crate::errors::kernel;
use crate::pod;
use weft_cni::{CniError, CniResult};

pub fn prepare(ctx: &mut Ctx<'_>) -> Result<Links, CniError> {
    let master_name = ctx.conf.master.clone().unwrap_or_default();
    let master = ctx
        .host
        .link_by_name(&master_name)
        .map_err(|e| kernel(&format!("looking up master {master_name}"), e))?
        .ok_or_else(|| {
            CniError::invalid_config(format!("master: interface \"{master_name}\" not found"))
        })?;
    ctx.host
        .create_macvlan(
            &ctx.req.ifname,
            master.index,
            ctx.pod_ns,
            Some(ctx.conf.mtu),
            ctx.conf.mac,
        )
        .map_err(|e| {
            kernel(
                &format!("creating macvlan {} on {master_name}", ctx.req.ifname),
                e,
            )
        })?;
    let pod = super::find(ctx.pod, &ctx.req.ifname, "pod interface")?;
    Ok(Links {
        bridge: None,
        host: None,
        pod,
    })
}

pub fn configure(
    ctx: &mut Ctx<'_>,
    links: Links,
    mut result: CniResult,
) -> Result<CniResult, CniError> {
    let link = links.pod;
    pod::configure(
        ctx.pod,
        ctx.pod_ns,
        &ctx.req.ifname,
        link.index,
        link.up,
        &result.ips,
        &result.routes,
    )?;
    for ip in &mut result.ips {
        ip.interface = Some(0);
    }
    result.interfaces = vec![ctx.pod_interface(&link)];
    Ok(result)
}

pub fn check(ctx: &mut Ctx<'_>) -> Result<(), CniError> {
    let link = super::find(ctx.pod, &ctx.req.ifname, "pod interface")?;
    if link.kind.as_deref() != Some("macvlan") {
        return Err(CniError::internal(format!(
            "{} in the pod is a {}, expected macvlan",
            ctx.req.ifname,
            link.kind.as_deref().unwrap_or("link of unknown kind")
        )));
    }
    Ok(())
}
