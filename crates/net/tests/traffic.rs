//! One real packet each way of IP: two namespaces wired only through this crate.

mod common;

use common::TestNs;
use weft_net::{Handle, IpNet, VethSpec};
use weft_testkit::require_root;

#[test]
fn ping_across_veth_made_by_this_crate() {
    require_root!();
    let (a, b) = (TestNs::new(), TestNs::new());
    let (nsa, nsb) = (a.open(), b.open());
    let mut ha = Handle::new_in(&nsa).unwrap();
    let mut hb = Handle::new_in(&nsb).unwrap();
    ha.create_veth(&VethSpec {
        host_name: "va",
        host_alias: None,
        peer_name: "vb",
        peer_ns: &nsb,
        mtu: Some(1500),
        peer_mac: None,
    })
    .unwrap();
    let va = ha.link_by_name("va").unwrap().unwrap().index;
    let vb = hb.link_by_name("vb").unwrap().unwrap().index;
    let net = |s: &str| s.parse::<IpNet>().unwrap();
    ha.addr_add(va, net("10.99.0.1/24"), false).unwrap();
    hb.addr_add(vb, net("10.99.0.2/24"), false).unwrap();
    ha.addr_add(va, net("fd99::1/64"), true).unwrap();
    hb.addr_add(vb, net("fd99::2/64"), true).unwrap();
    ha.set_up(va).unwrap();
    hb.set_up(vb).unwrap();

    // Right after a link comes up the kernel can drop the very first packets (the
    // neighbour entry is still being resolved; `ip` alone shows the same), so allow a few
    // one-packet attempts.
    let ping = |args: &[&str]| {
        let mut last = String::new();
        for _ in 0..5 {
            let (ok, out) = a.exec(args);
            if ok {
                return;
            }
            last = out;
        }
        panic!(
            "{args:?} failed 5 times:\n{last}\nA:\n{}\nB:\n{}",
            a.ip(&["addr"]),
            b.ip(&["addr"])
        );
    };
    ping(&["ping", "-c1", "-W1", "10.99.0.2"]);
    // nodad: the IPv6 addresses are usable without waiting for DAD.
    ping(&["ping", "-6", "-c1", "-W1", "fd99::2"]);
}
