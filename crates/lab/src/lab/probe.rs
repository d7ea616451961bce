//! `lab check`: reachability with real packets, in-process.
//!
//! Every place (node, pod, the outside) gets a TCP listener and a UDP socket on ephemeral
//! ports, bound inside its namespace on `[::]` (dual-stack: IPv4 peers arrive as v4-mapped
//! addresses). A socket belongs to the namespace it was made in, so one thread serves them
//! all with `poll(2)`: to each TCP connection and each UDP datagram it answers with the
//! source address it saw. A probe is a thread entering the source namespace (`NetNs::run`)
//! and connecting (TCP) or sending (UDP) with a short timeout, retrying until the cell's
//! deadline: a freshly made pod or a neighbour entry still resolving is not a failure, a
//! path that stays broken is. Probes run in parallel on a bounded pool, so a whole matrix
//! costs about one round trip per cell when all is well. UDP next to TCP because masquerade
//! and conntrack treat them separately.
//!
//! What a cell asserts besides "connected": pod → pod sees the source pod's own address (no
//! NAT inside the cluster); pod → outside sees the source node's underlay address
//! (masquerade); the outside has no route to pod CIDRs, so nothing else could work.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use weft_net::NetNs;

use super::error::{LabError, Result};

/// Most probes in flight at once.
const MAX_WORKERS: usize = 32;
/// One connection attempt's timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between attempts of one cell.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// How long a UDP probe waits for its answer before sending again.
const UDP_WAIT: Duration = Duration::from_millis(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Family {
    #[serde(rename = "ipv4")]
    V4,
    #[serde(rename = "ipv6")]
    V6,
}

impl Family {
    pub fn of(addr: IpAddr) -> Family {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// Which part of the report a cell belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Section {
    /// Node → node and node → outside over the underlay: the ground everything stands on.
    Underlay,
    PodPod,
    NodePod,
    PodOutside,
}

/// A namespace that can be probed from and to.
pub struct Place {
    pub name: String,
    pub ns: NetNs,
}

/// One probe to run.
#[derive(Debug, Clone)]
pub struct Probe {
    pub section: Section,
    pub proto: Proto,
    pub from: usize,
    pub to: usize,
    pub dst: IpAddr,
    /// The source address the destination must see, when the cell asserts one.
    pub expect_seen: Option<IpAddr>,
}

/// One probe's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub section: Section,
    pub proto: Proto,
    pub family: Family,
    pub from: String,
    pub to: String,
    pub dst: IpAddr,
    pub ok: bool,
    /// The source address the destination saw.
    pub seen: Option<IpAddr>,
    pub expected_seen: Option<IpAddr>,
    pub error: Option<String>,
    pub attempts: u32,
    pub ms: u64,
}

/// Runs `probes` between `places`, each retried for up to `timeout`.
pub fn run(places: &[Place], probes: &[Probe], timeout: Duration) -> Result<Vec<Cell>> {
    let mut tcp = Vec::with_capacity(places.len());
    let mut udp = Vec::with_capacity(places.len());
    for p in places {
        let what = || format!("listening in {}", p.name);
        let (t, u) =
            p.ns.run(|| {
                Ok::<_, std::io::Error>((TcpListener::bind("[::]:0")?, UdpSocket::bind("[::]:0")?))
            })
            .map_err(LabError::net(format!(
                "entering netns {}",
                p.ns.path().display()
            )))?
            .map_err(LabError::io(what()))?;
        t.set_nonblocking(true).map_err(LabError::io(what()))?;
        u.set_nonblocking(true).map_err(LabError::io(what()))?;
        tcp.push(t);
        udp.push(u);
    }
    let port = |addr: std::io::Result<SocketAddr>, name: &str| {
        addr.map(|a| a.port())
            .map_err(LabError::io(format!("listener of {name}")))
    };
    let mut ports = Vec::with_capacity(places.len());
    for ((t, u), p) in tcp.iter().zip(&udp).zip(places) {
        ports.push((
            port(t.local_addr(), &p.name)?,
            port(u.local_addr(), &p.name)?,
        ));
    }

    let stop = AtomicBool::new(false);
    let next = AtomicUsize::new(0);
    let cells: Mutex<Vec<Option<Cell>>> = Mutex::new(vec![None; probes.len()]);
    let workers = probes.len().clamp(1, MAX_WORKERS);
    std::thread::scope(|scope| {
        scope.spawn(|| serve(&tcp, &udp, &stop));
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(probe) = probes.get(i) else { break };
                        let (tcp_port, udp_port) = ports[probe.to];
                        let port = match probe.proto {
                            Proto::Tcp => tcp_port,
                            Proto::Udp => udp_port,
                        };
                        let cell = run_one(places, probe, port, timeout);
                        if let Ok(mut cells) = cells.lock() {
                            cells[i] = Some(cell);
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            let _ = h.join();
        }
        stop.store(true, Ordering::Relaxed);
    });
    let cells = cells.into_inner().unwrap_or_default();
    Ok(cells
        .into_iter()
        .zip(probes)
        .map(|(cell, probe)| {
            cell.unwrap_or_else(|| Cell {
                section: probe.section,
                proto: probe.proto,
                family: Family::of(probe.dst),
                from: places[probe.from].name.clone(),
                to: places[probe.to].name.clone(),
                dst: probe.dst,
                ok: false,
                seen: None,
                expected_seen: probe.expect_seen,
                error: Some("probe thread panicked".to_owned()),
                attempts: 0,
                ms: 0,
            })
        })
        .collect())
}

/// Answers on every socket until `stop`: each TCP connection and each UDP datagram gets the
/// peer's address back.
fn serve(tcp: &[TcpListener], udp: &[UdpSocket], stop: &AtomicBool) {
    let mut fds: Vec<libc::pollfd> = tcp
        .iter()
        .map(AsRawFd::as_raw_fd)
        .chain(udp.iter().map(AsRawFd::as_raw_fd))
        .map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        let nfds = libc::nfds_t::try_from(fds.len()).unwrap_or(0);
        // SAFETY: `fds` is a valid array of `nfds` pollfds for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), nfds, 50) };
        if n <= 0 {
            continue;
        }
        for (i, pfd) in fds.iter_mut().enumerate() {
            if pfd.revents == 0 {
                continue;
            }
            pfd.revents = 0;
            if let Some(listener) = tcp.get(i) {
                while let Ok((mut stream, peer)) = listener.accept() {
                    let seen = peer.ip().to_canonical();
                    // A few bytes into a fresh socket's empty buffer: this write cannot block.
                    let _ = stream.write_all(format!("{seen}\n").as_bytes());
                }
            } else if let Some(socket) = udp.get(i - tcp.len()) {
                while let Ok((_, peer)) = socket.recv_from(&mut buf) {
                    let seen = peer.ip().to_canonical();
                    let _ = socket.send_to(format!("{seen}\n").as_bytes(), peer);
                }
            }
        }
    }
}

fn run_one(places: &[Place], probe: &Probe, port: u16, timeout: Duration) -> Cell {
    let start = Instant::now();
    let deadline = start + timeout;
    let target = SocketAddr::new(probe.dst, port);
    let src = &places[probe.from];
    let mut attempts = 0;
    let mut last_error;
    let mut seen = None;
    loop {
        attempts += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = left.clamp(Duration::from_millis(50), CONNECT_TIMEOUT);
        let outcome = src
            .ns
            .run(|| match probe.proto {
                Proto::Tcp => connect_and_read(target, wait),
                Proto::Udp => send_and_receive(target, wait.min(UDP_WAIT)),
            })
            .map_err(|e| e.to_string())
            .and_then(|r| r);
        match outcome {
            Ok(addr) => {
                seen = Some(addr);
                last_error = match probe.expect_seen {
                    Some(want) if want != addr => Some(format!("seen as {addr}, expected {want}")),
                    _ => None,
                };
                // A wrong source address is an answer, not a transient: no retry.
                break;
            }
            Err(e) => last_error = Some(e),
        }
        if Instant::now() + RETRY_PAUSE >= deadline {
            break;
        }
        std::thread::sleep(RETRY_PAUSE);
    }
    Cell {
        section: probe.section,
        proto: probe.proto,
        family: Family::of(probe.dst),
        from: src.name.clone(),
        to: places[probe.to].name.clone(),
        dst: probe.dst,
        ok: last_error.is_none() && seen.is_some(),
        seen,
        expected_seen: probe.expect_seen,
        error: last_error,
        attempts,
        ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
    }
}

/// Connects, reads the address the other end saw.
fn connect_and_read(target: SocketAddr, timeout: Duration) -> std::result::Result<IpAddr, String> {
    let mut stream = TcpStream::connect_timeout(&target, timeout).map_err(|e| format!("{e}"))?;
    stream
        .set_read_timeout(Some(CONNECT_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    stream
        .read_to_string(&mut reply)
        .map_err(|e| format!("reading the reply: {e}"))?;
    reply
        .trim()
        .parse()
        .map_err(|_| format!("unexpected reply {:?}", reply.trim()))
}

/// Sends one datagram, reads the address the other end saw.
fn send_and_receive(target: SocketAddr, wait: Duration) -> std::result::Result<IpAddr, String> {
    let local: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).map_err(|e| e.to_string())?;
    socket.connect(target).map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(wait))
        .map_err(|e| e.to_string())?;
    socket.send(b"probe").map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    let n = socket.recv(&mut buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => "no answer".to_owned(),
        _ => e.to_string(),
    })?;
    let reply = String::from_utf8_lossy(&buf[..n]);
    reply
        .trim()
        .parse()
        .map_err(|_| format!("unexpected reply {:?}", reply.trim()))
}
