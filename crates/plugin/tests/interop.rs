//! Interoperability with the reference CNI plugins (v1.1.1 in /usr/lib/cni, spec ≤ 1.0.0):
//! weft first in a conflist with portmap, bandwidth and tuning; the reference bridge using
//! weft-ipam; weft using the reference host-local. Run as root.

mod e2e_support;

use std::net::IpAddr;
use std::path::Path;

use e2e_support::*;
use serde_json::{Value, json};
use weft_testkit::assert_root;

fn nat_rules(node: &Node) -> String {
    node.ns.exec_ok("iptables-save", &["-t", "nat"])
}

fn bwp_links(node: &Node) -> Vec<String> {
    node.ns
        .link_names()
        .into_iter()
        .filter(|n| n.starts_with("bwp"))
        .collect()
}

#[test]
fn conflist_with_portmap_bandwidth_tuning() {
    assert_root();
    let node = Node::new();
    let mac = "c2:aa:bb:cc:dd:01";
    let list = json!({
        "cniVersion": "1.0.0",
        "name": "chain",
        "plugins": [
            {
                "type": "weft",
                "mode": "bridge",
                "bridge": "weft0",
                "isGateway": true,
                "logFile": node.log_file(),
                // Dual-stack, so portmap's IPv4 and IPv6 DNAT are both exercised.
                "ipam": ipam("dual", "weft-ipam", 42, &node.data_dir()),
            },
            { "type": "portmap", "capabilities": { "portMappings": true } },
            { "type": "bandwidth", "capabilities": { "bandwidth": true } },
            { "type": "tuning", "capabilities": { "mac": true } },
        ]
    });
    let caps = json!({
        "portMappings": [ { "hostPort": 18080, "containerPort": 80, "protocol": "tcp" } ],
        "bandwidth": {
            "ingressRate": 10_000_000, "ingressBurst": 100_000,
            "egressRate": 10_000_000, "egressBurst": 100_000
        },
        "mac": mac,
    });
    let rt = runtime_in(&node, &bin_dir_with_ref());
    let pod = Ns::new('p');
    let att = attachment("chain1", &pod, caps);

    let res = rt
        .add(&list, &att)
        .unwrap_or_else(|e| panic!("chain ADD failed: {e}"));
    let pod_ip = result_ip(&res, false);

    // tuning: the pod's MAC, and the final result says so.
    assert_eq!(pod.link("eth0").expect("eth0")["address"], mac, "pod MAC");
    let eth0 = res["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "eth0" && i["sandbox"].as_str() == Some(pod.path.as_str()))
        .unwrap_or_else(|| panic!("no eth0 in final result {res}"));
    assert_eq!(
        eth0["mac"].as_str().map(str::to_lowercase).as_deref(),
        Some(mac),
        "{res}"
    );

    // portmap: a DNAT rule to the pod IP.
    let nat = nat_rules(&node);
    assert!(
        nat.lines()
            .any(|l| l.contains("DNAT") && l.contains(&format!("{pod_ip}:80"))),
        "no DNAT to {pod_ip}:80 in the node's nat table:\n{nat}"
    );

    let pod_ip6 = result_ip(&res, true);
    let nat6 = node.ns.exec_ok("ip6tables-save", &["-t", "nat"]);
    assert!(
        nat6.lines()
            .any(|l| l.contains("DNAT") && l.contains(&format!("[{pod_ip6}]:80"))),
        "no DNAT to [{pod_ip6}]:80 in the node's ip6 nat table:\n{nat6}"
    );

    // bandwidth: an ifb bwp… device and tbf qdiscs.
    let bwp = bwp_links(&node);
    assert_eq!(bwp.len(), 1, "bwp ifb devices: {bwp:?}");
    let d = node.ns.ipj(&["-d", "link", "show", "dev", &bwp[0]]);
    assert_eq!(d[0]["linkinfo"]["info_kind"], "ifb", "{d}");
    let qd = node.ns.exec_ok("tc", &["-j", "qdisc", "show"]);
    let qd: Value = serde_json::from_str(&qd).unwrap();
    let veth = result_host_veth(&res);
    let tbf_on = |dev: &str| {
        qd.as_array()
            .unwrap()
            .iter()
            .any(|q| q["kind"] == "tbf" && q["dev"] == dev)
    };
    assert!(tbf_on(&veth), "no tbf on host veth {veth}: {qd}");
    assert!(tbf_on(&bwp[0]), "no tbf on {}: {qd}", bwp[0]);

    // The pod still works with its new MAC.
    pod.assert_ping("10.42.0.1".parse().unwrap());

    // CHECK over the chain. Reference portmap v1.1.1's CHECK is broken whenever ip6tables
    // works: it looks for its per-container chain and the IPv4 rules in the ip6 nat table
    // too (containernetworking/plugins#819, fixed after v1.1.1), whatever the main plugin
    // did. So the CHECK runs over the chain without portmap; portmap's state is asserted
    // directly above.
    let mut check_list = list.clone();
    check_list["plugins"]
        .as_array_mut()
        .unwrap()
        .retain(|p| p["type"] != "portmap");
    assert_eq!(check_list["plugins"].as_array().unwrap().len(), 3);
    rt.check(&check_list, &att, &res)
        .unwrap_or_else(|e| panic!("chain CHECK failed: {e}"));

    // DEL removes rules, ifb, veth, lease.
    rt.del(&list, &att, Some(&res))
        .unwrap_or_else(|e| panic!("chain DEL failed: {e}"));
    let nat = nat_rules(&node);
    assert!(
        !nat.contains(&pod_ip.to_string()),
        "nat rules still mention {pod_ip}:\n{nat}"
    );
    let nat6 = node.ns.exec_ok("ip6tables-save", &["-t", "nat"]);
    assert!(
        !nat6.contains(&pod_ip6.to_string()),
        "ip6 nat rules still mention {pod_ip6}:\n{nat6}"
    );
    assert!(
        bwp_links(&node).is_empty(),
        "ifb left: {:?}",
        bwp_links(&node)
    );
    assert!(
        node.wv_links().is_empty(),
        "veth left: {:?}",
        node.wv_links()
    );
    assert!(pod.link("eth0").is_none(), "eth0 left in pod");
    assert!(
        node.leases("chain").is_empty(),
        "{:?}",
        node.leases("chain")
    );
}

#[test]
fn reference_bridge_with_weft_ipam() {
    assert_root();
    let node = Node::new();
    let list = json!({
        "cniVersion": "1.0.0",
        "name": "refbr",
        "plugins": [ {
            "type": "bridge",
            "bridge": "cnib0",
            "isGateway": true,
            "ipam": ipam("v4", "weft-ipam", 43, &node.data_dir()),
        } ]
    });
    let rt = runtime_in(&node, &bin_dir_with_ref());
    let pa = Ns::new('p');
    let pb = Ns::new('p');
    let aa = attachment("rb1", &pa, json!({}));
    let ab = attachment("rb2", &pb, json!({}));
    let ra = rt
        .add(&list, &aa)
        .unwrap_or_else(|e| panic!("ADD rb1: {e}"));
    let rb = rt
        .add(&list, &ab)
        .unwrap_or_else(|e| panic!("ADD rb2: {e}"));
    let a = result_ip(&ra, false);
    let b = result_ip(&rb, false);
    let net: ipnet::IpNet = "10.43.0.0/24".parse().unwrap();
    assert!(net.contains(&a) && net.contains(&b) && a != b, "{ra} {rb}");
    let have: Vec<String> = pa
        .addr_info("eth0")
        .iter()
        .map(|x| x["local"].as_str().unwrap().to_string())
        .collect();
    assert!(have.contains(&a.to_string()), "pod eth0 {have:?} lacks {a}");
    let leases = node.leases("refbr");
    assert_eq!(
        leases.get(&a).map(String::as_str),
        Some("rb1\r\neth0"),
        "{leases:?}"
    );
    assert_eq!(
        leases.get(&b).map(String::as_str),
        Some("rb2\r\neth0"),
        "{leases:?}"
    );
    pa.assert_ping(b);
    pa.assert_ping("10.43.0.1".parse().unwrap());
    rt.check(&list, &aa, &ra)
        .unwrap_or_else(|e| panic!("CHECK rb1: {e}"));
    rt.del(&list, &aa, Some(&ra))
        .unwrap_or_else(|e| panic!("DEL rb1: {e}"));
    let leases = node.leases("refbr");
    assert!(
        !leases.contains_key(&a),
        "lease {a} not released: {leases:?}"
    );
    assert!(leases.contains_key(&b), "lease {b} lost: {leases:?}");
    rt.del(&list, &ab, Some(&rb))
        .unwrap_or_else(|e| panic!("DEL rb2: {e}"));
    assert!(node.leases("refbr").is_empty());
}

#[test]
fn weft_with_host_local_ipam() {
    assert_root();
    let node = Node::new();
    let hl_dir = node.dir.path().join("host-local");
    let hl = hl_dir.to_str().unwrap();
    let list = json!({
        "cniVersion": "1.0.0",
        "name": "hlnet",
        "plugins": [ {
            "type": "weft",
            "mode": "bridge",
            "bridge": "weft0",
            "isGateway": true,
            "logFile": node.log_file(),
            "ipam": ipam("v4", "host-local", 44, hl),
        } ]
    });
    let rt = runtime_in(&node, &bin_dir_with_ref());
    let pa = Ns::new('p');
    let pb = Ns::new('p');
    let aa = attachment("hl1", &pa, json!({}));
    let ab = attachment("hl2", &pb, json!({}));
    let ra = rt
        .add(&list, &aa)
        .unwrap_or_else(|e| panic!("ADD hl1: {e}"));
    let rb = rt
        .add(&list, &ab)
        .unwrap_or_else(|e| panic!("ADD hl2: {e}"));
    let a = result_ip(&ra, false);
    let b = result_ip(&rb, false);
    assert_ne!(a, b);
    let leases = leases_in(&Path::new(hl).join("hlnet"));
    assert_eq!(
        leases.get(&a).map(String::as_str),
        Some("hl1\r\neth0"),
        "{leases:?}"
    );
    assert_eq!(
        leases.get(&b).map(String::as_str),
        Some("hl2\r\neth0"),
        "{leases:?}"
    );
    // weft-ipam's own store is not used.
    assert!(node.leases("hlnet").is_empty());
    pa.assert_ping(b);
    pb.assert_ping(a);
    let gw: IpAddr = "10.44.0.1".parse().unwrap();
    pa.assert_ping(gw);
    rt.check(&list, &aa, &ra)
        .unwrap_or_else(|e| panic!("CHECK hl1: {e}"));
    rt.del(&list, &aa, Some(&ra))
        .unwrap_or_else(|e| panic!("DEL hl1: {e}"));
    rt.del(&list, &ab, None)
        .unwrap_or_else(|e| panic!("DEL hl2: {e}"));
    let leases = leases_in(&Path::new(hl).join("hlnet"));
    assert!(leases.is_empty(), "host-local leases left: {leases:?}");
    assert!(
        node.wv_links().is_empty(),
        "veth left: {:?}",
        node.wv_links()
    );
}
