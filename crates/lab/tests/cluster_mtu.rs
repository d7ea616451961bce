//! MTU: the pod MTU follows the node's real underlay interface (9000 on one segment, 1400 on
//! the other, less the VXLAN overhead), full-size TCP transfers pass between every pod pair,
//! and DF packets of exactly the pod MTU cross nodes (one byte more does not leave the pod),
//! with no fragmentation anywhere.

mod lab_support;

use std::collections::BTreeMap;
use std::net::IpAddr;

use lab_support::kernel::{frag_counters, mtu};
use lab_support::traffic::{ping_df, tcp_bulk};
use lab_support::*;

/// Outer IPv4 + UDP + VXLAN + inner Ethernet.
const VXLAN_OVERHEAD: u64 = 50;
const BULK: usize = 2 * 1024 * 1024;

/// Fragmentation counters of every namespace of the lab that forwards or terminates pod
/// traffic: router, nodes, pods.
fn all_frag_counters(lab: &Lab) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut names: Vec<String> = lab.node_names();
    names.push("ul".to_owned());
    names.extend(lab.pods().into_keys().map(|p| format!("p-{p}")));
    names
        .into_iter()
        .map(|n| {
            let c = frag_counters(&lab.ns(&n));
            (n, c)
        })
        .collect()
}

/// Pod → its eth0 MTU, checked against its node's segment.
fn pod_mtus(lab: &Lab, seg_mtus: &[u64]) -> BTreeMap<String, u64> {
    let state = lab.state();
    let segment_of: BTreeMap<String, usize> = state["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap().to_owned(),
                n["segment"].as_u64().unwrap() as usize,
            )
        })
        .collect();
    let records = lab.node_records();
    let mut out = BTreeMap::new();
    for (pod, node) in lab.pods() {
        let underlay = seg_mtus[segment_of[&node]];
        assert_eq!(
            records[&node]["mtu"].as_u64(),
            Some(underlay),
            "{node} reports its underlay MTU"
        );
        let got = mtu(&lab.ns(&format!("p-{pod}")), "eth0");
        assert_eq!(
            got,
            underlay - VXLAN_OVERHEAD,
            "pod {pod} on {node} (segment MTU {underlay})"
        );
        out.insert(pod, got);
    }
    out
}

/// For every (from, to, pod MTU): both families' full-size DF ping passes and one byte more
/// fails. The pings run in parallel (a refused one takes ping a second to report).
fn assert_df_exact(lab: &Lab, pairs: &[(&str, &str, u64)]) {
    let mut cases = Vec::new();
    for &(a, b, pod_mtu) in pairs {
        for v6 in [false, true] {
            let dst: IpAddr = lab.pod_addr(b, v6).unwrap();
            let headers = if v6 { 40 + 8 } else { 20 + 8 };
            let full = (pod_mtu - headers) as usize;
            cases.push((a, b, dst, pod_mtu, full, true));
            cases.push((a, b, dst, pod_mtu + 1, full + 1, false));
        }
    }
    let outcomes: Vec<(bool, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = cases
            .iter()
            .map(|&(a, _, dst, _, payload, _)| s.spawn(move || ping_df(lab, a, dst, payload)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for ((a, b, dst, size, _, should), (passed, out)) in cases.iter().zip(outcomes) {
        assert_eq!(
            passed,
            *should,
            "{a} → {b} ({dst}): DF packet of {size} bytes {}:\n{out}",
            if *should {
                "must pass"
            } else {
                "must not pass"
            }
        );
    }
}

fn two_segments(backend: &str) {
    require_cluster_binaries();
    let lab = Lab::new();
    // n1, n3 on segment 0 (MTU 9000); n2, n4 on segment 1 (MTU 1400), behind the router.
    lab.up_ok(&[
        "--nodes",
        "4",
        "--pods-per-node",
        "1",
        "--segments",
        "2",
        "--mtu",
        "9000,1400",
        "--backend",
        backend,
    ]);
    let mtus = pod_mtus(&lab, &[9000, 1400]);
    eprintln!("{backend}: pod MTUs {mtus:?}");

    let frag_before = all_frag_counters(&lab);
    // Every ordered pair, both families; one thread per sending pod.
    let pods: Vec<String> = lab.pods().into_keys().collect();
    let addrs: Vec<(String, IpAddr)> = pods
        .iter()
        .flat_map(|p| [false, true].map(|v6| (p.clone(), lab.pod_addr(p, v6).unwrap())))
        .collect();
    std::thread::scope(|s| {
        for (k, a) in pods.iter().enumerate() {
            let (lab, addrs) = (&lab, &addrs);
            s.spawn(move || {
                for (j, (b, dst)) in addrs.iter().enumerate() {
                    if a == b {
                        continue;
                    }
                    let port = 7100 + (k * addrs.len() + j) as u16;
                    let (got, took) = tcp_bulk(lab, a, b, *dst, port, BULK);
                    assert_eq!(got, BULK, "{a} → {b} ({dst})");
                    eprintln!("{backend}: {a} → {b} ({dst}): {BULK} bytes in {took:?}");
                }
            });
        }
    });
    // TCP sizes its segments to the path: nothing was fragmented on the way.
    assert_eq!(
        all_frag_counters(&lab),
        frag_before,
        "fragmentation during TCP"
    );

    // Full-size DF between pods on different nodes of the same segment.
    assert_df_exact(
        &lab,
        &[
            ("n1-p1", "n3-p1", mtus["n1-p1"]),
            ("n3-p1", "n1-p1", mtus["n3-p1"]),
            ("n2-p1", "n4-p1", mtus["n2-p1"]),
            ("n4-p1", "n2-p1", mtus["n4-p1"]),
        ],
    );
}

#[test]
fn mtu_per_segment_auto() {
    two_segments("auto");
}

#[test]
fn mtu_per_segment_vxlan() {
    two_segments("vxlan");
}

#[test]
fn full_size_df_packets_cross_vxlan_unfragmented() {
    require_cluster_binaries();
    let lab = Lab::new();
    lab.up_ok(&["--nodes", "3", "--pods-per-node", "1", "--backend", "vxlan"]);
    let mtus = pod_mtus(&lab, &[1500]);
    let before = all_frag_counters(&lab);
    let pods: Vec<String> = lab.pods().into_keys().collect();
    let mut pairs = Vec::new();
    for a in &pods {
        for b in &pods {
            if a != b {
                pairs.push((a.as_str(), b.as_str(), mtus[a]));
            }
        }
    }
    assert_df_exact(&lab, &pairs);
    let pings = pairs.len() * 4;
    let after = all_frag_counters(&lab);
    assert_eq!(after, before, "fragmentation counters moved");
    eprintln!(
        "vxlan: {pings} DF pings at pod MTU {} (± 1 byte), IPv4 and IPv6, fragmentation counters unchanged: {:?}",
        mtus["n1-p1"], after["n1"]
    );
}
