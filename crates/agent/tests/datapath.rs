//! `weftd --datapath ebpf` on one node with the local store: a real weftd in a node namespace
//! of its own (`wtdp…`), pods ADDed and DELed by the real `weft` plugin (bridge mode) into
//! pod namespaces (`wtdpp…`), the fast path pinned in a bpffs directory of this test's own.
//! The programs' counters (weftd's status, `datapath`) say which path packets took:
//!
//! - same-node pod → pod is redirected; pod → node (and its ARP) passes to the kernel;
//! - a pod selected by a NetworkPolicy is policed: its packets pass to nftables, whose deny
//!   still denies, while its neighbours stay on the fast path;
//! - a restarted weftd keeps the pins and the attachments (same program, same link pins);
//! - DEL detaches; `--datapath nft` removes every pin and program;
//! - a fast path that cannot be loaded at start-up falls back to nft, loudly;
//! - with host-gw, the uplink program sits on the underlay interface and the peer map holds
//!   the peer's block as weft routed it; with VXLAN the program sits on `weft.vx` as well and
//!   the block's entry names the peer's VTEP address on it; a restart keeps those links,
//!   `nft` removes them;
//! - the status gives each map's fill level;
//! - a port mapping (portmap chained after weft) works, its NATed replies on the kernel path.
//!
//! Needs the plugin binaries next to weftd (`cargo build -p weft-plugin`).

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{TestNs, Weftd, weftd_command};
use weft_cni::runtime::{Attachment, Runtime};
use weft_ebpf::testing::ScratchPins as Pins;
use weft_proto::{DatapathStatus, Request, ask};
use weft_store::{Datastore, Family, LocalStore, NodeRecord, ObjectKind};
use weft_testkit::TempDir;

const CONFIG: &str = r#"{"cidrV4":"10.96.0.0/24","blockSizeV4":26,"backend":"vxlan"}"#;
const GATEWAY: &str = "10.96.0.1";

fn plugin_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_BIN_EXE_weftd"))
        .parent()
        .expect("weftd's directory")
        .to_path_buf();
    assert!(
        dir.join("weft").is_file(),
        "{} is missing: build the plugin first (cargo build -p weft-plugin)",
        dir.join("weft").display()
    );
    dir
}

/// weftd with `--datapath`, its pins in `pins`. Call on a thread inside the node namespace.
fn start(dir: &Path, datapath: &str, pins: &Path) -> Weftd {
    start_with(dir, datapath, pins, CONFIG)
}

fn start_with(dir: &Path, datapath: &str, pins: &Path, config: &str) -> Weftd {
    std::fs::write(dir.join("cluster.json"), config).unwrap();
    let child = weftd_command(dir, "solo")
        .arg("--store-path")
        .arg(dir.join("store.json"))
        .args(["--datapath", datapath])
        .arg("--bpf-pin-dir")
        .arg(pins)
        .spawn()
        .expect("start weftd");
    let mut agent = Weftd(child);
    let conflist = dir.join("net.d/10-weft.conflist");
    wait_until(&mut agent, "weftd ready", || {
        conflist.is_file() && status(dir).is_some_and(|s| s.policy.in_sync)
    });
    agent
}

#[track_caller]
fn wait_until(agent: &mut Weftd, what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = agent.0.try_wait() {
            panic!(
                "weftd exited ({status}) waiting for {what}: {}",
                agent.stderr()
            );
        }
        if done() {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{what}: not within 20 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn status(dir: &Path) -> Option<weft_proto::Status> {
    ask(
        &dir.join("run/weftd.sock"),
        &Request::Status,
        Duration::from_secs(2),
    )
    .ok()?
    .status
    .map(|s| *s)
}

fn datapath(dir: &Path) -> DatapathStatus {
    status(dir)
        .and_then(|s| s.datapath)
        .expect("datapath status")
}

struct Pod {
    ns: weft_testkit::TestNs,
    att: Attachment,
    /// The conflist it was ADDed with (its DEL takes the same).
    conflist: Value,
    address: String,
    veth: String,
}

/// weft's plugins, then the reference ones (portmap).
fn runtime() -> Runtime {
    Runtime::new(vec![plugin_dir(), PathBuf::from("/usr/lib/cni")])
}

impl Pod {
    /// ADDs pod `namespace/name` through weftd's conflist, as containerd would. Call on a
    /// thread inside the node's namespace.
    fn add(dir: &Path, namespace: &str, name: &str) -> Pod {
        Pod::add_with(dir, namespace, name, conflist(dir), serde_json::Map::new())
    }

    /// The same through `conflist`, with the runtime's capability arguments `caps`.
    fn add_with(
        dir: &Path,
        namespace: &str,
        name: &str,
        conflist: Value,
        caps: serde_json::Map<String, Value>,
    ) -> Pod {
        let ns = weft_testkit::TestNs::new("wtdpp");
        let att = Attachment {
            container_id: format!("c-{name}-{}", ns.name),
            netns: ns.path().display().to_string(),
            ifname: "eth0".into(),
            cni_args: Some(format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name}"
            )),
            capability_args: caps,
        };
        let result = runtime()
            .add(&conflist, &att)
            .unwrap_or_else(|e| panic!("ADD {name}: {e}\n{}", e.stderr));
        let address = result["ips"][0]["address"]
            .as_str()
            .expect("address")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let file = dir.join(format!("run/endpoints/{}-eth0.json", att.container_id));
        let endpoint: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
        assert!(
            endpoint["mac"].is_string(),
            "the MAC is recorded: {endpoint}"
        );
        let veth = endpoint["hostInterface"]
            .as_str()
            .expect("veth")
            .to_string();
        Pod {
            ns,
            att,
            conflist,
            address,
            veth,
        }
    }

    fn del(&self, _dir: &Path) {
        runtime()
            .del(&self.conflist, &self.att, None)
            .unwrap_or_else(|e| panic!("DEL: {e}\n{}", e.stderr));
    }

    fn ping(&self, to: &str) -> bool {
        self.ns
            .exec(&["ping", "-c", "2", "-i", "0.05", "-W", "1", "-q", to])
            .0
    }
}

/// A map's fill level in weftd's status: (entries, max entries).
fn fill(dp: &DatapathStatus, map: &str) -> Option<(u32, u32)> {
    dp.maps
        .iter()
        .find(|m| m.name == map)
        .map(|m| (m.entries, m.max_entries))
}

fn conflist(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("net.d/10-weft.conflist")).unwrap()).unwrap()
}

/// The inode of a pod's link pin: the same one after a restart means nothing re-attached.
fn link_pin(pins: &Path, veth: &str) -> Option<u64> {
    std::fs::metadata(pins.join("links").join(veth))
        .ok()
        .map(|m| m.ino())
}

/// Stores a NetworkPolicy (weftd must be down: it holds the local store's lock).
fn put_policy(dir: &Path, namespace: &str, policy: Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = LocalStore::open(&dir.join("store.json")).unwrap();
        let name = policy["metadata"]["name"].as_str().unwrap().to_string();
        store
            .put_object(ObjectKind::NetworkPolicy, namespace, &name, &policy)
            .await
            .unwrap();
    });
}

#[test]
fn same_node_pods_take_the_fast_path_policed_ones_and_the_node_do_not() {
    let node = TestNs::with_prefix("wtdp");
    let tmp = TempDir::new("agent-datapath");
    let pins = Pins::new("agent");
    let (dir, pin_dir) = (tmp.path().to_path_buf(), pins.0.clone());
    node.open()
        .run(move || {
            let pins = pin_dir.as_path();
            let mut agent = start(&dir, "ebpf", pins);
            let dp = datapath(&dir);
            assert_eq!(
                (dp.requested.as_str(), dp.active.as_str()),
                ("ebpf", "ebpf"),
                "{dp:?}"
            );
            let a = Pod::add(&dir, "shop", "a");
            let b = Pod::add(&dir, "shop", "b");
            let c = Pod::add(&dir, "vault", "c");
            let dp = datapath(&dir);
            assert_eq!((dp.attached, dp.endpoints, dp.policed), (3, 3, 0), "{dp:?}");
            assert_eq!(fill(&dp, "weft_endpoints"), Some((3, 65536)), "{dp:?}");
            assert_eq!(fill(&dp, "weft_peers"), Some((0, 16384)), "{dp:?}");

            // Pod → pod: redirected, both ways.
            let before = datapath(&dir);
            assert!(a.ping(&b.address), "a → b");
            let after = datapath(&dir);
            assert!(
                after.redirected >= before.redirected + 4,
                "{before:?} → {after:?}"
            );
            // Pod → node: the kernel path.
            let before = after;
            assert!(a.ping(GATEWAY), "a → node");
            let after = datapath(&dir);
            assert_eq!(after.redirected, before.redirected, "{after:?}");
            assert!(after.passed >= before.passed + 2, "{before:?} → {after:?}");
            let flows = fill(&after, "weft_kernel_flows");
            assert!(
                flows.is_some_and(|(n, max)| n >= 1 && max == 65536),
                "a → node is a kernel flow: {after:?}"
            );

            // A restart under a policy that isolates vault/c (deny all ingress).
            let (prog, pin_a) = (after.program_id, link_pin(pins, &a.veth));
            assert!(pin_a.is_some());
            drop(agent);
            put_policy(
                &dir,
                "vault",
                json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": {"name": "deny-in", "namespace": "vault"},
                    "spec": {"podSelector": {}}}),
            );
            agent = start(&dir, "ebpf", pins);
            wait_until(&mut agent, "c policed", || datapath(&dir).policed == 1);
            let dp = datapath(&dir);
            assert_eq!(dp.program_id, prog, "the pinned program is reused");
            assert_eq!(
                link_pin(pins, &a.veth),
                pin_a,
                "a's link is the one pinned before"
            );
            assert_eq!((dp.attached, dp.endpoints), (3, 3), "{dp:?}");

            let before = dp;
            assert!(!a.ping(&c.address), "the nftables deny of policed c holds");
            let after = datapath(&dir);
            assert_eq!(
                after.redirected, before.redirected,
                "{before:?} → {after:?}"
            );
            assert!(after.passed >= before.passed + 2, "{before:?} → {after:?}");
            let before = after;
            assert!(a.ping(&b.address), "a → b stays on the fast path");
            assert!(datapath(&dir).redirected >= before.redirected + 4);

            // DEL detaches.
            b.del(&dir);
            assert_eq!(link_pin(pins, &b.veth), None, "b's link pin is gone");
            let dp = datapath(&dir);
            assert_eq!((dp.attached, dp.endpoints), (2, 2), "{dp:?}");

            // Back to nft: nothing of the fast path stays.
            drop(agent);
            let mut agent = start(&dir, "nft", pins);
            let dp = datapath(&dir);
            assert_eq!((dp.active.as_str(), dp.error.as_deref()), ("nft", None));
            assert!(!pins.exists(), "the pins are gone");
            for veth in [&a.veth, &c.veth] {
                assert_eq!(
                    weft_ebpf::tcx_ingress_programs(veth).unwrap(),
                    Vec::<u32>::new()
                );
            }
            assert!(a.ping(GATEWAY), "a → node on nft");
            drop(agent);

            // A fast path that cannot be loaded (its pin dir on no bpffs): nft, loudly.
            let bad = dir.join("not-bpffs");
            agent = start(&dir, "ebpf", &bad);
            let dp = datapath(&dir);
            assert_eq!((dp.requested.as_str(), dp.active.as_str()), ("ebpf", "nft"));
            assert!(
                dp.error
                    .as_deref()
                    .is_some_and(|e| e.contains("not on a bpffs")),
                "{dp:?}"
            );
            assert!(!a.ping(&c.address), "still policed by nftables");
            assert_eq!(
                weft_ebpf::tcx_ingress_programs(&a.veth).unwrap(),
                Vec::<u32>::new()
            );
            let _ = agent.0.kill();
            let _ = agent.0.wait();
            let log = agent.stderr();
            assert!(
                log.contains("datapath ebpf failed at start-up; running as nft"),
                "{log}"
            );
        })
        .expect("node namespace");
}

/// Puts a peer node on the underlay segment (192.0.2.20) with one block of the cluster
/// CIDR, under a lease that outlives the test (weftd must be down: it holds the store's
/// lock). Returns the block.
fn put_peer(dir: &Path, config: &str) -> ipnet::IpNet {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = LocalStore::open(&dir.join("store.json")).unwrap();
        let cfg = weft_store::ClusterConfig::from_json(config).unwrap();
        store.init_config(&cfg).await.unwrap();
        let lease = store.grant_lease(Duration::from_secs(3600)).await.unwrap();
        let block = store.claim_block("peer", Family::V4, lease).await.unwrap();
        let rec = NodeRecord {
            name: "peer".into(),
            underlay_v4: Some("192.0.2.20".parse().unwrap()),
            underlay_v6: None,
            vtep_mac: "0a:58:c0:00:02:14".into(),
            mtu: 1500,
            blocks: vec![block],
        };
        store.put_node(&rec, lease).await.unwrap();
        block
    })
}

#[test]
fn host_gw_peers_are_in_the_peer_map_and_the_uplink_program_on_the_underlay() {
    peers_in_the_peer_map_and_the_arrival_programs("host-gw");
}

#[test]
fn vxlan_peers_are_in_the_peer_map_and_the_arrival_program_on_weft_vx() {
    peers_in_the_peer_map_and_the_arrival_programs("vxlan");
}

/// A peer with one block: its route in the peer map as weft programmed it (host-gw: via the
/// peer's underlay address out of eth0; VXLAN: via its VTEP address, onlink, out of
/// `weft.vx`), the arrival program on eth0 (and `weft.vx`); a restart keeps those links,
/// `nft` removes them.
fn peers_in_the_peer_map_and_the_arrival_programs(backend: &'static str) {
    let config = format!(r#"{{"cidrV4":"10.96.0.0/24","blockSizeV4":26,"backend":"{backend}"}}"#);
    let node = TestNs::with_prefix("wtdq");
    let tmp = TempDir::new("agent-datapath-peers");
    let pins = Pins::new(if backend == "vxlan" {
        "agent-vx"
    } else {
        "agent-gw"
    });
    let (dir, pin_dir) = (tmp.path().to_path_buf(), pins.0.clone());
    node.open()
        .run(move || {
            let pins = pin_dir.as_path();
            let block = put_peer(&dir, &config);
            let mut agent = start_with(&dir, "ebpf", pins, &config);
            wait_until(&mut agent, "the peer's block in the peer map", || {
                datapath(&dir).peers == 1
            });
            let dp = datapath(&dir);
            assert_eq!(dp.uplink.as_deref(), Some("eth0"), "{dp:?}");
            assert_eq!(fill(&dp, "weft_peers"), Some((1, 16384)), "{dp:?}");
            let route = std::process::Command::new("ip")
                .args(["route", "show", &block.to_string()])
                .output()
                .unwrap();
            let route = String::from_utf8_lossy(&route.stdout).into_owned();
            // The arrival devices and the route the peer map must mirror.
            let (devices, via): (&[&str], String) = if backend == "vxlan" {
                assert_eq!(dp.tunnel.as_deref(), Some("weft.vx"), "{dp:?}");
                (
                    &["eth0", "weft.vx"],
                    format!("via {} dev weft.vx proto 87", block.network()),
                )
            } else {
                assert_eq!(dp.tunnel, None, "{dp:?}");
                (&["eth0"], "via 192.0.2.20 dev eth0 proto 87".to_owned())
            };
            assert!(route.contains(&via), "weft's {backend} route: {route}");
            for dev in devices {
                assert!(
                    !weft_ebpf::tcx_ingress_programs(dev).unwrap().is_empty(),
                    "the arrival program is on {dev}"
                );
            }
            let a = Pod::add(&dir, "shop", "a");
            assert!(
                a.ping("192.0.2.10"),
                "a → node with the arrival programs on"
            );

            // A restart re-uses the links.
            let pin_names: Vec<String> = devices
                .iter()
                .map(|d| format!("uplinks/{}", d.replace('.', "%2e")))
                .collect();
            let inodes = |pins: &Path| -> Vec<Option<u64>> {
                pin_names
                    .iter()
                    .map(|p| std::fs::metadata(pins.join(p)).ok().map(|m| m.ino()))
                    .collect()
            };
            let before = inodes(pins);
            assert!(before.iter().all(Option::is_some), "pinned: {pin_names:?}");
            drop(agent);
            agent = start_with(&dir, "ebpf", pins, &config);
            wait_until(&mut agent, "peer map after restart", || {
                datapath(&dir).peers == 1
            });
            assert_eq!(inodes(pins), before, "the links are the ones pinned before");

            // nft: no program on the arrival devices, no pins.
            drop(agent);
            let agent = start_with(&dir, "nft", pins, &config);
            assert!(!pins.exists(), "the pins are gone");
            for dev in devices {
                assert_eq!(
                    weft_ebpf::tcx_ingress_programs(dev).unwrap(),
                    Vec::<u32>::new(),
                    "{dev}"
                );
            }
            drop(agent);
            a.del(&dir);
        })
        .expect("node namespace");
}

/// A port mapping in the chain (the reference portmap after weft, as a runtime with
/// `hostPort` pods has it): pod a → the node's address:18080 is DNATed by the kernel to b's
/// 8080, and b's replies, though addressed to a local pod, must reach conntrack to be given
/// the node's address back. They pass as a kernel-path flow; without that a's socket would
/// take them for strangers and the connection would never open.
#[test]
fn a_port_mapping_in_the_chain_works_on_the_fast_path() {
    let node = TestNs::with_prefix("wtdm");
    let tmp = TempDir::new("agent-datapath-portmap");
    let pins = Pins::new("agent-pm");
    let (dir, pin_dir) = (tmp.path().to_path_buf(), pins.0.clone());
    node.open()
        .run(move || {
            let agent = start(&dir, "ebpf", &pin_dir);
            let mut chain = conflist(&dir);
            // Debian's reference plugins (v1.1.1) speak up to CNI 1.0.0.
            chain["cniVersion"] = json!("1.0.0");
            chain["plugins"]
                .as_array_mut()
                .unwrap()
                // No hairpin masquerade: b's replies go to a's own address, the case that
                // needs care (with it they go to the node, the kernel path anyway).
                .push(
                    json!({"type": "portmap", "capabilities": {"portMappings": true},
                    "snat": false}),
                );
            let mut caps = serde_json::Map::new();
            caps.insert(
                "portMappings".into(),
                json!([{"hostPort": 18080, "containerPort": 8080, "protocol": "tcp"}]),
            );
            let b = Pod::add_with(&dir, "shop", "b", chain.clone(), caps);
            let a = Pod::add_with(&dir, "shop", "a", chain, serde_json::Map::new());
            weft_testkit::tcp::serve_peer_address(&b.ns, "0.0.0.0:8080");
            let before = datapath(&dir);
            let seen = weft_testkit::tcp::peer_address_seen(&a.ns, "192.0.2.10:18080");
            let after = datapath(&dir);
            assert_eq!(
                seen.as_deref(),
                Ok(a.address.as_str()),
                "b answers a, through the node's port"
            );
            assert!(
                after.kernel_flow >= before.kernel_flow + 2,
                "b's replies passed as a kernel flow: {before:?} → {after:?}"
            );
            // The pods' own traffic still takes the fast path.
            assert!(a.ping(&b.address), "a → b");
            assert!(datapath(&dir).redirected >= after.redirected + 4);
            a.del(&dir);
            b.del(&dir);
            drop(agent);
        })
        .expect("node namespace");
}
