//! 64 `weft` processes at once: ADD for 64 pods simultaneously, then DEL for all of them
//! simultaneously, in bridge and in ptp mode. Run as root.

mod e2e_support;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Barrier;

use e2e_support::*;
use serde_json::json;
use weft_testkit::assert_root;

const N: usize = 64;

fn concurrent(mode: &str, subnet: u8) {
    assert_root();
    let node = Node::new();
    let node_addr: IpAddr = if mode == "ptp" {
        node.ns.ip(&["addr", "add", "198.18.0.1/32", "dev", "lo"]);
        "198.18.0.1".parse().unwrap()
    } else {
        format!("10.{subnet}.0.1").parse().unwrap()
    };
    let net = format!("conc{mode}");
    let conf = weft_conf(&node, &net, mode, "v4", subnet, json!({}));
    let pods: Vec<Ns> = (0..N).map(|_| Ns::new('p')).collect();
    let cid = |i: usize| format!("conc-{mode}-{i}");

    let barrier = Barrier::new(N);
    let outs: Vec<Out> = std::thread::scope(|s| {
        let hs: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (node, conf, barrier, cid) = (&node, &conf, &barrier, cid(i));
                s.spawn(move || {
                    barrier.wait();
                    node.cni("ADD", conf, &cid, Some(p), "eth0")
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let failed: Vec<(usize, &Out)> = outs.iter().enumerate().filter(|(_, o)| !o.ok()).collect();
    assert!(
        failed.is_empty(),
        "{} of {N} ADDs failed: {failed:?}",
        failed.len()
    );
    let ips: Vec<IpAddr> = outs
        .iter()
        .map(|o| result_ip(&o.result("ADD"), false))
        .collect();
    let distinct: BTreeSet<IpAddr> = ips.iter().copied().collect();
    assert_eq!(distinct.len(), N, "duplicate addresses: {ips:?}");
    let leases = node.leases(&net);
    assert_eq!(leases.len(), N, "lease files: {leases:?}");
    for (i, ip) in ips.iter().enumerate() {
        assert_eq!(
            leases.get(ip).map(String::as_str),
            Some(format!("{}\r\neth0", cid(i)).as_str())
        );
    }
    assert_eq!(
        node.wv_links().len(),
        N,
        "host veths: {:?}",
        node.wv_links()
    );
    // Every pod reaches the node (the gateway in bridge mode, the node's lo in ptp).
    std::thread::scope(|s| {
        for p in &pods {
            s.spawn(move || p.assert_ping(node_addr));
        }
    });

    let barrier = Barrier::new(N);
    let outs: Vec<Out> = std::thread::scope(|s| {
        let hs: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (node, conf, barrier, cid) = (&node, &conf, &barrier, cid(i));
                s.spawn(move || {
                    barrier.wait();
                    node.cni("DEL", conf, &cid, Some(p), "eth0")
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, o) in outs.iter().enumerate() {
        o.assert_quiet_ok(&format!("DEL {}", cid(i)));
    }
    let leases = node.leases(&net);
    assert!(leases.is_empty(), "leases left after DEL: {leases:?}");
    assert!(
        node.wv_links().is_empty(),
        "veths left: {:?}",
        node.wv_links()
    );
    for p in &pods {
        assert!(p.link("eth0").is_none(), "eth0 left in {}", p.name);
    }
    if mode == "ptp" {
        let routes = node.ns.routes("-4");
        assert!(
            !routes.iter().any(|r| r["dst"]
                .as_str()
                .is_some_and(|d| d.starts_with(&format!("10.{subnet}.")))),
            "host routes left: {routes:?}"
        );
    }
}

#[test]
fn bridge_64_parallel_add_del() {
    concurrent("bridge", 51);
}

#[test]
fn ptp_64_parallel_add_del() {
    concurrent("ptp", 52);
}
