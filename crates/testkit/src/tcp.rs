//! A TCP server and client for tests that need to know whether a connection went through,
//! and from where: the server answers each connection's first line with the address it
//! saw the client at, which shows whether the flow was NATed on the way.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use crate::TestNs;

/// A TCP server in `ns` on `addr` that hands each connection to `handle`, on the
/// listener's own thread; returns once it listens. The thread ends with the process.
pub fn listen(ns: &TestNs, addr: &'static str, handle: impl Fn(TcpStream) + Send + 'static) {
    let (tx, rx) = std::sync::mpsc::channel();
    ns.spawn(move || {
        let l = TcpListener::bind(addr).unwrap();
        tx.send(()).unwrap();
        for s in l.incoming().flatten() {
            handle(s);
        }
    });
    rx.recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| panic!("no listener on {addr}"));
}

/// A TCP server in `ns` on `addr` answering each connection's first line with the
/// client's address; returns once it listens.
pub fn serve_peer_address(ns: &TestNs, addr: &'static str) {
    listen(ns, addr, |mut s| {
        let peer = s
            .peer_addr()
            .map(|p| p.ip().to_string())
            .unwrap_or_default();
        let mut line = String::new();
        if BufReader::new(&s).read_line(&mut line).is_ok() {
            let _ = writeln!(s, "{peer}");
        }
    });
}

/// Connects from `ns` to a [`serve_peer_address`] server at `to` (2 s to connect and to
/// answer): the address the server saw this client at.
pub fn peer_address_seen(ns: &TestNs, to: &'static str) -> Result<String, String> {
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
