//! weftd's GC of pods whose DEL never came (docs/agent.md, "Pods whose DEL never came"), on
//! one node with the local store: a real weftd in a node namespace of its own (`wtgc…`),
//! pods ADDed by the real `weft` plugin from weftd's conflist into pod namespaces
//! (`wtgcp…`), exactly as a runtime does (weft_cni::runtime), then a pod's namespace deleted
//! with no DEL:
//!
//! - the gone pod's leases, endpoint file (and weftd's endpoint) and veth go within a few
//!   GC intervals, counted in `weft_gc_collected_total`; a second pod on the node keeps its
//!   lease, veth, endpoint and connectivity;
//! - a pod whose namespace is there is never collected, however old;
//! - a pod whose namespace went right after its ADD is kept until `--gc-grace` has passed.
//!
//! Needs the plugin binaries next to weftd (`cargo build -p weft-plugin`, or a workspace
//! build).

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use support::{TestNs, Weftd, weftd_command};
use weft_cni::runtime::{Attachment, Runtime};
use weft_proto::{Request, ask};
use weft_testkit::TempDir;

const CONFIG: &str = r#"{"cidrV4":"10.97.0.0/24","blockSizeV4":28,"backend":"vxlan"}"#;
const METRICS: &str = "127.0.0.1:9412";

/// Where `weft` is: next to weftd, where cargo builds every binary of the workspace.
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

/// weftd with a GC pass every second and a grace period of `grace` seconds, serving
/// metrics on the node namespace's own loopback. Call on a thread inside the node's
/// namespace.
fn start(dir: &Path, grace: u64) -> Weftd {
    std::fs::write(dir.join("cluster.json"), CONFIG).unwrap();
    let child = weftd_command(dir, "solo")
        .arg("--store-path")
        .arg(dir.join("store.json"))
        .arg("--cni-log-file")
        .arg(dir.join("cni.log"))
        .args(["--resync-interval", "1", "--gc-grace", &grace.to_string()])
        .args(["--metrics-address", METRICS])
        .spawn()
        .expect("start weftd");
    let mut agent = Weftd(child);
    let conflist = dir.join("net.d/10-weft.conflist");
    wait_until(&mut agent, "weftd ready", Duration::from_secs(20), || {
        conflist.is_file() && status(dir).is_some()
    });
    agent
}

/// Polls `done` every 100 ms until it holds; panics after `limit` or when weftd exits.
#[track_caller]
fn wait_until(agent: &mut Weftd, what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
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
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
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

/// A pod attached by the real plugin.
struct Pod {
    ns: weft_testkit::TestNs,
    id: String,
    addresses: Vec<IpAddr>,
    veth: String,
}

impl Pod {
    /// ADDs a new pod namespace through weftd's conflist, as containerd would. Call on a
    /// thread inside the node's namespace (the plugin wires the node it runs in).
    fn add(dir: &Path, name: &str) -> Pod {
        let ns = weft_testkit::TestNs::new("wtgcp");
        let id = format!("c-{name}-{}", ns.name);
        let conf: Value =
            serde_json::from_slice(&std::fs::read(dir.join("net.d/10-weft.conflist")).unwrap())
                .unwrap();
        let att = Attachment {
            container_id: id.clone(),
            netns: ns.path().display().to_string(),
            ifname: "eth0".into(),
            cni_args: Some(format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME={name}"
            )),
            ..Attachment::default()
        };
        let result = Runtime::new(vec![plugin_dir()])
            .add(&conf, &att)
            .unwrap_or_else(|e| panic!("ADD {name}: {e}\n{}", e.stderr));
        let addresses = result["ips"]
            .as_array()
            .expect("ips")
            .iter()
            .map(|ip| {
                let a = ip["address"].as_str().expect("address");
                a.split('/').next().unwrap().parse().expect("ip")
            })
            .collect();
        let endpoint: Value =
            serde_json::from_slice(&std::fs::read(endpoint_file(dir, &id)).unwrap()).unwrap();
        let veth = endpoint["hostInterface"]
            .as_str()
            .expect("veth")
            .to_string();
        Pod {
            ns,
            id,
            addresses,
            veth,
        }
    }
}

fn endpoint_file(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("run/endpoints/{id}-eth0.json"))
}

/// The lease files of the node's network (`<state-dir>/ipam/weft/<ip>`), by address.
fn leases(dir: &Path) -> BTreeSet<IpAddr> {
    std::fs::read_dir(dir.join("state/ipam/weft"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_str()?.parse().ok())
        .collect()
}

/// The other files of the lease directory (`lock`, `last_reserved_ip.0`).
fn lease_dir_others(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir.join("state/ipam/weft"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.parse::<IpAddr>().is_err())
        .collect()
}

fn endpoint_files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir.join("run/endpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Whether the node (this thread's namespace) has link `name`.
fn link(name: &str) -> bool {
    weft_net::Handle::new()
        .unwrap()
        .link_by_name(name)
        .unwrap()
        .is_some()
}

/// weftd's count of collected pods (`weft_gc_collected_total`), from this namespace's
/// loopback.
fn collected_total() -> f64 {
    let addr: SocketAddr = METRICS.parse().unwrap();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: weftd\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply
        .lines()
        .find_map(|l| l.strip_prefix("weft_gc_collected_total "))
        .unwrap_or_else(|| panic!("no weft_gc_collected_total in {reply}"))
        .parse()
        .unwrap()
}

/// What of `p` must stay on the node: its leases, its endpoint file and its veth.
#[track_caller]
fn assert_intact(dir: &Path, p: &Pod) {
    let held = leases(dir);
    for a in &p.addresses {
        assert!(held.contains(a), "{}'s lease {a} is gone: {held:?}", p.id);
    }
    assert!(
        endpoint_file(dir, &p.id).is_file(),
        "{}'s endpoint file",
        p.id
    );
    assert!(link(&p.veth), "{}'s veth {} is gone", p.id, p.veth);
}

#[test]
fn a_pod_whose_namespace_is_gone_is_collected_and_nothing_else() {
    let node = TestNs::with_prefix("wtgc");
    let tmp = TempDir::new("agent-gc");
    let dir = tmp.path().to_path_buf();
    node.open()
        .run(move || {
            let mut agent = start(&dir, 2);
            let mut gone = Pod::add(&dir, "gone");
            let kept = Pod::add(&dir, "kept");
            let gateway = "10.97.0.1";
            assert!(
                kept.ns.exec(&["ping", "-c1", "-W2", gateway]).0,
                "the kept pod reaches its gateway before"
            );
            assert_eq!(status(&dir).unwrap().policy.endpoints, 2);
            let others = lease_dir_others(&dir);
            assert_eq!(collected_total(), 0.0);

            // No DEL: the runtime lost the pod.
            gone.ns.delete();
            wait_until(
                &mut agent,
                "the gone pod collected",
                Duration::from_secs(15),
                || {
                    !endpoint_file(&dir, &gone.id).exists()
                        && gone.addresses.iter().all(|a| !leases(&dir).contains(a))
                        && status(&dir).is_some_and(|s| s.policy.endpoints == 1)
                },
            );
            // Deleted by the GC, or by the kernel with the namespace (whose teardown runs
            // in the background and may still be under way).
            wait_until(
                &mut agent,
                "the gone pod's veth deleted",
                Duration::from_secs(5),
                || !link(&gone.veth),
            );
            assert_eq!(collected_total(), 1.0);

            // Nothing else: the other pod's lease, file, endpoint and veth, the lease
            // directory's own files.
            assert_intact(&dir, &kept);
            assert_eq!(
                leases(&dir),
                kept.addresses.iter().copied().collect::<BTreeSet<_>>()
            );
            assert_eq!(
                endpoint_files(&dir),
                BTreeSet::from([format!("{}-eth0.json", kept.id)])
            );
            assert_eq!(lease_dir_others(&dir), others);
            assert!(
                kept.ns.exec(&["ping", "-c1", "-W2", gateway]).0,
                "the kept pod reaches its gateway after"
            );
            // And it stays so: later passes find nothing more to do.
            std::thread::sleep(Duration::from_secs(3));
            assert_intact(&dir, &kept);
            assert_eq!(status(&dir).unwrap().policy.endpoints, 1);
            assert_eq!(collected_total(), 1.0);
        })
        .unwrap();
}

#[test]
fn a_pod_whose_namespace_is_there_is_never_collected() {
    let node = TestNs::with_prefix("wtgc");
    let tmp = TempDir::new("agent-gc");
    let dir = tmp.path().to_path_buf();
    node.open()
        .run(move || {
            let mut agent = start(&dir, 1);
            let alive = Pod::add(&dir, "alive");
            // A pod that does go, to see the passes run while the other one ages.
            let mut canary = Pod::add(&dir, "canary");
            canary.ns.delete();
            wait_until(
                &mut agent,
                "the canary collected",
                Duration::from_secs(15),
                || !endpoint_file(&dir, &canary.id).exists(),
            );
            // Many passes past the grace period.
            std::thread::sleep(Duration::from_secs(5));
            assert_intact(&dir, &alive);
            assert_eq!(
                leases(&dir),
                alive.addresses.iter().copied().collect::<BTreeSet<_>>()
            );
            assert_eq!(status(&dir).unwrap().policy.endpoints, 1);
            assert_eq!(collected_total(), 1.0);
        })
        .unwrap();
}

#[test]
fn a_pod_gone_right_after_its_add_waits_for_the_grace_period() {
    const GRACE: u64 = 6;
    let node = TestNs::with_prefix("wtgc");
    let tmp = TempDir::new("agent-gc");
    let dir = tmp.path().to_path_buf();
    node.open()
        .run(move || {
            let mut agent = start(&dir, GRACE);
            let before_add = SystemTime::now();
            let mut young = Pod::add(&dir, "young");
            young.ns.delete();
            let grace = Duration::from_secs(GRACE);
            // Passes every second find it gone, and leave it: it is younger than the grace
            // (measured from its ADD, which began at `before_add`; a margin for the clock).
            let keep_until = before_add + grace - Duration::from_millis(500);
            let mut checks = 0;
            while SystemTime::now() < keep_until {
                assert!(
                    young.addresses.iter().all(|a| leases(&dir).contains(a)),
                    "collected {:?} after its ADD began",
                    before_add.elapsed().unwrap()
                );
                assert!(endpoint_file(&dir, &young.id).is_file());
                checks += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
            assert!(checks >= 10, "the pod was watched during the grace period");
            assert_eq!(collected_total(), 0.0);
            wait_until(
                &mut agent,
                "the pod collected after the grace period",
                Duration::from_secs(10),
                || {
                    !endpoint_file(&dir, &young.id).exists()
                        && young.addresses.iter().all(|a| !leases(&dir).contains(a))
                },
            );
            assert!(before_add.elapsed().unwrap() >= grace);
            // The files go on the GC's thread; the policy follows on the control loop's
            // next commit, a moment later.
            wait_until(
                &mut agent,
                "the collected pod gone from the policy",
                Duration::from_secs(5),
                || status(&dir).is_some_and(|s| s.policy.endpoints == 0),
            );
            assert_eq!(collected_total(), 1.0);
        })
        .unwrap();
}
