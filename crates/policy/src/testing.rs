//! Test support (feature `testing`): world builders, random worlds and their mutations on a
//! replayable PRNG, and the walk of a packet through every node's plan that the tests hold
//! the compilers against. Used by this crate's tests and weft-agent's (`policy_netlink`: the
//! kernel must end where the plans say). It panics on a bad test input, as tests do; never
//! enable it in a binary.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::{
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
            pod_cidrs: vec![
                "10.0.1.0/24".parse().unwrap(),
                "fd00:1::/64".parse().unwrap(),
            ],
        },
        Node {
            name: "b".into(),
            addresses: vec![ip("192.168.0.2"), ip("10.0.2.1"), ip("fd00:2::1")],
            pod_cidrs: vec![
                "10.0.2.0/24".parse().unwrap(),
                "fd00:2::/64".parse().unwrap(),
            ],
        },
    ]
}

pub fn world(
    namespaces: Vec<Namespace>,
    endpoints: Vec<Endpoint>,
    policies: Vec<NetworkPolicy>,
) -> World {
    World {
        namespaces,
        nodes: two_nodes(),
        endpoints,
        policies,
    }
}

use std::collections::BTreeMap as Map;

use crate::plan::{self, HookPoint, Packet, Plan, PlanOptions};
use crate::{Party, evaluate_addrs};

/// One plan per node: `compile` (or `compile_linear` when `linear`).
pub fn plans(world: &World, linear: bool) -> Map<String, Plan> {
    plans_tuned(world, linear, |_| {})
}

/// [`plans`] with `tune` applied to each node's options (e.g. a low
/// [`PlanOptions::union_above`], so that every port region becomes a union atom).
pub fn plans_tuned(
    world: &World,
    linear: bool,
    tune: impl Fn(&mut PlanOptions),
) -> Map<String, Plan> {
    world
        .nodes
        .iter()
        .map(|n| {
            let mut o = PlanOptions::new(&n.name);
            tune(&mut o);
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
pub fn walk(
    world: &World,
    plans: &Map<String, Plan>,
    src: IpAddr,
    dst: IpAddr,
    proto: Protocol,
    port: u16,
) -> bool {
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
        Some((sn, true)) => match &d {
            Some((dn, false)) if dn == sn => hops.push((sn.clone(), HookPoint::Input)),
            _ => {
                hops.push((sn.clone(), HookPoint::Forward));
                if let Some((dn, h)) = dst_hook(&d)
                    && dn != *sn
                {
                    hops.push((dn, h));
                }
            }
        },
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

/// The tests' replayable PRNG.
pub use weft_testkit::Rng;

const LABEL_KEYS: &[(&str, &[&str])] = &[
    ("app", &["w", "d", "c"]),
    ("tier", &["f", "b"]),
    ("role", &["x"]),
];

pub fn random_labels(r: &mut Rng) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    for (k, vals) in LABEL_KEYS {
        if r.chance(60) {
            l.insert(k.to_string(), r.pick(vals).to_string());
        }
    }
    l
}

pub fn random_selector_yaml(r: &mut Rng) -> String {
    let mut parts = Vec::new();
    if r.chance(50) {
        let (k, vals) = r.pick(LABEL_KEYS);
        parts.push(format!("matchLabels: {{{k}: {}}}", r.pick(vals)));
    }
    if r.chance(40) {
        let (k, vals) = r.pick(LABEL_KEYS);
        let e = match r.below(4) {
            0 => format!("{{key: {k}, operator: In, values: [{}]}}", r.pick(vals)),
            1 => format!("{{key: {k}, operator: NotIn, values: [{}]}}", r.pick(vals)),
            2 => format!("{{key: {k}, operator: Exists}}"),
            _ => format!("{{key: {k}, operator: DoesNotExist}}"),
        };
        parts.push(format!("matchExpressions: [{e}]"));
    }
    format!("{{{}}}", parts.join(", "))
}

fn random_ns_selector_yaml(r: &mut Rng) -> String {
    match r.below(4) {
        0 => "{}".into(),
        1 => format!("{{matchLabels: {{team: {}}}}}", r.pick(&["a", "b"])),
        2 => format!(
            "{{matchLabels: {{kubernetes.io/metadata.name: {}}}}}",
            r.pick(&["n0", "n1", "n2"])
        ),
        _ => format!(
            "{{matchExpressions: [{{key: env, operator: {}}}]}}",
            r.pick(&["Exists", "DoesNotExist"])
        ),
    }
}

const BLOCKS: &[&str] = &[
    "{cidr: 10.0.0.0/16, except: [10.0.1.0/28]}",
    "{cidr: 10.0.2.0/24}",
    "{cidr: 203.0.113.0/24, except: [203.0.113.128/25]}",
    "{cidr: 'fd00::/16', except: ['fd00:2::/64']}",
    "{cidr: 0.0.0.0/0, except: [10.0.0.0/8]}",
    "{cidr: 192.168.0.1/32}",
    "{cidr: 10.0.1.0/25}",
];

fn random_peer_yaml(r: &mut Rng) -> String {
    match r.below(4) {
        0 => format!("{{podSelector: {}}}", random_selector_yaml(r)),
        1 => format!("{{namespaceSelector: {}}}", random_ns_selector_yaml(r)),
        2 => format!(
            "{{podSelector: {}, namespaceSelector: {}}}",
            random_selector_yaml(r),
            random_ns_selector_yaml(r)
        ),
        _ => format!("{{ipBlock: {}}}", r.pick(BLOCKS)),
    }
}

fn random_port_yaml(r: &mut Rng) -> String {
    let proto = *r.pick(&["", "protocol: UDP, ", "protocol: SCTP, ", "protocol: TCP, "]);
    match r.below(5) {
        0 => format!("{{{proto}}}").replace(", }", "}"),
        1 => format!("{{{proto}port: {}}}", r.pick(&[53, 80, 443, 8080])),
        2 => format!(
            "{{{proto}port: {}, endPort: {}}}",
            80,
            r.pick(&[85, 90, 8080])
        ),
        3 => format!("{{{proto}port: {}}}", r.pick(&["http", "dns"])),
        _ => format!("{{{proto}port: 8000, endPort: 8100}}"),
    }
}

fn random_rules_yaml(r: &mut Rng, key: &str, peers: &str) -> String {
    let n = r.below(3);
    if n == 0 && r.chance(50) {
        return String::new();
    }
    let mut out = format!("  {key}:\n");
    if n == 0 {
        return format!("  {key}: []\n");
    }
    for _ in 0..n {
        let mut rule = Vec::new();
        if r.chance(70) {
            let np = 1 + r.below(2);
            let list: Vec<String> = (0..np).map(|_| random_peer_yaml(r)).collect();
            rule.push(format!("{peers}: [{}]", list.join(", ")));
        }
        if r.chance(70) {
            let np = 1 + r.below(2);
            let list: Vec<String> = (0..np).map(|_| random_port_yaml(r)).collect();
            rule.push(format!("ports: [{}]", list.join(", ")));
        }
        out.push_str(&format!("  - {{{}}}\n", rule.join(", ")));
    }
    out
}

pub fn random_policy_yaml(r: &mut Rng, name: &str) -> String {
    let ns = r.pick(&["n0", "n1", "n2"]);
    let types = *r.pick(&[
        "",
        "  policyTypes: [Ingress]\n",
        "  policyTypes: [Egress]\n",
        "  policyTypes: [Ingress, Egress]\n",
    ]);
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  podSelector: {}\n{types}{}{}",
        random_selector_yaml(r),
        random_rules_yaml(r, "ingress", "from"),
        random_rules_yaml(r, "egress", "to"),
    )
}

pub fn random_pod(r: &mut Rng, i: usize) -> Endpoint {
    let node = if r.chance(50) { "a" } else { "b" };
    let net = if node == "a" { 1 } else { 2 };
    let mut addrs = vec![format!("10.0.{net}.{}", 2 + i)];
    if r.chance(40) {
        addrs.push(format!("fd00:{net}::{:x}", 2 + i));
    }
    let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let ns = *r.pick(&["n0", "n1", "n2"]);
    let mut e = pod(ns, &format!("p{i}"), node, &addrs, "");
    e.labels = random_labels(r);
    if r.chance(50) {
        e = with_port(e, "http", Protocol::Tcp, *r.pick(&[80, 8080]));
    }
    if r.chance(30) {
        e = with_port(e, "dns", Protocol::Udp, 53);
    }
    e
}

pub fn random_world(r: &mut Rng) -> World {
    let mut namespaces = Vec::new();
    for n in ["n0", "n1", "n2"] {
        let mut l = String::new();
        if r.chance(60) {
            l.push_str(&format!("team={}", r.pick(&["a", "b"])));
        }
        if r.chance(40) {
            if !l.is_empty() {
                l.push(',');
            }
            l.push_str("env=x");
        }
        namespaces.push(namespace(n, &l));
    }
    let pods = (0..4 + r.below(6)).map(|i| random_pod(r, i)).collect();
    let mut yaml = String::new();
    for i in 0..1 + r.below(4) {
        yaml.push_str(&random_policy_yaml(r, &format!("np{i}")));
    }
    world(namespaces, pods, policies(&yaml))
}

/// Every address worth probing in a world: pods, nodes, outsiders, unprogrammed.
pub fn probe_addresses(w: &World) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = w
        .endpoints
        .iter()
        .flat_map(|e| e.addresses.clone())
        .collect();
    for n in &w.nodes {
        v.extend(n.addresses.iter().copied());
    }
    for a in [
        "203.0.113.5",
        "203.0.113.200",
        "10.9.0.1",
        "198.51.100.7",
        "10.0.1.250",
        "10.0.1.3",
        "fd00:9::1",
        "fd00:2::99",
    ] {
        v.push(ip(a));
    }
    v.sort();
    v.dedup();
    v
}

pub const PROBE_PORTS: &[u16] = &[53, 80, 85, 443, 8080, 8050, 9999];

/// What a mutation did (so tests can tell single causes apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutation {
    AddPod,
    RemovePod,
    Relabel,
    EditPort,
    EditCidr,
    AddPolicy,
    RemovePolicy,
    NamespaceLabel,
}

pub const ALL_MUTATIONS: &[Mutation] = &[
    Mutation::AddPod,
    Mutation::RemovePod,
    Mutation::Relabel,
    Mutation::EditPort,
    Mutation::EditCidr,
    Mutation::AddPolicy,
    Mutation::RemovePolicy,
    Mutation::NamespaceLabel,
];

/// Applies one change of kind `m` (if the world has something to change that way).
pub fn mutate(r: &mut Rng, w: &World, m: Mutation) -> Option<World> {
    use crate::{PolicyPeer, PortRef};
    let mut w = w.clone();
    match m {
        Mutation::AddPod => {
            let i = 100 + w.endpoints.len();
            w.endpoints.push(random_pod(r, i));
        }
        Mutation::RemovePod => {
            if w.endpoints.is_empty() {
                return None;
            }
            let i = r.below(w.endpoints.len());
            w.endpoints.remove(i);
        }
        Mutation::Relabel => {
            if w.endpoints.is_empty() {
                return None;
            }
            let i = r.below(w.endpoints.len());
            w.endpoints[i].labels = random_labels(r);
        }
        Mutation::EditPort => {
            let mut spots = Vec::new();
            for (pi, p) in w.policies.iter().enumerate() {
                for (d, rules) in [(0, &p.spec.ingress), (1, &p.spec.egress)] {
                    for (ri, rule) in rules.iter().enumerate() {
                        for (xi, port) in rule.ports.iter().enumerate() {
                            if let Some(PortRef::Number(_)) = port.port {
                                spots.push((pi, d, ri, xi));
                            }
                        }
                    }
                }
            }
            if spots.is_empty() {
                return None;
            }
            let (pi, d, ri, xi) = *r.pick(&spots);
            let spec = &mut w.policies[pi].spec;
            let rules = if d == 0 {
                &mut spec.ingress
            } else {
                &mut spec.egress
            };
            let port = &mut rules[ri].ports[xi];
            let n = *r.pick(&[53u16, 80, 81, 85, 443, 8080, 9999]);
            port.port = Some(PortRef::Number(n));
            if port.end_port.is_some_and(|e| e < n) {
                port.end_port = Some(n);
            }
        }
        Mutation::EditCidr => {
            let mut spots = Vec::new();
            for (pi, p) in w.policies.iter().enumerate() {
                for (d, rules) in [(0, &p.spec.ingress), (1, &p.spec.egress)] {
                    for (ri, rule) in rules.iter().enumerate() {
                        for (xi, peer) in rule.peers.iter().enumerate() {
                            if let PolicyPeer::IpBlock(_) = peer {
                                spots.push((pi, d, ri, xi));
                            }
                        }
                    }
                }
            }
            if spots.is_empty() {
                return None;
            }
            let (pi, d, ri, xi) = *r.pick(&spots);
            let spec = &mut w.policies[pi].spec;
            let rules = if d == 0 {
                &mut spec.ingress
            } else {
                &mut spec.egress
            };
            if let PolicyPeer::IpBlock(b) = &mut rules[ri].peers[xi] {
                let cidr = *r.pick(&[
                    "10.0.0.0/15",
                    "10.0.1.0/26",
                    "203.0.112.0/23",
                    "0.0.0.0/1",
                    "fd00::/12",
                ]);
                b.cidr = cidr.parse().unwrap();
            }
        }
        Mutation::AddPolicy => {
            let name = format!("extra{}", w.policies.len());
            w.policies.extend(policies(&random_policy_yaml(r, &name)));
        }
        Mutation::RemovePolicy => {
            if w.policies.is_empty() {
                return None;
            }
            let i = r.below(w.policies.len());
            w.policies.remove(i);
        }
        Mutation::NamespaceLabel => {
            let i = r.below(w.namespaces.len());
            let team = if r.chance(50) { "a" } else { "b" };
            w.namespaces[i].labels.insert("team".into(), team.into());
        }
    }
    Some(w)
}
