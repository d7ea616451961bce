//! SCTP probes without an SCTP stack: this kernel has none (`CONFIG_IP_SCTP` is not set),
//! but conntrack and nftables know SCTP, so a policy's SCTP rules still decide what passes.
//! A probe sends one well-formed INIT (vtag 0, CRC32c) from a raw socket in the source
//! namespace; a raw SCTP socket in every destination namespace records the initiate tag of
//! each INIT that arrives. Allowed = the probe's tag arrived within the timeout. One way
//! only: nothing answers an INIT here, so SCTP replies are not checked (TCP and UDP are).

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

const IPPROTO_SCTP: i32 = 132;

/// Initiate tags seen by any listener of this process.
static SEEN: Mutex<Option<HashSet<u32>>> = Mutex::new(None);
static ARRIVED: Condvar = Condvar::new();

/// CRC32c (Castagnoli), as SCTP's checksum uses it.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// An SCTP packet holding one INIT chunk.
pub fn init_packet(src_port: u16, dst_port: u16, tag: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(32);
    p.extend(src_port.to_be_bytes());
    p.extend(dst_port.to_be_bytes());
    p.extend(0u32.to_be_bytes()); // verification tag: 0 in an INIT
    p.extend(0u32.to_be_bytes()); // checksum, filled in below
    p.push(1); // INIT
    p.push(0);
    p.extend(20u16.to_be_bytes());
    p.extend(tag.to_be_bytes()); // initiate tag
    p.extend(65535u32.to_be_bytes()); // a_rwnd
    p.extend(1u16.to_be_bytes()); // outbound streams
    p.extend(1u16.to_be_bytes()); // inbound streams
    p.extend(1u32.to_be_bytes()); // initial TSN
    // The CRC goes on the wire least significant byte first (RFC 9260, appendix A).
    let crc = crc32c(&p);
    p[8..12].copy_from_slice(&crc.to_le_bytes());
    p
}

/// A raw SCTP socket in the calling thread's namespace.
pub fn raw_socket(v6: bool) -> io::Result<OwnedFd> {
    let family = if v6 { libc::AF_INET6 } else { libc::AF_INET };
    // SAFETY: plain socket(2); the descriptor is owned from here on.
    let fd = unsafe { libc::socket(family, libc::SOCK_RAW | libc::SOCK_CLOEXEC, IPPROTO_SCTP) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn set_recv_timeout(fd: &OwnedFd, t: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: t.as_secs() as libc::time_t,
        tv_usec: t.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: a valid descriptor and a timeval of the size given.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Receives on a raw SCTP socket until `stop` says so, recording the initiate tag of every
/// INIT (IPv4 raw sockets deliver the IP header too, IPv6 ones do not).
pub fn listen(fd: OwnedFd, v6: bool, stop: &std::sync::atomic::AtomicBool) {
    let mut buf = [0u8; 2048];
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        // SAFETY: a valid descriptor and a buffer of the length given.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let Ok(n) = usize::try_from(n) else { continue };
        let pkt = &buf[..n];
        let off = if v6 {
            0
        } else {
            usize::from(pkt.first().copied().unwrap_or(0) & 0x0f) * 4
        };
        let Some(sctp) = pkt.get(off..) else { continue };
        if sctp.len() >= 32 && sctp[12] == 1 {
            let tag = u32::from_be_bytes([sctp[16], sctp[17], sctp[18], sctp[19]]);
            let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
            seen.get_or_insert_with(HashSet::new).insert(tag);
            ARRIVED.notify_all();
        }
    }
}

/// `addr` as a C socket address, and its length.
pub fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is valid; the family's structure is written into
    // it whole, and sockaddr_storage is large and aligned enough for either.
    unsafe {
        let mut ss: libc::sockaddr_storage = std::mem::zeroed();
        let len = match addr {
            SocketAddr::V4(a) => {
                let sa = (&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>();
                (*sa).sin_family = libc::AF_INET as libc::sa_family_t;
                (*sa).sin_port = a.port().to_be();
                (*sa).sin_addr.s_addr = u32::from(*a.ip()).to_be();
                std::mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(a) => {
                let sa = (&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>();
                (*sa).sin6_family = libc::AF_INET6 as libc::sa_family_t;
                (*sa).sin6_port = a.port().to_be();
                (*sa).sin6_addr.s6_addr = a.ip().octets();
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        (ss, len as libc::socklen_t)
    }
}

/// bind(2) of `fd` to `addr`.
pub fn bind(fd: &OwnedFd, addr: SocketAddr) -> io::Result<()> {
    let (ss, len) = sockaddr(addr);
    // SAFETY: a valid descriptor and a socket address of the length given.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&ss as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends one INIT to `dst` (from `src` when given, else the address the route names) from
/// the calling thread's namespace and waits for its arrival.
pub fn probe(
    src: Option<IpAddr>,
    dst: SocketAddr,
    src_port: u16,
    tag: u32,
    timeout: Duration,
) -> Result<bool, String> {
    let fd = raw_socket(dst.is_ipv6()).map_err(|e| format!("raw socket: {e}"))?;
    if let Some(src) = src {
        bind(&fd, SocketAddr::new(src, 0)).map_err(|e| format!("bind {src}: {e}"))?;
    }
    let pkt = init_packet(src_port, dst.port(), tag);
    // A raw socket takes no port: the destination's is in the packet.
    let (ss, len) = sockaddr(SocketAddr::new(dst.ip(), 0));
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
        // A local reject (EPERM from an output-hook drop) is a denial, like a timeout.
        if e.raw_os_error() == Some(libc::EPERM) {
            return Ok(false);
        }
        return Err(format!("sendto: {e}"));
    }
    let deadline = Instant::now() + timeout;
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if seen.as_mut().is_some_and(|s| s.remove(&tag)) {
            return Ok(true);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        seen = ARRIVED
            .wait_timeout(seen, deadline - now)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn crc32c_check_value() {
        assert_eq!(super::crc32c(b"123456789"), 0xE306_9283);
    }
}
