//! Allocation, release and GC against a real directory (no kernel needed).

use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use weft_ipam::{AllocError, Range, RangeSet, Store};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}

fn set(subnet: &str) -> RangeSet {
    RangeSet(vec![
        Range::new(subnet.parse().expect("test CIDR"), None, None, None).expect("valid"),
    ])
}

fn alloc(
    store: &Store,
    id: &str,
    sets: &[RangeSet],
    req: &[IpAddr],
) -> Result<Vec<String>, AllocError> {
    let mut locked = store.lock().expect("lock");
    locked
        .allocate(id, "eth0", sets, req)
        .map(|ls| ls.iter().map(|l| l.address.to_string()).collect())
}

/// Names in the store directory other than `lock` and `last_reserved_ip.*`.
fn lease_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
        .filter(|n| n != "lock" && !n.starts_with("last_reserved_ip."))
        .collect();
    names.sort();
    names
}

#[test]
fn first_lease_is_dot_two_and_on_disk_format_matches_host_local() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), "t1").expect("open");
    assert_eq!(store.dir(), dir.path().join("t1"));
    let sets = [set("10.99.0.0/24")];
    let mut locked = store.lock().expect("lock");
    let leases = locked.allocate("c1", "eth0", &sets, &[]).expect("allocate");
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].address.to_string(), "10.99.0.2/24");
    assert_eq!(leases[0].gateway, Some(ip("10.99.0.1")));
    assert_eq!(leases[0].set_index, 0);
    drop(locked);

    let net = dir.path().join("t1");
    assert_eq!(
        fs::read(net.join("10.99.0.2")).expect("lease"),
        b"c1\r\neth0"
    );
    let mode = fs::metadata(net.join("10.99.0.2"))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        fs::read(net.join("last_reserved_ip.0")).expect("last"),
        b"10.99.0.2"
    );
    assert!(net.join("lock").is_file());
    assert_eq!(lease_names(&net), ["10.99.0.2"], "no temp file left behind");
    assert_eq!(
        alloc(&store, "c2", &sets, &[]).expect("second"),
        ["10.99.0.3/24"]
    );
}

#[test]
fn slash_29_gives_exactly_five_then_exhausted_and_round_robin_continues() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), "t1").expect("open");
    let sets = [set("10.99.1.0/29")];
    let got: Vec<String> = (0..5)
        .map(|i| {
            alloc(&store, &format!("c{i}"), &sets, &[])
                .expect("allocate")
                .remove(0)
        })
        .collect();
    assert_eq!(
        got,
        [
            "10.99.1.2/29",
            "10.99.1.3/29",
            "10.99.1.4/29",
            "10.99.1.5/29",
            "10.99.1.6/29"
        ]
    );
    let locked = store.lock().expect("lock");
    assert_eq!(locked.free_count(&sets[0]).expect("free"), 0);
    drop(locked);
    match alloc(&store, "c5", &sets, &[]) {
        Err(AllocError::Exhausted { set: 0, ranges }) => assert_eq!(ranges, "10.99.1.1-10.99.1.6"),
        other => panic!("expected Exhausted, got {other:?}"),
    }
    assert_eq!(
        lease_names(&dir.path().join("t1")).len(),
        5,
        "failed allocation leaves nothing"
    );

    // Round-robin: after freeing .3, the next lease wraps around from .6 to .3.
    let mut locked = store.lock().expect("lock");
    assert_eq!(
        locked.release("c1", "eth0").expect("release"),
        [ip("10.99.1.3")]
    );
    assert_eq!(locked.free_count(&sets[0]).expect("free"), 1);
    drop(locked);
    assert_eq!(
        alloc(&store, "c6", &sets, &[]).expect("allocate"),
        ["10.99.1.3/29"]
    );
}

#[test]
fn requested_ips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), "t1").expect("open");
    let sets = [set("10.99.0.0/24")];
    assert_eq!(
        alloc(&store, "c1", &sets, &[ip("10.99.0.50")]).expect("ok"),
        ["10.99.0.50/24"]
    );
    assert!(matches!(
        alloc(&store, "c2", &sets, &[ip("10.99.0.50")]),
        Err(AllocError::RequestedInUse(a)) if a == ip("10.99.0.50")
    ));
    assert!(matches!(
        alloc(&store, "c2", &sets, &[ip("10.99.0.1")]),
        Err(AllocError::RequestedGateway(a)) if a == ip("10.99.0.1")
    ));
    for outside in ["10.98.0.5", "10.99.0.255", "10.99.0.0", "fd00::5"] {
        assert!(matches!(
            alloc(&store, "c2", &sets, &[ip(outside)]),
            Err(AllocError::RequestedNotInRange(a)) if a == ip(outside)
        ));
    }
    // Two requested addresses for one set cannot both be served.
    assert!(matches!(
        alloc(&store, "c2", &sets, &[ip("10.99.0.60"), ip("10.99.0.61")]),
        Err(AllocError::RequestedNotInRange(a)) if a == ip("10.99.0.61")
    ));
    let locked = store.lock().expect("lock");
    let leases = locked.leases().expect("leases");
    assert_eq!(
        leases.len(),
        1,
        "failed requests leave no lease: {leases:?}"
    );
    // The requested lease moved the round-robin cursor, as in host-local.
    drop(locked);
    assert_eq!(
        alloc(&store, "c3", &sets, &[]).expect("ok"),
        ["10.99.0.51/24"]
    );
}

#[test]
fn dual_stack_and_all_or_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), "t1").expect("open");
    let sets = [set("10.99.0.0/30"), set("fd00:99::/64")];
    let got = alloc(&store, "c1", &sets, &[]).expect("dual stack");
    assert_eq!(got, ["10.99.0.2/30", "fd00:99::2/64"]);
    let net = dir.path().join("t1");
    assert_eq!(
        fs::read(net.join("fd00:99::2")).expect("v6 lease"),
        b"c1\r\neth0"
    );
    assert_eq!(
        fs::read(net.join("last_reserved_ip.1")).expect("last"),
        b"fd00:99::2"
    );
    let locked = store.lock().expect("lock");
    assert_eq!(
        locked.find("c1", "eth0").expect("find"),
        [ip("10.99.0.2"), ip("fd00:99::2")]
    );
    drop(locked);

    // The v4 set (a /30: one address) is full, so c2 gets nothing — not even the v6 one.
    assert!(matches!(
        alloc(&store, "c2", &sets, &[]),
        Err(AllocError::Exhausted { set: 0, .. })
    ));
    let v4_first = [sets[1].clone(), sets[0].clone()];
    assert!(matches!(
        alloc(&store, "c2", &v4_first, &[]),
        Err(AllocError::Exhausted { set: 1, .. })
    ));
    let locked = store.lock().expect("lock");
    assert!(locked.find("c2", "eth0").expect("find").is_empty());
    assert_eq!(locked.leases().expect("leases").len(), 2);
    drop(locked);
    assert_eq!(lease_names(&net), ["10.99.0.2", "fd00:99::2"]);

    // A requested v6 address lands in the v6 set; the v4 set still round-robins.
    let mut locked = store.lock().expect("lock");
    locked.release("c1", "eth0").expect("release");
    let got = locked
        .allocate("c3", "eth0", &sets, &[ip("fd00:99::abcd")])
        .expect("allocate");
    assert_eq!(got[0].address.to_string(), "10.99.0.2/30");
    assert_eq!(got[1].address.to_string(), "fd00:99::abcd/64");
    assert_eq!(got[1].set_index, 1);
}

#[test]
fn duplicate_pair_is_rejected_but_other_ifname_is_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), "t1").expect("open");
    let sets = [set("10.99.0.0/24")];
    let mut locked = store.lock().expect("lock");
    locked.allocate("c1", "eth0", &sets, &[]).expect("first");
    match locked.allocate("c1", "eth0", &sets, &[]) {
        Err(AllocError::Duplicate { id, ifname }) => {
            assert_eq!((id.as_str(), ifname.as_str()), ("c1", "eth0"))
        }
        other => panic!("expected Duplicate, got {other:?}"),
    }
    assert!(matches!(
        locked.allocate("c1", "eth0", &sets, &[ip("10.99.0.9")]),
        Err(AllocError::Duplicate { .. })
    ));
    let second = locked
        .allocate("c1", "net1", &sets, &[])
        .expect("other ifname");
    assert_eq!(second[0].address.to_string(), "10.99.0.3/24");
    assert_eq!(locked.leases().expect("leases").len(), 2);
}

#[test]
fn release_is_idempotent_and_matches_legacy_leases() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), "t1").expect("open");
    let sets = [set("10.99.0.0/24")];
    let mut locked = store.lock().expect("lock");
    locked.allocate("c1", "eth0", &sets, &[]).expect("c1");
    locked.allocate("c1", "eth1", &sets, &[]).expect("c1 eth1");
    // A legacy (pre-0.3 host-local) lease holds only the container id.
    fs::write(dir.path().join("t1/10.99.0.77"), "c9").expect("legacy");
    assert_eq!(
        locked.release("c1", "eth0").expect("release"),
        [ip("10.99.0.2")]
    );
    assert_eq!(
        locked.release("c1", "eth0").expect("again"),
        Vec::<IpAddr>::new()
    );
    assert_eq!(
        locked.release("never", "eth0").expect("unknown"),
        Vec::<IpAddr>::new()
    );
    assert_eq!(locked.find("c1", "eth1").expect("find"), [ip("10.99.0.3")]);
    assert_eq!(
        locked.find("c9", "eth0").expect("legacy find"),
        [ip("10.99.0.77")]
    );
    assert_eq!(
        locked.release("c9", "eth0").expect("legacy"),
        [ip("10.99.0.77")]
    );
    let owners: Vec<_> = locked
        .leases()
        .expect("leases")
        .into_iter()
        .map(|(a, o)| (a, o.expect("owner")))
        .collect();
    assert_eq!(owners.len(), 1);
    assert_eq!(
        (owners[0].1.id.as_str(), owners[0].1.ifname.as_str()),
        ("c1", "eth1")
    );
}

#[test]
fn gc_keeps_valid_owners_and_reclaims_torn_and_temp_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), "t1").expect("open");
    let other = Store::open(dir.path(), "t2").expect("open other network");
    let sets = [set("10.99.0.0/24")];
    for id in ["c1", "c2", "c3"] {
        alloc(&store, id, &sets, &[]).expect("allocate");
    }
    alloc(&other, "c2", &sets, &[]).expect("other network");
    let net = dir.path().join("t1");
    // Torn lease (host-local killed between O_EXCL create and write) and a stale temp file
    // (weft killed before cleaning up).
    fs::write(net.join("10.99.0.40"), "").expect("torn");
    fs::write(net.join(".tmp-999-0"), "c7\r\neth0").expect("temp");

    let mut locked = store.lock().expect("lock");
    let leases = locked.leases().expect("leases");
    assert_eq!(
        leases
            .iter()
            .find(|(a, _)| *a == ip("10.99.0.40"))
            .map(|(_, o)| o.clone()),
        Some(None)
    );
    // A torn file still counts as taken.
    assert_eq!(locked.free_count(&sets[0]).expect("free"), 253 - 4);
    let valid = [
        ("c1".to_owned(), "eth0".to_owned()),
        ("c3".to_owned(), "eth9".to_owned()),
    ];
    let mut released = locked.gc(&valid).expect("gc");
    released.sort();
    assert_eq!(
        released,
        [ip("10.99.0.3"), ip("10.99.0.4"), ip("10.99.0.40")]
    );
    assert_eq!(lease_names(&net), ["10.99.0.2"]);
    assert_eq!(locked.gc(&[]).expect("gc all"), [ip("10.99.0.2")]);
    assert!(lease_names(&net).is_empty());
    drop(locked);
    let other_locked = other.lock().expect("lock");
    assert_eq!(
        other_locked.leases().expect("leases").len(),
        1,
        "other network untouched"
    );
}

#[test]
fn stale_temp_files_are_removed_by_the_next_allocation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), "t1").expect("open");
    let net = dir.path().join("t1");
    fs::write(net.join(".tmp-1-1"), "x\r\neth0").expect("temp");
    alloc(&store, "c1", &[set("10.99.0.0/24")], &[]).expect("allocate");
    assert_eq!(lease_names(&net), ["10.99.0.2"]);
}

#[test]
fn last_reserved_outside_the_set_or_garbage_restarts_at_range_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), "t1").expect("open");
    let net = dir.path().join("t1");
    fs::write(net.join("last_reserved_ip.0"), "192.168.0.1").expect("write");
    assert_eq!(
        alloc(&store, "c1", &[set("10.99.0.0/24")], &[]).expect("ok"),
        ["10.99.0.2/24"]
    );
    fs::write(net.join("last_reserved_ip.0"), "garbage").expect("write");
    assert_eq!(
        alloc(&store, "c2", &[set("10.99.0.0/24")], &[]).expect("ok"),
        ["10.99.0.3/24"]
    );
    fs::write(net.join("last_reserved_ip.0"), "10.99.0.100").expect("write");
    assert_eq!(
        alloc(&store, "c3", &[set("10.99.0.0/24")], &[]).expect("ok"),
        ["10.99.0.101/24"]
    );
}

#[test]
fn io_errors_are_reported_not_swallowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), "t1").expect("open");
    // A lease name that cannot be read (ELOOP from a self-referencing symlink) must fail
    // the scan: treating it as free or skipping it could double-allocate.
    std::os::unix::fs::symlink("10.99.0.9", dir.path().join("t1/10.99.0.9")).expect("symlink");
    let locked = store.lock().expect("lock");
    let err = locked.leases().expect_err("ELOOP must surface");
    assert!(err.to_string().contains("10.99.0.9"), "{err}");
}

#[test]
fn huge_ipv6_set_allocates_without_enumerating() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), "t1").expect("open");
    let sets = [set("fd00::/8")];
    let locked = store.lock().expect("lock");
    assert_eq!(
        locked.free_count(&sets[0]).expect("free"),
        (1u128 << 120) - 2
    );
    drop(locked);
    assert_eq!(alloc(&store, "c1", &sets, &[]).expect("ok"), ["fd00::2/8"]);
}

/// The plugin's allocation: no lease list, `link(2)` decides.
fn alloc_new(store: &Store, id: &str, sets: &[RangeSet]) -> Result<Vec<String>, AllocError> {
    let mut locked = store.lock().expect("lock");
    let leases = locked.allocate_deferred(id, "eth0", sets, &[], true)?;
    drop(locked);
    let ips: Vec<IpAddr> = leases.iter().map(|l| l.address.addr()).collect();
    store.sync_leases(&ips).expect("sync");
    Ok(leases.iter().map(|l| l.address.to_string()).collect())
}

#[test]
fn unlisted_allocation_walks_round_robin_to_exhaustion_and_leaves_no_temp_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), "t1").expect("open");
    let net = dir.path().join("t1");
    let sets = [set("10.99.1.0/29"), set("fd99::/125")];
    let got: Vec<Vec<String>> = (0..5)
        .map(|i| alloc_new(&store, &format!("c{i}"), &sets).expect("allocate"))
        .collect();
    assert_eq!(got[0], ["10.99.1.2/29", "fd99::2/125"]);
    assert_eq!(got[4], ["10.99.1.6/29", "fd99::6/125"]);
    // The v6 set has two more addresses; the v4 set is full: all or nothing.
    match alloc_new(&store, "c5", &sets) {
        Err(AllocError::Exhausted { set: 0, .. }) => {}
        other => panic!("expected Exhausted, got {other:?}"),
    }
    let names = lease_names(&net);
    assert_eq!(names.len(), 10, "5 pairs and nothing else: {names:?}");
    assert!(
        names.iter().all(|n| n.parse::<IpAddr>().is_ok()),
        "{names:?}"
    );
    assert_eq!(
        fs::read(net.join("10.99.1.4")).expect("lease"),
        b"c2\r\neth0"
    );
    assert_eq!(fs::read(net.join("fd99::4")).expect("lease"), b"c2\r\neth0");
    let mode = fs::metadata(net.join("10.99.1.4"))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // Round-robin after a release: from .6 the walk wraps and finds .3 behind four taken
    // addresses, with or without reading the list.
    let mut locked = store.lock().expect("lock");
    locked.release("c1", "eth0").expect("release");
    drop(locked);
    assert_eq!(
        alloc_new(&store, "c6", &sets).expect("allocate"),
        ["10.99.1.3/29", "fd99::7/125"]
    );
}

#[test]
fn unlisted_allocation_finds_the_first_free_address_behind_a_long_run_of_taken_ones() {
    // 60 leases right after the hint (the walk reads the list after a few failed links)
    // and the lease lands on the first free address behind them.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), "t1").expect("open");
    let net = dir.path().join("t1");
    for host in 11..71 {
        fs::write(
            net.join(format!("10.99.2.{host}")),
            format!("x{host}\r\neth0"),
        )
        .expect("lease");
    }
    fs::write(net.join("last_reserved_ip.0"), "10.99.2.10").expect("hint");
    assert_eq!(
        alloc_new(&store, "c1", &[set("10.99.2.0/24")]).expect("allocate"),
        ["10.99.2.71/24"]
    );
    assert_eq!(
        fs::read(net.join("10.99.2.71")).expect("lease"),
        b"c1\r\neth0"
    );
    assert_eq!(lease_names(&net).len(), 61);
}

#[test]
fn last_reserved_is_rewritten_in_place_to_exactly_the_new_address() {
    // host-local reads the whole file as one address: a shorter address must not keep the
    // longer one's tail.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), "t1").expect("open");
    let net = dir.path().join("t1");
    let sets = [set("10.99.3.0/24")];
    fs::write(net.join("last_reserved_ip.0"), "10.99.3.99").expect("hint");
    assert_eq!(
        alloc_new(&store, "c1", &sets).expect("allocate"),
        ["10.99.3.100/24"]
    );
    assert_eq!(
        fs::read_to_string(net.join("last_reserved_ip.0")).expect("read"),
        "10.99.3.100"
    );
    assert_eq!(
        alloc(&store, "c2", &sets, &[ip("10.99.3.7")]).expect("requested"),
        ["10.99.3.7/24"]
    );
    assert_eq!(
        fs::read_to_string(net.join("last_reserved_ip.0")).expect("read"),
        "10.99.3.7"
    );
    assert_eq!(
        alloc_new(&store, "c3", &sets).expect("allocate"),
        ["10.99.3.8/24"]
    );
}

#[test]
fn a_failed_allocation_in_a_fresh_network_writes_no_hint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), "t1").expect("open");
    let net = dir.path().join("t1");
    // A /30 has one address for pods (.2); someone else's lease holds it.
    fs::write(net.join("10.99.4.2"), "other\r\neth0").expect("lease");
    let sets = [set("10.99.4.0/30")];
    assert!(matches!(
        alloc_new(&store, "c1", &sets),
        Err(AllocError::Exhausted { .. })
    ));
    assert!(matches!(
        alloc(&store, "c1", &sets, &[ip("10.99.4.2")]),
        Err(AllocError::RequestedInUse(_))
    ));
    let mut names: Vec<String> = fs::read_dir(&net)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
        .collect();
    names.sort();
    assert_eq!(names, ["10.99.4.2", "lock"]);
}
