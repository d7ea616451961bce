//! Denied packets per NetworkPolicy, for `/metrics`: the kernel's drop counters (the ones
//! `{"op":"status"}` reports per class and pod, [`super::Policy::status`]) attributed to
//! the policies of each class, by a scrape that must not wait for the control loop.
//!
//! [`DeniedIndex`] is what the scrape needs from the applied plan (which class chain stands
//! for which policies, which class each isolated pod address jumps to), taken once per
//! committed change so the scrape reads the kernel on its own.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use weft_policy::plan::{Elem, Family, Plan, SetName, Verdict};
use weft_policy::{Direction, PolicyRef};

use super::Error;
use super::nft::{self, Denied};

/// The applied plan's classes and pod maps, reduced to what attributes a drop counter.
#[derive(Debug, Clone, PartialEq)]
pub struct DeniedIndex {
    table: String,
    /// Class chain → its position in `policies`.
    chains: HashMap<String, usize>,
    /// The policies of each class.
    policies: Vec<Vec<PolicyRef>>,
    /// Isolated pod address (and direction) → its class.
    pods: HashMap<(Direction, IpAddr), usize>,
}

impl DeniedIndex {
    /// From the plan the kernel holds.
    pub fn of(plan: &Plan) -> DeniedIndex {
        let mut chains = HashMap::with_capacity(plan.classes.len());
        let mut policies = Vec::with_capacity(plan.classes.len());
        for (chain, info) in &plan.classes {
            chains.insert(chain.clone(), policies.len());
            policies.push(info.policies.clone());
        }
        let mut pods = HashMap::new();
        for dir in [Direction::Ingress, Direction::Egress] {
            for fam in [Family::V4, Family::V6] {
                let Some(map) = plan.sets.get(&SetName::PodMap(dir, fam).to_string()) else {
                    continue;
                };
                for (elem, verdict) in &map.elements {
                    let addr = match elem {
                        Elem::V4(a, b) if a == b => IpAddr::V4(*a),
                        Elem::V6(a, b) if a == b => IpAddr::V6(*a),
                        _ => continue,
                    };
                    if let Some(Verdict::Jump(class)) = verdict
                        && let Some(i) = chains.get(class)
                    {
                        pods.insert((dir, addr), *i);
                    }
                }
            }
        }
        DeniedIndex {
            table: plan.table.clone(),
            chains,
            policies,
            pods,
        }
    }

    /// Packets denied per policy: every class's drops (its own `counter drop` and the
    /// element counters of the pods it isolates), added to each policy of the class — a
    /// packet dropped for a pod isolated by two policies counts under both. Every policy of
    /// a class is listed, with 0 until something is dropped. Drops of chains the index
    /// does not know (a change committed after it was taken) are left out.
    pub fn per_policy(&self, d: &Denied) -> BTreeMap<PolicyRef, u64> {
        let mut per_class = vec![0u64; self.policies.len()];
        for (chain, packets) in &d.chains {
            if let Some(i) = self.chains.get(chain) {
                per_class[*i] += packets;
            }
        }
        for (dir, addr, packets, _) in &d.pods {
            if let Some(i) = self.pods.get(&(*dir, *addr)) {
                per_class[*i] += packets;
            }
        }
        let mut out = BTreeMap::new();
        for (policies, packets) in self.policies.iter().zip(per_class) {
            for p in policies {
                *out.entry(p.clone()).or_default() += packets;
            }
        }
        out
    }

    /// Reads the table's counters (a netlink dump on a blocking thread) and attributes them.
    pub async fn read(&self) -> Result<BTreeMap<PolicyRef, u64>, Error> {
        let d = nft::drop_counters(self.table.clone()).await?;
        Ok(self.per_policy(&d))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use weft_policy::plan::{PlanOptions, compile};
    use weft_policy::{Endpoint, Node, Object, ParseOptions, World, parse};

    use super::*;

    use weft_policy::testing::ip;

    fn pod(name: &str, app: &str, addr: &str) -> Endpoint {
        weft_policy::testing::pod("shop", name, "n1", &[addr], &format!("app={app}"))
    }

    /// db is isolated by two policies (one class), web by one; batch by none.
    fn plan() -> Plan {
        let objects = parse(
            "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: shop}
spec:
  podSelector: {matchLabels: {tier: back}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - ports: [{protocol: TCP, port: 80}]
",
            &ParseOptions::default(),
        )
        .unwrap();
        let policies = objects
            .into_iter()
            .filter_map(|o| match o {
                Object::NetworkPolicy(p) => Some(p),
                _ => None,
            })
            .collect();
        let mut db = pod("db", "db", "10.244.0.2");
        db.labels.insert("tier".into(), "back".into());
        let world = World {
            namespaces: vec![],
            nodes: vec![Node {
                name: "n1".into(),
                addresses: vec![ip("192.168.0.1"), ip("10.244.0.1")],
                pod_cidrs: vec!["10.244.0.0/26".parse().unwrap()],
            }],
            endpoints: vec![
                db,
                pod("web", "web", "10.244.0.3"),
                pod("batch", "batch", "10.244.0.4"),
            ],
            policies,
        };
        compile(&world, &PlanOptions::new("n1"))
    }

    fn policy(name: &str) -> PolicyRef {
        PolicyRef {
            namespace: "shop".into(),
            name: name.into(),
        }
    }

    fn class_of(p: &Plan, want: &[&str]) -> String {
        p.classes
            .iter()
            .find(|(_, c)| {
                c.policies
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    == want
            })
            .map(|(chain, _)| chain.clone())
            .unwrap_or_else(|| panic!("no class of {want:?}: {:?}", p.classes))
    }

    #[test]
    fn drops_count_under_every_policy_of_their_class() {
        let p = plan();
        let index = DeniedIndex::of(&p);
        let nothing = index.per_policy(&Denied::default());
        assert_eq!(
            nothing,
            BTreeMap::from([
                (policy("db"), 0),
                (policy("deny-all"), 0),
                (policy("web"), 0)
            ]),
            "every policy of a class is listed before anything is dropped"
        );
        let denied = Denied {
            chains: vec![
                (class_of(&p, &["db", "deny-all"]), 3),
                (class_of(&p, &["web"]), 5),
                // A class committed after the index was taken.
                ("ci_unknown".into(), 100),
            ],
            pods: vec![
                (Direction::Ingress, ip("10.244.0.2"), 7, 700),
                (Direction::Ingress, ip("10.244.0.3"), 11, 1100),
                // batch is isolated by nothing: no class to count it under.
                (Direction::Ingress, ip("10.244.0.4"), 13, 1300),
                // db is not isolated for egress.
                (Direction::Egress, ip("10.244.0.2"), 17, 1700),
            ],
        };
        assert_eq!(
            index.per_policy(&denied),
            BTreeMap::from([
                (policy("db"), 3 + 7),
                (policy("deny-all"), 3 + 7),
                (policy("web"), 5 + 11)
            ])
        );
    }

    #[test]
    fn an_empty_plan_attributes_nothing() {
        let index = DeniedIndex::of(&Plan::empty("weft_policy"));
        let denied = Denied {
            chains: vec![("ci_x".into(), 1)],
            pods: vec![(Direction::Ingress, ip("10.244.0.2"), 1, 1)],
        };
        assert!(index.per_policy(&denied).is_empty());
    }
}
