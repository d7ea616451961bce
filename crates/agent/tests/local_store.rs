//! weftd on a single node with the local store (no etcd): it leases blocks, writes the
//! conflist, grows by one block when asked over its socket, and a restart keeps its blocks
//! and its VXLAN device. A bad cluster config stops it before anything is written.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{TestNs, Weftd, weftd_command};
use weft_proto::{Family, MAX_REQUEST_LINE, Request, ask};
use weft_testkit::TempDir;

fn start(dir: &Path, config: &str) -> Weftd {
    std::fs::write(dir.join("cluster.json"), config).unwrap();
    let child = weftd_command(dir, "solo")
        .arg("--store-path")
        .arg(dir.join("store.json"))
        .spawn()
        .expect("start weftd");
    Weftd(child)
}

const CONFIG: &str = r#"{"cidrV4":"10.97.0.0/24","cidrV6":"fd00:97::/64","blockSizeV4":28,
    "blockSizeV6":124,"backend":"vxlan"}"#;

/// The conflist's ranges: one list of subnets per family.
fn ranges(dir: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(dir.join("net.d/10-weft.conflist")).unwrap();
    let conf: Value = serde_json::from_str(&text).unwrap();
    conf["plugins"][0]["ipam"]["ranges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|set| {
            set.as_array()
                .unwrap()
                .iter()
                .map(|r| r["subnet"].as_str().unwrap().to_owned())
                .collect()
        })
        .collect()
}

/// Waits until weftd answers on its socket (it binds the socket after publishing).
fn wait_ready(agent: &mut Weftd, dir: &Path) {
    let sock = dir.join("run/weftd.sock");
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = agent.0.try_wait() {
            panic!("weftd exited ({status}): {}", agent.stderr());
        }
        if ask(&sock, &Request::Status, Duration::from_secs(1)).is_ok() {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "weftd not ready");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Writes `bytes` to weftd's socket as a client would and returns its reply line.
fn exchange(sock: &Path, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // weftd stops reading an over-long line and closes: the write may fail, the reply is
    // there all the same.
    let _ = s.write_all(bytes);
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    line
}

fn vxlan_index(ns: &TestNs) -> String {
    let out = Command::new("ip")
        .args(["-n", &ns.0.name, "-j", "link", "show", "weft.vx"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0]["ifindex"].to_string()
}

#[test]
fn single_node_leases_grows_and_keeps_its_blocks_across_a_restart() {
    let ns = TestNs::new();
    let dir = TempDir::new("agent-local");
    ns.open()
        .run(|| {
            let mut agent = start(dir.path(), CONFIG);
            wait_ready(&mut agent, dir.path());
            let first = ranges(dir.path());
            assert_eq!(first, [vec!["10.97.0.0/28"], vec!["fd00:97::/124"]]);

            // The socket and its directory are root's alone.
            let sock = dir.path().join("run/weftd.sock");
            let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
            assert_eq!(mode(&dir.path().join("run")), 0o700);
            assert_eq!(mode(&sock), 0o600);
            // A request line past the limit is refused; weftd serves the next client.
            let long = format!("{{\"op\":\"status\"{}}}\n", " ".repeat(MAX_REQUEST_LINE));
            let reply = exchange(&sock, long.as_bytes());
            assert!(
                reply.contains(r#""ok":false"#) && reply.contains("longer than"),
                "{reply}"
            );
            ask(&sock, &Request::Status, Duration::from_secs(5)).expect("weftd still serves");
            let ifindex = vxlan_index(&ns);

            // The plugin's request when a node's blocks are full.
            let reply = ask(
                &dir.path().join("run/weftd.sock"),
                &Request::Grow { family: Family::V4 },
                Duration::from_secs(5),
            )
            .unwrap();
            assert_eq!(reply.block.unwrap().to_string(), "10.97.0.16/28");
            assert_eq!(ranges(dir.path())[0], ["10.97.0.0/28", "10.97.0.16/28"]);
            // A family the wire type has no name for is refused as malformed.
            let reply = exchange(
                &dir.path().join("run/weftd.sock"),
                b"{\"op\":\"grow\",\"family\":\"v5\"}\n",
            );
            assert!(
                reply.contains(r#""ok":false"#) && reply.contains("malformed request"),
                "{reply}"
            );

            // SIGTERM, then a new weftd: same blocks, same device.
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(agent.0.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            )
            .unwrap();
            assert!(agent.0.wait().unwrap().success());
            let mut again = start(dir.path(), CONFIG);
            wait_ready(&mut again, dir.path());
            assert_eq!(
                ranges(dir.path()),
                [vec!["10.97.0.0/28", "10.97.0.16/28"], vec!["fd00:97::/124"]]
            );
            assert_eq!(vxlan_index(&ns), ifindex, "the VXLAN device was recreated");
        })
        .unwrap();
}

#[test]
fn bad_cluster_config_stops_weftd_before_anything_is_written() {
    let ns = TestNs::new();
    for (config, field) in [
        (r#"{"cidrV4":"10.97.0.0/24""#, "cluster-config"),
        (
            r#"{"cidrV4":"10.97.0.0/24","cidrV6":"10.98.0.0/24"}"#,
            "cidrV6",
        ),
        (
            r#"{"cidrV4":"10.97.0.0/24","blockSizeV4":20}"#,
            "blockSizeV4",
        ),
        (r#"{"cidrV4":"10.97.0.1/24"}"#, "host bits"),
        (r#"{"cidrV4":"10.97.0.0/24","backend":"geneve"}"#, "backend"),
        (r#"{"cidrV4":"10.97.0.0/24","mtu":1400}"#, "mtu"),
    ] {
        let dir = TempDir::new("agent-local");
        ns.open()
            .run(|| {
                let mut agent = start(dir.path(), config);
                let status = agent.0.wait().unwrap();
                let err = agent.stderr();
                assert_eq!(status.code(), Some(2), "{config}: {err}");
                assert!(err.contains(field), "{config}: expected {field:?} in {err}");
                for made in ["store.json", "net.d", "run", "state"] {
                    assert!(
                        !dir.path().join(made).exists(),
                        "{config}: {made} was written"
                    );
                }
            })
            .unwrap();
    }
    // Nothing in the kernel either.
    let links = Command::new("ip")
        .args(["-n", &ns.0.name, "link", "show", "weft.vx"])
        .output()
        .unwrap();
    assert!(!links.status.success());
}
