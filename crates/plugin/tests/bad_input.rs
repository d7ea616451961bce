//! Bad input never leaves a trace: for each kind of bad request the plugin fails with the
//! exact CNI code of cni-spec.md §3 (one error object on stdout) and the node (links,
//! addresses, routes, nft ruleset, IPAM dataDir) and pods are exactly as before. Each case
//! runs on a node that already serves a pod (bridge exists, leases exist) and on a pristine
//! node. Run as root.

mod common;
mod e2e_support;

use common::{NsState, Snapshot};
use e2e_support::*;
use serde_json::{Value, json};
use std::path::Path;
use weft_testkit::assert_root;

type Env = Vec<(&'static str, String)>;

fn base_conf(node: &Node) -> Value {
    weft_conf(node, "bad", "bridge", "v4", 71, json!({}))
}

fn snapshot(node: &Node, pods: &[&Ns]) -> Snapshot {
    let mut s = Snapshot::of(&node.ns.name, Path::new(&node.data_dir()));
    s.pods = pods.iter().map(|p| NsState::of(&p.name)).collect();
    s
}

/// Run one bad request built by `build` (env, stdin) against a prepared and a pristine node;
/// `expect` judges the output; the snapshots before and after must be equal.
fn case(
    what: &str,
    pristine_too: bool,
    build: &dyn Fn(&Node, &Ns) -> (Env, String),
    expect: &dyn Fn(&Out),
) {
    assert_root();
    for prepared in [true, false] {
        if !prepared && !pristine_too {
            continue;
        }
        let node = Node::new();
        let good = Ns::new('p');
        if prepared {
            node.add(&base_conf(&node), "good1", &good);
        }
        let bad = Ns::new('p');
        let before = snapshot(&node, &[&good, &bad]);
        let (env, stdin) = build(&node, &bad);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let out = node.run_env(&weft_bin(), &env, &stdin);
        eprintln!("{what} (prepared={prepared}): {out:?}");
        expect(&out);
        let after = snapshot(&node, &[&good, &bad]);
        before.assert_unchanged(&after);
        if prepared {
            // The existing pod still works.
            good.assert_ping("10.71.0.1".parse().unwrap());
        }
    }
}

/// The standard ADD environment for container `bad1` in `pod`.
fn add_env(pod: &Ns) -> Env {
    cni_env("ADD", "bad1", Some(&pod.path), "eth0", &bin_dir())
}

fn with(mut env: Env, key: &'static str, value: Option<&str>) -> Env {
    env.retain(|(k, _)| *k != key);
    if let Some(v) = value {
        env.push((key, v.to_string()));
    }
    env
}

fn text(v: &Value) -> String {
    format!(
        "{} {}",
        v["msg"].as_str().unwrap_or(""),
        v["details"].as_str().unwrap_or("")
    )
}

#[test]
fn malformed_json_fails_6() {
    case(
        "malformed json",
        true,
        &|node, pod| {
            let s = base_conf(node).to_string();
            (add_env(pod), s[..s.len() / 2].to_string())
        },
        &|out| {
            out.assert_error(6, "malformed JSON");
        },
    );
}

#[test]
fn unknown_version_fails_1() {
    case(
        "cniVersion 9.9.9",
        true,
        &|node, pod| {
            let mut c = base_conf(node);
            c["cniVersion"] = json!("9.9.9");
            (add_env(pod), c.to_string())
        },
        &|out| {
            let e = out.assert_error(1, "cniVersion 9.9.9");
            assert!(text(&e).contains("9.9.9"), "error should name 9.9.9: {e}");
        },
    );
}

#[test]
fn unsupported_version_020_fails_1() {
    case(
        "cniVersion 0.2.0",
        true,
        &|node, pod| {
            let mut c = base_conf(node);
            c["cniVersion"] = json!("0.2.0");
            (add_env(pod), c.to_string())
        },
        &|out| {
            out.assert_error(1, "cniVersion 0.2.0");
        },
    );
}

#[test]
fn invalid_cidr_fails_7() {
    case(
        "subnet 10.1.2.300/24",
        true,
        &|node, pod| {
            let mut c = base_conf(node);
            c["ipam"]["ranges"] = json!([[{ "subnet": "10.1.2.300/24" }]]);
            (add_env(pod), c.to_string())
        },
        &|out| {
            out.assert_error(7, "invalid CIDR");
        },
    );
}

#[test]
fn subnet_with_host_bits_fails_7() {
    case(
        "subnet 10.1.2.5/24",
        true,
        &|node, pod| {
            let mut c = base_conf(node);
            c["ipam"]["ranges"] = json!([[{ "subnet": "10.1.2.5/24" }]]);
            (add_env(pod), c.to_string())
        },
        &|out| {
            out.assert_error(7, "subnet with host bits");
        },
    );
}

fn names_ifname(e: &Value) -> bool {
    let t = text(e).to_lowercase();
    t.contains("cni_ifname") || t.contains("ifname") || t.contains("interface name")
}

#[test]
fn ifname_too_long_fails_4() {
    case(
        "CNI_IFNAME of 16 bytes",
        true,
        &|node, pod| {
            let env = with(add_env(pod), "CNI_IFNAME", Some("abcdefghijklmnop"));
            (env, base_conf(node).to_string())
        },
        &|out| {
            let e = out.assert_error(4, "CNI_IFNAME too long");
            assert!(names_ifname(&e), "error should name CNI_IFNAME: {e}");
        },
    );
}

#[test]
fn ifname_with_slash_fails_4() {
    case(
        "CNI_IFNAME eth/0",
        true,
        &|node, pod| {
            let env = with(add_env(pod), "CNI_IFNAME", Some("eth/0"));
            (env, base_conf(node).to_string())
        },
        &|out| {
            let e = out.assert_error(4, "CNI_IFNAME with /");
            assert!(names_ifname(&e), "error should name CNI_IFNAME: {e}");
        },
    );
}

#[test]
fn missing_command_prints_about_and_exits_0() {
    case(
        "no CNI_COMMAND",
        true,
        &|node, pod| {
            (
                with(add_env(pod), "CNI_COMMAND", None),
                base_conf(node).to_string(),
            )
        },
        &|out| {
            assert!(out.ok(), "no CNI_COMMAND: expected exit 0: {out:?}");
            assert!(
                out.stdout.is_empty(),
                "no CNI_COMMAND: stdout must be empty: {out:?}"
            );
            assert!(
                out.stderr.contains("weft") && out.stderr.contains("1.1.0"),
                "no CNI_COMMAND: stderr should name the plugin and versions: {out:?}"
            );
        },
    );
}

#[test]
fn missing_container_id_fails_4() {
    case(
        "no CNI_CONTAINERID",
        true,
        &|node, pod| {
            (
                with(add_env(pod), "CNI_CONTAINERID", None),
                base_conf(node).to_string(),
            )
        },
        &|out| {
            let e = out.assert_error(4, "no CNI_CONTAINERID");
            assert!(
                text(&e).contains("CNI_CONTAINERID"),
                "must name CNI_CONTAINERID: {e}"
            );
        },
    );
}

#[test]
fn missing_netns_fails_without_trace() {
    // cni-spec §10.15: any code; nothing may be left (IPAM released, no veth). On a pristine
    // node the bridge may legitimately be created first (as the reference bridge does), so
    // this case runs on the prepared node only.
    case(
        "CNI_NETNS does not exist",
        false,
        &|node, pod| {
            let gone = format!("/run/netns/{}-gone", pod.name);
            (
                with(add_env(pod), "CNI_NETNS", Some(&gone)),
                base_conf(node).to_string(),
            )
        },
        &|out| {
            out.assert_any_error("missing netns");
        },
    );
}

#[test]
fn unknown_mode_fails_2_naming_key_and_value() {
    case(
        "mode foo",
        true,
        &|node, pod| {
            let mut c = base_conf(node);
            c["mode"] = json!("foo");
            (add_env(pod), c.to_string())
        },
        &|out| {
            let e = out.assert_error(2, "mode foo");
            let t = text(&e);
            assert!(
                t.contains("mode") && t.contains("foo"),
                "must name mode and foo: {e}"
            );
        },
    );
}

#[test]
fn macvlan_without_master_fails_7() {
    case(
        "macvlan without master",
        true,
        &|node, pod| {
            let mut c = base_conf(node);
            c["mode"] = json!("macvlan");
            c.as_object_mut().unwrap().remove("bridge");
            c.as_object_mut().unwrap().remove("isGateway");
            (add_env(pod), c.to_string())
        },
        &|out| {
            out.assert_error(7, "macvlan without master");
        },
    );
}
