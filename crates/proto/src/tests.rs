use std::collections::BTreeSet;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use serde_json::{Value, json};

use super::*;

/// `v` to JSON, checked against `wire`, and back to an equal value.
fn round_trip<T>(v: &T, wire: &str)
where
    T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
{
    assert_eq!(serde_json::to_string(v).unwrap(), wire);
    assert_eq!(&serde_json::from_str::<T>(wire).unwrap(), v);
}

#[test]
fn every_request_has_its_wire_form() {
    round_trip(
        &Request::Grow { family: Family::V4 },
        r#"{"op":"grow","family":"v4"}"#,
    );
    round_trip(
        &Request::Grow { family: Family::V6 },
        r#"{"op":"grow","family":"v6"}"#,
    );
    round_trip(&Request::Status, r#"{"op":"status"}"#);
    round_trip(
        &Request::Attach {
            container_id: "c1".into(),
            ifname: "eth0".into(),
        },
        r#"{"op":"attach","containerId":"c1","ifname":"eth0"}"#,
    );
    round_trip(
        &Request::Detach {
            container_id: "c1".into(),
            ifname: "eth0".into(),
        },
        r#"{"op":"detach","containerId":"c1","ifname":"eth0"}"#,
    );
    round_trip(&Request::PolicySync, r#"{"op":"policy-sync"}"#);
    // What the enum refuses, the agent refuses as malformed (no String to check by hand).
    for bad in [
        r#"{"op":"grow","family":"v5"}"#,
        r#"{"op":"grow"}"#,
        r#"{"op":"shrink"}"#,
        r#"{"op":"attach","containerId":"c1"}"#,
    ] {
        assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
    }
}

#[test]
fn every_reply_has_its_wire_form() {
    round_trip(&Reply::done(), r#"{"ok":true}"#);
    round_trip(
        &Reply::refused("no v6 CIDR"),
        r#"{"ok":false,"error":"no v6 CIDR"}"#,
    );
    round_trip(
        &Reply {
            block: Some("10.244.0.64/26".parse().unwrap()),
            ..Reply::done()
        },
        r#"{"ok":true,"block":"10.244.0.64/26"}"#,
    );
    let with_status = Reply {
        status: Some(Box::new(sample_status())),
        ..Reply::done()
    };
    let wire = serde_json::to_string(&with_status).unwrap();
    assert!(
        wire.starts_with(r#"{"ok":true,"status":{"node":"n1","#),
        "{wire}"
    );
    round_trip(&with_status, &wire);
}

#[test]
fn enums_on_the_wire_are_the_strings_of_before() {
    assert_eq!(
        [Family::V4, Family::V6].map(|f| j(&f)),
        ["v4", "v6"].map(String::from)
    );
    for m in [
        EndpointMode::Bridge,
        EndpointMode::Ptp,
        EndpointMode::Macvlan,
    ] {
        assert_eq!(j(&m), m.as_str());
    }
    assert_eq!(
        [
            EndpointMode::Bridge,
            EndpointMode::Ptp,
            EndpointMode::Macvlan
        ]
        .map(|m| j(&m)),
        ["bridge", "ptp", "macvlan"].map(String::from)
    );
    for d in [Direction::Ingress, Direction::Egress] {
        assert_eq!(j(&d), d.as_str());
    }
    assert_eq!(j(&Direction::Ingress), "ingress");
    for m in [
        ApplyMode::None,
        ApplyMode::Incremental,
        ApplyMode::World,
        ApplyMode::Diff,
        ApplyMode::Replace,
    ] {
        assert_eq!(j(&m), m.as_str());
        assert_eq!(
            serde_json::from_value::<ApplyMode>(json!(m.as_str())).unwrap(),
            m
        );
    }
    assert_eq!(j(&ApplyMode::None), "");
    for v in [CommitVia::None, CommitVia::Netlink, CommitVia::Nft] {
        assert_eq!(j(&v), v.as_str());
        assert_eq!(
            serde_json::from_value::<CommitVia>(json!(v.as_str())).unwrap(),
            v
        );
    }
    assert_eq!(
        [CommitVia::None, CommitVia::Netlink, CommitVia::Nft].map(|v| j(&v)),
        ["", "netlink", "nft"].map(String::from)
    );
    // A class's direction is spelt as Kubernetes' policyTypes, a pod's in lower case.
    let class = DeniedClass {
        chain: "ci_1".into(),
        direction: Direction::Egress,
        policies: vec![],
        packets: 0,
    };
    assert_eq!(serde_json::to_value(&class).unwrap()["direction"], "Egress");
    round_trip(
        &class,
        r#"{"chain":"ci_1","direction":"Egress","policies":[],"packets":0}"#,
    );
    round_trip(
        &LastCut::Swept {
            entries: 4,
            cut: 1,
            released: 2,
        },
        r#"{"entries":4,"cut":1,"released":2}"#,
    );
    round_trip(
        &LastCut::Failed {
            error: "ctnetlink: EPERM".into(),
        },
        r#"{"error":"ctnetlink: EPERM"}"#,
    );
}

/// A unit enum's wire string.
fn j<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v).unwrap() {
        Value::String(s) => s,
        other => panic!("not a string: {other}"),
    }
}

#[test]
fn endpoint_files_of_earlier_releases_still_read() {
    // As the plugin wrote them before `mode` was an enum (bridge; macvlan has no veth).
    let bridge = r#"{"containerId":"c1","ifname":"eth0","namespace":"shop","name":"web-0","addresses":["10.97.0.2","fd00:97::2"],"hostInterface":"wv0","mode":"bridge"}"#;
    let macvlan = r#"{"containerId":"c2","ifname":"net1","namespace":"default","name":"c2","addresses":["10.97.0.3"],"mode":"macvlan"}"#;
    let f: EndpointFile = serde_json::from_str(bridge).unwrap();
    assert_eq!(f.mode, EndpointMode::Bridge);
    assert_eq!(f.host_interface.as_deref(), Some("wv0"));
    round_trip(&f, bridge);
    let f: EndpointFile = serde_json::from_str(macvlan).unwrap();
    assert_eq!(f.mode, EndpointMode::Macvlan);
    round_trip(&f, macvlan);
    let ptp = bridge.replace(r#""mode":"bridge""#, r#""mode":"ptp""#);
    assert_eq!(
        serde_json::from_str::<EndpointFile>(&ptp).unwrap().mode,
        EndpointMode::Ptp
    );
    let unknown = bridge.replace(r#""mode":"bridge""#, r#""mode":"ipvlan""#);
    assert!(serde_json::from_str::<EndpointFile>(&unknown).is_err());
    assert_eq!(
        endpoint_path(Path::new("/run/weft/weftd.sock"), "c1", "eth0"),
        Path::new("/run/weft/endpoints/c1-eth0.json")
    );
}

#[test]
fn endpoint_files_carry_what_weftd_needs_to_collect_a_pod() {
    // Earlier releases wrote none of it: it reads as absent, and is not written back.
    let old = r#"{"containerId":"c1","ifname":"eth0","namespace":"shop","name":"web-0","addresses":["10.97.0.2"],"hostInterface":"wv0","mode":"bridge"}"#;
    let f: EndpointFile = serde_json::from_str(old).unwrap();
    assert_eq!(
        (&f.network, &f.netns, f.attached_at_ms),
        (&None, &None, None)
    );
    round_trip(&f, old);
    let now = EndpointFile {
        network: Some("weft".into()),
        netns: Some(NetnsRecord {
            path: "/run/netns/cni-1".into(),
            dev: 4,
            ino: 4026532290,
            dir_dev: 25,
            dir_ino: 1187,
        }),
        attached_at_ms: Some(1_700_000_000_123),
        ..f
    };
    round_trip(
        &now,
        r#"{"containerId":"c1","ifname":"eth0","namespace":"shop","name":"web-0","addresses":["10.97.0.2"],"hostInterface":"wv0","mode":"bridge","network":"weft","netns":{"path":"/run/netns/cni-1","dev":4,"ino":4026532290,"dirDev":25,"dirIno":1187},"attachedAtMs":1700000000123}"#,
    );
}

fn sample_status() -> Status {
    Status {
        node: "n1".into(),
        lease: 7587884203316221000,
        blocks: vec![
            "10.244.0.0/26".parse().unwrap(),
            "fd00:10:244::/122".parse().unwrap(),
        ],
        pod_mtu: Some(1450),
        peers: 2,
        datastore_reachable: true,
        datapath: None,
        policy: PolicyStatus {
            table: "inet weft_policy".into(),
            revision: 17,
            view_loaded: true,
            in_sync: true,
            policies: 3,
            endpoints: 4,
            classes: 2,
            chains: 9,
            rules: 30,
            elements: 50,
            denied: vec![DeniedClass {
                chain: "ci_0".into(),
                direction: Direction::Ingress,
                policies: vec!["shop/deny-all".into()],
                packets: 5,
            }],
            denied_pods: vec![DeniedPod {
                pod: Some("shop/db".into()),
                address: "10.244.0.2".parse().unwrap(),
                direction: Direction::Ingress,
                policies: vec!["shop/deny-all".into()],
                packets: 5,
                bytes: 300,
            }],
            denied_unknown_pods: 0,
            counter_error: None,
            last_error: None,
            unenforceable: vec![],
            cut_established: false,
            last_cut: LastCut::default(),
            last_apply: ApplyTiming::default(),
            last_change: ApplyTiming {
                mode: ApplyMode::Incremental,
                load_ms: 0.0,
                world_ms: 0.012,
                compile_ms: 0.4,
                persist_ms: 0.1,
                nft_ms: 0.3,
                via: CommitVia::Netlink,
                total_ms: 0.812,
                ops: 3,
                endpoints_fed: 1,
                policies_fed: 0,
            },
        },
    }
}

/// Every key path of a JSON document (`policy.lastChange.mode`, `policy.denied[].chain`).
fn key_paths(v: &Value, at: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                out.insert(p.clone());
                key_paths(v, &p, out);
            }
        }
        Value::Array(a) => {
            for v in a {
                key_paths(v, &format!("{at}[]"), out);
            }
        }
        _ => {}
    }
}

/// The status document as weftd built it by hand (`json!`) before it was a struct: the keys
/// `weftctl status -o json`, scripts and tests read. A key dropped, renamed or skipped when
/// empty fails here.
fn document_of_before() -> Value {
    json!({
        "node": "n1", "lease": 7587884203316221000_i64,
        "blocks": ["10.244.0.0/26", "fd00:10:244::/122"], "podMtu": 1450, "peers": 2,
        "datastoreReachable": true, "datapath": null,
        "policy": {
            "table": "inet weft_policy", "revision": 17, "viewLoaded": true, "inSync": true,
            "policies": 3, "endpoints": 4, "classes": 2, "chains": 9, "rules": 30,
            "elements": 50,
            "denied": [{"chain": "ci_0", "direction": "Ingress",
                "policies": ["shop/deny-all"], "packets": 5}],
            "deniedPods": [{"pod": "shop/db", "address": "10.244.0.2", "direction": "ingress",
                "policies": ["shop/deny-all"], "packets": 5, "bytes": 300}],
            "deniedUnknownPods": 0, "counterError": null, "lastError": null,
            "unenforceable": [], "cutEstablished": false,
            "lastCut": {"entries": 0, "cut": 0, "released": 0},
            "lastApply": {"mode": "", "loadMs": 0.0, "worldMs": 0.0, "compileMs": 0.0,
                "persistMs": 0.0, "nftMs": 0.0, "via": "", "totalMs": 0.0, "ops": 0,
                "endpointsFed": 0, "policiesFed": 0},
            "lastChange": {"mode": "incremental", "loadMs": 0.0, "worldMs": 0.012,
                "compileMs": 0.4, "persistMs": 0.1, "nftMs": 0.3, "via": "netlink",
                "totalMs": 0.812, "ops": 3, "endpointsFed": 1, "policiesFed": 0},
        }
    })
}

#[test]
fn the_status_document_keeps_every_key_and_value() {
    let before = document_of_before();
    let now = serde_json::to_value(sample_status()).unwrap();
    let (mut want, mut got) = (BTreeSet::new(), BTreeSet::new());
    key_paths(&before, "", &mut want);
    key_paths(&now, "", &mut got);
    let missing: Vec<_> = want.difference(&got).collect();
    let extra: Vec<_> = got.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, new {extra:?}"
    );
    assert_eq!(now, before);
    assert_eq!(
        serde_json::from_value::<Status>(before).unwrap(),
        sample_status()
    );
    // Absent values are null, not missing keys: `podMtu` before the dataplane is up.
    let early = Status {
        pod_mtu: None,
        ..Status::default()
    };
    let v = serde_json::to_value(early).unwrap();
    assert_eq!(v["podMtu"], Value::Null);
    assert!(v.as_object().unwrap().contains_key("podMtu"));
    assert!(v["policy"].as_object().unwrap().contains_key("lastError"));
}

#[test]
fn a_reader_takes_a_status_with_keys_it_does_not_know_or_lacks() {
    let mut v = document_of_before();
    v["policy"]["someNewCounter"] = json!(3);
    v.as_object_mut().unwrap().remove("peers");
    let st: Status = serde_json::from_value(v).unwrap();
    assert_eq!(st.peers, 0);
    assert_eq!(st.policy.revision, 17);
    let failed: LastCut = serde_json::from_value(json!({"error": "x"})).unwrap();
    assert_eq!(failed, LastCut::Failed { error: "x".into() });
}

fn scratch_socket(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weft-proto-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("weftd.sock")
}

/// A one-shot server answering the next request line with `reply`; returns the line.
fn serve_once(path: &Path, reply: &'static str) -> std::thread::JoinHandle<String> {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).unwrap();
        (&s).write_all(reply.as_bytes()).unwrap();
        line
    })
}

#[test]
fn ask_sends_one_line_and_reads_one_reply() {
    let path = scratch_socket("ask");
    let server = serve_once(&path, "{\"ok\":true,\"block\":\"10.244.0.64/26\"}\n");
    let reply = ask(
        &path,
        &Request::Grow { family: Family::V4 },
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(reply.block, Some("10.244.0.64/26".parse().unwrap()));
    assert_eq!(
        server.join().unwrap(),
        "{\"op\":\"grow\",\"family\":\"v4\"}\n"
    );

    let _ = std::fs::remove_file(&path);
    let server = serve_once(&path, "{\"ok\":false,\"error\":\"no v6 CIDR\"}\n");
    let err = ask(&path, &Request::Status, Duration::from_secs(5)).unwrap_err();
    assert!(
        matches!(&err, AgentError::Refused(why) if why == "no v6 CIDR"),
        "{err}"
    );
    server.join().unwrap();

    let _ = std::fs::remove_file(&path);
    let server = serve_once(&path, "not json\n");
    let err = ask(&path, &Request::Status, Duration::from_secs(5)).unwrap_err();
    assert!(matches!(err, AgentError::BadReply { .. }), "{err}");
    server.join().unwrap();
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn missing_socket_is_an_io_error_naming_the_path() {
    let err = ask(
        Path::new("/nonexistent/weftd.sock"),
        &Request::Status,
        Duration::from_millis(100),
    )
    .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/weftd.sock"), "{err}");
}
