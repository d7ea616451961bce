//! Reading counters back over netlink, against tables `nft -f` built in a throwaway netns.
//! nft lets a ruleset give counters their starting values, so every figure below is one the
//! kernel holds and dumps, not one a test put in a mock.

mod common;

use std::net::IpAddr;

use common::Netns;
use weft_nft::counters;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// Loads `src` with `nft -f` inside `ns`; the file is removed also when nft fails.
fn nft_load(ns: &Netns, src: &str) {
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let file = Gone(format!("/tmp/{}-counters.nft", ns.name));
    std::fs::write(&file.0, src).expect("write ruleset");
    ns.exec(&["nft", "-f", &file.0]);
}

#[test]
fn drop_and_element_counters_read_as_the_kernel_holds_them() {
    let ns = Netns::new();
    let table = format!("wt{}cnt", std::process::id());
    nft_load(
        &ns,
        &format!(
            r#"table inet {table} {{
  set denied_in4 {{ type ipv4_addr; counter; elements = {{ 10.0.0.2 counter packets 2 bytes 168, 10.0.0.3 counter packets 0 bytes 0 }} }}
  set denied_in6 {{ type ipv6_addr; counter; elements = {{ fd00::2 counter packets 5 bytes 500 }} }}
  set known4 {{ type ipv4_addr; elements = {{ 10.0.0.2 }} }}
  chain ci_1 {{ counter packets 7 bytes 420 drop; }}
  chain pod_ingress {{
    ip saddr 10.0.0.9 counter packets 2 bytes 100 drop
    counter packets 1 bytes 60 drop
    counter packets 9 bytes 900 accept
    ip saddr 10.0.0.8 drop
  }}
  chain ai_1 {{ ip saddr 10.0.0.1 accept; }}
}}"#
        ),
    );
    let t = table.clone();
    let (drops, mut sets, in4, in6, known) = ns.run(move || {
        (
            counters::drop_counters(&t).expect("drop counters"),
            counters::set_names(&t).expect("set names"),
            counters::element_counters(&t, "denied_in4").expect("in4"),
            counters::element_counters(&t, "denied_in6").expect("in6"),
            counters::element_counters(&t, "known4").expect("known4"),
        )
    });
    // Only rules that both count and drop; the accept with a counter and the uncounted drop
    // are not drops to report.
    assert_eq!(
        drops,
        [("ci_1".to_string(), 7), ("pod_ingress".to_string(), 3)]
    );
    sets.sort();
    assert_eq!(sets, ["denied_in4", "denied_in6", "known4"]);
    let mut in4 = in4;
    in4.sort();
    assert_eq!(in4, [(ip("10.0.0.2"), 2, 168), (ip("10.0.0.3"), 0, 0)]);
    assert_eq!(in6, [(ip("fd00::2"), 5, 500)]);
    assert!(known.is_empty(), "a set without counters has none to read");
}

#[test]
fn a_missing_table_or_set_reads_as_empty() {
    let ns = Netns::new();
    let table = format!("wt{}cntx", std::process::id());
    nft_load(
        &ns,
        &format!("table inet {table} {{ chain c {{ counter drop; }}; }}"),
    );
    let t = table.clone();
    let (no_table, no_sets, no_set, present) = ns.run(move || {
        (
            counters::drop_counters("wt-no-such-table").expect("missing table"),
            counters::set_names(&t).expect("no sets"),
            counters::element_counters(&t, "nope").expect("missing set"),
            counters::drop_counters(&t).expect("present"),
        )
    });
    assert!(no_table.is_empty() && no_sets.is_empty() && no_set.is_empty());
    assert_eq!(present, [("c".to_string(), 0)]);
}
