//! Conformance tests: every numbered case 1–60 of cni-spec.md §10 ("Test cases a conformant
//! plugin must pass"), one `#[test]` each, run against the real `weft` / `weft-ipam`
//! binaries inside throw-away network namespaces (see `common`).
//!
//! Where the spec leaves a branch open, docs/plugin-contract.md decides: weft advertises
//! 0.3.0 0.3.1 0.4.0 1.0.0 1.1.0, so cases 14 and 30 take the "not advertised" branch.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;

use common::*;
use serde_json::{Value, json};

/// Versions docs/plugin-contract.md says weft advertises.
const ADVERTISED: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

type EnvList = Vec<(String, String)>;

fn fx() -> Fixture {
    Fixture::new()
}

fn str_env(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Assert there is no `eth0`-like leftover: `ifname` absent in the pod, no weft veth and no
/// veth at all in the node.
#[track_caller]
fn assert_no_attachment(fx: &Fixture, pod: &Pod, ifname: &str) {
    assert!(
        link(&pod.name, ifname).is_none(),
        "{ifname} left in pod: {:?}",
        link_names(&pod.name)
    );
    assert!(
        veths(&fx.node.name).is_empty(),
        "veth left in node: {:?}",
        link_names(&fx.node.name)
    );
}

/// Address of the container interface's first IP, without prefix.
fn pod_ip(result: &Value) -> String {
    result_ip(result, 0)
}

/// The result's host-side interface (no sandbox) whose name is a weft veth name.
fn result_host_veth(result: &Value) -> Value {
    result["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .find(|i| {
            i["name"].as_str().is_some_and(|n| n.starts_with("wv"))
                && i["sandbox"].as_str().unwrap_or("").is_empty()
        })
        .cloned()
        .unwrap_or_else(|| panic!("no host veth in result {result:#}"))
}

fn supported(fx: &Fixture, bin: &str) -> BTreeSet<String> {
    let v = fx
        .run(bin, &[("CNI_COMMAND", "VERSION")], b"")
        .expect_ok_json();
    v["supportedVersions"]
        .as_array()
        .expect("supportedVersions array")
        .iter()
        .map(|v| v.as_str().expect("version string").to_string())
        .collect()
}

// =======================================================================================
// Process and input validation
// =======================================================================================

fn check_version_output(out: &PluginOutput) {
    let v = out.expect_ok_json();
    assert!(
        v["cniVersion"].as_str().is_some_and(|s| !s.is_empty()),
        "cniVersion empty: {v}"
    );
    let list: BTreeSet<&str> = v["supportedVersions"]
        .as_array()
        .unwrap_or_else(|| panic!("no supportedVersions: {v}"))
        .iter()
        .map(|x| x.as_str().expect("string version"))
        .collect();
    for want in ADVERTISED {
        assert!(list.contains(want), "supportedVersions lacks {want}: {v}");
    }
    // The contract: 0.1.0/0.2.0 are not advertised (cases 14 and 30 depend on it).
    assert!(!list.contains("0.1.0") && !list.contains("0.2.0"), "{v}");
}

#[test]
fn case_01_version_empty_env_and_stdin() {
    let fx = fx();
    for bin in [weft_bin(), ipam_bin()] {
        let out = fx.run(bin, &[("CNI_COMMAND", "VERSION")], b"");
        check_version_output(&out);
    }
}

#[test]
fn case_02_version_ignores_garbage_stdin() {
    let fx = fx();
    for bin in [weft_bin(), ipam_bin()] {
        let out = fx.run(bin, &[("CNI_COMMAND", "VERSION")], b"not json");
        check_version_output(&out);
    }
}

#[test]
fn case_03_no_command_prints_about_on_stderr() {
    let fx = fx();
    let conf = bytes(&fx.config());
    for (bin, name) in [(weft_bin(), "weft"), (ipam_bin(), "weft-ipam")] {
        let out = fx.run(bin, &[] as &[(&str, &str)], &conf);
        assert_eq!(out.status, 0, "{}", out.dump());
        assert!(
            out.stdout.is_empty(),
            "stdout must be empty\n{}",
            out.dump()
        );
        assert!(
            out.stderr.contains(name),
            "stderr lacks {name}\n{}",
            out.dump()
        );
        assert!(
            out.stderr.contains(env!("CARGO_PKG_VERSION")),
            "stderr lacks version {}\n{}",
            env!("CARGO_PKG_VERSION"),
            out.dump()
        );
        for v in ADVERTISED {
            assert!(out.stderr.contains(v), "stderr lacks {v}\n{}", out.dump());
        }
    }
}

#[test]
fn case_04_unknown_verb_fails_4() {
    let fx = fx();
    let pod = fx.pod();
    let before = fx.snapshot(&[&pod]);
    for verb in ["add", "FOO"] {
        let out = fx.weft(verb, &fx.config(), "c1", &pod.path, "eth0");
        let (msg, _) = out.expect_error(4);
        assert!(msg.contains(verb), "msg does not name {verb}: {msg}");
    }
    before.assert_unchanged(&fx.snapshot(&[&pod]));
}

#[test]
fn case_05_missing_env_all_listed_in_order() {
    let fx = fx();
    let out = fx.run(weft_bin(), &[("CNI_COMMAND", "ADD")], &bytes(&fx.config()));
    let (msg, _) = out.expect_error(4);
    let mut last = 0;
    for name in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"] {
        let pos = msg[last..]
            .find(name)
            .unwrap_or_else(|| panic!("msg lacks {name} (in order): {msg}"));
        last += pos + name.len();
    }
}

#[test]
fn case_06_bad_container_id_fails_4() {
    let fx = fx();
    let pod = fx.pod();
    let before = fx.snapshot(&[&pod]);
    for id in ["-abc", "a/b", "a b", "x%y"] {
        let out = fx.weft("ADD", &fx.config(), id, &pod.path, "eth0");
        out.expect_error(4);
    }
    before.assert_unchanged(&fx.snapshot(&[&pod]));
}

#[test]
fn case_07_ifname_length_limit() {
    let fx = fx();
    let pod = fx.pod();
    let before = fx.snapshot(&[&pod]);
    let out = fx.weft("ADD", &fx.config(), "c1", &pod.path, "abcdefghijklmnop");
    out.expect_error(4);
    before.assert_unchanged(&fx.snapshot(&[&pod]));

    let name = "abcdefghijklmno";
    let out = fx.weft("ADD", &fx.config(), "c1", &pod.path, name);
    let r = out.expect_ok_json();
    assert!(link(&pod.name, name).is_some(), "{name} not created in pod");
    assert!(iface_index(&r, name).is_some(), "result lacks {name}: {r}");
    let del = with_prev(&fx.config(), Some(&r));
    fx.weft("DEL", &del, "c1", &pod.path, name)
        .expect_ok_empty();
    assert!(link(&pod.name, name).is_none());
    assert!(fx.leases("t1").is_empty(), "{:?}", fx.leases("t1"));
}

#[test]
fn case_08_bad_ifname_fails_4() {
    let fx = fx();
    let pod = fx.pod();
    let before = fx.snapshot(&[&pod]);
    for ifname in ["eth/0", "eth:0", "eth 0", ".", ".."] {
        let out = fx.weft("ADD", &fx.config(), "c1", &pod.path, ifname);
        out.expect_error(4);
    }
    before.assert_unchanged(&fx.snapshot(&[&pod]));
}

#[test]
fn case_09_empty_ifname_is_missing() {
    let fx = fx();
    let pod = fx.pod();
    let before = fx.snapshot(&[&pod]);
    let out = fx.weft("ADD", &fx.config(), "c1", &pod.path, "");
    let (msg, _) = out.expect_error(4);
    assert!(
        msg.contains("CNI_IFNAME"),
        "msg does not name CNI_IFNAME: {msg}"
    );
    assert!(msg.contains("missing"), "not reported as missing: {msg}");
    before.assert_unchanged(&fx.snapshot(&[&pod]));
}

#[test]
fn case_10_undecodable_stdin_fails_6() {
    let fx = fx();
    let pod = fx.pod();
    let before = fx.snapshot(&[&pod]);
    for stdin in [&b""[..], b"{\"name\":", b"[]", b"\"x\""] {
        let env = cni_env("ADD", "c1", &pod.path, "eth0");
        let out = fx.run(weft_bin(), &env, stdin);
        out.expect_error(6);
    }
    before.assert_unchanged(&fx.snapshot(&[&pod]));
}

#[test]
fn case_11_bad_network_name_fails_7() {
    let fx = fx();
    let pod = fx.pod();
    let before = fx.snapshot(&[&pod]);
    let confs = [
        fx.config_with(json!({"name": null})),
        fx.config_with(json!({"name": "bad name"})),
        fx.config_with(json!({"name": "-x"})),
    ];
    for conf in &confs {
        let out = fx.weft("ADD", conf, "c1", &pod.path, "eth0");
        out.expect_error(7);
    }
    before.assert_unchanged(&fx.snapshot(&[&pod]));
}

#[test]
fn case_12_unsupported_version_fails_1() {
    let fx = fx();
    let pod = fx.pod();
    let before = fx.snapshot(&[&pod]);
    let conf = fx.config_with(json!({"cniVersion": "9.9.9"}));
    let out = fx.weft("ADD", &conf, "c1", &pod.path, "eth0");
    let (_, details) = out.expect_error(1);
    let details = details.unwrap_or_else(|| panic!("no details\n{}", out.dump()));
    assert!(details.contains("9.9.9"), "details lack 9.9.9: {details}");
    for v in ADVERTISED {
        assert!(details.contains(v), "details lack supported {v}: {details}");
    }
    before.assert_unchanged(&fx.snapshot(&[&pod]));
}

#[test]
fn case_13_numeric_version_fails_6() {
    let fx = fx();
    let pod = fx.pod();
    let before = fx.snapshot(&[&pod]);
    let conf = fx.config_with(json!({"cniVersion": 1.1}));
    let out = fx.weft("ADD", &conf, "c1", &pod.path, "eth0");
    out.expect_error(6);
    before.assert_unchanged(&fx.snapshot(&[&pod]));
}

#[test]
fn case_14_missing_version_is_0_1_0() {
    let fx = fx();
    let pod = fx.pod();
    assert!(!supported(&fx, weft_bin()).contains("0.1.0"));
    let before = fx.snapshot(&[&pod]);
    let conf = fx.config_with(json!({"cniVersion": null}));
    let out = fx.weft("ADD", &conf, "c1", &pod.path, "eth0");
    let (_, details) = out.expect_error(1);
    if let Some(d) = details {
        assert!(d.contains("0.1.0"), "details should name 0.1.0: {d}");
    }
    before.assert_unchanged(&fx.snapshot(&[&pod]));
}

#[test]
fn case_15_nonexistent_netns_leaks_nothing() {
    let fx = fx();
    let missing = fx.tmp_path().join("nonexistent");
    let out = fx.weft(
        "ADD",
        &fx.config(),
        "c1",
        &missing.to_string_lossy(),
        "eth0",
    );
    out.expect_any_error();
    assert!(
        fx.leases("t1").is_empty(),
        "lease leaked: {:?}",
        fx.leases("t1")
    );
    assert!(
        veths(&fx.node.name).is_empty(),
        "host veth leaked: {:?}",
        link_names(&fx.node.name)
    );
}

#[test]
fn case_16_netns_regular_file_no_side_effects() {
    let fx = fx();
    let file = fx.tmp_path().join("regular");
    std::fs::write(&file, b"not a netns").unwrap();
    let before = fx.snapshot(&[]);
    let out = fx.weft("ADD", &fx.config(), "c1", &file.to_string_lossy(), "eth0");
    out.expect_any_error();
    before.assert_unchanged(&fx.snapshot(&[]));
}

#[test]
fn case_17_own_netns_fails_8() {
    let fx = fx();
    let before = fx.snapshot(&[]);
    let out = fx.weft("ADD", &fx.config(), "c1", "/proc/self/ns/net", "eth0");
    out.expect_error(8);
    assert!(
        link(&fx.node.name, "eth0").is_none(),
        "eth0 created in the plugin's own netns"
    );
    assert!(
        veths(&fx.node.name).is_empty(),
        "{:?}",
        link_names(&fx.node.name)
    );
    assert!(
        fx.leases("t1").is_empty(),
        "lease leaked: {:?}",
        fx.leases("t1")
    );
    before.assert_unchanged(&fx.snapshot(&[]));
}

#[test]
fn case_18_cni_args_parsing() {
    let fx = fx();
    let pod = fx.pod();
    let mut env = cni_env("ADD", "c1", &pod.path, "eth0");
    env_set(&mut env, "CNI_ARGS", Some("FOO"));
    let out = fx.run(weft_bin(), &env, &bytes(&fx.config()));
    out.expect_any_error();
    assert_no_attachment(&fx, &pod, "eth0");
    assert!(
        fx.leases("t1").is_empty(),
        "lease leaked: {:?}",
        fx.leases("t1")
    );

    let k8s = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;\
               K8S_POD_INFRA_CONTAINER_ID=c1;K8S_POD_UID=0b6c3e0e-1111-2222-3333-444455556666";
    env_set(&mut env, "CNI_ARGS", Some(k8s));
    let out = fx.run(weft_bin(), &env, &bytes(&fx.config()));
    let r = out.expect_ok_json();
    assert!(link(&pod.name, "eth0").is_some());
    env_set(&mut env, "CNI_COMMAND", Some("DEL"));
    fx.run(weft_bin(), &env, &bytes(&with_prev(&fx.config(), Some(&r))))
        .expect_ok_empty();
    assert!(fx.leases("t1").is_empty());
}

#[test]
fn case_19_failures_print_only_the_error_object() {
    let fx = fx();
    let pod = fx.pod();
    let c = fx.config();
    let file = fx.tmp_path().join("regular");
    std::fs::write(&file, b"x").unwrap();
    let file = file.to_string_lossy().into_owned();
    let missing = fx
        .tmp_path()
        .join("nonexistent")
        .to_string_lossy()
        .into_owned();
    let std_env = |cmd: &str, id: &str, ns: &str, ifn: &str| cni_env(cmd, id, ns, ifn);
    let mut cases: Vec<(EnvList, Vec<u8>)> = vec![
        (std_env("add", "c1", &pod.path, "eth0"), bytes(&c)),
        (std_env("FOO", "c1", &pod.path, "eth0"), bytes(&c)),
        (vec![("CNI_COMMAND".into(), "ADD".into())], bytes(&c)),
        (std_env("ADD", "-abc", &pod.path, "eth0"), bytes(&c)),
        (
            std_env("ADD", "c1", &pod.path, "abcdefghijklmnop"),
            bytes(&c),
        ),
        (std_env("ADD", "c1", &pod.path, "eth/0"), bytes(&c)),
        (std_env("ADD", "c1", &pod.path, ""), bytes(&c)),
        (std_env("ADD", "c1", &pod.path, "eth0"), b"".to_vec()),
        (
            std_env("ADD", "c1", &pod.path, "eth0"),
            b"{\"name\":".to_vec(),
        ),
        (std_env("ADD", "c1", &pod.path, "eth0"), b"[]".to_vec()),
        (
            std_env("ADD", "c1", &pod.path, "eth0"),
            bytes(&merged(&c, json!({"name": "bad name"}))),
        ),
        (
            std_env("ADD", "c1", &pod.path, "eth0"),
            bytes(&merged(&c, json!({"cniVersion": "9.9.9"}))),
        ),
        (
            std_env("ADD", "c1", &pod.path, "eth0"),
            bytes(&merged(&c, json!({"cniVersion": 1.1}))),
        ),
        (
            std_env("ADD", "c1", &pod.path, "eth0"),
            bytes(&merged(&c, json!({"cniVersion": null}))),
        ),
        (std_env("ADD", "c1", &missing, "eth0"), bytes(&c)),
        (std_env("ADD", "c1", &file, "eth0"), bytes(&c)),
        (std_env("ADD", "c1", "/proc/self/ns/net", "eth0"), bytes(&c)),
    ];
    let mut bad_args = std_env("ADD", "c1", &pod.path, "eth0");
    env_set(&mut bad_args, "CNI_ARGS", Some("FOO"));
    cases.push((bad_args, bytes(&c)));
    for (env, stdin) in &cases {
        let out = fx.run(weft_bin(), &str_env(env), stdin);
        // expect_any_error: exit != 0 and stdout is exactly one error object.
        let m = out.expect_any_error();
        let code = m["code"].as_u64().unwrap();
        assert!(code != 0, "code 0 must never be emitted\n{}", out.dump());
    }
    assert_no_attachment(&fx, &pod, "eth0");
    assert!(fx.leases("t1").is_empty(), "{:?}", fx.leases("t1"));
}

// =======================================================================================
// ADD
// =======================================================================================

#[test]
fn case_20_add_result_layout() {
    let fx = fx();
    let pod = fx.pod();
    let r = fx.add(&fx.config(), "c1", &pod);
    assert_eq!(r["cniVersion"], "1.1.0", "{r:#}");
    let ifaces = r["interfaces"].as_array().expect("interfaces");
    let idx = iface_index(&r, "eth0").unwrap_or_else(|| panic!("no eth0 in {r:#}"));
    let eth0 = &ifaces[idx];
    assert_eq!(eth0["sandbox"], pod.path.as_str(), "{r:#}");
    let mac = eth0["mac"].as_str().expect("eth0 mac");
    let kernel = link(&pod.name, "eth0").expect("eth0 in pod");
    assert_eq!(
        kernel["address"].as_str(),
        Some(mac),
        "result MAC != kernel MAC"
    );

    // Host veth: listed, no sandbox, exact kernel name, contract naming and alias.
    let hv = result_host_veth(&r);
    let hv_name = hv["name"].as_str().unwrap();
    let k = link(&fx.node.name, hv_name).unwrap_or_else(|| panic!("{hv_name} not in node"));
    assert_eq!(link_kind(&k), Some("veth"));
    assert_eq!(k["ifalias"], "weft:t1:c1:eth0", "{k:#}");
    assert_eq!(weft_veths(&fx.node.name).len(), 1);
    // Contract layout: [bridge, host veth, container iface], ips[].interface = 2.
    assert_eq!(ifaces.len(), 3, "{r:#}");
    assert_eq!(ifaces[0]["name"], fx.bridge.as_str(), "{r:#}");
    assert_eq!(ifaces[1]["name"], hv_name, "{r:#}");
    assert_eq!(idx, 2, "{r:#}");

    let ips = r["ips"].as_array().expect("ips");
    assert_eq!(ips.len(), 1, "{r:#}");
    let addr = ips[0]["address"].as_str().unwrap();
    let (ip, len) = addr.split_once('/').expect("CIDR");
    assert_eq!(len, "24", "{addr}");
    let ip: std::net::Ipv4Addr = ip.parse().expect("ipv4");
    assert_eq!(ip.octets()[..3], [10, 99, 0], "{addr}");
    assert_eq!(ips[0]["interface"], idx, "{r:#}");
    assert!(
        ips[0].get("version").is_none(),
        "1.1.0 ips must not carry version"
    );
    assert_eq!(ips[0]["gateway"], "10.99.0.1", "{r:#}");
}

#[test]
fn case_21_add_kernel_state() {
    let fx = fx();
    let pod = fx.pod();
    let r = fx.add(&fx.config(), "c1", &pod);
    let addr = r["ips"][0]["address"].as_str().unwrap().to_string();
    let ip = pod_ip(&r);

    let eth0 = link(&pod.name, "eth0").expect("eth0 in pod");
    assert!(link_is_up(&eth0), "eth0 not up: {eth0}");
    assert_eq!(addrs(&pod.name, "eth0"), vec![addr.clone()]);
    for route in r["routes"].as_array().cloned().unwrap_or_default() {
        let dst = route["dst"].as_str().unwrap();
        let dst = if dst == "0.0.0.0/0" || dst == "::/0" {
            "default"
        } else {
            dst
        };
        let gw = route["gw"].as_str().or(r["ips"][0]["gateway"].as_str());
        assert!(
            has_route(&pod.name, dst, gw),
            "route {route} missing: {:#?}",
            routes(&pod.name)
        );
    }
    // isGateway: pod default route via the gateway; gateway on the bridge.
    assert!(
        has_route(&pod.name, "default", Some("10.99.0.1")),
        "{:#?}",
        routes(&pod.name)
    );
    assert!(addrs(&fx.node.name, &fx.bridge).contains(&"10.99.0.1/24".to_string()));

    let hv = result_host_veth(&r);
    let k = link(&fx.node.name, hv["name"].as_str().unwrap()).expect("host veth");
    assert_eq!(k["master"], fx.bridge.as_str(), "{k}");
    assert!(link_is_up(&k));

    let leases = fx.leases("t1");
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert_eq!(leases[&ip.parse().unwrap()], "c1\r\neth0");
    assert!(
        ping_retry(&fx.node.name, &ip, 5),
        "node cannot reach pod {ip}"
    );
}

#[test]
fn case_22_old_versions_echoed_with_ip_version() {
    let fx = fx();
    let pods: Vec<Pod> = (0..3).map(|_| fx.pod()).collect();
    for (i, v) in ["0.4.0", "0.3.1", "0.3.0"].into_iter().enumerate() {
        let conf = fx.config_with(json!({"cniVersion": v}));
        let r = fx.add(&conf, &format!("v{i}"), &pods[i]);
        assert_eq!(r["cniVersion"], v, "{r:#}");
        let ips = r["ips"].as_array().expect("ips");
        assert!(!ips.is_empty());
        for ip in ips {
            assert_eq!(ip["version"], "4", "{r:#}");
        }
        assert!(link(&pods[i].name, "eth0").is_some());
    }
    assert_eq!(fx.leases("t1").len(), 3);
}

#[test]
fn case_23_repeat_add_fails_without_damage() {
    let fx = fx();
    let pod = fx.pod();
    let r = fx.add(&fx.config(), "c1", &pod);
    let ip = pod_ip(&r);
    let addr_before = addrs(&pod.name, "eth0");

    // Same pair, same netns.
    let out = fx.weft("ADD", &fx.config(), "c1", &pod.path, "eth0");
    out.expect_any_error();
    // Same pair, another netns.
    let pod2 = fx.pod();
    let out = fx.weft("ADD", &fx.config(), "c1", &pod2.path, "eth0");
    out.expect_any_error();
    assert!(link(&pod2.name, "eth0").is_none(), "second pod got eth0");

    assert_eq!(addrs(&pod.name, "eth0"), addr_before);
    let leases = fx.leases("t1");
    assert_eq!(leases.len(), 1, "second lease: {leases:?}");
    assert_eq!(leases[&ip.parse().unwrap()], "c1\r\neth0");
    assert_eq!(
        weft_veths(&fx.node.name).len(),
        1,
        "{:?}",
        link_names(&fx.node.name)
    );
    assert!(ping_retry(&fx.node.name, &ip, 5), "first attachment broken");
    fx.check(&fx.config(), "c1", &pod, &r).expect_ok_empty();
}

#[test]
fn case_24_fifty_parallel_adds() {
    let fx = fx();
    let pods: Vec<Pod> = (0..50).map(|_| fx.pod()).collect();
    let conf = fx.config();
    let results: Vec<PluginOutput> = std::thread::scope(|s| {
        let hs: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (fx, conf) = (&fx, &conf);
                s.spawn(move || fx.weft("ADD", conf, &format!("c{}", i + 1), &p.path, "eth0"))
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut ips = BTreeSet::new();
    for (i, out) in results.iter().enumerate() {
        let r = out.expect_ok_json();
        let ip = pod_ip(&r);
        assert!(ips.insert(ip.clone()), "duplicate address {ip}");
        assert_eq!(addrs(&pods[i].name, "eth0"), vec![format!("{ip}/24")]);
    }
    assert_eq!(ips.len(), 50);
    let leases = fx.leases("t1");
    assert_eq!(leases.len(), 50, "{leases:?}");
    for (i, out) in results.iter().enumerate() {
        let ip = pod_ip(&out.expect_ok_json());
        assert_eq!(leases[&ip.parse().unwrap()], format!("c{}\r\neth0", i + 1));
    }
    assert_eq!(weft_veths(&fx.node.name).len(), 50);
}

fn small_pool(fx: &Fixture) -> Value {
    fx.config_with(json!({"ipam": {"ranges": [[{"subnet": "10.99.1.0/29"}]]}}))
}

#[test]
fn case_25_pool_exhaustion() {
    let fx = fx();
    let conf = small_pool(&fx);
    let pods: Vec<Pod> = (0..6).map(|_| fx.pod()).collect();
    let mut got = BTreeSet::new();
    for (i, pod) in pods.iter().take(5).enumerate() {
        let r = fx.add(&conf, &format!("c{i}"), pod);
        got.insert(pod_ip(&r));
    }
    let want: BTreeSet<String> = (2..=6).map(|i| format!("10.99.1.{i}")).collect();
    assert_eq!(got, want);
    let out = fx.weft("ADD", &conf, "c5", &pods[5].path, "eth0");
    out.expect_any_error();
    assert!(link(&pods[5].name, "eth0").is_none(), "6th pod got eth0");
    assert_eq!(
        weft_veths(&fx.node.name).len(),
        5,
        "{:?}",
        link_names(&fx.node.name)
    );
    assert_eq!(fx.leases("t1").len(), 5, "{:?}", fx.leases("t1"));
}

#[test]
fn case_26_bad_subnets_fail_7() {
    let fx = fx();
    let pod = fx.pod();
    let before = fx.snapshot(&[&pod]);
    for subnet in ["10.99.0.0/31", "10.99.0.0/32", "10.99.0.1/24"] {
        let conf = fx.config_with(json!({"ipam": {"ranges": [[{"subnet": subnet}]]}}));
        let out = fx.weft("ADD", &conf, "c1", &pod.path, "eth0");
        out.expect_error(7);
    }
    before.assert_unchanged(&fx.snapshot(&[&pod]));
}

#[test]
fn case_27_requested_ips() {
    let fx = fx();
    let with_ip = |ip: &str| {
        fx.config_with(json!({"capabilities": {"ips": true}, "runtimeConfig": {"ips": [ip]}}))
    };
    let pod = fx.pod();
    let r = fx.add(&with_ip("10.99.0.50/24"), "c1", &pod);
    assert_eq!(r["ips"][0]["address"], "10.99.0.50/24", "{r:#}");
    assert_eq!(addrs(&pod.name, "eth0"), vec!["10.99.0.50/24".to_string()]);

    let before_leases = fx.leases("t1");
    for (i, ip) in ["10.99.0.1/24", "10.98.0.5/24", "10.99.0.50/24"]
        .into_iter()
        .enumerate()
    {
        let p = fx.pod();
        let out = fx.weft("ADD", &with_ip(ip), &format!("x{i}"), &p.path, "eth0");
        out.expect_any_error();
        assert!(link(&p.name, "eth0").is_none(), "{ip}: eth0 left");
        assert_eq!(fx.leases("t1"), before_leases, "{ip}: leases changed");
        assert_eq!(weft_veths(&fx.node.name).len(), 1, "{ip}: veth leaked");
    }
    assert!(ping_retry(&fx.node.name, "10.99.0.50", 5));
}

#[test]
fn case_28_dual_stack() {
    let fx = fx();
    let pod = fx.pod();
    let conf = fx.config_with(json!({"ipam": {"ranges": [
        [{"subnet": "10.99.0.0/24"}], [{"subnet": "fd00:99::/64"}]
    ]}}));
    let r = fx.add(&conf, "c1", &pod);
    let idx = iface_index(&r, "eth0").unwrap();
    let ips = r["ips"].as_array().expect("ips");
    assert_eq!(ips.len(), 2, "{r:#}");
    let fams: BTreeSet<bool> = ips
        .iter()
        .map(|i| i["address"].as_str().unwrap().contains(':'))
        .collect();
    assert_eq!(fams.len(), 2, "one address per family: {r:#}");
    let kernel = addrs(&pod.name, "eth0");
    for ip in ips {
        assert_eq!(ip["interface"], idx, "{r:#}");
        let a = ip["address"].as_str().unwrap();
        assert!(
            kernel.contains(&a.to_string()),
            "{a} not on eth0: {kernel:?}"
        );
        if a.contains(':') {
            assert!(a.starts_with("fd00:99::") && a.ends_with("/64"), "{a}");
        }
    }
    assert_eq!(fx.leases("t1").len(), 2);
}

#[test]
fn case_29_dns() {
    let fx = fx();
    let p1 = fx.pod();
    let conf = fx.config_with(json!({"dns": {"nameservers": ["10.0.0.10"]}}));
    let r = fx.add(&conf, "c1", &p1);
    assert_eq!(r["dns"], json!({"nameservers": ["10.0.0.10"]}), "{r:#}");

    // No config dns, no IPAM dns → none.
    let p2 = fx.pod();
    let r = fx.add(&fx.config(), "c2", &p2);
    let dns = r.get("dns").cloned().unwrap_or(json!({}));
    assert!(
        dns == json!({})
            || dns
                .as_object()
                .is_some_and(|m| m.values().all(|v| v == &json!([]))),
        "unexpected dns {r:#}"
    );

    // No config dns, IPAM dns (host-local `resolvConf`) → IPAM's.
    let rc = fx.tmp_path().join("resolv.conf");
    std::fs::write(&rc, "nameserver 10.0.0.53\nsearch example.com\n").unwrap();
    let ipam_dns = fx.config_with(json!({"ipam": {"resolvConf": rc.to_string_lossy()}}));
    let p3 = fx.pod();
    let r = fx.add(&ipam_dns, "c3", &p3);
    assert_eq!(r["dns"]["nameservers"], json!(["10.0.0.53"]), "{r:#}");
    assert_eq!(r["dns"]["search"], json!(["example.com"]), "{r:#}");

    // Config dns replaces IPAM dns.
    let both = merged(&ipam_dns, json!({"dns": {"nameservers": ["10.0.0.10"]}}));
    let p4 = fx.pod();
    let r = fx.add(&both, "c4", &p4);
    assert_eq!(r["dns"]["nameservers"], json!(["10.0.0.10"]), "{r:#}");
}

#[test]
fn case_30_version_0_2_0_not_advertised() {
    let fx = fx();
    let pod = fx.pod();
    assert!(!supported(&fx, weft_bin()).contains("0.2.0"));
    let before = fx.snapshot(&[&pod]);
    let conf = fx.config_with(json!({"cniVersion": "0.2.0"}));
    let out = fx.weft("ADD", &conf, "c1", &pod.path, "eth0");
    out.expect_error(1);
    before.assert_unchanged(&fx.snapshot(&[&pod]));
}

// =======================================================================================
// DEL
// =======================================================================================

#[test]
fn case_31_del_removes_everything() {
    let fx = fx();
    let pod = fx.pod();
    let r = fx.add(&fx.config(), "c1", &pod);
    let hv = result_host_veth(&r)["name"].as_str().unwrap().to_string();
    let out = fx.weft(
        "DEL",
        &with_prev(&fx.config(), Some(&r)),
        "c1",
        &pod.path,
        "eth0",
    );
    out.expect_ok_empty();
    assert!(out.stdout.is_empty(), "DEL printed {:?}", out.stdout);
    assert!(link(&pod.name, "eth0").is_none(), "eth0 still in pod");
    assert!(
        link(&fx.node.name, &hv).is_none(),
        "host veth {hv} still there"
    );
    assert!(veths(&fx.node.name).is_empty());
    assert!(fx.leases("t1").is_empty(), "{:?}", fx.leases("t1"));
}

#[test]
fn case_32_del_twice() {
    let fx = fx();
    let pod = fx.pod();
    let r = fx.add(&fx.config(), "c1", &pod);
    fx.del(&fx.config(), "c1", &pod.path, Some(&r));
    let out = fx.weft(
        "DEL",
        &with_prev(&fx.config(), Some(&r)),
        "c1",
        &pod.path,
        "eth0",
    );
    out.expect_ok_empty();
    assert!(fx.leases("t1").is_empty());
}

#[test]
fn case_33_del_without_netns() {
    let fx = fx();
    let pod = fx.pod();
    let r = fx.add(&fx.config(), "c1", &pod);
    let mut env = cni_env("DEL", "c1", &pod.path, "eth0");
    env_set(&mut env, "CNI_NETNS", None);
    let out = fx.run(weft_bin(), &env, &bytes(&with_prev(&fx.config(), Some(&r))));
    out.expect_ok_empty();
    assert!(
        fx.leases("t1").is_empty(),
        "lease kept: {:?}",
        fx.leases("t1")
    );
    // Contract: DEL finds the host veth by its alias even without the netns.
    assert!(
        weft_veths(&fx.node.name).is_empty(),
        "{:?}",
        link_names(&fx.node.name)
    );
}

#[test]
fn case_34_del_after_netns_deleted() {
    let fx = fx();
    let mut pod = fx.pod();
    let r = fx.add(&fx.config(), "c1", &pod);
    let path = pod.path.clone();
    pod.delete();
    let out = fx.weft(
        "DEL",
        &with_prev(&fx.config(), Some(&r)),
        "c1",
        &path,
        "eth0",
    );
    out.expect_ok_empty();
    assert!(
        fx.leases("t1").is_empty(),
        "lease kept: {:?}",
        fx.leases("t1")
    );
    assert!(
        veths(&fx.node.name).is_empty(),
        "{:?}",
        link_names(&fx.node.name)
    );
}

#[test]
fn case_35_del_with_and_without_prev_result() {
    let fx = fx();
    let (p1, p2) = (fx.pod(), fx.pod());
    let r1 = fx.add(&fx.config(), "c1", &p1);
    fx.add(&fx.config(), "c2", &p2);
    fx.del(&fx.config(), "c1", &p1.path, Some(&r1));
    fx.del(&fx.config(), "c2", &p2.path, None);
    assert!(fx.leases("t1").is_empty(), "{:?}", fx.leases("t1"));
    assert!(veths(&fx.node.name).is_empty());
    assert!(link(&p1.name, "eth0").is_none() && link(&p2.name, "eth0").is_none());
}

#[test]
fn case_36_del_never_added() {
    let fx = fx();
    let pod = fx.pod();
    let r = fx.add(&fx.config(), "c1", &pod);
    let other = fx.pod();
    let before = fx.snapshot(&[&pod, &other]);
    let out = fx.weft("DEL", &fx.config(), "c999", &other.path, "eth0");
    out.expect_ok_empty();
    before.assert_unchanged(&fx.snapshot(&[&pod, &other]));
    assert!(ping_retry(&fx.node.name, &pod_ip(&r), 5));
}

// =======================================================================================
// CHECK
// =======================================================================================

#[test]
fn case_37_check_after_add() {
    let fx = fx();
    let pod = fx.pod();
    let r = fx.add(&fx.config(), "c1", &pod);
    let out = fx.check(&fx.config(), "c1", &pod, &r);
    out.expect_ok_empty();
}

#[test]
fn case_38_check_old_version_fails_1() {
    let fx = fx();
    let pod = fx.pod();
    let conf = fx.config_with(json!({"cniVersion": "0.3.1"}));
    let r = fx.add(&conf, "c1", &pod);
    let out = fx.check(&conf, "c1", &pod, &r);
    out.expect_error(1);
}

#[test]
fn case_39_check_without_prev_result_fails() {
    let fx = fx();
    let pod = fx.pod();
    fx.add(&fx.config(), "c1", &pod);
    let out = fx.weft("CHECK", &fx.config(), "c1", &pod.path, "eth0");
    out.expect_any_error();
}

#[test]
fn case_40_check_detects_missing_state() {
    let fx = fx();
    // (a) pod address removed.
    let p1 = fx.pod();
    let r1 = fx.add(&fx.config(), "c1", &p1);
    ip(
        &p1.name,
        &["addr", "flush", "dev", "eth0", "scope", "global"],
    );
    fx.check(&fx.config(), "c1", &p1, &r1).expect_any_error();
    // (b) eth0 deleted.
    let p2 = fx.pod();
    let r2 = fx.add(&fx.config(), "c2", &p2);
    ip(&p2.name, &["link", "del", "eth0"]);
    fx.check(&fx.config(), "c2", &p2, &r2).expect_any_error();
    // (c) lease file deleted.
    let p3 = fx.pod();
    let r3 = fx.add(&fx.config(), "c3", &p3);
    let lease = fx.lease_dir("t1").join(pod_ip(&r3));
    std::fs::remove_file(&lease).unwrap_or_else(|e| panic!("rm {}: {e}", lease.display()));
    fx.check(&fx.config(), "c3", &p3, &r3).expect_any_error();
}

#[test]
fn case_41_check_tolerates_extra_route_and_new_mac() {
    let fx = fx();
    let pod = fx.pod();
    let mut r = fx.add(&fx.config(), "c1", &pod);
    ip(
        &pod.name,
        &[
            "route",
            "add",
            "192.0.2.0/24",
            "via",
            "10.99.0.1",
            "dev",
            "eth0",
        ],
    );
    let mac = "02:11:22:33:44:55";
    ip(&pod.name, &["link", "set", "dev", "eth0", "address", mac]);
    let idx = iface_index(&r, "eth0").unwrap();
    r["interfaces"][idx]["mac"] = json!(mac);
    let out = fx.check(&fx.config(), "c1", &pod, &r);
    out.expect_ok_empty();
}

// =======================================================================================
// STATUS
// =======================================================================================

fn status_env() -> Vec<(String, String)> {
    vec![
        ("CNI_COMMAND".into(), "STATUS".into()),
        ("CNI_PATH".into(), bin_dir()),
    ]
}

#[test]
fn case_42_status_ready() {
    let fx = fx();
    let before = fx.snapshot(&[]);
    let out = fx.run(weft_bin(), &status_env(), &bytes(&fx.config()));
    out.expect_ok_empty();
    assert!(out.stdout.is_empty(), "{}", out.dump());
    // STATUS is read-only: no bridge, no lease.
    assert!(veths(&fx.node.name).is_empty());
    assert!(fx.leases("t1").is_empty());
    let after = fx.snapshot(&[]);
    assert_eq!(before.node.links, after.node.links, "STATUS created links");
}

#[test]
fn case_43_status_old_version_fails_1() {
    let fx = fx();
    let conf = fx.config_with(json!({"cniVersion": "1.0.0"}));
    let out = fx.run(weft_bin(), &status_env(), &bytes(&conf));
    out.expect_error(1);
}

#[test]
fn case_44_status_pool_full_fails_50() {
    let fx = fx();
    let conf = small_pool(&fx);
    let pods: Vec<Pod> = (0..5).map(|_| fx.pod()).collect();
    let mut results = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        results.push(fx.add(&conf, &format!("c{i}"), pod));
    }
    let out = fx.run(weft_bin(), &status_env(), &bytes(&conf));
    out.expect_error(50);
    // ADD/DEL keep working after a failed STATUS.
    fx.del(&conf, "c0", &pods[0].path, Some(&results[0]));
    assert_eq!(fx.leases("t1").len(), 4);
    assert!(link(&pods[0].name, "eth0").is_none());
    // Room again → ready again.
    fx.run(weft_bin(), &status_env(), &bytes(&conf))
        .expect_ok_empty();
}

#[test]
fn case_45_status_forwarded_to_ipam_failure() {
    let fx = fx();
    let stub = fx.stub_plugin("stubipam");
    stub.reply(
        "STATUS",
        1,
        r#"{"cniVersion":"1.1.0","code":50,"msg":"stub pool exhausted"}"#,
    );
    let conf = fx.config_with(json!({"ipam": {"type": "stubipam"}}));
    let env = vec![
        ("CNI_COMMAND".to_string(), "STATUS".to_string()),
        ("CNI_PATH".to_string(), stub.cni_path()),
    ];
    let out = fx.run(weft_bin(), &env, &bytes(&conf));
    let (msg, _) = out.expect_error(50);
    assert!(
        msg.contains("stub pool exhausted"),
        "IPAM msg not kept: {msg}"
    );
    assert!(
        stub.calls().contains(&"STATUS".to_string()),
        "{:?}",
        stub.calls()
    );
}

// =======================================================================================
// GC
// =======================================================================================

fn gc_env(cni_path: &str) -> Vec<(String, String)> {
    vec![
        ("CNI_COMMAND".into(), "GC".into()),
        ("CNI_CONTAINERID".into(), String::new()),
        ("CNI_NETNS".into(), String::new()),
        ("CNI_IFNAME".into(), String::new()),
        ("CNI_PATH".into(), cni_path.into()),
    ]
}

#[test]
fn case_46_gc_releases_stale_attachments() {
    let fx = fx();
    let (p1, p2) = (fx.pod(), fx.pod());
    let r1 = fx.add(&fx.config(), "c1", &p1);
    let r2 = fx.add(&fx.config(), "c2", &p2);
    let hv1 = result_host_veth(&r1)["name"].as_str().unwrap().to_string();
    let hv2 = result_host_veth(&r2)["name"].as_str().unwrap().to_string();
    let conf = fx.config_with(json!({
        "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]
    }));
    let out = fx.run(weft_bin(), &gc_env(&bin_dir()), &bytes(&conf));
    out.expect_ok_empty();
    let leases = fx.leases("t1");
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert_eq!(leases[&pod_ip(&r1).parse().unwrap()], "c1\r\neth0");
    assert!(link(&fx.node.name, &hv2).is_none(), "c2 host veth kept");
    assert!(link(&fx.node.name, &hv1).is_some(), "c1 host veth removed");
    assert!(ping_retry(&fx.node.name, &pod_ip(&r1), 5), "c1 broken");
    fx.check(&fx.config(), "c1", &p1, &r1).expect_ok_empty();
}

#[test]
fn case_47_gc_old_version_fails_1() {
    let fx = fx();
    let conf = fx.config_with(json!({"cniVersion": "1.0.0", "cni.dev/valid-attachments": []}));
    let out = fx.run(weft_bin(), &gc_env(&bin_dir()), &bytes(&conf));
    out.expect_error(1);
}

#[test]
fn case_48_gc_absent_or_empty_list_releases_network() {
    for variant in ["absent", "empty"] {
        let fx = fx();
        let other_bridge = format!("{}x", fx.bridge);
        let t2 = fx.config_with(json!({
            "name": "t2", "bridge": other_bridge,
            "ipam": {"ranges": [[{"subnet": "10.98.0.0/24"}]]}
        }));
        let (p1, p2, p3) = (fx.pod(), fx.pod(), fx.pod());
        fx.add(&fx.config(), "c1", &p1);
        fx.add(&fx.config(), "c2", &p2);
        let r3 = fx.add(&t2, "c3", &p3);
        let conf = match variant {
            "absent" => fx.config(),
            _ => fx.config_with(json!({"cni.dev/valid-attachments": []})),
        };
        let out = fx.run(weft_bin(), &gc_env(&bin_dir()), &bytes(&conf));
        out.expect_ok_empty();
        assert!(
            fx.leases("t1").is_empty(),
            "{variant}: {:?}",
            fx.leases("t1")
        );
        assert_eq!(fx.leases("t2").len(), 1, "{variant}: other network touched");
        let hv3 = result_host_veth(&r3)["name"].as_str().unwrap().to_string();
        assert!(
            link(&fx.node.name, &hv3).is_some(),
            "{variant}: t2 veth removed"
        );
        assert_eq!(
            weft_veths(&fx.node.name).len(),
            1,
            "{variant}: {:?}",
            link_names(&fx.node.name)
        );
    }
}

#[test]
fn case_49_gc_legacy_attachments_key() {
    let fx = fx();
    let (p1, p2) = (fx.pod(), fx.pod());
    let r1 = fx.add(&fx.config(), "c1", &p1);
    fx.add(&fx.config(), "c2", &p2);
    let conf = fx.config_with(json!({
        "cni.dev/attachments": [{"containerID": "c1", "ifname": "eth0"}]
    }));
    let out = fx.run(weft_bin(), &gc_env(&bin_dir()), &bytes(&conf));
    out.expect_ok_empty();
    let leases = fx.leases("t1");
    assert_eq!(leases.len(), 1, "{leases:?}");
    assert!(leases.contains_key(&pod_ip(&r1).parse().unwrap()));
    assert_eq!(weft_veths(&fx.node.name).len(), 1);
}

#[test]
fn case_50_gc_forwarded_to_ipam() {
    let fx = fx();
    let stub = fx.stub_plugin("stubipam");
    let conf = fx.config_with(json!({
        "ipam": {"type": "stubipam"},
        "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]
    }));
    let stdin = bytes(&conf);
    let out = fx.run(weft_bin(), &gc_env(&stub.cni_path()), &stdin);
    out.expect_ok_empty();
    assert_eq!(stub.verb_calls(), vec!["GC".to_string()]);
    assert_eq!(
        String::from_utf8_lossy(&stub.stdin("GC").unwrap()),
        String::from_utf8_lossy(&stdin),
        "IPAM GC stdin differs"
    );
}

// =======================================================================================
// Delegation, chaining, compatibility
// =======================================================================================

const STUB_ADD: &str =
    r#"{"cniVersion":"1.1.0","ips":[{"address":"10.99.0.7/24","gateway":"10.99.0.1"}]}"#;

#[test]
fn case_51_ipam_gets_identical_stdin_and_env() {
    let fx = fx();
    let pod = fx.pod();
    let stub = fx.stub_plugin("stubipam");
    stub.reply("ADD", 0, STUB_ADD);
    let conf = fx.config_with(json!({"ipam": {"type": "stubipam"}}));
    let mut env = cni_env("ADD", "c1", &pod.path, "eth0");
    env_set(&mut env, "CNI_PATH", Some(&stub.cni_path()));
    env_set(
        &mut env,
        "CNI_ARGS",
        Some("IgnoreUnknown=1;K8S_POD_NAME=web-0"),
    );
    let add_in = bytes(&conf);
    let r = fx.run(weft_bin(), &env, &add_in).expect_ok_json();
    assert_eq!(r["ips"][0]["address"], "10.99.0.7/24", "{r:#}");
    assert!(addrs(&pod.name, "eth0").contains(&"10.99.0.7/24".to_string()));

    let check_in = bytes(&with_prev(&conf, Some(&r)));
    env_set(&mut env, "CNI_COMMAND", Some("CHECK"));
    fx.run(weft_bin(), &env, &check_in).expect_ok_empty();
    env_set(&mut env, "CNI_COMMAND", Some("DEL"));
    fx.run(weft_bin(), &env, &check_in).expect_ok_empty();

    for (verb, stdin) in [("ADD", &add_in), ("CHECK", &check_in), ("DEL", &check_in)] {
        let got = stub
            .stdin(verb)
            .unwrap_or_else(|| panic!("IPAM not called for {verb}: {:?}", stub.calls()));
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(stdin),
            "{verb}: IPAM stdin differs"
        );
        let mut want: std::collections::BTreeMap<String, String> = env.iter().cloned().collect();
        want.insert("CNI_COMMAND".into(), verb.into());
        assert_eq!(stub.env(verb).unwrap(), want, "{verb}: IPAM env differs");
    }
}

#[test]
fn case_52_ipam_result_without_version() {
    let fx = fx();
    let pod = fx.pod();
    let stub = fx.stub_plugin("stubipam");
    stub.reply(
        "ADD",
        0,
        r#"{"ips":[{"address":"10.99.0.7/24","gateway":"10.99.0.1"}]}"#,
    );
    let conf = fx.config_with(json!({"ipam": {"type": "stubipam"}}));
    let mut env = cni_env("ADD", "c1", &pod.path, "eth0");
    env_set(&mut env, "CNI_PATH", Some(&stub.cni_path()));
    let r = fx.run(weft_bin(), &env, &bytes(&conf)).expect_ok_json();
    assert_eq!(r["cniVersion"], "1.1.0");
    assert_eq!(r["ips"][0]["address"], "10.99.0.7/24", "{r:#}");
    assert!(addrs(&pod.name, "eth0").contains(&"10.99.0.7/24".to_string()));
}

#[test]
fn case_53_failure_after_ipam_add_runs_ipam_del() {
    let fx = fx();
    let pod = fx.pod();
    // IPv6 disabled in the pod: configuring the IPAM's IPv6 address must fail after IPAM ADD
    // succeeded. The route's gateway is unreachable as a second, independent failure.
    let out = exec_in(
        &pod.name,
        &[
            "sysctl",
            "-q",
            "-w",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let stub = fx.stub_plugin("stubipam");
    stub.reply(
        "ADD",
        0,
        r#"{"cniVersion":"1.1.0","ips":[{"address":"10.99.0.7/24","gateway":"10.99.0.1"},{"address":"fd00:99::7/64"}],"routes":[{"dst":"192.0.2.0/24","gw":"203.0.113.1"}]}"#,
    );
    let conf = fx.config_with(json!({"ipam": {"type": "stubipam"}}));
    let mut env = cni_env("ADD", "c1", &pod.path, "eth0");
    env_set(&mut env, "CNI_PATH", Some(&stub.cni_path()));
    let out = fx.run(weft_bin(), &env, &bytes(&conf));
    out.expect_any_error();
    assert_eq!(
        stub.verb_calls(),
        vec!["ADD".to_string(), "DEL".to_string()],
        "IPAM calls"
    );
    assert_no_attachment(&fx, &pod, "eth0");
}

#[test]
fn case_54_ipam_error_code_propagated() {
    let fx = fx();
    let pod = fx.pod();
    let stub = fx.stub_plugin("stubipam");
    stub.reply(
        "ADD",
        1,
        r#"{"cniVersion":"1.1.0","code":11,"msg":"stub says try again later"}"#,
    );
    let conf = fx.config_with(json!({"ipam": {"type": "stubipam"}}));
    let mut env = cni_env("ADD", "c1", &pod.path, "eth0");
    env_set(&mut env, "CNI_PATH", Some(&stub.cni_path()));
    let out = fx.run(weft_bin(), &env, &bytes(&conf));
    let (msg, _) = out.expect_error(11);
    assert!(msg.contains("stub says try again later"), "msg: {msg}");
    assert_no_attachment(&fx, &pod, "eth0");
}

#[test]
fn case_55_reserved_and_unknown_keys_accepted() {
    let fx = fx();
    let pod = fx.pod();
    let conf = fx.config_with(json!({
        "capabilities": {"portMappings": true, "mac": true},
        "runtimeConfig": {"portMappings": []},
        "args": {"cni": {"labels": [{"key": "app", "value": "web"}]}, "other": {"x": 1}},
        "cni.dev/x": {"anything": [1, 2]},
        "keyA": "valueA"
    }));
    let r = fx.add(&conf, "c1", &pod);
    assert!(link(&pod.name, "eth0").is_some());
    fx.check(&conf, "c1", &pod, &r).expect_ok_empty();
    fx.del(&conf, "c1", &pod.path, Some(&r));
    assert!(fx.leases("t1").is_empty());
}

/// Conflist at 1.0.0 (the reference plugins here stop at 1.0.0): weft first, then `extra`.
fn conflist(fx: &Fixture, extra: Value) -> Value {
    let mut weft = fx.config();
    let m = weft.as_object_mut().unwrap();
    m.remove("name");
    m.remove("cniVersion");
    json!({"cniVersion": "1.0.0", "name": "t1", "plugins": [weft, extra]})
}

fn attachment(pod: &Pod, caps: Value) -> Attachment {
    Attachment {
        container_id: "c1".into(),
        netns: pod.path.clone(),
        ifname: "eth0".into(),
        cni_args: None,
        capability_args: caps.as_object().cloned().unwrap_or_default(),
    }
}

fn chain_ok<T>(r: Result<T, PluginOutput>, what: &str) -> T {
    r.unwrap_or_else(|o| panic!("{what} failed\n{}", o.dump()))
}

fn iptables_nat(ns: &str) -> String {
    let out = exec_in(ns, &["iptables-save", "-t", "nat"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn case_56_chain_portmap() {
    let fx = fx();
    let pod = fx.pod();
    let list = conflist(
        &fx,
        json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}),
    );
    let att = attachment(
        &pod,
        json!({"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]}),
    );
    let cp = cni_path_with_ref();
    let r = chain_ok(chain_add(&fx.node, &cp, &list, &att), "chain ADD");
    let ip = pod_ip(&r);
    let rules = iptables_nat(&fx.node.name) + &nft_text(&fx.node.name);
    let target = format!("{ip}:80");
    assert!(rules.contains(&target), "no DNAT to {target}:\n{rules}");
    // (No chain CHECK here: reference portmap v1.1.1's CHECK fails on IPv4-only pods,
    // "could not check ipv6 dnat: chain CNI-DN-… not found", independent of weft.)
    chain_ok(chain_del(&fx.node, &cp, &list, &att, Some(&r)), "chain DEL");
    let rules = iptables_nat(&fx.node.name) + &nft_text(&fx.node.name);
    assert!(!rules.contains(&target), "DNAT to {target} left:\n{rules}");
    assert!(fx.leases("t1").is_empty());
    assert!(veths(&fx.node.name).is_empty());
}

#[test]
fn case_57_chain_bandwidth() {
    let fx = fx();
    let pod = fx.pod();
    let list = conflist(
        &fx,
        json!({"type": "bandwidth", "capabilities": {"bandwidth": true}}),
    );
    let att = attachment(
        &pod,
        json!({"bandwidth": {
            "ingressRate": 1_000_000, "ingressBurst": 100_000,
            "egressRate": 1_000_000, "egressBurst": 100_000
        }}),
    );
    let cp = cni_path_with_ref();
    let r = chain_ok(chain_add(&fx.node, &cp, &list, &att), "chain ADD");
    let ifb: Vec<Value> = links(&fx.node.name)
        .into_iter()
        .filter(|l| l["ifname"].as_str().is_some_and(|n| n.starts_with("bwp")))
        .collect();
    assert_eq!(ifb.len(), 1, "no bwp ifb: {:?}", link_names(&fx.node.name));
    assert_eq!(link_kind(&ifb[0]), Some("ifb"));
    let name = ifb[0]["ifname"].as_str().unwrap();
    assert!(
        iface_index(&r, name).is_some(),
        "{name} not in result {r:#}"
    );
    chain_ok(chain_del(&fx.node, &cp, &list, &att, Some(&r)), "chain DEL");
    assert!(link(&fx.node.name, name).is_none(), "ifb {name} left");
    assert!(fx.leases("t1").is_empty());
}

#[test]
fn case_58_chain_tuning_mac() {
    let fx = fx();
    let pod = fx.pod();
    let list = conflist(
        &fx,
        json!({"type": "tuning", "capabilities": {"mac": true}}),
    );
    let mac = "c2:11:22:33:44:55";
    let att = attachment(&pod, json!({"mac": mac}));
    let cp = cni_path_with_ref();
    let r = chain_ok(chain_add(&fx.node, &cp, &list, &att), "chain ADD");
    let idx = iface_index(&r, "eth0").expect("eth0 in result");
    assert_eq!(r["interfaces"][idx]["mac"], mac, "{r:#}");
    assert_eq!(link(&pod.name, "eth0").unwrap()["address"], mac);
    chain_ok(chain_check(&fx.node, &cp, &list, &att, &r), "chain CHECK");
    chain_ok(chain_del(&fx.node, &cp, &list, &att, Some(&r)), "chain DEL");
    assert!(fx.leases("t1").is_empty());
}

fn mode_of(p: &std::path::Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn case_59_host_local_compatible_store() {
    let fx = fx();
    let pod = fx.pod();
    let r = fx.add(&fx.config(), "c1", &pod);
    assert_eq!(r["ips"][0]["address"], "10.99.0.2/24", "first lease is .2");
    let dir = fx.lease_dir("t1");
    assert_eq!(mode_of(&dir), 0o755, "network dir mode");
    let lease = dir.join("10.99.0.2");
    assert_eq!(std::fs::read(&lease).unwrap(), b"c1\r\neth0");
    assert_eq!(mode_of(&lease), 0o600, "lease mode");
    let last = dir.join("last_reserved_ip.0");
    assert_eq!(std::fs::read(&last).unwrap(), b"10.99.0.2");
    assert_eq!(mode_of(&last), 0o600, "last_reserved_ip mode");
    let lock = dir.join("lock");
    assert_eq!(std::fs::read(&lock).unwrap(), b"", "lock must exist, empty");
    // Nothing else (temp files of the crash-safe writer must be gone).
    let names: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let want: BTreeSet<String> = ["10.99.0.2", "last_reserved_ip.0", "lock"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(names, want);

    // Reference host-local on the same dataDir sees the lease.
    let hl_conf = json!({
        "cniVersion": "1.0.0", "name": "t1",
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.99.0.0/24"}]],
                 "dataDir": fx.ipam_dir().to_string_lossy()}
    });
    let hl = format!("{REF_CNI_DIR}/host-local");
    let mut env = cni_env("CHECK", "c1", &pod.path, "eth0");
    env_set(&mut env, "CNI_PATH", Some(REF_CNI_DIR));
    fx.run(&hl, &env, &bytes(&hl_conf)).expect_ok_empty();
    env_set(&mut env, "CNI_COMMAND", Some("ADD"));
    env_set(&mut env, "CNI_CONTAINERID", Some("h2"));
    let hr = fx.run(&hl, &env, &bytes(&hl_conf)).expect_ok_json();
    let hip = result_ip(&hr, 0);
    assert_ne!(hip, "10.99.0.2", "host-local handed out weft's lease");
    // ... and weft sees host-local's lease in turn.
    let p3 = fx.pod();
    let r3 = fx.add(&fx.config(), "c3", &p3);
    let ip3 = pod_ip(&r3);
    assert!(
        ip3 != hip && ip3 != "10.99.0.2",
        "weft reused a lease: {ip3}"
    );
    let leases = fx.leases("t1");
    assert_eq!(leases[&hip.parse().unwrap()], "h2\r\neth0");
    assert_eq!(leases.len(), 3, "{leases:?}");

    // The standalone weft-ipam binary (as any main plugin would delegate to it) on the
    // same store: CHECK sees c1, ADD hands out a fresh address, DEL releases exactly it.
    let wi_conf = merged(&hl_conf, json!({"ipam": {"type": "weft-ipam"}}));
    let mut env = cni_env("CHECK", "c1", &pod.path, "eth0");
    fx.run(ipam_bin(), &env, &bytes(&wi_conf)).expect_ok_empty();
    env_set(&mut env, "CNI_COMMAND", Some("ADD"));
    env_set(&mut env, "CNI_CONTAINERID", Some("w4"));
    let wr = fx.run(ipam_bin(), &env, &bytes(&wi_conf)).expect_ok_json();
    assert!(
        wr.get("interfaces").is_none(),
        "IPAM result lists interfaces: {wr}"
    );
    let wip = result_ip(&wr, 0);
    assert!(
        !leases.contains_key(&wip.parse().unwrap()),
        "weft-ipam reused {wip}"
    );
    assert_eq!(fx.leases("t1")[&wip.parse().unwrap()], "w4\r\neth0");
    env_set(&mut env, "CNI_COMMAND", Some("DEL"));
    fx.run(ipam_bin(), &env, &bytes(&wi_conf)).expect_ok_empty();
    assert_eq!(fx.leases("t1"), leases);
}

#[test]
fn case_60_results_round_trip_as_prev_result() {
    let fx = fx();
    for (i, v) in ["1.1.0", "0.4.0"].into_iter().enumerate() {
        let pod = fx.pod();
        let conf = fx.config_with(json!({"cniVersion": v}));
        let id = format!("r{i}");
        let r = fx.add(&conf, &id, &pod);
        assert_eq!(r["cniVersion"], v);
        fx.check(&conf, &id, &pod, &r).expect_ok_empty();
        fx.del(&conf, &id, &pod.path, Some(&r));
        assert!(link(&pod.name, "eth0").is_none(), "{v}: eth0 left");
    }
    assert!(fx.leases("t1").is_empty(), "{:?}", fx.leases("t1"));
    assert!(veths(&fx.node.name).is_empty());
}
