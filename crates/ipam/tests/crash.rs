//! Crash safety: child processes (this test binary re-executed) allocate and release in a
//! loop and are SIGKILLed at random instants. After each kill and at the end, every lease a
//! child believed it held must exist with its owner, no lease file may be torn, each owner
//! holds at most one address per set, and GC with no valid attachments empties the store.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use weft_ipam::{AllocError, Range, RangeSet, Store};

const DIR_ENV: &str = "WEFT_IPAM_CRASH_DIR";
const SLOT_ENV: &str = "WEFT_IPAM_CRASH_SLOT";
const CHILDREN: usize = 6;

fn sets() -> Vec<RangeSet> {
    ["10.99.0.0/25", "fd00:99::/120"]
        .iter()
        .map(|s| {
            RangeSet(vec![
                Range::new(s.parse().expect("CIDR"), None, None, None).expect("valid"),
            ])
        })
        .collect()
}

/// xorshift64: enough randomness for kill timing without a dependency.
struct Rng(u64);
impl Rng {
    fn seeded() -> Rng {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Rng(nanos | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The child: runs only when re-executed by `sigkill_at_random_instants_leaves_a_consistent_store`.
/// Logs `A <id> <ip>...` after a successful allocation and `R <id>` before a release, so the
/// parent knows what it believed it held.
#[test]
fn crash_child() {
    let (Ok(dir), Ok(slot)) = (std::env::var(DIR_ENV), std::env::var(SLOT_ENV)) else {
        return;
    };
    let dir = Path::new(&dir);
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("log-{slot}")))
        .expect("log");
    let sets = sets();
    let mut held: Vec<String> = Vec::new();
    let mut rng = Rng::seeded();
    for n in 0.. {
        let store = Store::open(&dir.join("data"), "crash").expect("open");
        let mut locked = store.lock().expect("lock");
        let release_one = held.len() >= 6 || (!held.is_empty() && rng.below(3) == 0);
        if release_one {
            let id = held.remove(0);
            // One write(2) per line, so a kill never leaves half a line.
            log.write_all(format!("R {id}\n").as_bytes()).expect("log");
            locked.release(&id, "eth0").expect("release");
            continue;
        }
        let id = format!("k{slot}-{n}");
        // Both ways weft allocates: the plugin's (no lease list read, fsync after the lock
        // is dropped, reported only once durable) and the standalone one.
        let deferred = n % 2 == 1;
        let allocated = if deferred {
            locked
                .allocate_deferred(&id, "eth0", &sets, &[], true)
                .inspect(|leases| {
                    drop(locked);
                    let ips: Vec<IpAddr> = leases.iter().map(|l| l.address.addr()).collect();
                    store.sync_leases(&ips).expect("sync");
                })
        } else {
            locked.allocate(&id, "eth0", &sets, &[])
        };
        match allocated {
            Ok(leases) => {
                let ips: Vec<String> = leases
                    .iter()
                    .map(|l| l.address.addr().to_string())
                    .collect();
                log.write_all(format!("A {id} {}\n", ips.join(" ")).as_bytes())
                    .expect("log");
                held.push(id);
            }
            Err(AllocError::Exhausted { .. }) => {}
            Err(e) => panic!("child allocate: {e}"),
        }
    }
}

fn spawn(dir: &Path, slot: String) -> Child {
    Command::new(std::env::current_exe().expect("current_exe"))
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(DIR_ENV, dir)
        .env(SLOT_ENV, slot)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child")
}

/// What a child's log says it holds: id → addresses (allocated and not being released).
fn believed(dir: &Path, slot: &str) -> HashMap<String, Vec<IpAddr>> {
    let text = fs::read_to_string(dir.join(format!("log-{slot}"))).unwrap_or_default();
    let mut held = HashMap::new();
    for line in text.lines() {
        let mut words = line.split(' ');
        match (words.next(), words.next()) {
            (Some("A"), Some(id)) => {
                held.insert(
                    id.to_owned(),
                    words.map(|w| w.parse().expect("logged IP")).collect(),
                );
            }
            (Some("R"), Some(id)) => {
                held.remove(id);
            }
            _ => panic!("torn log line {line:?}"),
        }
    }
    held
}

/// Check the store against the beliefs of `slots` (all under the lock), then release the
/// leases of those slots as the runtime's DEL would.
/// Returns (believed leases verified, stale temp files seen: kills that landed mid-write).
fn verify_and_reap(dir: &Path, slots: &[String]) -> (usize, usize) {
    let store = Store::open(&dir.join("data"), "crash").expect("open");
    let mut locked = store.lock().expect("lock");
    let temps = fs::read_dir(store.dir())
        .expect("read_dir")
        .filter(|e| {
            e.as_ref()
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .starts_with(".tmp-")
        })
        .count();
    let leases = locked.leases().expect("leases");
    let mut per_owner: HashMap<(String, bool), usize> = HashMap::new();
    let mut owner_of = HashMap::new();
    for (ip, owner) in &leases {
        let owner = owner
            .as_ref()
            .unwrap_or_else(|| panic!("torn lease file {ip}"));
        assert_eq!(owner.ifname, "eth0");
        *per_owner
            .entry((owner.id.clone(), ip.is_ipv4()))
            .or_default() += 1;
        owner_of.insert(*ip, owner.id.clone());
    }
    assert!(
        per_owner.values().all(|n| *n == 1),
        "an owner holds two addresses of one set"
    );
    let mut checked = 0;
    for slot in slots {
        for (id, ips) in believed(dir, slot) {
            assert_eq!(ips.len(), 2);
            for ip in ips {
                assert_eq!(owner_of.get(&ip), Some(&id), "{id} believed it held {ip}");
                checked += 1;
            }
        }
        let prefix = format!("k{slot}-");
        for (_, owner) in &leases {
            let owner = owner.as_ref().expect("checked above");
            if owner.id.starts_with(&prefix) {
                locked.release(&owner.id, &owner.ifname).expect("reap");
            }
        }
    }
    (checked, temps)
}

#[test]
fn sigkill_at_random_instants_leaves_a_consistent_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = Rng::seeded();
    let mut generation = 0;
    let mut next_slot = |slot: usize| {
        generation += 1;
        format!("{slot}g{generation}")
    };
    let mut children: Vec<(String, Child)> = (0..CHILDREN)
        .map(|i| {
            let slot = next_slot(i);
            (slot.clone(), spawn(dir.path(), slot))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(4);
    let (mut kills, mut checked, mut mid_write) = (0, 0, 0);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5 + rng.below(40)));
        let victim = rng.below(CHILDREN as u64) as usize;
        let (slot, child) = &mut children[victim];
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("child {slot} exited on its own: {status}");
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
        kills += 1;
        let (c, t) = verify_and_reap(dir.path(), std::slice::from_ref(slot));
        checked += c;
        mid_write += t;
        let slot = next_slot(victim);
        children[victim] = (slot.clone(), spawn(dir.path(), slot));
    }
    let mut slots = Vec::new();
    for (slot, mut child) in children {
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
        slots.push(slot);
    }
    // Verify everything the survivors believed before reaping them.
    let store = Store::open(&dir.path().join("data"), "crash").expect("open");
    {
        let locked = store.lock().expect("lock");
        eprintln!(
            "{kills} kills ({mid_write} mid-write), {checked} believed leases verified, {} leases at the end",
            locked.leases().expect("leases").len()
        );
    }
    verify_and_reap(dir.path(), &slots);
    assert!(kills >= 10, "too few kills ({kills}) to mean anything");

    let mut locked = store.lock().expect("lock");
    locked.gc(&[]).expect("gc");
    assert!(locked.leases().expect("leases").is_empty());
    for entry in fs::read_dir(store.dir()).expect("read_dir") {
        let name = entry
            .expect("entry")
            .file_name()
            .into_string()
            .expect("utf8");
        assert!(
            name == "lock" || name.starts_with("last_reserved_ip."),
            "left over: {name}"
        );
        if let Some(n) = name.strip_prefix("last_reserved_ip.") {
            let text = fs::read_to_string(store.dir().join(&name)).expect("read");
            assert!(
                text.parse::<IpAddr>().is_ok() && (n == "0" || n == "1"),
                "{name}: {text:?}"
            );
        }
    }
}
