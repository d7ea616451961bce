//! The expected matrix, computed from the Kubernetes `networking.k8s.io/v1` NetworkPolicy
//! API as its reference documentation states it, straight from the manifests as JSON values.
//! Deliberately shares nothing with `weft_policy` (not its model, parser, evaluator or plan):
//! the truth table is there to check those.
//!
//! The reading, rule by rule (k8s.io/docs/concepts/services-networking/network-policies):
//! - a pod is isolated for ingress (egress) when a policy of its own namespace selects it and
//!   lists Ingress (Egress) in `policyTypes`; with no `policyTypes`, Ingress always and
//!   Egress when `egress` has at least one rule;
//! - an isolated pod accepts (sends) only what a rule of one of those policies allows, the
//!   union of them all; a connection needs the sender's egress and the receiver's ingress;
//! - a rule allows when a peer matches the other end (no `from`/`to`, or an empty one: any)
//!   and a port matches (no `ports`, or an empty list: any port of any protocol);
//! - peers: `podSelector` alone = pods of the policy's namespace; `namespaceSelector` alone
//!   = all pods of matching namespaces (a namespace always carries
//!   `kubernetes.io/metadata.name`); both = pods matching both; `ipBlock` = addresses in
//!   `cidr` and in no `except`, whoever has them;
//! - ports: protocol defaults to TCP; no `port` = every port of the protocol; `endPort`
//!   makes an inclusive range; a named port is looked up on the destination pod (by name
//!   and protocol) — a destination that is no pod has none;
//! - a pod always reaches itself, and its own node always reaches it (kubelet probes);
//! - replies of an allowed connection are allowed (that is what the probes' echo checks).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
    /// Echo requests (port 0). Not in the API; weft's reading (crate docs of weft-policy):
    /// a protocol without ports is allowed to and from an isolated pod only by rules
    /// without `ports`.
    Icmp,
}

impl Proto {
    pub fn lower(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Sctp => "sctp",
            Proto::Icmp => "icmp",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Pod {
    pub name: String,
    pub namespace: String,
    pub node: String,
    pub labels: Labels,
    pub addrs: Vec<IpAddr>,
    /// Named container ports: (name, protocol, number).
    pub ports: Vec<(String, Proto, u16)>,
}

impl Pod {
    pub fn addr(&self, v6: bool) -> Option<IpAddr> {
        self.addrs.iter().copied().find(|a| a.is_ipv6() == v6)
    }
}

/// What the oracle knows of the cluster.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    /// Namespace → its labels as written (the automatic name label is added on lookup).
    pub namespaces: BTreeMap<String, Labels>,
    pub pods: Vec<Pod>,
}

impl Cluster {
    fn namespace_labels(&self, ns: &str) -> Labels {
        let mut l = self.namespaces.get(ns).cloned().unwrap_or_default();
        l.insert("kubernetes.io/metadata.name".into(), ns.into());
        l
    }
}

/// One end of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum End {
    /// Index into `Cluster::pods`.
    Pod(usize),
    /// A node's own network namespace (host network), by index: `n{k+1}`.
    Node(usize),
    /// A host outside the cluster.
    Out,
}

/// One new connection to judge.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Flow {
    pub src: End,
    pub dst: End,
    pub src_addr: IpAddr,
    pub dst_addr: IpAddr,
    pub proto: Proto,
    pub port: u16,
}

/// Splits a scenario's documents: `Namespace` and `weft.dev/v1 PodLabels` objects change
/// the cluster (a namespace's labels; a pod's labels and named ports), `NetworkPolicy`
/// objects are returned.
pub fn take_objects(cluster: &mut Cluster, docs: &[Value]) -> Vec<Value> {
    let mut policies = Vec::new();
    for d in docs {
        let meta = &d["metadata"];
        let labels = || -> Labels {
            meta["labels"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        };
        match d["kind"].as_str() {
            Some("NetworkPolicy") => policies.push(d.clone()),
            Some("Namespace") => {
                let name = meta["name"].as_str().unwrap_or_default().to_string();
                cluster.namespaces.insert(name, labels());
            }
            Some("PodLabels") => {
                let ns = meta["namespace"].as_str().unwrap_or("default");
                let name = meta["name"].as_str().unwrap_or_default();
                let pod = cluster
                    .pods
                    .iter_mut()
                    .find(|p| p.namespace == ns && p.name == name)
                    .unwrap_or_else(|| panic!("oracle: no pod {ns}/{name}"));
                pod.labels = labels();
                pod.ports = d["spec"]["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| {
                        let proto = match p["protocol"].as_str().unwrap_or("TCP") {
                            "UDP" => Proto::Udp,
                            "SCTP" => Proto::Sctp,
                            _ => Proto::Tcp,
                        };
                        let num = p["containerPort"].as_u64().unwrap_or(0) as u16;
                        (
                            p["name"].as_str().unwrap_or_default().to_string(),
                            proto,
                            num,
                        )
                    })
                    .collect();
            }
            other => panic!("oracle: unexpected kind {other:?}"),
        }
    }
    policies
}

/// Whether `flow` is allowed by `policies` (NetworkPolicy manifests as JSON values).
pub fn allowed(cluster: &Cluster, policies: &[Value], flow: &Flow) -> bool {
    if let (End::Pod(s), End::Pod(d)) = (flow.src, flow.dst)
        && s == d
    {
        return true;
    }
    egress_ok(cluster, policies, flow) && ingress_ok(cluster, policies, flow)
}

fn egress_ok(cluster: &Cluster, policies: &[Value], flow: &Flow) -> bool {
    let End::Pod(s) = flow.src else {
        return true;
    };
    let pod = &cluster.pods[s];
    let isolating: Vec<&Value> = policies
        .iter()
        .filter(|p| selects(p, pod) && has_type(p, "Egress"))
        .collect();
    if isolating.is_empty() {
        return true;
    }
    isolating.iter().any(|p| {
        let ns = p["metadata"]["namespace"].as_str().unwrap_or("default");
        rules(p, "egress").iter().any(|rule| {
            peers_match(cluster, ns, &rule["to"], flow.dst, flow.dst_addr)
                && ports_match(cluster, &rule["ports"], flow.dst, flow.proto, flow.port)
        })
    })
}

fn ingress_ok(cluster: &Cluster, policies: &[Value], flow: &Flow) -> bool {
    let End::Pod(d) = flow.dst else {
        return true;
    };
    let pod = &cluster.pods[d];
    if let End::Node(n) = flow.src
        && pod.node == format!("n{}", n + 1)
    {
        return true;
    }
    let isolating: Vec<&Value> = policies
        .iter()
        .filter(|p| selects(p, pod) && has_type(p, "Ingress"))
        .collect();
    if isolating.is_empty() {
        return true;
    }
    isolating.iter().any(|p| {
        let ns = p["metadata"]["namespace"].as_str().unwrap_or("default");
        rules(p, "ingress").iter().any(|rule| {
            peers_match(cluster, ns, &rule["from"], flow.src, flow.src_addr)
                && ports_match(cluster, &rule["ports"], flow.dst, flow.proto, flow.port)
        })
    })
}

fn rules<'a>(policy: &'a Value, dir: &str) -> &'a [Value] {
    policy["spec"][dir]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The policy is in the pod's namespace and its `podSelector` matches the pod.
fn selects(policy: &Value, pod: &Pod) -> bool {
    policy["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        == pod.namespace
        && selector_matches(&policy["spec"]["podSelector"], &pod.labels)
}

fn has_type(policy: &Value, ty: &str) -> bool {
    match policy["spec"]["policyTypes"].as_array() {
        Some(types) if !types.is_empty() => types.iter().any(|t| t == ty),
        _ => ty == "Ingress" || !rules(policy, "egress").is_empty(),
    }
}

/// A label selector: every `matchLabels` pair and every requirement (ANDed); an empty (or
/// absent) selector matches everything.
pub fn selector_matches(sel: &Value, labels: &Labels) -> bool {
    let pairs_ok = sel["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str());
    let exprs_ok = sel["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|req| {
            let key = req["key"].as_str().unwrap_or_default();
            let values: Vec<&str> = req["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let have = labels.get(key).map(String::as_str);
            match req["operator"].as_str() {
                Some("In") => have.is_some_and(|v| values.contains(&v)),
                Some("NotIn") => have.is_none_or(|v| !values.contains(&v)),
                Some("Exists") => have.is_some(),
                Some("DoesNotExist") => have.is_none(),
                other => panic!("oracle: unknown operator {other:?}"),
            }
        });
    pairs_ok && exprs_ok
}

/// `from`/`to` of a rule against the other end: absent or empty matches everyone.
fn peers_match(cluster: &Cluster, policy_ns: &str, peers: &Value, end: End, addr: IpAddr) -> bool {
    let Some(list) = peers.as_array().filter(|l| !l.is_empty()) else {
        return true;
    };
    list.iter().any(|peer| {
        if let Some(block) = peer.get("ipBlock") {
            return in_block(block, addr);
        }
        let End::Pod(i) = end else {
            return false;
        };
        let pod = &cluster.pods[i];
        let ns_sel = peer.get("namespaceSelector");
        let pod_sel = peer.get("podSelector");
        let ns_ok = match ns_sel {
            Some(sel) => selector_matches(sel, &cluster.namespace_labels(&pod.namespace)),
            None => pod.namespace == policy_ns,
        };
        let pod_ok = pod_sel.is_none_or(|sel| selector_matches(sel, &pod.labels));
        ns_ok && pod_ok
    })
}

fn in_block(block: &Value, addr: IpAddr) -> bool {
    let net = |v: &Value| -> IpNet {
        v.as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("oracle: bad cidr {v}"))
    };
    net(&block["cidr"]).contains(&addr)
        && !block["except"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| net(e).contains(&addr))
}

/// `ports` of a rule: absent or empty matches every port of every protocol.
fn ports_match(cluster: &Cluster, ports: &Value, dst: End, proto: Proto, port: u16) -> bool {
    let Some(list) = ports.as_array().filter(|l| !l.is_empty()) else {
        return true;
    };
    if proto == Proto::Icmp {
        return false;
    }
    list.iter().any(|p| {
        let p_proto = match p["protocol"].as_str().unwrap_or("TCP") {
            "TCP" => Proto::Tcp,
            "UDP" => Proto::Udp,
            "SCTP" => Proto::Sctp,
            other => panic!("oracle: unknown protocol {other}"),
        };
        if p_proto != proto {
            return false;
        }
        match &p["port"] {
            Value::Null => true,
            Value::Number(n) => {
                let lo = n.as_u64().unwrap_or(0);
                let hi = p["endPort"].as_u64().unwrap_or(lo);
                (lo..=hi).contains(&u64::from(port))
            }
            Value::String(name) => match dst {
                End::Pod(i) => cluster.pods[i]
                    .ports
                    .iter()
                    .any(|(n, pr, num)| n == name && *pr == proto && *num == port),
                _ => false,
            },
            other => panic!("oracle: bad port {other}"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        let l: Labels = [("app".to_string(), "web".to_string())].into();
        let sel = |s: &str| -> Value { serde_json::from_str(s).unwrap() };
        assert!(selector_matches(&sel("{}"), &l));
        assert!(selector_matches(
            &sel(r#"{"matchLabels":{"app":"web"}}"#),
            &l
        ));
        assert!(!selector_matches(
            &sel(r#"{"matchLabels":{"app":"db"}}"#),
            &l
        ));
        let expr = |op: &str, vals: &str| {
            sel(&format!(
                r#"{{"matchExpressions":[{{"key":"app","operator":"{op}","values":{vals}}}]}}"#
            ))
        };
        assert!(selector_matches(&expr("In", r#"["db","web"]"#), &l));
        assert!(!selector_matches(&expr("NotIn", r#"["web"]"#), &l));
        assert!(selector_matches(
            &expr("NotIn", r#"["web"]"#),
            &Labels::new()
        ));
        assert!(selector_matches(&expr("Exists", "[]"), &l));
        assert!(!selector_matches(&expr("DoesNotExist", "[]"), &l));
    }
}
