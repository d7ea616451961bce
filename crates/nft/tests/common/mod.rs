//! Test scaffolding: weft-testkit's throw-away namespaces (`wtf…`) and threads that live
//! inside them, and nft's JSON read back. Nothing here ever touches the host namespace's
//! nftables state.
#![allow(dead_code)]

use std::ops::Deref;

/// A named netns (`wtf<pid>x<n>`) deleted on drop, also when the test panics.
pub struct Netns(weft_testkit::TestNs);

impl Netns {
    pub fn new() -> Netns {
        Netns(weft_testkit::TestNs::new("wtf"))
    }

    /// `ip netns exec <ns> args...`; panics on failure, returns stdout (the kit's `exec_ok`:
    /// these tests only run commands that must succeed).
    pub fn exec(&self, args: &[&str]) -> String {
        self.0.exec_ok(args)
    }

    pub fn nft_json(&self, table: &str) -> serde_json::Value {
        let out = self.exec(&["nft", "-j", "list", "table", "inet", table]);
        serde_json::from_str(&out).expect("nft -j output parses")
    }
}

impl Deref for Netns {
    type Target = weft_testkit::TestNs;

    fn deref(&self) -> &weft_testkit::TestNs {
        &self.0
    }
}

/// Objects of one kind ("table", "chain", "set", "rule") in `nft -j` output.
pub fn objects<'a>(v: &'a serde_json::Value, kind: &str) -> Vec<&'a serde_json::Value> {
    v["nftables"]
        .as_array()
        .expect("nftables array")
        .iter()
        .filter_map(|o| o.get(kind))
        .collect()
}
