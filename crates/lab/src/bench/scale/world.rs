//! The cluster `bench scale` loads, made from a seed and nothing else: the same flags give
//! the same world, object for object, on both datastores and on every run.
//!
//! Shape (what a real cluster of that size looks like to a node agent): every node but the
//! agent's is a synthetic peer (weft-backend's `synthetic_peers`: its /24 block, underlay
//! address, VTEP MAC); namespaces carry `team` and `env` labels; each namespace runs a few
//! apps whose pods carry `app`, `tier` and `version`; pods are spread at random over the
//! peers, and the agent's node hosts `local_pods` of them. Every namespace starts with a
//! default-deny ingress policy, so every local pod is isolated; the other policies select
//! pods by `app` (and `tier`), and allow peers by pod selector, by namespace selector
//! (labels and `matchExpressions`) and by both, on one or two ports, some of them egress.
//!
//! Pure data: no I/O, no kernel, no datastore. Writing it is `etcd.rs` and `kube.rs`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};
use serde_json::{Value, json};
use weft_backend::Peer;

/// The agent's node name.
pub const SELF_NODE: &str = "bench-self";
/// The agent's pod block: the lowest of the pool, which weftd claims itself (the peers hold
/// the blocks after it).
pub const SELF_BLOCK: &str = "10.0.0.0/24";
/// Apps a namespace runs, and the tier each belongs to.
const APPS: [(&str, &str); 12] = [
    ("web", "frontend"),
    ("api", "backend"),
    ("auth", "backend"),
    ("cart", "backend"),
    ("search", "backend"),
    ("orders", "backend"),
    ("billing", "backend"),
    ("catalog", "backend"),
    ("redis", "cache"),
    ("memcached", "cache"),
    ("postgres", "db"),
    ("mongo", "db"),
];
const APPS_PER_NAMESPACE: usize = 6;
const TEAMS: usize = 10;
const ENVS: [&str; 3] = ["prod", "staging", "dev"];
const PORTS: [u16; 12] = [
    80, 443, 8080, 8443, 5432, 6379, 3306, 9090, 9200, 27017, 11211, 5672,
];
/// Host offsets inside a block: pods from 2 up, the probe pods from here up.
pub const PROBE_HOST_BASE: u32 = 200;

/// What to build.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Nodes in the cluster, the agent's included.
    pub nodes: usize,
    pub pods: usize,
    pub policies: usize,
    pub namespaces: usize,
    /// Pods on the agent's node (part of `pods`).
    pub local_pods: usize,
    pub seed: u64,
}

#[derive(Debug, Clone)]
pub struct Namespace {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    /// None: the agent's node; else the index of the peer in [`World::peers`].
    pub peer: Option<usize>,
    pub labels: BTreeMap<String, String>,
    pub address: Ipv4Addr,
}

impl Pod {
    pub fn node_name<'a>(&self, world: &'a World) -> &'a str {
        match self.peer {
            None => SELF_NODE,
            Some(i) => &world.peers[i].name,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub namespace: String,
    pub name: String,
    /// The whole NetworkPolicy object (apiVersion, kind, metadata, spec).
    pub object: Value,
}

#[derive(Debug, Clone)]
pub struct World {
    pub peers: Vec<Peer>,
    pub namespaces: Vec<Namespace>,
    pub pods: Vec<Pod>,
    pub policies: Vec<Policy>,
}

impl World {
    pub fn local_pods(&self) -> impl Iterator<Item = &Pod> {
        self.pods.iter().filter(|p| p.peer.is_none())
    }
}

/// splitmix64: tiny, fast, and the same sequence everywhere for a seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant at these sizes).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// An address of a /24 block: the network plus `host`.
pub fn host_in(block: &IpNet, host: u32) -> Option<Ipv4Addr> {
    match block {
        IpNet::V4(n) if host < 255 => Some(Ipv4Addr::from(u32::from(n.network()) + host)),
        _ => None,
    }
}

/// The apps of namespace `k`: a window of [`APPS`], so app names repeat across namespaces
/// (as `web` or `redis` do in a real cluster) while each namespace has its own mix.
fn apps_of(k: usize) -> impl Iterator<Item = (&'static str, &'static str)> {
    (0..APPS_PER_NAMESPACE).map(move |j| APPS[(k * 5 + j) % APPS.len()])
}

/// Builds the world. `peers` are the synthetic nodes (`spec.nodes - 1` of them).
pub fn build(spec: &Spec, peers: Vec<Peer>) -> Result<World, String> {
    if peers.len() + 1 != spec.nodes {
        return Err(format!(
            "{} peers for {} nodes (the agent's node is the other one)",
            peers.len(),
            spec.nodes
        ));
    }
    if spec.namespaces == 0 || spec.local_pods > spec.pods {
        return Err("need at least one namespace, and no more local pods than pods".into());
    }
    let self_block: IpNet = SELF_BLOCK
        .parse::<Ipv4Net>()
        .map(IpNet::V4)
        .map_err(|e| e.to_string())?;
    let mut rng = Rng::new(spec.seed);
    let namespaces: Vec<Namespace> = (0..spec.namespaces)
        .map(|k| {
            let team = format!("team-{}", k % TEAMS);
            Namespace {
                name: format!("ns-{k}"),
                labels: labels(&[("team", &team), ("env", ENVS[k % ENVS.len()])]),
            }
        })
        .collect();

    // Hosts used so far per node (index 0 = the agent's, i + 1 = peer i).
    let mut next_host = vec![2u32; peers.len() + 1];
    let stride = spec
        .pods
        .checked_div(spec.local_pods)
        .map_or(usize::MAX, |s| s.max(1));
    let mut local = 0;
    let mut pods = Vec::with_capacity(spec.pods);
    for i in 0..spec.pods {
        let ns = rng.below(namespaces.len());
        let (app, tier) = apps_of(ns)
            .nth(rng.below(APPS_PER_NAMESPACE))
            .unwrap_or(APPS[0]);
        let version = if rng.below(4) == 0 { "v2" } else { "v1" };
        let on_peer = rng.below(peers.len().max(1));
        let peer = if (i % stride == 0 && local < spec.local_pods) || peers.is_empty() {
            local += 1;
            None
        } else {
            Some(on_peer)
        };
        let slot = peer.map_or(0, |p| p + 1);
        let block = peer.map_or(&self_block, |p| &peers[p].blocks[0]);
        let address = host_in(block, next_host[slot])
            .filter(|_| next_host[slot] < PROBE_HOST_BASE)
            .ok_or_else(|| {
                format!("node {slot} has no room for pod {i} (too many pods per node)")
            })?;
        next_host[slot] += 1;
        pods.push(Pod {
            namespace: namespaces[ns].name.clone(),
            name: format!("{app}-{i}"),
            peer,
            labels: labels(&[("app", app), ("tier", tier), ("version", version)]),
            address,
        });
    }

    let mut policies = Vec::with_capacity(spec.policies);
    for k in 0..spec.policies {
        let ns_index = k % namespaces.len();
        let ns = &namespaces[ns_index];
        let name;
        let spec_json = if k < namespaces.len() {
            name = "default-deny-ingress".to_owned();
            json!({"podSelector": {}, "policyTypes": ["Ingress"]})
        } else {
            name = format!("allow-{k}");
            policy_spec(&mut rng, ns_index, &namespaces)
        };
        policies.push(Policy {
            namespace: ns.name.clone(),
            name: name.clone(),
            object: json!({
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": name, "namespace": ns.name},
                "spec": spec_json,
            }),
        });
    }
    Ok(World {
        peers,
        namespaces,
        pods,
        policies,
    })
}

fn port(rng: &mut Rng) -> Value {
    json!({"protocol": "TCP", "port": PORTS[rng.below(PORTS.len())]})
}

/// One allow policy of namespace `k`: which of five shapes, which app it protects and which
/// peers it lets in (or out), drawn from `rng`.
fn policy_spec(rng: &mut Rng, k: usize, namespaces: &[Namespace]) -> Value {
    let apps: Vec<(&str, &str)> = apps_of(k).collect();
    let (app, tier) = apps[rng.below(apps.len())];
    let (peer_app, _) = apps[rng.below(apps.len())];
    let other = rng.below(namespaces.len());
    let (other_app, other_tier) = apps_of(other)
        .nth(rng.below(APPS_PER_NAMESPACE))
        .unwrap_or(APPS[0]);
    let team = namespaces[other]
        .labels
        .get("team")
        .cloned()
        .unwrap_or_default();
    let ports = if rng.below(2) == 0 {
        vec![port(rng)]
    } else {
        vec![port(rng), port(rng)]
    };
    match rng.below(5) {
        // Same namespace, by app.
        0 => json!({
            "podSelector": {"matchLabels": {"app": app}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": peer_app}}}], "ports": ports}],
        }),
        // Another team's app, by namespace and pod selector together.
        1 => json!({
            "podSelector": {"matchLabels": {"app": app, "tier": tier}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{
                "namespaceSelector": {"matchLabels": {"team": team}},
                "podSelector": {"matchLabels": {"app": other_app}},
            }], "ports": ports}],
        }),
        // Whole environments, by matchExpressions on the namespace.
        2 => json!({
            "podSelector": {"matchLabels": {"tier": tier}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "staging"]}]}}], "ports": ports}],
        }),
        // Two rules: same-namespace frontends, and one version of another namespace's tier.
        3 => json!({
            "podSelector": {"matchLabels": {"app": app}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"tier": "frontend"}}}], "ports": ports},
                {"from": [{
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespaces[other].name}},
                    "podSelector": {"matchExpressions": [
                        {"key": "tier", "operator": "In", "values": [other_tier]},
                        {"key": "version", "operator": "NotIn", "values": ["v2"]}]},
                }]},
            ],
        }),
        // Egress: to an app here and to a team's backends, plus DNS.
        _ => json!({
            "podSelector": {"matchLabels": {"app": app}},
            "policyTypes": ["Egress"],
            "egress": [
                {"to": [{"podSelector": {"matchLabels": {"app": peer_app}}}], "ports": ports},
                {"to": [{
                    "namespaceSelector": {"matchLabels": {"team": team}},
                    "podSelector": {"matchLabels": {"tier": "backend"}},
                }], "ports": [{"protocol": "TCP", "port": 443}]},
                {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
            ],
        }),
    }
}

/// Probe `k` of the pod measurement: a new pod with `template`'s namespace and labels on a
/// peer, at a host offset no world pod uses.
pub fn probe_pod(world: &World, template: &Pod, k: usize) -> Option<Pod> {
    let n = world.peers.len();
    if n == 0 {
        return None;
    }
    // Spread over the peers (a stride coprime with most sizes), never reusing an address.
    let peer = (k * 37 + 1) % n;
    let host = PROBE_HOST_BASE + u32::try_from(k / n).ok()?;
    let address = host_in(&world.peers[peer].blocks[0], host)?;
    Some(Pod {
        namespace: template.namespace.clone(),
        name: format!("probe-pod-{k}"),
        peer: Some(peer),
        labels: template.labels.clone(),
        address,
    })
}

/// Probe `k` of the policy measurement: a policy in `target`'s namespace selecting pods with
/// all of `target`'s labels (so its class changes), letting its app in on a port of its own.
pub fn probe_policy(target: &Pod, k: usize) -> Policy {
    let name = format!("probe-policy-{k}");
    let port = 20000 + (k % 40000) as u32;
    Policy {
        namespace: target.namespace.clone(),
        name: name.clone(),
        object: json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": target.namespace},
            "spec": {
                "podSelector": {"matchLabels": target.labels},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": target.labels.get("app")}}}],
                             "ports": [{"protocol": "TCP", "port": port}]}],
            },
        }),
    }
}

/// The PodLabels object weft keeps in etcd for a pod.
pub fn pod_labels_object(p: &Pod) -> Value {
    json!({"apiVersion": "weft.dev/v1", "kind": "PodLabels",
        "metadata": {"name": p.name, "namespace": p.namespace, "labels": p.labels}})
}

/// A Namespace object.
pub fn namespace_object(n: &Namespace) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": n.name, "labels": n.labels}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_backend::synthetic_peers;

    fn peers(n: usize) -> Vec<Peer> {
        synthetic_peers(
            n,
            "192.168.0.0/16".parse().unwrap(),
            None,
            "10.0.0.0/8".parse().unwrap(),
            None,
        )
        .unwrap()
    }

    fn spec() -> Spec {
        Spec {
            nodes: 20,
            pods: 300,
            policies: 40,
            namespaces: 5,
            local_pods: 10,
            seed: 7,
        }
    }

    #[test]
    fn same_seed_same_world() {
        let a = build(&spec(), peers(19)).unwrap();
        let b = build(&spec(), peers(19)).unwrap();
        assert_eq!(a.pods.len(), 300);
        assert_eq!(a.policies.len(), 40);
        for (x, y) in a.pods.iter().zip(&b.pods) {
            assert_eq!(
                (&x.name, &x.labels, x.address, x.peer),
                (&y.name, &y.labels, y.address, y.peer)
            );
        }
        for (x, y) in a.policies.iter().zip(&b.policies) {
            assert_eq!(x.object, y.object);
        }
        let c = build(&Spec { seed: 8, ..spec() }, peers(19)).unwrap();
        assert!(
            a.pods
                .iter()
                .zip(&c.pods)
                .any(|(x, y)| x.labels != y.labels)
        );
    }

    #[test]
    fn addresses_are_unique_and_inside_their_node_block() {
        let w = build(&spec(), peers(19)).unwrap();
        let mut seen = std::collections::HashSet::new();
        for p in &w.pods {
            assert!(seen.insert(p.address), "{} twice", p.address);
            let block: IpNet = match p.peer {
                None => SELF_BLOCK.parse().unwrap(),
                Some(i) => w.peers[i].blocks[0],
            };
            assert!(block.contains(&std::net::IpAddr::V4(p.address)));
        }
        assert_eq!(w.local_pods().count(), 10);
        let probe = probe_pod(&w, &w.pods[1], 3).unwrap();
        assert!(!seen.contains(&probe.address));
    }

    #[test]
    fn every_namespace_denies_ingress_and_policies_parse() {
        let w = build(&spec(), peers(19)).unwrap();
        for n in &w.namespaces {
            assert!(
                w.policies
                    .iter()
                    .any(|p| p.namespace == n.name && p.name == "default-deny-ingress")
            );
        }
        let objects: Vec<Value> = w
            .policies
            .iter()
            .map(|p| p.object.clone())
            .chain(std::iter::once(probe_policy(&w.pods[0], 1).object))
            .collect();
        for o in objects {
            let text = o.to_string();
            weft_policy::parse(&text, &weft_policy::ParseOptions::default())
                .unwrap_or_else(|e| panic!("{e}: {text}"));
        }
    }
}
