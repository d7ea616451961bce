//! The lab's etcd: one member inside the router namespace, listening on segment 0's router
//! address (where every node reaches it through its default route) and on loopback, with
//! its data in the lab's state dir so a stop/start keeps the cluster's records.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use weft_net::NetNs;

use super::error::{LabError, Result};
use super::names::Names;
use super::procs::{self, Daemon, Owner};
use super::topology::{ETCD_ADDRESS, ETCD_PORT};
use crate::netns;

/// How long a fresh etcd may take to answer its health check.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long etcd gets to exit on SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

pub struct Paths {
    pub data: PathBuf,
    pub log: PathBuf,
    pub pidfile: PathBuf,
}

pub fn paths(names: &Names) -> Paths {
    let dir = names.state_dir();
    Paths {
        data: dir.join("etcd"),
        log: dir.join("etcd.log"),
        pidfile: dir.join("etcd.pid"),
    }
}

/// The running etcd's pid, if the pidfile names a live process of this lab.
pub fn running(names: &Names, owner: &Owner) -> Option<u32> {
    procs::read_pidfile(&paths(names).pidfile).filter(|pid| owner.owns(*pid))
}

/// Starts etcd unless it runs, and waits until it answers. Returns its pid.
pub fn ensure(names: &Names, owner: &Owner, etcd: &Path) -> Result<u32> {
    if let Some(pid) = running(names, owner) {
        wait_healthy(names, None)?;
        return Ok(pid);
    }
    let mut child = start(names, etcd)?;
    wait_healthy(names, Some(&mut child))?;
    Ok(child.id())
}

fn start(names: &Names, etcd: &Path) -> Result<Child> {
    let p = paths(names);
    let member = format!("wl{}", names.lab());
    let client = format!("http://{ETCD_ADDRESS}:{ETCD_PORT}");
    // Peers only ever on loopback: the lab has one member.
    let peer = "http://127.0.0.1:2380";
    let args = vec![
        format!("--name={member}"),
        format!("--data-dir={}", p.data.display()),
        format!("--listen-client-urls={client},http://127.0.0.1:{ETCD_PORT}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster={member}={peer}"),
        "--logger=zap".to_owned(),
        "--log-outputs=stderr".to_owned(),
    ];
    let ul = names.underlay();
    let dir = names.state_dir();
    procs::spawn(&Daemon {
        label: "etcd".to_owned(),
        place: procs::Place::Netns(&ul),
        program: etcd,
        args,
        cwd: &dir,
        log: &p.log,
        pidfile: &p.pidfile,
    })
}

/// Polls etcd's `/health` from inside the router namespace until it says true. With the
/// child at hand, its early exit ends the wait with its log's last line.
fn wait_healthy(names: &Names, mut child: Option<&mut Child>) -> Result<()> {
    let ul_name = names.underlay();
    let ul = NetNs::open(&netns::path(&ul_name))
        .map_err(LabError::net(format!("opening netns {ul_name}")))?;
    let deadline = Instant::now() + START_TIMEOUT;
    let log = paths(names).log;
    let fail = |reason: String| LabError::Daemon {
        daemon: "etcd".to_owned(),
        reason,
        log: log.clone(),
        tail: procs::log_tail(&log),
    };
    loop {
        if let Some(child) = child.as_deref_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            return Err(fail(format!("exited during start ({status})")));
        }
        let healthy = ul
            .run(health_check)
            .map_err(LabError::net(format!("entering netns {ul_name}")))?;
        if healthy {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(fail(format!(
                "not healthy after {}s",
                START_TIMEOUT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One `GET /health` over HTTP/1.0 (all a health check needs; no client library).
fn health_check() -> bool {
    let addr = SocketAddr::from((ETCD_ADDRESS, ETCD_PORT));
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

/// Stops etcd (SIGTERM, SIGKILL after a grace period), keeping its data. Returns whether one
/// was running.
pub fn stop(names: &Names, owner: &Owner) -> bool {
    match running(names, owner) {
        Some(pid) => {
            procs::stop(&[pid], libc::SIGTERM, STOP_GRACE);
            true
        }
        None => false,
    }
}
