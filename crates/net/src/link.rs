//! Links: lookup, bridge/veth/macvlan creation, attribute changes, deletion.
//!
//! Lookups by name use a single RTM_GETLINK with IFLA_IFNAME rather than a dump: the
//! plugin asks "does X exist?" several times per pod and a host may have thousands of
//! links. Replies skip statistics (RTEXT_FILTER_SKIP_STATS), which are most of a link's
//! bytes and never needed here.
//!
//! veth and macvlan devices are created with their pod end placed straight into the pod
//! namespace (IFLA_NET_NS_FD in the same request), so there is never a moment where the
//! pod's interface sits in the host namespace under a name that could collide.

use std::os::fd::AsRawFd;

use netlink_packet_core::{DefaultNla, NLM_F_CREATE, NLM_F_ECHO, NLM_F_EXCL};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage as Rt;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoMacVlan, InfoVeth, LinkAttribute, LinkExtentMask, LinkFlags, LinkInfo,
    LinkMessage, LinkProtoInfoBridge, MacVlanMode, State,
};

use crate::error::{Error, Result};
use crate::handle::{Handle, check_ifname};
use crate::netns::NetNs;
use crate::socket::netlink::Op;

/// IFLA_BRPORT_MODE inside IFLA_PROTINFO: the bridge port's hairpin flag.
const IFLA_BRPORT_MODE: u16 = 4;

/// A network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `IFLA_INFO_KIND` ("bridge", "veth", "macvlan", ...); `None` for physical devices.
    pub kind: Option<String>,
    pub mac: Option<[u8; 6]>,
    pub mtu: u32,
    /// Index of the bridge (or bond) this link is enslaved to.
    pub master: Option<u32>,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// Operationally up (IF_OPER_UP).
    pub oper_up: bool,
    pub alias: Option<String>,
    /// IFLA_LINK: for a veth the peer's index, for a macvlan its parent's — in the
    /// namespace named by `link_netnsid` when that is set.
    pub peer_index: Option<u32>,
    pub link_netnsid: Option<i32>,
}

impl Link {
    pub(crate) fn from_message(msg: LinkMessage) -> Link {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            kind: None,
            mac: None,
            mtu: 0,
            master: None,
            up: msg.header.flags.contains(LinkFlags::Up),
            oper_up: false,
            alias: None,
            peer_index: None,
            link_netnsid: None,
        };
        for attr in msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n,
                LinkAttribute::Address(a) => link.mac = <[u8; 6]>::try_from(a.as_slice()).ok(),
                LinkAttribute::Mtu(m) => link.mtu = m,
                LinkAttribute::Controller(m) if m != 0 => link.master = Some(m),
                LinkAttribute::OperState(s) => link.oper_up = s == State::Up,
                LinkAttribute::IfAlias(a) if !a.is_empty() => link.alias = Some(a),
                LinkAttribute::Link(i) if i != 0 => link.peer_index = Some(i),
                LinkAttribute::LinkNetNsId(id) => link.link_netnsid = Some(id),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(k) = info {
                            link.kind = Some(k.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

/// A veth pair to create: the host end in the handle's namespace, the peer directly in
/// `peer_ns`.
#[derive(Debug, Clone, Copy)]
pub struct VethSpec<'a> {
    pub host_name: &'a str,
    pub host_alias: Option<&'a str>,
    pub peer_name: &'a str,
    pub peer_ns: &'a NetNs,
    /// Applied to both ends.
    pub mtu: Option<u32>,
    pub peer_mac: Option<[u8; 6]>,
}

/// What else to set on a new veth pair in the same request: each saves the plugin a
/// round trip on the pod start path.
#[derive(Debug, Clone, Copy, Default)]
pub struct VethOptions {
    /// Enslave the host end to this bridge.
    pub master: Option<u32>,
    /// Bring the host end up. (There is no such option for the peer: the kernel opens the
    /// peer before the two ends are joined, and a veth without its peer refuses to open
    /// with ENOTCONN.)
    pub up: bool,
}

pub(crate) fn skip_stats() -> LinkAttribute {
    LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats])
}

pub(crate) fn link_msg(index: u32, attributes: Vec<LinkAttribute>) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.attributes = attributes;
    msg
}

fn only_link(reply: Option<Rt>) -> Result<Option<Link>> {
    match reply {
        None => Ok(None),
        Some(Rt::NewLink(m)) => Ok(Some(Link::from_message(m))),
        Some(other) => Err(Error::protocol(format!(
            "RTM_GETLINK answered with message type {}",
            other.message_type()
        ))),
    }
}

impl Handle {
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        check_ifname(name)?;
        let msg = link_msg(
            0,
            vec![LinkAttribute::IfName(name.to_owned()), skip_stats()],
        );
        let ctx = format!("link {name}");
        let reply = self
            .nl
            .get(Rt::GetLink(msg), Op::new("RTM_GETLINK", &ctx))?;
        only_link(reply)
    }

    pub fn link_by_index(&mut self, index: u32) -> Result<Option<Link>> {
        let msg = link_msg(index, vec![skip_stats()]);
        let ctx = format!("link #{index}");
        let reply = self
            .nl
            .get(Rt::GetLink(msg), Op::new("RTM_GETLINK", &ctx))?;
        only_link(reply)
    }

    pub fn links(&mut self) -> Result<Vec<Link>> {
        let msg = link_msg(0, vec![skip_stats()]);
        let replies = self
            .nl
            .dump(Rt::GetLink(msg), Op::new("RTM_GETLINK", "dump"))?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                Rt::NewLink(m) => Some(Link::from_message(m)),
                _ => None,
            })
            .collect())
    }

    /// Makes sure a bridge `name` exists and is up. An existing bridge is kept as it is
    /// (MTU and MAC included); an existing non-bridge is `Error::WrongKind`. Safe against a
    /// concurrent creator: losing the race reads the winner's bridge.
    ///
    /// Give a `mac` when the bridge holds a gateway address: a bridge without an explicit
    /// MAC takes its lowest port's, and changes it when that port leaves, which strands every
    /// neighbour cache pointing at the old one.
    pub fn create_bridge(
        &mut self,
        name: &str,
        mtu: Option<u32>,
        mac: Option<[u8; 6]>,
    ) -> Result<Link> {
        self.create_bridge_with(name, mtu, mac, |_| Ok(()))
    }

    /// [`Handle::create_bridge`], running `before_up` on the bridge while it is still down
    /// whenever this call is the one to bring it up (it made it, or found it down): the
    /// moment for settings that only take effect when a link comes up, such as
    /// `accept_dad`, which decides whether its IPv6 link-local address starts out tentative.
    /// `before_up` runs in the caller's namespace, which need not be this handle's.
    pub fn create_bridge_with(
        &mut self,
        name: &str,
        mtu: Option<u32>,
        mac: Option<[u8; 6]>,
        before_up: impl FnOnce(&Link) -> Result<()>,
    ) -> Result<Link> {
        if let Some(link) = self.link_by_name(name)? {
            return self.existing_bridge(link, before_up);
        }
        let mut attrs = vec![
            LinkAttribute::IfName(name.to_owned()),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]),
        ];
        if let Some(mtu) = mtu {
            attrs.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = mac {
            attrs.push(LinkAttribute::Address(mac.to_vec()));
        }
        // Made down: `before_up` gets its chance before the link comes up.
        let msg = link_msg(0, attrs);
        let ctx = format!("bridge {name}");
        let created = self.nl.ack(
            Rt::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
            Op::new("RTM_NEWLINK", &ctx),
        );
        match created {
            Ok(()) | Err(Error::Exists { .. }) => {}
            Err(e) => return Err(e),
        }
        match self.link_by_name(name)? {
            Some(link) => self.existing_bridge(link, before_up),
            None => Err(Error::NotFound {
                what: format!("bridge {name} (vanished right after creation)"),
            }),
        }
    }

    fn existing_bridge(
        &mut self,
        mut link: Link,
        before_up: impl FnOnce(&Link) -> Result<()>,
    ) -> Result<Link> {
        if link.kind.as_deref() != Some("bridge") {
            return Err(Error::WrongKind {
                name: link.name,
                expected: "bridge",
                found: link
                    .kind
                    .unwrap_or_else(|| "a device without kind".to_owned()),
            });
        }
        if !link.up {
            before_up(&link)?;
            self.set_up(link.index)?;
            link.up = true;
        }
        Ok(link)
    }

    /// Creates a veth pair in one request (plus one to set the alias, if any).
    /// `Error::Exists` when either name is taken in its namespace.
    pub fn create_veth(&mut self, spec: &VethSpec<'_>) -> Result<()> {
        self.create_veth_with(spec, VethOptions::default())
            .map(|_| ())
    }

    /// [`Handle::create_veth`], also enslaving and raising the host end as `opts` says, in
    /// the same RTM_NEWLINK. Returns the host end as the kernel echoes it (NLM_F_ECHO, Linux
    /// 6.1+; `None` from older kernels), alias included, so the caller needs no lookup: its
    /// `peer_index` is the pod end's index in `peer_ns`.
    pub fn create_veth_with(
        &mut self,
        spec: &VethSpec<'_>,
        opts: VethOptions,
    ) -> Result<Option<Link>> {
        check_ifname(spec.host_name)?;
        check_ifname(spec.peer_name)?;
        let mut peer = vec![
            LinkAttribute::IfName(spec.peer_name.to_owned()),
            LinkAttribute::NetNsFd(spec.peer_ns.fd().as_raw_fd()),
        ];
        if let Some(mtu) = spec.mtu {
            peer.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = spec.peer_mac {
            peer.push(LinkAttribute::Address(mac.to_vec()));
        }
        let mut attrs = vec![LinkAttribute::IfName(spec.host_name.to_owned())];
        if let Some(mtu) = spec.mtu {
            attrs.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(master) = opts.master {
            attrs.push(LinkAttribute::Controller(master));
        }
        let peer_msg = link_msg(0, peer);
        attrs.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        let ctx = format!(
            "veth {} (peer {} in {})",
            spec.host_name,
            spec.peer_name,
            spec.peer_ns.path().display()
        );
        let mut msg = link_msg(0, attrs);
        if opts.up {
            msg.header.flags = LinkFlags::Up;
            msg.header.change_mask = LinkFlags::Up;
        }
        let echoed = self.nl.ack_collect(
            Rt::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO,
            Op::new("RTM_NEWLINK", &ctx),
        )?;
        // Several notifications may come back (creation, then the flag and master changes);
        // the last one of the host end is its state when the request finished.
        let mut host = echoed
            .into_iter()
            .filter_map(|m| match m {
                Rt::NewLink(m) => Some(Link::from_message(m)),
                _ => None,
            })
            .rfind(|l| l.name == spec.host_name);
        // The kernel enslaves after its last echo; the request succeeding says it happened.
        if let (Some(h), Some(m)) = (host.as_mut(), opts.master) {
            h.master = Some(m);
        }
        if let Some(alias) = spec.host_alias {
            // The kernel ignores IFLA_IFALIAS when creating a link, so it takes a second
            // request (addressed by name: we do not know the new index). A pair without
            // its alias would be invisible to GC, so failing here undoes the pair.
            let msg = link_msg(
                0,
                vec![
                    LinkAttribute::IfName(spec.host_name.to_owned()),
                    LinkAttribute::IfAlias(alias.to_owned()),
                ],
            );
            let ctx = format!("veth {} alias {alias:?}", spec.host_name);
            if let Err(e) = self
                .nl
                .ack(Rt::SetLink(msg), 0, Op::new("RTM_SETLINK", &ctx))
            {
                let _ = self.delete_link_by_name(spec.host_name);
                return Err(e);
            }
            if let Some(h) = host.as_mut() {
                h.alias = Some(alias.to_owned());
            }
        }
        Ok(host)
    }

    /// Creates a bridge-mode macvlan on `master_index` (a link of this handle's
    /// namespace), placed directly into `ns` under `name`.
    pub fn create_macvlan(
        &mut self,
        name: &str,
        master_index: u32,
        ns: &NetNs,
        mtu: Option<u32>,
        mac: Option<[u8; 6]>,
    ) -> Result<()> {
        check_ifname(name)?;
        let mut attrs = vec![
            LinkAttribute::IfName(name.to_owned()),
            LinkAttribute::Link(master_index),
            LinkAttribute::NetNsFd(ns.fd().as_raw_fd()),
        ];
        if let Some(mtu) = mtu {
            attrs.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = mac {
            attrs.push(LinkAttribute::Address(mac.to_vec()));
        }
        attrs.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::MacVlan),
            LinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(
                MacVlanMode::Bridge,
            )])),
        ]));
        let ctx = format!(
            "macvlan {name} (on #{master_index}, into {})",
            ns.path().display()
        );
        self.nl.ack(
            Rt::NewLink(link_msg(0, attrs)),
            NLM_F_CREATE | NLM_F_EXCL,
            Op::new("RTM_NEWLINK", &ctx),
        )
    }

    fn set_link(&mut self, msg: LinkMessage, what: &str) -> Result<()> {
        let ctx = format!("link #{} {what}", msg.header.index);
        self.nl
            .ack(Rt::SetLink(msg), 0, Op::new("RTM_SETLINK", &ctx))
    }

    pub fn set_up(&mut self, index: u32) -> Result<()> {
        let mut msg = link_msg(index, vec![]);
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        self.set_link(msg, "up")
    }

    pub fn set_down(&mut self, index: u32) -> Result<()> {
        let mut msg = link_msg(index, vec![]);
        msg.header.change_mask = LinkFlags::Up;
        self.set_link(msg, "down")
    }

    /// Enslaves `index` to the bridge `master_index`; 0 releases it.
    pub fn set_master(&mut self, index: u32, master_index: u32) -> Result<()> {
        let msg = link_msg(index, vec![LinkAttribute::Controller(master_index)]);
        self.set_link(msg, &format!("master #{master_index}"))
    }

    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> Result<()> {
        let msg = link_msg(index, vec![LinkAttribute::Mtu(mtu)]);
        self.set_link(msg, &format!("mtu {mtu}"))
    }

    pub fn set_mac(&mut self, index: u32, mac: [u8; 6]) -> Result<()> {
        let msg = link_msg(index, vec![LinkAttribute::Address(mac.to_vec())]);
        self.set_link(msg, &format!("address {}", crate::mac::format_mac(mac)))
    }

    pub fn set_alias(&mut self, index: u32, alias: &str) -> Result<()> {
        let msg = link_msg(index, vec![LinkAttribute::IfAlias(alias.to_owned())]);
        self.set_link(msg, &format!("alias {alias:?}"))
    }

    /// Sets the hairpin flag of a bridge port (the link must be enslaved to a bridge).
    pub fn set_hairpin(&mut self, index: u32, on: bool) -> Result<()> {
        let mut msg = link_msg(
            index,
            vec![LinkAttribute::ProtoInfoBridge(vec![
                LinkProtoInfoBridge::Other(DefaultNla::new(IFLA_BRPORT_MODE, vec![u8::from(on)])),
            ])],
        );
        // AF_BRIDGE routes the request to the bridge driver's port settings.
        msg.header.interface_family = AddressFamily::Bridge;
        self.set_link(msg, &format!("hairpin {}", if on { "on" } else { "off" }))
    }

    /// Deletes a link (a veth takes its peer with it). `Error::NotFound` if absent.
    pub fn delete_link(&mut self, index: u32) -> Result<()> {
        let ctx = format!("link #{index}");
        self.nl.ack(
            Rt::DelLink(link_msg(index, vec![])),
            0,
            Op::new("RTM_DELLINK", &ctx),
        )
    }

    /// Deletes a link by name in one request; `Ok(false)` when there was none.
    pub fn delete_link_by_name(&mut self, name: &str) -> Result<bool> {
        check_ifname(name)?;
        let ctx = format!("link {name}");
        let msg = link_msg(0, vec![LinkAttribute::IfName(name.to_owned())]);
        match self
            .nl
            .ack(Rt::DelLink(msg), 0, Op::new("RTM_DELLINK", &ctx))
        {
            Ok(()) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }
}
