//! What the fast-path tests share: a pin directory of the test's own, and a link's MAC and
//! ifindex read back from `ip`.
#![allow(dead_code)]

use std::path::PathBuf;

use weft_testkit::TestNs;

/// A pin directory of this test process, removed on drop (also on a panic).
pub struct Pins(pub PathBuf);

impl Pins {
    pub fn new(tag: &str) -> Pins {
        let p = PathBuf::from(format!(
            "/sys/fs/bpf/weft-test-{tag}-{}",
            std::process::id()
        ));
        let _ = weft_ebpf::remove_all(&p);
        Pins(p)
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = weft_ebpf::remove_all(&self.0);
    }
}

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
