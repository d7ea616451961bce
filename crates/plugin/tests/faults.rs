//! SIGKILL at random moments: during ADD (then DEL + GC must leave nothing behind, and no
//! address is ever handed out twice) and during DEL (then DEL again must succeed).
//! Random delays come from a xorshift seeded from the clock; the seed is printed
//! (`WEFT_SEED=<seed>` replays it). Run as root.

mod e2e_support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use e2e_support::*;
use serde_json::{Value, json};
use weft_testkit::{Rng, assert_root};

const ITERATIONS: usize = 150;

fn spawn_verb(node: &Node, verb: &str, conf: &Value, cid: &str, pod: &Ns) -> std::process::Child {
    let env = cni_env(verb, cid, Some(&pod.path), "eth0", &bin_dir());
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    node.spawn_env(&weft_bin(), &env, &conf.to_string())
}

/// Lease invariants: every lease file is complete (`<id>\r\n<ifname>` of an id we used) and
/// no container id holds two leases; every live attachment owns its address's lease.
fn check_invariants(
    node: &Node,
    net: &str,
    used: &BTreeSet<String>,
    live: &BTreeMap<String, IpAddr>,
    seed_note: &str,
) {
    let leases = node.leases(net);
    let mut owners: BTreeMap<&str, IpAddr> = BTreeMap::new();
    for (ip, content) in &leases {
        let (id, ifname) = content
            .split_once("\r\n")
            .unwrap_or_else(|| panic!("{seed_note}: incomplete lease {ip}: {content:?}"));
        assert_eq!(ifname, "eth0", "{seed_note}: lease {ip}: {content:?}");
        assert!(
            used.contains(id),
            "{seed_note}: lease {ip} of unknown id {id:?}"
        );
        if let Some(other) = owners.insert(id, *ip) {
            panic!("{seed_note}: {id} holds two leases: {other} and {ip}");
        }
    }
    let mut seen: BTreeMap<IpAddr, &str> = BTreeMap::new();
    for (cid, ip) in live {
        if let Some(other) = seen.insert(*ip, cid) {
            panic!("{seed_note}: live attachments {other} and {cid} share {ip}");
        }
        assert_eq!(
            leases.get(ip).map(String::as_str),
            Some(format!("{cid}\r\neth0").as_str()),
            "{seed_note}: live attachment {cid} lost its lease {ip}"
        );
    }
}

#[test]
fn sigkill_during_add_then_del_and_gc_clean_up() {
    assert_root();
    let mut rng = Rng::from_env_or_time("sigkill_during_add");
    let seed_note = format!("seed {}", rng.0);
    let node = Node::new();
    let net = "faults";
    let conf = weft_conf(&node, net, "bridge", "v4", 61, json!({}));
    let mut pods: Vec<(String, Ns)> = vec![];
    let mut used = BTreeSet::new();
    let mut live: BTreeMap<String, IpAddr> = BTreeMap::new();
    let mut killed = 0;
    let start = Instant::now();
    for i in 0..ITERATIONS {
        if start.elapsed() > Duration::from_secs(240) {
            eprintln!("time bound reached after {i} iterations");
            break;
        }
        let cid = format!("kill-{i}");
        let pod = Ns::new('p');
        used.insert(cid.clone());
        let mut child = spawn_verb(&node, "ADD", &conf, &cid, &pod);
        std::thread::sleep(Duration::from_micros(rng.below(15_000) as u64));
        let _ = child.kill();
        let out = wait_out(child);
        if out.ok() {
            let res = out.result("ADD");
            let ip = result_ip(&res, false);
            live.insert(cid.clone(), ip);
            // A completed attachment really has its address.
            let have: Vec<String> = pod
                .addr_info("eth0")
                .iter()
                .map(|a| a["local"].as_str().unwrap_or("").to_string())
                .collect();
            assert!(
                have.contains(&ip.to_string()),
                "{seed_note}: {cid} eth0 {have:?} lacks {ip}"
            );
        } else {
            killed += 1;
            // Killed (or failed): whatever it printed must not be a result + error mix.
            assert!(
                out.stdout.trim().is_empty() || serde_json::from_str::<Value>(&out.stdout).is_ok(),
                "{seed_note}: garbage on stdout of {cid}: {out:?}"
            );
        }
        pods.push((cid, pod));
        check_invariants(&node, net, &used, &live, &seed_note);
    }
    eprintln!(
        "{seed_note}: {} iterations, {} completed, {killed} killed",
        pods.len(),
        live.len()
    );

    // The store still works after all that killing.
    let extra = Ns::new('p');
    let res = node.add(&conf, "after-kill", &extra);
    let ip = result_ip(&res, false);
    assert!(
        !live.values().any(|l| *l == ip),
        "{seed_note}: after-kill got a live address {ip}"
    );
    node.del(&conf, "after-kill", Some(&extra));

    // DEL every container id (as a runtime would, also after failed ADDs).
    for (cid, pod) in &pods {
        node.del(&conf, cid, Some(pod));
    }
    let leases_after_del = node.leases(net);
    let links_after_del = node.wv_links();
    // Then GC with an empty valid list.
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([]);
    let out = node.run_env(
        &weft_bin(),
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", &bin_dir())],
        &gc.to_string(),
    );
    out.assert_quiet_ok("GC");
    let leases = node.leases(net);
    assert!(
        leases.is_empty(),
        "{seed_note}: leases after DEL+GC: {leases:?}"
    );
    let wv = node.wv_links();
    assert!(wv.is_empty(), "{seed_note}: wv links after DEL+GC: {wv:?}");
    for (cid, pod) in &pods {
        assert!(
            pod.link("eth0").is_none(),
            "{seed_note}: eth0 left in pod of {cid}"
        );
    }
    // DEL alone (before GC) must already have cleaned up (spec §2.1/§2.2: DEL copes with
    // half-built state).
    assert!(
        leases_after_del.is_empty() && links_after_del.is_empty(),
        "{seed_note}: DEL of every id left leases {leases_after_del:?} and links {links_after_del:?}"
    );
}

#[test]
fn sigkill_during_del_then_del_again() {
    assert_root();
    let mut rng = Rng::from_env_or_time("sigkill_during_del");
    let seed_note = format!("seed {}", rng.0);
    for mode in ["bridge", "ptp"] {
        let node = Node::new();
        let net = format!("kdel{mode}");
        let conf = weft_conf(&node, &net, mode, "dual", 62, json!({}));
        for i in 0..20 {
            let cid = format!("kd-{i}");
            let pod = Ns::new('p');
            let res = node.add(&conf, &cid, &pod);
            let veth = result_host_veth(&res);
            let mut child = spawn_verb(&node, "DEL", &conf, &cid, &pod);
            std::thread::sleep(Duration::from_micros(rng.below(10_000) as u64));
            let _ = child.kill();
            let _ = wait_out(child);
            node.del(&conf, &cid, Some(&pod));
            let leases = node.leases(&net);
            assert!(
                leases.is_empty(),
                "{seed_note} {mode} {cid}: leases {leases:?}"
            );
            assert!(
                node.ns.link(&veth).is_none(),
                "{seed_note} {mode} {cid}: {veth} left"
            );
            assert!(
                pod.link("eth0").is_none(),
                "{seed_note} {mode} {cid}: eth0 left"
            );
            if mode == "ptp" {
                for ip in result_ips(&res) {
                    let fam = if ip.is_ipv6() { "-6" } else { "-4" };
                    let d = ip.to_string();
                    assert!(
                        !node
                            .ns
                            .routes(fam)
                            .iter()
                            .any(|r| r["dst"].as_str() == Some(&d)),
                        "{seed_note} {mode} {cid}: host route {d} left"
                    );
                }
            }
            // And a third DEL is still fine.
            node.del(&conf, &cid, Some(&pod));
        }
        assert!(node.wv_links().is_empty());
    }
}
