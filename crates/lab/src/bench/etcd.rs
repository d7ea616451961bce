//! A private etcd for one benchmark run: one member on the loopback of a namespace the run
//! made (so its port cannot collide with anything on the host), its data in the run's temp
//! dir.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use weft_net::NetNs;

use super::child::Daemon;
use super::error::{BenchError, Result};
use super::signal;
use weft_ctl::exe;

const CLIENT_PORT: u16 = 2379;
const PEER_PORT: u16 = 2380;
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The running etcd; stopped (SIGKILL) on drop.
pub struct Etcd {
    _daemon: Daemon,
}

impl Etcd {
    /// Starts etcd inside `netns` with its data in `data_dir`, and waits until it answers
    /// its health check.
    pub fn start(netns: &str, data_dir: &Path, log: &Path) -> Result<Etcd> {
        let program = exe::which("etcd").ok_or(BenchError::MissingTool {
            tool: "etcd",
            hint: "Debian: apt-get install etcd-server",
        })?;
        let client = endpoint();
        let peer = format!("http://127.0.0.1:{PEER_PORT}");
        let args = vec![
            "--name=bench".to_owned(),
            format!("--data-dir={}", data_dir.display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--initial-cluster=bench={peer}"),
            "--logger=zap".to_owned(),
            "--log-outputs=stderr".to_owned(),
        ];
        let mut daemon = Daemon::spawn("etcd", netns, &program, &args, log)?;
        let ns = NetNs::open(&crate::netns::path(netns))
            .map_err(BenchError::net(format!("opening netns {netns}")))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            signal::check()?;
            if daemon.exited().is_some() {
                return Err(daemon.died());
            }
            let healthy = ns
                .run(health_check)
                .map_err(BenchError::net(format!("entering netns {netns}")))?;
            if healthy {
                return Ok(Etcd { _daemon: daemon });
            }
            if Instant::now() >= deadline {
                return Err(BenchError::Daemon {
                    what: "etcd".to_owned(),
                    reason: format!("not healthy after {}s", START_TIMEOUT.as_secs()),
                    tail: daemon.log_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The client URL, valid inside the namespace etcd runs in.
pub fn endpoint() -> String {
    format!("http://127.0.0.1:{CLIENT_PORT}")
}

/// One `GET /health` over HTTP/1.0, from the calling thread's namespace.
fn health_check() -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, CLIENT_PORT));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: etcd\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply.replace(' ', "").contains("\"health\":\"true\"")
}
