//! Peers leave, the kernel drifts, the agent restarts: the dataplane changes exactly what
//! it must and traffic that should flow keeps flowing.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Lab, assert_pods_talk};
use weft_backend::{Dataplane, Drift, Error, Kind};
use weft_testkit::require_root;

fn program_all(lab: &Lab, kind: Kind) -> Vec<Dataplane> {
    let mut dps: Vec<_> = lab.nodes.iter().map(|n| n.open(kind)).collect();
    for (i, dp) in dps.iter_mut().enumerate() {
        for (j, other) in lab.nodes.iter().enumerate() {
            if i != j {
                dp.upsert_peer(&other.peer()).unwrap();
            }
        }
    }
    dps
}

fn sorted(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    lines
}

#[test]
fn remove_peer_removes_exactly_that_peer() {
    require_root!();
    let lab = Lab::new(&[1500], &[0, 0, 0], false);
    let mut dps = program_all(&lab, Kind::Vxlan);
    assert_pods_talk(&lab, 0, 2);
    let n0 = &lab.nodes[0].ns;
    let (routes, neigh, fdb) = (n0.weft_routes(), n0.neigh_vx(), n0.fdb_vx());

    dps[0].remove_peer(&lab.nodes[2].name()).unwrap();
    // What remains is exactly what was there minus node 2's lines.
    let keep = |before: &str, gone: &[&str]| -> String {
        before
            .lines()
            .filter(|l| !gone.iter().any(|g| l.contains(g)))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let node2 = ["10.244.3.0", "fd44:0:0:3::", "02:57:00:00:00:03"];
    assert_eq!(n0.weft_routes(), keep(&routes, &node2));
    assert_eq!(n0.neigh_vx(), keep(&neigh, &node2));
    assert_eq!(n0.fdb_vx(), keep(&fdb, &node2));
    assert_eq!(n0.weft_routes().lines().count(), 2);
    assert!(n0.fdb_vx().contains("02:57:00:00:00:02 dst 192.168.1.12"));
    assert_eq!(dps[0].peers(), vec![lab.nodes[1].name()]);

    for dst in [lab.nodes[2].pod_v4, lab.nodes[2].pod_v6] {
        let (ok, out) = lab.nodes[0].pod.ping_once(dst, &[]);
        assert!(!ok, "removed peer still reachable at {dst}:\n{out}");
    }
    assert_pods_talk(&lab, 0, 1);
    assert_pods_talk(&lab, 1, 2);
    // Removing again, or someone never known, is fine.
    dps[0].remove_peer(&lab.nodes[2].name()).unwrap();
    dps[0].remove_peer("nobody").unwrap();
}

/// One peer the kernel refuses (its VTEP address is also a local address here, as a block
/// that moved between nodes can leave behind) does not stop the resync: the peers after it
/// are repaired, its own existing entries stay, and the error names it.
#[test]
fn resync_carries_on_past_a_peer_the_kernel_refuses() {
    require_root!();
    let lab = Lab::new(&[1500], &[0, 0, 0], false);
    let mut dps = program_all(&lab, Kind::Vxlan);
    let n0 = &lab.nodes[0].ns;
    let (routes, neigh, fdb) = (n0.weft_routes(), n0.neigh_vx(), n0.fdb_vx());
    n0.ip(&["route", "del", "fd44:0:0:3::/64"]);
    n0.ip(&["addr", "add", "fd44:0:0:3::/128", "dev", "lo"]);
    n0.ip(&["route", "del", "10.244.2.0/24"]);

    // The refused peer first, so the others are only reached if resync carries on.
    let peers = [lab.nodes[2].peer(), lab.nodes[1].peer()];
    match dps[0].resync(&peers) {
        Err(Error::PeersRefused { refused, drift }) => {
            assert_eq!(refused.len(), 1, "{refused:?}");
            assert!(refused[0].contains(&lab.nodes[2].name()), "{refused:?}");
            assert!(refused[0].contains("fd44:0:0:3::/64"), "{refused:?}");
            assert_eq!(
                drift,
                Drift {
                    added: 1,
                    removed: 0
                }
            );
        }
        other => panic!("expected PeersRefused, got {other:?}"),
    }
    let without: String = routes
        .lines()
        .filter(|l| !l.starts_with("fd44:0:0:3::/64"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(n0.weft_routes(), without);
    assert_eq!(
        n0.neigh_vx(),
        neigh,
        "the refused peer's neighbour entries stay"
    );
    assert_eq!(n0.fdb_vx(), fdb);
    assert_pods_talk(&lab, 0, 1);

    // The conflict gone, the next resync finishes the job.
    n0.ip(&["addr", "del", "fd44:0:0:3::/128", "dev", "lo"]);
    assert_eq!(
        dps[0].resync(&peers).unwrap(),
        Drift {
            added: 1,
            removed: 0
        }
    );
    assert_eq!(n0.weft_routes(), routes);
    assert_pods_talk(&lab, 0, 2);
}

#[test]
fn resync_repairs_drift() {
    require_root!();
    let lab = Lab::new(&[1500], &[0, 0, 0], false);
    let mut dps = program_all(&lab, Kind::Vxlan);
    let peers = [lab.nodes[1].peer(), lab.nodes[2].peer()];
    let n0 = &lab.nodes[0].ns;
    let (routes, neigh, fdb) = (n0.weft_routes(), n0.neigh_vx(), n0.fdb_vx());

    // Missing: node 1's IPv4 route and its FDB entry. Wrong: node 2's neighbour MAC.
    n0.ip(&["route", "del", "10.244.2.0/24"]);
    weft_testkit::run(
        "bridge",
        &[
            "-n",
            &n0.name,
            "fdb",
            "del",
            "02:57:00:00:00:02",
            "dev",
            "weft.vx",
            "dst",
            "192.168.1.12",
            "self",
        ],
    );
    n0.ip(&[
        "neigh",
        "replace",
        "10.244.3.0",
        "lladdr",
        "02:57:00:00:00:77",
        "dev",
        "weft.vx",
        "nud",
        "permanent",
    ]);
    // Stray: a weft route, neighbour and FDB entry for nobody.
    n0.ip(&[
        "route",
        "add",
        "10.99.0.0/24",
        "via",
        "10.99.0.0",
        "dev",
        "weft.vx",
        "onlink",
        "proto",
        "87",
    ]);
    n0.ip(&[
        "neigh",
        "replace",
        "10.99.0.0",
        "lladdr",
        "02:57:00:00:00:99",
        "dev",
        "weft.vx",
        "nud",
        "permanent",
    ]);
    weft_testkit::run(
        "bridge",
        &[
            "-n",
            &n0.name,
            "fdb",
            "append",
            "02:57:00:00:00:99",
            "dev",
            "weft.vx",
            "dst",
            "192.168.1.99",
            "self",
            "permanent",
        ],
    );
    // Not weft's: stays whatever happens.
    n0.ip(&["route", "add", "10.98.0.0/24", "via", "192.168.1.50"]);
    let (ok, _) = lab.nodes[0].pod.ping_once(lab.nodes[1].pod_v4, &[]);
    assert!(!ok, "the drift should have broken node 0 -> node 1");

    let drift = dps[0].resync(&peers).unwrap();
    assert_eq!(
        drift,
        Drift {
            added: 3,
            removed: 3
        }
    );
    // (The kernel lists entries in hash order, which a delete and re-add may change.)
    assert_eq!(sorted(&n0.weft_routes()), sorted(&routes));
    assert_eq!(sorted(&n0.neigh_vx()), sorted(&neigh));
    assert_eq!(sorted(&n0.fdb_vx()), sorted(&fdb));
    assert!(
        n0.ip(&["route"])
            .contains("10.98.0.0/24 via 192.168.1.50 dev eth0")
    );
    assert_pods_talk(&lab, 0, 1);
    assert_pods_talk(&lab, 0, 2);
    assert_eq!(dps[0].resync(&peers).unwrap(), Drift::default());

    // Node 2 left while nobody watched: a resync without it drops its two routes, two
    // neighbour entries and FDB entry, and leaves node 1 alone.
    let drift = dps[0].resync(&peers[..1]).unwrap();
    assert_eq!(
        drift,
        Drift {
            added: 0,
            removed: 5
        }
    );
    assert_eq!(dps[0].peers(), vec![lab.nodes[1].name()]);
    assert!(!n0.weft_routes().contains("10.244.3.0"));
    assert!(!n0.fdb_vx().contains("02:57:00:00:00:03"));
    assert_pods_talk(&lab, 0, 1);

    // The device itself vanished: resync brings it back with everything on it.
    n0.ip(&["link", "del", "weft.vx"]);
    let drift = dps[0].resync(&peers).unwrap();
    assert_eq!(
        drift,
        Drift {
            added: 10,
            removed: 0
        }
    );
    assert_pods_talk(&lab, 0, 1);
    assert_pods_talk(&lab, 0, 2);
}

#[test]
fn reopen_adopts_device_without_interrupting_traffic() {
    require_root!();
    let lab = Lab::new(&[1500], &[0, 0], false);
    let mut dps = program_all(&lab, Kind::Vxlan);
    assert_pods_talk(&lab, 0, 1);
    let before = lab.nodes[0].ns.ifindex("weft.vx").unwrap();
    let routes = lab.nodes[0].ns.weft_routes();

    // 300 pings, 10 ms apart, while node 0's dataplane restarts underneath them.
    let count = 300;
    let child = Command::new("ip")
        .args(["netns", "exec", &lab.nodes[0].pod.name])
        .args(["ping", "-i", "0.01", "-W", "1", "-c", &count.to_string()])
        .arg(lab.nodes[1].pod_v4.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    drop(dps.remove(0));
    let mut dp = lab.nodes[0].open(Kind::Vxlan);
    dp.upsert_peer(&lab.nodes[1].peer()).unwrap();
    // Nothing was missing or stray: the restart wrote nothing.
    assert_eq!(dp.resync(&[lab.nodes[1].peer()]).unwrap(), Drift::default());
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("{count} packets transmitted, {count} received")),
        "packets lost across the restart:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lab.nodes[0].ns.ifindex("weft.vx"), Some(before));
    assert_eq!(lab.nodes[0].ns.weft_routes(), routes);
    assert_eq!(dp.peers(), vec![lab.nodes[1].name()]);

    // A changed identity (another VNI on both nodes) recreates the device.
    drop(dp);
    drop(dps);
    let mut dps = Vec::new();
    for n in &lab.nodes {
        let mut local = n.local();
        local.vni += 1;
        let dp =
            n.ns.open()
                .run(|| Dataplane::open(Kind::Vxlan, local))
                .unwrap()
                .unwrap();
        dps.push(dp);
    }
    assert_ne!(lab.nodes[0].ns.ifindex("weft.vx"), Some(before));
    let shown = lab.nodes[0].ns.ip(&["-d", "link", "show", "weft.vx"]);
    assert!(shown.contains("vxlan id 4243"), "{shown}");
    dps[0].upsert_peer(&lab.nodes[1].peer()).unwrap();
    dps[1].upsert_peer(&lab.nodes[0].peer()).unwrap();
    assert_pods_talk(&lab, 0, 1);
}
