//! Time to apply one change through the real weftd at benchmark scale: 1,000 pods (500 on
//! this node as endpoint files, 500 published by another node), 1,000 or 10,000 rules
//! (policies of 10 rules, the shape of `crates/policy/tests/scale.rs`), in etcd. It reports
//! weftd's own timings of each commit (its `policy applied` log line: load, world, compile,
//! persist, commit, and whether it went over netlink) for policy
//! edits and pod relabels (datastore events folded into the view in memory) and for pod
//! attaches (an endpoint file and `attach`), and what a `policy-sync` (a full load) costs.
//!
//! Not a timed test: ignored by default, run in release —
//! `cargo test --release -p weft-agent --test policy_scale -- --ignored --nocapture --test-threads 1`
//! (`WEFT_SCALE_RULES=1000,10000` picks the sizes; `WEFT_SCALE_NO_CIDRS=1` makes every
//! peer a pod selector, without the CIDR interval sets `nft` reads back on every change).

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{TestNs, Weftd, weftd_command};
use weft_proto::{PolicyStatus, Request, ask};
use weft_store::{Datastore, EndpointRecord, EtcdOptions, EtcdStore, ObjectKind};
use weft_testkit::TempDir;
use weft_testkit::etcd::EtcdServer;

const PODS: u32 = 1000;

fn policy(k: usize, variant: usize, cidrs: bool) -> Value {
    let ingress: Vec<Value> = (0..10)
        .map(|j| {
            json!({
                "from": [
                    {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": format!("a{}", (k + j) % 50)}}},
                    if cidrs {
                        json!({"ipBlock": {"cidr": format!("172.{}.{}.0/24", 16 + j, k % 256)}})
                    } else {
                        json!({"podSelector": {"matchLabels": {"app": format!("a{}", (k + j + 25) % 50)}}})
                    }
                ],
                "ports": [{"port": 1000 + (k * 10 + j + variant) % 5000}]
            })
        })
        .collect();
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": format!("p{k}"), "namespace": format!("n{}", k % 10)},
        "spec": {"podSelector": {"matchLabels": {"app": format!("a{}", k % 50)}}, "ingress": ingress}})
}

fn labels(i: u32, app: u32) -> Value {
    json!({"apiVersion": "weft.dev/v1", "kind": "PodLabels",
        "metadata": {"name": format!("p{i}"), "namespace": format!("n{}", i % 10),
            "labels": {"app": format!("a{app}"), "tier": format!("t{}", i % 5)}}})
}

fn addr(i: u32) -> String {
    let host = i / 2 + 2;
    format!("10.{}.{}.{}", 90 + i % 2, host / 256, host % 256)
}

fn status(dir: &Path) -> Option<PolicyStatus> {
    let reply = ask(
        &dir.join("run/weftd.sock"),
        &Request::Status,
        Duration::from_secs(60),
    )
    .ok()?;
    Some(reply.status?.policy)
}

/// `policy-sync`: the node's policy status once the whole view is committed.
fn sync(dir: &Path) -> PolicyStatus {
    let reply = ask(
        &dir.join("run/weftd.sock"),
        &Request::PolicySync,
        Duration::from_secs(30),
    )
    .expect("policy-sync");
    assert!(reply.ok, "policy-sync refused: {reply:?}");
    reply.status.expect("status").policy
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One line per kind of change: the medians of weftd's own timings.
fn report(rules: &str, what: &str, samples: &[Value]) {
    let m = |k: &str| median(samples.iter().map(|s| s[k].as_f64().unwrap()).collect());
    let modes: std::collections::BTreeSet<&str> =
        samples.iter().filter_map(|s| s["mode"].as_str()).collect();
    let netlink = samples.iter().filter(|s| s["via"] == "netlink").count();
    println!(
        "rules={rules:>5} {what:<16} n={:>2} total={:>7.2} ms (load {:.2}, world {:.2}, compile {:.2}, persist {:.2}, commit {:.2}) ops={} mode={modes:?} netlink={netlink}/{}",
        samples.len(),
        m("totalMs"),
        m("loadMs"),
        m("worldMs"),
        m("compileMs"),
        m("persistMs"),
        m("nftMs"),
        m("ops"),
        samples.len(),
    );
}

/// weftd's `policy applied` log lines (one per committed change), as `lastChange`-shaped
/// objects. Read from its log file rather than by polling `status`: every status runs
/// `nft -j list table` for the counters, which at 10,000 rules would compete with the very
/// commits being timed.
fn commits(log: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["msg"] == "policy applied")
        .map(|mut v| {
            let total: f64 = ["loadMs", "worldMs", "compileMs", "persistMs", "nftMs"]
                .iter()
                .filter_map(|k| v[*k].as_f64())
                .sum();
            v["totalMs"] = json!(total);
            v
        })
        .collect()
}

/// The next commit weftd logs after the `seen` ones; after 10 s without one, the
/// `policy-sync` barrier's `lastApply` (and a note that the change was not seen through the
/// event path).
fn next_change(dir: &Path, log: &Path, seen: &mut usize) -> Value {
    let started = Instant::now();
    loop {
        let all = commits(log);
        if all.len() > *seen {
            *seen = all.len();
            return all[all.len() - 1].clone();
        }
        if started.elapsed() > Duration::from_secs(10) {
            let last = serde_json::to_value(sync(dir).last_apply).unwrap();
            println!("  no commit seen within 10 s; policy-sync: {last}");
            return last;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn run(rules: usize, cidrs: bool) {
    let ns = TestNs::new();
    ns.open()
        .run(|| {
            let etcd = EtcdServer::start().unwrap();
            let dir = TempDir::new("agent-policy-scale");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let store = rt.block_on(EtcdStore::connect(EtcdOptions {
                timeout: Duration::from_secs(2),
                ..EtcdOptions::new(vec![etcd.endpoint()])
            })).unwrap();
            let lease = rt
                .block_on(store.grant_lease(Duration::from_secs(600)))
                .unwrap();
            rt.block_on(async {
                for k in 0..rules / 10 {
                    store
                        .put_object(
                            ObjectKind::NetworkPolicy,
                            &format!("n{}", k % 10),
                            &format!("p{k}"),
                            &policy(k, 0, cidrs),
                        )
                        .await
                        .unwrap();
                }
                for i in 0..PODS {
                    store
                        .put_object(
                            ObjectKind::PodLabels,
                            &format!("n{}", i % 10),
                            &format!("p{i}"),
                            &labels(i, i % 50),
                        )
                        .await
                        .unwrap();
                    if i % 2 == 1 {
                        let rec = EndpointRecord {
                            node: "n2".into(),
                            namespace: format!("n{}", i % 10),
                            name: format!("p{i}"),
                            container_id: format!("c{i}"),
                            ifname: "eth0".into(),
                            addresses: vec![addr(i).parse().unwrap()],
                        };
                        store.put_endpoint(&rec, lease).await.unwrap();
                    }
                }
            });
            let eps = dir.path().join("run/endpoints");
            std::fs::create_dir_all(&eps).unwrap();
            for i in (0..PODS).step_by(2) {
                std::fs::write(
                    eps.join(format!("c{i}-eth0.json")),
                    json!({"containerId": format!("c{i}"), "ifname": "eth0",
                        "namespace": format!("n{}", i % 10), "name": format!("p{i}"),
                        "addresses": [addr(i)], "hostInterface": format!("wv{i}"), "mode": "bridge"})
                    .to_string(),
                )
                .unwrap();
            }
            std::fs::write(
                dir.path().join("cluster.json"),
                r#"{"cidrV4":"10.90.0.0/15","blockSizeV4":24,"backend":"vxlan"}"#,
            )
            .unwrap();
            let log = dir.path().join("weftd.log");
            let mut agent = Weftd(
                weftd_command(dir.path(), "n1")
                    .args(["--etcd-endpoints", &etcd.endpoint()])
                    .stderr(std::fs::File::create(&log).expect("weftd log"))
                    .spawn()
                    .expect("start weftd"),
            );
            let started = Instant::now();
            let first = loop {
                if let Ok(Some(status)) = agent.0.try_wait() {
                    panic!(
                        "weftd exited ({status}): {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                if let Some(st) = status(dir.path()).filter(|s| s.in_sync) {
                    break st;
                }
                assert!(started.elapsed() < Duration::from_secs(120), "not in sync");
                std::thread::sleep(Duration::from_millis(100));
            };
            assert_eq!(first.policies, rules / 10, "{first:?}");
            assert_eq!(first.endpoints, PODS as usize / 2, "{first:?}");
            println!(
                "rules={rules:>5} cidrs={cidrs} first apply: {:?} (rules in the table {})",
                first.last_change, first.rules
            );

            let label = format!("{rules} {}", if cidrs { "cidrs" } else { "pods-only" });
            // Policy edits: one policy's ports move (a datastore event, folded in).
            let mut samples = Vec::new();
            let mut seen = commits(&log).len();
            for n in 0..10 {
                // An even k: policy k selects app a{k % 50}, and only even apps have pods on
                // this node (odd k would change nothing here, and time no commit).
                let k = (n * 74) % (rules / 10);
                rt.block_on(store.put_object(
                    ObjectKind::NetworkPolicy,
                    &format!("n{}", k % 10),
                    &format!("p{k}"),
                    &policy(k, n + 1, cidrs),
                ))
                .unwrap();
                samples.push(next_change(dir.path(), &log, &mut seen));
            }
            report(&label, "policy edit", &samples);

            // Relabels: a pod (local or remote) changes app.
            let mut samples = Vec::new();
            for n in 0..10u32 {
                let i = (n * 61) % PODS;
                rt.block_on(store.put_object(
                    ObjectKind::PodLabels,
                    &format!("n{}", i % 10),
                    &format!("p{i}"),
                    &labels(i, (i + n + 1) % 50),
                ))
                .unwrap();
                samples.push(next_change(dir.path(), &log, &mut seen));
            }
            report(&label, "pod relabel", &samples);
            // The barrier: policy-sync loads the whole view again (nothing to change).
            let st = sync(dir.path());
            assert!(st.last_error.is_none(), "{st:?}");
            println!(
                "rules={label} policy-sync (full load, no change): {:?}",
                st.last_apply
            );

            // Attaches: a new local pod, its file, and `attach` (answered after the commit).
            let mut samples = Vec::new();
            for n in 0..10u32 {
                let i = 2 * PODS + 2 * n;
                std::fs::write(
                    eps.join(format!("c{i}-eth0.json")),
                    json!({"containerId": format!("c{i}"), "ifname": "eth0",
                        "namespace": format!("n{}", n % 10), "name": format!("new{n}"),
                        "addresses": [addr(i)], "hostInterface": format!("wv{i}"), "mode": "bridge"})
                    .to_string(),
                )
                .unwrap();
                let reply = ask(
                    &dir.path().join("run/weftd.sock"),
                    &Request::Attach {
                        container_id: format!("c{i}"),
                        ifname: "eth0".into(),
                    },
                    Duration::from_secs(30),
                )
                .unwrap();
                assert!(reply.ok, "{reply:?}");
                samples.push(next_change(dir.path(), &log, &mut seen));
            }
            report(&label, "pod attach", &samples);
        })
        .unwrap();
}

#[test]
#[ignore = "benchmark: run in release with --ignored --nocapture"]
fn one_change_at_scale() {
    let sizes = std::env::var("WEFT_SCALE_RULES").unwrap_or_else(|_| "1000,10000".into());
    let cidrs = std::env::var("WEFT_SCALE_NO_CIDRS").is_err();
    for s in sizes.split(',') {
        run(
            s.trim().parse().expect("WEFT_SCALE_RULES: rule counts"),
            cidrs,
        );
    }
}
