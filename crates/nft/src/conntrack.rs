//! Conntrack entries over ctnetlink (netfilter netlink, subsystem `CTNETLINK`): dump the
//! table of one network namespace, delete single entries and change their mark — what
//! `conntrack -L` / `-D` / `-U --mark` do, without the `conntrack` binary.
//!
//! It speaks through the crate's one netfilter socket and the message/attribute code the
//! nf_tables batches use (module `nl`); this module only adds conntrack's attribute numbers
//! (`linux/netfilter/nfnetlink_conntrack.h`) and the shape of an entry. The socket belongs
//! to the namespace it was created in: make the [`Conntrack`] on a thread inside the
//! namespace (`weft_net::NetNs::run`) or from a process already there.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use nix::errno::Errno;

use crate::Error;
use crate::nl::{Attrs, Op, Socket, parse_attrs};

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_MARK: u16 = 8;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;
const CTA_MARK_MASK: u16 = 21;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

/// One direction of a connection as conntrack keys it. Ports are 0 for protocols without
/// them (ICMP keeps its id/type/code elsewhere; those entries can be listed, not deleted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    pub sport: u16,
    pub dport: u16,
}

/// A conntrack entry: the original direction (as the first packet had it, before NAT) and
/// the reply direction (after NAT: its `src` is where the connection really goes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CtEntry {
    pub orig: Tuple,
    pub reply: Tuple,
    pub zone: u16,
    /// The connection's mark (`ct mark`).
    pub mark: u32,
    /// The kernel's id of the entry: a delete carrying it removes this entry only, not a
    /// newer one that took the same tuple meanwhile.
    pub id: Option<u32>,
}

/// Protocols whose tuple is addresses and two ports (TCP, UDP, DCCP, SCTP, UDP-Lite).
pub fn has_ports(protocol: u8) -> bool {
    matches!(protocol, 6 | 17 | 33 | 132 | 136)
}

/// A ctnetlink socket in the namespace it was created in.
pub struct Conntrack {
    sock: Socket,
}

impl Conntrack {
    /// A socket in the calling thread's network namespace.
    pub fn new() -> Result<Conntrack, Error> {
        Ok(Conntrack {
            sock: Socket::open()?,
        })
    }

    /// Every entry of the namespace's table (IPv4 and IPv6).
    pub fn dump(&mut self) -> Result<Vec<CtEntry>, Error> {
        let mut out = Vec::new();
        self.sock.dump_family(
            Op::CtGet,
            libc::AF_UNSPEC as u8,
            "dump of the table",
            |_| {},
            |msg| {
                out.extend(parse_entry(msg)?);
                Ok(())
            },
        )?;
        Ok(out)
    }

    /// Deletes this entry (the one with its id, when it has one). `Ok(false)`: it was gone
    /// already (expired, or deleted by someone else).
    pub fn delete(&mut self, e: &CtEntry) -> Result<bool, Error> {
        let (family, what) = checked(e)?;
        let done = self.sock.request(Op::CtDelete, family, &what, |a| {
            a.nest(CTA_TUPLE_ORIG, |o| tuple(o, &e.orig));
            if e.zone != 0 {
                a.bytes(CTA_ZONE, &e.zone.to_be_bytes());
            }
            if let Some(id) = e.id {
                a.be32(CTA_ID, id);
            }
        });
        gone_is_false(done)
    }

    /// Sets the bits `mask` of this entry's mark to those of `mark`, leaving the others as
    /// they are. `Ok(false)`: the entry was gone already.
    pub fn set_mark(&mut self, e: &CtEntry, mark: u32, mask: u32) -> Result<bool, Error> {
        let (family, what) = checked(e)?;
        let done = self.sock.request(Op::CtUpdate, family, &what, |a| {
            a.nest(CTA_TUPLE_ORIG, |o| tuple(o, &e.orig));
            if e.zone != 0 {
                a.bytes(CTA_ZONE, &e.zone.to_be_bytes());
            }
            // The kernel computes (old & !mask) ^ mark: the new bits must lie within mask.
            a.be32(CTA_MARK, mark & mask).be32(CTA_MARK_MASK, mask);
        });
        gone_is_false(done)
    }
}

/// The family of an entry that can be addressed by its tuple, and how messages name it.
fn checked(e: &CtEntry) -> Result<(u8, String), Error> {
    let t = &e.orig;
    let what = format!(
        "{} {}:{} → {}:{}",
        t.protocol, t.src, t.sport, t.dst, t.dport
    );
    let refuse = |reason| Error::InvalidConntrackEntry {
        entry: what.clone(),
        reason,
    };
    if !has_ports(t.protocol) {
        return Err(refuse("only entries of port-carrying protocols"));
    }
    let family = match (t.src, t.dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => libc::AF_INET,
        (IpAddr::V6(_), IpAddr::V6(_)) => libc::AF_INET6,
        _ => return Err(refuse("mixed families")),
    } as u8;
    Ok((family, what))
}

/// A request on one entry: `Ok(false)` when the kernel no longer has it.
fn gone_is_false(done: Result<(), Error>) -> Result<bool, Error> {
    match done {
        Ok(()) => Ok(true),
        Err(err) if err.errno() == Some(Errno::ENOENT) => Ok(false),
        Err(err) => Err(err),
    }
}

/// A tuple's attributes (addresses of one family: the caller checked).
fn tuple(a: &mut Attrs<'_>, t: &Tuple) {
    a.nest(CTA_TUPLE_IP, |ip| match (t.src, t.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            ip.bytes(CTA_IP_V4_SRC, &s.octets())
                .bytes(CTA_IP_V4_DST, &d.octets());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            ip.bytes(CTA_IP_V6_SRC, &s.octets())
                .bytes(CTA_IP_V6_DST, &d.octets());
        }
        _ => {}
    });
    a.nest(CTA_TUPLE_PROTO, |p| {
        p.bytes(CTA_PROTO_NUM, &[t.protocol])
            .bytes(CTA_PROTO_SRC_PORT, &t.sport.to_be_bytes())
            .bytes(CTA_PROTO_DST_PORT, &t.dport.to_be_bytes());
    });
}

/// The first two bytes of an attribute, big-endian (ports, zone).
fn be16(data: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(data.get(..2)?.try_into().ok()?))
}

/// The first four bytes of an attribute, big-endian (id, mark).
fn be32(data: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(data.get(..4)?.try_into().ok()?))
}

/// One dumped entry; `None` when it lacks a tuple of either direction.
fn parse_entry(msg: &[u8]) -> Result<Option<CtEntry>, Error> {
    let (mut orig, mut reply, mut zone, mut id, mut mark) = (None, None, 0u16, None, 0u32);
    for a in parse_attrs(msg)? {
        match a.ty {
            CTA_TUPLE_ORIG => orig = parse_tuple(a.data)?,
            CTA_TUPLE_REPLY => reply = parse_tuple(a.data)?,
            CTA_ZONE => zone = be16(a.data).unwrap_or(zone),
            CTA_ID => id = be32(a.data).or(id),
            CTA_MARK => mark = be32(a.data).unwrap_or(mark),
            _ => {}
        }
    }
    Ok(match (orig, reply) {
        (Some(orig), Some(reply)) => Some(CtEntry {
            orig,
            reply,
            zone,
            mark,
            id,
        }),
        _ => None,
    })
}

/// A tuple; `None` when it lacks an address or the protocol.
fn parse_tuple(b: &[u8]) -> Result<Option<Tuple>, Error> {
    let (mut src, mut dst, mut protocol, mut sport, mut dport) = (None, None, None, 0, 0);
    for a in parse_attrs(b)? {
        match a.ty {
            CTA_TUPLE_IP => {
                for ip in parse_attrs(a.data)? {
                    let addr = if let Ok(b) = <[u8; 4]>::try_from(ip.data) {
                        IpAddr::V4(Ipv4Addr::from(b))
                    } else if let Ok(b) = <[u8; 16]>::try_from(ip.data) {
                        IpAddr::V6(Ipv6Addr::from(b))
                    } else {
                        continue;
                    };
                    match ip.ty {
                        CTA_IP_V4_SRC | CTA_IP_V6_SRC => src = Some(addr),
                        CTA_IP_V4_DST | CTA_IP_V6_DST => dst = Some(addr),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for p in parse_attrs(a.data)? {
                    match p.ty {
                        CTA_PROTO_NUM => protocol = p.data.first().copied(),
                        CTA_PROTO_SRC_PORT => sport = be16(p.data).unwrap_or(sport),
                        CTA_PROTO_DST_PORT => dport = be16(p.data).unwrap_or(dport),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(match (src, dst, protocol) {
        (Some(src), Some(dst), Some(protocol)) => Some(Tuple {
            src,
            dst,
            protocol,
            sport,
            dport,
        }),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn tuples_encode_and_parse_back() {
        let t = Tuple {
            src: ip("fd00::1"),
            dst: ip("fd00::2"),
            protocol: 17,
            sport: 4000,
            dport: 53,
        };
        let r = Tuple {
            src: t.dst,
            dst: t.src,
            sport: t.dport,
            dport: t.sport,
            ..t
        };
        let mut body = Vec::new();
        Attrs::on(&mut body)
            .nest(CTA_TUPLE_ORIG, |a| tuple(a, &t))
            .nest(CTA_TUPLE_REPLY, |a| tuple(a, &r))
            .be32(CTA_ID, 7)
            .be32(CTA_MARK, 0x0020_0001)
            .bytes(CTA_ZONE, &3u16.to_be_bytes());
        let e = parse_entry(&body).unwrap().unwrap();
        assert_eq!(e.orig.src, ip("fd00::1"));
        assert_eq!(
            (e.orig.protocol, e.orig.sport, e.orig.dport),
            (17, 4000, 53)
        );
        assert_eq!(e.reply, r);
        assert_eq!(e.id, Some(7));
        assert_eq!(e.zone, 3);
        assert_eq!(e.mark, 0x0020_0001);
        // A tuple without addresses is no entry.
        assert!(parse_entry(&[]).unwrap().is_none());
        let mut orig_only = Vec::new();
        Attrs::on(&mut orig_only).nest(CTA_TUPLE_ORIG, |a| tuple(a, &t));
        assert!(parse_entry(&orig_only).unwrap().is_none());
        // A reply that does not parse is an error, not a silently shorter table.
        assert!(parse_entry(&[9, 0, 1, 0]).is_err());
    }

    #[test]
    #[cfg(target_endian = "little")]
    fn a_delete_is_the_tuple_the_kernel_keys_on() {
        // Byte for byte what the hand-built encoder before it sent (lengths and types in host
        // order, as netlink has them; this is a little-endian layout).
        let t = Tuple {
            src: ip("10.0.0.1"),
            dst: ip("10.0.0.2"),
            protocol: 6,
            sport: 40000,
            dport: 80,
        };
        let mut body = Vec::new();
        Attrs::on(&mut body).nest(CTA_TUPLE_ORIG, |a| tuple(a, &t));
        #[rustfmt::skip]
        let want: Vec<u8> = [
            &[52, 0, 0x01, 0x80][..],                  // CTA_TUPLE_ORIG | NESTED
            &[20, 0, 0x01, 0x80],                      //   CTA_TUPLE_IP | NESTED
            &[8, 0, 1, 0, 10, 0, 0, 1],                //     CTA_IP_V4_SRC
            &[8, 0, 2, 0, 10, 0, 0, 2],                //     CTA_IP_V4_DST
            &[28, 0, 0x02, 0x80],                      //   CTA_TUPLE_PROTO | NESTED
            &[5, 0, 1, 0, 6, 0, 0, 0],                 //     CTA_PROTO_NUM, padded
            &[6, 0, 2, 0, 0x9c, 0x40, 0, 0],           //     CTA_PROTO_SRC_PORT 40000
            &[6, 0, 3, 0, 0, 80, 0, 0],                //     CTA_PROTO_DST_PORT 80
        ]
        .concat();
        assert_eq!(body, want);
    }
}
