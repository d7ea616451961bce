//! The evaluator against hand-written expectations (from the Kubernetes docs), scenario by
//! scenario; every case is also walked through the compiled nftables plans (`compile` and the
//! iptables-style `compile_linear`), which must agree.

use weft_policy::testing::*;
use weft_policy::{
    Endpoint, Peer,
    Protocol::{self, Sctp, Tcp, Udp},
    Side, World, evaluate,
};

type Case = (&'static str, &'static str, u16, Protocol, bool);

fn base_pods() -> Vec<Endpoint> {
    vec![
        pod(
            "shop",
            "web",
            "a",
            &["10.0.1.10", "fd00:1::10"],
            "app=web,tier=front",
        ),
        pod("shop", "db", "a", &["10.0.1.11"], "app=db,tier=back"),
        pod("shop", "cache", "b", &["10.0.2.10"], "app=cache,tier=back"),
        pod("dev", "web", "b", &["10.0.2.11", "fd00:2::11"], "app=web"),
        pod("dev", "tool", "a", &["10.0.1.12"], "app=tool,role=client"),
        pod("ops", "mon", "b", &["10.0.2.12"], "app=mon"),
    ]
}

fn base_namespaces() -> Vec<weft_policy::Namespace> {
    vec![
        namespace("shop", "team=a,env=prod"),
        namespace("dev", "team=b,user=alice"),
        namespace("ops", ""),
    ]
}

fn base(policy_yaml: &str) -> World {
    let p = if policy_yaml.is_empty() {
        vec![]
    } else {
        policies(policy_yaml)
    };
    world(base_namespaces(), base_pods(), p)
}

fn np(name: &str, ns: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}"
    )
}

/// Checks every case with the evaluator, then walks it through both plans.
fn check(name: &str, w: &World, cases: &[Case]) {
    let compiled = plans(w, false);
    let linear = plans(w, true);
    let mut bad = Vec::new();
    for &(src, dst, port, proto, want) in cases {
        let (s, d): (Peer, Peer) = (src.parse().unwrap(), dst.parse().unwrap());
        let v = evaluate(w, &s, &d, port, proto).unwrap_or_else(|e| panic!("{name}: {e}"));
        if v.allowed != want {
            bad.push(format!(
                "evaluator {src} -> {dst} {port}/{proto}: want {want}\n{v}"
            ));
        }
        for (kind, p) in [("compiled", &compiled), ("linear", &linear)] {
            let got = walk(w, p, v.src.addr, v.dst.addr, proto, port);
            if got != want {
                bad.push(format!(
                    "{kind} plan {src} -> {dst} {port}/{proto}: want {want}, got {got}"
                ));
            }
        }
    }
    assert!(bad.is_empty(), "scenario {name}:\n{}", bad.join("\n"));
}

#[test]
fn s01_no_policy_allows_everything() {
    check(
        "no policy",
        &base(""),
        &[
            ("shop/web", "shop/db", 5432, Tcp, true),
            ("203.0.113.5", "shop/db", 80, Tcp, true),
            ("shop/db", "203.0.113.5", 443, Tcp, true),
            ("node/b", "shop/db", 80, Tcp, true),
            ("dev/web", "ops/mon", 53, Udp, true),
            ("shop/web", "node/a", 10250, Tcp, true),
        ],
    );
}

const DENY_INGRESS: &str = "  podSelector: {}\n  policyTypes: [Ingress]\n";
const DENY_EGRESS: &str = "  podSelector: {}\n  policyTypes: [Egress]\n";
const DENY_ALL: &str = "  podSelector: {}\n  policyTypes: [Ingress, Egress]\n";

#[test]
fn s02_default_deny_ingress() {
    let w = base(&np("deny", "shop", DENY_INGRESS));
    check(
        "default deny ingress",
        &w,
        &[
            ("shop/web", "shop/db", 5432, Tcp, false),
            ("dev/web", "shop/cache", 80, Tcp, false),
            ("203.0.113.5", "shop/web", 80, Tcp, false),
            ("shop/web", "dev/web", 80, Tcp, true),
            ("dev/tool", "ops/mon", 80, Tcp, true),
            ("node/a", "shop/db", 80, Tcp, true),
            ("node/b", "shop/db", 80, Tcp, false),
            ("shop/db", "shop/db", 80, Tcp, true),
        ],
    );
    let v = evaluate(
        &w,
        &"shop/web".parse().unwrap(),
        &"shop/db".parse().unwrap(),
        80,
        Tcp,
    )
    .unwrap();
    assert_eq!(v.egress, Side::NotIsolated);
    match &v.ingress {
        Side::Denied { isolated_by } => assert_eq!(isolated_by[0].to_string(), "shop/deny"),
        other => panic!("{other:?}"),
    }
    let v = evaluate(
        &w,
        &"node/a".parse().unwrap(),
        &"shop/db".parse().unwrap(),
        80,
        Tcp,
    )
    .unwrap();
    assert_eq!(v.ingress, Side::FromOwnNode);
}

#[test]
fn s03_default_deny_egress() {
    check(
        "default deny egress",
        &base(&np("deny", "shop", DENY_EGRESS)),
        &[
            ("shop/web", "dev/web", 80, Tcp, false),
            ("shop/web", "203.0.113.5", 443, Tcp, false),
            ("dev/web", "shop/web", 80, Tcp, true),
            ("shop/web", "node/a", 10250, Tcp, false),
            ("node/a", "shop/web", 80, Tcp, true),
            ("shop/cache", "shop/db", 80, Tcp, false),
        ],
    );
}

#[test]
fn s04_default_deny_all() {
    check(
        "default deny all",
        &base(&np("deny", "shop", DENY_ALL)),
        &[
            ("shop/web", "shop/db", 80, Tcp, false),
            ("dev/web", "shop/db", 80, Tcp, false),
            ("shop/db", "dev/web", 80, Tcp, false),
            ("dev/web", "ops/mon", 80, Tcp, true),
            ("shop/web", "shop/web", 80, Tcp, true),
        ],
    );
}

#[test]
fn s05_union_with_allow_all_ingress() {
    let y = np("deny", "shop", DENY_ALL)
        + &np(
            "allow-in",
            "shop",
            "  podSelector: {}\n  ingress:\n  - {}\n  policyTypes: [Ingress]\n",
        );
    check(
        "deny all + allow all ingress",
        &base(&y),
        &[
            ("dev/web", "shop/db", 80, Tcp, true),
            ("203.0.113.5", "shop/db", 80, Udp, true),
            ("shop/web", "shop/db", 80, Tcp, false),
            ("shop/db", "dev/web", 80, Tcp, false),
        ],
    );
}

#[test]
fn s06_only_selected_pods_are_isolated() {
    check(
        "pod selector scope",
        &base(&np(
            "db",
            "shop",
            "  podSelector: {matchLabels: {app: db}}\n  ingress: []\n",
        )),
        &[
            ("shop/web", "shop/db", 80, Tcp, false),
            ("dev/web", "shop/web", 80, Tcp, true),
            ("shop/db", "shop/web", 80, Tcp, true),
            ("shop/db", "dev/web", 80, Tcp, true),
        ],
    );
}

#[test]
fn s07_pod_selector_peer_is_same_namespace_only() {
    let y = np(
        "db",
        "shop",
        "  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {app: web}}}]\n    ports: [{protocol: TCP, port: 5432}]\n",
    );
    check(
        "pod selector peer",
        &base(&y),
        &[
            ("shop/web", "shop/db", 5432, Tcp, true),
            ("dev/web", "shop/db", 5432, Tcp, false),
            ("shop/cache", "shop/db", 5432, Tcp, false),
            ("shop/web", "shop/db", 5433, Tcp, false),
            ("shop/web", "shop/db", 5432, Udp, false),
        ],
    );
}

#[test]
fn s08_namespace_selector_peer() {
    let y = np(
        "db",
        "shop",
        "  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {team: b}}}]\n",
    );
    check(
        "namespace selector peer",
        &base(&y),
        &[
            ("dev/web", "shop/db", 80, Tcp, true),
            ("dev/tool", "shop/db", 80, Tcp, true),
            ("shop/web", "shop/db", 80, Tcp, false),
            ("ops/mon", "shop/db", 80, Tcp, false),
        ],
    );
}

#[test]
fn s09_combined_peer_is_and_two_peers_are_or() {
    let mut pods = base_pods();
    pods.push(pod("shop", "client", "b", &["10.0.2.13"], "role=client"));
    let and = np(
        "db",
        "shop",
        "  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {user: alice}}\n      podSelector: {matchLabels: {role: client}}\n",
    );
    let w = world(base_namespaces(), pods.clone(), policies(&and));
    check(
        "AND peer",
        &w,
        &[
            ("dev/tool", "shop/db", 80, Tcp, true),
            ("dev/web", "shop/db", 80, Tcp, false),
            ("shop/client", "shop/db", 80, Tcp, false),
        ],
    );
    let or = np(
        "db",
        "shop",
        "  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {user: alice}}\n    - podSelector: {matchLabels: {role: client}}\n",
    );
    let w = world(base_namespaces(), pods, policies(&or));
    check(
        "OR peers",
        &w,
        &[
            ("dev/tool", "shop/db", 80, Tcp, true),
            ("dev/web", "shop/db", 80, Tcp, true),
            ("shop/client", "shop/db", 80, Tcp, true),
            ("shop/web", "shop/db", 80, Tcp, false),
            ("ops/mon", "shop/db", 80, Tcp, false),
        ],
    );
}

#[test]
fn s10_namespace_by_name_label() {
    let y = np(
        "db",
        "shop",
        "  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ops}}}]\n",
    );
    check(
        "kubernetes.io/metadata.name",
        &base(&y),
        &[
            ("ops/mon", "shop/db", 80, Tcp, true),
            ("dev/web", "shop/db", 80, Tcp, false),
        ],
    );
}

#[test]
fn s11_match_expressions() {
    let peer = |exprs: &str| {
        np(
            "db",
            "shop",
            &format!(
                "  podSelector: {{matchLabels: {{app: db}}}}\n  ingress:\n  - from:\n    - namespaceSelector: {{}}\n      podSelector:\n        matchExpressions: {exprs}\n"
            ),
        )
    };
    check(
        "In + DoesNotExist",
        &base(&peer(
            "[{key: app, operator: In, values: [web, mon]}, {key: tier, operator: DoesNotExist}]",
        )),
        &[
            ("dev/web", "shop/db", 80, Tcp, true),
            ("ops/mon", "shop/db", 80, Tcp, true),
            ("shop/web", "shop/db", 80, Tcp, false),
            ("dev/tool", "shop/db", 80, Tcp, false),
        ],
    );
    check(
        "NotIn matches a missing key",
        &base(&peer("[{key: tier, operator: NotIn, values: [front]}]")),
        &[
            ("shop/web", "shop/db", 80, Tcp, false),
            ("shop/cache", "shop/db", 80, Tcp, true),
            ("dev/web", "shop/db", 80, Tcp, true),
            ("ops/mon", "shop/db", 80, Tcp, true),
        ],
    );
    check(
        "Exists",
        &base(&peer("[{key: role, operator: Exists}]")),
        &[
            ("dev/tool", "shop/db", 80, Tcp, true),
            ("dev/web", "shop/db", 80, Tcp, false),
        ],
    );
}

#[test]
fn s12_ip_block_with_except_for_external_addresses() {
    let y = np(
        "db",
        "shop",
        "  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from: [{ipBlock: {cidr: 172.17.0.0/16, except: [172.17.1.0/24]}}]\n    ports: [{protocol: TCP, port: 6379}]\n",
    );
    check(
        "ipBlock except",
        &base(&y),
        &[
            ("172.17.0.5", "shop/db", 6379, Tcp, true),
            ("172.17.1.5", "shop/db", 6379, Tcp, false),
            ("172.17.2.200", "shop/db", 6379, Tcp, true),
            ("172.17.255.255", "shop/db", 6379, Tcp, true),
            ("203.0.113.5", "shop/db", 6379, Tcp, false),
            ("172.17.0.5", "shop/db", 6380, Tcp, false),
        ],
    );
}

#[test]
fn s13_ip_block_matches_pod_and_node_addresses() {
    let y = np(
        "db",
        "shop",
        "  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.0.2.10/32]}}]\n",
    );
    check(
        "ipBlock on pods",
        &base(&y),
        &[
            ("shop/web", "shop/db", 80, Tcp, true),
            ("dev/web", "shop/db", 80, Tcp, true),
            ("shop/cache", "shop/db", 80, Tcp, false),
            ("10.0.2.1", "shop/db", 80, Tcp, true),
            ("node/b", "shop/db", 80, Tcp, false),
        ],
    );
}

#[test]
fn s14_protocols() {
    let y = np(
        "db",
        "shop",
        "  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - ports: [{protocol: UDP, port: 53}, {protocol: SCTP, port: 9000}]\n",
    );
    check(
        "protocols",
        &base(&y),
        &[
            ("shop/web", "shop/db", 53, Udp, true),
            ("shop/web", "shop/db", 53, Tcp, false),
            ("shop/web", "shop/db", 9000, Sctp, true),
            ("shop/web", "shop/db", 9000, Udp, false),
        ],
    );
}

#[test]
fn s15_protocol_without_port_means_every_port() {
    let y = np(
        "db",
        "shop",
        "  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - ports: [{protocol: UDP}]\n",
    );
    check(
        "protocol only",
        &base(&y),
        &[
            ("shop/web", "shop/db", 1, Udp, true),
            ("shop/web", "shop/db", 65535, Udp, true),
            ("shop/web", "shop/db", 80, Tcp, false),
        ],
    );
}

#[test]
fn s16_end_port_ranges() {
    let y = np(
        "multi-port-egress",
        "shop",
        "  podSelector: {matchLabels: {app: db}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{ipBlock: {cidr: 203.0.113.0/24}}]\n    ports: [{protocol: TCP, port: 32000, endPort: 32768}]\n",
    );
    check(
        "endPort",
        &base(&y),
        &[
            ("shop/db", "203.0.113.5", 31999, Tcp, false),
            ("shop/db", "203.0.113.5", 32000, Tcp, true),
            ("shop/db", "203.0.113.5", 32500, Tcp, true),
            ("shop/db", "203.0.113.5", 32768, Tcp, true),
            ("shop/db", "203.0.113.5", 32769, Tcp, false),
            ("shop/db", "203.0.113.5", 32000, Udp, false),
            ("shop/db", "198.51.100.1", 32000, Tcp, false),
        ],
    );
}

fn ported_pods() -> Vec<Endpoint> {
    let mut pods = base_pods();
    for p in &mut pods {
        match (p.namespace.as_str(), p.name.as_str()) {
            ("shop", "db") => {
                *p = with_port(with_port(p.clone(), "http", Tcp, 8080), "dns", Udp, 53);
            }
            ("shop", "cache") => *p = with_port(p.clone(), "http", Tcp, 9090),
            _ => {}
        }
    }
    pods
}

#[test]
fn s17_named_ports_resolve_on_each_destination_pod() {
    let y = np(
        "back",
        "shop",
        "  podSelector: {matchLabels: {tier: back}}\n  ingress:\n  - ports: [{port: http}]\n",
    );
    let w = world(base_namespaces(), ported_pods(), policies(&y));
    check(
        "named ingress ports",
        &w,
        &[
            ("shop/web", "shop/db", 8080, Tcp, true),
            ("shop/web", "shop/db", 9090, Tcp, false),
            ("shop/web", "shop/cache", 9090, Tcp, true),
            ("shop/web", "shop/cache", 8080, Tcp, false),
        ],
    );
}

#[test]
fn s18_named_port_needs_the_same_protocol() {
    let tcp = np(
        "db",
        "shop",
        "  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - ports: [{port: dns}]\n",
    );
    let w = world(base_namespaces(), ported_pods(), policies(&tcp));
    check(
        "named port, wrong protocol",
        &w,
        &[
            ("shop/web", "shop/db", 53, Udp, false),
            ("shop/web", "shop/db", 53, Tcp, false),
        ],
    );
    let udp = np(
        "db",
        "shop",
        "  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - ports: [{port: dns, protocol: UDP}]\n",
    );
    let w = world(base_namespaces(), ported_pods(), policies(&udp));
    check(
        "named port, right protocol",
        &w,
        &[("shop/web", "shop/db", 53, Udp, true)],
    );
}

#[test]
fn s19_named_ports_in_egress_resolve_on_the_peer() {
    let y = np(
        "web",
        "shop",
        "  podSelector: {matchLabels: {app: web}}\n  policyTypes: [Egress]\n  egress:\n  - ports: [{port: http}]\n",
    );
    let w = world(base_namespaces(), ported_pods(), policies(&y));
    check(
        "named egress ports",
        &w,
        &[
            ("shop/web", "shop/db", 8080, Tcp, true),
            ("shop/web", "shop/db", 9090, Tcp, false),
            ("shop/web", "shop/cache", 9090, Tcp, true),
            ("shop/web", "203.0.113.5", 8080, Tcp, false),
            ("shop/web", "dev/web", 8080, Tcp, false),
        ],
    );
}

#[test]
fn s20_empty_ports_and_empty_peers() {
    let y = np(
        "db",
        "shop",
        "  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {app: web}}}]\n  - ports: [{port: 80}]\n",
    );
    check(
        "empty ports / empty from",
        &base(&y),
        &[
            ("shop/web", "shop/db", 1, Tcp, true),
            ("shop/web", "shop/db", 9999, Udp, true),
            ("shop/web", "shop/db", 7, Sctp, true),
            ("shop/cache", "shop/db", 81, Tcp, false),
            ("shop/cache", "shop/db", 80, Tcp, true),
            ("203.0.113.5", "shop/db", 80, Tcp, true),
            ("203.0.113.5", "shop/db", 81, Tcp, false),
        ],
    );
}

#[test]
fn s21_policy_types_as_written_win_over_rules() {
    let y = np(
        "db",
        "shop",
        "  podSelector: {matchLabels: {app: db}}\n  policyTypes: [Ingress]\n  ingress: []\n  egress:\n  - to: [{ipBlock: {cidr: 1.1.1.1/32}}]\n",
    );
    check(
        "policyTypes Ingress with egress rules",
        &base(&y),
        &[
            ("shop/db", "203.0.113.5", 80, Tcp, true),
            ("shop/web", "shop/db", 80, Tcp, false),
        ],
    );
    let y = np(
        "db",
        "shop",
        "  podSelector: {matchLabels: {app: db}}\n  policyTypes: [Egress]\n  ingress:\n  - from: [{podSelector: {matchLabels: {app: nothing}}}]\n  egress:\n  - {}\n",
    );
    check(
        "policyTypes Egress with ingress rules",
        &base(&y),
        &[
            ("shop/web", "shop/db", 80, Tcp, true),
            ("shop/db", "203.0.113.5", 80, Tcp, true),
        ],
    );
}

#[test]
fn s22_policy_types_default() {
    let y = np(
        "db",
        "shop",
        "  podSelector: {matchLabels: {app: db}}\n  egress:\n  - to: [{podSelector: {matchLabels: {app: web}}}]\n",
    );
    check(
        "default policyTypes",
        &base(&y),
        &[
            ("shop/db", "shop/web", 80, Tcp, true),
            ("shop/db", "shop/cache", 80, Tcp, false),
            ("shop/web", "shop/db", 80, Tcp, false),
            ("shop/db", "203.0.113.5", 80, Tcp, false),
        ],
    );
}

#[test]
fn s23_union_across_policies_and_rules() {
    let y = np(
        "a",
        "shop",
        "  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {app: web}}}]\n    ports: [{port: 80}]\n  - from: [{ipBlock: {cidr: 203.0.113.0/24}}]\n    ports: [{port: 22}]\n",
    ) + &np(
        "b",
        "shop",
        "  podSelector: {matchLabels: {tier: back}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {app: cache}}}]\n    ports: [{port: 443}]\n",
    );
    let w = base(&y);
    check(
        "union",
        &w,
        &[
            ("shop/web", "shop/db", 80, Tcp, true),
            ("shop/web", "shop/db", 443, Tcp, false),
            ("shop/cache", "shop/db", 443, Tcp, true),
            ("shop/cache", "shop/db", 80, Tcp, false),
            ("203.0.113.5", "shop/db", 22, Tcp, true),
            ("203.0.113.5", "shop/db", 80, Tcp, false),
        ],
    );
    let why = |src: &str, port| {
        let v = evaluate(
            &w,
            &src.parse().unwrap(),
            &"shop/db".parse().unwrap(),
            port,
            Tcp,
        )
        .unwrap();
        match v.ingress {
            Side::Allowed { rules, isolated_by } => {
                assert_eq!(isolated_by.len(), 2);
                rules.iter().map(|r| r.to_string()).collect::<Vec<_>>()
            }
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(why("shop/web", 80), vec!["shop/a ingress[0]"]);
    assert_eq!(why("203.0.113.5", 22), vec!["shop/a ingress[1]"]);
    assert_eq!(why("shop/cache", 443), vec!["shop/b ingress[0]"]);
}

#[test]
fn s24_egress_and_ingress_must_both_allow() {
    let eg = np(
        "web",
        "shop",
        "  podSelector: {matchLabels: {app: web}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{podSelector: {matchLabels: {app: cache}}}]\n",
    );
    check(
        "egress restricts",
        &base(&eg),
        &[
            ("shop/web", "shop/db", 80, Tcp, false),
            ("shop/web", "shop/cache", 80, Tcp, true),
            ("shop/db", "shop/web", 80, Tcp, true),
        ],
    );
    let both = eg
        + &np(
            "cache",
            "shop",
            "  podSelector: {matchLabels: {app: cache}}\n  ingress: []\n",
        );
    check(
        "ingress also restricts",
        &base(&both),
        &[("shop/web", "shop/cache", 80, Tcp, false)],
    );
}

#[test]
fn s25_node_traffic() {
    check(
        "node traffic",
        &base(&np("deny", "shop", DENY_ALL)),
        &[
            ("node/a", "shop/web", 80, Tcp, true),
            ("10.0.1.1", "shop/web", 80, Tcp, true),
            ("node/b", "shop/web", 80, Tcp, false),
            ("node/a", "shop/cache", 80, Tcp, false),
            ("node/b", "shop/cache", 80, Tcp, true),
        ],
    );
}

#[test]
fn s26_pod_to_its_own_node_is_egress() {
    let y = np("deny", "shop", DENY_EGRESS)
        + &np(
            "web-to-node",
            "shop",
            "  podSelector: {matchLabels: {app: web}}\n  egress:\n  - to: [{ipBlock: {cidr: 192.168.0.1/32}}]\n",
        );
    check(
        "egress to the node",
        &base(&y),
        &[
            ("shop/web", "node/a", 10250, Tcp, true),
            ("shop/db", "node/a", 10250, Tcp, false),
            ("shop/web", "node/b", 10250, Tcp, false),
        ],
    );
}

#[test]
fn s27_a_pod_can_always_reach_itself() {
    let w = base(&np("deny", "shop", DENY_ALL));
    check(
        "self",
        &w,
        &[
            ("shop/web", "shop/web", 80, Tcp, true),
            ("10.0.1.10", "10.0.1.10", 8080, Udp, true),
        ],
    );
    let v = evaluate(
        &w,
        &"shop/web".parse().unwrap(),
        &"shop/web".parse().unwrap(),
        80,
        Tcp,
    )
    .unwrap();
    assert_eq!(v.egress, Side::SelfTraffic);
}

#[test]
fn s28_cross_node_pods() {
    let y = np(
        "cache",
        "shop",
        "  podSelector: {matchLabels: {app: cache}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {tier: front}}}]\n  egress:\n  - to: [{namespaceSelector: {matchLabels: {team: b}}}]\n",
    );
    check(
        "cross node",
        &base(&y),
        &[
            ("shop/web", "shop/cache", 80, Tcp, true),
            ("shop/db", "shop/cache", 80, Tcp, false),
            ("shop/cache", "dev/tool", 80, Tcp, true),
            ("shop/cache", "shop/web", 80, Tcp, false),
        ],
    );
}

#[test]
fn s29_unprogrammed_pod_addresses_are_default_deny() {
    let w = base("");
    check(
        "unprogrammed",
        &w,
        &[
            ("10.0.1.99", "dev/web", 80, Tcp, false),
            ("dev/web", "10.0.1.99", 80, Tcp, false),
            ("shop/web", "10.0.1.99", 80, Tcp, false),
            ("node/a", "10.0.1.99", 80, Tcp, true),
            ("node/b", "10.0.1.99", 80, Tcp, false),
            ("203.0.113.5", "10.0.1.99", 80, Tcp, false),
            ("10.0.1.99", "node/a", 80, Tcp, false),
        ],
    );
    let v = evaluate(
        &w,
        &"203.0.113.5".parse().unwrap(),
        &"10.0.1.99".parse().unwrap(),
        80,
        Tcp,
    )
    .unwrap();
    assert_eq!(v.ingress, Side::Unprogrammed);
}

#[test]
fn s30_families_are_matched_separately() {
    let y = np(
        "web",
        "shop",
        "  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from: [{ipBlock: {cidr: 10.0.0.0/8}}]\n    ports: [{port: 80}]\n  - from: [{namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}]\n    ports: [{port: 443}]\n",
    );
    check(
        "dual stack",
        &base(&y),
        &[
            ("dev/web", "shop/web", 80, Tcp, true),
            ("fd00:2::11", "fd00:1::10", 80, Tcp, false),
            ("fd00:2::11", "fd00:1::10", 443, Tcp, true),
            ("fd00:9::1", "fd00:1::10", 443, Tcp, false),
        ],
    );
}

#[test]
fn s31_policies_only_select_their_own_namespace() {
    check(
        "other namespace",
        &base(&np("deny", "dev", DENY_INGRESS)),
        &[
            ("dev/web", "shop/web", 80, Tcp, true),
            ("shop/web", "dev/web", 80, Tcp, false),
        ],
    );
}

#[test]
fn s32_namespace_without_object_still_has_its_name_label() {
    let mut pods = base_pods();
    pods.push(pod("ghost", "g", "b", &["10.0.2.50"], "app=g"));
    let y = np(
        "db",
        "shop",
        "  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from: [{namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [ghost]}]}}]\n",
    );
    let w = world(base_namespaces(), pods, policies(&y));
    check(
        "implicit namespace",
        &w,
        &[
            ("ghost/g", "shop/db", 80, Tcp, true),
            ("ops/mon", "shop/db", 80, Tcp, false),
        ],
    );
}

#[test]
fn explain_output_names_policy_and_rule() {
    let y = np(
        "db",
        "shop",
        "  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {app: web}}}]\n    ports: [{port: 5432}]\n",
    );
    let w = base(&y);
    let v = evaluate(
        &w,
        &"shop/web".parse().unwrap(),
        &"shop/db".parse().unwrap(),
        5432,
        Tcp,
    )
    .unwrap();
    assert_eq!(
        v.to_string(),
        "ALLOWED tcp/5432 from 10.0.1.10 (pod shop/web on a) to 10.0.1.11 (pod shop/db on a)\n  egress : allowed, no policy selects the pod for egress\n  ingress: allowed by shop/db ingress[0] (isolated by shop/db)"
    );
    let v = evaluate(
        &w,
        &"dev/web".parse().unwrap(),
        &"shop/db".parse().unwrap(),
        5432,
        Tcp,
    )
    .unwrap();
    assert!(
        v.to_string()
            .ends_with("ingress: denied, isolated by shop/db and no ingress rule matches"),
        "{v}"
    );
    // Errors: unknown pod, no common family.
    assert!(
        evaluate(
            &w,
            &"shop/nope".parse().unwrap(),
            &"shop/db".parse().unwrap(),
            1,
            Tcp
        )
        .is_err()
    );
    assert!(
        evaluate(
            &w,
            &"fd00::1".parse().unwrap(),
            &"shop/db".parse().unwrap(),
            1,
            Tcp
        )
        .is_err()
    );
}
