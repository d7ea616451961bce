//! Real pod traffic, counted: UDP flows with sequence numbers (each datagram accounted for),
//! TCP bulk transfers, and DF pings. Sockets are created by a thread that has entered the
//! pod's namespace (`weft_net::NetNs::run`); a socket stays in the namespace it was made in,
//! so the work itself runs on ordinary threads.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use weft_net::NetNs;

use super::{Lab, text};

/// Runs `f` with this thread inside pod `pod`'s namespace.
pub fn in_pod<T>(lab: &Lab, pod: &str, f: impl FnOnce() -> T) -> T {
    in_netns_at(&pod_netns(lab, pod), f)
}

/// The path of a lab pod's network namespace.
pub fn pod_netns(lab: &Lab, pod: &str) -> PathBuf {
    PathBuf::from(format!("/run/netns/{}", lab.ns(&format!("p-{pod}"))))
}

/// Runs `f` with this thread inside the network namespace at `path` (a named one, or a
/// process's `/proc/<pid>/ns/net`).
pub fn in_netns_at<T>(path: &Path, f: impl FnOnce() -> T) -> T {
    let ns = NetNs::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ns.run(f)
        .unwrap_or_else(|e| panic!("entering {}: {e}", path.display()))
}

/// What a flow saw.
#[derive(Debug, Clone)]
pub struct FlowReport {
    pub label: String,
    pub sent: u64,
    pub received: u64,
    /// Sequence numbers sent and never received (the first few).
    pub lost: Vec<u64>,
    pub lost_count: u64,
    /// The first sequence number that arrived.
    pub first_received: Option<u64>,
    pub duplicates: u64,
    pub send_errors: u64,
}

impl std::fmt::Display for FlowReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: sent {}, received {}, lost {}{}, duplicates {}, send errors {}",
            self.label,
            self.sent,
            self.received,
            self.lost_count,
            if self.lost.is_empty() {
                String::new()
            } else {
                format!(" (first: {:?})", self.lost)
            },
            self.duplicates,
            self.send_errors
        )
    }
}

/// A UDP stream from one pod to another: one datagram every `interval`, each carrying its
/// sequence number, and a receiver marking every number that arrives.
pub struct UdpFlow {
    label: String,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    sender: JoinHandle<u64>,
    receiver: JoinHandle<(Vec<bool>, u64)>,
}

const PAYLOAD: usize = 200;

impl UdpFlow {
    pub fn start(
        lab: &Lab,
        from: &str,
        to: &str,
        dst: IpAddr,
        port: u16,
        interval: Duration,
    ) -> UdpFlow {
        Self::start_with(lab, from, to, dst, port, interval, false)
    }

    /// Like [`UdpFlow::start`], but the receiver answers each datagram (its sequence number,
    /// back to the sender). Conntrack calls a UDP flow established only once it has seen a
    /// reply: before that every datagram is a new connection to netfilter.
    pub fn start_answered(
        lab: &Lab,
        from: &str,
        to: &str,
        dst: IpAddr,
        port: u16,
        interval: Duration,
    ) -> UdpFlow {
        Self::start_with(lab, from, to, dst, port, interval, true)
    }

    fn start_with(
        lab: &Lab,
        from: &str,
        to: &str,
        dst: IpAddr,
        port: u16,
        interval: Duration,
        answer: bool,
    ) -> UdpFlow {
        let ends = [(from, pod_netns(lab, from)), (to, pod_netns(lab, to))];
        Self::between(&ends, dst, port, interval, answer)
    }

    /// A flow between two network namespaces, each (name for messages, path): from the
    /// first to `dst` in the second.
    pub fn between(
        ends: &[(&str, PathBuf); 2],
        dst: IpAddr,
        port: u16,
        interval: Duration,
        answer: bool,
    ) -> UdpFlow {
        let [(from, from_ns), (to, to_ns)] = ends;
        let label = format!(
            "udp {from} → {to} ({dst}:{port}){}",
            if answer { " answered" } else { "" }
        );
        let rx = in_netns_at(to_ns, || UdpSocket::bind(SocketAddr::new(dst, port)))
            .unwrap_or_else(|e| panic!("{label}: bind: {e}"));
        rx.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        // A receiver thread descheduled for a while on a loaded CI machine must not show up
        // as network loss: 4 MiB holds seconds of this flow (SO_RCVBUFFORCE: we are root).
        force_rcvbuf(&rx, 4 << 20);
        let unspecified: IpAddr = if dst.is_ipv6() {
            "::".parse().unwrap()
        } else {
            "0.0.0.0".parse().unwrap()
        };
        let tx = in_netns_at(from_ns, || UdpSocket::bind(SocketAddr::new(unspecified, 0)))
            .unwrap_or_else(|e| panic!("{label}: bind: {e}"));
        tx.connect(SocketAddr::new(dst, port))
            .unwrap_or_else(|e| panic!("{label}: connect: {e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let received = Arc::new(AtomicU64::new(0));

        let receiver = {
            let (stop, sent, received) = (stop.clone(), sent.clone(), received.clone());
            std::thread::spawn(move || {
                let mut seen: Vec<bool> = Vec::new();
                let mut dups = 0u64;
                let mut buf = [0u8; 2048];
                let mut idle_since: Option<Instant> = None;
                loop {
                    match rx.recv_from(&mut buf) {
                        Ok((n, peer)) if n >= 8 => {
                            idle_since = None;
                            if answer {
                                let _ = rx.send_to(&buf[..8], peer);
                            }
                            let seq = u64::from_be_bytes(buf[..8].try_into().unwrap()) as usize;
                            if seen.len() <= seq {
                                seen.resize(seq + 1, false);
                            }
                            if seen[seq] {
                                dups += 1;
                            } else {
                                seen[seq] = true;
                                received.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        Ok(_) => {}
                        Err(_) => {
                            if stop.load(Ordering::SeqCst) {
                                // Stopped: done once everything sent is in, or after a quiet
                                // second (what is missing then is lost).
                                let all =
                                    received.load(Ordering::SeqCst) >= sent.load(Ordering::SeqCst);
                                let quiet = *idle_since.get_or_insert_with(Instant::now);
                                if all || quiet.elapsed() > Duration::from_secs(1) {
                                    return (seen, dups);
                                }
                            }
                        }
                    }
                }
            })
        };
        let sender = {
            let (stop, sent) = (stop.clone(), sent.clone());
            std::thread::spawn(move || {
                let mut errors = 0u64;
                let mut seq = 0u64;
                let mut payload = [0u8; PAYLOAD];
                let mut next = Instant::now();
                while !stop.load(Ordering::SeqCst) {
                    payload[..8].copy_from_slice(&seq.to_be_bytes());
                    match tx.send(&payload) {
                        Ok(_) => {}
                        Err(_) => errors += 1,
                    }
                    seq += 1;
                    sent.store(seq, Ordering::SeqCst);
                    // A fixed rate, not "interval after the last send": a stall in this
                    // thread must not hide itself by sending less.
                    next += interval;
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
                errors
            })
        };
        UdpFlow {
            label,
            stop,
            sent,
            received,
            sender,
            receiver,
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }

    /// Stops sending (so several flows can wind down together before [`UdpFlow::finish`]).
    pub fn stop_sending(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Waits until `n` more datagrams than now have arrived: the flow is running (panics
    /// after `timeout`).
    pub fn wait_flowing(&self, n: u64, timeout: Duration) {
        let start = self.received();
        let deadline = Instant::now() + timeout;
        while self.received() < start + n {
            assert!(
                Instant::now() < deadline,
                "{}: {} datagrams in {timeout:?}, wanted {n} (sent {})",
                self.label,
                self.received() - start,
                self.sent.load(Ordering::SeqCst)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops sending, lets the last datagrams arrive, and accounts for every one.
    pub fn finish(self) -> FlowReport {
        self.stop.store(true, Ordering::SeqCst);
        let send_errors = self.sender.join().expect("sender thread");
        let (seen, duplicates) = self.receiver.join().expect("receiver thread");
        let sent = self.sent.load(Ordering::SeqCst);
        let lost_all: Vec<u64> = (0..sent)
            .filter(|s| !seen.get(*s as usize).copied().unwrap_or(false))
            .collect();
        FlowReport {
            label: self.label,
            sent,
            received: self.received.load(Ordering::SeqCst),
            lost: lost_all.iter().take(10).copied().collect(),
            lost_count: lost_all.len() as u64,
            first_received: seen.iter().position(|s| *s).map(|i| i as u64),
            duplicates,
            send_errors,
        }
    }
}

fn force_rcvbuf(sock: &UdpSocket, bytes: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid socket fd and a c_int option value of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
}

/// Flows both ways between two pods, IPv4 and (when both have it) IPv6: four flows.
pub fn flows_between(lab: &Lab, a: &str, b: &str, port: u16, interval: Duration) -> Vec<UdpFlow> {
    let mut flows = Vec::new();
    for v6 in [false, true] {
        let (Some(addr_a), Some(addr_b)) = (lab.pod_addr(a, v6), lab.pod_addr(b, v6)) else {
            continue;
        };
        flows.push(UdpFlow::start(lab, a, b, addr_b, port, interval));
        flows.push(UdpFlow::start(lab, b, a, addr_a, port, interval));
    }
    flows
}

/// Finishes every flow, prints each report, and asserts not one datagram was lost.
pub fn assert_no_loss(flows: Vec<UdpFlow>, what: &str) -> Vec<FlowReport> {
    let reports: Vec<FlowReport> = flows.into_iter().map(UdpFlow::finish).collect();
    for r in &reports {
        eprintln!("{what}: {r}");
    }
    for r in &reports {
        assert!(r.sent > 0, "{what}: {r}");
        assert_eq!(r.lost_count, 0, "{what}: {r}");
        assert_eq!(r.send_errors, 0, "{what}: {r}");
    }
    reports
}

/// The bytes a bulk transfer sends: a pattern that never lines up with a 2^k boundary, so a
/// lost, repeated or reordered chunk shows.
fn bulk_data(bytes: usize) -> Arc<Vec<u8>> {
    Arc::new((0..bytes).map(|i| (i % 251) as u8).collect())
}

/// Sends `bytes` bytes over TCP from pod `from` to `dst:port` in pod `to`; returns how many
/// arrived intact (compared with what was sent as they arrive) and how long it took.
pub fn tcp_bulk(
    lab: &Lab,
    from: &str,
    to: &str,
    dst: IpAddr,
    port: u16,
    bytes: usize,
) -> (usize, Duration) {
    let label = format!("tcp {from} → {to} ({dst}:{port})");
    let data = bulk_data(bytes);
    let listener = in_pod(lab, to, || TcpListener::bind(SocketAddr::new(dst, port)))
        .unwrap_or_else(|e| panic!("{label}: listen: {e}"));
    let expected = data.clone();
    let receiver = std::thread::spawn(move || -> std::io::Result<usize> {
        let (mut conn, _) = listener.accept()?;
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0usize;
        loop {
            let n = conn.read(&mut buf)?;
            if n == 0 {
                return Ok(total);
            }
            if expected.get(total..total + n) != Some(&buf[..n]) {
                return Err(std::io::Error::other(format!(
                    "bytes {total}..{} differ from what was sent",
                    total + n
                )));
            }
            total += n;
        }
    });
    let start = Instant::now();
    let mut conn = in_pod(lab, from, || {
        TcpStream::connect_timeout(&SocketAddr::new(dst, port), Duration::from_secs(5))
    })
    .unwrap_or_else(|e| panic!("{label}: connect: {e}"));
    conn.set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(&data)
        .unwrap_or_else(|e| panic!("{label}: write: {e}"));
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let got = receiver
        .join()
        .expect("receiver thread")
        .unwrap_or_else(|e| panic!("{label}: receive: {e}"));
    (got, start.elapsed())
}

/// One ping with DF set and `payload` bytes of ICMP data from pod `from` to `dst`: whether a
/// reply came back, and ping's output.
pub fn ping_df(lab: &Lab, from: &str, dst: IpAddr, payload: usize) -> (bool, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.ns(&format!("p-{from}")), "ping"])
        .args([
            "-M",
            "do",
            "-c",
            "1",
            "-W",
            "2",
            "-q",
            "-s",
            &payload.to_string(),
        ])
        .arg(dst.to_string())
        .output()
        .unwrap_or_else(|e| panic!("ping: {e}"));
    (out.status.success(), text(&out))
}

/// One direction of a [`TcpFlow`]: bytes written, bytes that arrived intact, and the first
/// error either end saw (a reset, or bytes that differ from what was sent).
#[derive(Debug, Clone)]
pub struct StreamReport {
    pub label: String,
    pub sent: u64,
    pub received: u64,
    pub error: Option<String>,
}

impl std::fmt::Display for StreamReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: sent {} bytes, received {}{}",
            self.label,
            self.sent,
            self.received,
            self.error
                .as_deref()
                .map(|e| format!(", error: {e}"))
                .unwrap_or_default()
        )
    }
}

/// Counters of one direction of a stream.
#[derive(Default)]
struct Dir {
    sent: AtomicU64,
    received: AtomicU64,
    error: std::sync::Mutex<Option<String>>,
}

impl Dir {
    fn fail(&self, e: String) {
        let mut g = self.error.lock().unwrap();
        if g.is_none() {
            *g = Some(e);
        }
    }
}

/// A long-lived TCP connection from pod `from` to pod `to`, both ends writing a chunk every
/// `interval` and checking every byte the other end wrote (the same never-aligned pattern as
/// the bulk transfer, by stream offset): a lost, repeated or reordered byte shows as an
/// error, a stalled direction as a count that stops growing.
pub struct TcpFlow {
    label: String,
    stop: Arc<AtomicBool>,
    /// Client → server, server → client.
    up: Arc<Dir>,
    down: Arc<Dir>,
    threads: Vec<JoinHandle<()>>,
    conns: Vec<TcpStream>,
}

const TCP_CHUNK: usize = 1000;

fn pattern_at(offset: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = ((offset + i as u64) % 251) as u8;
    }
}

fn pump(mut conn: TcpStream, stop: Arc<AtomicBool>, dir: Arc<Dir>, interval: Duration) {
    let mut chunk = [0u8; TCP_CHUNK];
    let mut next = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let offset = dir.sent.load(Ordering::SeqCst);
        pattern_at(offset, &mut chunk);
        // A stalled connection fills the send buffer: the write times out and is tried
        // again (with the bytes not yet taken) at the next tick.
        match conn.write(&chunk) {
            Ok(n) => {
                dir.sent.fetch_add(n as u64, Ordering::SeqCst);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => {
                dir.fail(format!("write: {e}"));
                return;
            }
        }
        next += interval;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let _ = conn.shutdown(std::net::Shutdown::Write);
}

fn check(mut conn: TcpStream, stop: Arc<AtomicBool>, dir: Arc<Dir>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut want = vec![0u8; 64 * 1024];
    let mut stopped_at: Option<Instant> = None;
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                let offset = dir.received.load(Ordering::SeqCst);
                pattern_at(offset, &mut want[..n]);
                if buf[..n] != want[..n] {
                    dir.fail(format!(
                        "bytes {offset}..{} differ from what was sent",
                        offset + n as u64
                    ));
                    return;
                }
                dir.received.fetch_add(n as u64, Ordering::SeqCst);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                // Stopped: the writer's FIN ends the stream; a stalled one is given up on.
                if stop.load(Ordering::SeqCst)
                    && stopped_at.get_or_insert_with(Instant::now).elapsed()
                        > Duration::from_secs(3)
                {
                    return;
                }
            }
            Err(e) => {
                dir.fail(format!("read: {e}"));
                return;
            }
        }
    }
}

impl TcpFlow {
    /// Connects (5 s at most; panics if the connection is not accepted) and starts both
    /// directions.
    pub fn start(
        lab: &Lab,
        from: &str,
        to: &str,
        dst: IpAddr,
        port: u16,
        interval: Duration,
    ) -> TcpFlow {
        let label = format!("tcp {from} → {to} ({dst}:{port})");
        let listener = in_pod(lab, to, || TcpListener::bind(SocketAddr::new(dst, port)))
            .unwrap_or_else(|e| panic!("{label}: listen: {e}"));
        let client = in_pod(lab, from, || {
            TcpStream::connect_timeout(&SocketAddr::new(dst, port), Duration::from_secs(5))
        })
        .unwrap_or_else(|e| panic!("{label}: connect: {e}"));
        let (server, _) = listener
            .accept()
            .unwrap_or_else(|e| panic!("{label}: accept: {e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let up = Arc::new(Dir::default());
        let down = Arc::new(Dir::default());
        let mut threads = Vec::new();
        let mut conns = Vec::new();
        for c in [&client, &server] {
            c.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            c.set_write_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            c.set_nodelay(true).unwrap();
        }
        for (w, r, dir) in [(&client, &server, &up), (&server, &client, &down)] {
            let (w, s, d) = (w.try_clone().unwrap(), stop.clone(), dir.clone());
            threads.push(std::thread::spawn(move || pump(w, s, d, interval)));
            let (r, s, d) = (r.try_clone().unwrap(), stop.clone(), dir.clone());
            threads.push(std::thread::spawn(move || check(r, s, d)));
        }
        conns.push(client);
        conns.push(server);
        TcpFlow {
            label,
            stop,
            up,
            down,
            threads,
            conns,
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// Bytes the server has received intact so far (client → server).
    pub fn received(&self) -> u64 {
        self.up.received.load(Ordering::SeqCst)
    }

    /// Bytes the client has received intact so far (server → client).
    pub fn received_back(&self) -> u64 {
        self.down.received.load(Ordering::SeqCst)
    }

    /// The first error either direction saw so far.
    pub fn error(&self) -> Option<String> {
        [&self.up, &self.down]
            .iter()
            .find_map(|d| d.error.lock().unwrap().clone())
    }

    /// Stops writing (so several flows can wind down together before [`TcpFlow::finish`]).
    pub fn stop_writing(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Stops writing, lets what was written arrive (3 s at most once the writers stopped),
    /// and reports both directions.
    pub fn finish(self) -> [StreamReport; 2] {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("stream thread");
        }
        drop(self.conns);
        let report = |dir: &Dir, label: String| StreamReport {
            label,
            sent: dir.sent.load(Ordering::SeqCst),
            received: dir.received.load(Ordering::SeqCst),
            error: dir.error.lock().unwrap().clone(),
        };
        [
            report(&self.up, self.label.clone()),
            report(&self.down, format!("{} (back)", self.label)),
        ]
    }
}
