//! Manifests: kubectl-style YAML/JSON in, objects out; every validation error with its exact
//! path and message.

use weft_policy::{
    Direction, ManifestError, Object, Operator, ParseOptions, PolicyPeer, PortRef, Protocol, parse,
};

fn opts() -> ParseOptions {
    ParseOptions {
        default_namespace: Some("default".into()),
    }
}

fn one_policy(yaml: &str) -> weft_policy::NetworkPolicy {
    match parse(yaml, &opts()) {
        Ok(mut v) if v.len() == 1 => match v.remove(0) {
            Object::NetworkPolicy(p) => p,
            o => panic!("{o:?}"),
        },
        other => panic!("{other:?}"),
    }
}

/// The error lines of a manifest expected to be invalid (one object).
fn errors(yaml: &str) -> Vec<String> {
    match parse(yaml, &opts()) {
        Err(e) => e
            .problems
            .iter()
            .flat_map(|p| match p {
                ManifestError::Invalid { errors, .. } => {
                    errors.iter().map(|e| e.to_string()).collect()
                }
                other => vec![other.to_string()],
            })
            .collect(),
        Ok(v) => panic!("accepted: {v:?}"),
    }
}

fn policy_with_spec(spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: p\n  namespace: ns\nspec:\n{spec}"
    )
}

// ---- the Kubernetes documentation's examples --------------------------------------------

const DOCS_EXAMPLE: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: test-network-policy
  namespace: default
spec:
  podSelector:
    matchLabels:
      role: db
  policyTypes:
  - Ingress
  - Egress
  ingress:
  - from:
    - ipBlock:
        cidr: 172.17.0.0/16
        except:
        - 172.17.1.0/24
    - namespaceSelector:
        matchLabels:
          project: myproject
    - podSelector:
        matchLabels:
          role: frontend
    ports:
    - protocol: TCP
      port: 6379
  egress:
  - to:
    - ipBlock:
        cidr: 10.0.0.0/24
    ports:
    - protocol: TCP
      port: 5978
"#;

#[test]
fn docs_example_policy() {
    let p = one_policy(DOCS_EXAMPLE);
    assert_eq!(
        (p.namespace.as_str(), p.name.as_str()),
        ("default", "test-network-policy")
    );
    assert_eq!(p.spec.pod_selector.match_labels["role"], "db");
    assert_eq!(
        p.spec.policy_types,
        vec![Direction::Ingress, Direction::Egress]
    );
    let rule = &p.spec.ingress[0];
    assert_eq!(rule.peers.len(), 3);
    match &rule.peers[0] {
        PolicyPeer::IpBlock(b) => {
            assert_eq!(b.cidr.to_string(), "172.17.0.0/16");
            assert_eq!(b.except[0].to_string(), "172.17.1.0/24");
        }
        other => panic!("{other:?}"),
    }
    match &rule.peers[1] {
        PolicyPeer::Pods {
            pod_selector: None,
            namespace_selector: Some(s),
        } => assert_eq!(s.match_labels["project"], "myproject"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        &rule.peers[2],
        PolicyPeer::Pods {
            pod_selector: Some(_),
            namespace_selector: None
        }
    ));
    assert_eq!(rule.ports[0].protocol, Protocol::Tcp);
    assert_eq!(rule.ports[0].port, Some(PortRef::Number(6379)));
    assert_eq!(p.spec.egress[0].ports[0].port, Some(PortRef::Number(5978)));
}

#[test]
fn docs_default_policies() {
    let docs = r#"
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny-ingress
spec:
  podSelector: {}
  policyTypes:
  - Ingress
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-all-ingress
spec:
  podSelector: {}
  ingress:
  - {}
  policyTypes:
  - Ingress
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny-egress
spec:
  podSelector: {}
  policyTypes:
  - Egress
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-all-egress
spec:
  podSelector: {}
  egress:
  - {}
  policyTypes:
  - Egress
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny-all
spec:
  podSelector: {}
  policyTypes:
  - Ingress
  - Egress
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: multi-port-egress
  namespace: default
spec:
  podSelector:
    matchLabels:
      role: db
  policyTypes:
    - Egress
  egress:
    - to:
        - ipBlock:
            cidr: 10.0.0.0/24
      ports:
        - protocol: TCP
          port: 32000
          endPort: 32768
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: egress-namespaces
spec:
  podSelector:
    matchLabels:
      app: myapp
  policyTypes:
  - Egress
  egress:
  - to:
    - namespaceSelector:
        matchExpressions:
        - key: namespace
          operator: In
          values: ["frontend", "backend"]
"#;
    let objs = parse(docs, &opts()).unwrap();
    assert_eq!(objs.len(), 7);
    let p: Vec<_> = objs
        .into_iter()
        .map(|o| match o {
            Object::NetworkPolicy(p) => p,
            o => panic!("{o:?}"),
        })
        .collect();
    // Namespace defaulted (kubectl -n / the context namespace).
    assert!(p.iter().all(|p| p.namespace == "default"));
    assert!(p[0].applies(Direction::Ingress) && !p[0].applies(Direction::Egress));
    assert_eq!(p[1].spec.ingress.len(), 1);
    assert!(p[1].spec.ingress[0].peers.is_empty() && p[1].spec.ingress[0].ports.is_empty());
    assert!(!p[2].applies(Direction::Ingress) && p[2].applies(Direction::Egress));
    assert!(p[4].applies(Direction::Ingress) && p[4].applies(Direction::Egress));
    assert_eq!(p[5].spec.egress[0].ports[0].end_port, Some(32768));
    match &p[6].spec.egress[0].peers[0] {
        PolicyPeer::Pods {
            namespace_selector: Some(s),
            ..
        } => {
            assert_eq!(s.match_expressions[0].operator, Operator::In);
            assert_eq!(s.match_expressions[0].values, vec!["frontend", "backend"]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn policy_types_default_from_rules() {
    let p = one_policy(&policy_with_spec("  podSelector: {}\n  egress:\n  - {}\n"));
    assert!(p.applies(Direction::Ingress) && p.applies(Direction::Egress));
    // `egress: []` is no egress rule: Egress not defaulted.
    let p = one_policy(&policy_with_spec("  podSelector: {}\n  egress: []\n"));
    assert!(p.applies(Direction::Ingress) && !p.applies(Direction::Egress));
}

#[test]
fn exported_manifest_with_server_fields_applies() {
    // What `kubectl get networkpolicy x -o yaml` prints.
    let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: |
      {"apiVersion":"networking.k8s.io/v1"}
  creationTimestamp: "2026-11-01T10:00:00Z"
  generation: 1
  managedFields:
  - apiVersion: networking.k8s.io/v1
    fieldsType: FieldsV1
    manager: kubectl-client-side-apply
    operation: Update
  name: api-allow
  namespace: prod
  resourceVersion: "4242"
  uid: 0b4a8c2e-1111-2222-3333-444455556666
spec:
  podSelector:
    matchLabels:
      app: api
  policyTypes:
  - Ingress
  ingress:
  - from:
    - podSelector: {}
      namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: prod
    ports:
    - port: http
      protocol: TCP
status: {}
"#;
    let p = one_policy(yaml);
    assert_eq!(p.namespace, "prod");
    assert_eq!(
        p.spec.ingress[0].ports[0].port,
        Some(PortRef::Name("http".into()))
    );
    assert!(matches!(
        &p.spec.ingress[0].peers[0],
        PolicyPeer::Pods { pod_selector: Some(s), namespace_selector: Some(_) } if s.is_empty()
    ));
}

#[test]
fn json_list_namespace_and_pod_labels() {
    let json = r#"{
  "apiVersion": "v1",
  "kind": "List",
  "items": [
    {"apiVersion": "v1", "kind": "Namespace",
     "metadata": {"name": "shop", "labels": {"team": "a"}},
     "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}},
    {"apiVersion": "weft.dev/v1", "kind": "PodLabels",
     "metadata": {"name": "web-0", "namespace": "shop", "labels": {"app": "web"}},
     "spec": {"ports": [{"name": "http", "containerPort": 8080}, {"name": "dns", "containerPort": 53, "protocol": "UDP"}]}},
    {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
     "metadata": {"name": "x", "namespace": "shop"}, "spec": {"podSelector": {}}}
  ]
}"#;
    let objs = parse(json, &ParseOptions::default()).unwrap();
    assert_eq!(objs.len(), 3);
    match &objs[0] {
        Object::Namespace(n) => {
            assert_eq!((n.name.as_str(), n.labels["team"].as_str()), ("shop", "a"))
        }
        o => panic!("{o:?}"),
    }
    match &objs[1] {
        Object::PodLabels(p) => {
            assert_eq!(p.ports["http"].port, 8080);
            assert_eq!(p.ports["http"].protocol, Protocol::Tcp);
            assert_eq!(p.ports["dns"].protocol, Protocol::Udp);
        }
        o => panic!("{o:?}"),
    }
    // A JSON stream of objects (kubectl get -o json … | cat) works too.
    let stream = r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}}
{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"b"}}"#;
    assert_eq!(parse(stream, &ParseOptions::default()).unwrap().len(), 2);
}

#[test]
fn objects_round_trip_through_json() {
    let objs = parse(DOCS_EXAMPLE, &opts()).unwrap();
    let more = parse(
        "apiVersion: weft.dev/v1\nkind: PodLabels\nmetadata: {name: w, namespace: n, labels: {a: b}}\nspec: {ports: [{name: http, containerPort: 80}]}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: n, labels: {x: y}}\n",
        &opts(),
    )
    .unwrap();
    for o in objs.iter().chain(more.iter()) {
        let text = serde_json::to_string(&o.to_json()).unwrap();
        let back = parse(&text, &ParseOptions::default()).unwrap();
        assert_eq!(back, vec![o.clone()], "{text}");
    }
}

// ---- validation: exact paths and messages -------------------------------------------------

#[test]
fn port_out_of_range() {
    let e = errors(&policy_with_spec(
        "  podSelector: {}\n  ingress:\n  - ports:\n    - port: 80\n    - port: 70000\n",
    ));
    assert_eq!(
        e,
        vec![
            "spec.ingress[0].ports[1].port: Invalid value: 70000: must be between 1 and 65535, inclusive"
        ]
    );
    let e = errors(&policy_with_spec(
        "  podSelector: {}\n  ingress:\n  - ports:\n    - port: 0\n",
    ));
    assert_eq!(
        e,
        vec![
            "spec.ingress[0].ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"
        ]
    );
    let e = errors(&policy_with_spec(
        "  podSelector: {}\n  ingress:\n  - ports:\n    - port: -1\n",
    ));
    assert_eq!(
        e,
        vec![
            "spec.ingress[0].ports[0].port: Invalid value: -1: must be between 1 and 65535, inclusive"
        ]
    );
}

#[test]
fn unknown_protocol() {
    let e = errors(&policy_with_spec(
        "  podSelector: {}\n  egress:\n  - ports:\n    - protocol: ICMP\n",
    ));
    assert_eq!(
        e,
        vec![
            r#"spec.egress[0].ports[0].protocol: Unsupported value: "ICMP": supported values: "TCP", "UDP", "SCTP""#
        ]
    );
    // Case matters, as for the API server.
    let e = errors(&policy_with_spec(
        "  podSelector: {}\n  egress:\n  - ports:\n    - protocol: tcp\n",
    ));
    assert!(e[0].contains(r#"Unsupported value: "tcp""#), "{e:?}");
}

#[test]
fn end_port_rules() {
    let cases = [
        (
            "    - endPort: 90\n",
            "spec.ingress[0].ports[0].endPort: Invalid value: 90: may not be specified when `port` is not specified",
        ),
        (
            "    - port: 100\n      endPort: 80\n",
            "spec.ingress[0].ports[0].endPort: Invalid value: 80: must be greater than or equal to `port`",
        ),
        (
            "    - port: http\n      endPort: 80\n",
            "spec.ingress[0].ports[0].endPort: Invalid value: 80: may not be specified when `port` is non-numeric",
        ),
        (
            "    - port: 80\n      endPort: 65536\n",
            "spec.ingress[0].ports[0].endPort: Invalid value: 65536: must be between 1 and 65535, inclusive",
        ),
    ];
    for (ports, want) in cases {
        let e = errors(&policy_with_spec(&format!(
            "  podSelector: {{}}\n  ingress:\n  - ports:\n{ports}"
        )));
        assert_eq!(e, vec![want]);
    }
    // port == endPort is a one-port range: valid.
    one_policy(&policy_with_spec(
        "  podSelector: {}\n  ingress:\n  - ports:\n    - {port: 80, endPort: 80}\n",
    ));
}

#[test]
fn named_port_syntax() {
    let cases = [
        ("http--x", "must not contain consecutive hyphens"),
        ("-http", "must not begin or end with a hyphen"),
        (
            "HTTP",
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
        ),
        ("1234", "must contain at least one letter (a-z)"),
        ("a-very-long-name1", "must be no more than 15 bytes"),
    ];
    for (name, msg) in cases {
        let e = errors(&policy_with_spec(&format!(
            "  podSelector: {{}}\n  ingress:\n  - ports:\n    - port: \"{name}\"\n"
        )));
        assert!(
            e.contains(&format!(
                "spec.ingress[0].ports[0].port: Invalid value: \"{name}\": {msg}"
            )),
            "{name}: {e:?}"
        );
    }
}

#[test]
fn ip_block_rules() {
    let peer = |b: &str| {
        policy_with_spec(&format!(
            "  podSelector: {{}}\n  ingress:\n  - from:\n    - ipBlock: {b}\n"
        ))
    };
    assert_eq!(
        errors(&peer("{cidr: 10.0.0.0/33}")),
        vec![
            r#"spec.ingress[0].from[0].ipBlock.cidr: Invalid value: "10.0.0.0/33": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"#
        ]
    );
    assert_eq!(
        errors(&peer("{cidr: 10.0.0.0/16, except: [10.1.0.0/24]}")),
        vec![
            "spec.ingress[0].from[0].ipBlock.except[0]: Invalid value: \"10.1.0.0/24\": must be a strict subset of `cidr`"
        ]
    );
    // Equal to the cidr is not a strict subset; another family is not a subset at all.
    assert_eq!(
        errors(&peer(
            "{cidr: 10.0.0.0/16, except: [10.0.5.0/24, 10.0.0.0/16, 'fd00::/64']}"
        )),
        vec![
            "spec.ingress[0].from[0].ipBlock.except[1]: Invalid value: \"10.0.0.0/16\": must be a strict subset of `cidr`",
            "spec.ingress[0].from[0].ipBlock.except[2]: Invalid value: \"fd00::/64\": must be a strict subset of `cidr`",
        ]
    );
    assert_eq!(
        errors(&peer("{except: [10.0.0.0/24]}")),
        vec!["spec.ingress[0].from[0].ipBlock.cidr: Required value"]
    );
    assert_eq!(
        errors(&peer("{cidr: 10.0.0.0/8, except: [bogus]}")),
        vec![
            r#"spec.ingress[0].from[0].ipBlock.except[0]: Invalid value: "bogus": must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"#
        ]
    );
    // Host bits are cleared, as the API server reads them.
    let p = one_policy(&peer("{cidr: 10.0.0.7/24}"));
    match &p.spec.ingress[0].peers[0] {
        PolicyPeer::IpBlock(b) => assert_eq!(b.cidr.to_string(), "10.0.0.0/24"),
        o => panic!("{o:?}"),
    }
}

#[test]
fn peer_shape() {
    let e = errors(&policy_with_spec(
        "  podSelector: {}\n  ingress:\n  - from:\n    - {}\n",
    ));
    assert_eq!(
        e,
        vec!["spec.ingress[0].from[0]: Required value: must specify a peer"]
    );
    let e = errors(&policy_with_spec(
        "  podSelector: {}\n  egress:\n  - to:\n    - podSelector: {}\n      ipBlock: {cidr: 10.0.0.0/8}\n",
    ));
    assert_eq!(
        e,
        vec!["spec.egress[0].to[0]: Forbidden: may not specify both ipBlock and another peer"]
    );
}

#[test]
fn selector_rules() {
    let sel = |s: &str| errors(&policy_with_spec(&format!("  podSelector:\n{s}")));
    assert_eq!(
        sel("    matchExpressions:\n    - {key: app, operator: In}\n"),
        vec![
            "spec.podSelector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'"
        ]
    );
    assert_eq!(
        sel("    matchExpressions:\n    - {key: app, operator: NotIn, values: []}\n"),
        vec![
            "spec.podSelector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'"
        ]
    );
    assert_eq!(
        sel("    matchExpressions:\n    - {key: app, operator: Exists, values: [x]}\n"),
        vec![
            "spec.podSelector.matchExpressions[0].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
        ]
    );
    assert_eq!(
        sel("    matchExpressions:\n    - {key: app, operator: DoesNotExist, values: [x]}\n"),
        vec![
            "spec.podSelector.matchExpressions[0].values: Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'"
        ]
    );
    assert_eq!(
        sel("    matchExpressions:\n    - {key: app, operator: Equals, values: [x]}\n"),
        vec![
            r#"spec.podSelector.matchExpressions[0].operator: Invalid value: "Equals": not a valid selector operator"#
        ]
    );
    let e = sel("    matchLabels: {-bad: x}\n");
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with(r#"spec.podSelector.matchLabels: Invalid value: "-bad": name part must consist of alphanumeric characters"#),
        "{e:?}"
    );
    let e = sel("    matchLabels: {app: 'no spaces'}\n");
    assert!(
        e[0].starts_with(r#"spec.podSelector.matchLabels: Invalid value: "no spaces": a valid label must be an empty string"#),
        "{e:?}"
    );
    let e = sel("    matchExpressions:\n    - {key: 'a/b/c', operator: Exists}\n");
    assert!(
        e[0].starts_with(
            r#"spec.podSelector.matchExpressions[0].key: Invalid value: "a/b/c": a valid label key"#
        ),
        "{e:?}"
    );
    let e = sel("    matchExpressions:\n    - {key: app, operator: In, values: ['bad value']}\n");
    assert!(
        e[0].starts_with(
            r#"spec.podSelector.matchExpressions[0].values[0]: Invalid value: "bad value""#
        ),
        "{e:?}"
    );
    // Selectors inside peers carry their full path.
    let e = errors(&policy_with_spec(
        "  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector:\n        matchExpressions: [{key: team, operator: In}]\n",
    ));
    assert_eq!(
        e,
        vec![
            "spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'"
        ]
    );
}

#[test]
fn policy_types_rules() {
    assert_eq!(
        errors(&policy_with_spec(
            "  podSelector: {}\n  policyTypes: [Both]\n"
        )),
        vec![
            r#"spec.policyTypes[0]: Unsupported value: "Both": supported values: "Ingress", "Egress""#
        ]
    );
    assert_eq!(
        errors(&policy_with_spec(
            "  podSelector: {}\n  policyTypes: [Ingress, Egress, Ingress]\n"
        )),
        vec![
            r#"spec.policyTypes: Invalid value: ["Ingress","Egress","Ingress"]: may not specify more than two policyTypes"#
        ]
    );
}

#[test]
fn metadata_rules() {
    let no_name = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {namespace: x}\nspec: {podSelector: {}}\n";
    assert_eq!(
        errors(no_name),
        vec!["metadata.name: Required value: name or generateName is required"]
    );
    let no_ns = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: x}\nspec: {podSelector: {}}\n";
    let e = parse(no_ns, &ParseOptions::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "document 1: The NetworkPolicy \"x\" is invalid: metadata.namespace: Required value"
    );
    let bad = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: Bad_Name, namespace: Shop}\nspec: {podSelector: {}}\n";
    let e = errors(bad);
    assert_eq!(e.len(), 2);
    assert!(e[0].starts_with(r#"metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain must consist of"#), "{e:?}");
    assert!(e[1].starts_with(r#"metadata.namespace: Invalid value: "Shop": a lowercase RFC 1123 label must consist of"#), "{e:?}");
    let dotted = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a.b}\n";
    assert_eq!(
        errors(dotted),
        vec![r#"metadata.name: Invalid value: "a.b": must not contain dots"#]
    );
    let ns_with_ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a, namespace: b}\n";
    assert_eq!(
        errors(ns_with_ns),
        vec!["metadata.namespace: Forbidden: not allowed on this type"]
    );
    let generated = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a, generateName: a-, ownerReferences: []}\nspec: {podSelector: {}}\n";
    assert_eq!(
        errors(generated),
        vec![
            "metadata.generateName: Forbidden: weft does not implement this field",
            "metadata.ownerReferences: Forbidden: weft does not implement this field",
        ]
    );
    let label_num = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a, labels: {version: 1}}\n";
    assert_eq!(
        errors(label_num),
        vec![
            "metadata.labels.version: Invalid value: 1: must be a string (quote numbers and booleans)"
        ]
    );
}

#[test]
fn unknown_and_missing_fields_are_errors() {
    let e = errors(&policy_with_spec("  podSelector: {}\n  ingressRules: []\n"));
    assert_eq!(
        e,
        vec![
            "spec.ingressRules: Unknown field: not in the object's schema (weft ignores no field)"
        ]
    );
    let e = errors(&policy_with_spec(
        "  podSelector: {}\n  ingress:\n  - from:\n    - podSelectr: {}\n      namespaceSelector: {}\n",
    ));
    assert_eq!(
        e,
        vec![
            "spec.ingress[0].from[0].podSelectr: Unknown field: not in the object's schema (weft ignores no field)"
        ]
    );
    let e = errors(&policy_with_spec("  policyTypes: [Ingress]\n"));
    assert_eq!(e, vec!["spec.podSelector: Required value"]);
    let e = errors("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\n");
    assert_eq!(e, vec!["spec.podSelector: Required value"]);
    let e = errors(&policy_with_spec(
        "  podSelector: {}\n  ingress:\n  - ports:\n    - port: true\n",
    ));
    assert_eq!(
        e,
        vec![
            "spec.ingress[0].ports[0].port: Invalid value: true: must be an integer or a port name"
        ]
    );
    let e = errors(&format!(
        "{}status:\n  conditions: [x]\n",
        policy_with_spec("  podSelector: {}\n")
    ));
    assert_eq!(
        e,
        vec!["status: Forbidden: weft does not implement NetworkPolicy status"]
    );
    let e = errors(
        "apiVersion: weft.dev/v1\nkind: PodLabels\nmetadata: {name: w, namespace: n}\nspec: {ports: [{name: http, containerPort: 80}, {name: http, containerPort: 81}, {name: x, containerPort: 0}, {containerPort: 9}]}\n",
    );
    assert_eq!(
        e,
        vec![
            r#"spec.ports[1].name: Duplicate value: "http""#,
            "spec.ports[2].containerPort: Invalid value: 0: must be between 1 and 65535, inclusive",
            "spec.ports[3].name: Required value",
        ]
    );
}

#[test]
fn every_problem_of_every_document_is_reported() {
    let text = format!(
        "{}---\n{}---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: ok}}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d}}\n",
        policy_with_spec(
            "  podSelector: {}\n  ingress:\n  - ports: [{port: 70000}, {protocol: ICMP}]\n"
        ),
        policy_with_spec("  podSelector: {}\n  egress:\n  - to: [{}]\n"),
    );
    let err = parse(&text, &opts()).unwrap_err();
    assert_eq!(err.problems.len(), 3, "{err}");
    let shown = err.to_string();
    assert_eq!(
        shown,
        "document 1: The NetworkPolicy \"p\" is invalid: \n\
         * spec.ingress[0].ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive\n\
         * spec.ingress[0].ports[1].protocol: Unsupported value: \"ICMP\": supported values: \"TCP\", \"UDP\", \"SCTP\"\n\
         document 2: The NetworkPolicy \"p\" is invalid: spec.egress[0].to[0]: Required value: must specify a peer\n\
         document 4: no matches for kind \"Deployment\" in version \"apps/v1\" (weft knows NetworkPolicy networking.k8s.io/v1, Namespace v1, PodLabels weft.dev/v1, and List)"
    );
    // Paths inside a List carry the item.
    let list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: Bad}\n";
    let e = errors(list);
    assert!(
        e[0].starts_with("items[0].metadata.name: Invalid value: \"Bad\""),
        "{e:?}"
    );
}

#[test]
fn syntax_errors_name_the_document() {
    let err = parse(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\na: [\n",
        &opts(),
    )
    .unwrap_err();
    match &err.problems[0] {
        ManifestError::Syntax { document, message } => {
            assert_eq!(*document, 2);
            assert!(message.starts_with("invalid YAML"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let err = parse("a: 1\na: 2\n", &opts()).unwrap_err();
    assert!(err.to_string().contains("duplicate key \"a\""), "{err}");
    let err = parse("- just\n- a list\n", &opts()).unwrap_err();
    assert!(err.to_string().contains("expected an object"), "{err}");
    assert!(parse("", &opts()).unwrap().is_empty());
}

#[test]
fn hand_built_policy_validates_too() {
    let mut p = one_policy(DOCS_EXAMPLE);
    assert!(p.validate().is_empty());
    p.spec.ingress[0].ports[0].end_port = Some(10);
    assert_eq!(
        p.validate()
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>(),
        vec![
            "spec.ingress[0].ports[0].endPort: Invalid value: 10: must be greater than or equal to `port`"
        ]
    );
}
