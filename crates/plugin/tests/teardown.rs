//! DEL returns once the pod's veth is unlisted and hands the kernel's deferred teardown to a
//! detached child. These tests pin what a runtime may rely on when DEL returns: the
//! interface, its routes and its lease are gone, its names can be used again at once, and
//! the plugin's stdout reaches EOF when the plugin exits (no child holds it). Run as root.

mod e2e_support;

use std::io::Read;
use std::process::Stdio;

use e2e_support::*;
use serde_json::json;
use weft_testkit::assert_root;

/// ADD → DEL → ADD of the same attachment in the same pod namespace, over and over: each
/// ADD must find the host veth name, the pod interface name and the address free again.
fn readd_cycle(mode: &str, subnet: u8) {
    assert_root();
    let node = Node::new();
    let conf = weft_conf(
        &node,
        &format!("cyc{mode}"),
        mode,
        "dual",
        subnet,
        json!({}),
    );
    let pod = Ns::new('p');
    let peer = Ns::new('p');
    let peer_res = node.add(&conf, "cycle-peer", &peer);
    let peer_ip = result_ip(&peer_res, false);
    for round in 0..20 {
        let res = node.add(&conf, "cycle-pod", &pod);
        let ip = result_ip(&res, false);
        assert!(
            pod.ping(peer_ip),
            "round {round}: pod cannot reach {peer_ip}"
        );
        node.del(&conf, "cycle-pod", Some(&pod));
        assert!(
            pod.link("eth0").is_none(),
            "round {round}: eth0 survived DEL"
        );
        let lease = node.leases(&format!("cyc{mode}"));
        assert!(
            !lease.contains_key(&ip),
            "round {round}: lease {ip} survived DEL"
        );
        let host_routes = node.ns.routes("-4");
        assert!(
            !host_routes
                .iter()
                .any(|r| r["dst"].as_str() == Some(&ip.to_string())),
            "round {round}: host route to {ip} survived DEL: {host_routes:?}"
        );
    }
    node.del(&conf, "cycle-peer", Some(&peer));
    assert!(node.wv_links().is_empty(), "{:?}", node.wv_links());
}

#[test]
fn bridge_add_del_add_same_attachment() {
    readd_cycle("bridge", 41);
}

#[test]
fn ptp_add_del_add_same_attachment() {
    readd_cycle("ptp", 42);
}

/// A runtime reads the plugin's stdout to EOF: a detached child that kept the pipe open
/// would stretch every DEL to the kernel's full teardown. After the plugin has exited, the
/// pipe must already be at EOF, with no writer left anywhere.
#[test]
fn del_leaves_no_writer_on_the_runtimes_pipes() {
    assert_root();
    let node = Node::new();
    let conf = weft_conf(&node, "pipes", "bridge", "v4", 43, json!({}));
    let pod = Ns::new('p');
    node.add(&conf, "pipes-pod", &pod);
    let env = cni_env("DEL", "pipes-pod", Some(&pod.path), "eth0", &bin_dir());
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut cmd = node.command(&weft_bin(), &env_refs);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn weft DEL");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(conf.to_string().as_bytes())
            .expect("write config");
    }
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let status = child.wait().expect("wait");
    assert!(status.success(), "DEL failed");
    // The plugin is reaped. If any other process still held a write end, these reads would
    // block until it let go; set them non-blocking so such a writer shows up as WouldBlock.
    for fd in [
        std::os::fd::AsRawFd::as_raw_fd(&stdout),
        std::os::fd::AsRawFd::as_raw_fd(&stderr),
    ] {
        // SAFETY: fcntl on a pipe fd this test owns.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
    let mut buf = Vec::new();
    stdout
        .read_to_end(&mut buf)
        .expect("stdout must be at EOF once the plugin has exited");
    assert!(
        buf.is_empty(),
        "DEL printed {:?}",
        String::from_utf8_lossy(&buf)
    );
    let mut err = Vec::new();
    stderr
        .read_to_end(&mut err)
        .expect("stderr must be at EOF once the plugin has exited");
    assert!(pod.link("eth0").is_none());
}
