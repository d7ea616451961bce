//! weftd given a bad cluster config: it exits non-zero at once with a message naming the
//! field, and writes nothing to etcd. weftd runs directly in a node namespace of a lab
//! stopped before its agents (`--until nodes`), against the lab's etcd, each case under its
//! own key prefix; a good config under another prefix shows the same harness does see
//! writes.

mod lab_support;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use lab_support::*;

const ETCD: &str = "http://192.168.100.1:2379";

/// weftd on node n1 of `lab` with `config` as its cluster config, keys under `prefix`.
fn spawn_weftd(lab: &Lab, dir: &TempDir, node: &str, prefix: &str, config: &str) -> Child {
    let file = dir.path().join(format!("{node}-cluster.json"));
    std::fs::write(&file, config).unwrap();
    let sub = |s: &str| dir.path().join(format!("{node}-{s}")).display().to_string();
    Command::new("ip")
        .args(["netns", "exec", &lab.ns("n1")])
        .arg(bin_dir().join("weftd"))
        .args([
            "--node-name",
            node,
            "--etcd-endpoints",
            ETCD,
            "--etcd-prefix",
            prefix,
        ])
        .args(["--cluster-config", &file.display().to_string()])
        .args(["--underlay-address", "192.168.100.11"])
        .args(["--cni-conf-dir", &sub("net.d")])
        .args(["--run-dir", &sub("run"), "--state-dir", &sub("state")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The exit of a weftd that must stop by itself, within `timeout` (killed and a panic if not).
fn exits_within(mut child: Child, timeout: Duration, what: &str) -> Output {
    let deadline = Instant::now() + timeout;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what}: weftd still running after {timeout:?}:\n{}",
                text(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn keys_under(lab: &Lab, prefix: &str) -> Vec<String> {
    lab.etcd_kvs(prefix).into_iter().map(|kv| kv.key).collect()
}

#[test]
fn weftd_refuses_bad_cluster_config_and_writes_nothing() {
    require_cluster_binaries();
    let lab = Lab::new();
    lab.up_ok(&["--nodes", "1", "--until", "nodes"]);
    let dir = TempDir::new("labtest");

    // The harness sees writes: a good config under /good/ gets a config key, a node record
    // and blocks.
    let good = r#"{"cidrV4":"10.244.0.0/16","cidrV6":"fd00:10:244::/56","backend":"vxlan"}"#;
    let mut agent = spawn_weftd(&lab, &dir, "n1", "/good", good);
    wait_for(
        Duration::from_secs(10),
        || {
            let keys = keys_under(&lab, "/good/");
            (keys.iter().any(|k| k == "/good/nodes/n1") && keys.len() >= 4).then_some(())
        },
        || format!("keys under /good/: {:?}", keys_under(&lab, "/good/")),
    );

    // (case, config, what the message must name)
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "malformed",
            r#"{"cidrV4": "10.244.0.0/16","#,
            &["cluster config is not valid"],
        ),
        (
            "notobject",
            r#"["10.244.0.0/16"]"#,
            &["expected a JSON object"],
        ),
        ("nocidr", r#"{"backend":"vxlan"}"#, &["cidrV4", "cidrV6"]),
        ("v6inv4", r#"{"cidrV4":"fd00:10:244::/56"}"#, &["cidrV4"]),
        (
            "v4inv6",
            r#"{"cidrV4":"10.244.0.0/16","cidrV6":"10.245.0.0/16"}"#,
            &["cidrV6"],
        ),
        (
            "overlap",
            r#"{"cidrV4":"10.244.0.0/16","cidrV6":"::ffff:10.244.0.0/112"}"#,
            &["cidrV6", "overlaps"],
        ),
        (
            "loopback",
            r#"{"cidrV4":"127.0.0.0/16"}"#,
            &["cidrV4", "overlaps"],
        ),
        (
            "blockwide",
            r#"{"cidrV4":"10.244.0.0/16","blockSizeV4":12}"#,
            &["blockSizeV4", "do not fit"],
        ),
        (
            "blocksmall",
            r#"{"cidrV4":"10.244.0.0/16","blockSizeV4":31}"#,
            &["blockSizeV4", "too small"],
        ),
        (
            "block6wide",
            r#"{"cidrV6":"fd00:10:244::/56","blockSizeV6":48}"#,
            &["blockSizeV6", "do not fit"],
        ),
        (
            "backend",
            r#"{"cidrV4":"10.244.0.0/16","backend":"wireguard"}"#,
            &["backend", "wireguard"],
        ),
        ("typo", r#"{"cidrv4":"10.244.0.0/16"}"#, &["cidrv4"]),
        (
            "vni",
            r#"{"cidrV4":"10.244.0.0/16","vxlanVni":0}"#,
            &["vxlanVni"],
        ),
    ];
    for (case, config, names) in cases {
        let prefix = format!("/bad/{case}");
        let child = spawn_weftd(&lab, &dir, &format!("b{case}"), &prefix, config);
        let out = exits_within(child, Duration::from_secs(5), case);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{case}: {}", text(&out));
        for name in *names {
            assert!(err.contains(name), "{case}: message lacks {name:?}:\n{err}");
        }
        assert!(
            err.contains("cluster-config"),
            "{case}: message names the flag/file:\n{err}"
        );
        eprintln!("{case}: {}", err.trim());
    }
    assert_eq!(keys_under(&lab, "/bad/"), Vec::<String>::new());

    // A valid config that differs from the one the cluster has: refused, nothing added.
    let before = keys_under(&lab, "/good/");
    let other = r#"{"cidrV4":"10.244.0.0/16","cidrV6":"fd00:10:244::/56","backend":"host-gw"}"#;
    let child = spawn_weftd(&lab, &dir, "n9", "/good", other);
    let out = exits_within(child, Duration::from_secs(10), "mismatch");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "mismatch: {}", text(&out));
    assert!(err.contains("different cluster config"), "{err}");
    eprintln!("mismatch: {}", err.trim());
    assert_eq!(keys_under(&lab, "/good/"), before);

    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    exits_within_ref(&mut agent);
}

fn exits_within_ref(child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("weftd did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
