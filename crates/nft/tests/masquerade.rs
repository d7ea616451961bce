//! Masquerade table behaviour against the real kernel, each test in its own netns.

mod common;

use std::sync::{Arc, Barrier};

use common::{Netns, objects};
use ipnet::IpNet;
use nix::errno::Errno;
use weft_nft::{Error, Masquerade};

fn nets(s: &[&str]) -> Vec<IpNet> {
    s.iter().map(|n| n.parse().expect("test CIDR")).collect()
}

fn unique_table(tag: &str) -> String {
    format!("wt{}{tag}", std::process::id())
}

/// The nft source of exactly what `ensure` must produce.
fn nft_source(table: &str, v4: &str, v6: &str) -> String {
    format!(
        "table inet {table} {{
  set masq4 {{ type ipv4_addr; flags interval; }}
  set masq6 {{ type ipv6_addr; flags interval; }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr @masq4 ip daddr != @masq4 ip daddr != 224.0.0.0/4 masquerade
    ip6 saddr @masq6 ip6 daddr != @masq6 ip6 daddr != ff00::/8 masquerade
  }}
}}
add element inet {table} masq4 {{ {v4} }}
add element inet {table} masq6 {{ {v6} }}
"
    )
}

fn strip_handles(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.remove("handle");
            m.values_mut().for_each(strip_handles);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(strip_handles),
        _ => {}
    }
}

/// Assert the table has exactly the expected skeleton: one chain, two sets, two rules.
fn assert_skeleton(ns: &Netns, table: &str) -> serde_json::Value {
    let v = ns.nft_json(table);
    let chains = objects(&v, "chain");
    assert_eq!(chains.len(), 1, "{v}");
    let c = chains[0];
    assert_eq!(c["name"], "postrouting");
    assert_eq!(c["type"], "nat");
    assert_eq!(c["hook"], "postrouting");
    assert_eq!(c["prio"], 100);
    assert_eq!(c["policy"], "accept");
    let sets = objects(&v, "set");
    let names: Vec<_> = sets.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["masq4", "masq6"]);
    for s in &sets {
        assert_eq!(s["flags"], serde_json::json!(["interval"]));
    }
    assert_eq!(
        objects(&v, "rule").len(),
        2,
        "rules duplicated or missing: {v}"
    );
    v
}

#[test]
fn ensure_builds_the_same_ruleset_as_nft() {
    let table = unique_table("same");
    let ours = Netns::new();
    let t = table.clone();
    ours.run(move || Masquerade::new(&t).ensure(&nets(&["10.77.0.0/24", "fd00::/64"])))
        .expect("ensure");
    assert_skeleton(&ours, &table);

    let reference = Netns::new();
    let src = format!("/tmp/{}.nft", reference.name);
    std::fs::write(&src, nft_source(&table, "10.77.0.0/24", "fd00::/64")).unwrap();
    reference.exec(&["nft", "-f", &src]);
    let _ = std::fs::remove_file(&src);

    // Kernel-side view of rules (expression by expression) and of the raw set elements.
    let debug = |ns: &Netns| ns.exec(&["nft", "--debug=netlink", "list", "table", "inet", &table]);
    assert_eq!(debug(&ours), debug(&reference));
    let (mut a, mut b) = (ours.nft_json(&table), reference.nft_json(&table));
    strip_handles(&mut a);
    strip_handles(&mut b);
    assert_eq!(a, b);
    let text = ours.exec(&["nft", "list", "table", "inet", &table]);
    assert!(text.contains("ip saddr @masq4 ip daddr != @masq4 ip daddr != 224.0.0.0/4 masquerade"));
    assert!(text.contains("ip6 saddr @masq6 ip6 daddr != @masq6 ip6 daddr != ff00::/8 masquerade"));
}

#[test]
fn concurrent_ensure_creates_rules_once() {
    let table = unique_table("conc");
    let ns = Netns::new();
    let barrier = Arc::new(Barrier::new(20));
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let (t, barrier) = (table.clone(), barrier.clone());
            ns.spawn(move || {
                let m = Masquerade::new(&t);
                let mine = nets(&["10.77.0.0/24", &format!("10.{}.0.0/16", 100 + i)]);
                barrier.wait();
                m.ensure(&mine)
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread").expect("ensure");
    }
    assert_skeleton(&ns, &table);
    let t = table.clone();
    let got = ns
        .run(move || Masquerade::new(&t).ranges())
        .expect("ranges");
    let mut want = nets(&["10.77.0.0/24"]);
    want.extend((0..20).map(|i| format!("10.{}.0.0/16", 100 + i).parse::<IpNet>().unwrap()));
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn elements_add_remove_read_back() {
    let table = unique_table("elems");
    let ns = Netns::new();
    let t = table.clone();
    let (after_add, after_remove, after_absent_remove) = ns.run(move || {
        let m = Masquerade::new(&t);
        // Host bits set, adjacent ranges, a range running to the top of the address space,
        // a duplicate and a nested range in one call.
        m.ensure(&nets(&[
            "10.9.0.5/16",
            "10.77.0.0/24",
            "10.77.1.0/24",
            "240.0.0.0/4",
            "10.77.0.0/24",
            "10.77.0.128/25",
            "fd00::/64",
            "fd01::/48",
        ]))
        .unwrap();
        // Re-adding identical elements is a no-op.
        m.ensure(&nets(&["10.77.0.0/24", "fd00::/64"])).unwrap();
        let after_add = m.ranges().unwrap();
        m.remove(&nets(&["10.77.0.0/24", "fd01::/48"])).unwrap();
        let after_remove = m.ranges().unwrap();
        // Absent ranges, a range only covered by a larger element, and a repeat removal.
        m.remove(&nets(&[
            "192.168.0.0/16",
            "10.9.1.0/24",
            "10.77.0.0/24",
            "fd09::/64",
        ]))
        .unwrap();
        (after_add, after_remove, m.ranges().unwrap())
    });
    assert_eq!(
        after_add,
        nets(&[
            "10.9.0.0/16",
            "10.77.0.0/24",
            "10.77.1.0/24",
            "240.0.0.0/4",
            "fd00::/64",
            "fd01::/48"
        ])
    );
    assert_eq!(
        after_remove,
        nets(&["10.9.0.0/16", "10.77.1.0/24", "240.0.0.0/4", "fd00::/64"])
    );
    assert_eq!(after_absent_remove, after_remove);

    // nft agrees on the contents.
    let v = assert_skeleton(&ns, &table);
    let sets = objects(&v, "set");
    assert_eq!(
        sets[0]["elem"],
        serde_json::json!([
            {"prefix": {"addr": "10.9.0.0", "len": 16}},
            {"prefix": {"addr": "10.77.1.0", "len": 24}},
            {"prefix": {"addr": "240.0.0.0", "len": 4}}
        ])
    );
    assert_eq!(
        sets[1]["elem"],
        serde_json::json!([{"prefix": {"addr": "fd00::", "len": 64}}])
    );

    let t = table.clone();
    let (deleted, again, ranges, rm) = ns.run(move || {
        let m = Masquerade::new(&t);
        (
            m.delete_table(),
            m.delete_table(),
            m.ranges(),
            m.remove(&nets(&["10.9.0.0/16"])),
        )
    });
    assert!(deleted.unwrap());
    assert!(!again.unwrap());
    assert!(ranges.unwrap().is_empty());
    rm.unwrap();
    assert!(!ns.exec(&["nft", "list", "tables"]).contains(&table));
}

#[test]
fn overlapping_ranges_are_merged_not_rejected() {
    let table = unique_table("ovl");
    let ns = Netns::new();
    let t = table.clone();
    let steps = ns.run(move || {
        let m = Masquerade::new(&t);
        let mut steps = Vec::new();
        m.ensure(&nets(&["10.244.1.0/24", "10.244.7.0/24", "10.245.0.0/24"]))
            .unwrap();
        // A cluster range covering two existing node ranges replaces them.
        m.ensure(&nets(&["10.244.0.0/16"])).unwrap();
        steps.push(m.ranges().unwrap());
        // A node range inside an existing larger element: nothing changes.
        m.ensure(&nets(&["10.244.2.0/24"])).unwrap();
        steps.push(m.ranges().unwrap());
        steps
    });
    assert_eq!(steps[0], nets(&["10.244.0.0/16", "10.245.0.0/24"]));
    assert_eq!(steps[1], steps[0]);
    assert_skeleton(&ns, &table);
}

#[test]
fn ensure_without_ranges_creates_empty_sets() {
    let table = unique_table("empty");
    let ns = Netns::new();
    let t = table.clone();
    let r = ns.run(move || {
        let m = Masquerade::new(&t);
        m.ensure(&[]).unwrap();
        m.ensure(&[]).unwrap();
        m.ranges().unwrap()
    });
    assert!(r.is_empty());
    assert_skeleton(&ns, &table);
}

#[test]
fn kernel_errors_are_typed() {
    let ns = Netns::new();
    // A table that exists without our sets: ensure must not loop forever or duplicate.
    let table = unique_table("broken");
    ns.exec(&["nft", "add", "table", "inet", &table]);
    let t = table.clone();
    let err = ns
        .run(move || Masquerade::new(&t).ensure(&nets(&["10.1.0.0/24"])))
        .unwrap_err();
    match &err {
        Error::Kernel { op, errno, context } => {
            assert_eq!(*op, "NEWSETELEM");
            assert_eq!(*errno, Errno::ENOENT);
            assert!(context.contains("masq4"), "{context}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("ENOENT"), "{err}");

    // Names nf_tables can't hold (NFT_NAME_MAXLEN) are refused before anything is sent.
    let long = "x".repeat(300);
    let err = ns
        .run(move || Masquerade::new(&long).ensure(&nets(&["10.1.0.0/24"])))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidTableName { .. }), "{err:?}");
}
