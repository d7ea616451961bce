//! The two real pods and their node: three namespaces this run makes (`wtb<pid>nn` node,
//! `wtb<pid>nc` client, `wtb<pid>ns` server), wired the way a routed (ptp) pod is: a veth
//! per pod (`eth0` inside, `wbc`/`wbs` on the node), the pod's address as a /32 with a
//! default route to the link-local gateway 169.254.1.1 (the node end's address), a /32
//! route per pod on the node and forwarding on. Pod-to-pod packets cross the node's
//! `forward` hook — where weftd's policy table hooks in — exactly once.
//!
//! The policy table goes in with `nft -f -` run inside the node namespace (`setns(2)`
//! between fork and exec, no `ip netns exec` in the timing); [`probe`] tries a TCP
//! connection from the client to a listener of the server's.

use std::fs::File;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use weft_net::NetNs;

use crate::bench::child::{die_with_parent, ip, run};
use crate::bench::error::{BenchError, Result};
use crate::netns::{self, NetnsSet};

const GATEWAY: &str = "169.254.1.1";
/// How long the probe waits for a handshake (a dropped SYN is a timeout).
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// weftd's masquerade table (`weft_agent::dataplane::MASQ_TABLE`).
const MASQ_TABLE: &str = "weftd";

/// The namespaces, the node's handle for `nft`, and the server's probe listener.
#[derive(Debug)]
pub struct Net {
    pub node_ns: String,
    pub client_ns: String,
    pub server_ns: String,
    node: File,
    nft: PathBuf,
    listener: Option<TcpListener>,
    /// Set to stop the connection-rate listener's accept thread.
    stop: Arc<AtomicBool>,
    acceptor: Option<std::thread::JoinHandle<()>>,
    server: SocketAddr,
    client_path: PathBuf,
    // Last: removed after everything that lives in them.
    namespaces: Option<NetnsSet>,
}

impl Net {
    /// Creates and wires the namespaces; the server pod listens on `probe_port` (never
    /// accepted: the probe only needs the handshake) and on `connect_port` (accepted and
    /// closed at once, for [`Net::connect_rate`]).
    pub fn build(
        pid: u32,
        client: IpAddr,
        server: IpAddr,
        probe_port: u16,
        connect_port: u16,
        nft: PathBuf,
    ) -> Result<Net> {
        let [node_ns, client_ns, server_ns] = ["nn", "nc", "ns"].map(|t| format!("wtb{pid}{t}"));
        let namespaces =
            NetnsSet::create(vec![node_ns.clone(), client_ns.clone(), server_ns.clone()])?;
        for (pod_ns, host_if, addr) in [(&client_ns, "wbc", client), (&server_ns, "wbs", server)] {
            ip(&[
                "-n", &node_ns, "link", "add", host_if, "type", "veth", "peer", "name", "eth0",
                "netns", pod_ns,
            ])?;
            ip(&[
                "-n",
                &node_ns,
                "addr",
                "add",
                &format!("{GATEWAY}/32"),
                "dev",
                host_if,
            ])?;
            ip(&["-n", &node_ns, "link", "set", host_if, "up"])?;
            ip(&[
                "-n",
                pod_ns,
                "addr",
                "add",
                &format!("{addr}/32"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", pod_ns, "link", "set", "eth0", "up"])?;
            ip(&[
                "-n", pod_ns, "route", "add", GATEWAY, "dev", "eth0", "scope", "link",
            ])?;
            ip(&[
                "-n", pod_ns, "route", "add", "default", "via", GATEWAY, "dev", "eth0",
            ])?;
            ip(&[
                "-n",
                &node_ns,
                "route",
                "add",
                &format!("{addr}/32"),
                "dev",
                host_if,
            ])?;
        }
        run(
            "ip",
            &[
                "netns",
                "exec",
                &node_ns,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ],
        )?;
        let node = netns::open(&node_ns)?;
        let server_ns_handle = NetNs::open(&netns::path(&server_ns))
            .map_err(BenchError::net(format!("opening netns {server_ns}")))?;
        let sock = SocketAddr::new(server, probe_port);
        let listener = server_ns_handle
            .run(|| TcpListener::bind(sock))
            .map_err(BenchError::net(format!("entering netns {server_ns}")))?
            .map_err(BenchError::io(format!(
                "listening on {sock} in {server_ns}"
            )))?;
        listener
            .set_nonblocking(true)
            .map_err(BenchError::io("probe listener"))?;
        let csock = SocketAddr::new(server, connect_port);
        let accepting = server_ns_handle
            .run(|| TcpListener::bind(csock))
            .map_err(BenchError::net(format!("entering netns {server_ns}")))?
            .map_err(BenchError::io(format!(
                "listening on {csock} in {server_ns}"
            )))?;
        accepting
            .set_nonblocking(true)
            .map_err(BenchError::io("connection-rate listener"))?;
        // std listens with a backlog of 128: a few ms without CPU for the accept thread
        // (2 busy vCPUs) would overflow it at thousands of connections/s and drop SYNs.
        // Listening again on a listening socket only changes its backlog.
        // SAFETY: a valid listening socket fd.
        if unsafe { libc::listen(accepting.as_raw_fd(), 4096) } != 0 {
            return Err(BenchError::io("connection-rate listener backlog")(
                std::io::Error::last_os_error(),
            ));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let acceptor = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match accepting.accept() {
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_micros(200)),
                }
            }
        });
        Ok(Net {
            stop,
            acceptor: Some(acceptor),
            client_path: netns::path(&client_ns),
            node_ns,
            client_ns,
            server_ns,
            node,
            nft,
            listener: Some(listener),
            server: sock,
            namespaces: Some(namespaces),
        })
    }

    /// Runs `nft -f -` with `script` inside the node namespace; returns its wall time
    /// (spawn to reaped exit).
    pub fn nft(&self, script: &str) -> Result<Duration> {
        let mut cmd = Command::new(&self.nft);
        cmd.args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        die_with_parent(&mut cmd);
        let node_fd = self.node.as_raw_fd();
        // SAFETY: the closure runs in the forked child before exec and only makes the
        // async-signal-safe setns(2) syscall; `self.node` outlives the spawn.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(node_fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let start = Instant::now();
        let mut child = cmd.spawn().map_err(BenchError::io("running nft -f -"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .map_err(BenchError::io("writing to nft -f -"))?;
        }
        let out = child
            .wait_with_output()
            .map_err(BenchError::io("waiting for nft -f -"))?;
        let elapsed = start.elapsed();
        if !out.status.success() {
            return Err(BenchError::Command {
                what: format!(
                    "nft -f - in netns {} ({} bytes)",
                    self.node_ns,
                    script.len()
                ),
                status: out.status.to_string(),
                output: String::from_utf8_lossy(&out.stderr)
                    .chars()
                    .take(2000)
                    .collect(),
            });
        }
        Ok(elapsed)
    }

    /// Whether the client can open a TCP connection to the server's probe port.
    pub fn probe(&self) -> Result<bool> {
        let client = NetNs::open(&self.client_path)
            .map_err(BenchError::net(format!("opening netns {}", self.client_ns)))?;
        let target = self.server;
        let connected = std::thread::scope(|s| {
            s.spawn(|| client.run(|| TcpStream::connect_timeout(&target, PROBE_TIMEOUT).is_ok()))
                .join()
        })
        .map_err(|_| BenchError::WorkerPanicked)?
        .map_err(BenchError::net(format!(
            "entering netns {}",
            self.client_ns
        )))?;
        // Drain the accept queue so it never fills.
        if let Some(l) = &self.listener {
            while l.accept().is_ok() {}
        }
        Ok(connected)
    }

    /// New TCP connections per second from the client to the server's `port` over
    /// `seconds`, on `cpu`: connect, then close with a reset (`SO_LINGER` 0, so no
    /// TIME_WAIT piles up). Each connection's SYN is a first packet, which walks the policy
    /// (later packets of a flow only meet the conntrack test).
    pub fn connect_rate(&self, port: u16, seconds: u32, cpu: usize) -> Result<f64> {
        let client = NetNs::open(&self.client_path)
            .map_err(BenchError::net(format!("opening netns {}", self.client_ns)))?;
        let target = SocketAddr::new(self.server.ip(), port);
        let run = || {
            let mut set = nix::sched::CpuSet::new();
            if set.set(cpu).is_ok() {
                // Best effort: unpinned, the figure is only noisier.
                let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
            }
            let limit = Duration::from_secs(u64::from(seconds));
            let start = Instant::now();
            let (mut ok, mut failed) = (0u64, 0u64);
            while start.elapsed() < limit && failed < 10 {
                match TcpStream::connect_timeout(&target, PROBE_TIMEOUT) {
                    Ok(stream) => {
                        reset_on_close(&stream);
                        ok += 1;
                    }
                    Err(_) => failed += 1,
                }
            }
            (ok, failed, start.elapsed())
        };
        let (ok, failed, elapsed) = std::thread::scope(|s| s.spawn(|| client.run(run)).join())
            .map_err(|_| BenchError::WorkerPanicked)?
            .map_err(BenchError::net(format!(
                "entering netns {}",
                self.client_ns
            )))?;
        if failed >= 10 {
            return Err(BenchError::Unexpected {
                what: format!("connections to {target} from {}", self.client_ns),
                detail: format!("{failed} failed after {ok} succeeded"),
            });
        }
        Ok(ok as f64 / elapsed.as_secs_f64().max(1e-9))
    }

    /// Puts weftd's masquerade table in the node namespace (as weftd does on every node:
    /// `inet weftd`, the pod range masqueraded, a nat chain — so conntrack tracks every
    /// flow), or takes it out for the bare-kernel variant.
    pub fn masquerade(&self, on: bool) -> Result<()> {
        let ns = NetNs::open(&netns::path(&self.node_ns))
            .map_err(BenchError::net(format!("opening netns {}", self.node_ns)))?;
        let masq = weft_nft::Masquerade::new(MASQ_TABLE);
        let done = ns
            .run(|| {
                if on {
                    let range: ipnet::IpNet = crate::bench::policy::world::POD_CIDR
                        .parse()
                        .map_err(|e| format!("{e}"))?;
                    masq.ensure(&[range]).map_err(|e| e.to_string())
                } else {
                    masq.delete_table().map(|_| ()).map_err(|e| e.to_string())
                }
            })
            .map_err(BenchError::net(format!("entering netns {}", self.node_ns)))?;
        done.map_err(|detail| BenchError::Unexpected {
            what: format!("masquerade table inet {MASQ_TABLE} in {}", self.node_ns),
            detail,
        })
    }

    /// A netlink socket in the node namespace for element commits (kept open across
    /// changes, as weftd keeps its own).
    pub fn netlink_session(&self) -> Result<weft_nft::Session> {
        let ns = NetNs::open(&netns::path(&self.node_ns))
            .map_err(BenchError::net(format!("opening netns {}", self.node_ns)))?;
        ns.run(weft_nft::Session::open)
            .map_err(BenchError::net(format!("entering netns {}", self.node_ns)))?
            .map_err(|e| BenchError::Unexpected {
                what: format!("nf_tables netlink socket in {}", self.node_ns),
                detail: e.to_string(),
            })
    }

    /// Removes the namespaces now, reporting failure (Drop does it silently).
    pub fn remove(mut self) -> Result<()> {
        self.listener = None;
        self.stop_acceptor();
        match self.namespaces.take() {
            Some(n) => Ok(n.remove()?),
            None => Ok(()),
        }
    }
}

impl Net {
    fn stop_acceptor(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.stop_acceptor();
    }
}

/// `SO_LINGER` {on, 0}: closing sends a reset instead of entering TIME_WAIT.
fn reset_on_close(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket fd, a pointer to a live `linger` and its exact size.
    let _ = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}
