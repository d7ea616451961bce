//! ICMP echo probes from raw sockets (root; unprivileged ping sockets are off by default):
//! one echo request with an identifier and sequence number of its own, and a wait for the
//! matching echo reply from the destination — the request and its reply, as conntrack sees
//! them. The destination's kernel answers; nothing listens.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::sctp::{bind, set_recv_timeout, sockaddr};

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        let w = u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]);
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends an echo request to `dst` (from `src` when given) and waits for its reply.
pub fn ping(
    src: Option<IpAddr>,
    dst: IpAddr,
    id: u16,
    seq: u16,
    timeout: Duration,
) -> Result<bool, String> {
    let v6 = dst.is_ipv6();
    let (family, proto) = if v6 {
        (libc::AF_INET6, libc::IPPROTO_ICMPV6)
    } else {
        (libc::AF_INET, libc::IPPROTO_ICMP)
    };
    // SAFETY: plain socket(2); the descriptor is owned from here on.
    let fd = unsafe { libc::socket(family, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(format!("raw ICMP socket: {}", io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if let Some(src) = src {
        bind(&fd, SocketAddr::new(src, 0)).map_err(|e| format!("bind {src}: {e}"))?;
    }
    // Echo request: type, code, checksum, identifier, sequence, payload. The kernel fills in
    // the ICMPv6 checksum (it needs the pseudo-header); ICMPv4's is ours.
    let mut pkt = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
    pkt.extend(id.to_be_bytes());
    pkt.extend(seq.to_be_bytes());
    pkt.extend(b"weft-truth");
    if !v6 {
        let c = checksum(&pkt);
        pkt[2..4].copy_from_slice(&c.to_be_bytes());
    }
    let (ss, len) = sockaddr(SocketAddr::new(dst, 0));
    // SAFETY: a valid descriptor, the packet's buffer and length, a socket address and its
    // length.
    let r = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            pkt.as_ptr().cast(),
            pkt.len(),
            0,
            (&ss as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EPERM) {
            return Ok(false);
        }
        return Err(format!("sendto: {e}"));
    }
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        set_recv_timeout(&fd, left.max(Duration::from_millis(1)))
            .map_err(|e| format!("SO_RCVTIMEO: {e}"))?;
        let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut flen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: a valid descriptor, a buffer of the length given, an address buffer of the
        // length given.
        let n = unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut from as *mut libc::sockaddr_storage).cast(),
                &mut flen,
            )
        };
        let Ok(n) = usize::try_from(n) else {
            continue;
        };
        let pkt = &buf[..n];
        // IPv4 raw sockets deliver the IP header too; its source is the replier.
        let (icmp, replier) = if v6 {
            // SAFETY: the kernel wrote a sockaddr_in6 for an AF_INET6 socket.
            let sa =
                unsafe { &*(&from as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            (pkt, IpAddr::from(sa.sin6_addr.s6_addr))
        } else {
            let ihl = usize::from(pkt.first().copied().unwrap_or(0) & 0x0f) * 4;
            let Some(src) = pkt.get(12..16) else { continue };
            let src = IpAddr::from([src[0], src[1], src[2], src[3]]);
            (pkt.get(ihl..).unwrap_or_default(), src)
        };
        let reply_type = if v6 { 129 } else { 0 };
        if icmp.len() >= 8
            && icmp[0] == reply_type
            && icmp[4..6] == id.to_be_bytes()
            && icmp[6..8] == seq.to_be_bytes()
            && replier == dst
        {
            return Ok(true);
        }
    }
}
