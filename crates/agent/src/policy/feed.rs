//! Moving a [`Compiler`] from the world it holds to the world the view now gives, one
//! change at a time: pods and policies that differ are upserted or removed (each recomputes
//! only what it reaches); a change of namespace labels or of the nodes (their addresses,
//! their pod ranges) replaces the whole world ([`Compiler::set_world`], a full compile),
//! since those reach every selector. Between loads the watch's events name what changed
//! ([`Touched`]), and only that is looked up and fed ([`feed_touched`]).

use std::collections::{BTreeSet, HashMap};

use weft_policy::plan::Compiler;
use weft_policy::{Endpoint, NetworkPolicy, World};
use weft_store::{ObjectEvent, ObjectKind};

use super::endpoints::Local;
use super::view::View;

/// What [`feed`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fed {
    /// Pods upserted or removed.
    pub endpoints: usize,
    /// Policies upserted or removed.
    pub policies: usize,
    /// The whole world was replaced (namespaces or nodes changed).
    pub whole: bool,
}

/// Feeds `c` the differences between its world and `next`.
pub fn feed(c: &mut Compiler, next: World) -> Fed {
    let cur = c.world();
    if !same_unordered(&cur.namespaces, &next.namespaces)
        || !same_unordered(&cur.nodes, &next.nodes)
    {
        c.set_world(next);
        return Fed {
            whole: true,
            ..Fed::default()
        };
    }
    let mut fed = Fed::default();
    let old_eps: HashMap<(&str, &str), &Endpoint> = cur
        .endpoints
        .iter()
        .map(|e| ((e.namespace.as_str(), e.name.as_str()), e))
        .collect();
    let new_eps: HashMap<(&str, &str), &Endpoint> = next
        .endpoints
        .iter()
        .map(|e| ((e.namespace.as_str(), e.name.as_str()), e))
        .collect();
    let ep_gone: Vec<(String, String)> = old_eps
        .keys()
        .filter(|k| !new_eps.contains_key(*k))
        .map(|(ns, n)| (ns.to_string(), n.to_string()))
        .collect();
    let ep_up: Vec<Endpoint> = next
        .endpoints
        .iter()
        .filter(|e| old_eps.get(&(e.namespace.as_str(), e.name.as_str())) != Some(e))
        .cloned()
        .collect();
    let old_pols: HashMap<(&str, &str), &NetworkPolicy> = cur
        .policies
        .iter()
        .map(|p| ((p.namespace.as_str(), p.name.as_str()), p))
        .collect();
    let new_pols: HashMap<(&str, &str), &NetworkPolicy> = next
        .policies
        .iter()
        .map(|p| ((p.namespace.as_str(), p.name.as_str()), p))
        .collect();
    let pol_gone: Vec<(String, String)> = old_pols
        .keys()
        .filter(|k| !new_pols.contains_key(*k))
        .map(|(ns, n)| (ns.to_string(), n.to_string()))
        .collect();
    let pol_up: Vec<NetworkPolicy> = next
        .policies
        .iter()
        .filter(|p| old_pols.get(&(p.namespace.as_str(), p.name.as_str())) != Some(p))
        .cloned()
        .collect();
    // Removals first: a pod renamed onto a reused address must leave before the new one
    // takes the address.
    for (ns, n) in &ep_gone {
        c.remove_endpoint(ns, n);
    }
    for (ns, n) in &pol_gone {
        c.remove_policy(ns, n);
    }
    fed.endpoints = ep_gone.len() + ep_up.len();
    fed.policies = pol_gone.len() + pol_up.len();
    for e in ep_up {
        c.upsert_endpoint(e);
    }
    for p in pol_up {
        c.upsert_policy(p);
    }
    fed
}

/// What changed since the compiler was last fed: named pods and policies, or `whole` (a
/// load, namespace labels, nodes or blocks: only a comparison of whole worlds tells).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touched {
    pub pods: BTreeSet<(String, String)>,
    pub policies: BTreeSet<(String, String)>,
    pub whole: bool,
}

impl Touched {
    pub fn everything() -> Touched {
        Touched {
            whole: true,
            ..Touched::default()
        }
    }

    /// What one event of the object watch (already folded into the view) changed.
    pub fn event(&mut self, ev: &ObjectEvent) {
        let key = |ns: &str, n: &str| (ns.to_string(), n.to_string());
        match ev {
            ObjectEvent::Put(o) => self.object(o.kind, key(&o.namespace, &o.name)),
            ObjectEvent::Deleted {
                kind,
                namespace,
                name,
            } => self.object(*kind, key(namespace, name)),
            ObjectEvent::EndpointPut(r) => {
                self.pods.insert(key(&r.namespace, &r.name));
            }
            ObjectEvent::EndpointDeleted {
                namespace, name, ..
            } => {
                self.pods.insert(key(namespace, name));
            }
            ObjectEvent::Resync => self.whole = true,
        }
    }

    fn object(&mut self, kind: ObjectKind, key: (String, String)) {
        match kind {
            ObjectKind::NetworkPolicy => {
                self.policies.insert(key);
            }
            ObjectKind::PodLabels => {
                self.pods.insert(key);
            }
            ObjectKind::Namespace => self.whole = true,
        }
    }
}

/// Feeds `c` the pods and policies `touched` names, as the view has them now; everything
/// else is as the compiler last saw it. The cost is what changed, not the cluster: no world
/// is built or compared (that is [`feed`], for `whole`).
pub fn feed_touched(
    c: &mut Compiler,
    touched: &Touched,
    view: &View,
    me: &str,
    local: &Local,
) -> Fed {
    let pods: Vec<(&(String, String), Option<Endpoint>)> = touched
        .pods
        .iter()
        .map(|k| (k, view.endpoint(me, local, &k.0, &k.1)))
        .collect();
    let policies: Vec<(&(String, String), Option<&NetworkPolicy>)> = touched
        .policies
        .iter()
        .map(|k| (k, view.policy(&k.0, &k.1)))
        .collect();
    let mut fed = Fed::default();
    // Removals first, as in `feed`.
    for ((ns, n), e) in &pods {
        if e.is_none() && c.endpoint(ns, n).is_some() {
            c.remove_endpoint(ns, n);
            fed.endpoints += 1;
        }
    }
    for ((ns, n), p) in &policies {
        if p.is_none() && c.policy(ns, n).is_some() {
            c.remove_policy(ns, n);
            fed.policies += 1;
        }
    }
    for ((ns, n), e) in pods {
        if let Some(e) = e
            && c.endpoint(ns, n) != Some(&e)
        {
            c.upsert_endpoint(e);
            fed.endpoints += 1;
        }
    }
    for ((ns, n), p) in policies {
        if let Some(p) = p
            && c.policy(ns, n) != Some(p)
        {
            c.upsert_policy(p.clone());
            fed.policies += 1;
        }
    }
    fed
}

/// The same elements, whatever their order (namespaces and nodes are few).
fn same_unordered<T: Ord + Clone>(a: &[T], b: &[T]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort();
    b.sort();
    a == b
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_policy::plan::{self, PlanOptions};
    use weft_policy::{Node, ParseOptions};

    fn pod(ns: &str, name: &str, node: &str, addr: &str, app: &str) -> Endpoint {
        Endpoint {
            namespace: ns.into(),
            name: name.into(),
            node: node.into(),
            addresses: vec![addr.parse().unwrap()],
            labels: [("app".to_string(), app.to_string())].into(),
            ports: Default::default(),
        }
    }

    fn policy(yaml: &str) -> NetworkPolicy {
        match weft_policy::parse(yaml, &ParseOptions::default())
            .unwrap()
            .remove(0)
        {
            weft_policy::Object::NetworkPolicy(p) => p,
            o => panic!("not a policy: {o:?}"),
        }
    }

    fn allow(name: &str, to: &str, from: &str, port: u16) -> NetworkPolicy {
        policy(&format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  podSelector: {{matchLabels: {{app: {to}}}}}\n  ingress:\n  - from: [{{podSelector: {{matchLabels: {{app: {from}}}}}}}]\n    ports: [{{port: {port}}}]\n"
        ))
    }

    fn world() -> World {
        World {
            namespaces: vec![],
            nodes: vec![
                Node {
                    name: "n1".into(),
                    addresses: vec!["192.0.2.1".parse().unwrap()],
                    pod_cidrs: vec!["10.244.0.0/26".parse().unwrap()],
                },
                Node {
                    name: "n2".into(),
                    addresses: vec!["192.0.2.2".parse().unwrap()],
                    pod_cidrs: vec!["10.244.0.64/26".parse().unwrap()],
                },
            ],
            endpoints: vec![
                pod("shop", "db", "n1", "10.244.0.2", "db"),
                pod("shop", "web", "n2", "10.244.0.66", "web"),
                pod("shop", "api", "n1", "10.244.0.3", "api"),
            ],
            policies: vec![allow("db", "db", "web", 5432)],
        }
    }

    /// Each step: the fed compiler's plan is the one compiled from scratch, and its ops
    /// take the plan before the step to the plan after it.
    type Step = Box<dyn Fn(&mut World)>;

    #[test]
    fn fed_changes_give_the_plan_compiled_from_scratch() {
        let opts = PlanOptions::new("n1");
        let mut c = Compiler::new(world(), opts.clone());
        let mut w = world();
        let mut steps: Vec<Step> = vec![
            Box::new(|w| {
                w.endpoints[1].labels.insert("app".into(), "api".into());
            }),
            Box::new(|w| w.policies.push(allow("api", "api", "web", 80))),
            Box::new(|w| {
                w.endpoints
                    .push(pod("shop", "web2", "n1", "10.244.0.4", "web"))
            }),
            Box::new(|w| w.policies[0] = allow("db", "db", "api", 5433)),
            Box::new(|w| {
                w.endpoints.remove(0);
            }),
            Box::new(|w| {
                w.policies.remove(0);
            }),
            Box::new(|w| w.nodes[1].addresses.push("192.0.2.22".parse().unwrap())),
            Box::new(|w| {
                w.endpoints.reverse();
                w.policies.reverse();
            }),
        ];
        for (i, step) in steps.iter_mut().enumerate() {
            let before = c.plan().clone();
            step(&mut w);
            let fed = feed(&mut c, w.clone());
            assert_eq!(fed.whole, i == 6, "step {i}: {fed:?}");
            assert_eq!(*c.plan(), plan::compile(&w, &opts), "step {i}");
            let ops = c.take_ops();
            let mut applied = before;
            applied.apply(&ops).unwrap();
            assert_eq!(
                (&applied.sets, &applied.chains),
                (&c.plan().sets, &c.plan().chains),
                "step {i}"
            );
        }
        assert_eq!(feed(&mut c, w.clone()), Fed::default(), "nothing changed");
        assert!(c.take_ops().is_empty());
    }
}
