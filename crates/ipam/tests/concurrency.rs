//! Many allocators at once: threads with their own Store (flock excludes them) and threads
//! sharing one Store (the in-process mutex excludes them).

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::thread;

use weft_ipam::{Range, RangeSet, Store};

fn sets() -> Vec<RangeSet> {
    ["10.99.0.0/24", "fd00:99::/120"]
        .iter()
        .map(|s| {
            RangeSet(vec![
                Range::new(s.parse().expect("CIDR"), None, None, None).expect("valid"),
            ])
        })
        .collect()
}

fn run(threads: usize, shared: bool) {
    run_with(threads, shared, false)
}

/// `deferred`: the plugin's allocation (no lease list read, the fsync after the lock).
fn run_with(threads: usize, shared: bool, deferred: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let shared_store = Arc::new(Store::open(dir.path(), "t1").expect("open"));
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let path = dir.path().to_path_buf();
            let barrier = Arc::clone(&barrier);
            let shared_store = Arc::clone(&shared_store);
            thread::spawn(move || {
                let own;
                let store = if shared {
                    &*shared_store
                } else {
                    own = Store::open(&path, "t1").expect("open");
                    &own
                };
                barrier.wait();
                let mut locked = store.lock().expect("lock");
                let id = format!("c{i}");
                if !deferred {
                    return locked
                        .allocate(&id, "eth0", &sets(), &[])
                        .expect("allocate");
                }
                let leases = locked
                    .allocate_deferred(&id, "eth0", &sets(), &[], true)
                    .expect("allocate");
                drop(locked);
                let ips: Vec<_> = leases.iter().map(|l| l.address.addr()).collect();
                store.sync_leases(&ips).expect("sync");
                leases
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for h in handles {
        for lease in h.join().expect("thread") {
            assert!(
                seen.insert(lease.address.addr()),
                "address {} handed out twice",
                lease.address
            );
        }
    }
    assert_eq!(seen.len(), threads * 2);
    let store = Store::open(dir.path(), "t1").expect("open");
    let locked = store.lock().expect("lock");
    let leases = locked.leases().expect("leases");
    assert_eq!(leases.len(), threads * 2);
    assert!(leases.iter().all(|(_, o)| o.is_some()));
}

#[test]
fn sixty_four_threads_with_own_stores_get_distinct_addresses() {
    run(64, false);
}

#[test]
fn threads_sharing_one_store_get_distinct_addresses() {
    run(32, true);
}

#[test]
fn sixty_four_threads_allocating_as_the_plugin_does_get_distinct_addresses() {
    run_with(64, false, true);
}
