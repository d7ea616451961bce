//! Objects back to Kubernetes-style JSON manifests (what `parse` reads).

use serde_json::{Map, Value, json};

use super::Object;
use crate::model::{LabelSelector, Labels, PolicyPeer, PolicyPort, PortRef, Rule};

pub(super) fn object(obj: &Object) -> Value {
    match obj {
        Object::NetworkPolicy(p) => {
            let mut spec = Map::new();
            spec.insert("podSelector".into(), selector(&p.spec.pod_selector));
            if !p.spec.policy_types.is_empty() {
                spec.insert(
                    "policyTypes".into(),
                    p.spec.policy_types.iter().map(|t| t.as_str()).collect(),
                );
            }
            if !p.spec.ingress.is_empty() {
                spec.insert("ingress".into(), rules(&p.spec.ingress, "from"));
            }
            if !p.spec.egress.is_empty() {
                spec.insert("egress".into(), rules(&p.spec.egress, "to"));
            }
            json!({
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": meta(&p.name, Some(&p.namespace), &p.labels),
                "spec": spec,
            })
        }
        Object::Namespace(n) => json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": meta(&n.name, None, &n.labels),
        }),
        Object::PodLabels(p) => {
            let mut v = json!({
                "apiVersion": "weft.dev/v1",
                "kind": "PodLabels",
                "metadata": meta(&p.name, Some(&p.namespace), &p.labels),
            });
            if !p.ports.is_empty() {
                let ports: Vec<Value> = p
                    .ports
                    .iter()
                    .map(|(name, np)| {
                        json!({"name": name, "containerPort": np.port, "protocol": np.protocol.as_str()})
                    })
                    .collect();
                v["spec"] = json!({ "ports": ports });
            }
            v
        }
    }
}

fn meta(name: &str, namespace: Option<&str>, labels: &Labels) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), name.into());
    if let Some(ns) = namespace {
        m.insert("namespace".into(), ns.into());
    }
    if !labels.is_empty() {
        m.insert("labels".into(), json!(labels));
    }
    Value::Object(m)
}

fn selector(s: &LabelSelector) -> Value {
    let mut m = Map::new();
    if !s.match_labels.is_empty() {
        m.insert("matchLabels".into(), json!(s.match_labels));
    }
    if !s.match_expressions.is_empty() {
        let exprs: Vec<Value> = s
            .match_expressions
            .iter()
            .map(|r| {
                let mut e = json!({"key": r.key, "operator": r.operator.as_str()});
                if !r.values.is_empty() {
                    e["values"] = json!(r.values);
                }
                e
            })
            .collect();
        m.insert("matchExpressions".into(), Value::Array(exprs));
    }
    Value::Object(m)
}

fn rules(rules: &[Rule], peers_key: &str) -> Value {
    rules
        .iter()
        .map(|r| {
            let mut m = Map::new();
            if !r.peers.is_empty() {
                m.insert(peers_key.into(), r.peers.iter().map(peer).collect());
            }
            if !r.ports.is_empty() {
                m.insert("ports".into(), r.ports.iter().map(port).collect());
            }
            Value::Object(m)
        })
        .collect()
}

fn peer(p: &PolicyPeer) -> Value {
    match p {
        PolicyPeer::Pods {
            pod_selector,
            namespace_selector,
        } => {
            let mut m = Map::new();
            if let Some(s) = pod_selector {
                m.insert("podSelector".into(), selector(s));
            }
            if let Some(s) = namespace_selector {
                m.insert("namespaceSelector".into(), selector(s));
            }
            Value::Object(m)
        }
        PolicyPeer::IpBlock(b) => {
            let mut block = json!({"cidr": b.cidr.to_string()});
            if !b.except.is_empty() {
                block["except"] = b.except.iter().map(|e| e.to_string()).collect();
            }
            json!({ "ipBlock": block })
        }
    }
}

fn port(p: &PolicyPort) -> Value {
    let mut m = Map::new();
    m.insert("protocol".into(), p.protocol.as_str().into());
    match &p.port {
        Some(PortRef::Number(n)) => {
            m.insert("port".into(), (*n).into());
        }
        Some(PortRef::Name(n)) => {
            m.insert("port".into(), n.as_str().into());
        }
        None => {}
    }
    if let Some(e) = p.end_port {
        m.insert("endPort".into(), e.into());
    }
    Value::Object(m)
}
