//! World builders shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;

use weft_policy::{
    Endpoint, NamedPort, Namespace, NetworkPolicy, Node, Object, ParseOptions, Protocol, World,
    parse,
};

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `k=v,k2=v2`
pub fn kv(s: &str) -> BTreeMap<String, String> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').expect("k=v");
            (k.to_string(), v.to_string())
        })
        .collect()
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

pub fn node(name: &str, addr: &str, cidr: &str) -> Node {
    Node {
        name: name.into(),
        addresses: vec![ip(addr)],
        pod_cidrs: vec![cidr.parse().expect("cidr")],
    }
}

pub fn namespace(name: &str, l: &str) -> Namespace {
    Namespace {
        name: name.into(),
        labels: kv(l),
    }
}

pub fn pod(ns: &str, name: &str, node: &str, addrs: &[&str], l: &str) -> Endpoint {
    Endpoint {
        namespace: ns.into(),
        name: name.into(),
        labels: kv(l),
        node: node.into(),
        addresses: addrs.iter().map(|a| ip(a)).collect(),
        ports: BTreeMap::new(),
    }
}

pub fn with_port(mut e: Endpoint, name: &str, protocol: Protocol, port: u16) -> Endpoint {
    e.ports.insert(name.into(), NamedPort { protocol, port });
    e
}

/// Parses NetworkPolicy manifests (default namespace `default`).
pub fn policies(yaml: &str) -> Vec<NetworkPolicy> {
    let opts = ParseOptions {
        default_namespace: Some("default".into()),
    };
    match parse(yaml, &opts) {
        Ok(objs) => objs
            .into_iter()
            .map(|o| match o {
                Object::NetworkPolicy(p) => p,
                other => panic!("not a policy: {other:?}"),
            })
            .collect(),
        Err(e) => panic!("bad test manifest: {e}"),
    }
}

/// Two nodes (a: 10.0.1.0/24 + fd00:1::/64, b: 10.0.2.0/24 + fd00:2::/64).
pub fn two_nodes() -> Vec<Node> {
    vec![
        Node {
            name: "a".into(),
            addresses: vec![ip("192.168.0.1"), ip("10.0.1.1"), ip("fd00:1::1")],
            pod_cidrs: vec!["10.0.1.0/24".parse().unwrap(), "fd00:1::/64".parse().unwrap()],
        },
        Node {
            name: "b".into(),
            addresses: vec![ip("192.168.0.2"), ip("10.0.2.1"), ip("fd00:2::1")],
            pod_cidrs: vec!["10.0.2.0/24".parse().unwrap(), "fd00:2::/64".parse().unwrap()],
        },
    ]
}

pub fn world(namespaces: Vec<Namespace>, endpoints: Vec<Endpoint>, policies: Vec<NetworkPolicy>) -> World {
    World {
        namespaces,
        nodes: two_nodes(),
        endpoints,
        policies,
    }
}

use std::collections::BTreeMap as Map;
use weft_policy::plan::{self, HookPoint, Packet, Plan, PlanOptions};
use weft_policy::{Party, evaluate_addrs};

/// One plan per node: `compile` (or `compile_linear` when `linear`).
pub fn plans(world: &World, linear: bool) -> Map<String, Plan> {
    world
        .nodes
        .iter()
        .map(|n| {
            let o = PlanOptions::new(&n.name);
            let p = if linear {
                plan::compile_linear(world, &o)
            } else {
                plan::compile(world, &o)
            };
            (n.name.clone(), p)
        })
        .collect()
}

/// The first packet of a connection through the nodes' plans, along the path a packet takes
/// in weft: a pod's packets cross its node's forward hook (or input, to the node itself),
/// then the destination node's forward (or input) hook; a node's own packets leave through
/// output, where weft filters nothing; an external packet meets the destination node only.
pub fn walk(world: &World, plans: &Map<String, Plan>, src: IpAddr, dst: IpAddr, proto: Protocol, port: u16) -> bool {
    let v = evaluate_addrs(world, src, dst, port, proto);
    let pkt = Packet {
        src,
        dst,
        protocol: proto.number(),
        port,
    };
    // (node, is a pod there?) for each end.
    let place = |p: &Party| -> Option<(String, bool)> {
        match p {
            Party::Pod { node, .. } | Party::Unprogrammed { node } => Some((node.clone(), true)),
            Party::Node(n) => Some((n.clone(), false)),
            Party::External => None,
        }
    };
    let s = place(&v.src.party);
    let d = place(&v.dst.party);
    let mut hops: Vec<(String, HookPoint)> = Vec::new();
    let dst_hook = |d: &Option<(String, bool)>| {
        d.as_ref().map(|(n, pod)| {
            (
                n.clone(),
                if *pod {
                    HookPoint::Forward
                } else {
                    HookPoint::Input
                },
            )
        })
    };
    match &s {
        Some((sn, true)) => {
            match &d {
                Some((dn, false)) if dn == sn => hops.push((sn.clone(), HookPoint::Input)),
                _ => {
                    hops.push((sn.clone(), HookPoint::Forward));
                    if let Some((dn, h)) = dst_hook(&d)
                        && dn != *sn
                    {
                        hops.push((dn, h));
                    }
                }
            }
        }
        Some((sn, false)) => {
            if let Some((dn, h)) = dst_hook(&d)
                && dn != *sn
            {
                hops.push((dn, h));
            }
        }
        None => {
            if let Some(hop) = dst_hook(&d) {
                hops.push(hop);
            }
        }
    }
    hops.into_iter().all(|(n, hook)| match plans.get(&n) {
        Some(p) => p.walk(hook, &pkt).expect("walkable plan"),
        None => true,
    })
}
