//! weftd's `/metrics`, `/healthz` and `/readyz` (docs/metrics.md) on a real weftd in a
//! network namespace of its own (`wtmx…`, its loopback private, so the DaemonSet's port
//! 9412 is free in every test):
//!
//! - with the local store: ready once started, the exposition parses as OpenMetrics text
//!   and says what the node holds; an `attach` on the socket counts; packets a
//!   NetworkPolicy drops (sent from a client namespace through the node) show per policy,
//!   equal to what `{"op":"status"}` reports; bad requests get 405/431/404/400 and the
//!   server keeps serving;
//! - with a real etcd that is then stopped: `weft_datastore_up` drops to 0 within a bounded
//!   wait while `/readyz` stays ready (pods keep starting through an outage) and
//!   `/healthz` alive past its own bound, and comes back to 1 with etcd.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{TestNs, Weftd, weftd_command};
use weft_proto::{Request, Status, ask};
use weft_store::{Datastore, LocalStore, ObjectKind};
use weft_testkit::TempDir;
use weft_testkit::etcd::EtcdServer;

const ADDR: &str = "127.0.0.1:9412";
const CONFIG: &str = r#"{"cidrV4":"10.97.0.0/24","blockSizeV4":28,"backend":"vxlan"}"#;

/// A GET (or any raw request) to weftd's metrics address: status and body.
fn exchange(request: &[u8]) -> (u16, String) {
    let addr: SocketAddr = ADDR.parse().unwrap();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // weftd may answer, and stop reading, before a long request is all sent.
    let _ = s.write_all(request);
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let (head, body) = reply
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {reply:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    assert!(head.contains("\r\nConnection: close"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no Content-Length in {head:?}"));
    assert_eq!(length, body.len(), "{reply}");
    (status, body.to_string())
}

fn get(path: &str) -> (u16, String) {
    exchange(format!("GET {path} HTTP/1.1\r\nHost: weftd\r\n\r\n").as_bytes())
}

/// Polls `path` until `done` holds for its reply, at most `limit`; the last reply.
fn wait_for(
    agent: &mut Weftd,
    path: &str,
    limit: Duration,
    done: impl Fn(u16, &str) -> bool,
) -> (u16, String) {
    let start = Instant::now();
    let mut last = (0, String::new());
    loop {
        if let Ok(Some(status)) = agent.0.try_wait() {
            panic!("weftd exited ({status}): {}", agent.stderr());
        }
        let addr: SocketAddr = ADDR.parse().unwrap();
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            last = get(path);
            if done(last.0, &last.1) {
                return last;
            }
        }
        assert!(
            start.elapsed() < limit,
            "{path} not as expected within {limit:?}; last reply {} {:?}",
            last.0,
            last.1
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The samples of an OpenMetrics text exposition (`name{labels}` as written → value),
/// after checking what a scraper relies on: metadata before a family's samples, known
/// types, each sample named after its family (with the suffixes its type allows), families
/// not interleaved, no sample twice, well-formed labels and values, histograms with a
/// `+Inf` bucket equal to their count, and one `# EOF` that ends the text.
fn openmetrics(text: &str) -> BTreeMap<String, f64> {
    assert!(text.ends_with("# EOF\n"), "no final # EOF: {text}");
    let body = &text[..text.len() - "# EOF\n".len()];
    assert!(!body.contains("# EOF"), "# EOF before the end: {text}");
    let mut samples = BTreeMap::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    let valid_name = |n: &str| {
        !n.is_empty()
            && !n.starts_with(|c: char| c.is_ascii_digit())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    for line in body.lines() {
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (kind, family) = (parts.next().unwrap(), parts.next().unwrap_or(""));
            let rest = parts.next().unwrap_or("");
            assert!(valid_name(family), "bad family name in {line:?}");
            if current.as_deref() != Some(family) {
                assert!(!done.contains(family), "family {family} interleaved");
                if let Some(c) = current.replace(family.to_string()) {
                    done.insert(c);
                }
            }
            match kind {
                "TYPE" => {
                    assert!(
                        [
                            "counter",
                            "gauge",
                            "histogram",
                            "info",
                            "unknown",
                            "stateset",
                            "gaugehistogram",
                            "summary"
                        ]
                        .contains(&rest),
                        "{line}"
                    );
                    assert!(
                        types.insert(family.into(), rest.into()).is_none(),
                        "{family} typed twice"
                    );
                }
                "HELP" => {}
                "UNIT" => assert!(family.ends_with(&format!("_{rest}")), "{line}"),
                other => panic!("unknown metadata {other:?} in {line:?}"),
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, Some(l)),
            None => (series, None),
        };
        if let Some(labels) = labels {
            let labels = labels
                .strip_suffix('}')
                .unwrap_or_else(|| panic!("unclosed labels in {line:?}"));
            for pair in labels.split("\",").map(|p| p.trim_end_matches('"')) {
                let (k, v) = pair
                    .split_once("=\"")
                    .unwrap_or_else(|| panic!("bad label {pair:?} in {line:?}"));
                assert!(valid_name(k), "bad label name in {line:?}");
                assert!(!v.contains('\n'), "{line:?}");
            }
        }
        let family = current
            .as_deref()
            .unwrap_or_else(|| panic!("sample before any family: {line:?}"));
        let ty = types
            .get(family)
            .unwrap_or_else(|| panic!("family {family} has no # TYPE"));
        let suffix = name
            .strip_prefix(family)
            .unwrap_or_else(|| panic!("sample {name} outside its family {family}"));
        let allowed: &[&str] = match ty.as_str() {
            "counter" => &["_total", "_created"],
            "gauge" | "unknown" => &[""],
            "histogram" => &["_bucket", "_count", "_sum", "_created"],
            "info" => &["_info"],
            _ => &[""],
        };
        assert!(allowed.contains(&suffix), "{name} in a {ty} family");
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "sample {series} twice"
        );
    }
    for (family, ty) in &types {
        if ty == "histogram" {
            let count = samples.get(&format!("{family}_count")).copied();
            let inf = samples
                .get(&format!("{family}_bucket{{le=\"+Inf\"}}"))
                .copied();
            assert_eq!(count, inf, "{family}: +Inf bucket and count differ");
        }
    }
    samples
}

fn metrics() -> BTreeMap<String, f64> {
    let (status, body) = get("/metrics");
    assert_eq!(status, 200, "{body}");
    openmetrics(&body)
}

fn status(dir: &Path) -> Status {
    let reply = ask(
        &dir.join("run/weftd.sock"),
        &Request::Status,
        Duration::from_secs(5),
    )
    .unwrap();
    *reply.status.expect("a status")
}

/// A pod the plugin attached: its endpoint file (the plugin writes it before `attach`).
fn endpoint_file(dir: &Path, container: &str, name: &str, addr: &str) {
    let eps = dir.join("run/endpoints");
    std::fs::create_dir_all(&eps).unwrap();
    std::fs::write(
        eps.join(format!("{container}-eth0.json")),
        json!({"containerId": container, "ifname": "eth0", "namespace": "shop",
            "name": name, "addresses": [addr], "hostInterface": format!("wv{container}"),
            "mode": "bridge"})
        .to_string(),
    )
    .unwrap();
}

/// A client namespace behind the node (198.51.100.2 via 198.51.100.1 on a veth), and a
/// route on the node to the pod address: what the client sends to the pod is forwarded by
/// the node, through the policy table's forward hook.
fn client_behind(node: &TestNs, pod: &str) -> weft_testkit::TestNs {
    let client = weft_testkit::TestNs::new("wtmc");
    node.0.ip(&[
        "link",
        "add",
        "wmc0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &client.name,
    ]);
    node.0
        .ip(&["addr", "add", "198.51.100.1/24", "dev", "wmc0"]);
    node.0.ip(&["link", "set", "wmc0", "up"]);
    // Any way out will do: the policy drops the packets on the forward hook, before they
    // leave (this kernel has no dummy links).
    node.0
        .ip(&["route", "add", &format!("{pod}/32"), "dev", "eth0"]);
    client.ip(&["addr", "add", "198.51.100.2/24", "dev", "eth0"]);
    client.ip(&["link", "set", "eth0", "up"]);
    client.ip(&["route", "add", "default", "via", "198.51.100.1"]);
    client
}

fn start_local(dir: &Path) -> Weftd {
    std::fs::write(dir.join("cluster.json"), CONFIG).unwrap();
    let child = weftd_command(dir, "solo")
        .arg("--store-path")
        .arg(dir.join("store.json"))
        .args(["--metrics-address", ADDR])
        .spawn()
        .expect("start weftd");
    Weftd(child)
}

#[test]
fn a_single_node_weftd_serves_metrics_and_probes() {
    let ns = TestNs::with_prefix("wtmx");
    let dir = TempDir::new("agent-metrics");
    // Stored before weftd runs (the local store is weftd's alone while it runs): web-0 is
    // isolated for ingress and allowed nothing.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = LocalStore::open(&dir.path().join("store.json")).unwrap();
        let deny = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "deny-all", "namespace": "shop"},
            "spec": {"podSelector": {}}});
        store
            .put_object(ObjectKind::NetworkPolicy, "shop", "deny-all", &deny)
            .await
            .unwrap();
    });
    endpoint_file(dir.path(), "c1", "web-0", "10.97.0.2");
    let client = client_behind(&ns, "10.97.0.2");
    let d = dir.path().to_path_buf();
    ns.open()
        .run(move || {
            let mut agent = start_local(&d);
            let (_, body) = wait_for(&mut agent, "/readyz", Duration::from_secs(20), |s, _| {
                s == 200
            });
            assert_eq!(body, "ok\n", "nothing unmet");
            assert_eq!(get("/healthz"), (200, "ok\n".to_string()));

            // Ready says the first view is in the kernel; synced is momentary (a change
            // waits a moment to be coalesced, and weftd's own endpoint publication is one).
            let (_, body) = wait_for(&mut agent, "/metrics", Duration::from_secs(5), |_, b| {
                openmetrics(b).get("weft_policy_synced") == Some(&1.0)
            });
            let m = openmetrics(&body);
            for (series, want) in [
                ("weft_blocks{family=\"v4\"}", 1.0),
                ("weft_datastore_up", 1.0),
                ("weft_peers", 0.0),
                (
                    concat!(
                        "weft_build_info{version=\"",
                        env!("CARGO_PKG_VERSION"),
                        "\"}"
                    ),
                    1.0,
                ),
                (
                    "weft_policy_denied_packets_total{namespace=\"shop\",policy=\"deny-all\"}",
                    0.0,
                ),
            ] {
                assert_eq!(m.get(series), Some(&want), "{series} in {m:#?}");
            }
            assert!(
                m["weft_policy_commit_seconds_count"] >= 1.0,
                "the first view was committed: {m:#?}"
            );

            // The plugin's attach of a second pod: counted by op.
            let attach = "weft_plugin_requests_total{op=\"attach\"}";
            let before = m.get(attach).copied().unwrap_or(0.0);
            endpoint_file(&d, "c2", "web-1", "10.97.0.3");
            let reply = ask(
                &d.join("run/weftd.sock"),
                &Request::Attach {
                    container_id: "c2".into(),
                    ifname: "eth0".into(),
                },
                Duration::from_secs(10),
            )
            .unwrap();
            assert!(reply.ok, "{reply:?}");
            let m = metrics();
            assert_eq!(m.get(attach), Some(&(before + 1.0)), "{m:#?}");
            assert!(m["weft_policy_commit_seconds_count"] >= 2.0, "{m:#?}");

            // Five datagrams to web-0 from outside the node: dropped by deny-all's class,
            // counted per pod by the kernel, reported per policy.
            client.run(|| {
                let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
                for _ in 0..5 {
                    sock.send_to(b"denied", "10.97.0.2:7").unwrap();
                }
            });
            let denied = "weft_policy_denied_packets_total{namespace=\"shop\",policy=\"deny-all\"}";
            let (_, body) = wait_for(&mut agent, "/metrics", Duration::from_secs(5), |_, b| {
                openmetrics(b).get(denied).is_some_and(|v| *v >= 5.0)
            });
            let scraped = openmetrics(&body)[denied];
            assert_eq!(scraped, 5.0, "exactly what was sent: {body}");
            // The same kernel counters as `weftctl status` shows.
            let st = status(&d);
            let reported: u64 = st
                .policy
                .denied
                .iter()
                .filter(|c| c.policies.iter().any(|p| p == "shop/deny-all"))
                .map(|c| c.packets)
                .sum();
            assert_eq!(reported as f64, scraped, "{:?}", st.policy.denied);

            // Bad requests: refused with their status, and weftd keeps serving.
            let (code, body) = exchange(b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
            assert_eq!(code, 405, "{body}");
            let (code, _) = exchange(
                format!(
                    "GET /metrics HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
                    "a".repeat(16 * 1024)
                )
                .as_bytes(),
            );
            assert_eq!(code, 431);
            assert_eq!(get("/debug/pprof").0, 404);
            assert_eq!(exchange(b"GET /metrics\r\n\r\n").0, 400);
            assert_eq!(get("/healthz"), (200, "ok\n".to_string()));
            assert_eq!(get("/readyz"), (200, "ok\n".to_string()));
        })
        .unwrap();
}

#[test]
fn a_datastore_outage_shows_in_metrics_and_leaves_the_node_ready() {
    let ns = TestNs::with_prefix("wtmx");
    ns.open()
        .run(|| {
            let mut etcd = EtcdServer::start().unwrap();
            let dir = TempDir::new("agent-metrics-etcd");
            std::fs::write(dir.path().join("cluster.json"), CONFIG).unwrap();
            let child = weftd_command(dir.path(), "n1")
                .args(["--etcd-endpoints", &etcd.endpoint()])
                .args(["--lease-ttl", "3", "--resync-interval", "1"])
                .args(["--metrics-address", ADDR])
                .spawn()
                .expect("start weftd");
            let mut agent = Weftd(child);
            wait_for(&mut agent, "/readyz", Duration::from_secs(20), |s, _| {
                s == 200
            });
            assert_eq!(metrics().get("weft_datastore_up"), Some(&1.0));

            etcd.stop();
            let stopped = Instant::now();
            wait_for(&mut agent, "/metrics", Duration::from_secs(15), |_, b| {
                openmetrics(b).get("weft_datastore_up") == Some(&0.0)
            });
            eprintln!("weft_datastore_up 0 after {:?}", stopped.elapsed());
            // Past the liveness bound (10 s for this resync interval): the loop that waits
            // on the datastore is alive, and the node still runs pods.
            while stopped.elapsed() < Duration::from_secs(12) {
                assert_eq!(get("/healthz"), (200, "ok\n".to_string()));
                assert_eq!(get("/readyz"), (200, "ok\n".to_string()));
                std::thread::sleep(Duration::from_millis(500));
            }
            let m = metrics();
            assert_eq!(m.get("weft_datastore_up"), Some(&0.0), "{m:#?}");
            assert_eq!(m.get("weft_blocks{family=\"v4\"}"), Some(&1.0), "{m:#?}");

            etcd.restart().unwrap();
            wait_for(&mut agent, "/metrics", Duration::from_secs(15), |_, b| {
                openmetrics(b).get("weft_datastore_up") == Some(&1.0)
            });
            assert_eq!(get("/readyz"), (200, "ok\n".to_string()));
        })
        .unwrap();
}
