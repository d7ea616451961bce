//! What the fast-path tests share: a pin directory of the test's own, a link's MAC and
//! ifindex read back from `ip`, the program's counters, and a TCP echo of the client's
//! address (which shows whether a flow was NATed).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use weft_ebpf::{Counters, Datapath};
use weft_testkit::TestNs;

pub use weft_ebpf::testing::ScratchPins as Pins;

pub fn mac_of(ns: &TestNs, dev: &str) -> [u8; 6] {
    let out = ns.ip(&["-o", "link", "show", dev]);
    let mac = out
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .expect("link/ether");
    weft_ebpf::parse_mac(mac).expect("mac")
}

pub fn ifindex(ns: &TestNs, dev: &str) -> u32 {
    let out = ns.ip(&["-o", "link", "show", dev]);
    out.split(':').next().unwrap().trim().parse().unwrap()
}

/// The program's decisions so far, read from `dir`'s pinned stats map inside `node`.
pub fn counters(node: &TestNs, dir: &Path) -> Counters {
    let dir = dir.to_path_buf();
    node.run(move || Datapath::open(&dir).unwrap().counters().unwrap())
}

/// A TCP server in `ns` on `addr` answering each connection's line with the client's
/// address; its thread ends with the process.
pub fn serve(ns: &TestNs, addr: &'static str) {
    let (tx, rx) = std::sync::mpsc::channel();
    ns.spawn(move || {
        let l = TcpListener::bind(addr).unwrap();
        tx.send(()).unwrap();
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let peer = s
                .peer_addr()
                .map(|p| p.ip().to_string())
                .unwrap_or_default();
            let mut line = String::new();
            if BufReader::new(&s).read_line(&mut line).is_ok() {
                let _ = writeln!(s, "{peer}");
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(5)).expect("server up");
}

/// Connects from `ns` to `to`; what the server saw as the client's address.
pub fn tcp(ns: &TestNs, to: &'static str) -> Result<String, String> {
    ns.run(move || {
        let to: SocketAddr = to.parse().unwrap();
        let mut s =
            TcpStream::connect_timeout(&to, Duration::from_secs(2)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        writeln!(s, "hello").map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(&s)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        Ok(line.trim().to_string())
    })
}
