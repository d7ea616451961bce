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
