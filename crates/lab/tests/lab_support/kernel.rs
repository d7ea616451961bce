//! What weftd programmed, read back from a node namespace with `ip -j` / `bridge -j`: its
//! routes (`proto 87`), the FDB and neighbour entries on `weft.vx`; and where each route
//! really leads, resolved against the node records in etcd (a route through `weft.vx` goes
//! to the peer whose VTEP MAC its next hop's neighbour entry names and whose underlay
//! address the FDB entry for that MAC names; a direct route to the peer whose underlay
//! address is its gateway).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

use super::{ipj, text};

pub const VXLAN_DEV: &str = "weft.vx";

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    pub dst: String,
    pub gateway: Option<String>,
    pub dev: String,
}

/// Everything weftd owns in one node's kernel, in a form that compares as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Kernel {
    pub routes: BTreeSet<Route>,
    /// (MAC, underlay destination) on `weft.vx`.
    pub fdb: BTreeSet<(String, String)>,
    /// (address, MAC) on `weft.vx`.
    pub neigh: BTreeSet<(String, String)>,
}

/// `ip -j` output of a command that may legitimately name a missing device (host-gw has no
/// `weft.vx`): empty then.
fn json_or_empty(prog: &str, args: &[&str]) -> Vec<Value> {
    let out = Command::new(prog)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{prog}: {e}"));
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("does not exist") || err.contains("Cannot find device"),
            "{prog} {args:?}: {}",
            text(&out)
        );
        return Vec::new();
    }
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Vec::new();
    }
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap_or_else(|e| panic!("{prog} {args:?}: {e}"))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn s(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or_default().to_owned()
}

/// Reads the node namespace `ns`.
pub fn kernel(ns: &str) -> Kernel {
    let mut k = Kernel::default();
    for fam in ["-4", "-6"] {
        let routes = ipj(ns, &[fam, "route", "show", "proto", "87"]);
        for r in routes.as_array().into_iter().flatten() {
            k.routes.insert(Route {
                dst: s(r, "dst"),
                gateway: r["gateway"].as_str().map(str::to_owned),
                dev: s(r, "dev"),
            });
        }
    }
    for e in json_or_empty("bridge", &["-n", ns, "-j", "fdb", "show", "dev", VXLAN_DEV]) {
        // The kernel's own entries for the device (no dst) are not weftd's.
        if e.get("dst").is_some() {
            k.fdb.insert((s(&e, "mac"), s(&e, "dst")));
        }
    }
    for e in json_or_empty("ip", &["-n", ns, "-j", "neigh", "show", "dev", VXLAN_DEV]) {
        if e.get("lladdr").is_some() {
            k.neigh.insert((s(&e, "dst"), s(&e, "lladdr")));
        }
    }
    k
}

/// The ifindex of `dev` in `ns`, if it exists.
pub fn ifindex(ns: &str, dev: &str) -> Option<u64> {
    json_or_empty("ip", &["-n", ns, "-j", "link", "show", "dev", dev])
        .first()
        .and_then(|l| l["ifindex"].as_u64())
}

/// The MTU of `dev` in `ns`.
pub fn mtu(ns: &str, dev: &str) -> u64 {
    let links = ipj(ns, &["link", "show", "dev", dev]);
    links[0]["mtu"]
        .as_u64()
        .unwrap_or_else(|| panic!("no MTU for {dev} in {ns}: {links}"))
}

/// Where `node` (a record from etcd) is reached: its underlay addresses and VTEP MAC.
fn underlay(rec: &Value, v6: bool) -> Option<&str> {
    rec[if v6 { "underlayV6" } else { "underlayV4" }].as_str()
}

impl Kernel {
    /// Block → the node its route leads to (by the records), or a description of why it
    /// leads nowhere known.
    pub fn route_map(&self, records: &BTreeMap<String, Value>) -> BTreeMap<String, String> {
        self.routes
            .iter()
            .map(|r| (r.dst.clone(), self.resolve(r, records)))
            .collect()
    }

    fn resolve(&self, r: &Route, records: &BTreeMap<String, Value>) -> String {
        let v6 = r.dst.contains(':');
        let Some(gw) = &r.gateway else {
            return format!("?no gateway (dev {})", r.dev);
        };
        if r.dev != VXLAN_DEV {
            return records
                .iter()
                .find(|(_, rec)| underlay(rec, v6) == Some(gw.as_str()))
                .map(|(n, _)| n.clone())
                .unwrap_or_else(|| format!("?gateway {gw} is no node's underlay"));
        }
        let Some((_, mac)) = self.neigh.iter().find(|(ip, _)| ip == gw) else {
            return format!("?no neighbour entry for {gw}");
        };
        let Some((_, dst)) = self.fdb.iter().find(|(m, _)| m == mac) else {
            return format!("?no FDB entry for {mac}");
        };
        records
            .iter()
            .find(|(_, rec)| {
                rec["vtepMac"].as_str() == Some(mac.as_str())
                    && underlay(rec, false) == Some(dst.as_str())
            })
            .map(|(n, _)| n.clone())
            .unwrap_or_else(|| format!("?{mac} at {dst} is no node's VTEP"))
    }

    /// Whether anything here still points at `rec`'s node: a route through its underlay
    /// address, an FDB entry for its MAC or address, a neighbour entry for its MAC.
    pub fn mentions(&self, rec: &Value) -> Vec<String> {
        let mac = rec["vtepMac"].as_str().unwrap_or("-");
        let u4 = underlay(rec, false).unwrap_or("-");
        let u6 = underlay(rec, true).unwrap_or("-");
        let mut found = Vec::new();
        for r in &self.routes {
            if r.gateway.as_deref().is_some_and(|g| g == u4 || g == u6) {
                found.push(format!("route {r:?}"));
            }
        }
        for (m, d) in &self.fdb {
            if m == mac || d == u4 {
                found.push(format!("fdb {m} dst {d}"));
            }
        }
        for (ip, m) in &self.neigh {
            if m == mac {
                found.push(format!("neigh {ip} lladdr {m}"));
            }
        }
        found
    }
}

/// Fragmentation and reassembly counters of `ns` (IPv4 from /proc/net/snmp, IPv6 from
/// /proc/net/snmp6), which are per network namespace.
pub fn frag_counters(ns: &str) -> BTreeMap<String, u64> {
    let read = |file: &str| {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "cat", file])
            .output()
            .unwrap_or_else(|e| panic!("cat {file}: {e}"));
        assert!(out.status.success(), "cat {file} in {ns}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut counters = BTreeMap::new();
    // /proc/net/snmp: a header line of names, then a line of values, per protocol.
    let snmp = read("/proc/net/snmp");
    let lines: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Ip:")).collect();
    if let [names, values] = lines[..] {
        for (n, v) in names
            .split_whitespace()
            .zip(values.split_whitespace())
            .skip(1)
        {
            if n.starts_with("Frag") || n.starts_with("Reasm") {
                counters.insert(format!("Ip{n}"), v.parse().unwrap_or(0));
            }
        }
    }
    for line in read("/proc/net/snmp6").lines() {
        let mut f = line.split_whitespace();
        if let (Some(n), Some(v)) = (f.next(), f.next())
            && (n.starts_with("Ip6Frag") || n.starts_with("Ip6Reasm"))
        {
            counters.insert(n.to_owned(), v.parse().unwrap_or(0));
        }
    }
    counters
}
