//! Real connections for the truth table: long-lived echo listeners (TCP and UDP, both
//! families on one `[::]` socket) in every destination namespace, started once; and probes,
//! run in parallel from every source namespace, each a new connection that must carry a
//! request there and its echo back (so replies are checked on the very socket that opened).

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use weft_net::NetNs;

use super::oracle::Proto;

/// What a probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Connected (TCP) and the request's echo came back.
    Open,
    /// No answer within the timeout: dropped.
    Timeout,
    /// Refused (TCP RST, ICMP port unreachable).
    Refused,
    /// Anything else (unreachable, an echo that did not come back on an open connection…).
    Failed(String),
}

impl Outcome {
    pub fn open(&self) -> bool {
        *self == Outcome::Open
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Open => write!(f, "open"),
            Outcome::Timeout => write!(f, "timeout"),
            Outcome::Refused => write!(f, "refused"),
            Outcome::Failed(why) => write!(f, "failed ({why})"),
        }
    }
}

fn run_in<T>(ns: &Path, f: impl FnOnce() -> T) -> T {
    NetNs::open(ns)
        .unwrap_or_else(|e| panic!("{}: {e}", ns.display()))
        .run(f)
        .unwrap_or_else(|e| panic!("entering {}: {e}", ns.display()))
}

/// Echo servers on every port given, in every namespace given; stopped (sockets closed) on
/// drop, so no socket keeps a lab namespace alive after the test.
///
/// UDP sockets bind the addresses given with the namespace, or `[::]` if none: a wildcard
/// socket answers from the address the route back names, which on a node with several
/// addresses is not the one asked (and a connected client drops the answer).
pub struct Listeners {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Listeners {
    pub fn start(
        namespaces: &[(PathBuf, Vec<IpAddr>)],
        tcp: &[u16],
        udp: &[u16],
        sctp: bool,
    ) -> Listeners {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let any = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0);
        for (ns, udp_addrs) in namespaces {
            let udp_addrs = if udp_addrs.is_empty() {
                vec![any.ip()]
            } else {
                udp_addrs.clone()
            };
            for &port in tcp {
                let l = run_in(ns, || TcpListener::bind(SocketAddr::new(any.ip(), port)))
                    .unwrap_or_else(|e| panic!("{}: listen tcp/{port}: {e}", ns.display()));
                l.set_nonblocking(true).unwrap();
                let stop = stop.clone();
                threads.push(std::thread::spawn(move || tcp_echo(l, &stop)));
            }
            for &port in udp {
                for &addr in &udp_addrs {
                    let s = run_in(ns, || UdpSocket::bind(SocketAddr::new(addr, port)))
                        .unwrap_or_else(|e| {
                            panic!("{}: bind udp {addr}/{port}: {e}", ns.display())
                        });
                    s.set_read_timeout(Some(Duration::from_millis(100)))
                        .unwrap();
                    let stop = stop.clone();
                    threads.push(std::thread::spawn(move || udp_echo(s, &stop)));
                }
            }
        }
        for (ns, _) in namespaces.iter().filter(|_| sctp) {
            for v6 in [false, true] {
                let fd = run_in(ns, || super::sctp::raw_socket(v6))
                    .unwrap_or_else(|e| panic!("{}: raw SCTP socket: {e}", ns.display()));
                super::sctp::set_recv_timeout(&fd, Duration::from_millis(100))
                    .unwrap_or_else(|e| panic!("SO_RCVTIMEO: {e}"));
                let stop = stop.clone();
                threads.push(std::thread::spawn(move || {
                    super::sctp::listen(fd, v6, &stop)
                }));
            }
        }
        Listeners { stop, threads }
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn tcp_echo(l: TcpListener, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        match l.accept() {
            Ok((mut c, _)) => {
                std::thread::spawn(move || {
                    let _ = c.set_nonblocking(false);
                    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut buf = [0u8; 64];
                    if let Ok(n) = c.read(&mut buf) {
                        let _ = c.write_all(&buf[..n]);
                    }
                });
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn udp_echo(s: UdpSocket, stop: &AtomicBool) {
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::SeqCst) {
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    }
}

/// One probe: from a source namespace to an address, port and protocol.
#[derive(Debug, Clone)]
pub struct Job {
    pub src_ns: PathBuf,
    /// The source address to send from; none: the one the route names.
    pub bind: Option<IpAddr>,
    pub dst: SocketAddr,
    pub proto: Proto,
}

static NONCE: AtomicUsize = AtomicUsize::new(1);

/// UDP and SCTP source ports and ICMP echo identifiers handed out per source namespace.
/// Every such probe of a run has its own conntrack tuple: a reused one could ride on the
/// conntrack entry of an earlier scenario's allowed probe (established flows outlive a
/// policy change, as the issue intends), and a cell would look open that the current policy
/// denies.
static SOURCE_PORTS: Mutex<BTreeMap<PathBuf, u16>> = Mutex::new(BTreeMap::new());
const SOURCE_FIRST: u16 = 20000;
const SOURCE_COUNT: u16 = 40000;

fn next_source_port(ns: &Path) -> u16 {
    let mut m = SOURCE_PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let k = m.entry(ns.to_path_buf()).or_insert(0);
    *k = k.wrapping_add(1);
    assert!(
        *k < SOURCE_COUNT,
        "{}: more than {SOURCE_COUNT} UDP/SCTP/ICMP probes",
        ns.display()
    );
    SOURCE_FIRST + *k
}

fn probe(job: &Job, timeout: Duration) -> Outcome {
    let nonce = (NONCE.fetch_add(1, Ordering::SeqCst) as u64).to_be_bytes();
    match job.proto {
        Proto::Tcp => {
            let conn = match job.bind {
                Some(src) => tcp_connect_from(src, job.dst, timeout),
                None => TcpStream::connect_timeout(&job.dst, timeout),
            };
            let mut c = match conn {
                Ok(c) => c,
                Err(e) => return classify(e),
            };
            let _ = c.set_read_timeout(Some(timeout));
            let _ = c.set_write_timeout(Some(timeout));
            if let Err(e) = c.write_all(&nonce) {
                return Outcome::Failed(format!("connected, then write: {e}"));
            }
            let mut buf = [0u8; 8];
            match c.read_exact(&mut buf) {
                Ok(()) if buf == nonce => Outcome::Open,
                Ok(()) => Outcome::Failed("connected, echo differs".into()),
                Err(e) => Outcome::Failed(format!("connected, no echo: {e}")),
            }
        }
        Proto::Udp => {
            let local = job.bind.unwrap_or(if job.dst.is_ipv6() {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            } else {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            });
            let s = match UdpSocket::bind(SocketAddr::new(local, next_source_port(&job.src_ns))) {
                Ok(s) => s,
                Err(e) => return Outcome::Failed(format!("bind: {e}")),
            };
            if let Err(e) = s.connect(job.dst) {
                return classify(e);
            }
            let _ = s.set_read_timeout(Some(timeout));
            if let Err(e) = s.send(&nonce) {
                return classify(e);
            }
            let mut buf = [0u8; 64];
            match s.recv(&mut buf) {
                Ok(8) if buf[..8] == nonce => Outcome::Open,
                Ok(_) => Outcome::Failed("echo differs".into()),
                Err(e) => classify(e),
            }
        }
        Proto::Icmp => {
            let id = next_source_port(&job.src_ns);
            let seq = u16::from_be_bytes([nonce[4], nonce[5]]);
            match super::icmp::ping(job.bind, job.dst.ip(), id, seq, timeout) {
                Ok(true) => Outcome::Open,
                Ok(false) => Outcome::Timeout,
                Err(e) => Outcome::Failed(e),
            }
        }
        Proto::Sctp => {
            let tag = u32::from_be_bytes([nonce[4], nonce[5], nonce[6], nonce[7]]) | 0x8000_0000;
            match super::sctp::probe(
                job.bind,
                job.dst,
                next_source_port(&job.src_ns),
                tag,
                timeout,
            ) {
                Ok(true) => Outcome::Open,
                Ok(false) => Outcome::Timeout,
                Err(e) => Outcome::Failed(e),
            }
        }
    }
}

/// What `TcpStream::connect_timeout` does, from a chosen source address.
fn tcp_connect_from(src: IpAddr, dst: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let family = if dst.is_ipv6() {
        libc::AF_INET6
    } else {
        libc::AF_INET
    };
    // SAFETY: plain socket(2); the descriptor is owned from here on.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    super::sctp::bind(&fd, SocketAddr::new(src, 0))?;
    let (ss, len) = super::sctp::sockaddr(dst);
    // SAFETY: a valid descriptor and a socket address of the length given.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&ss as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if n == 0 {
            return Err(ErrorKind::TimedOut.into());
        }
        let mut err: libc::c_int = 0;
        let mut elen = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: SO_ERROR into an int of the size given.
        let r = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut err as *mut libc::c_int).cast(),
                &mut elen,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if err != 0 {
            return Err(std::io::Error::from_raw_os_error(err));
        }
    }
    let s = TcpStream::from(fd);
    s.set_nonblocking(false)?;
    Ok(s)
}

fn classify(e: std::io::Error) -> Outcome {
    match e.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => Outcome::Timeout,
        ErrorKind::ConnectionRefused => Outcome::Refused,
        _ => Outcome::Failed(e.to_string()),
    }
}

/// Runs every job, `workers` at a time per source namespace, all sources at once; the
/// outcomes in the jobs' order.
pub fn run(jobs: &[Job], timeout: Duration, workers: usize) -> Vec<Outcome> {
    let mut by_src: BTreeMap<&Path, Vec<usize>> = BTreeMap::new();
    for (i, j) in jobs.iter().enumerate() {
        by_src.entry(j.src_ns.as_path()).or_default().push(i);
    }
    let mut out: Vec<Option<Outcome>> = vec![None; jobs.len()];
    std::thread::scope(|scope| {
        let handles: Vec<_> = by_src
            .into_iter()
            .map(|(ns, idx)| {
                scope.spawn(move || {
                    // Threads started inside the namespace are inside it too.
                    run_in(ns, || {
                        let next = AtomicUsize::new(0);
                        std::thread::scope(|inner| {
                            let hs: Vec<_> = (0..workers.min(idx.len()))
                                .map(|_| {
                                    inner.spawn(|| {
                                        let mut got = Vec::new();
                                        loop {
                                            let k = next.fetch_add(1, Ordering::SeqCst);
                                            let Some(&i) = idx.get(k) else { break };
                                            got.push((i, probe(&jobs[i], timeout)));
                                        }
                                        got
                                    })
                                })
                                .collect();
                            hs.into_iter()
                                .flat_map(|h| h.join().expect("probe thread"))
                                .collect::<Vec<_>>()
                        })
                    })
                })
            })
            .collect();
        for h in handles {
            for (i, o) in h.join().expect("source thread") {
                out[i] = Some(o);
            }
        }
    });
    out.into_iter()
        .map(|o| o.unwrap_or(Outcome::Failed("not run".into())))
        .collect()
}

/// Raises this process's open-file limit to its hard limit: two labs' probes, their accepted
/// connections and the listeners can pass the usual soft limit of 1024 at once.
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
