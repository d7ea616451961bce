//! weftd's NetworkPolicy on one node with the local store: a policy stored before the start
//! and a pod's endpoint file written while weftd was down are compiled into `inet
//! weft_policy` (with `--policy-log-rate`), the plan is persisted, and the persisted plan is
//! put back at the next start before the datastore is even opened.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{TestNs, Weftd, weftd_command};
use weft_proto::{AgentError, ApplyMode, CommitVia, PolicyStatus, Request, ask};
use weft_store::{Datastore, LocalStore, ObjectKind};
use weft_testkit::TempDir;

const CONFIG: &str = r#"{"cidrV4":"10.97.0.0/24","blockSizeV4":28,"backend":"vxlan"}"#;

fn start(dir: &Path) -> Weftd {
    std::fs::write(dir.join("cluster.json"), CONFIG).unwrap();
    let child = weftd_command(dir, "solo")
        .arg("--store-path")
        .arg(dir.join("store.json"))
        .args(["--policy-log-rate", "5"])
        .spawn()
        .expect("start weftd");
    Weftd(child)
}

fn table(ns: &TestNs) -> Option<String> {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0.name,
            "nft",
            "list",
            "table",
            "inet",
            "weft_policy",
        ])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn policy_status(dir: &Path) -> Option<PolicyStatus> {
    let reply = ask(
        &dir.join("run/weftd.sock"),
        &Request::Status,
        Duration::from_secs(2),
    )
    .ok()?;
    Some(reply.status?.policy)
}

/// A deny-all ingress policy in namespace `shop`, in the local store under `dir`, stored
/// before weftd runs (the local store is locked while weftd has it).
fn store_deny_all(dir: &Path) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = LocalStore::open(&dir.join("store.json")).unwrap();
        let deny = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "deny-all", "namespace": "shop"},
            "spec": {"podSelector": {}}});
        store
            .put_object(ObjectKind::NetworkPolicy, "shop", "deny-all", &deny)
            .await
            .unwrap();
    });
}

#[test]
fn policy_from_the_local_store_is_applied_persisted_and_restored_first() {
    let ns = TestNs::new();
    let dir = TempDir::new("agent-policy");
    store_deny_all(dir.path());
    // A pod the plugin attached while weftd was down.
    let eps = dir.path().join("run/endpoints");
    std::fs::create_dir_all(&eps).unwrap();
    std::fs::write(
        eps.join("c1-eth0.json"),
        r#"{"containerId":"c1","ifname":"eth0","namespace":"shop","name":"web-0",
            "addresses":["10.97.0.2"],"hostInterface":"wv0","mode":"bridge"}"#,
    )
    .unwrap();

    ns.open()
        .run(|| {
            let mut agent = start(dir.path());
            let started = Instant::now();
            let st = loop {
                if let Ok(Some(status)) = agent.0.try_wait() {
                    panic!("weftd exited ({status}): {}", agent.stderr());
                }
                if let Some(st) = policy_status(dir.path()).filter(|s| s.in_sync) {
                    break st;
                }
                assert!(started.elapsed() < Duration::from_secs(15), "not in sync");
                std::thread::sleep(Duration::from_millis(50));
            };
            assert_eq!(st.classes, 1, "deny-all isolates web-0 (ingress): {st:?}");
            // The run dir existed (made above, umask mode): weftd tightened it to root only.
            let run_mode = std::fs::metadata(dir.path().join("run"))
                .unwrap()
                .permissions();
            assert_eq!(
                std::os::unix::fs::PermissionsExt::mode(&run_mode) & 0o7777,
                0o700
            );
            assert_eq!(st.endpoints, 1, "{st:?}");
            assert!(
                st.denied.iter().all(|d| d.policies == ["shop/deny-all"]),
                "{st:?}"
            );
            let t = table(&ns).expect("the table is there");
            assert!(t.contains("10.97.0.2"), "the pod is programmed:\n{t}");
            assert!(t.contains("log prefix"), "--policy-log-rate logs:\n{t}");
            assert!(t.contains("limit rate 5/second"), "{t}");
            let plan = std::fs::read_to_string(dir.path().join("run/policy-plan.json")).unwrap();
            assert!(plan.contains("10.97.0.2"));

            // A pod attached now is an incremental change: a journal line, not a new plan
            // file — and it must come back after a crash all the same.
            std::fs::write(
                eps.join("c2-eth0.json"),
                r#"{"containerId":"c2","ifname":"eth0","namespace":"shop","name":"web-1",
                    "addresses":["10.97.0.3"],"hostInterface":"wv1","mode":"bridge"}"#,
            )
            .unwrap();
            let reply = ask(
                &dir.path().join("run/weftd.sock"),
                &Request::Attach {
                    container_id: "c2".into(),
                    ifname: "eth0".into(),
                },
                Duration::from_secs(10),
            )
            .unwrap();
            assert!(reply.ok, "{reply:?}");
            let st = policy_status(dir.path()).unwrap();
            assert_eq!(st.last_change.mode, ApplyMode::Incremental, "{st:?}");
            assert_eq!(
                st.last_change.via,
                CommitVia::Netlink,
                "one pod is element ops only: {st:?}"
            );
            assert!(table(&ns).unwrap().contains("10.97.0.3"));
            let plan_after =
                std::fs::read_to_string(dir.path().join("run/policy-plan.json")).unwrap();
            assert_eq!(
                plan_after, plan,
                "the plan file is not rewritten for one pod"
            );
            let journal =
                std::fs::read_to_string(dir.path().join("run/policy-plan.journal")).unwrap();
            assert!(
                journal.lines().count() >= 2 && journal.contains("10.97.0.3"),
                "{journal}"
            );

            // SIGKILL, the table gone, and the store held by someone else: weftd cannot
            // open its datastore, yet it has put the last plan back before trying.
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(agent.0.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
            let _ = agent.0.wait();
            let out = Command::new("nft")
                .args(["delete", "table", "inet", "weft_policy"])
                .status()
                .unwrap();
            assert!(out.success());
            assert!(table(&ns).is_none());
            let _held = LocalStore::open(&dir.path().join("store.json")).unwrap();
            let mut blocked = start(dir.path());
            let status = blocked.0.wait().unwrap();
            assert!(!status.success(), "weftd cannot open a locked store");
            let t = table(&ns).expect("the persisted plan was restored first");
            assert!(t.contains("10.97.0.2") && t.contains("log prefix"), "{t}");
            assert!(t.contains("10.97.0.3"), "the journal was replayed: {t}");
        })
        .unwrap();
}

/// A runtime starts pods in bursts. ADDs that queued while weftd was busy are one batch:
/// fewer commits than pods, yet each answer comes only once that pod is in the table, and
/// one bad attach in the batch is refused alone.
#[test]
fn a_burst_of_attaches_is_committed_together_and_each_answered() {
    const PODS: usize = 23;
    let ns = TestNs::new();
    let dir = TempDir::new("agent-burst");
    store_deny_all(dir.path());
    let eps = dir.path().join("run/endpoints");
    std::fs::create_dir_all(&eps).unwrap();
    for i in 0..PODS {
        std::fs::write(
            eps.join(format!("b{i}-eth0.json")),
            format!(
                r#"{{"containerId":"b{i}","ifname":"eth0","namespace":"shop","name":"web-{i}",
                    "addresses":["10.97.0.{}"],"hostInterface":"wv{i}","mode":"bridge"}}"#,
                i + 10
            ),
        )
        .unwrap();
    }

    ns.open()
        .run(|| {
            let mut agent = start(dir.path());
            let started = Instant::now();
            loop {
                if let Ok(Some(status)) = agent.0.try_wait() {
                    panic!("weftd exited ({status}): {}", agent.stderr());
                }
                if policy_status(dir.path()).is_some_and(|s| s.in_sync && s.endpoints == PODS)
                {
                    break;
                }
                assert!(started.elapsed() < Duration::from_secs(15), "not in sync");
                std::thread::sleep(Duration::from_millis(50));
            }
            // The files were there at the start, so weftd knows the pods: forget them by
            // detaching, so the burst's attaches are what brings them back.
            let sock = dir.path().join("run/weftd.sock");
            for i in 0..PODS {
                let r = ask(
                    &sock,
                    &Request::Detach {
                        container_id: format!("b{i}"),
                        ifname: "eth0".into(),
                    },
                    Duration::from_secs(10),
                )
                .unwrap();
                assert!(r.ok, "{r:?}");
            }
            let gone = Instant::now();
            while table(&ns).is_some_and(|t| t.contains("10.97.0.10")) {
                assert!(gone.elapsed() < Duration::from_secs(10), "detach not applied");
                std::thread::sleep(Duration::from_millis(20));
            }
            let journal = || {
                std::fs::read_to_string(dir.path().join("run/policy-plan.journal"))
                    .map(|j| j.lines().count())
                    .unwrap_or(0)
            };
            let before = journal();

            // weftd stopped while the ADDs arrive: they all queue behind one another.
            let pid = nix::unistd::Pid::from_raw(agent.0.id() as i32);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
            let asks: Vec<_> = (0..=PODS)
                .map(|i| {
                    let sock = sock.clone();
                    std::thread::spawn(move || {
                        // The last one has no endpoint file.
                        let id = if i == PODS { "nofile".to_string() } else { format!("b{i}") };
                        ask(
                            &sock,
                            &Request::Attach {
                                container_id: id,
                                ifname: "eth0".into(),
                            },
                            Duration::from_secs(20),
                        )
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_millis(300));
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
            let mut replies: Vec<_> = asks.into_iter().map(|t| t.join().unwrap()).collect();
            let bad = replies.pop().unwrap();
            let t = table(&ns).unwrap();
            for (i, r) in replies.iter().enumerate() {
                assert!(r.as_ref().is_ok_and(|r| r.ok), "attach b{i}: {r:?}");
                assert!(t.contains(&format!("10.97.0.{}", i + 10)), "b{i} not in:\n{t}");
            }
            assert!(
                matches!(&bad, Err(AgentError::Refused(e)) if e.contains("no readable endpoint file")),
                "{bad:?}"
            );
            let commits = journal() - before;
            assert!(
                (1..PODS).contains(&commits),
                "{PODS} attaches in a burst took {commits} commits"
            );
            assert_eq!(policy_status(dir.path()).unwrap().endpoints, PODS);
        })
        .unwrap();
}
