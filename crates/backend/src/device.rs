//! The VXLAN device `weft.vx`: created once, adopted on every later start, and its VTEP
//! addresses.
//!
//! Adopting matters more than creating: deleting and recreating the device drops every FDB
//! and neighbour entry and every route through it, so an agent restart would cost traffic.
//! A device whose identity (VNI, port, local address, underlay, MAC, learning, DF) matches
//! is kept as it is; only its MTU and up state are corrected in place.

use std::net::IpAddr;

use ipnet::IpNet;
use weft_net::{Handle, VxlanSpec};

use crate::error::Error;
use crate::model::Local;
use crate::plan::vtep_ip;
use crate::underlay::Underlay;

/// The name of weft's VXLAN device.
pub const DEVICE: &str = "weft.vx";

/// Bytes VXLAN adds over an IPv4 underlay: outer IPv4 (20) + UDP (8) + VXLAN (8) + inner
/// Ethernet (14).
pub const VXLAN_OVERHEAD_V4: u32 = 50;

/// Creates `weft.vx` or adopts the one there; returns its index.
pub(crate) fn ensure(h: &mut Handle, local: &Local, underlay: &Underlay) -> Result<u32, Error> {
    let mtu = underlay.mtu.saturating_sub(VXLAN_OVERHEAD_V4);
    match h.vxlan_by_name(DEVICE) {
        Ok(Some((link, p))) => {
            let same = p.vni == local.vni
                && p.port == local.port
                && p.local == Some(IpAddr::V4(local.underlay_v4))
                && p.group.is_none()
                && p.underlay == Some(underlay.index)
                && !p.learning
                && p.df_inherit
                && link.mac == Some(local.vtep_mac);
            if same {
                if link.mtu != mtu {
                    h.set_mtu(link.index, mtu)
                        .map_err(Error::net(format!("setting {DEVICE} MTU to {mtu}")))?;
                }
                if !link.up {
                    h.set_up(link.index)
                        .map_err(Error::net(format!("bringing {DEVICE} up")))?;
                }
                return Ok(link.index);
            }
            remove(h)?;
        }
        Ok(None) => {}
        // Something else took weft's name: weft owns it, so it goes.
        Err(weft_net::Error::WrongKind { .. }) => {
            remove(h)?;
        }
        Err(e) => {
            return Err(Error::Net {
                context: format!("reading {DEVICE}"),
                source: e,
            });
        }
    }
    let spec = VxlanSpec {
        name: DEVICE,
        vni: local.vni,
        local: IpAddr::V4(local.underlay_v4),
        port: local.port,
        underlay: Some(underlay.index),
        mtu: Some(mtu),
        mac: Some(local.vtep_mac),
        learning: false,
        df_inherit: true,
        up: true,
    };
    let link = h.create_vxlan(&spec).map_err(Error::net(format!(
        "creating {DEVICE} (vni {}, local {}, port {}, on {})",
        local.vni, local.underlay_v4, local.port, underlay.name
    )))?;
    Ok(link.index)
}

/// Deletes `weft.vx` (and with it every route, FDB and neighbour entry through it).
pub(crate) fn remove(h: &mut Handle) -> Result<bool, Error> {
    h.delete_link_by_name(DEVICE)
        .map_err(Error::net(format!("deleting {DEVICE}")))
}

/// Puts exactly this node's VTEP addresses on `vx` — the network address of the first
/// block of each family, as a host address — and removes earlier ones.
pub(crate) fn sync_vtep_addrs(h: &mut Handle, vx: u32, blocks: &[IpNet]) -> Result<(), Error> {
    let want: Vec<IpNet> = [vtep_ip(blocks, false), vtep_ip(blocks, true)]
        .into_iter()
        .flatten()
        .map(IpNet::from)
        .collect();
    let have: Vec<IpNet> = h
        .addrs(Some(vx))
        .map_err(Error::net(format!("reading addresses of {DEVICE}")))?
        .into_iter()
        .map(|a| a.addr)
        // The kernel's own IPv6 link-local address stays.
        .filter(|a| !matches!(a, IpNet::V6(n) if n.addr().is_unicast_link_local()))
        .collect();
    for a in want.iter().filter(|a| !have.contains(a)) {
        match h.addr_add(vx, *a, true) {
            Ok(()) => {}
            Err(e) if e.is_exists() => {}
            Err(e) => {
                return Err(Error::Net {
                    context: format!("adding VTEP address {a} to {DEVICE}"),
                    source: e,
                });
            }
        }
    }
    for a in have.iter().filter(|a| !want.contains(a)) {
        match h.addr_del(vx, *a) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                return Err(Error::Net {
                    context: format!("removing old VTEP address {a} from {DEVICE}"),
                    source: e,
                });
            }
        }
    }
    Ok(())
}
