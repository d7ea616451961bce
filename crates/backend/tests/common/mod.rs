//! A small cluster made of network namespaces, built with `ip` (the scaffolding is not the
//! code under test): L2 underlay segments (a bridge in its own namespace), node namespaces
//! with an underlay address on each, an optional router namespace joining the segments, and
//! behind every node a "pod" namespace on a veth whose node end holds the block's gateway.
//! Every namespace carries the test's unique prefix and is deleted on drop, also when the
//! test panics.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Deref;
use std::sync::atomic::{AtomicU32, Ordering};

use weft_backend::{Dataplane, IpNet, Kind, Local, Peer};
use weft_net::NetNs;
use weft_testkit::{TestNs, run};

static NEXT: AtomicU32 = AtomicU32::new(0);

pub const VNI: u32 = 4242;
pub const PORT: u16 = 4789;

/// weft-testkit's named netns (lo up), deleted on drop, with what these tests read back.
pub struct Ns(TestNs);

impl Deref for Ns {
    type Target = TestNs;

    fn deref(&self) -> &TestNs {
        &self.0
    }
}

impl Ns {
    pub fn new(name: String) -> Ns {
        Ns(TestNs::named(name))
    }

    pub fn open(&self) -> NetNs {
        NetNs::open(&self.path()).expect("open test netns")
    }

    pub fn sysctl(&self, key: &str, value: &str) {
        self.open()
            .run(|| weft_net::sysctl::set(key, value))
            .unwrap()
            .unwrap_or_else(|e| panic!("sysctl {key}={value} in {}: {e}", self.name));
    }

    /// One ICMP echo (a few attempts: the first packet after a path appears may be lost
    /// to neighbour resolution). `extra` goes before the address.
    pub fn ping(&self, dst: IpAddr, extra: &[&str]) -> (bool, String) {
        let dst = dst.to_string();
        let mut args = vec!["ping", "-c1", "-W1"];
        args.extend_from_slice(extra);
        args.push(&dst);
        let mut last = String::new();
        for _ in 0..3 {
            let (ok, out) = self.exec(&args);
            if ok {
                return (true, out);
            }
            last = out;
        }
        (false, last)
    }

    /// One attempt only, for paths that must fail.
    pub fn ping_once(&self, dst: IpAddr, extra: &[&str]) -> (bool, String) {
        let dst = dst.to_string();
        let mut args = vec!["ping", "-c1", "-W1"];
        args.extend_from_slice(extra);
        args.push(&dst);
        self.exec(&args)
    }

    /// Routes with weft's protocol, as `ip` prints them (both families).
    pub fn weft_routes(&self) -> String {
        let v4 = self.ip(&["route", "show", "proto", "87"]);
        let v6 = self.ip(&["-6", "route", "show", "proto", "87"]);
        format!("{v4}{v6}")
    }

    pub fn neigh_vx(&self) -> String {
        let v4 = self.ip(&["neigh", "show", "dev", "weft.vx", "nud", "permanent"]);
        let v6 = self.ip(&["-6", "neigh", "show", "dev", "weft.vx", "nud", "permanent"]);
        format!("{v4}{v6}")
    }

    pub fn fdb_vx(&self) -> String {
        run(
            "bridge",
            &["-n", &self.name, "fdb", "show", "dev", "weft.vx"],
        )
    }

    pub fn ifindex(&self, dev: &str) -> Option<u32> {
        let mut h = weft_net::Handle::new_in(&self.open()).unwrap();
        h.link_by_name(dev).unwrap().map(|l| l.index)
    }

    /// `/proc/net/snmp` counter `Ip: <field>` in this namespace.
    pub fn ip_counter(&self, field: &str) -> u64 {
        let (ok, snmp) = self.exec(&["cat", "/proc/net/snmp"]);
        assert!(ok, "{snmp}");
        let mut lines = snmp.lines().filter(|l| l.starts_with("Ip:"));
        let (names, values) = (lines.next().unwrap(), lines.next().unwrap());
        let i = names
            .split_whitespace()
            .position(|n| n == field)
            .unwrap_or_else(|| panic!("no {field} in {names}"));
        values.split_whitespace().nth(i).unwrap().parse().unwrap()
    }
}

pub struct Node {
    pub ns: Ns,
    pub pod: Ns,
    pub segment: usize,
    pub underlay_v4: Ipv4Addr,
    pub underlay_v6: Ipv6Addr,
    pub mac: [u8; 6],
    pub blocks: Vec<IpNet>,
    pub pod_v4: IpAddr,
    pub pod_v6: IpAddr,
}

impl Node {
    pub fn name(&self) -> String {
        self.ns.name.clone()
    }

    pub fn local(&self) -> Local {
        Local {
            underlay_v4: self.underlay_v4,
            underlay_v6: Some(self.underlay_v6),
            vtep_mac: self.mac,
            blocks: self.blocks.clone(),
            vni: VNI,
            port: PORT,
        }
    }

    pub fn peer(&self) -> Peer {
        Peer {
            name: self.name(),
            underlay_v4: self.underlay_v4,
            underlay_v6: Some(self.underlay_v6),
            vtep_mac: self.mac,
            blocks: self.blocks.clone(),
        }
    }

    /// Opens the dataplane on this thread while it is inside the node's namespace, as
    /// weftd's dataplane thread does; the handle stays bound to that namespace.
    pub fn open(&self, kind: Kind) -> Dataplane {
        self.try_open(kind)
            .unwrap_or_else(|e| panic!("open {kind:?} on {}: {e}", self.ns.name))
    }

    pub fn try_open(&self, kind: Kind) -> Result<Dataplane, weft_backend::Error> {
        self.ns
            .open()
            .run(|| Dataplane::open(kind, self.local()))
            .expect("enter node netns")
    }
}

pub struct Lab {
    pub nodes: Vec<Node>,
    pub router: Option<Ns>,
    pub segments: Vec<Ns>,
}

fn prefix() -> String {
    format!(
        "wbk{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl Lab {
    /// One segment per entry of `mtus` (its MTU), nodes on the segments `nodes` names,
    /// and a router between the segments when `router`.
    pub fn new(mtus: &[u32], nodes: &[usize], router: bool) -> Lab {
        let p = prefix();
        let mut lab = Lab {
            nodes: Vec::new(),
            router: None,
            segments: Vec::new(),
        };
        for (s, mtu) in mtus.iter().enumerate() {
            let seg = Ns::new(format!("{p}s{s}"));
            let mtu = mtu.to_string();
            seg.ip(&["link", "add", "br0", "mtu", &mtu, "type", "bridge"]);
            seg.ip(&["link", "set", "br0", "up"]);
            lab.segments.push(seg);
        }
        if router {
            let r = Ns::new(format!("{p}r"));
            r.sysctl("net/ipv4/ip_forward", "1");
            r.sysctl("net/ipv6/conf/all/forwarding", "1");
            for (s, mtu) in mtus.iter().enumerate() {
                let dev = format!("s{s}");
                let mtu = mtu.to_string();
                attach(&r, &dev, &lab.segments[s], &format!("r{s}"), &mtu);
                r.ip(&[
                    "addr",
                    "add",
                    &format!("192.168.{}.1/24", s + 1),
                    "dev",
                    &dev,
                ]);
                r.ip(&[
                    "addr",
                    "add",
                    &format!("fd00:{}::1/64", s + 1),
                    "dev",
                    &dev,
                    "nodad",
                ]);
            }
            lab.router = Some(r);
        }
        for (k, &s) in nodes.iter().enumerate() {
            let node = make_node(&p, k, s, &lab.segments[s], mtus[s], router);
            lab.nodes.push(node);
        }
        lab
    }

    pub fn dump(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            out.push_str(&format!(
                "== {}\n{}{}{}{}",
                n.ns.name,
                n.ns.ip(&["addr"]),
                n.ns.ip(&["route"]),
                n.ns.ip(&["-6", "route"]),
                n.ns.ip(&["neigh"])
            ));
        }
        out
    }
}

/// A veth from `ns`/`dev` to `seg`/`port`, the port enslaved to the segment's bridge, both
/// ends up.
fn attach(ns: &Ns, dev: &str, seg: &Ns, port: &str, mtu: &str) {
    ns.ip(&[
        "link", "add", dev, "mtu", mtu, "type", "veth", "peer", "name", port, "netns", &seg.name,
        "mtu", mtu,
    ]);
    seg.ip(&["link", "set", port, "master", "br0", "up"]);
    ns.ip(&["link", "set", dev, "up"]);
}

fn make_node(p: &str, k: usize, s: usize, seg: &Ns, mtu: u32, router: bool) -> Node {
    let ns = Ns::new(format!("{p}n{k}"));
    let pod = Ns::new(format!("{p}p{k}"));
    let mtu_s = mtu.to_string();
    attach(&ns, "eth0", seg, &format!("n{k}"), &mtu_s);
    let host = 11 + k;
    let n = k + 1;
    let underlay_v4: Ipv4Addr = format!("192.168.{}.{host}", s + 1).parse().unwrap();
    let underlay_v6: Ipv6Addr = format!("fd00:{}::{host}", s + 1).parse().unwrap();
    ns.ip(&["addr", "add", &format!("{underlay_v4}/24"), "dev", "eth0"]);
    ns.ip(&[
        "addr",
        "add",
        &format!("{underlay_v6}/64"),
        "dev",
        "eth0",
        "nodad",
    ]);
    ns.sysctl("net/ipv4/ip_forward", "1");
    ns.sysctl("net/ipv6/conf/all/forwarding", "1");
    if router {
        ns.ip(&[
            "route",
            "add",
            "default",
            "via",
            &format!("192.168.{}.1", s + 1),
        ]);
        ns.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &format!("fd00:{}::1", s + 1),
        ]);
    }
    // The pod: its veth MTU is the underlay's, so on the overlay the node's weft.vx (not
    // the pod) is what limits the packet size.
    ns.ip(&[
        "link", "add", "pod0", "mtu", &mtu_s, "type", "veth", "peer", "name", "eth0", "netns",
        &pod.name, "mtu", &mtu_s,
    ]);
    ns.ip(&["link", "set", "pod0", "up"]);
    ns.ip(&["addr", "add", &format!("10.244.{n}.1/24"), "dev", "pod0"]);
    ns.ip(&[
        "addr",
        "add",
        &format!("fd44:0:0:{n}::1/64"),
        "dev",
        "pod0",
        "nodad",
    ]);
    pod.ip(&["link", "set", "eth0", "up"]);
    pod.ip(&["addr", "add", &format!("10.244.{n}.2/24"), "dev", "eth0"]);
    pod.ip(&[
        "addr",
        "add",
        &format!("fd44:0:0:{n}::2/64"),
        "dev",
        "eth0",
        "nodad",
    ]);
    pod.ip(&["route", "add", "default", "via", &format!("10.244.{n}.1")]);
    pod.ip(&[
        "-6",
        "route",
        "add",
        "default",
        "via",
        &format!("fd44:0:0:{n}::1"),
    ]);
    Node {
        ns,
        pod,
        segment: s,
        underlay_v4,
        underlay_v6,
        mac: [0x02, 0x57, 0, 0, 0, n as u8],
        blocks: vec![
            format!("10.244.{n}.0/24").parse().unwrap(),
            format!("fd44:0:0:{n}::/64").parse().unwrap(),
        ],
        pod_v4: format!("10.244.{n}.2").parse().unwrap(),
        pod_v6: format!("fd44:0:0:{n}::2").parse().unwrap(),
    }
}

/// Asserts that `from`'s pod reaches `to`'s pod over both families.
pub fn assert_pods_talk(lab: &Lab, from: usize, to: usize) {
    let (a, b) = (&lab.nodes[from], &lab.nodes[to]);
    for dst in [b.pod_v4, b.pod_v6] {
        let (ok, out) = a.pod.ping(dst, &[]);
        assert!(
            ok,
            "pod of node {from} cannot reach {dst} (node {to}):\n{out}\n{}",
            lab.dump()
        );
    }
}
