//! Conntrack entries over ctnetlink (`NETLINK_NETFILTER`, subsystem `CTNETLINK`): dump the
//! table of one network namespace and delete single entries — what `conntrack -L` / `-D`
//! do, without the `conntrack` binary.
//!
//! The socket belongs to the namespace it was created in: make the [`Conntrack`] on a
//! thread inside the namespace (`weft_net::NetNs::run`) or from a process already there.
//! The wire format is small and stable (`linux/netfilter/nfnetlink_conntrack.h`), so it is
//! encoded here by hand rather than through another netlink crate.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::errno::Errno;

use crate::Error;

type Result<T> = std::result::Result<T, Error>;

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

const HDR: usize = 16;
const NFGEN: usize = 4;

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
    fd: OwnedFd,
    seq: u32,
}

impl Conntrack {
    /// A socket in the calling thread's network namespace.
    pub fn new() -> Result<Conntrack> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(Error::Io(io::Error::last_os_error()));
        }
        // SAFETY: fd is a fresh, valid descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: a zeroed sockaddr_nl is valid (family set below, pid 0: the kernel picks).
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: sa is a valid sockaddr_nl of the size passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(Error::Io(io::Error::last_os_error()));
        }
        Ok(Conntrack { fd, seq: 1 })
    }

    /// Every entry of the namespace's table (IPv4 and IPv6).
    pub fn dump(&mut self) -> Result<Vec<CtEntry>> {
        let seq = self.send(
            IPCTNL_MSG_CT_GET,
            NLM_F_REQUEST | NLM_F_DUMP,
            libc::AF_UNSPEC as u8,
            &[],
            "dump",
        )?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = self.recv(&mut buf, "dump")?;
            let mut off = 0;
            while off + HDR <= n {
                let (len, ty, mseq) = header(&buf[off..n]);
                if len < HDR || off + len > n {
                    return Err(Error::protocol("ctnetlink dump: truncated message"));
                }
                let msg = &buf[off..off + len];
                off += align(len);
                if mseq != seq {
                    continue;
                }
                match ty {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let errno = error_code(msg)?;
                        if errno != 0 {
                            return Err(Error::Conntrack {
                                op: "CT_GET",
                                errno: Errno::from_raw(errno),
                                context: "dump of the table".into(),
                            });
                        }
                    }
                    _ if msg.len() >= HDR + NFGEN => {
                        if let Some(e) = parse_entry(&msg[HDR + NFGEN..]) {
                            out.push(e);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Deletes this entry (the one with its id, when it has one). `Ok(false)`: it was gone
    /// already (expired, or deleted by someone else).
    pub fn delete(&mut self, e: &CtEntry) -> Result<bool> {
        let t = &e.orig;
        let what = format!(
            "{} {}:{} → {}:{}",
            t.protocol, t.src, t.sport, t.dst, t.dport
        );
        if !has_ports(t.protocol) {
            return Err(Error::InvalidConntrackEntry {
                entry: what,
                reason: "only entries of port-carrying protocols",
            });
        }
        let family = match t.src {
            IpAddr::V4(_) => libc::AF_INET,
            IpAddr::V6(_) => libc::AF_INET6,
        } as u8;
        let mut ip = Vec::new();
        match (t.src, t.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                attr(&mut ip, CTA_IP_V4_SRC, &s.octets());
                attr(&mut ip, CTA_IP_V4_DST, &d.octets());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                attr(&mut ip, CTA_IP_V6_SRC, &s.octets());
                attr(&mut ip, CTA_IP_V6_DST, &d.octets());
            }
            _ => {
                return Err(Error::InvalidConntrackEntry {
                    entry: what,
                    reason: "mixed families",
                });
            }
        }
        let mut proto = Vec::new();
        attr(&mut proto, CTA_PROTO_NUM, &[t.protocol]);
        attr(&mut proto, CTA_PROTO_SRC_PORT, &t.sport.to_be_bytes());
        attr(&mut proto, CTA_PROTO_DST_PORT, &t.dport.to_be_bytes());
        let mut tuple = Vec::new();
        attr(&mut tuple, CTA_TUPLE_IP | NLA_F_NESTED, &ip);
        attr(&mut tuple, CTA_TUPLE_PROTO | NLA_F_NESTED, &proto);
        let mut body = Vec::new();
        attr(&mut body, CTA_TUPLE_ORIG | NLA_F_NESTED, &tuple);
        if e.zone != 0 {
            attr(&mut body, CTA_ZONE, &e.zone.to_be_bytes());
        }
        if let Some(id) = e.id {
            attr(&mut body, CTA_ID, &id.to_be_bytes());
        }
        let seq = self.send(
            IPCTNL_MSG_CT_DELETE,
            NLM_F_REQUEST | NLM_F_ACK,
            family,
            &body,
            &what,
        )?;
        let mut buf = vec![0u8; 8192];
        loop {
            let n = self.recv(&mut buf, &what)?;
            let mut off = 0;
            while off + HDR <= n {
                let (len, ty, mseq) = header(&buf[off..n]);
                if len < HDR || off + len > n {
                    return Err(Error::protocol("ctnetlink delete: truncated message"));
                }
                let msg = &buf[off..off + len];
                off += align(len);
                if mseq != seq || ty != NLMSG_ERROR {
                    continue;
                }
                return match error_code(msg)? {
                    0 => Ok(true),
                    libc::ENOENT => Ok(false),
                    errno => Err(Error::Conntrack {
                        op: "CT_DELETE",
                        errno: Errno::from_raw(errno),
                        context: what,
                    }),
                };
            }
        }
    }

    fn send(&mut self, msg: u16, flags: u16, family: u8, body: &[u8], ctx: &str) -> Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let len = HDR + NFGEN + body.len();
        let mut m = Vec::with_capacity(len);
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | msg).to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&self.seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&[family, 0, 0, 0]);
        m.extend_from_slice(body);
        // SAFETY: m is a valid buffer of m.len() bytes; the kernel is the destination (the
        // socket is bound, and sendto to pid 0 is the kernel).
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: as above; sa is a valid sockaddr_nl of the size passed.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                m.as_ptr().cast(),
                m.len(),
                0,
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            let _ = ctx;
            return Err(Error::Io(io::Error::last_os_error()));
        }
        Ok(self.seq)
    }

    fn recv(&mut self, buf: &mut [u8], ctx: &str) -> Result<usize> {
        loop {
            // SAFETY: buf is valid for buf.len() bytes of writing.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                let _ = ctx;
                return Err(Error::Io(e));
            }
        }
    }
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// (length, type, sequence) of the message at the start of `b` (at least HDR bytes).
fn header(b: &[u8]) -> (usize, u16, u32) {
    let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let ty = u16::from_ne_bytes([b[4], b[5]]);
    let seq = u32::from_ne_bytes([b[8], b[9], b[10], b[11]]);
    (len, ty, seq)
}

/// The positive errno of an NLMSG_ERROR message (0: an ACK).
fn error_code(msg: &[u8]) -> Result<i32> {
    let b = msg
        .get(HDR..HDR + 4)
        .ok_or_else(|| Error::protocol("ctnetlink: short error message"))?;
    Ok(-i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

fn attr(out: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(align(out.len()), 0);
}

/// The attributes in `b`: (type without flags, payload).
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        b = &b[align(len).min(b.len())..];
        Some((ty, payload))
    })
}

fn parse_entry(b: &[u8]) -> Option<CtEntry> {
    let (mut orig, mut reply, mut zone, mut id) = (None, None, 0u16, None);
    for (ty, p) in attrs(b) {
        match ty {
            CTA_TUPLE_ORIG => orig = parse_tuple(p),
            CTA_TUPLE_REPLY => reply = parse_tuple(p),
            CTA_ZONE if p.len() >= 2 => zone = u16::from_be_bytes([p[0], p[1]]),
            CTA_ID if p.len() >= 4 => id = Some(u32::from_be_bytes([p[0], p[1], p[2], p[3]])),
            _ => {}
        }
    }
    Some(CtEntry {
        orig: orig?,
        reply: reply?,
        zone,
        id,
    })
}

fn parse_tuple(b: &[u8]) -> Option<Tuple> {
    let (mut src, mut dst, mut protocol, mut sport, mut dport) = (None, None, None, 0, 0);
    for (ty, p) in attrs(b) {
        match ty {
            CTA_TUPLE_IP => {
                for (ty, a) in attrs(p) {
                    let addr = match a.len() {
                        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(a).ok()?)),
                        16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(a).ok()?)),
                        _ => continue,
                    };
                    match ty {
                        CTA_IP_V4_SRC | CTA_IP_V6_SRC => src = Some(addr),
                        CTA_IP_V4_DST | CTA_IP_V6_DST => dst = Some(addr),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (ty, a) in attrs(p) {
                    match ty {
                        CTA_PROTO_NUM => protocol = a.first().copied(),
                        CTA_PROTO_SRC_PORT if a.len() >= 2 => {
                            sport = u16::from_be_bytes([a[0], a[1]])
                        }
                        CTA_PROTO_DST_PORT if a.len() >= 2 => {
                            dport = u16::from_be_bytes([a[0], a[1]])
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(Tuple {
        src: src?,
        dst: dst?,
        protocol: protocol?,
        sport,
        dport,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuples_encode_and_parse_back() {
        let mut ip = Vec::new();
        attr(
            &mut ip,
            CTA_IP_V6_SRC,
            &"fd00::1".parse::<Ipv6Addr>().unwrap().octets(),
        );
        attr(
            &mut ip,
            CTA_IP_V6_DST,
            &"fd00::2".parse::<Ipv6Addr>().unwrap().octets(),
        );
        let mut proto = Vec::new();
        attr(&mut proto, CTA_PROTO_NUM, &[17]);
        attr(&mut proto, CTA_PROTO_SRC_PORT, &4000u16.to_be_bytes());
        attr(&mut proto, CTA_PROTO_DST_PORT, &53u16.to_be_bytes());
        let mut tuple = Vec::new();
        attr(&mut tuple, CTA_TUPLE_IP | NLA_F_NESTED, &ip);
        attr(&mut tuple, CTA_TUPLE_PROTO | NLA_F_NESTED, &proto);
        let mut body = Vec::new();
        attr(&mut body, CTA_TUPLE_ORIG | NLA_F_NESTED, &tuple);
        attr(&mut body, CTA_TUPLE_REPLY | NLA_F_NESTED, &tuple);
        attr(&mut body, CTA_ID, &7u32.to_be_bytes());
        let e = parse_entry(&body).unwrap();
        assert_eq!(e.orig.src, "fd00::1".parse::<IpAddr>().unwrap());
        assert_eq!(
            (e.orig.protocol, e.orig.sport, e.orig.dport),
            (17, 4000, 53)
        );
        assert_eq!(e.id, Some(7));
        // A tuple without addresses is no entry.
        assert!(parse_entry(&[]).is_none());
    }
}
