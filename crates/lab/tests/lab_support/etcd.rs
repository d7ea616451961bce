//! The lab's datastore as etcd holds it, read with `etcdctl` inside the router namespace
//! (etcd listens there on loopback): block keys with their owner and lease, node records.

use std::collections::BTreeMap;
use std::process::{Command, Output};

use serde_json::Value;

use super::{Lab, text};

/// The key prefix weftd uses by default.
pub const PREFIX: &str = "/weft/v1/";

/// One key as etcd returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: String,
    /// 0 when the key is bound to no lease.
    pub lease: i64,
}

/// A block key: who owns the block, under which lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub node: String,
    pub lease: i64,
}

impl Lab {
    /// `etcdctl --endpoints <lab etcd> args…` (API v3), run where etcd listens.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        etcdctl_at(&self.ns("ul"), "http://127.0.0.1:2379", args)
    }

    /// Every key under `prefix`, in key order.
    pub fn etcd_kvs(&self, prefix: &str) -> Vec<Kv> {
        let out = self.etcdctl(&["get", "--prefix", prefix, "-w", "json"]);
        assert!(out.status.success(), "etcdctl get: {}", text(&out));
        parse_kvs(&out.stdout)
    }

    /// Block (as `10.244.0.0/26`) → its owner, from the block keys.
    pub fn block_owners(&self) -> BTreeMap<String, Owner> {
        let blocks = format!("{PREFIX}blocks/");
        self.etcd_kvs(&blocks)
            .into_iter()
            .filter_map(|kv| {
                let name = kv.key.strip_prefix(&blocks)?.split_once('/')?.1;
                let (addr, len) = name.rsplit_once('_')?;
                Some((
                    format!("{addr}/{len}"),
                    Owner {
                        node: kv.value,
                        lease: kv.lease,
                    },
                ))
            })
            .collect()
    }

    /// The blocks a node owns according to the block keys.
    pub fn blocks_of(&self, node: &str) -> Vec<String> {
        self.block_owners()
            .into_iter()
            .filter(|(_, o)| o.node == node)
            .map(|(b, _)| b)
            .collect()
    }

    /// Node name → its record (JSON: underlayV4, underlayV6, vtepMac, mtu, blocks).
    pub fn node_records(&self) -> BTreeMap<String, Value> {
        let nodes = format!("{PREFIX}nodes/");
        self.etcd_kvs(&nodes)
            .into_iter()
            .filter_map(|kv| {
                let name = kv.key.strip_prefix(&nodes)?.to_owned();
                let rec: Value = serde_json::from_str(&kv.value)
                    .unwrap_or_else(|e| panic!("node record {}: {e}: {}", kv.key, kv.value));
                Some((name, rec))
            })
            .collect()
    }
}

/// `etcdctl` against `endpoint`, run inside namespace `ns`.
pub fn etcdctl_at(ns: &str, endpoint: &str, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", ns, "etcdctl", "--endpoints", endpoint])
        .args(["--command-timeout", "3s"])
        .args(args)
        .env("ETCDCTL_API", "3")
        .output()
        .unwrap_or_else(|e| panic!("etcdctl: {e}"))
}

/// The `kvs` of `etcdctl get -w json` (keys and values are base64 there).
pub fn parse_kvs(json: &[u8]) -> Vec<Kv> {
    let v: Value = serde_json::from_slice(json)
        .unwrap_or_else(|e| panic!("etcdctl json: {e}: {}", String::from_utf8_lossy(json)));
    let field = |kv: &Value, name: &str| {
        let b64 = kv[name].as_str().unwrap_or_default();
        String::from_utf8(base64_decode(b64)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    v["kvs"]
        .as_array()
        .map(|kvs| {
            kvs.iter()
                .map(|kv| Kv {
                    key: field(kv, "key"),
                    value: field(kv, "value"),
                    lease: kv["lease"].as_i64().unwrap_or(0),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Standard base64 with padding, as etcd's JSON gateway writes it.
pub fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            other => panic!("not base64: {:?} in {s:?}", other as char),
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|b| *b != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= val(*c) << (18 - 6 * i);
        }
        let n = chunk.len() * 6 / 8;
        for i in 0..n {
            out.push((acc >> (16 - 8 * i)) as u8);
        }
    }
    out
}
