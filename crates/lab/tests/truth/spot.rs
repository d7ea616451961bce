//! The oracle checked by hand: cells worked out from the API reference for some scenarios,
//! and every scenario's manifest well formed. No lab, no root.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::oracle::{self, Cluster, End, Flow, Proto};
use super::scenarios::{
    EDITS, OUT_V4, OUT_V6, PODS, SCENARIOS, Scenario, documents, namespace_labels, pod_from_spec,
    render,
};

#[test]
fn oracle_expects_all_open_without_policies() {
    let cluster = Cluster::default();
    let flow = Flow {
        src: End::Node(0),
        dst: End::Out,
        src_addr: "10.0.0.1".parse().unwrap(),
        dst_addr: OUT_V4.parse().unwrap(),
        proto: Proto::Tcp,
        port: 80,
    };
    assert!(oracle::allowed(&cluster, &[], &flow));
    // Every scenario parses (with placeholders standing in for addresses) and names pods,
    // namespaces and nodes the cluster has.
    let edits = EDITS.iter().map(|e| Scenario {
        name: e.name,
        covers: e.covers,
        yaml: e.yaml,
    });
    for s in SCENARIOS.iter().map(|s| Scenario { ..*s }).chain(edits) {
        let docs = documents(s.yaml);
        assert!(!docs.is_empty(), "{}", s.name);
        for d in &docs {
            assert!(
                ["NetworkPolicy", "Namespace", "PodLabels"]
                    .contains(&d["kind"].as_str().unwrap_or("")),
                "{}",
                s.name
            );
        }
    }
    assert!(SCENARIOS.len() >= 25);
}

/// The oracle against cells worked out by hand from the API reference, on the scenario
/// cluster with addresses as the lab hands them out (n1's pods in 10.244.0.0/26, n2's in
/// 10.244.0.64/26): a guard against an oracle bug that happens to agree with a weft bug.
#[test]
fn oracle_spot_checks() {
    let mut cluster = Cluster {
        namespaces: namespace_labels(),
        pods: Vec::new(),
    };
    let (mut k1, mut k2) = (2u8, 66u8);
    for spec in PODS {
        let k = if spec.node == "n1" { &mut k1 } else { &mut k2 };
        let addrs = vec![
            IpAddr::from([10, 244, 0, *k]),
            format!("fd00:10:244::{:x}", *k).parse().unwrap(),
        ];
        *k += 1;
        cluster.pods.push(pod_from_spec(spec, spec.node, addrs));
    }
    let blocks: BTreeMap<(String, bool), String> = [
        (("n1".to_string(), false), "10.244.0.0/26".to_string()),
        (("n1".to_string(), true), "fd00:10:244::/122".to_string()),
        (("n2".to_string(), false), "10.244.0.64/26".to_string()),
        (("n2".to_string(), true), "fd00:10:244::40/122".to_string()),
    ]
    .into();
    let pod = |name: &str| {
        End::Pod(
            PODS.iter()
                .position(|p| p.name == name)
                .unwrap_or_else(|| panic!("no pod {name}")),
        )
    };
    let addr = |end: End, v6: bool| -> IpAddr {
        match end {
            End::Pod(i) => cluster.pods[i].addr(v6).unwrap(),
            // A node's VTEP address (the network address of its block), what it sends
            // from to the other node's pods over VXLAN.
            End::Node(0) => (if v6 { "fd00:10:244::" } else { "10.244.0.0" })
                .parse()
                .unwrap(),
            End::Node(_) => (if v6 { "fd00:10:244::40" } else { "10.244.0.64" })
                .parse()
                .unwrap(),
            End::Out => (if v6 { OUT_V6 } else { OUT_V4 }).parse().unwrap(),
        }
    };
    // (scenario, source, destination, protocol, port, IPv6, allowed)
    let cells: &[(&str, End, End, Proto, u16, bool, bool)] = &[
        (
            "05-",
            pod("a-cli"),
            pod("a-web"),
            Proto::Tcp,
            80,
            false,
            true,
        ),
        (
            "05-",
            pod("b-cli"),
            pod("a-web"),
            Proto::Tcp,
            80,
            false,
            false,
        ),
        (
            "05-",
            pod("b-cli"),
            pod("a-db"),
            Proto::Tcp,
            80,
            false,
            true,
        ),
        (
            "05-",
            End::Node(0),
            pod("a-web"),
            Proto::Udp,
            53,
            false,
            true,
        ),
        (
            "05-",
            End::Node(1),
            pod("a-web"),
            Proto::Udp,
            53,
            false,
            false,
        ),
        (
            "07-",
            pod("a-cli"),
            pod("g-x"),
            Proto::Tcp,
            81,
            false,
            false,
        ),
        ("07-", pod("b-cli"), pod("g-x"), Proto::Tcp, 81, false, true),
        ("07-", pod("g-x"), pod("g-cli"), Proto::Tcp, 81, true, true),
        ("07-", pod("g-cli"), pod("g-x"), Proto::Tcp, 81, true, false),
        ("09-", pod("g-cli"), pod("g-x"), Proto::Tcp, 80, false, true),
        (
            "09-",
            pod("a-cli"),
            pod("g-x"),
            Proto::Tcp,
            80,
            false,
            false,
        ),
        (
            "09-",
            pod("a-cli"),
            pod("g-cli"),
            Proto::Tcp,
            80,
            false,
            true,
        ),
        (
            "11-",
            pod("a-cli"),
            pod("b-web"),
            Proto::Tcp,
            80,
            false,
            true,
        ),
        (
            "11-",
            pod("g-cli"),
            pod("b-web"),
            Proto::Tcp,
            80,
            false,
            false,
        ),
        (
            "11-",
            pod("a-web"),
            pod("b-web"),
            Proto::Tcp,
            80,
            false,
            false,
        ),
        (
            "12-",
            pod("a-web"),
            pod("b-web"),
            Proto::Tcp,
            80,
            false,
            true,
        ),
        (
            "12-",
            pod("g-cli"),
            pod("b-web"),
            Proto::Tcp,
            80,
            false,
            false,
        ),
        ("13-", pod("g-x"), pod("a-db"), Proto::Tcp, 80, false, true),
        (
            "13-",
            pod("b-cli"),
            pod("a-db"),
            Proto::Tcp,
            80,
            false,
            false,
        ),
        (
            "14-",
            pod("a-cli"),
            pod("a-db"),
            Proto::Tcp,
            80,
            false,
            false,
        ),
        (
            "14-",
            pod("a-web"),
            pod("a-db"),
            Proto::Tcp,
            80,
            false,
            false,
        ),
        ("14-", pod("a-web"), pod("a-db"), Proto::Tcp, 80, true, true),
        (
            "14-",
            pod("b-web"),
            pod("a-db"),
            Proto::Tcp,
            80,
            false,
            true,
        ),
        (
            "14-",
            End::Node(0),
            pod("a-db"),
            Proto::Tcp,
            80,
            false,
            false,
        ),
        (
            "16-",
            pod("b-cli"),
            pod("a-db"),
            Proto::Udp,
            53,
            false,
            true,
        ),
        (
            "16-",
            pod("b-cli"),
            pod("a-db"),
            Proto::Tcp,
            80,
            false,
            false,
        ),
        (
            "16-",
            pod("a-cli"),
            pod("b-web"),
            Proto::Tcp,
            80,
            false,
            false,
        ),
        ("16-", pod("b-cli"), End::Out, Proto::Udp, 53, false, false),
        (
            "20-",
            pod("b-cli"),
            pod("a-web"),
            Proto::Tcp,
            8080,
            false,
            true,
        ),
        (
            "20-",
            pod("b-cli"),
            pod("a-web"),
            Proto::Tcp,
            80,
            false,
            false,
        ),
        (
            "20-",
            pod("b-cli"),
            pod("a-db"),
            Proto::Tcp,
            80,
            false,
            true,
        ),
        ("20-", pod("b-cli"), pod("a-db"), Proto::Udp, 53, true, true),
        (
            "20-",
            pod("b-cli"),
            pod("a-web"),
            Proto::Udp,
            5353,
            false,
            true,
        ),
        (
            "20-",
            pod("b-cli"),
            pod("a-cli"),
            Proto::Tcp,
            8080,
            false,
            false,
        ),
        (
            "22-",
            pod("g-x"),
            pod("a-db"),
            Proto::Tcp,
            8080,
            false,
            true,
        ),
        (
            "22-",
            pod("g-x"),
            pod("a-db"),
            Proto::Tcp,
            9090,
            false,
            false,
        ),
        (
            "22-",
            pod("g-x"),
            pod("a-db"),
            Proto::Udp,
            5353,
            false,
            false,
        ),
        (
            "26-",
            pod("a-web"),
            pod("a-db"),
            Proto::Tcp,
            80,
            false,
            true,
        ),
        (
            "26-",
            pod("a-db"),
            pod("a-web"),
            Proto::Tcp,
            80,
            false,
            false,
        ),
        (
            "26-",
            pod("b-cli"),
            pod("a-db"),
            Proto::Tcp,
            80,
            false,
            true,
        ),
        (
            "28-",
            pod("a-cli"),
            pod("b-web"),
            Proto::Tcp,
            80,
            false,
            true,
        ),
        (
            "28-",
            pod("b-web"),
            pod("a-cli"),
            Proto::Tcp,
            80,
            false,
            false,
        ),
        (
            "28-",
            pod("b-web"),
            pod("a-cli"),
            Proto::Tcp,
            9090,
            false,
            true,
        ),
        (
            "30-",
            pod("b-cli"),
            pod("a-db"),
            Proto::Tcp,
            80,
            false,
            false,
        ),
        (
            "30-",
            pod("b-cli"),
            pod("a-cli"),
            Proto::Tcp,
            80,
            false,
            true,
        ),
        (
            "30-",
            pod("b-cli"),
            pod("g-cli"),
            Proto::Tcp,
            80,
            false,
            false,
        ),
        (
            "32-",
            pod("b-cli"),
            pod("a-web"),
            Proto::Tcp,
            8080,
            false,
            false,
        ),
        (
            "32-",
            pod("b-cli"),
            pod("a-db"),
            Proto::Udp,
            53,
            false,
            false,
        ),
        ("33-", pod("a-web"), End::Out, Proto::Tcp, 81, false, true),
        (
            "33-",
            pod("a-web"),
            End::Node(1),
            Proto::Tcp,
            81,
            false,
            false,
        ),
        (
            "33-",
            pod("a-web"),
            pod("b-cli"),
            Proto::Tcp,
            81,
            true,
            false,
        ),
        (
            "40-",
            pod("a-cli"),
            pod("g-cli"),
            Proto::Udp,
            53,
            false,
            true,
        ),
        (
            "40-",
            pod("a-cli"),
            pod("g-cli"),
            Proto::Udp,
            53,
            true,
            false,
        ),
        (
            "17-",
            pod("b-cli"),
            pod("a-web"),
            Proto::Icmp,
            0,
            false,
            false,
        ),
        (
            "04-",
            pod("b-cli"),
            pod("a-web"),
            Proto::Icmp,
            0,
            false,
            true,
        ),
        ("13-", pod("g-x"), pod("a-db"), Proto::Icmp, 0, true, true),
        (
            "43-",
            pod("a-cli"),
            pod("b-web"),
            Proto::Sctp,
            80,
            false,
            true,
        ),
        (
            "43-",
            pod("a-cli"),
            pod("b-cli"),
            Proto::Sctp,
            80,
            false,
            false,
        ),
        (
            "43-",
            pod("a-cli"),
            pod("b-cli"),
            Proto::Sctp,
            53,
            false,
            true,
        ),
    ];
    let mut wrong = Vec::new();
    for &(prefix, src, dst, proto, port, v6, want) in cells {
        let s = SCENARIOS
            .iter()
            .find(|s| s.name.starts_with(prefix))
            .unwrap_or_else(|| panic!("no scenario {prefix}"));
        let policies = documents(&render(s.yaml, &cluster, &blocks));
        let flow = Flow {
            src,
            dst,
            src_addr: addr(src, v6),
            dst_addr: addr(dst, v6),
            proto,
            port,
        };
        if oracle::allowed(&cluster, &policies, &flow) != want {
            wrong.push(format!("{}: {flow:?} should be {want}", s.name));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
