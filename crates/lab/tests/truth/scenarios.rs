//! The cluster the truth table runs on, and the policy scenarios, as data.
//!
//! Cluster: two nodes, three namespaces, every namespace with pods on both nodes (so every
//! scenario has same-node and cross-node cells), named ports that differ per pod (so a named
//! port means different numbers on different destinations).
//!
//! Scenario manifests are YAML as kubectl takes it (NetworkPolicy objects, and Namespace or
//! PodLabels objects that relabel for the scenario: the base labels come back after it); `@ip4:POD@`, `@ip6:POD@` (a pod's
//! address as a /32, /128), `@block4:NODE@`, `@block6:NODE@` (a node's pod block) are filled
//! in once the lab has handed out addresses.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use serde::Deserialize;
use serde_json::Value;

use super::oracle::{Cluster, Labels, Pod, Proto};

/// The outside host of every lab (`docs/lab.md`, topology).
pub const OUT_V4: &str = "203.0.113.1";
pub const OUT_V6: &str = "2001:db8:ff::1";

/// (name, labels) of the namespaces.
pub const NAMESPACES: &[(&str, &[(&str, &str)])] = &[
    ("alpha", &[("team", "a"), ("env", "prod")]),
    ("beta", &[("team", "b"), ("env", "prod")]),
    ("gamma", &[("env", "dev")]),
];

pub struct PodSpec {
    pub name: &'static str,
    pub namespace: &'static str,
    pub node: &'static str,
    pub labels: &'static [(&'static str, &'static str)],
    /// Named container ports: (name, protocol, number).
    pub ports: &'static [(&'static str, &'static str, u16)],
}

pub const PODS: &[PodSpec] = &[
    PodSpec {
        name: "a-web",
        namespace: "alpha",
        node: "n1",
        labels: &[("app", "web"), ("tier", "front")],
        ports: &[("http", "TCP", 8080), ("dns", "UDP", 5353)],
    },
    PodSpec {
        name: "a-db",
        namespace: "alpha",
        node: "n2",
        labels: &[("app", "db"), ("tier", "back")],
        ports: &[("http", "TCP", 80), ("dns", "UDP", 53), ("sig", "SCTP", 80)],
    },
    PodSpec {
        name: "a-cli",
        namespace: "alpha",
        node: "n2",
        labels: &[("app", "client"), ("role", "probe")],
        ports: &[],
    },
    PodSpec {
        name: "b-web",
        namespace: "beta",
        node: "n2",
        labels: &[("app", "web"), ("tier", "front")],
        ports: &[("http", "TCP", 8080), ("sig", "SCTP", 80)],
    },
    PodSpec {
        name: "b-cli",
        namespace: "beta",
        node: "n1",
        labels: &[("app", "client")],
        ports: &[],
    },
    PodSpec {
        name: "g-cli",
        namespace: "gamma",
        node: "n1",
        labels: &[("app", "client"), ("role", "probe")],
        ports: &[],
    },
    PodSpec {
        name: "g-x",
        namespace: "gamma",
        node: "n2",
        labels: &[],
        ports: &[],
    },
];

pub const NODES: &[&str] = &["n1", "n2"];

/// The ports every pod (and the outside host) listens on.
pub const TCP_PORTS: &[u16] = &[80, 81, 8080, 9090];
pub const UDP_PORTS: &[u16] = &[53, 5353];
/// SCTP is probed by raw INITs (see `sctp`), received by raw sockets in every destination.
pub const SCTP_PORTS: &[u16] = &[53, 80];

pub struct Scenario {
    pub name: &'static str,
    /// The points of the semantics it covers.
    pub covers: &'static str,
    pub yaml: &'static str,
}

macro_rules! np {
    ($ns:literal, $name:literal, $spec:literal) => {
        concat!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: ",
            $name,
            "\n  namespace: ",
            $ns,
            "\nspec:\n",
            $spec,
            "\n---\n"
        )
    };
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "01-deny-all-ingress",
        covers: "empty podSelector, inferred policyTypes (Ingress), no rules = deny, own node allowed, other namespaces untouched",
        yaml: np!("alpha", "deny-in", "  podSelector: {}"),
    },
    Scenario {
        name: "02-deny-all-egress",
        covers: "policyTypes [Egress] only: egress denied, ingress open (replies of inbound connections still flow)",
        yaml: np!(
            "alpha",
            "deny-out",
            "  podSelector: {}\n  policyTypes: [Egress]"
        ),
    },
    Scenario {
        name: "03-deny-both",
        covers: "policyTypes [Ingress, Egress] with no rules",
        yaml: np!(
            "beta",
            "deny-both",
            "  podSelector: {}\n  policyTypes: [Ingress, Egress]"
        ),
    },
    Scenario {
        name: "04-allow-all-over-deny",
        covers: "empty rule (no from, no ports) = everything; union with a deny-all",
        yaml: concat!(
            np!("alpha", "deny-in", "  podSelector: {}"),
            np!(
                "alpha",
                "allow-all",
                "  podSelector: {}\n  ingress:\n  - {}"
            )
        ),
    },
    Scenario {
        name: "05-matchlabels-from-pods",
        covers: "podSelector matchLabels on both sides; a podSelector peer is the policy's namespace only",
        yaml: np!(
            "alpha",
            "web-from-clients",
            "  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {app: client}}"
        ),
    },
    Scenario {
        name: "06-expr-in",
        covers: "matchExpressions In (target and peer)",
        yaml: np!(
            "alpha",
            "in",
            "  podSelector:\n    matchExpressions: [{key: tier, operator: In, values: [front, back]}]\n  ingress:\n  - from:\n    - podSelector:\n        matchExpressions: [{key: app, operator: In, values: [client, web]}]"
        ),
    },
    Scenario {
        name: "07-expr-notin",
        covers: "matchExpressions NotIn (a pod without the key matches NotIn)",
        yaml: np!(
            "gamma",
            "notin",
            "  podSelector:\n    matchExpressions: [{key: app, operator: NotIn, values: [web]}]\n  ingress:\n  - from:\n    - namespaceSelector: {}\n      podSelector:\n        matchExpressions: [{key: role, operator: NotIn, values: [probe]}]"
        ),
    },
    Scenario {
        name: "08-expr-exists",
        covers: "matchExpressions Exists, namespaceSelector {} = all namespaces",
        yaml: np!(
            "gamma",
            "exists",
            "  podSelector:\n    matchExpressions: [{key: app, operator: Exists}]\n  ingress:\n  - from:\n    - namespaceSelector: {}\n      podSelector:\n        matchExpressions: [{key: role, operator: Exists}]"
        ),
    },
    Scenario {
        name: "09-expr-doesnotexist",
        covers: "matchExpressions DoesNotExist on pods and namespaces",
        yaml: np!(
            "gamma",
            "dne",
            "  podSelector:\n    matchExpressions: [{key: app, operator: DoesNotExist}]\n  ingress:\n  - from:\n    - namespaceSelector:\n        matchExpressions: [{key: team, operator: DoesNotExist}]"
        ),
    },
    Scenario {
        name: "10-namespace-selector",
        covers: "namespaceSelector alone: every pod of the matching namespaces",
        yaml: np!(
            "beta",
            "from-team-a",
            "  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {team: a}}"
        ),
    },
    Scenario {
        name: "11-ns-and-pod-in-one-peer",
        covers: "namespaceSelector and podSelector in one peer: pods matching both",
        yaml: np!(
            "beta",
            "prod-clients",
            "  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {env: prod}}\n      podSelector: {matchLabels: {app: client}}"
        ),
    },
    Scenario {
        name: "12-ns-or-pod-two-peers",
        covers: "the same selectors as two peers: union of the peers",
        yaml: np!(
            "beta",
            "prod-or-clients",
            "  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {env: prod}}\n    - podSelector: {matchLabels: {app: client}}"
        ),
    },
    Scenario {
        name: "13-metadata-name-label",
        covers: "the automatic kubernetes.io/metadata.name namespace label",
        yaml: np!(
            "alpha",
            "from-gamma",
            "  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: gamma}}"
        ),
    },
    Scenario {
        name: "14-ipblock-except-ingress",
        covers: "ipBlock cidr with except, on pod addresses (both families); node traffic by address",
        yaml: np!(
            "alpha",
            "block",
            "  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.244.0.0/16, except: ['@ip4:a-cli@', '@block4:n1@']}\n    - ipBlock: {cidr: 'fd00:10:244::/56', except: ['@ip6:a-cli@']}"
        ),
    },
    Scenario {
        name: "15-ipblock-egress-outside",
        covers: "egress to an ipBlock outside the cluster only (ports), pods unreachable",
        yaml: np!(
            "alpha",
            "out-only",
            "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - ipBlock: {cidr: 203.0.113.0/24}\n    - ipBlock: {cidr: '2001:db8:ff::/64'}\n    ports:\n    - {port: 80}"
        ),
    },
    Scenario {
        name: "16-egress-to-namespace-udp",
        covers: "egress to a namespaceSelector on one UDP port; inferred Egress from egress rules also isolates ingress",
        yaml: np!(
            "beta",
            "dns-to-alpha",
            "  podSelector: {}\n  egress:\n  - to:\n    - namespaceSelector: {matchLabels: {team: a}}\n    ports:\n    - {protocol: UDP, port: 53}"
        ),
    },
    Scenario {
        name: "17-ports-tcp-and-udp",
        covers: "numeric TCP and UDP ports, protocol defaulting to TCP, no from = all sources",
        yaml: np!(
            "alpha",
            "ports",
            "  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - ports:\n    - {port: 80}\n    - {protocol: UDP, port: 5353}"
        ),
    },
    Scenario {
        name: "18-protocol-without-port",
        covers: "a port entry without port: every port of that protocol (UDP), none of TCP",
        yaml: np!(
            "beta",
            "all-udp",
            "  podSelector: {}\n  ingress:\n  - ports:\n    - {protocol: UDP}"
        ),
    },
    Scenario {
        name: "19-sctp-only",
        covers: "SCTP rules (port and whole protocol) open no TCP or UDP port",
        yaml: np!(
            "alpha",
            "sctp",
            "  podSelector: {}\n  ingress:\n  - ports:\n    - {protocol: SCTP, port: 80}\n    - {protocol: SCTP}\n  egress:\n  - ports:\n    - {protocol: SCTP, port: 53}"
        ),
    },
    Scenario {
        name: "20-named-ports-ingress",
        covers: "named ports resolved per destination pod (http is 8080 on a-web, 80 on a-db, absent on a-cli)",
        yaml: np!(
            "alpha",
            "named",
            "  podSelector: {}\n  ingress:\n  - ports:\n    - {port: http}\n    - {port: dns, protocol: UDP}"
        ),
    },
    Scenario {
        name: "21-named-ports-egress",
        covers: "named ports in egress, resolved on each peer pod; the outside has no named ports",
        yaml: np!(
            "beta",
            "named-out",
            "  podSelector: {matchLabels: {app: client}}\n  policyTypes: [Egress]\n  egress:\n  - ports:\n    - {port: http}\n    - {port: dns, protocol: UDP}"
        ),
    },
    Scenario {
        name: "22-endport-ranges",
        covers: "endPort ranges (inclusive) for TCP and UDP",
        yaml: np!(
            "alpha",
            "range",
            "  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - ports:\n    - {port: 80, endPort: 8080}\n    - {protocol: UDP, port: 50, endPort: 60}"
        ),
    },
    Scenario {
        name: "23-union-of-policies",
        covers: "two policies selecting one pod: the union of their rules",
        yaml: concat!(
            np!(
                "alpha",
                "clients-80",
                "  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {app: client}}}]\n    ports: [{port: 80}]"
            ),
            np!(
                "alpha",
                "beta-8080",
                "  podSelector: {matchLabels: {tier: front}}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {team: b}}}]\n    ports: [{port: 8080}]"
            )
        ),
    },
    Scenario {
        name: "24-only-selected-isolated",
        covers: "isolation only of selected pods: ingress: [] isolates a-db, its namespace mates stay open",
        yaml: np!(
            "alpha",
            "db-closed",
            "  podSelector: {matchLabels: {app: db}}\n  ingress: []"
        ),
    },
    Scenario {
        name: "25-other-namespace-no-effect",
        covers: "policies select only pods of their own namespace, whatever the labels",
        yaml: concat!(
            np!(
                "gamma",
                "deny-gamma",
                "  podSelector: {}\n  policyTypes: [Ingress, Egress]"
            ),
            np!(
                "beta",
                "web-only-beta",
                "  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from: [{podSelector: {}}]"
            )
        ),
    },
    Scenario {
        name: "26-replies-both-ways",
        covers: "replies allowed: a-web may only send, a-db may only receive; connections they open or accept work both ways",
        yaml: concat!(
            np!(
                "alpha",
                "web-no-in",
                "  podSelector: {matchLabels: {app: web}}\n  policyTypes: [Ingress]"
            ),
            np!(
                "alpha",
                "db-no-out",
                "  podSelector: {matchLabels: {app: db}}\n  policyTypes: [Egress]"
            )
        ),
    },
    Scenario {
        name: "27-egress-and-ingress-both-needed",
        covers: "a connection needs the source's egress and the destination's ingress",
        yaml: concat!(
            np!(
                "alpha",
                "cli-to-web",
                "  podSelector: {matchLabels: {app: client}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}]"
            ),
            np!(
                "beta",
                "web-from-beta",
                "  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from: [{podSelector: {}}]"
            )
        ),
    },
    Scenario {
        name: "28-explicit-ingress-ignores-egress-rules",
        covers: "policyTypes as written: [Ingress] with egress rules leaves egress open",
        yaml: np!(
            "alpha",
            "in-only",
            "  podSelector: {matchLabels: {app: client}}\n  policyTypes: [Ingress]\n  ingress:\n  - ports: [{port: 9090}]\n  egress:\n  - to: [{podSelector: {matchLabels: {app: db}}}]"
        ),
    },
    Scenario {
        name: "29-empty-from-list-with-ports",
        covers: "from: [] (empty peer list) = all sources, restricted by ports",
        yaml: np!(
            "gamma",
            "any-9090",
            "  podSelector: {}\n  ingress:\n  - from: []\n    ports: [{port: 9090}, {protocol: UDP, port: 53}]"
        ),
    },
    Scenario {
        name: "30-ipblock-node-block-egress",
        covers: "egress ipBlock = one node's pod block: same-node pods only (cross-node denied), except carving one pod",
        yaml: np!(
            "beta",
            "to-n2",
            "  podSelector: {matchLabels: {app: client}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - ipBlock: {cidr: '@block4:n2@', except: ['@ip4:a-db@']}\n    - ipBlock: {cidr: '@block6:n2@'}"
        ),
    },
    Scenario {
        name: "31-deny-all-from-nodes",
        covers: "nodes: the own node is always allowed in, another node only by an ipBlock holding its address",
        yaml: np!(
            "gamma",
            "pods-only",
            "  podSelector: {}\n  ingress:\n  - from: [{namespaceSelector: {}}]"
        ),
    },
    Scenario {
        name: "32-named-port-protocol-must-match",
        covers: "a named port matches only with its own protocol (http is TCP, dns is UDP)",
        yaml: np!(
            "alpha",
            "wrong-proto",
            "  podSelector: {}\n  ingress:\n  - ports:\n    - {port: http, protocol: UDP}\n    - {port: dns}"
        ),
    },
    Scenario {
        name: "33-egress-internet-only",
        covers: "egress ipBlock 0.0.0.0/0 and ::/0 except the pod network: outside and nodes yes, pods no",
        yaml: np!(
            "alpha",
            "internet",
            "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - ipBlock: {cidr: 0.0.0.0/0, except: [10.244.0.0/16]}\n    - ipBlock: {cidr: '::/0', except: ['fd00:10:244::/56']}"
        ),
    },
    Scenario {
        name: "34-all-pods-peer",
        covers: "namespaceSelector {} and podSelector {} in one peer: every pod, no node, not the outside",
        yaml: np!(
            "beta",
            "pods-only-out",
            "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - to: [{namespaceSelector: {}, podSelector: {}}]"
        ),
    },
    Scenario {
        name: "35-egress-own-namespace",
        covers: "egress to podSelector {}: the policy's namespace only",
        yaml: np!(
            "gamma",
            "stay-home",
            "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - to: [{podSelector: {}}]"
        ),
    },
    Scenario {
        name: "36-explicit-egress-ignores-ingress-rules",
        covers: "policyTypes [Egress] with ingress rules: ingress stays open",
        yaml: np!(
            "alpha",
            "out-only",
            "  podSelector: {matchLabels: {app: db}}\n  policyTypes: [Egress]\n  ingress:\n  - from: [{podSelector: {matchLabels: {app: none}}}]\n  egress:\n  - ports: [{port: 81}]"
        ),
    },
    Scenario {
        name: "37-directions-from-separate-policies",
        covers: "one policy isolates ingress, another egress, of the same pod; each direction its own union",
        yaml: concat!(
            np!(
                "alpha",
                "db-in",
                "  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from: [{namespaceSelector: {}, podSelector: {matchLabels: {app: client}}}]"
            ),
            np!(
                "alpha",
                "db-out",
                "  podSelector: {matchLabels: {tier: back}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}]\n    ports: [{port: 8080}, {protocol: UDP, port: 5353}]"
            )
        ),
    },
    Scenario {
        name: "38-port-range-edges",
        covers: "endPort equal to port; a UDP range that holds 5353 but not 53",
        yaml: np!(
            "beta",
            "edges",
            "  podSelector: {}\n  ingress:\n  - ports:\n    - {port: 81, endPort: 81}\n    - {protocol: UDP, port: 54, endPort: 9090}"
        ),
    },
    Scenario {
        name: "39-ipblock-underlay-only",
        covers: "ingress only from the nodes' underlay range: what a node's traffic carries depends on the backend (VTEP or underlay address)",
        yaml: np!(
            "beta",
            "underlay",
            "  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 192.168.100.0/24}\n    - ipBlock: {cidr: 'fd00:192:168:100::/64'}"
        ),
    },
    Scenario {
        name: "40-ipblock-one-family",
        covers: "an IPv4 ipBlock 0.0.0.0/0 admits every IPv4 source and no IPv6 one",
        yaml: np!(
            "gamma",
            "v4-only",
            "  podSelector: {}\n  ingress:\n  - from: [{ipBlock: {cidr: 0.0.0.0/0}}]"
        ),
    },
    Scenario {
        name: "41-selector-matches-nothing",
        covers: "a policy whose podSelector matches no pod changes nothing",
        yaml: np!(
            "alpha",
            "nobody",
            "  podSelector: {matchLabels: {app: nothing}}\n  policyTypes: [Ingress, Egress]"
        ),
    },
    Scenario {
        name: "42-namespace-notin",
        covers: "namespaceSelector with NotIn (gamma has no env=prod)",
        yaml: np!(
            "alpha",
            "not-prod",
            "  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector:\n        matchExpressions: [{key: env, operator: NotIn, values: [prod]}]"
        ),
    },
    Scenario {
        name: "43-sctp-range-and-named",
        covers: "SCTP endPort range and a named SCTP port (sig: 80 on b-web, absent on b-cli)",
        yaml: np!(
            "beta",
            "sctp-ports",
            "  podSelector: {}\n  ingress:\n  - ports:\n    - {protocol: SCTP, port: 50, endPort: 60}\n    - {protocol: SCTP, port: sig}"
        ),
    },
    Scenario {
        name: "44-sctp-named-egress",
        covers: "egress by a named SCTP port, resolved on each destination pod",
        yaml: np!(
            "alpha",
            "sig-out",
            "  podSelector: {matchLabels: {app: client}}\n  policyTypes: [Egress]\n  egress:\n  - ports: [{protocol: SCTP, port: sig}]"
        ),
    },
    Scenario {
        name: "45-relabelled-pod",
        covers: "a pod's labels changed (PodLabels): selection as a peer and as a target follows",
        yaml: concat!(
            np!(
                "beta",
                "web-from-probes",
                "  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {team: a}}\n      podSelector: {matchLabels: {role: probe}}"
            ),
            np!(
                "alpha",
                "deny-web",
                "  podSelector: {matchLabels: {app: web}}"
            ),
            "apiVersion: weft.dev/v1\nkind: PodLabels\nmetadata:\n  name: a-web\n  namespace: alpha\n  labels: {app: site, tier: front, role: probe}\nspec:\n  ports: [{name: http, containerPort: 8080, protocol: TCP}, {name: dns, containerPort: 5353, protocol: UDP}]\n---\n",
            "apiVersion: weft.dev/v1\nkind: PodLabels\nmetadata:\n  name: a-cli\n  namespace: alpha\n  labels: {app: web}\n---\n"
        ),
    },
    Scenario {
        name: "46-relabelled-namespace",
        covers: "a namespace's labels changed: namespaceSelector peers follow",
        yaml: concat!(
            np!(
                "alpha",
                "from-prod",
                "  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {env: prod}}"
            ),
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: gamma\n  labels: {env: prod, team: c}\n---\n",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: beta\n  labels: {team: b}\n---\n"
        ),
    },
    Scenario {
        name: "47-overlapping-ipblocks",
        covers: "overlapping ipBlocks with nested excepts across peers and policies (a union of ranges with holes)",
        yaml: concat!(
            np!(
                "alpha",
                "blocks-a",
                "  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.244.0.0/16, except: ['@block4:n1@']}\n    - ipBlock: {cidr: '@block4:n1@', except: ['@ip4:a-web@', '@ip4:g-cli@']}\n    - ipBlock: {cidr: 'fd00:10:244::/56', except: ['@block6:n1@']}\n    - ipBlock: {cidr: '@block6:n1@', except: ['@ip6:b-cli@']}\n    ports: [{port: 80}, {protocol: UDP, port: 53}, {protocol: SCTP, port: 80}]"
            ),
            np!(
                "alpha",
                "blocks-b",
                "  podSelector: {matchLabels: {tier: back}}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/8, except: [10.244.0.0/16]}\n    - ipBlock: {cidr: '@ip4:g-cli@'}\n    ports: [{port: 81}]"
            )
        ),
    },
    Scenario {
        name: "48-same-name-two-namespaces",
        covers: "policies are namespace/name: two policies named alike in two namespaces are two policies",
        yaml: concat!(
            np!("alpha", "same", "  podSelector: {}"),
            np!(
                "beta",
                "same",
                "  podSelector: {}\n  ingress:\n  - from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: gamma}}}]"
            )
        ),
    },
    Scenario {
        name: "49-rules-pair-peers-with-their-ports",
        covers: "within one policy each rule pairs its own peers and ports (no cross product), ingress and egress",
        yaml: concat!(
            np!(
                "alpha",
                "pairs-in",
                "  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {app: client}}}]\n    ports: [{port: 80}]\n  - from: [{namespaceSelector: {matchLabels: {team: b}}}]\n    ports: [{port: 8080}, {protocol: UDP, port: 53}]"
            ),
            np!(
                "gamma",
                "pairs-out",
                "  podSelector: {matchLabels: {app: client}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{namespaceSelector: {matchLabels: {team: a}}}]\n    ports: [{port: 81}]\n  - to: [{namespaceSelector: {matchLabels: {team: b}}}]\n    ports: [{port: 9090}, {protocol: SCTP, port: 53}]\n  - to: [{ipBlock: {cidr: 203.0.113.0/24}}]\n    ports: [{protocol: UDP, port: 5353}]"
            )
        ),
    },
    Scenario {
        name: "50-whole-port-space",
        covers: "endPort up to 65535 from port 1: every port of the protocol, and nothing of the others",
        yaml: np!(
            "gamma",
            "all-tcp",
            "  podSelector: {}\n  ingress:\n  - ports: [{port: 1, endPort: 65535}]"
        ),
    },
];

/// A policy edited in place: the `base` scenario's manifest is applied and enforced, then
/// this one (same names, new specs) on top; the matrix is probed after the edit.
pub struct Edit {
    pub name: &'static str,
    pub covers: &'static str,
    pub base: &'static str,
    pub yaml: &'static str,
}

pub const EDITS: &[Edit] = &[
    Edit {
        name: "51-edit-narrows-a-rule",
        covers: "an allow-all rule edited down to one peer and port (policy modified in place)",
        base: "04-allow-all-over-deny",
        yaml: np!(
            "alpha",
            "allow-all",
            "  podSelector: {}\n  ingress:\n  - from: [{podSelector: {matchLabels: {app: client}}}]\n    ports: [{port: 80}]"
        ),
    },
    Edit {
        name: "52-edit-moves-the-selector",
        covers: "a policy's podSelector edited: the old target opens, the new one closes",
        base: "05-matchlabels-from-pods",
        yaml: np!(
            "alpha",
            "web-from-clients",
            "  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {app: client}}"
        ),
    },
    Edit {
        name: "53-edit-flips-policy-types",
        covers: "policyTypes edited from (inferred) Ingress to Egress",
        base: "01-deny-all-ingress",
        yaml: np!(
            "alpha",
            "deny-in",
            "  podSelector: {}\n  policyTypes: [Egress]"
        ),
    },
    Edit {
        name: "54-edit-changes-excepts",
        covers: "an ipBlock's except list edited (one hole closed, another opened), IPv6 block dropped",
        base: "14-ipblock-except-ingress",
        yaml: np!(
            "alpha",
            "block",
            "  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.244.0.0/16, except: ['@ip4:b-web@']}"
        ),
    },
    Edit {
        name: "55-edit-ports-and-named-ports",
        covers: "ports edited: named port swapped for a range, a protocol added",
        base: "20-named-ports-ingress",
        yaml: np!(
            "alpha",
            "named",
            "  podSelector: {}\n  ingress:\n  - ports:\n    - {port: 81, endPort: 8080}\n    - {protocol: SCTP}\n    - {port: dns, protocol: UDP}"
        ),
    },
];

/// The scenario's YAML with the pods' addresses and the nodes' blocks filled in.
pub fn render(yaml: &str, cluster: &Cluster, blocks: &BTreeMap<(String, bool), String>) -> String {
    let mut out = yaml.to_string();
    for p in &cluster.pods {
        for (tag, v6) in [("ip4", false), ("ip6", true)] {
            if let Some(a) = p.addr(v6) {
                let len = if v6 { 128 } else { 32 };
                out = out.replace(&format!("@{tag}:{}@", p.name), &format!("{a}/{len}"));
            }
        }
    }
    for ((node, v6), block) in blocks {
        let tag = if *v6 { "block6" } else { "block4" };
        out = out.replace(&format!("@{tag}:{node}@"), block);
    }
    assert!(!out.contains('@'), "unfilled placeholder in:\n{out}");
    out
}

/// The oracle's pod for a spec of `scenarios::PODS`, with what the lab gave it.
pub fn pod_from_spec(spec: &PodSpec, node: &str, addrs: Vec<IpAddr>) -> Pod {
    Pod {
        name: spec.name.into(),
        namespace: spec.namespace.into(),
        node: node.into(),
        labels: spec
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        addrs,
        ports: spec
            .ports
            .iter()
            .map(|(n, proto, num)| {
                let proto = match *proto {
                    "UDP" => Proto::Udp,
                    "SCTP" => Proto::Sctp,
                    _ => Proto::Tcp,
                };
                (n.to_string(), proto, *num)
            })
            .collect(),
    }
}

pub fn namespace_labels() -> BTreeMap<String, Labels> {
    NAMESPACES
        .iter()
        .map(|(ns, l)| {
            (
                ns.to_string(),
                l.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        })
        .collect()
}

/// Every document of a (rendered) manifest, as JSON values for the oracle.
pub fn documents(yaml: &str) -> Vec<Value> {
    yaml_serde::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{e}:\n{yaml}")))
        .filter(|v| !v.is_null())
        .collect()
}

pub fn labels_arg(labels: &[(&str, &str)]) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The base objects: namespaces with their labels (not the automatic name label: weft must
/// add it), pods' labels with their named ports.
/// `name=port/PROTO,…`: the pod's named ports as `lab pod add --ports` takes them.
pub fn ports_arg(ports: &[(&str, &str, u16)]) -> String {
    ports
        .iter()
        .map(|(n, proto, num)| format!("{n}={num}/{proto}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn base_manifest() -> String {
    let mut y = String::new();
    for (ns, labels) in NAMESPACES {
        let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let _ = write!(
            y,
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels: {{{}}}\n---\n",
            l.join(", ")
        );
    }
    for p in PODS {
        let l: Vec<String> = p.labels.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let ports: Vec<String> = p
            .ports
            .iter()
            .map(|(n, proto, num)| {
                format!("{{name: {n}, containerPort: {num}, protocol: {proto}}}")
            })
            .collect();
        let _ = write!(
            y,
            "apiVersion: weft.dev/v1\nkind: PodLabels\nmetadata:\n  name: {}\n  namespace: {}\n  labels: {{{}}}\nspec:\n  ports: [{}]\n---\n",
            p.name,
            p.namespace,
            l.join(", "),
            ports.join(", ")
        );
    }
    y
}
