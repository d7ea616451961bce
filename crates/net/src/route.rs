//! Routes (RTM_NEWROUTE / RTM_DELROUTE / RTM_GETROUTE), unicast only.
//!
//! A route may carry an `rtm_protocol` number naming who installed it. An agent that
//! tags its routes with its own number can dump exactly those (the kernel filters on it
//! with strict checking) and delete them without touching anyone else's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage as Rt;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteMetric,
    RouteProtocol, RouteScope, RouteType,
};

use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::socket::netlink::Op;

pub const RT_SCOPE_UNIVERSE: u8 = 0;
pub const RT_SCOPE_LINK: u8 = 253;
pub const RT_SCOPE_HOST: u8 = 254;
pub const RT_TABLE_MAIN: u32 = 254;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    pub gateway: Option<IpAddr>,
    /// Output interface index.
    pub oif: Option<u32>,
    /// RT_SCOPE_*: 0 universe (via a gateway), 253 link (directly attached), 254 host.
    pub scope: u8,
    /// Use the gateway even though no address on `oif` covers it (ptp mode's
    /// `default via 169.254.1.1 dev eth0 onlink`).
    pub onlink: bool,
    /// `None` = main table.
    pub table: Option<u32>,
    pub metric: Option<u32>,
    pub mtu: Option<u32>,
    /// Preferred source address (RTA_PREFSRC).
    pub src: Option<IpAddr>,
    /// `rtm_protocol`: who installed the route. `None` writes `boot` (what `ip route`
    /// uses), and on delete matches any protocol; `Some(p)` writes `p` and deletes only
    /// a route carrying `p`. Routes read from the kernel always have it set.
    pub protocol: Option<u8>,
}

impl Route {
    /// A main-table, universe-scope route to `dst` with nothing else set.
    pub fn new(dst: IpNet) -> Route {
        Route {
            dst,
            gateway: None,
            oif: None,
            scope: RT_SCOPE_UNIVERSE,
            onlink: false,
            table: None,
            metric: None,
            mtu: None,
            src: None,
            protocol: None,
        }
    }

    pub fn via(mut self, gateway: IpAddr) -> Route {
        self.gateway = Some(gateway);
        self
    }

    pub fn dev(mut self, oif: u32) -> Route {
        self.oif = Some(oif);
        self
    }

    pub fn scope(mut self, scope: u8) -> Route {
        self.scope = scope;
        self
    }

    pub fn onlink(mut self) -> Route {
        self.onlink = true;
        self
    }

    pub fn protocol(mut self, protocol: u8) -> Route {
        self.protocol = Some(protocol);
        self
    }

    pub fn metric(mut self, metric: u32) -> Route {
        self.metric = Some(metric);
        self
    }

    fn is_v6(&self) -> bool {
        matches!(self.dst, IpNet::V6(_))
    }

    fn to_message(&self, deleting: bool) -> Result<RouteMessage> {
        if let Some(gw) = self.gateway
            && gw.is_ipv6() != self.is_v6()
        {
            return Err(Error::Invalid(format!(
                "route {}: gateway {gw} is of another address family",
                self.dst
            )));
        }
        if let Some(src) = self.src
            && src.is_ipv6() != self.is_v6()
        {
            return Err(Error::Invalid(format!(
                "route {}: source {src} is of another address family",
                self.dst
            )));
        }
        let table = self.table.unwrap_or(RT_TABLE_MAIN);
        let mut msg = RouteMessage::default();
        msg.header.address_family = if self.is_v6() {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        msg.header.destination_prefix_length = self.dst.prefix_len();
        // Tables above 255 only fit in RTA_TABLE; the header then says "unspec".
        msg.header.table = u8::try_from(table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
        msg.header.kind = RouteType::Unicast;
        if deleting {
            // "Nowhere" and "unspec" are wildcards: delete matches whatever scope and
            // protocol the route was added with, as `ip route del` does.
            msg.header.scope = RouteScope::NoWhere;
            msg.header.protocol = self
                .protocol
                .map_or(RouteProtocol::Unspec, RouteProtocol::from);
        } else {
            msg.header.scope = RouteScope::from(self.scope);
            msg.header.protocol = self
                .protocol
                .map_or(RouteProtocol::Boot, RouteProtocol::from);
        }
        if self.onlink {
            msg.header.flags = RouteFlags::Onlink;
        }
        let attrs = &mut msg.attributes;
        attrs.push(RouteAttribute::Table(table));
        if self.dst.prefix_len() > 0 {
            attrs.push(RouteAttribute::Destination(route_addr(self.dst.network())));
        }
        if let Some(gw) = self.gateway {
            attrs.push(RouteAttribute::Gateway(route_addr(gw)));
        }
        if let Some(oif) = self.oif {
            attrs.push(RouteAttribute::Oif(oif));
        }
        if let Some(metric) = self.metric {
            attrs.push(RouteAttribute::Priority(metric));
        }
        if let Some(src) = self.src {
            attrs.push(RouteAttribute::PrefSource(route_addr(src)));
        }
        if let Some(mtu) = self.mtu
            && !deleting
        {
            attrs.push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(mtu)]));
        }
        Ok(msg)
    }

    fn from_message(msg: RouteMessage) -> Option<Route> {
        let v6 = msg.header.address_family == AddressFamily::Inet6;
        let mut dst: Option<IpAddr> = None;
        let mut route = Route::new(default_net(v6));
        route.scope = msg.header.scope.into();
        route.onlink = msg.header.flags.contains(RouteFlags::Onlink);
        route.protocol = Some(msg.header.protocol.into());
        let mut table = u32::from(msg.header.table);
        for attr in msg.attributes {
            match attr {
                RouteAttribute::Destination(a) => dst = ip_of(a),
                RouteAttribute::Gateway(a) => route.gateway = ip_of(a),
                RouteAttribute::Oif(i) => route.oif = Some(i),
                RouteAttribute::Priority(p) => route.metric = Some(p),
                RouteAttribute::PrefSource(a) => route.src = ip_of(a),
                RouteAttribute::Table(t) => table = t,
                RouteAttribute::Metrics(metrics) => {
                    for m in metrics {
                        if let RouteMetric::Mtu(mtu) = m {
                            route.mtu = Some(mtu);
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(dst) = dst {
            route.dst = IpNet::new(dst, msg.header.destination_prefix_length).ok()?;
        }
        route.table = Some(table);
        Some(route)
    }
}

fn default_net(v6: bool) -> IpNet {
    if v6 {
        IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::UNSPECIFIED, 0))
    } else {
        IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::UNSPECIFIED, 0))
    }
}

fn route_addr(ip: IpAddr) -> RouteAddress {
    match ip {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    }
}

fn ip_of(a: RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(a) => Some(IpAddr::V4(a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(a)),
        _ => None,
    }
}

fn describe(r: &Route) -> String {
    let mut s = r.dst.to_string();
    if let Some(gw) = r.gateway {
        s.push_str(&format!(" via {gw}"));
    }
    if let Some(oif) = r.oif {
        s.push_str(&format!(" dev #{oif}"));
    }
    if let Some(t) = r.table {
        s.push_str(&format!(" table {t}"));
    }
    if let Some(p) = r.protocol {
        s.push_str(&format!(" proto {p}"));
    }
    s
}

impl Handle {
    /// Adds a route; `Error::Exists` if an identical one is there.
    pub fn route_add(&mut self, r: &Route) -> Result<()> {
        let ctx = describe(r);
        self.nl.ack(
            Rt::NewRoute(r.to_message(false)?),
            NLM_F_CREATE | NLM_F_EXCL,
            Op::new("RTM_NEWROUTE", &ctx),
        )
    }

    /// Adds the route or replaces the one with the same destination, table and metric.
    pub fn route_replace(&mut self, r: &Route) -> Result<()> {
        let ctx = describe(r);
        self.nl.ack(
            Rt::NewRoute(r.to_message(false)?),
            NLM_F_CREATE | NLM_F_REPLACE,
            Op::new("RTM_NEWROUTE replace", &ctx),
        )
    }

    /// Deletes the route matching `r`'s destination, table and any of gateway, oif,
    /// metric given. `Error::NotFound` if none matches.
    pub fn route_del(&mut self, r: &Route) -> Result<()> {
        let ctx = describe(r);
        self.nl.ack(
            Rt::DelRoute(r.to_message(true)?),
            0,
            Op::new("RTM_DELROUTE", &ctx).gone(&[libc::ESRCH, libc::ENOENT]),
        )
    }

    /// The unicast routes of the main table for one address family.
    pub fn routes(&mut self, v6: bool) -> Result<Vec<Route>> {
        self.dump_routes(v6, None)
    }

    /// The unicast routes of the main table for one address family that carry
    /// `rtm_protocol` `protocol` — an agent's own routes, filtered by the kernel.
    pub fn routes_by_protocol(&mut self, v6: bool, protocol: u8) -> Result<Vec<Route>> {
        self.dump_routes(v6, Some(protocol))
    }

    /// The route the kernel would use to reach `dst`: the FIB entry itself (its prefix,
    /// gateway, device, table and protocol), as `ip route get fibmatch` shows it, not a
    /// per-address result. `Ok(None)` when no route covers `dst`. One request and no dump,
    /// so it is cheap to poll while waiting for one route among thousands to appear.
    pub fn route_lookup(&mut self, dst: IpAddr) -> Result<Option<Route>> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = if dst.is_ipv6() {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        msg.header.destination_prefix_length = if dst.is_ipv6() { 128 } else { 32 };
        msg.header.flags = RouteFlags::FibMatch;
        msg.attributes
            .push(RouteAttribute::Destination(route_addr(dst)));
        let ctx = format!("fibmatch {dst}");
        let op = Op::new("RTM_GETROUTE", &ctx).gone(&[libc::ENETUNREACH, libc::EHOSTUNREACH]);
        Ok(match self.nl.get(Rt::GetRoute(msg), op)? {
            Some(Rt::NewRoute(m)) => Route::from_message(m),
            _ => None,
        })
    }

    fn dump_routes(&mut self, v6: bool, protocol: Option<u8>) -> Result<Vec<Route>> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = if v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        // Strict checking turns these header fields into kernel-side filters.
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.kind = RouteType::Unicast;
        if let Some(p) = protocol {
            msg.header.protocol = RouteProtocol::from(p);
        }
        let ctx = match protocol {
            Some(p) => format!("dump main protocol {p}"),
            None => "dump main".to_owned(),
        };
        let replies = self
            .nl
            .dump(Rt::GetRoute(msg), Op::new("RTM_GETROUTE", &ctx))?;
        Ok(replies
            .into_iter()
            .filter_map(|m| match m {
                Rt::NewRoute(m) if m.header.kind == RouteType::Unicast => Route::from_message(m),
                _ => None,
            })
            .filter(|r| r.table == Some(RT_TABLE_MAIN))
            .filter(|r| protocol.is_none() || r.protocol == protocol)
            .collect())
    }
}
