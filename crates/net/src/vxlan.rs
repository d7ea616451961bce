//! VXLAN devices for a statically programmed overlay: creation, and reading the parameters
//! back so an agent can adopt the device it made before instead of recreating it (which
//! would drop every FDB and neighbour entry, and traffic with them).
//!
//! Only unicast, point-to-point use is modelled: no multicast group, learning as the caller
//! says (an agent that writes every FDB entry itself turns it off).

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage as Rt;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, VxlanDf,
};

use crate::error::{Error, Result};
use crate::handle::{Handle, check_ifname};
use crate::link::{Link, link_msg, skip_stats};
use crate::socket::netlink::Op;

/// The largest VNI: the header field is 24 bits.
pub const VNI_MAX: u32 = 0x00ff_ffff;

/// A VXLAN device to create.
#[derive(Debug, Clone, Copy)]
pub struct VxlanSpec<'a> {
    pub name: &'a str,
    pub vni: u32,
    /// Source address of the encapsulated packets (IFLA_VXLAN_LOCAL/LOCAL6); its family is
    /// the underlay's.
    pub local: IpAddr,
    /// UDP destination port (the kernel's default, 8472, is not IANA's 4789: always say).
    pub port: u16,
    /// The underlay device (IFLA_VXLAN_LINK). The kernel then refuses an MTU that would
    /// not fit it after encapsulation.
    pub underlay: Option<u32>,
    pub mtu: Option<u32>,
    pub mac: Option<[u8; 6]>,
    pub learning: bool,
    /// Copy the inner packet's DF bit to the outer header (inner IPv6 always counts as DF),
    /// so a too-big packet that must not be fragmented is refused rather than fragmented
    /// on the underlay.
    pub df_inherit: bool,
    /// Create it administratively up.
    pub up: bool,
}

/// A VXLAN device's parameters as the kernel reports them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VxlanParams {
    pub vni: u32,
    pub local: Option<IpAddr>,
    /// A multicast group or default remote; a static overlay has none.
    pub group: Option<IpAddr>,
    pub port: u16,
    pub underlay: Option<u32>,
    pub learning: bool,
    pub df_inherit: bool,
}

impl VxlanParams {
    fn from_message(msg: &LinkMessage) -> Option<VxlanParams> {
        let mut infos = None;
        for attr in &msg.attributes {
            if let LinkAttribute::LinkInfo(list) = attr {
                for info in list {
                    if let LinkInfo::Data(InfoData::Vxlan(v)) = info {
                        infos = Some(v);
                    }
                }
            }
        }
        let mut p = VxlanParams::default();
        for info in infos? {
            match info {
                InfoVxlan::Id(id) => p.vni = *id,
                InfoVxlan::Local(a) if !a.is_unspecified() => p.local = Some(IpAddr::V4(*a)),
                InfoVxlan::Local6(a) if !a.is_unspecified() => p.local = Some(IpAddr::V6(*a)),
                InfoVxlan::Group(a) if !a.is_unspecified() => p.group = Some(IpAddr::V4(*a)),
                InfoVxlan::Group6(a) if !a.is_unspecified() => p.group = Some(IpAddr::V6(*a)),
                InfoVxlan::Port(port) => p.port = *port,
                InfoVxlan::Link(l) if *l != 0 => p.underlay = Some(*l),
                InfoVxlan::Learning(on) => p.learning = *on,
                InfoVxlan::Df(df) => p.df_inherit = *df == VxlanDf::Inherit,
                _ => {}
            }
        }
        Some(p)
    }
}

impl Handle {
    /// Creates a VXLAN device; `Error::Exists` if the name is taken. Returns the new link.
    pub fn create_vxlan(&mut self, spec: &VxlanSpec<'_>) -> Result<Link> {
        check_ifname(spec.name)?;
        if spec.vni > VNI_MAX {
            return Err(Error::Invalid(format!(
                "vxlan {}: VNI {} (at most {VNI_MAX})",
                spec.name, spec.vni
            )));
        }
        let mut data = vec![
            InfoVxlan::Id(spec.vni),
            match spec.local {
                IpAddr::V4(a) => InfoVxlan::Local(a),
                IpAddr::V6(a) => InfoVxlan::Local6(a),
            },
            InfoVxlan::Port(spec.port),
            InfoVxlan::Learning(spec.learning),
        ];
        if let Some(link) = spec.underlay {
            data.push(InfoVxlan::Link(link));
        }
        if spec.df_inherit {
            data.push(InfoVxlan::Df(VxlanDf::Inherit));
        }
        let mut attrs = vec![LinkAttribute::IfName(spec.name.to_owned())];
        if let Some(mtu) = spec.mtu {
            attrs.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = spec.mac {
            attrs.push(LinkAttribute::Address(mac.to_vec()));
        }
        attrs.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Vxlan),
            LinkInfo::Data(InfoData::Vxlan(data)),
        ]));
        let mut msg = link_msg(0, attrs);
        if spec.up {
            msg.header.flags = LinkFlags::Up;
            msg.header.change_mask = LinkFlags::Up;
        }
        let ctx = format!(
            "vxlan {} (vni {}, local {}, port {})",
            spec.name, spec.vni, spec.local, spec.port
        );
        self.nl.ack(
            Rt::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            Op::new("RTM_NEWLINK", &ctx),
        )?;
        self.link_by_name(spec.name)?
            .ok_or_else(|| Error::NotFound {
                what: format!("vxlan {} (vanished right after creation)", spec.name),
            })
    }

    /// The VXLAN device `name` and its parameters, in one request. `Ok(None)` if there is
    /// no such link, `Error::WrongKind` if it is not a VXLAN device.
    pub fn vxlan_by_name(&mut self, name: &str) -> Result<Option<(Link, VxlanParams)>> {
        check_ifname(name)?;
        let msg = link_msg(
            0,
            vec![LinkAttribute::IfName(name.to_owned()), skip_stats()],
        );
        let ctx = format!("link {name}");
        let reply = self
            .nl
            .get(Rt::GetLink(msg), Op::new("RTM_GETLINK", &ctx))?;
        let msg = match reply {
            None => return Ok(None),
            Some(Rt::NewLink(m)) => m,
            Some(other) => {
                return Err(Error::protocol(format!(
                    "RTM_GETLINK {name} answered with message type {}",
                    other.message_type()
                )));
            }
        };
        let params = VxlanParams::from_message(&msg);
        let link = Link::from_message(msg);
        match params {
            Some(p) if link.kind.as_deref() == Some("vxlan") => Ok(Some((link, p))),
            _ => Err(Error::WrongKind {
                name: link.name,
                expected: "vxlan",
                found: link
                    .kind
                    .unwrap_or_else(|| "a device without kind".to_owned()),
            }),
        }
    }
}
