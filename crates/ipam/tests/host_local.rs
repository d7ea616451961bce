//! Interop with the reference host-local (/usr/lib/cni/host-local) on one dataDir: neither
//! hands out the other's leases, host-local CHECK/DEL work on weft's leases and weft reads
//! and releases host-local's. Skipped (passes) when the binary is absent.

use std::collections::HashSet;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Barrier};

use serde_json::{Value, json};
use weft_ipam::{AllocError, IpamConfig, Store};

const HOST_LOCAL: &str = "/usr/lib/cni/host-local";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}

fn conf(data_dir: &Path, ranges: Value) -> Value {
    json!({"cniVersion": "1.0.0", "name": "interop", "type": "bridge",
           "ipam": {"type": "host-local", "ranges": ranges,
                    "dataDir": data_dir.to_str().expect("utf8")}})
}

fn host_local(command: &str, id: &str, conf: &Value) -> Output {
    let mut child = Command::new(HOST_LOCAL)
        .env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", "/proc/self/ns/net")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn host-local");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(conf.to_string().as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("host-local output")
}

/// host-local ADD; returns the addresses (without prefix) of its result.
fn host_local_add(id: &str, conf: &Value) -> Result<Vec<IpAddr>, String> {
    let out = host_local("ADD", id, conf);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(stdout);
    }
    let result: Value = serde_json::from_str(&stdout).expect("host-local result JSON");
    Ok(result["ips"]
        .as_array()
        .expect("ips")
        .iter()
        .map(|i| {
            ip(i["address"]
                .as_str()
                .expect("address")
                .split('/')
                .next()
                .expect("ip"))
        })
        .collect())
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn weft_alloc(store: &Store, cfg: &IpamConfig, id: &str) -> Result<Vec<IpAddr>, AllocError> {
    let mut locked = store.lock().expect("lock");
    locked
        .allocate(id, "eth0", &cfg.ranges, &[])
        .map(|ls| ls.iter().map(|l| l.address.addr()).collect())
}

#[test]
fn weft_and_host_local_share_a_data_dir() {
    if !Path::new(HOST_LOCAL).exists() {
        eprintln!("{HOST_LOCAL} not installed; skipping");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = conf(
        dir.path(),
        json!([[{"subnet": "10.99.0.0/29"}], [{"subnet": "fd00:99::/120"}]]),
    );
    // The very same request drives both plugins.
    let cfg = IpamConfig::from_request(&conf, &[], Path::new("/nonexistent")).expect("config");
    let store = Store::open(&cfg.data_dir, &cfg.network).expect("open");
    let net = dir.path().join("interop");

    for id in ["w1", "w2", "w3"] {
        weft_alloc(&store, &cfg, id).expect("weft allocate");
    }
    store
        .lock()
        .expect("lock")
        .release("w1", "eth0")
        .expect("release");
    let weft_held: HashSet<IpAddr> = ["10.99.0.3", "10.99.0.4", "fd00:99::3", "fd00:99::4"]
        .map(ip)
        .into();

    // host-local continues round-robin after weft's last_reserved_ip, skips weft's leases
    // and wraps to the address weft released.
    let h1 = host_local_add("h1", &conf).expect("host-local h1");
    let h2 = host_local_add("h2", &conf).expect("host-local h2");
    let h3 = host_local_add("h3", &conf).expect("host-local h3");
    assert_eq!(h1, [ip("10.99.0.5"), ip("fd00:99::5")]);
    assert_eq!(h2, [ip("10.99.0.6"), ip("fd00:99::6")]);
    assert_eq!(h3, [ip("10.99.0.2"), ip("fd00:99::7")]);
    for a in h1.iter().chain(&h2).chain(&h3) {
        assert!(!weft_held.contains(a), "host-local handed out weft's {a}");
    }
    let full = host_local_add("h4", &conf).expect_err("v4 pool is full");
    assert!(full.contains("no IP addresses available"), "{full}");
    assert!(
        !net.join("fd00:99::8").exists(),
        "host-local rolled back its v6 lease"
    );

    // weft reads host-local's files (same format) and respects them.
    let owners = store.lock().expect("lock").leases().expect("leases");
    let h1_owner = owners
        .iter()
        .find(|(a, _)| *a == ip("10.99.0.5"))
        .and_then(|(_, o)| o.clone());
    assert_eq!(
        h1_owner.map(|o| (o.id, o.ifname)),
        Some(("h1".to_owned(), "eth0".to_owned()))
    );
    assert_eq!(
        std::fs::read(net.join("10.99.0.5")).expect("lease"),
        b"h1\r\neth0"
    );
    let mode = std::fs::metadata(net.join("10.99.0.5"))
        .expect("stat")
        .permissions()
        .mode();
    // host-local v1.1.1 writes 0644 (newer releases 0600, as weft does); both are root-only
    // writable, which is what sharing needs.
    assert!(
        matches!(mode & 0o777, 0o600 | 0o644),
        "host-local's lease mode {mode:o}"
    );
    assert_eq!(
        std::fs::read(net.join("last_reserved_ip.0")).expect("last"),
        b"10.99.0.2"
    );
    assert!(matches!(
        weft_alloc(&store, &cfg, "w4"),
        Err(AllocError::Exhausted { set: 0, .. })
    ));

    // host-local DEL frees .6; weft continues after host-local's last_reserved_ip (.2).
    assert_ok(&host_local("DEL", "h2", &conf), "host-local DEL h2");
    let w4 = weft_alloc(&store, &cfg, "w4").expect("weft after host-local DEL");
    assert_eq!(w4, [ip("10.99.0.6"), ip("fd00:99::8")]);

    // host-local CHECK and DEL on leases weft wrote.
    assert_ok(
        &host_local("CHECK", "w2", &conf),
        "host-local CHECK of weft's lease",
    );
    assert!(
        !host_local("CHECK", "w1", &conf).status.success(),
        "CHECK of a released lease must fail"
    );
    assert_ok(
        &host_local("DEL", "w2", &conf),
        "host-local DEL of weft's lease",
    );
    assert!(
        store
            .lock()
            .expect("lock")
            .find("w2", "eth0")
            .expect("find")
            .is_empty()
    );
    assert!(!net.join("10.99.0.3").exists() && !net.join("fd00:99::3").exists());

    // weft releases host-local's lease.
    let released = store
        .lock()
        .expect("lock")
        .release("h1", "eth0")
        .expect("release");
    assert_eq!(released, [ip("10.99.0.5"), ip("fd00:99::5")]);
    assert!(!host_local("CHECK", "h1", &conf).status.success());
}

#[test]
fn weft_and_host_local_allocating_concurrently_never_collide() {
    if !Path::new(HOST_LOCAL).exists() {
        eprintln!("{HOST_LOCAL} not installed; skipping");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = Arc::new(conf(dir.path(), json!([[{"subnet": "10.99.0.0/24"}]])));
    let cfg =
        Arc::new(IpamConfig::from_request(&conf, &[], Path::new("/nonexistent")).expect("config"));
    const EACH: usize = 16;
    let barrier = Arc::new(Barrier::new(2 * EACH));
    let mut handles = Vec::new();
    for i in 0..EACH {
        let (conf, b) = (Arc::clone(&conf), Arc::clone(&barrier));
        handles.push(std::thread::spawn(move || {
            b.wait();
            host_local_add(&format!("h{i}"), &conf).expect("host-local ADD")
        }));
        let (cfg, b) = (Arc::clone(&cfg), Arc::clone(&barrier));
        handles.push(std::thread::spawn(move || {
            let store = Store::open(&cfg.data_dir, &cfg.network).expect("open");
            b.wait();
            weft_alloc(&store, &cfg, &format!("w{i}")).expect("weft allocate")
        }));
    }
    let mut seen = HashSet::new();
    for h in handles {
        for a in h.join().expect("thread") {
            assert!(seen.insert(a), "{a} handed out twice");
        }
    }
    assert_eq!(seen.len(), 2 * EACH);
    let store = Store::open(&cfg.data_dir, &cfg.network).expect("open");
    let leases = store.lock().expect("lock").leases().expect("leases");
    assert_eq!(leases.len(), 2 * EACH);
    assert!(leases.iter().all(|(_, o)| o.is_some()));
}
