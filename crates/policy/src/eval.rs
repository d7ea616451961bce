//! The reference evaluator: whether a new connection is allowed, and why, straight from the
//! v1 semantics (the reading is in the crate docs, section "Semantics"). `weftctl policy
//! explain` prints its [`Verdict`]; the compiled plans are tested against it.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::model::{
    Direction, Endpoint, NetworkPolicy, PolicyPeer, PolicyRef, PortRef, Protocol, Rule, RuleRef,
    World,
};

/// One end of a connection, as a person names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A pod by namespace and name (its address of the connection's family is used).
    Pod { namespace: String, name: String },
    /// A node itself (host network), by name.
    Node(String),
    /// Any address: a pod's, a node's, or one outside the cluster.
    Ip(IpAddr),
}

impl FromStr for Peer {
    type Err = String;

    /// `10.0.0.5` / `fd00::5` → an address; `node/NAME` → a node; `NS/NAME` → a pod; `NAME`
    /// → the pod NAME in namespace `default`.
    fn from_str(s: &str) -> Result<Peer, String> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Peer::Ip(ip));
        }
        match s.split_once('/') {
            Some(("node", name)) if !name.is_empty() => Ok(Peer::Node(name.to_string())),
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Peer::Pod {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                })
            }
            None if !s.is_empty() => Ok(Peer::Pod {
                namespace: "default".into(),
                name: s.to_string(),
            }),
            _ => Err(format!(
                "{s:?} is not an address, node/NAME, NAMESPACE/POD or POD"
            )),
        }
    }
}

/// What an address turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Party {
    Pod {
        namespace: String,
        name: String,
        node: String,
    },
    Node(String),
    /// Inside `node`'s pod ranges, but no known pod has it.
    Unprogrammed {
        node: String,
    },
    External,
}

/// An end of the connection: its address and what owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub addr: IpAddr,
    pub party: Party,
}

impl fmt::Display for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.party {
            Party::Pod {
                namespace,
                name,
                node,
            } => write!(f, "{} (pod {namespace}/{name} on {node})", self.addr),
            Party::Node(n) => write!(f, "{} (node {n})", self.addr),
            Party::Unprogrammed { node } => {
                write!(f, "{} (unprogrammed pod address on {node})", self.addr)
            }
            Party::External => write!(f, "{} (outside the cluster)", self.addr),
        }
    }
}

/// The judgement of one direction (the source's egress, or the destination's ingress).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Side {
    /// That end is not a pod: no policy of this direction can apply.
    NotAPod,
    /// A pod no policy isolates in this direction.
    NotIsolated,
    /// A pod talking to itself.
    SelfTraffic,
    /// Ingress from the destination pod's own node.
    FromOwnNode,
    /// An address in a pod range that no known pod has: default-deny.
    Unprogrammed,
    /// Isolated, and these rules allow it (all of them, in policy order).
    Allowed {
        isolated_by: Vec<PolicyRef>,
        rules: Vec<RuleRef>,
    },
    /// Isolated by these policies, and no rule of theirs matches.
    Denied { isolated_by: Vec<PolicyRef> },
}

impl Side {
    pub fn allows(&self) -> bool {
        !matches!(self, Side::Unprogrammed | Side::Denied { .. })
    }
}

/// The evaluator's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub src: Resolved,
    pub dst: Resolved,
    pub protocol: Protocol,
    pub port: u16,
    pub egress: Side,
    pub ingress: Side,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} {}/{} from {} to {}",
            if self.allowed { "ALLOWED" } else { "DENIED" },
            self.protocol.as_str().to_lowercase(),
            self.port,
            self.src,
            self.dst
        )?;
        write_side(f, "egress ", &self.egress, Direction::Egress)?;
        writeln!(f)?;
        write_side(f, "ingress", &self.ingress, Direction::Ingress)
    }
}

fn write_side(f: &mut fmt::Formatter<'_>, label: &str, side: &Side, dir: Direction) -> fmt::Result {
    let d = dir.as_str().to_lowercase();
    let list = |v: &[PolicyRef]| {
        v.iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match side {
        Side::NotAPod => write!(f, "  {label}: not a pod, no {d} policy applies"),
        Side::NotIsolated => write!(f, "  {label}: allowed, no policy selects the pod for {d}"),
        Side::SelfTraffic => write!(f, "  {label}: allowed, a pod can always reach itself"),
        Side::FromOwnNode => write!(
            f,
            "  {label}: allowed, traffic from the pod's own node is always allowed"
        ),
        Side::Unprogrammed => write!(
            f,
            "  {label}: denied, pod address not programmed yet (default-deny)"
        ),
        Side::Allowed { isolated_by, rules } => {
            let r: Vec<String> = rules.iter().map(|r| r.to_string()).collect();
            write!(
                f,
                "  {label}: allowed by {} (isolated by {})",
                r.join(", "),
                list(isolated_by)
            )
        }
        Side::Denied { isolated_by } => write!(
            f,
            "  {label}: denied, isolated by {} and no {d} rule matches",
            list(isolated_by)
        ),
    }
}

/// Why a connection could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("no pod {namespace}/{name}")]
    UnknownPod { namespace: String, name: String },
    #[error("no node {0}")]
    UnknownNode(String),
    #[error("{0} has no address of the connection's family")]
    NoAddress(String),
    #[error("{src} and {dst} share no address family")]
    NoCommonFamily { src: String, dst: String },
}

/// Judges a new connection from `src` to `dst` on `protocol`/`port` (the destination port).
pub fn evaluate(
    world: &World,
    src: &Peer,
    dst: &Peer,
    port: u16,
    protocol: Protocol,
) -> Result<Verdict, EvalError> {
    let src_addrs = addresses(world, src)?;
    let dst_addrs = addresses(world, dst)?;
    let v4 = match (src, dst) {
        (Peer::Ip(a), _) => a.is_ipv4(),
        (_, Peer::Ip(b)) => b.is_ipv4(),
        _ => {
            let has = |v: &[IpAddr], four: bool| v.iter().any(|a| a.is_ipv4() == four);
            if has(&src_addrs, true) && has(&dst_addrs, true) {
                true
            } else if has(&src_addrs, false) && has(&dst_addrs, false) {
                false
            } else {
                return Err(EvalError::NoCommonFamily {
                    src: describe(src),
                    dst: describe(dst),
                });
            }
        }
    };
    let pick = |addrs: &[IpAddr], p: &Peer| {
        addrs
            .iter()
            .copied()
            .find(|a| a.is_ipv4() == v4)
            .ok_or_else(|| EvalError::NoAddress(describe(p)))
    };
    let dst_party = party(world, dst, None);
    let src = Resolved {
        addr: pick(&src_addrs, src)?,
        party: party(world, src, Some(&dst_party)),
    };
    let dst = Resolved {
        addr: pick(&dst_addrs, dst)?,
        party: dst_party,
    };
    Ok(judge(world, src, dst, port, protocol))
}

/// The same judgement for a connection given by addresses (what a packet carries): each
/// address is resolved to a pod, a node, an unprogrammed pod address or an external host.
pub fn evaluate_addrs(
    world: &World,
    src: IpAddr,
    dst: IpAddr,
    port: u16,
    protocol: Protocol,
) -> Verdict {
    let dst = Resolved {
        addr: dst,
        party: classify(world, dst),
    };
    let src = Resolved {
        addr: src,
        party: classify_source(world, src, &dst.party),
    };
    judge(world, src, dst, port, protocol)
}

fn describe(p: &Peer) -> String {
    match p {
        Peer::Pod { namespace, name } => format!("pod {namespace}/{name}"),
        Peer::Node(n) => format!("node {n}"),
        Peer::Ip(a) => a.to_string(),
    }
}

fn addresses(world: &World, p: &Peer) -> Result<Vec<IpAddr>, EvalError> {
    match p {
        Peer::Pod { namespace, name } => world
            .endpoint(namespace, name)
            .map(|e| e.addresses.clone())
            .ok_or_else(|| EvalError::UnknownPod {
                namespace: namespace.clone(),
                name: name.clone(),
            }),
        Peer::Node(n) => world
            .node(n)
            .map(|n| n.addresses.clone())
            .ok_or_else(|| EvalError::UnknownNode(n.clone())),
        Peer::Ip(a) => Ok(vec![*a]),
    }
}

/// What `p` is; for a source given by address, `dst` is the destination's party (see
/// [`classify_source`]).
fn party(world: &World, p: &Peer, dst: Option<&Party>) -> Party {
    match p {
        Peer::Pod { namespace, name } => {
            let node = world
                .endpoint(namespace, name)
                .map(|e| e.node.clone())
                .unwrap_or_default();
            Party::Pod {
                namespace: namespace.clone(),
                name: name.clone(),
                node,
            }
        }
        Peer::Node(n) => Party::Node(n.clone()),
        Peer::Ip(a) => match dst {
            Some(d) => classify_source(world, *a, d),
            None => classify(world, *a),
        },
    }
}

/// A source address as [`classify`] reads it, except that an address the destination's node
/// holds is that node even when other nodes hold it too: in ptp mode every node talks to its
/// pods from the same link-local gateway (169.254.1.1), which is never routed, so a packet
/// from it to a pod comes from the pod's own node, not from the first node listing it.
fn classify_source(world: &World, addr: IpAddr, dst: &Party) -> Party {
    if let Party::Pod { node, .. } | Party::Unprogrammed { node } = dst
        && !world.endpoints.iter().any(|e| e.addresses.contains(&addr))
        && world
            .node(node)
            .is_some_and(|n| n.addresses.contains(&addr))
    {
        return Party::Node(node.clone());
    }
    classify(world, addr)
}

/// Pods first, then nodes (a node's gateway address lies inside its pod range), then pod
/// ranges, then the outside world.
pub(crate) fn classify(world: &World, addr: IpAddr) -> Party {
    if let Some(e) = world.endpoints.iter().find(|e| e.addresses.contains(&addr)) {
        return Party::Pod {
            namespace: e.namespace.clone(),
            name: e.name.clone(),
            node: e.node.clone(),
        };
    }
    if let Some(n) = world.nodes.iter().find(|n| n.addresses.contains(&addr)) {
        return Party::Node(n.name.clone());
    }
    if let Some(n) = world
        .nodes
        .iter()
        .find(|n| n.pod_cidrs.iter().any(|c| c.contains(&addr)))
    {
        return Party::Unprogrammed {
            node: n.name.clone(),
        };
    }
    Party::External
}

fn endpoint_of<'w>(world: &'w World, party: &Party) -> Option<&'w Endpoint> {
    match party {
        Party::Pod {
            namespace, name, ..
        } => world.endpoint(namespace, name),
        _ => None,
    }
}

fn judge(world: &World, src: Resolved, dst: Resolved, port: u16, protocol: Protocol) -> Verdict {
    let src_pod = endpoint_of(world, &src.party);
    let dst_pod = endpoint_of(world, &dst.party);
    let same_pod = matches!((src_pod, dst_pod), (Some(a), Some(b)) if a.namespace == b.namespace && a.name == b.name);
    let (egress, ingress) = if same_pod {
        (Side::SelfTraffic, Side::SelfTraffic)
    } else {
        let egress = match (&src.party, src_pod) {
            (Party::Unprogrammed { .. }, _) => Side::Unprogrammed,
            (_, Some(pod)) => {
                direction(world, pod, Direction::Egress, &dst, dst_pod, port, protocol)
            }
            _ => Side::NotAPod,
        };
        let dst_node = match &dst.party {
            Party::Pod { node, .. } | Party::Unprogrammed { node } => Some(node),
            _ => None,
        };
        let ingress = match (&src.party, dst_node) {
            (Party::Node(n), Some(dn)) if n == dn => Side::FromOwnNode,
            _ => match (&dst.party, dst_pod) {
                (Party::Unprogrammed { .. }, _) => Side::Unprogrammed,
                (_, Some(pod)) => direction(
                    world,
                    pod,
                    Direction::Ingress,
                    &src,
                    Some(pod),
                    port,
                    protocol,
                ),
                _ => Side::NotAPod,
            },
        };
        (egress, ingress)
    };
    Verdict {
        allowed: egress.allows() && ingress.allows(),
        src,
        dst,
        protocol,
        port,
        egress,
        ingress,
    }
}

/// `pod`'s judgement in `dir` against the other end `remote`; `named_on` is the pod named
/// ports resolve on (the destination).
fn direction(
    world: &World,
    pod: &Endpoint,
    dir: Direction,
    remote: &Resolved,
    named_on: Option<&Endpoint>,
    port: u16,
    protocol: Protocol,
) -> Side {
    let policies: Vec<&NetworkPolicy> = world
        .policies
        .iter()
        .filter(|p| p.applies(dir) && p.selects(pod))
        .collect();
    if policies.is_empty() {
        return Side::NotIsolated;
    }
    let mut rules = Vec::new();
    for p in &policies {
        for (i, rule) in p.rules(dir).iter().enumerate() {
            if rule_matches(world, p, rule, remote, named_on, port, protocol) {
                rules.push(RuleRef {
                    policy: p.reference(),
                    direction: dir,
                    index: i,
                });
            }
        }
    }
    let isolated_by = policies.iter().map(|p| p.reference()).collect();
    if rules.is_empty() {
        Side::Denied { isolated_by }
    } else {
        Side::Allowed { isolated_by, rules }
    }
}

pub(crate) fn rule_matches(
    world: &World,
    policy: &NetworkPolicy,
    rule: &Rule,
    remote: &Resolved,
    named_on: Option<&Endpoint>,
    port: u16,
    protocol: Protocol,
) -> bool {
    let remote_pod = endpoint_of(world, &remote.party);
    let peer_ok = rule.peers.is_empty()
        || rule
            .peers
            .iter()
            .any(|peer| peer_matches(world, policy, peer, remote.addr, remote_pod));
    let port_ok = rule.ports.is_empty()
        || rule.ports.iter().any(|p| {
            p.protocol == protocol
                && match &p.port {
                    None => true,
                    Some(PortRef::Number(n)) => (*n..=p.end_port.unwrap_or(*n)).contains(&port),
                    Some(PortRef::Name(name)) => {
                        named_on.and_then(|d| d.named_port(name, protocol)) == Some(port)
                    }
                }
        });
    peer_ok && port_ok
}

/// Whether `peer` (of `policy`) matches the address `addr`, owned by `pod` if a pod.
pub(crate) fn peer_matches(
    world: &World,
    policy: &NetworkPolicy,
    peer: &PolicyPeer,
    addr: IpAddr,
    pod: Option<&Endpoint>,
) -> bool {
    match peer {
        PolicyPeer::IpBlock(b) => b.contains(addr),
        PolicyPeer::Pods {
            pod_selector,
            namespace_selector,
        } => {
            let Some(pod) = pod else {
                return false;
            };
            let ns_ok = match namespace_selector {
                None => pod.namespace == policy.namespace,
                Some(s) => s.matches(&world.namespace_labels(&pod.namespace)),
            };
            ns_ok && pod_selector.as_ref().is_none_or(|s| s.matches(&pod.labels))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LabelSelector, Labels, Namespace, Node, PolicySpec};

    /// Two ptp nodes share the link-local gateway; a deny-all isolates the pod on the second.
    fn ptp_world() -> World {
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let node = |name: &str, underlay: &str, cidr: &str| Node {
            name: name.into(),
            addresses: vec![ip(underlay), ip("169.254.1.1")],
            pod_cidrs: vec![cidr.parse().unwrap()],
        };
        World {
            namespaces: vec![Namespace {
                name: "shop".into(),
                labels: Labels::new(),
            }],
            nodes: vec![
                node("n1", "192.168.100.11", "10.244.0.0/26"),
                node("n2", "192.168.100.12", "10.244.0.64/26"),
            ],
            endpoints: vec![Endpoint {
                namespace: "shop".into(),
                name: "db".into(),
                labels: Labels::new(),
                node: "n2".into(),
                addresses: vec![ip("10.244.0.66")],
                ports: Default::default(),
            }],
            policies: vec![NetworkPolicy {
                namespace: "shop".into(),
                name: "deny".into(),
                labels: Labels::new(),
                spec: PolicySpec {
                    pod_selector: LabelSelector::everything(),
                    policy_types: vec![Direction::Ingress],
                    ingress: vec![],
                    egress: vec![],
                },
            }],
        }
    }

    #[test]
    fn a_gateway_every_node_shares_is_the_destination_pods_own_node() {
        let w = ptp_world();
        let gw: IpAddr = "169.254.1.1".parse().unwrap();
        let db: IpAddr = "10.244.0.66".parse().unwrap();
        let v = evaluate_addrs(&w, gw, db, 81, Protocol::Tcp);
        assert_eq!(v.src.party, Party::Node("n2".into()), "{v}");
        assert_eq!(v.ingress, Side::FromOwnNode, "{v}");
        assert!(v.allowed, "{v}");
        let by_peer = evaluate(
            &w,
            &Peer::Ip(gw),
            &Peer::Pod {
                namespace: "shop".into(),
                name: "db".into(),
            },
            81,
            Protocol::Tcp,
        )
        .unwrap();
        assert!(by_peer.allowed, "{by_peer}");
        // An address only another node holds is still that node, and isolated out.
        let other = evaluate_addrs(&w, "192.168.100.11".parse().unwrap(), db, 81, Protocol::Tcp);
        assert_eq!(other.src.party, Party::Node("n1".into()), "{other}");
        assert!(!other.allowed, "{other}");
    }
}
