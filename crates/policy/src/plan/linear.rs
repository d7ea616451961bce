//! The same policy, rendered the way iptables-based implementations do: one rule per
//! (selected pod, policy rule, peer CIDR, port), in linear per-pod chains reached by one rule
//! per pod address. Only for benchmarks and comparisons: the per-packet cost of this plan
//! grows with pods and rules, which is what `compile` avoids. It shares `compile`'s base sets
//! (conntrack, self, default-deny), so both plans enforce the same semantics (the tests walk
//! both).

use std::net::IpAddr;

use super::names::{BaseChain, ChainName, Family, SetName};
use super::ranges::{self, u128_addr};
use super::{Chain, Field, Plan, PlanOptions, Rule, Verdict, compile};
use crate::model::{Direction, Endpoint, PolicyPeer, PortRef, World};

/// Builds the iptables-style plan for `opts.node` (see the module docs).
pub fn compile_linear(world: &World, opts: &PlanOptions) -> Plan {
    let bare = World {
        policies: Vec::new(),
        ..world.clone()
    };
    let mut plan = compile(&bare, opts);
    for dir in [Direction::Ingress, Direction::Egress] {
        for f in Family::ALL {
            plan.sets.remove(&SetName::PodMap(dir, f).to_string());
        }
    }
    for name in BaseChain::ALL {
        if let Some(c) = plan.chains.get_mut(name.as_str()) {
            c.rules.retain(|r| !matches!(r, Rule::AddrVmap { .. }));
        }
    }
    for pod in world.endpoints.iter().filter(|e| e.node == opts.node) {
        for dir in [Direction::Ingress, Direction::Egress] {
            let rules = pod_rules(world, pod, dir);
            let Some(rules) = rules else { continue };
            let key = format!("{}/{}", pod.namespace, pod.name);
            let chain = ChainName::linear(dir, &key).to_string();
            plan.chains
                .insert(chain.clone(), Chain { hook: None, rules });
            let (field, bases): (Field, &[BaseChain]) = match dir {
                Direction::Ingress => (Field::Daddr, &[BaseChain::PodIngress]),
                Direction::Egress => (
                    Field::Saddr,
                    &[BaseChain::PodEgress, BaseChain::PodEgressLocal],
                ),
            };
            for base in bases {
                if let Some(c) = plan.chains.get_mut(base.as_str()) {
                    for a in &pod.addresses {
                        let r = Some((*a, *a));
                        let (saddr, daddr) = if field == Field::Saddr {
                            (r, None)
                        } else {
                            (None, r)
                        };
                        c.rules.push(Rule::Match {
                            v6: a.is_ipv6(),
                            saddr,
                            daddr,
                            proto: None,
                            dport: None,
                            verdict: Verdict::Jump(chain.clone()),
                        });
                    }
                }
            }
        }
    }
    plan
}

type Span = Option<(IpAddr, IpAddr)>;
/// (protocol, destination ports); `None` = any.
type PortMatch = (Option<u8>, Option<(u16, u16)>);

/// The linear rules of `pod`'s chain in `dir`, or `None` when it is not isolated.
fn pod_rules(world: &World, pod: &Endpoint, dir: Direction) -> Option<Vec<Rule>> {
    let policies: Vec<_> = world
        .policies
        .iter()
        .filter(|p| p.applies(dir) && p.selects(pod))
        .collect();
    if policies.is_empty() {
        return None;
    }
    let mut rules = Vec::new();
    for p in policies {
        for rule in p.rules(dir) {
            // The remote addresses of this rule: (v6, span) with span None = any.
            let mut remotes: Vec<(bool, Span)> = Vec::new();
            if rule.peers.is_empty() {
                remotes.push((false, None));
                remotes.push((true, None));
            }
            for peer in &rule.peers {
                match peer {
                    PolicyPeer::IpBlock(b) => {
                        for r in ranges::subtract(&b.cidr, &b.except) {
                            for (lo, len) in ranges::to_prefixes(r) {
                                let bits = if r.v6 { 128 } else { 32 };
                                let hi = if len == 0 {
                                    ranges::Range::everything(r.v6).hi
                                } else {
                                    lo | ((1u128 << (bits - u32::from(len))) - 1)
                                };
                                remotes
                                    .push((r.v6, Some((u128_addr(r.v6, lo), u128_addr(r.v6, hi)))));
                            }
                        }
                    }
                    PolicyPeer::Pods { .. } => {
                        for e in &world.endpoints {
                            if e.addresses
                                .iter()
                                .any(|a| crate::eval::peer_matches(world, p, peer, *a, Some(e)))
                            {
                                for a in &e.addresses {
                                    remotes.push((a.is_ipv6(), Some((*a, *a))));
                                }
                            }
                        }
                    }
                }
            }
            // (proto, dport) pairs; None/None = any protocol.
            let mut ports: Vec<PortMatch> = Vec::new();
            let mut named_egress = Vec::new();
            if rule.ports.is_empty() {
                ports.push((None, None));
            }
            for port in &rule.ports {
                let proto = Some(port.protocol.number());
                match &port.port {
                    None => ports.push((proto, None)),
                    Some(PortRef::Number(n)) => {
                        ports.push((proto, Some((*n, port.end_port.unwrap_or(*n).max(*n)))))
                    }
                    Some(PortRef::Name(name)) => match dir {
                        Direction::Ingress => {
                            if let Some(n) = pod.named_port(name, port.protocol) {
                                ports.push((proto, Some((n, n))));
                            }
                        }
                        Direction::Egress => named_egress.push((name, port.protocol)),
                    },
                }
            }
            let field_rule = |v6: bool, span: Span, proto, dport| {
                let (saddr, daddr) = match dir {
                    Direction::Ingress => (span, None),
                    Direction::Egress => (None, span),
                };
                Rule::Match {
                    v6,
                    saddr,
                    daddr,
                    proto,
                    dport,
                    verdict: Verdict::Accept,
                }
            };
            for (v6, span) in &remotes {
                for (proto, dport) in &ports {
                    rules.push(field_rule(*v6, *span, *proto, *dport));
                }
            }
            // Egress named ports: one rule per destination pod address where the name
            // resolves, if that address is one of the rule's peers.
            for (name, protocol) in named_egress {
                for d in &world.endpoints {
                    let Some(n) = d.named_port(name, protocol) else {
                        continue;
                    };
                    for a in &d.addresses {
                        let covered = remotes.iter().any(|(v6, span)| {
                            *v6 == a.is_ipv6() && span.is_none_or(|(lo, hi)| lo <= *a && *a <= hi)
                        });
                        if covered {
                            rules.push(field_rule(
                                a.is_ipv6(),
                                Some((*a, *a)),
                                Some(protocol.number()),
                                Some((n, n)),
                            ));
                        }
                    }
                }
            }
        }
    }
    rules.push(Rule::CounterDrop);
    Some(rules)
}
