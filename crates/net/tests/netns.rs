//! NetNs: validation of what may be opened, identity, and thread switching.

mod common;

use std::path::Path;

use common::TestNs;
use weft_net::{Error, Handle, NetNs};
use weft_testkit::require_root;

#[test]
fn open_rejects_regular_file_and_missing_path() {
    require_root!();
    let file = std::env::temp_dir().join(format!("wtn{}-not-a-netns", std::process::id()));
    std::fs::write(&file, b"x").unwrap();
    let err = NetNs::open(&file).unwrap_err();
    std::fs::remove_file(&file).unwrap();
    assert!(matches!(err, Error::NotNetns { .. }), "{err:?}");

    let err = NetNs::open(Path::new("/var/run/netns/wtn-definitely-missing")).unwrap_err();
    assert!(err.is_not_found(), "{err:?}");

    // A namespace file, but of another type: setns(CLONE_NEWNET) would fail later.
    let err = NetNs::open(Path::new("/proc/self/ns/mnt")).unwrap_err();
    assert!(matches!(err, Error::NotNetns { .. }), "{err:?}");

    // procfs, but not a namespace file.
    let err = NetNs::open(Path::new("/proc/self/status")).unwrap_err();
    assert!(matches!(err, Error::NotNetns { .. }), "{err:?}");
}

#[test]
fn open_accepts_bind_mount_and_proc_path() {
    require_root!();
    let t = TestNs::new();
    let ns = t.open();
    assert_eq!(ns.path(), t.path());
    let via_proc = NetNs::open(Path::new("/proc/self/ns/net")).unwrap();
    let current = NetNs::current().unwrap();
    assert!(via_proc.same_as(&current).unwrap());
    assert!(!ns.same_as(&current).unwrap());
    assert!(ns.same_as(&t.open()).unwrap());
}

#[test]
fn run_enters_and_returns() {
    require_root!();
    let t = TestNs::new();
    let ns = t.open();
    let before = NetNs::current().unwrap();
    let inside = ns.run(|| NetNs::current().unwrap()).unwrap();
    assert!(inside.same_as(&ns).unwrap());
    assert!(NetNs::current().unwrap().same_as(&before).unwrap());
}

#[test]
fn run_returns_even_when_closure_panics() {
    require_root!();
    let t = TestNs::new();
    let ns = t.open();
    let before = NetNs::current().unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = ns.run(|| panic!("boom inside netns"));
    }));
    assert!(caught.is_err());
    assert!(NetNs::current().unwrap().same_as(&before).unwrap());
}

#[test]
fn handle_stays_bound_to_its_namespace() {
    require_root!();
    let t = TestNs::new();
    t.ip(&["link", "add", "only-here", "type", "bridge"]);
    let mut h = Handle::new_in(&t.open()).unwrap();
    // The test thread is back in the host namespace, the handle is not.
    let names: Vec<String> = h.links().unwrap().into_iter().map(|l| l.name).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"lo".to_owned()) && names.contains(&"only-here".to_owned()));
}
