//! Manifests: text → validated objects (decoding with paths, then `validate`), and objects
//! back to JSON. What is accepted is described in the crate docs, section "Manifests".

mod encode;
pub(crate) mod value;

use std::collections::BTreeMap;
use std::fmt;

use ipnet::IpNet;

use crate::model::{
    Direction, IpBlock, LabelSelector, Labels, NamedPort, Namespace, NetworkPolicy, Operator,
    PodLabels, PolicyPeer, PolicyPort, PolicySpec, PortRef, Protocol, Requirement, Rule,
};
use crate::validate::{self, FieldError, names};
use value::Value;

/// One decoded, valid object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    NetworkPolicy(NetworkPolicy),
    Namespace(Namespace),
    PodLabels(PodLabels),
}

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Object::NetworkPolicy(_) => "NetworkPolicy",
            Object::Namespace(_) => "Namespace",
            Object::PodLabels(_) => "PodLabels",
        }
    }

    /// `namespace/name`, or `name` for a Namespace.
    pub fn name(&self) -> String {
        match self {
            Object::NetworkPolicy(p) => format!("{}/{}", p.namespace, p.name),
            Object::Namespace(n) => n.name.clone(),
            Object::PodLabels(p) => format!("{}/{}", p.namespace, p.name),
        }
    }

    /// The object as a Kubernetes-style JSON manifest (canonical: defaults filled in, CIDRs
    /// with host bits cleared). `parse` reads it back to an equal object; this is the form
    /// to keep in a datastore and to print for `weftctl get -o yaml|json`.
    pub fn to_json(&self) -> serde_json::Value {
        encode::object(self)
    }
}

/// Options for [`parse`].
#[derive(Debug, Clone, Default)]
pub struct ParseOptions {
    /// The namespace of namespaced objects that name none (kubectl's `-n`, or the context's
    /// namespace). `None`: such objects are an error (`metadata.namespace: Required value`).
    pub default_namespace: Option<String>,
}

/// Why a manifest was refused. Documents are numbered from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestError {
    /// Not YAML/JSON, a duplicate key, or a document that is not an object.
    Syntax { document: usize, message: String },
    /// An `apiVersion`/`kind` weft does not know.
    UnknownKind {
        document: usize,
        api_version: String,
        kind: String,
    },
    /// The object is invalid: every problem, with its field path.
    Invalid {
        document: usize,
        kind: String,
        name: String,
        errors: Vec<FieldError>,
    },
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManifestError::Syntax { document, message } => {
                write!(f, "document {document}: {message}")
            }
            ManifestError::UnknownKind {
                document,
                api_version,
                kind,
            } => write!(
                f,
                "document {document}: no matches for kind {kind:?} in version {api_version:?} \
                 (weft knows NetworkPolicy networking.k8s.io/v1, Namespace v1, PodLabels \
                 weft.dev/v1, and List)"
            ),
            ManifestError::Invalid {
                document,
                kind,
                name,
                errors,
            } => {
                write!(f, "document {document}: The {kind} {name:?} is invalid: ")?;
                if let [one] = errors.as_slice() {
                    write!(f, "{one}")
                } else {
                    for e in errors {
                        write!(f, "\n* {e}")?;
                    }
                    Ok(())
                }
            }
        }
    }
}

/// All problems found in a manifest file; nothing of it should be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    pub problems: Vec<ManifestError>,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Parses and validates every object of a manifest file. Either all objects are valid and
/// returned in file order, or every problem is returned.
pub fn parse(text: &str, opts: &ParseOptions) -> Result<Vec<Object>, ParseError> {
    let docs = value::documents(text).map_err(|(document, message)| ParseError {
        problems: vec![ManifestError::Syntax { document, message }],
    })?;
    let mut objects = Vec::new();
    let mut problems = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        decode_document(doc, i + 1, opts, &mut objects, &mut problems);
    }
    if problems.is_empty() {
        Ok(objects)
    } else {
        Err(ParseError { problems })
    }
}

const POLICY_API: &str = "networking.k8s.io/v1";
const CORE_API: &str = "v1";
const WEFT_API: &str = "weft.dev/v1";

fn decode_document(
    doc: &Value,
    document: usize,
    opts: &ParseOptions,
    objects: &mut Vec<Object>,
    problems: &mut Vec<ManifestError>,
) {
    let Value::Map(map) = doc else {
        problems.push(ManifestError::Syntax {
            document,
            message: format!(
                "expected an object with apiVersion and kind, found {}",
                doc.render()
            ),
        });
        return;
    };
    let get = |k: &str| map.iter().find(|(key, _)| key == k).map(|(_, v)| v);
    let api_version = match get("apiVersion") {
        Some(Value::Str(s)) => s.clone(),
        _ => String::new(),
    };
    let kind = match get("kind") {
        Some(Value::Str(s)) => s.clone(),
        _ => String::new(),
    };
    let is_list = matches!(
        (api_version.as_str(), kind.as_str()),
        (CORE_API, "List") | (POLICY_API, "NetworkPolicyList") | (CORE_API, "NamespaceList")
    );
    if is_list {
        let mut d = Decoder::default();
        let obj = d.object(doc, "", &["apiVersion", "kind", "items", "metadata"]);
        let items = obj.and_then(|o| o.get("items").cloned());
        if !d.errs.is_empty() {
            problems.push(ManifestError::Invalid {
                document,
                kind,
                name: String::new(),
                errors: d.errs,
            });
            return;
        }
        for (i, item) in d.list(items.as_ref(), "items").iter().enumerate() {
            decode_item(
                item,
                &format!("items[{i}]"),
                document,
                opts,
                objects,
                problems,
            );
        }
        if !d.errs.is_empty() {
            problems.push(ManifestError::Invalid {
                document,
                kind,
                name: String::new(),
                errors: d.errs,
            });
        }
        return;
    }
    decode_item(doc, "", document, opts, objects, problems);
}

/// One object, at `prefix` (`""` for a document, `items[3]` inside a List).
fn decode_item(
    doc: &Value,
    prefix: &str,
    document: usize,
    opts: &ParseOptions,
    objects: &mut Vec<Object>,
    problems: &mut Vec<ManifestError>,
) {
    let mut d = Decoder {
        errs: Vec::new(),
        prefix: if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}.")
        },
    };
    let (api_version, kind) = match doc {
        Value::Map(m) => {
            let s = |k: &str| match m.iter().find(|(key, _)| key == k) {
                Some((_, Value::Str(s))) => s.clone(),
                _ => String::new(),
            };
            (s("apiVersion"), s("kind"))
        }
        _ => (String::new(), String::new()),
    };
    let known = matches!(
        (api_version.as_str(), kind.as_str()),
        (POLICY_API, "NetworkPolicy") | (CORE_API, "Namespace") | (WEFT_API, "PodLabels")
    );
    if !known {
        if api_version.is_empty() || kind.is_empty() {
            let field = if api_version.is_empty() {
                "apiVersion"
            } else {
                "kind"
            };
            problems.push(ManifestError::Invalid {
                document,
                kind: if kind.is_empty() {
                    "object".into()
                } else {
                    kind
                },
                name: String::new(),
                errors: vec![FieldError::required(d.path(field), "")],
            });
        } else {
            problems.push(ManifestError::UnknownKind {
                document,
                api_version,
                kind,
            });
        }
        return;
    }
    let (object, name) = match kind.as_str() {
        "NetworkPolicy" => {
            let p = d.network_policy(doc, opts);
            let name = p
                .as_ref()
                .map(|p| p.name.clone())
                .unwrap_or_else(|| d.peek_name(doc));
            (p.map(Object::NetworkPolicy), name)
        }
        "Namespace" => {
            let n = d.namespace(doc);
            let name = n
                .as_ref()
                .map(|n| n.name.clone())
                .unwrap_or_else(|| d.peek_name(doc));
            (n.map(Object::Namespace), name)
        }
        _ => {
            let p = d.pod_labels(doc, opts);
            let name = p
                .as_ref()
                .map(|p| p.name.clone())
                .unwrap_or_else(|| d.peek_name(doc));
            (p.map(Object::PodLabels), name)
        }
    };
    // Type errors first; an object that decoded is then validated (as the API server
    // validates only what it could decode).
    let mut errors = d.errs;
    if errors.is_empty()
        && let Some(obj) = &object
    {
        errors = match obj {
            Object::NetworkPolicy(p) => validate::policy(p),
            Object::Namespace(n) => validate::namespace(&n.name, &n.labels),
            Object::PodLabels(p) => validate::pod_labels(p),
        };
        if !prefix.is_empty() {
            for e in &mut errors {
                e.path = format!("{prefix}.{}", e.path);
            }
        }
    }
    match object {
        Some(obj) if errors.is_empty() => objects.push(obj),
        _ => problems.push(ManifestError::Invalid {
            document,
            kind,
            name,
            errors,
        }),
    }
}

/// A map being decoded: its entries (nulls count as absent) and its path.
struct Obj<'a> {
    entries: &'a [(String, Value)],
}

impl<'a> Obj<'a> {
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .filter(|v| **v != Value::Null)
    }
}

/// Walks a document, collecting type errors with paths.
#[derive(Default)]
struct Decoder {
    errs: Vec<FieldError>,
    prefix: String,
}

/// Metadata fields the server fills in: accepted so exported manifests apply, then dropped.
const SERVER_FIELDS: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
];
/// Metadata fields of the API that weft does not implement: refused, never ignored.
const UNIMPLEMENTED_META: &[&str] = &[
    "generateName",
    "finalizers",
    "ownerReferences",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

impl Decoder {
    fn path(&self, p: &str) -> String {
        format!("{}{p}", self.prefix)
    }

    fn type_error(&mut self, path: &str, v: &Value, what: &str) {
        self.errs.push(FieldError::invalid(
            self.path(path),
            v.render(),
            format!("must be {what}"),
        ));
    }

    /// A map with only `allowed` keys (others: unknown field).
    fn object<'a>(&mut self, v: &'a Value, path: &str, allowed: &[&str]) -> Option<Obj<'a>> {
        let Value::Map(entries) = v else {
            self.type_error(
                if path.is_empty() { "<root>" } else { path },
                v,
                "an object",
            );
            return None;
        };
        for (k, _) in entries {
            if !allowed.contains(&k.as_str()) {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                self.errs.push(FieldError::unknown(self.path(&p)));
            }
        }
        Some(Obj { entries })
    }

    fn string(&mut self, v: Option<&Value>, path: &str) -> Option<String> {
        match v? {
            Value::Str(s) => Some(s.clone()),
            other => {
                self.type_error(path, other, "a string");
                None
            }
        }
    }

    fn list<'a>(&mut self, v: Option<&'a Value>, path: &str) -> Vec<&'a Value> {
        match v {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Seq(items)) => items.iter().collect(),
            Some(other) => {
                self.type_error(path, other, "a list");
                Vec::new()
            }
        }
    }

    fn strings(&mut self, v: Option<&Value>, path: &str) -> Vec<String> {
        let items = self.list(v, path);
        let mut out = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            if let Some(s) = self.string(Some(item), &format!("{path}[{i}]")) {
                out.push(s);
            }
        }
        out
    }

    fn string_map(&mut self, v: Option<&Value>, path: &str) -> Labels {
        let mut out = BTreeMap::new();
        match v {
            None => {}
            Some(Value::Map(entries)) => {
                for (k, val) in entries {
                    match val {
                        Value::Str(s) => {
                            out.insert(k.clone(), s.clone());
                        }
                        other => self.type_error(
                            &format!("{path}.{k}"),
                            other,
                            "a string (quote numbers and booleans)",
                        ),
                    }
                }
            }
            Some(other) => self.type_error(path, other, "a map of strings"),
        }
        out
    }

    fn integer(&mut self, v: &Value, path: &str) -> Option<i128> {
        match v {
            Value::Int(i) => Some(*i),
            other => {
                self.type_error(path, other, "an integer");
                None
            }
        }
    }

    fn port_number(&mut self, v: &Value, path: &str) -> Option<u16> {
        let i = self.integer(v, path)?;
        match u16::try_from(i) {
            Ok(p) => Some(p),
            Err(_) => {
                self.errs.push(FieldError::invalid(
                    self.path(path),
                    i.to_string(),
                    "must be between 1 and 65535, inclusive",
                ));
                None
            }
        }
    }

    fn protocol(&mut self, v: Option<&Value>, path: &str) -> Option<Protocol> {
        let Some(s) = self.string(v, path) else {
            return if v.is_none() {
                Some(Protocol::Tcp)
            } else {
                None
            };
        };
        let p = match s.as_str() {
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            "SCTP" => Protocol::Sctp,
            _ => {
                self.errs.push(FieldError::not_supported(
                    self.path(path),
                    &s,
                    &["TCP", "UDP", "SCTP"],
                ));
                return None;
            }
        };
        Some(p)
    }

    /// `metadata`: name, namespace (namespaced kinds; defaulted from the options), labels.
    fn metadata(
        &mut self,
        root: &Obj<'_>,
        namespaced: bool,
        opts: &ParseOptions,
    ) -> Option<(String, String, Labels)> {
        let Some(meta) = root.get("metadata") else {
            self.errs.push(FieldError::required(
                self.path("metadata.name"),
                "name or generateName is required",
            ));
            return None;
        };
        let mut allowed = vec!["name", "namespace", "labels", "annotations"];
        allowed.extend_from_slice(SERVER_FIELDS);
        allowed.extend_from_slice(UNIMPLEMENTED_META);
        let m = self.object(meta, "metadata", &allowed)?;
        for field in UNIMPLEMENTED_META {
            if m.get(field).is_some() {
                self.errs.push(FieldError::forbidden(
                    self.path(&format!("metadata.{field}")),
                    "weft does not implement this field",
                ));
            }
        }
        let before = self.errs.len();
        let name = self
            .string(m.get("name"), "metadata.name")
            .unwrap_or_default();
        let mut namespace = self
            .string(m.get("namespace"), "metadata.namespace")
            .unwrap_or_default();
        if namespaced {
            if namespace.is_empty()
                && let Some(d) = &opts.default_namespace
            {
                namespace = d.clone();
            }
        } else if !namespace.is_empty() {
            self.errs.push(FieldError::forbidden(
                self.path("metadata.namespace"),
                "not allowed on this type",
            ));
        }
        let labels = self.string_map(m.get("labels"), "metadata.labels");
        let annotations = self.string_map(m.get("annotations"), "metadata.annotations");
        for k in annotations.keys() {
            for msg in names::label_key(k) {
                self.errs.push(FieldError::invalid_str(
                    self.path("metadata.annotations"),
                    k,
                    msg,
                ));
            }
        }
        (self.errs.len() == before).then_some((name, namespace, labels))
    }

    fn peek_name(&self, doc: &Value) -> String {
        let Value::Map(m) = doc else {
            return String::new();
        };
        let Some((_, Value::Map(meta))) = m.iter().find(|(k, _)| k == "metadata") else {
            return String::new();
        };
        match meta.iter().find(|(k, _)| k == "name") {
            Some((_, Value::Str(s))) => s.clone(),
            _ => String::new(),
        }
    }

    fn network_policy(&mut self, doc: &Value, opts: &ParseOptions) -> Option<NetworkPolicy> {
        let root = self.object(
            doc,
            "",
            &["apiVersion", "kind", "metadata", "spec", "status"],
        )?;
        let meta = self.metadata(&root, true, opts);
        // NetworkPolicyStatus existed from 1.24 to 1.27 and was never implemented by weft:
        // accept only an empty one (what older servers print).
        if let Some(status) = root.get("status")
            && !matches!(status, Value::Map(m) if m.is_empty())
        {
            self.errs.push(FieldError::forbidden(
                self.path("status"),
                "weft does not implement NetworkPolicy status",
            ));
        }
        let spec = match root.get("spec") {
            Some(s) => self.policy_spec(s),
            None => {
                self.errs
                    .push(FieldError::required(self.path("spec.podSelector"), ""));
                None
            }
        };
        let (name, namespace, labels) = meta?;
        Some(NetworkPolicy {
            namespace,
            name,
            labels,
            spec: spec?,
        })
    }

    fn policy_spec(&mut self, v: &Value) -> Option<PolicySpec> {
        let before = self.errs.len();
        let s = self.object(
            v,
            "spec",
            &["podSelector", "policyTypes", "ingress", "egress"],
        )?;
        let pod_selector = match s.get("podSelector") {
            Some(sel) => self.selector(sel, "spec.podSelector"),
            None => {
                self.errs
                    .push(FieldError::required(self.path("spec.podSelector"), ""));
                None
            }
        };
        let mut policy_types = Vec::new();
        for (i, t) in self
            .strings(s.get("policyTypes"), "spec.policyTypes")
            .into_iter()
            .enumerate()
        {
            match t.as_str() {
                "Ingress" => policy_types.push(Direction::Ingress),
                "Egress" => policy_types.push(Direction::Egress),
                _ => self.errs.push(FieldError::not_supported(
                    self.path(&format!("spec.policyTypes[{i}]")),
                    &t,
                    &["Ingress", "Egress"],
                )),
            }
        }
        let ingress = self.rules(s.get("ingress"), "spec.ingress", "from");
        let egress = self.rules(s.get("egress"), "spec.egress", "to");
        (self.errs.len() == before).then_some(PolicySpec {
            pod_selector: pod_selector?,
            policy_types,
            ingress,
            egress,
        })
    }

    fn rules(&mut self, v: Option<&Value>, path: &str, peers_key: &str) -> Vec<Rule> {
        let mut out = Vec::new();
        for (i, item) in self.list(v, path).into_iter().enumerate() {
            let rp = format!("{path}[{i}]");
            let Some(r) = self.object(item, &rp, &[peers_key, "ports"]) else {
                continue;
            };
            let mut rule = Rule::default();
            for (j, peer) in self
                .list(r.get(peers_key), &format!("{rp}.{peers_key}"))
                .into_iter()
                .enumerate()
            {
                if let Some(p) = self.peer(peer, &format!("{rp}.{peers_key}[{j}]")) {
                    rule.peers.push(p);
                }
            }
            for (j, port) in self
                .list(r.get("ports"), &format!("{rp}.ports"))
                .into_iter()
                .enumerate()
            {
                if let Some(p) = self.policy_port(port, &format!("{rp}.ports[{j}]")) {
                    rule.ports.push(p);
                }
            }
            out.push(rule);
        }
        out
    }

    fn peer(&mut self, v: &Value, path: &str) -> Option<PolicyPeer> {
        let p = self.object(v, path, &["podSelector", "namespaceSelector", "ipBlock"])?;
        let pod = p.get("podSelector");
        let ns = p.get("namespaceSelector");
        let block = p.get("ipBlock");
        match (pod, ns, block) {
            (None, None, None) => {
                self.errs
                    .push(FieldError::required(self.path(path), "must specify a peer"));
                None
            }
            (_, _, Some(b)) if pod.is_some() || ns.is_some() => {
                let _ = self.ip_block(b, &format!("{path}.ipBlock"));
                self.errs.push(FieldError::forbidden(
                    self.path(path),
                    "may not specify both ipBlock and another peer",
                ));
                None
            }
            (_, _, Some(b)) => self
                .ip_block(b, &format!("{path}.ipBlock"))
                .map(PolicyPeer::IpBlock),
            (pod, ns, None) => {
                let pod_selector = pod.map(|s| self.selector(s, &format!("{path}.podSelector")));
                let namespace_selector =
                    ns.map(|s| self.selector(s, &format!("{path}.namespaceSelector")));
                Some(PolicyPeer::Pods {
                    pod_selector: match pod_selector {
                        Some(None) => return None,
                        Some(Some(s)) => Some(s),
                        None => None,
                    },
                    namespace_selector: match namespace_selector {
                        Some(None) => return None,
                        Some(Some(s)) => Some(s),
                        None => None,
                    },
                })
            }
        }
    }

    fn cidr(&mut self, v: &Value, path: &str) -> Option<IpNet> {
        let s = self.string(Some(v), path)?;
        match s.parse::<IpNet>() {
            Ok(n) => Some(n.trunc()),
            Err(_) => {
                self.errs.push(FieldError::invalid_str(
                    self.path(path),
                    &s,
                    "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
                ));
                None
            }
        }
    }

    fn ip_block(&mut self, v: &Value, path: &str) -> Option<IpBlock> {
        let b = self.object(v, path, &["cidr", "except"])?;
        let cidr = match b.get("cidr") {
            Some(c) => self.cidr(c, &format!("{path}.cidr")),
            None => {
                self.errs
                    .push(FieldError::required(self.path(&format!("{path}.cidr")), ""));
                None
            }
        };
        let mut except = Vec::new();
        let mut ok = true;
        for (i, e) in self
            .list(b.get("except"), &format!("{path}.except"))
            .into_iter()
            .enumerate()
        {
            match self.cidr(e, &format!("{path}.except[{i}]")) {
                Some(n) => except.push(n),
                None => ok = false,
            }
        }
        let cidr = cidr?;
        ok.then_some(IpBlock { cidr, except })
    }

    fn policy_port(&mut self, v: &Value, path: &str) -> Option<PolicyPort> {
        let p = self.object(v, path, &["protocol", "port", "endPort"])?;
        let protocol = self.protocol(p.get("protocol"), &format!("{path}.protocol"));
        let port = match p.get("port") {
            None => Some(None),
            Some(Value::Str(name)) => Some(Some(PortRef::Name(name.clone()))),
            Some(v @ Value::Int(_)) => self
                .port_number(v, &format!("{path}.port"))
                .map(|n| Some(PortRef::Number(n))),
            Some(other) => {
                self.type_error(&format!("{path}.port"), other, "an integer or a port name");
                None
            }
        };
        let end_port = match p.get("endPort") {
            None => Some(None),
            Some(e) => self.port_number(e, &format!("{path}.endPort")).map(Some),
        };
        Some(PolicyPort {
            protocol: protocol?,
            port: port?,
            end_port: end_port?,
        })
    }

    fn selector(&mut self, v: &Value, path: &str) -> Option<LabelSelector> {
        let before = self.errs.len();
        let s = self.object(v, path, &["matchLabels", "matchExpressions"])?;
        let match_labels = self.string_map(s.get("matchLabels"), &format!("{path}.matchLabels"));
        let mut match_expressions = Vec::new();
        for (i, e) in self
            .list(
                s.get("matchExpressions"),
                &format!("{path}.matchExpressions"),
            )
            .into_iter()
            .enumerate()
        {
            let ep = format!("{path}.matchExpressions[{i}]");
            let Some(r) = self.object(e, &ep, &["key", "operator", "values"]) else {
                continue;
            };
            let key = self.string(r.get("key"), &format!("{ep}.key"));
            let op = self.string(r.get("operator"), &format!("{ep}.operator"));
            let values = self.strings(r.get("values"), &format!("{ep}.values"));
            let operator = match op.as_deref() {
                Some("In") => Some(Operator::In),
                Some("NotIn") => Some(Operator::NotIn),
                Some("Exists") => Some(Operator::Exists),
                Some("DoesNotExist") => Some(Operator::DoesNotExist),
                Some(other) => {
                    self.errs.push(FieldError::invalid_str(
                        self.path(&format!("{ep}.operator")),
                        other,
                        "not a valid selector operator",
                    ));
                    None
                }
                None => {
                    self.errs.push(FieldError::invalid_str(
                        self.path(&format!("{ep}.operator")),
                        "",
                        "not a valid selector operator",
                    ));
                    None
                }
            };
            if let (Some(key), Some(operator)) = (key, operator) {
                match_expressions.push(Requirement {
                    key,
                    operator,
                    values,
                });
            } else if r.get("key").is_none() {
                self.errs.push(FieldError::invalid_str(
                    self.path(&format!("{ep}.key")),
                    "",
                    "name part must be non-empty",
                ));
            }
        }
        (self.errs.len() == before).then_some(LabelSelector {
            match_labels,
            match_expressions,
        })
    }

    fn namespace(&mut self, doc: &Value) -> Option<Namespace> {
        let root = self.object(
            doc,
            "",
            &["apiVersion", "kind", "metadata", "spec", "status"],
        )?;
        let meta = self.metadata(&root, false, &ParseOptions::default());
        // `spec.finalizers` and `status` concern the namespace's deletion, not the network:
        // accepted (exported manifests carry them) and dropped.
        if let Some(spec) = root.get("spec")
            && let Some(s) = self.object(spec, "spec", &["finalizers"])
        {
            let _ = self.strings(s.get("finalizers"), "spec.finalizers");
        }
        let (name, _, labels) = meta?;
        Some(Namespace { name, labels })
    }

    fn pod_labels(&mut self, doc: &Value, opts: &ParseOptions) -> Option<PodLabels> {
        let root = self.object(doc, "", &["apiVersion", "kind", "metadata", "spec"])?;
        let meta = self.metadata(&root, true, opts);
        let mut ports = BTreeMap::new();
        if let Some(spec) = root.get("spec")
            && let Some(s) = self.object(spec, "spec", &["ports"])
        {
            for (i, p) in self
                .list(s.get("ports"), "spec.ports")
                .into_iter()
                .enumerate()
            {
                let pp = format!("spec.ports[{i}]");
                let Some(o) = self.object(p, &pp, &["name", "containerPort", "protocol"]) else {
                    continue;
                };
                let name = match o.get("name") {
                    Some(n) => self.string(Some(n), &format!("{pp}.name")).filter(|n| {
                        let msgs = names::port_name(n);
                        for msg in &msgs {
                            self.errs.push(FieldError::invalid_str(
                                self.path(&format!("{pp}.name")),
                                n,
                                msg.clone(),
                            ));
                        }
                        msgs.is_empty()
                    }),
                    None => {
                        self.errs
                            .push(FieldError::required(self.path(&format!("{pp}.name")), ""));
                        None
                    }
                };
                let port = match o.get("containerPort") {
                    Some(v) => self
                        .port_number(v, &format!("{pp}.containerPort"))
                        .filter(|p| {
                            if *p == 0 {
                                self.errs.push(FieldError::invalid(
                                    self.path(&format!("{pp}.containerPort")),
                                    "0",
                                    "must be between 1 and 65535, inclusive",
                                ));
                            }
                            *p != 0
                        }),
                    None => {
                        self.errs.push(FieldError::required(
                            self.path(&format!("{pp}.containerPort")),
                            "",
                        ));
                        None
                    }
                };
                let protocol = self.protocol(o.get("protocol"), &format!("{pp}.protocol"));
                if let (Some(name), Some(port), Some(protocol)) = (name, port, protocol) {
                    match ports.entry(name) {
                        std::collections::btree_map::Entry::Occupied(e) => {
                            let name = e.key().clone();
                            self.errs.push(FieldError::duplicate(
                                self.path(&format!("{pp}.name")),
                                &name,
                            ));
                        }
                        std::collections::btree_map::Entry::Vacant(v) => {
                            v.insert(NamedPort { protocol, port });
                        }
                    }
                }
            }
        }
        let (name, namespace, labels) = meta?;
        Some(PodLabels {
            namespace,
            name,
            labels,
            ports,
        })
    }
}
