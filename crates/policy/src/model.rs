//! The objects: Kubernetes `networking.k8s.io/v1` NetworkPolicy and its parts, namespaces,
//! weft's pod label records, the endpoints (pods as the network sees them), nodes, and the
//! `World` that holds them all for the evaluator and the compiler.
//!
//! Values here are already decoded and validated (see `manifest`); a policy built by hand can
//! be checked with [`NetworkPolicy::validate`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Label key → value.
pub type Labels = BTreeMap<String, String>;

/// The label the Kubernetes control plane puts on every namespace (value: the namespace's
/// name). Weft adds it too, whether or not a `Namespace` object was applied, so policies
/// written for Kubernetes (`namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: x}}`)
/// behave the same.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A layer-4 protocol NetworkPolicy can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Protocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

    /// The IP protocol number (what `meta l4proto` sees).
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    /// The API spelling: `TCP`, `UDP`, `SCTP`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }

    /// Parses the API spelling (case-sensitive, like the API server) or, for people typing
    /// `weftctl policy explain … 80/tcp`, the lowercase one.
    pub fn parse(s: &str) -> Option<Protocol> {
        match s {
            "TCP" | "tcp" => Some(Protocol::Tcp),
            "UDP" | "udp" => Some(Protocol::Udp),
            "SCTP" | "sctp" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Ingress or egress: a policy type, and the direction of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "Ingress",
            Direction::Egress => "Egress",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `matchExpressions[].operator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl Operator {
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::In => "In",
            Operator::NotIn => "NotIn",
            Operator::Exists => "Exists",
            Operator::DoesNotExist => "DoesNotExist",
        }
    }
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    pub values: Vec<String>,
}

impl Requirement {
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            // Kubernetes: NotIn also matches objects that lack the key.
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

/// A `metav1.LabelSelector`. The empty selector matches everything; an absent one (an
/// `Option` that is `None` where the API allows omission) matches nothing by itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LabelSelector {
    pub match_labels: Labels,
    pub match_expressions: Vec<Requirement>,
}

impl LabelSelector {
    /// The selector that matches everything (`{}`).
    pub fn everything() -> LabelSelector {
        LabelSelector::default()
    }

    /// `matchLabels` only.
    pub fn labels<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> LabelSelector {
        LabelSelector {
            match_labels: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            match_expressions: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// All of `matchLabels` and all of `matchExpressions` hold (the requirements are ANDed).
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }
}

/// `ipBlock`: a CIDR minus exceptions. Stored with host bits cleared, as the API server
/// interprets it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IpBlock {
    pub cidr: IpNet,
    pub except: Vec<IpNet>,
}

impl IpBlock {
    pub fn contains(&self, addr: IpAddr) -> bool {
        self.cidr.contains(&addr) && !self.except.iter().any(|e| e.contains(&addr))
    }
}

/// One `from`/`to` entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PolicyPeer {
    /// `podSelector` and/or `namespaceSelector` (at least one is `Some`):
    /// pod selector alone = pods of the policy's namespace; namespace selector alone = every
    /// pod of the matching namespaces; both = matching pods in matching namespaces.
    Pods {
        pod_selector: Option<LabelSelector>,
        namespace_selector: Option<LabelSelector>,
    },
    IpBlock(IpBlock),
}

/// `ports[].port`: a number or the name of a container port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

/// One `ports` entry. `port: None` = every port of `protocol`; `end_port` makes
/// `port..=end_port` a range (numeric ports only).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PolicyPort {
    pub protocol: Protocol,
    pub port: Option<PortRef>,
    pub end_port: Option<u16>,
}

impl PolicyPort {
    pub fn tcp(port: u16) -> PolicyPort {
        PolicyPort {
            protocol: Protocol::Tcp,
            port: Some(PortRef::Number(port)),
            end_port: None,
        }
    }
}

/// One ingress or egress rule: `peers` is `from` (ingress) or `to` (egress). An empty list
/// means "all peers" / "all ports".
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Rule {
    pub peers: Vec<PolicyPeer>,
    pub ports: Vec<PolicyPort>,
}

/// `spec` of a NetworkPolicy. `policy_types` is kept as written; [`NetworkPolicy::applies`]
/// gives the effective types (the API default when it is empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PolicySpec {
    pub pod_selector: LabelSelector,
    pub policy_types: Vec<Direction>,
    pub ingress: Vec<Rule>,
    pub egress: Vec<Rule>,
}

/// A NetworkPolicy (`networking.k8s.io/v1`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NetworkPolicy {
    pub namespace: String,
    pub name: String,
    /// `metadata.labels` (validated, no effect on enforcement).
    pub labels: Labels,
    pub spec: PolicySpec,
}

impl NetworkPolicy {
    /// Whether this policy applies to its selected pods in `dir` (its effective policyTypes:
    /// as written, or by default Ingress always and Egress when there are egress rules).
    pub fn applies(&self, dir: Direction) -> bool {
        if self.spec.policy_types.is_empty() {
            match dir {
                Direction::Ingress => true,
                Direction::Egress => !self.spec.egress.is_empty(),
            }
        } else {
            self.spec.policy_types.contains(&dir)
        }
    }

    /// The rules of one direction.
    pub fn rules(&self, dir: Direction) -> &[Rule] {
        match dir {
            Direction::Ingress => &self.spec.ingress,
            Direction::Egress => &self.spec.egress,
        }
    }

    /// Whether the policy selects this pod (same namespace and `podSelector` matches).
    pub fn selects(&self, pod: &Endpoint) -> bool {
        pod.namespace == self.namespace && self.spec.pod_selector.matches(&pod.labels)
    }

    pub fn reference(&self) -> PolicyRef {
        PolicyRef {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    /// Semantic validation of a policy built in code (names, labels, selectors, ports,
    /// ipBlocks), with the API server's paths and messages. Manifests are validated while
    /// they are parsed; this is the same check.
    pub fn validate(&self) -> Vec<crate::FieldError> {
        crate::validate::policy(self)
    }
}

/// `namespace/name` of a policy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PolicyRef {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A rule of a policy: `ns/name ingress[i]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RuleRef {
    pub policy: PolicyRef,
    pub direction: Direction,
    pub index: usize,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = match self.direction {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        };
        write!(f, "{} {}[{}]", self.policy, d, self.index)
    }
}

/// A Namespace: its name and labels (the `kubernetes.io/metadata.name` label is implied).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Namespace {
    pub name: String,
    pub labels: Labels,
}

/// A named container port: what a policy's `port: <name>` resolves to on a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NamedPort {
    pub protocol: Protocol,
    pub port: u16,
}

/// Weft's `PodLabels` record (`apiVersion: weft.dev/v1`): the namespace, name, labels and
/// named ports of a pod, for clusters without a Kubernetes API. The network identity
/// (node, addresses) comes from the CNI ADD; the agent joins the two into an [`Endpoint`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PodLabels {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    /// Port name → protocol and number (names are unique within a pod).
    pub ports: BTreeMap<String, NamedPort>,
}

/// A pod as the network sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    /// The node the pod runs on (its `Node::name`).
    pub node: String,
    /// The pod's addresses (at most one per family in practice).
    pub addresses: Vec<IpAddr>,
    /// Named container ports.
    pub ports: BTreeMap<String, NamedPort>,
}

impl Endpoint {
    /// The port a policy's named port resolves to on this pod, if it has one by that name
    /// with that protocol.
    pub fn named_port(&self, name: &str, protocol: Protocol) -> Option<u16> {
        self.ports
            .get(name)
            .filter(|p| p.protocol == protocol)
            .map(|p| p.port)
    }
}

/// A node: its own addresses (underlay, bridge gateway, …) and the pod ranges it hands out.
/// An address inside `pod_cidrs` that is no pod's and no node's is an unprogrammed pod:
/// default-deny until the agent knows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub addresses: Vec<IpAddr>,
    pub pod_cidrs: Vec<IpNet>,
}

/// Everything the evaluator and the compiler look at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct World {
    pub namespaces: Vec<Namespace>,
    pub nodes: Vec<Node>,
    pub endpoints: Vec<Endpoint>,
    pub policies: Vec<NetworkPolicy>,
}

impl World {
    /// The labels a namespace selector sees for `namespace`: its object's labels plus the
    /// automatic `kubernetes.io/metadata.name` (also for a namespace no object describes).
    pub fn namespace_labels(&self, namespace: &str) -> Labels {
        let mut labels = self
            .namespaces
            .iter()
            .find(|n| n.name == namespace)
            .map(|n| n.labels.clone())
            .unwrap_or_default();
        labels.insert(NAMESPACE_NAME_LABEL.to_string(), namespace.to_string());
        labels
    }

    pub fn endpoint(&self, namespace: &str, name: &str) -> Option<&Endpoint> {
        self.endpoints
            .iter()
            .find(|e| e.namespace == namespace && e.name == name)
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }
}
