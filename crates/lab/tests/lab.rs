//! The lab's own plumbing, as root, with the real `weftctl`, `ip` and etcd: prerequisites,
//! the underlay and node namespaces (`lab up --until …`, so no weftd is needed), etcd
//! stop/start, idempotent `up`, and `down` after clean runs, crashes and half-made labs.
//! The tests with weftd and pods are in `lab_cluster.rs`.

mod lab_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lab_support::*;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn missing_binaries_are_one_clear_line_and_nothing_is_made() {
    let lab = Lab::new();
    let empty = TempDir::new("labtest");
    let out = lab.cmd(
        &["up"],
        &["--bin-dir", empty.path().to_str().unwrap(), "--nodes", "2"],
    );
    assert!(!out.status.success(), "{}", text(&out));
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("weftd not found"), "{err}");
    assert!(err.contains(&empty.path().display().to_string()), "{err}");
    lab.assert_gone();
}

#[test]
fn not_root_is_one_clear_line_and_nothing_is_made() {
    let lab = Lab::new();
    // Copies anyone may run: the build tree may sit where `nobody` cannot reach. weftctl
    // finds weftctl-lab next to itself.
    let dir = TempDir::new("labtest");
    let copy = dir.path().join("weftctl");
    std::fs::copy(weftctl_bin(), &copy).unwrap();
    std::fs::copy(lab_bin(), dir.path().join("weftctl-lab")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&copy)
        .args(["lab", "up", "--name", &lab.name])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    let err = stderr(&out);
    assert_eq!(
        err.trim(),
        "weftctl: the lab creates network namespaces and must run as root"
    );
    lab.assert_gone();
}

#[test]
fn missing_etcd_is_reported_before_anything_is_made() {
    let lab = Lab::new();
    // A PATH with `ip` and nothing else.
    let path = TempDir::new("labtest");
    std::os::unix::fs::symlink("/usr/sbin/ip", path.path().join("ip")).unwrap();
    let out = weftctl_env(
        &["lab", "up", "--name", &lab.name, "--until", "etcd"],
        &[("PATH", path.path().to_str().unwrap())],
    );
    assert!(!out.status.success(), "{}", text(&out));
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("`etcd` not found on PATH"), "{err}");
    lab.assert_gone();

    // And without `ip` at all.
    let nothing = TempDir::new("labtest");
    let out = weftctl_env(
        &["lab", "up", "--name", &lab.name, "--until", "underlay"],
        &[("PATH", nothing.path().to_str().unwrap())],
    );
    assert!(
        stderr(&out).contains("`ip` not found on PATH"),
        "{}",
        text(&out)
    );
    lab.assert_gone();
}

#[test]
fn bad_names_and_options_are_refused_before_anything_is_made() {
    for bad in ["Weft", "a-b", "abcdefghijklmnopq"] {
        let out = weftctl(&["lab", "up", "--name", bad, "--until", "underlay"]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("invalid lab name"), "{}", text(&out));
    }
    let lab = Lab::new();
    for args in [
        &["--mtu", "9000,1400", "--segments", "3"][..],
        &["--mtu", "1000"],
        &["--nodes", "0"],
        &["--segments", "17"],
    ] {
        let mut a = vec!["--until", "underlay"];
        a.extend_from_slice(args);
        let out = lab.up(&a);
        assert!(!out.status.success(), "{args:?}: {}", text(&out));
        assert!(stderr(&out).contains("invalid"), "{args:?}: {}", text(&out));
        lab.assert_gone();
    }
    let out = weftctl(&["lab", "pods", "--name", &lab.name]);
    assert!(stderr(&out).contains("no lab named"), "{}", text(&out));
}

#[test]
fn underlay_nodes_check_and_down() {
    let lab = Lab::new();
    let progress = lab.up_ok(&[
        "--until",
        "nodes",
        "--nodes",
        "3",
        "--pods-per-node",
        "0",
        "--backend",
        "auto",
        "--mtu",
        "9000,1400",
    ]);
    for line in ["creating underlay", "starting etcd", "creating 3 node(s)"] {
        assert!(progress.contains(line), "{progress}");
    }

    // Round-robin over two segments, each with its MTU, addresses as planned.
    for (node, mtu, v4, v6) in [
        ("n1", 9000, "192.168.100.11", "fd00:192:168:100::11"),
        ("n2", 1400, "192.168.101.12", "fd00:192:168:101::12"),
        ("n3", 9000, "192.168.100.13", "fd00:192:168:100::13"),
    ] {
        let link = ipj(&lab.ns(node), &["addr", "show", "eth0"]);
        let link = &link[0];
        assert_eq!(link["mtu"], mtu, "{node}: {link}");
        let addrs: Vec<&str> = link["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a["local"].as_str())
            .collect();
        assert!(
            addrs.contains(&v4) && addrs.contains(&v6),
            "{node}: {addrs:?}"
        );
    }
    // The outside knows the segments and nothing else (no pod CIDRs, no default route).
    let routes = ipj(&lab.ns("out"), &["route", "show"]);
    let dsts: Vec<&str> = routes
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["dst"].as_str())
        .collect();
    assert_eq!(
        dsts,
        ["192.168.100.0/24", "192.168.101.0/24", "203.0.113.0/24"]
    );

    // Real packets over the underlay: every node reaches every node and the outside, by
    // its own address (no NAT on the underlay).
    let (ok, report) = lab.check_json();
    assert!(ok, "{report:#}");
    let cells = cells(&report);
    // 3 nodes × (2 peers + outside) × 2 families × TCP and UDP.
    assert_eq!(cells.len(), 36, "{report:#}");
    assert_eq!(cells.iter().filter(|c| c["proto"] == "udp").count(), 18);
    assert!(
        cells
            .iter()
            .all(|c| c["section"] == "underlay" && c["ok"] == true)
    );
    let text_report = lab.ok(&["check"], &[]);
    assert!(text_report.contains("check: all 36 ok"), "{text_report}");

    lab.ok(&["down"], &[]);
    lab.assert_gone();
    // A second down finds nothing and is fine with it.
    let out = lab.cmd(&["down"], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(stderr(&out).contains("nothing to remove"), "{}", text(&out));
}

/// Deleting nodes never changes the router's MAC on a segment: the other nodes keep
/// reaching the router (and etcd behind it) without waiting for their neighbour entries to
/// expire.
#[test]
fn node_del_keeps_the_router_reachable() {
    let lab = Lab::new();
    lab.up_ok(&["--nodes", "4", "--until", "nodes"]);
    let ul = lab.ns("ul");
    let mac = |ns: &str| ipj(ns, &["link", "show", "seg0"])[0]["address"].clone();
    let router_mac = mac(&ul);
    let ping_router = |node: &str| {
        let out = in_ns(
            &lab.ns(node),
            "ping",
            &["-c", "1", "-W", "1", "192.168.100.1"],
        );
        assert!(out.status.success(), "{node} → router: {}", text(&out));
    };
    for n in ["n1", "n2", "n3", "n4"] {
        ping_router(n);
    }
    for gone in ["n1", "n2", "n3"] {
        lab.ok(&["node", "del"], &[gone]);
        assert_eq!(
            mac(&ul),
            router_mac,
            "seg0 changed its MAC when {gone} left"
        );
        // The last node's neighbour entry for the router is fresh: a changed MAC would
        // blackhole this ping.
        ping_router("n4");
    }
}

#[test]
fn up_again_is_a_no_op_and_finishes_a_partial_lab() {
    let lab = Lab::new();
    lab.up_ok(&[
        "--until",
        "underlay",
        "--nodes",
        "2",
        "--pods-per-node",
        "0",
    ]);
    assert!(!std::path::Path::new(&format!("/run/netns/{}", lab.ns("n1"))).exists());
    let ul = netns_inode(&lab.ns("ul"));

    // The same lab, further: the nodes are added, the underlay kept.
    lab.up_ok(&["--until", "nodes"]);
    assert_eq!(
        netns_inode(&lab.ns("ul")),
        ul,
        "the underlay was made again"
    );
    let n1 = netns_inode(&lab.ns("n1"));
    let etcd_pid = lab.state()["etcd_pid"].as_u64().unwrap();

    // Again: nothing new, nothing restarted.
    let progress = lab.up_ok(&["--until", "nodes", "--nodes", "2"]);
    assert!(progress.contains("exists; completing it"), "{progress}");
    assert_eq!(netns_inode(&lab.ns("n1")), n1);
    assert_eq!(lab.state()["etcd_pid"].as_u64().unwrap(), etcd_pid);

    // Options of an existing lab cannot change under it.
    let out = lab.up(&["--until", "nodes", "--nodes", "3"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("already exists with --nodes 2, not 3"),
        "{}",
        text(&out)
    );

    // A node whose namespace vanished (someone deleted it) comes back with its cable.
    let out = Command::new("ip")
        .args(["netns", "del", &lab.ns("n2")])
        .output()
        .unwrap();
    assert!(out.status.success());
    lab.up_ok(&["--until", "nodes"]);
    let (ok, report) = lab.check_json();
    assert!(ok, "{report:#}");
}

#[test]
fn etcd_stop_and_start_keep_the_data() {
    let lab = Lab::new();
    lab.up_ok(&["--until", "etcd"]);
    let ul = lab.ns("ul");
    let etcdctl = |args: &[&str]| {
        let mut a = vec![
            "--endpoints",
            "http://192.168.100.1:2379",
            "--dial-timeout",
            "1s",
        ];
        a.extend_from_slice(args);
        in_ns(&ul, "etcdctl", &a)
    };
    let out = etcdctl(&["put", "/weft-lab-test", "kept"]);
    assert!(out.status.success(), "{}", text(&out));

    let out = lab.ok(&["etcd", "stop"], &[]);
    assert!(out.contains("stopped"), "{out}");
    assert!(!etcdctl(&["get", "/weft-lab-test"]).status.success());
    assert!(lab.ok(&["etcd", "stop"], &[]).contains("was not running"));

    lab.ok(&["etcd", "start"], &[]);
    let out = etcdctl(&["get", "--print-value-only", "/weft-lab-test"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "kept",
        "{}",
        text(&out)
    );
    // Starting a running etcd is a no-op (same pid).
    let pid = lab.state()["etcd_pid"].clone();
    lab.ok(&["etcd", "start"], &[]);
    assert_eq!(lab.state()["etcd_pid"], pid);
}

#[test]
fn down_after_weftctl_is_killed_mid_up() {
    let lab = Lab::new();
    let bin = bin_dir();
    let mut child = Command::new(weftctl_bin())
        .args([
            "lab", "up", "--name", &lab.name, "--until", "nodes", "--nodes", "12",
        ])
        .args(["--pods-per-node", "0", "--bin-dir", bin.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it as soon as etcd has been started: namespaces, a daemon and state all exist.
    let pidfile = lab.state_dir().join("etcd.pid");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pidfile.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(pidfile.exists(), "lab up never got to etcd");
    assert!(!lab.leftovers().is_empty());

    lab.ok(&["down"], &[]);
    lab.assert_gone();
}

#[test]
fn down_removes_a_half_made_lab_and_what_runs_in_it() {
    let lab = Lab::new();
    // What a crash could leave: namespaces, a process inside one, a daemon that outlived
    // its namespace (named by the state dir), and no state.json.
    for short in ["ul", "n1"] {
        let out = Command::new("ip")
            .args(["netns", "add", &lab.ns(short)])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    let nodes = lab.state_dir().join("nodes/n1");
    std::fs::create_dir_all(&nodes).unwrap();
    let mut inside = Command::new("ip")
        .args(["netns", "exec", &lab.ns("n1"), "sleep", "600"])
        .spawn()
        .unwrap();
    // A "weftd" (sleep under that name) working in the state dir, in no lab namespace.
    let bin = TempDir::new("labtest");
    let fake_name = bin.path().join("weftd");
    std::os::unix::fs::symlink("/bin/sleep", &fake_name).unwrap();
    let mut outlived = Command::new(&fake_name)
        .arg("600")
        .current_dir(&nodes)
        .spawn()
        .unwrap();
    // And a person's shell in the state dir, which is not the lab's to kill.
    let mut bystander = Command::new("sleep")
        .arg("600")
        .current_dir(&nodes)
        .spawn()
        .unwrap();

    lab.ok(&["down"], &[]);
    // Both were killed by `down` (a signal, not an exit of their own).
    let status = inside.wait().unwrap();
    assert!(
        status.code().is_none(),
        "sleep in the lab survived: {status}"
    );
    let status = outlived.wait().unwrap();
    assert!(status.code().is_none(), "the daemon survived: {status}");
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "a bystander was killed"
    );
    bystander.kill().unwrap();
    bystander.wait().unwrap();
    lab.assert_gone();
}

#[test]
fn down_leaves_other_labs_alone() {
    // `wl<a>-` is not a prefix of `wl<a>1-`: lab names have no '-'.
    let a = Lab::new();
    // `y`, not a digit: unique_name() ends in a counter, so `<a>1` can be another test's
    // lab (t…x1 + 1 = t…x11).
    let b = Lab {
        name: format!("{}y", a.name),
    };
    a.up_ok(&["--until", "underlay"]);
    b.up_ok(&["--until", "etcd"]);
    a.ok(&["down"], &[]);
    a.assert_gone();
    assert!(b.leftovers().len() >= 3, "{:?}", b.leftovers());
    let etcd = b.state()["etcd_pid"].as_u64().unwrap() as u32;
    assert!(alive(etcd), "the other lab's etcd was killed");
}

#[test]
fn pod_add_without_a_ready_node_fails_cleanly() {
    let lab = Lab::new();
    lab.up_ok(&["--until", "nodes", "--nodes", "1", "--pods-per-node", "0"]);
    let out = lab.cmd(&["pod", "add"], &["web", "--node", "n1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("node n1 is not ready"),
        "{}",
        text(&out)
    );
    // No pod record, no pod namespace.
    assert_eq!(lab.state()["pods"], serde_json::json!([]));
    assert!(!std::path::Path::new(&format!("/run/netns/{}", lab.ns("p-web"))).exists());

    for (args, want) in [
        (&["Web", "--node", "n1"][..], "invalid pod name"),
        (&["web", "--node", "n9"], "has no node \"n9\""),
        (
            &["web", "--node", "n1", "--labels", "a=b c"],
            "invalid label value",
        ),
        (
            &["web", "--node", "n1", "--namespace", "Kube"],
            "invalid namespace",
        ),
    ] {
        let out = lab.cmd(&["pod", "add"], args);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(want), "{args:?}: {}", text(&out));
    }
    let out = lab.cmd(&["pod", "del"], &["web"]);
    assert!(
        stderr(&out).contains("has no pod \"web\""),
        "{}",
        text(&out)
    );
}
