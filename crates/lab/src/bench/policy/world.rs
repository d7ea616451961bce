//! The synthetic cluster of `bench policy`, built the same way every run (no randomness).
//!
//! - **Pods**: 1,000 on one node (`bench-node`, pod range 10.96.0.0/16): namespaces `ns-0`
//!   … `ns-9` (labels `team: t<n mod 3>`, `env: prod|staging`), in each ten apps (`web`,
//!   `api`, `db`, …) of ten replicas `<app>-<r>` with labels `app`, `tier`
//!   (frontend/backend/data) and `instance: "<r>"`. Two of them are real (see `net`): the
//!   server `ns-0/db-0` and the client `ns-9/web-0`; the rest are addresses only. The two
//!   come last in the pod list, so in the iptables-style rendering their jump rules are the
//!   last of the base chain's one-per-pod rules.
//! - **Isolation**: every namespace has a `default-deny` ingress policy (`podSelector: {}`,
//!   no rules), so all 1,000 pods are isolated, as in a cluster that runs default-deny.
//! - **Rules**: a *rule* is one (peer address or CIDR) × (port) pair — what an
//!   iptables-based implementation emits one rule for in a selected pod's chain. Policies
//!   `allow-<k>` in `ns-0` each have one ingress rule with three peers (2 pods of one
//!   namespace by `app` and `instance In [i, i+1]`, 2 pods of another namespace likewise, one
//!   external /24 — or with `--no-cidrs` one more pod) and two TCP ports from a pool of 20 common service ports: 5 × 2 = 10
//!   rules. They select `ns-0`'s `db` pods three ways in turn (`db-0` alone, `db-0` and
//!   `db-1`, all ten), so the server is selected by every one of them: all N rules are on
//!   the measured pod, in the order an iptables chain would hold them.
//! - **The measured flow**: the last policy, `allow-bench-client`, selects the server alone
//!   and allows TCP 5201 (iperf3) and 11111-11112 (sockperf, and the connection-rate
//!   listener) from 3 pods, a /24 and, as the very
//!   last peer, the client — so in the linear rendering the client's packets traverse every
//!   one of the N rules before the one that accepts them. No earlier rule opens those ports,
//!   and nothing opens [`DENIED_PORT`].

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use weft_policy::{
    Direction, Endpoint, IpBlock, LabelSelector, Labels, Namespace, NetworkPolicy, Node, Operator,
    PolicyPeer, PolicyPort, PolicySpec, Requirement, Rule, World,
};

use crate::bench::dataplane::tools::{IPERF_PORT, SOCKPERF_PORT};

pub const NODE: &str = "bench-node";
pub const POD_CIDR: &str = "10.96.0.0/16";
pub const NAMESPACES: usize = 10;
pub const APPS: [&str; 10] = [
    "web", "api", "db", "cache", "queue", "worker", "auth", "search", "billing", "admin",
];
pub const REPLICAS: usize = 10;
/// Rules per `allow-<k>` policy (5 peer addresses/CIDRs × 2 ports).
pub const RULES_PER_POLICY: usize = 10;
/// A port the server listens on that no policy allows: the probe that must fail.
pub const DENIED_PORT: u16 = 5202;
/// Where the server accepts (and drops) connections for the connection-rate measurement.
pub const CONNECT_PORT: u16 = SOCKPERF_PORT + 1;
/// Common service ports the rules use (none of them is measured or probed).
const PORT_POOL: [u16; 20] = [
    80, 443, 8080, 8443, 9090, 3000, 5432, 6379, 27017, 9200, 5672, 2379, 8000, 8081, 9000, 9092,
    3306, 11211, 7000, 4222,
];

/// Where the measured pods are in the world.
pub const SERVER: (&str, &str) = ("ns-0", "db-0");
pub const CLIENT: (&str, &str) = ("ns-9", "web-0");

fn tier(app: &str) -> &'static str {
    match app {
        "web" => "frontend",
        "db" | "cache" | "queue" => "data",
        _ => "backend",
    }
}

/// Pod `i`'s address: 10.96.(i / 250).(i % 250 + 2).
pub fn pod_addr(ns: usize, app: usize, replica: usize) -> IpAddr {
    let i = ns * APPS.len() * REPLICAS + app * REPLICAS + replica;
    IpAddr::V4(Ipv4Addr::new(10, 96, (i / 250) as u8, (i % 250 + 2) as u8))
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn ns_name(n: usize) -> String {
    format!("ns-{n}")
}

/// `namespaceSelector` for one namespace by name, `podSelector` for `app` and two
/// instances: exactly two pods.
fn two_pods(ns: usize, app: &str, instance: usize) -> PolicyPeer {
    PolicyPeer::Pods {
        namespace_selector: Some(LabelSelector::labels([(
            weft_policy::NAMESPACE_NAME_LABEL,
            ns_name(ns),
        )])),
        pod_selector: Some(LabelSelector {
            match_labels: labels(&[("app", app)]),
            match_expressions: vec![Requirement {
                key: "instance".into(),
                operator: Operator::In,
                values: vec![
                    instance.to_string(),
                    ((instance + 1) % REPLICAS).to_string(),
                ],
            }],
        }),
    }
}

fn one_pod(ns: &str, app: &str, instance: &str) -> PolicyPeer {
    PolicyPeer::Pods {
        namespace_selector: Some(LabelSelector::labels([(
            weft_policy::NAMESPACE_NAME_LABEL,
            ns,
        )])),
        pod_selector: Some(LabelSelector::labels([
            ("app", app),
            ("instance", instance),
        ])),
    }
}

fn external(k: usize) -> PolicyPeer {
    let net = format!("172.{}.{}.0/24", 16 + k % 16, (k / 16) % 256);
    PolicyPeer::IpBlock(IpBlock {
        cidr: net.parse().unwrap_or_else(|_| unreachable!("a valid CIDR")),
        except: Vec::new(),
    })
}

/// Which of `ns-0`'s db pods policy `k` selects: `db-0`, `db-0`/`db-1`, or all ten.
fn db_selector(k: usize) -> LabelSelector {
    let mut s = LabelSelector::labels([("app", "db")]);
    match k % 3 {
        0 => {
            s.match_labels.insert("instance".into(), "0".into());
        }
        1 => s.match_expressions.push(Requirement {
            key: "instance".into(),
            operator: Operator::In,
            values: vec!["0".into(), "1".into()],
        }),
        _ => {}
    }
    s
}

fn policy(
    name: String,
    namespace: &str,
    selector: LabelSelector,
    rules: Vec<Rule>,
) -> NetworkPolicy {
    NetworkPolicy {
        namespace: namespace.to_string(),
        name,
        labels: BTreeMap::new(),
        spec: PolicySpec {
            pod_selector: selector,
            policy_types: vec![Direction::Ingress],
            ingress: rules,
            egress: Vec::new(),
        },
    }
}

/// Policy `allow-<k>`'s one rule (see the module docs); `port_shift` moves its second port
/// along the pool (the "policy edit" of the change benchmark).
pub fn allow_rule(k: usize, port_shift: usize, cidrs: bool) -> Rule {
    let a = APPS[(k / NAMESPACES) % APPS.len()];
    let b = APPS[(k / NAMESPACES + 3) % APPS.len()];
    let inst = (k / (NAMESPACES * APPS.len())) % REPLICAS;
    let p1 = PORT_POOL[k % PORT_POOL.len()];
    let p2 = PORT_POOL
        [(k % PORT_POOL.len() + 1 + (k / PORT_POOL.len() + port_shift) % 19) % PORT_POOL.len()];
    Rule {
        peers: vec![
            two_pods(k % NAMESPACES, a, inst),
            two_pods((k + 3) % NAMESPACES, b, (inst + 5) % REPLICAS),
            third_peer(k, cidrs),
        ],
        ports: vec![PolicyPort::tcp(p1), PolicyPort::tcp(p2)],
    }
}

/// Policy `allow-<k>` in `ns-0`.
pub fn allow_policy(k: usize, port_shift: usize, cidrs: bool) -> NetworkPolicy {
    policy(
        format!("allow-{k:05}"),
        SERVER.0,
        db_selector(k),
        vec![allow_rule(k, port_shift, cidrs)],
    )
}

/// A rule's fifth address: its own external /24, or (`cidrs` false, a cluster whose
/// policies are all selectors) one more pod.
fn third_peer(k: usize, cidrs: bool) -> PolicyPeer {
    if cidrs {
        external(k)
    } else {
        one_pod(
            &ns_name((k + 6) % NAMESPACES),
            APPS[(k / NAMESPACES + 6) % APPS.len()],
            &((k / (NAMESPACES * APPS.len()) + 7) % REPLICAS).to_string(),
        )
    }
}

/// The world with `rules` rules (a multiple of [`RULES_PER_POLICY`], at least one policy's
/// worth: the last policy is the client's); `cidrs`: each policy's fifth peer is an
/// external /24 (else one more pod).
pub fn world(rules: usize, cidrs: bool) -> World {
    let namespaces = (0..NAMESPACES)
        .map(|n| Namespace {
            name: ns_name(n),
            labels: labels(&[
                ("team", &format!("t{}", n % 3)),
                ("env", if n < 7 { "prod" } else { "staging" }),
            ]),
        })
        .collect();
    let mut endpoints = Vec::new();
    let mut real = Vec::new();
    for n in 0..NAMESPACES {
        for (a, app) in APPS.iter().enumerate() {
            for r in 0..REPLICAS {
                let e = Endpoint {
                    namespace: ns_name(n),
                    name: format!("{app}-{r}"),
                    labels: labels(&[
                        ("app", app),
                        ("tier", tier(app)),
                        ("instance", &r.to_string()),
                    ]),
                    node: NODE.to_string(),
                    addresses: vec![pod_addr(n, a, r)],
                    ports: BTreeMap::new(),
                };
                let key = (e.namespace.as_str(), e.name.as_str());
                if key == SERVER || key == CLIENT {
                    real.push(e);
                } else {
                    endpoints.push(e);
                }
            }
        }
    }
    // The real pods last: the server's jump is the last in the linear base chain.
    real.sort_by_key(|e| (e.namespace.as_str(), e.name.as_str()) == SERVER);
    endpoints.extend(real);

    let mut policies: Vec<NetworkPolicy> = (0..NAMESPACES)
        .map(|n| {
            policy(
                "default-deny".into(),
                &ns_name(n),
                LabelSelector::default(),
                Vec::new(),
            )
        })
        .collect();
    let allow = (rules / RULES_PER_POLICY).max(1);
    for k in 0..allow - 1 {
        policies.push(allow_policy(k, 0, cidrs));
    }
    let k = allow - 1;
    let (cns, capp) = (CLIENT.0, "web");
    policies.push(policy(
        "allow-bench-client".into(),
        SERVER.0,
        db_selector(0),
        vec![Rule {
            peers: vec![
                two_pods(k % NAMESPACES, APPS[1], 2),
                third_peer(k, cidrs),
                one_pod("ns-5", "auth", "3"),
                one_pod(cns, capp, "0"),
            ],
            // sockperf's port and the next, where the connection-rate listener is: one
            // port entry (a range), so still one rule per peer.
            ports: vec![
                PolicyPort::tcp(IPERF_PORT),
                PolicyPort {
                    end_port: Some(CONNECT_PORT),
                    ..PolicyPort::tcp(SOCKPERF_PORT)
                },
            ],
        }],
    ));
    World {
        namespaces,
        nodes: vec![Node {
            name: NODE.to_string(),
            addresses: vec![IpAddr::V4(Ipv4Addr::new(169, 254, 1, 1))],
            pod_cidrs: vec![
                POD_CIDR
                    .parse()
                    .unwrap_or_else(|_| unreachable!("a valid CIDR")),
            ],
        }],
        endpoints,
        policies,
    }
}

/// The endpoint `(namespace, name)` of a world.
pub fn endpoint<'w>(w: &'w World, (ns, name): (&str, &str)) -> Option<&'w Endpoint> {
    w.endpoint(ns, name)
}

/// The pods the relabel benchmark moves in turn: peers of early rules at every size
/// (`ns-<n>/web-1`, never a real pod).
pub fn relabel_target(i: usize) -> (String, String) {
    (ns_name(1 + i % 8), "web-1".to_string())
}

/// The policy the edit benchmark changes: one in the middle of the set.
pub fn edit_target(rules: usize) -> usize {
    (rules / RULES_PER_POLICY).saturating_sub(1) / 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_policy::plan::{self, PlanOptions, Rule as PlanRule, Verdict};

    /// The linear rendering of the server's chain has exactly `rules` accept rules, and the
    /// client's are the last two.
    #[test]
    fn rules_count_as_documented() {
        for (rules, cidrs) in [(10, true), (100, false), (1000, true), (1000, false)] {
            let w = world(rules, cidrs);
            assert!(w.policies.iter().all(|p| p.validate().is_empty()));
            let lin = plan::compile_linear(&w, &PlanOptions::new(NODE));
            let server = endpoint(&w, SERVER).unwrap().addresses[0];
            let client = endpoint(&w, CLIENT).unwrap().addresses[0];
            let chain = lin.chains[plan::BaseChain::PodIngress.as_str()]
                .rules
                .iter()
                .find_map(|r| match r {
                    PlanRule::Match {
                        daddr: Some((a, _)),
                        verdict: Verdict::Jump(c),
                        ..
                    } if *a == server => Some(c.clone()),
                    _ => None,
                })
                .unwrap();
            let accepts: Vec<&PlanRule> = lin.chains[&chain]
                .rules
                .iter()
                .filter(|r| matches!(r, PlanRule::Match { .. }))
                .collect();
            assert_eq!(accepts.len(), rules, "{rules}");
            for r in &accepts[rules - 2..] {
                assert!(
                    matches!(r, PlanRule::Match { saddr: Some((a, _)), .. } if *a == client),
                    "{r:?}"
                );
            }
            // Only the client's policy opens the measured ports, and only its last two
            // rules match the client on them (earlier rules may name the client, on other
            // ports: the packet passes them all).
            for r in &accepts[..rules - RULES_PER_POLICY] {
                assert!(
                    !matches!(r, PlanRule::Match { dport: Some((p, _)), .. } if *p == IPERF_PORT || *p == SOCKPERF_PORT || *p == DENIED_PORT)
                );
            }
            for r in &accepts[rules - RULES_PER_POLICY..rules - 2] {
                assert!(!matches!(r, PlanRule::Match { saddr: Some((a, _)), .. } if *a == client));
            }
            assert!(!accepts.iter().any(
                |r| matches!(r, PlanRule::Match { dport: Some((p, _)), .. } if *p == DENIED_PORT)
            ));
        }
    }

    /// Where a change's compile time goes at 10,000 rules (run with --ignored --nocapture,
    /// e.g. under `perf record`).
    #[test]
    #[ignore]
    fn change_costs_at_10000() {
        let w = world(10_000, true);
        let mut c = plan::Compiler::new(w, PlanOptions::new(NODE));
        let p = c.plan();
        let rules: usize = p.chains.values().map(|c| c.rules.len()).sum();
        eprintln!(
            "{} sets, {} chains, {rules} rules",
            p.sets.len(),
            p.chains.len()
        );
        let k = edit_target(10_000);
        let t = std::time::Instant::now();
        let mut weight = 0;
        for j in 0..200 {
            c.upsert_policy(allow_policy(
                k,
                if j % 2 == 0 { 1 + j / 2 % 7 } else { 0 },
                true,
            ));
            weight += c.take_ops().iter().map(plan::Op::weight).sum::<usize>();
        }
        eprintln!(
            "edit: {:?} each, {} op weight",
            t.elapsed() / 200,
            weight / 200
        );
        let t = std::time::Instant::now();
        for j in 0..200 {
            let (ns, name) = relabel_target(j / 2);
            let mut e = c.world().endpoint(&ns, &name).unwrap().clone();
            e.labels.insert(
                "instance".into(),
                if j % 2 == 0 {
                    "moved".into()
                } else {
                    "1".into()
                },
            );
            c.upsert_endpoint(e);
            let _ = c.take_ops();
        }
        eprintln!("relabel: {:?} each", t.elapsed() / 200);
    }
}
