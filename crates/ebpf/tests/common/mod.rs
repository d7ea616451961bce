//! What the fast-path tests share: a pin directory of the test's own, a link's MAC and
//! ifindex read back from `ip`, the program's counters, and (weft-testkit's) a TCP echo of
//! the client's address, which shows whether a flow was NATed.
#![allow(dead_code)]

use std::path::Path;

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

pub use weft_testkit::tcp::{peer_address_seen as tcp, serve_peer_address as serve};
