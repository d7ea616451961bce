//! End-to-end tests of weft's modes (bridge, ptp, macvlan) with real packets between real
//! network namespaces. Run as root: `cargo test -p weft-plugin --test modes`.
//!
//! Every test makes its own node netns and runs the plugin inside it; pods are separate
//! netns. All traffic stays between namespaces the test made.

mod e2e_support;

use std::net::IpAddr;

use e2e_support::*;
use serde_json::{Value, json};
use weft_testkit::assert_root;

const NODE_LO4: &str = "198.18.0.1";
const NODE_LO6: &str = "2001:db8:ff::1";

/// Put the ptp "node addresses" on the node's lo.
fn node_lo_addrs(node: &Node) {
    node.ns
        .ip(&["addr", "add", &format!("{NODE_LO4}/32"), "dev", "lo"]);
    node.ns
        .ip(&["addr", "add", &format!("{NODE_LO6}/128"), "dev", "lo"]);
}

fn families(kind: &str) -> Vec<bool> {
    match kind {
        "v4" => vec![false],
        "v6" => vec![true],
        _ => vec![false, true],
    }
}

/// The node's address a pod of `mode` talks to for family `v6`.
fn node_addr(mode: &str, res: &Value, v6: bool) -> IpAddr {
    match mode {
        "bridge" => res["ips"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i["gateway"].as_str())
            .map(|g| g.parse::<IpAddr>().unwrap())
            .find(|g| g.is_ipv6() == v6)
            .unwrap_or_else(|| panic!("bridge result without gateway: {res}")),
        _ => if v6 { NODE_LO6 } else { NODE_LO4 }.parse().unwrap(),
    }
}

fn assert_not_tentative(pod: &Ns) {
    let t = tentative(pod, "eth0");
    assert!(
        t.is_empty(),
        "pod {} has tentative/dadfailed addresses right after ADD: {t:?}",
        pod.name
    );
}

fn is_hex13(s: &str) -> bool {
    s.len() == 13
        && s.chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

/// Check the result layout and the kernel state of one attachment.
fn check_attachment(node: &Node, net: &str, mode: &str, cid: &str, pod: &Ns, res: &Value) {
    assert_eq!(res["cniVersion"], "1.1.0", "result version: {res}");
    let ifs = res["interfaces"].as_array().expect("interfaces");
    let want_len = match mode {
        "bridge" => 3,
        "ptp" => 2,
        _ => 1,
    };
    assert_eq!(ifs.len(), want_len, "{mode} result interfaces: {res}");
    let ci = want_len - 1;
    assert_eq!(ifs[ci]["name"], "eth0", "container iface: {res}");
    assert_eq!(
        ifs[ci]["sandbox"].as_str(),
        Some(pod.path.as_str()),
        "{res}"
    );
    let eth0 = pod.link("eth0").expect("eth0 in pod");
    assert_eq!(
        ifs[ci]["mac"].as_str().map(str::to_lowercase),
        eth0["address"].as_str().map(str::to_string),
        "result mac vs kernel: {res}"
    );
    assert!(
        eth0["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "pod eth0 not up: {eth0}"
    );
    let ips = res["ips"].as_array().expect("ips");
    assert!(!ips.is_empty(), "no ips: {res}");
    for ip in ips {
        assert_eq!(
            ip["interface"].as_u64(),
            Some(ci as u64),
            "ips[].interface: {res}"
        );
        assert!(
            ip.get("version").is_none(),
            "1.1.0 result with ips[].version: {res}"
        );
    }
    // Addresses on eth0 as in the result.
    let kernel: Vec<String> = pod
        .addr_info("eth0")
        .iter()
        .filter(|a| a["scope"] == "global")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect();
    for ip in ips {
        let a = ip["address"].as_str().unwrap();
        let (addr, plen) = a.split_once('/').unwrap();
        let want = match (mode, addr.contains(':')) {
            ("ptp", false) => format!("{addr}/32"),
            ("ptp", true) => format!("{addr}/128"),
            _ => format!("{addr}/{plen}"),
        };
        assert!(
            kernel.contains(&want),
            "pod eth0 lacks {want}; has {kernel:?}"
        );
    }
    // Leases.
    let leases = node.leases(net);
    for ip in result_ips(res) {
        assert_eq!(
            leases.get(&ip).map(String::as_str),
            Some(format!("{cid}\r\neth0").as_str()),
            "lease of {ip}: {leases:?}"
        );
    }
    if mode == "macvlan" {
        let d = pod.ipj(&["-d", "link", "show", "dev", "eth0"]);
        assert_eq!(d[0]["linkinfo"]["info_kind"], "macvlan", "pod eth0: {d}");
        return;
    }
    // Host veth: name, alias, placement.
    let veth = result_host_veth(res);
    assert!(
        veth.starts_with("wv") && is_hex13(&veth[2..]),
        "host veth name {veth:?} is not wv+13 hex"
    );
    let hv = node.ns.link(&veth).expect("host veth in node");
    assert_eq!(
        hv["ifalias"].as_str(),
        Some(format!("weft:{net}:{cid}:eth0").as_str()),
        "host veth alias: {hv}"
    );
    if mode == "bridge" {
        assert_eq!(ifs[0]["name"], "weft0", "{res}");
        assert_eq!(hv["master"], "weft0", "host veth not on the bridge: {hv}");
        assert!(
            ifs[1]["sandbox"].as_str().unwrap_or("").is_empty(),
            "host veth with sandbox: {res}"
        );
    } else {
        assert_eq!(ifs[0]["name"].as_str(), Some(veth.as_str()));
        // ptp: host routes and pod default routes.
        for ip in result_ips(res) {
            let (fam, dst) = if ip.is_ipv6() {
                ("-6", format!("{ip}"))
            } else {
                ("-4", format!("{ip}"))
            };
            let routes = node.ns.routes(fam);
            assert!(
                routes
                    .iter()
                    .any(|r| r["dst"].as_str() == Some(dst.as_str()) && r["dev"] == veth.as_str()),
                "node lacks host route {dst} dev {veth}: {routes:?}"
            );
            let pod_routes = pod.routes(fam);
            let gw = if ip.is_ipv6() {
                "fe80::1"
            } else {
                "169.254.1.1"
            };
            assert!(
                pod_routes
                    .iter()
                    .any(|r| r["dst"] == "default" && r["gateway"] == gw && r["dev"] == "eth0"),
                "pod lacks default via {gw}: {pod_routes:?}"
            );
        }
    }
}

/// After DEL: no host veth, no lease for `cid`, no host routes, no eth0 in the pod.
fn check_gone(node: &Node, net: &str, mode: &str, cid: &str, pod: &Ns, res: &Value) {
    assert!(pod.link("eth0").is_none(), "eth0 left in pod {}", pod.name);
    let leases = node.leases(net);
    assert!(
        !leases.values().any(|c| c.split("\r\n").next() == Some(cid)),
        "lease of {cid} left: {leases:?}"
    );
    for ip in result_ips(res) {
        assert!(!leases.contains_key(&ip), "lease {ip} left: {leases:?}");
    }
    if mode == "macvlan" {
        return;
    }
    let veth = result_host_veth(res);
    assert!(node.ns.link(&veth).is_none(), "host veth {veth} left");
    let alias = format!("weft:{net}:{cid}:eth0");
    assert!(
        !node
            .ns
            .links()
            .iter()
            .any(|l| l["ifalias"].as_str() == Some(alias.as_str())),
        "a link with alias {alias} is left"
    );
    if mode == "ptp" {
        for ip in result_ips(res) {
            let fam = if ip.is_ipv6() { "-6" } else { "-4" };
            let dst = ip.to_string();
            let routes = node.ns.routes(fam);
            assert!(
                !routes
                    .iter()
                    .any(|r| r["dst"].as_str() == Some(dst.as_str())),
                "host route {dst} left: {routes:?}"
            );
        }
    }
}

/// Two pods on one node: ADD, layout, pod↔pod and pod↔node ping + TCP, DEL.
fn two_pods(mode: &str, kind: &str, n: u8) {
    assert_root();
    let node = Node::new();
    if mode == "ptp" {
        node_lo_addrs(&node);
    }
    let net = format!("{mode}{kind}");
    let conf = weft_conf(&node, &net, mode, kind, n, json!({}));
    let pa = Ns::new('p');
    let pb = Ns::new('p');

    let ra = node.add(&conf, "ca", &pa);
    // No DAD wait: nothing tentative, and the node answers at once.
    assert_not_tentative(&pa);
    if mode == "bridge" && families(kind).contains(&true) {
        // The node forwards to pods through the bridge, and sends no neighbour solicitation
        // while the bridge's link-local address is tentative.
        let lls: Vec<Value> = node
            .ns
            .addr_info("weft0")
            .into_iter()
            .filter(|a| a["scope"] == "link")
            .collect();
        assert!(!lls.is_empty(), "the bridge has a link-local address");
        assert!(
            lls.iter().all(|a| a["tentative"].as_bool() != Some(true)),
            "bridge link-local tentative right after the first ADD: {lls:?}"
        );
    }
    for v6 in families(kind) {
        pa.assert_ping(node_addr(mode, &ra, v6));
    }
    let rb = node.add(&conf, "cb", &pb);
    assert_not_tentative(&pb);
    check_attachment(&node, &net, mode, "ca", &pa, &ra);
    check_attachment(&node, &net, mode, "cb", &pb, &rb);
    assert_eq!(result_ips(&ra).len(), families(kind).len(), "{ra}");

    for v6 in families(kind) {
        let a = result_ip(&ra, v6);
        let b = result_ip(&rb, v6);
        assert_ne!(a, b);
        pa.assert_ping(b);
        pb.assert_ping(a);
        pb.assert_ping(node_addr(mode, &rb, v6));
        // TCP pod A → pod B: B sees A's own address.
        assert_eq!(tcp_probe(&pb, b, &pa), a, "pod→pod source");
        // TCP pod B → node: the node sees B's address.
        let na = node_addr(mode, &rb, v6);
        assert_eq!(tcp_probe(&node.ns, na, &pb), b, "pod→node source");
        // And node → pod.
        assert!(node.ns.ping(a), "node cannot ping pod {a}");
    }

    // DEL one pod (with prevResult), then the other (without). In bridge mode delete first
    // the pod whose host veth lends the bridge its MAC, if one does: a bridge whose MAC is
    // not pinned takes over another port's MAC then, and the remaining pod's neighbour
    // entry for the gateway goes stale.
    let mut pods = [("ca", &pa, &ra), ("cb", &pb, &rb)];
    if mode == "bridge" {
        let bmac = node.ns.link("weft0").expect("bridge")["address"].clone();
        let b_veth = node.ns.link(&result_host_veth(&rb)).expect("veth b");
        if b_veth["address"] == bmac {
            pods.swap(0, 1);
        }
    }
    let bridge_mac = |n: &Node| n.ns.link("weft0").map(|l| l["address"].clone());
    let mac_before = bridge_mac(&node);
    let (c1, p1, r1) = pods[0];
    let (c2, p2, r2) = pods[1];
    let mut del1 = conf.clone();
    del1["prevResult"] = r1.clone();
    node.del(&del1, c1, Some(p1));
    check_gone(&node, &net, mode, c1, p1, r1);
    // The other pod is unaffected: it still reaches the node at once.
    let mac_after = bridge_mac(&node);
    for v6 in families(kind) {
        let na = node_addr(mode, r2, v6);
        assert!(
            p2.ping(na),
            "after DEL of {c1}, {c2} cannot reach {na} any more (bridge MAC before the DEL \
             {mac_before:?}, after {mac_after:?})"
        );
    }
    node.del(&conf, c2, Some(p2));
    check_gone(&node, &net, mode, c2, p2, r2);
    assert!(
        node.wv_links().is_empty(),
        "wv links left: {:?}",
        node.wv_links()
    );
    assert!(node.leases(&net).is_empty());
}

#[test]
fn bridge_ipv4() {
    two_pods("bridge", "v4", 31);
}

#[test]
fn bridge_ipv6() {
    two_pods("bridge", "v6", 32);
}

#[test]
fn bridge_dual_stack() {
    two_pods("bridge", "dual", 33);
}

#[test]
fn ptp_ipv4() {
    two_pods("ptp", "v4", 34);
}

#[test]
fn ptp_ipv6() {
    two_pods("ptp", "v6", 35);
}

#[test]
fn ptp_dual_stack() {
    two_pods("ptp", "dual", 36);
}

#[test]
fn macvlan_pods_reach_each_other_and_peer() {
    assert_root();
    let node = Node::new();
    let peer = Ns::new('q');
    node.ns.ip(&[
        "link", "add", "mvm0", "type", "veth", "peer", "name", "mvp0", "netns", &peer.name,
    ]);
    node.ns.ip(&["link", "set", "mvm0", "up"]);
    peer.ip(&["addr", "add", "10.37.0.250/24", "dev", "mvp0"]);
    peer.ip(&["link", "set", "mvp0", "up"]);
    let net = "mv";
    let conf = weft_conf(&node, net, "macvlan", "v4", 37, json!({ "master": "mvm0" }));
    let pa = Ns::new('p');
    let pb = Ns::new('p');
    let ra = node.add(&conf, "ma", &pa);
    let rb = node.add(&conf, "mb", &pb);
    check_attachment(&node, net, "macvlan", "ma", &pa, &ra);
    check_attachment(&node, net, "macvlan", "mb", &pb, &rb);
    let a = result_ip(&ra, false);
    let b = result_ip(&rb, false);
    let p: IpAddr = "10.37.0.250".parse().unwrap();
    pa.assert_ping(b);
    pb.assert_ping(a);
    pa.assert_ping(p);
    pb.assert_ping(p);
    assert_eq!(tcp_probe(&peer, p, &pa), a, "macvlan pod → peer source");
    assert_eq!(tcp_probe(&pb, b, &pa), a, "macvlan pod → pod source");
    node.del(&conf, "ma", Some(&pa));
    check_gone(&node, net, "macvlan", "ma", &pa, &ra);
    pb.assert_ping(p);
    node.del(&conf, "mb", Some(&pb));
    check_gone(&node, net, "macvlan", "mb", &pb, &rb);
    // The master is untouched.
    assert!(node.ns.link("mvm0").is_some(), "macvlan master removed");
}

fn mtu_of(ns: &Ns, dev: &str) -> u64 {
    ns.link(dev)
        .unwrap_or_else(|| panic!("{dev} missing in {}", ns.name))["mtu"]
        .as_u64()
        .unwrap()
}

#[test]
fn mtu_applied_to_pod_and_host_veth() {
    assert_root();
    for mode in ["bridge", "ptp"] {
        let node = Node::new();
        let conf = weft_conf(&node, "mtu", mode, "v4", 38, json!({ "mtu": 1400 }));
        let pod = Ns::new('p');
        let res = node.add(&conf, "m1", &pod);
        assert_eq!(mtu_of(&pod, "eth0"), 1400, "{mode}: pod eth0 mtu");
        let veth = result_host_veth(&res);
        assert_eq!(mtu_of(&node.ns, &veth), 1400, "{mode}: host veth mtu");
        node.del(&conf, "m1", Some(&pod));
    }
}

#[test]
fn runtime_config_mac_sets_pod_mac() {
    assert_root();
    for mode in ["bridge", "ptp"] {
        let node = Node::new();
        let mac = "c2:11:22:33:44:55";
        let conf = weft_conf(
            &node,
            "mac",
            mode,
            "v4",
            39,
            json!({ "capabilities": { "mac": true }, "runtimeConfig": { "mac": mac } }),
        );
        let pod = Ns::new('p');
        let res = node.add(&conf, "mac1", &pod);
        assert_eq!(pod.link("eth0").unwrap()["address"], mac, "{mode}: pod MAC");
        let ifs = res["interfaces"].as_array().unwrap();
        assert_eq!(
            ifs.last().unwrap()["mac"]
                .as_str()
                .map(str::to_lowercase)
                .as_deref(),
            Some(mac),
            "{mode}: result mac {res}"
        );
        node.del(&conf, "mac1", Some(&pod));
    }
}

fn hairpin_flag(node: &Node, veth: &str) -> String {
    node.ns
        .exec_ok(
            "cat",
            &[&format!("/sys/class/net/{veth}/brport/hairpin_mode")],
        )
        .trim()
        .to_string()
}

#[test]
fn hairpin_mode_sets_bridge_port_flag() {
    assert_root();
    let node = Node::new();
    let on = weft_conf(
        &node,
        "hp",
        "bridge",
        "v4",
        40,
        json!({ "hairpinMode": true }),
    );
    let off = weft_conf(&node, "hp", "bridge", "v4", 40, json!({}));
    let p1 = Ns::new('p');
    let p2 = Ns::new('p');
    let r1 = node.add(&on, "h1", &p1);
    let r2 = node.add(&off, "h2", &p2);
    assert_eq!(
        hairpin_flag(&node, &result_host_veth(&r1)),
        "1",
        "hairpinMode true"
    );
    assert_eq!(
        hairpin_flag(&node, &result_host_veth(&r2)),
        "0",
        "hairpinMode default"
    );
    node.del(&on, "h1", Some(&p1));
    node.del(&off, "h2", Some(&p2));
}

#[test]
fn ip_masq_to_outside_only() {
    assert_root();
    let node = Node::new();
    let outside = Ns::new('o');
    node.ns.ip(&[
        "link",
        "add",
        "out0",
        "type",
        "veth",
        "peer",
        "name",
        "out1",
        "netns",
        &outside.name,
    ]);
    node.ns
        .ip(&["addr", "add", "198.51.100.1/24", "dev", "out0"]);
    node.ns
        .ip(&["addr", "add", "2001:db8:ee::1/64", "dev", "out0", "nodad"]);
    node.ns.ip(&["link", "set", "out0", "up"]);
    outside.ip(&["addr", "add", "198.51.100.2/24", "dev", "out1"]);
    outside.ip(&["addr", "add", "2001:db8:ee::2/64", "dev", "out1", "nodad"]);
    outside.ip(&["link", "set", "out1", "up"]);
    node.ns.sysctl("net.ipv4.ip_forward", "1");
    node.ns.sysctl("net.ipv6.conf.all.forwarding", "1");

    let net = "masq";
    let conf = weft_conf(&node, net, "bridge", "dual", 41, json!({ "ipMasq": true }));
    let pods: Vec<Ns> = (0..5).map(|_| Ns::new('p')).collect();
    let mut results = vec![];
    for (i, p) in pods.iter().enumerate() {
        results.push(node.add(&conf, &format!("q{i}"), p));
        if i == 0 || i == 4 {
            assert_eq!(
                masq_rule_counts(&node.ns),
                (1, 1),
                "after {} pods: masquerade rules in inet weft:\n{}",
                i + 1,
                String::from_utf8_lossy(
                    &node
                        .ns
                        .exec("nft", &["list", "table", "inet", "weft"])
                        .stdout
                )
            );
        }
    }
    let sets = node.ns.exec_ok("nft", &["list", "table", "inet", "weft"]);
    assert!(
        sets.contains("10.41.0.0/24"),
        "masq4 lacks the pod range:\n{sets}"
    );
    assert!(
        sets.contains("fd00:41::/64"),
        "masq6 lacks the pod range:\n{sets}"
    );

    let out4: IpAddr = "198.51.100.2".parse().unwrap();
    let out6: IpAddr = "2001:db8:ee::2".parse().unwrap();
    let node4: IpAddr = "198.51.100.1".parse().unwrap();
    let node6: IpAddr = "2001:db8:ee::1".parse().unwrap();
    // Pod → outside: masqueraded to the node's outside address (the outside has no route to
    // the pod ranges, so an unmasqueraded connection could not even complete).
    assert_eq!(
        tcp_probe(&outside, out4, &pods[0]),
        node4,
        "IPv4 masquerade source"
    );
    assert_eq!(
        tcp_probe(&outside, out6, &pods[0]),
        node6,
        "IPv6 masquerade source"
    );
    // Pod → pod on the same node: not masqueraded.
    for v6 in [false, true] {
        let a = result_ip(&results[0], v6);
        let b = result_ip(&results[1], v6);
        assert_eq!(
            tcp_probe(&pods[1], b, &pods[0]),
            a,
            "pod→pod must keep its source"
        );
    }
    for (i, p) in pods.iter().enumerate() {
        node.del(&conf, &format!("q{i}"), Some(p));
        check_gone(&node, net, "bridge", &format!("q{i}"), p, &results[i]);
    }
    assert!(node.leases(net).is_empty());
}
