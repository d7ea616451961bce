//! Validation with the API server's field paths and messages
//! (`k8s.io/apimachinery/pkg/util/validation/field`): a [`FieldError`] prints as
//! `spec.ingress[0].ports[1].port: Invalid value: 70000: must be between 1 and 65535, inclusive`.
//!
//! Type-level problems (a string where a number belongs, an unknown field, an unknown
//! protocol, a port that does not fit 16 bits) are found while a manifest is decoded; the
//! checks here work on decoded values, so they also cover objects built in code.

pub(crate) mod names;

use std::fmt;
use std::net::IpAddr;

use crate::model::{
    LabelSelector, Labels, NetworkPolicy, Operator, PodLabels, PolicyPeer, PolicyPort, PortRef,
};

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// `spec.ingress[0].ports[1].port`
    pub path: String,
    pub kind: ErrorKind,
}

/// The API server's error types (`field.ErrorType`), plus the unknown field of strict decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// `Required value[: detail]`
    Required(String),
    /// `Invalid value: <value>[: detail]`; `value` is already rendered (strings quoted).
    Invalid { value: String, detail: String },
    /// `Unsupported value: <value>: supported values: "A", "B"`
    NotSupported {
        value: String,
        supported: Vec<&'static str>,
    },
    /// `Forbidden: detail`
    Forbidden(String),
    /// `Duplicate value: <value>`
    Duplicate(String),
    /// A field that is not part of the object's schema, or that weft does not implement.
    /// Weft never ignores a field silently.
    UnknownField,
}

impl FieldError {
    pub(crate) fn required(path: impl Into<String>, detail: impl Into<String>) -> FieldError {
        FieldError {
            path: path.into(),
            kind: ErrorKind::Required(detail.into()),
        }
    }

    pub(crate) fn invalid(
        path: impl Into<String>,
        value: impl Into<String>,
        detail: impl Into<String>,
    ) -> FieldError {
        FieldError {
            path: path.into(),
            kind: ErrorKind::Invalid {
                value: value.into(),
                detail: detail.into(),
            },
        }
    }

    /// `invalid` with a string value, quoted as the API server quotes it.
    pub(crate) fn invalid_str(
        path: impl Into<String>,
        value: &str,
        detail: impl Into<String>,
    ) -> FieldError {
        FieldError::invalid(path, quote(value), detail)
    }

    pub(crate) fn not_supported(
        path: impl Into<String>,
        value: &str,
        supported: &[&'static str],
    ) -> FieldError {
        FieldError {
            path: path.into(),
            kind: ErrorKind::NotSupported {
                value: quote(value),
                supported: supported.to_vec(),
            },
        }
    }

    pub(crate) fn forbidden(path: impl Into<String>, detail: impl Into<String>) -> FieldError {
        FieldError {
            path: path.into(),
            kind: ErrorKind::Forbidden(detail.into()),
        }
    }

    pub(crate) fn duplicate(path: impl Into<String>, value: &str) -> FieldError {
        FieldError {
            path: path.into(),
            kind: ErrorKind::Duplicate(quote(value)),
        }
    }

    pub(crate) fn unknown(path: impl Into<String>) -> FieldError {
        FieldError {
            path: path.into(),
            kind: ErrorKind::UnknownField,
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.path)?;
        match &self.kind {
            ErrorKind::Required(d) if d.is_empty() => f.write_str("Required value"),
            ErrorKind::Required(d) => write!(f, "Required value: {d}"),
            ErrorKind::Invalid { value, detail } if detail.is_empty() => {
                write!(f, "Invalid value: {value}")
            }
            ErrorKind::Invalid { value, detail } => write!(f, "Invalid value: {value}: {detail}"),
            ErrorKind::NotSupported { value, supported } => {
                let list: Vec<String> = supported.iter().map(|s| quote(s)).collect();
                write!(
                    f,
                    "Unsupported value: {value}: supported values: {}",
                    list.join(", ")
                )
            }
            ErrorKind::Forbidden(d) => write!(f, "Forbidden: {d}"),
            ErrorKind::Duplicate(v) => write!(f, "Duplicate value: {v}"),
            ErrorKind::UnknownField => {
                f.write_str("Unknown field: not in the object's schema (weft ignores no field)")
            }
        }
    }
}

/// Go's `%q` for the strings we print (close enough: Rust's debug escaping).
pub(crate) fn quote(s: &str) -> String {
    format!("{s:?}")
}

const PORT_RANGE: &str = "must be between 1 and 65535, inclusive";

/// `ValidateNetworkPolicy` (create): object meta, then the spec.
pub(crate) fn policy(np: &NetworkPolicy) -> Vec<FieldError> {
    let mut errs = Vec::new();
    object_meta(
        &mut errs,
        &np.name,
        Some(&np.namespace),
        &np.labels,
        names::dns1123_subdomain,
    );
    let spec = &np.spec;
    selector(&mut errs, &spec.pod_selector, "spec.podSelector");
    for (dir, rules) in [("ingress", &spec.ingress), ("egress", &spec.egress)] {
        let peers_field = if dir == "ingress" { "from" } else { "to" };
        for (i, rule) in rules.iter().enumerate() {
            let rule_path = format!("spec.{dir}[{i}]");
            for (j, port) in rule.ports.iter().enumerate() {
                policy_port(&mut errs, port, &format!("{rule_path}.ports[{j}]"));
            }
            for (j, peer) in rule.peers.iter().enumerate() {
                policy_peer(&mut errs, peer, &format!("{rule_path}.{peers_field}[{j}]"));
            }
        }
    }
    if spec.policy_types.len() > 2 {
        let list: Vec<String> = spec
            .policy_types
            .iter()
            .map(|t| quote(t.as_str()))
            .collect();
        errs.push(FieldError::invalid(
            "spec.policyTypes",
            format!("[{}]", list.join(",")),
            "may not specify more than two policyTypes",
        ));
    }
    errs
}

/// Namespace objects: a DNS-1123 label as name, valid labels, no namespace.
pub(crate) fn namespace(name: &str, labels: &Labels) -> Vec<FieldError> {
    let mut errs = Vec::new();
    object_meta(&mut errs, name, None, labels, names::dns1123_label);
    errs
}

/// Weft's PodLabels: pod meta rules plus its named ports (IANA_SVC_NAME, 1–65535).
pub(crate) fn pod_labels(p: &PodLabels) -> Vec<FieldError> {
    let mut errs = Vec::new();
    object_meta(
        &mut errs,
        &p.name,
        Some(&p.namespace),
        &p.labels,
        names::dns1123_subdomain,
    );
    for (i, (name, port)) in p.ports.iter().enumerate() {
        for msg in names::port_name(name) {
            errs.push(FieldError::invalid_str(
                format!("spec.ports[{i}].name"),
                name,
                msg,
            ));
        }
        if port.port == 0 {
            errs.push(FieldError::invalid(
                format!("spec.ports[{i}].containerPort"),
                "0",
                PORT_RANGE,
            ));
        }
    }
    errs
}

/// `ValidateObjectMeta`: name required and well-formed, namespace required (namespaced
/// kinds) or forbidden (cluster-scoped), labels valid.
fn object_meta(
    errs: &mut Vec<FieldError>,
    name: &str,
    namespace: Option<&str>,
    labels: &Labels,
    name_rule: fn(&str) -> Vec<String>,
) {
    if name.is_empty() {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        for msg in name_rule(name) {
            errs.push(FieldError::invalid_str("metadata.name", name, msg));
        }
    }
    if let Some(ns) = namespace {
        if ns.is_empty() {
            errs.push(FieldError::required("metadata.namespace", ""));
        } else {
            for msg in names::dns1123_label(ns) {
                errs.push(FieldError::invalid_str("metadata.namespace", ns, msg));
            }
        }
    }
    label_map(errs, labels, "metadata.labels");
}

/// `ValidateLabels`: every key a qualified name, every value a label value.
fn label_map(errs: &mut Vec<FieldError>, labels: &Labels, path: &str) {
    for (k, v) in labels {
        for msg in names::label_key(k) {
            errs.push(FieldError::invalid_str(path, k, msg));
        }
        for msg in names::label_value(v) {
            errs.push(FieldError::invalid_str(path, v, msg));
        }
    }
}

/// `ValidateLabelSelector` (invalid label values in selectors are not allowed on create).
fn selector(errs: &mut Vec<FieldError>, sel: &LabelSelector, path: &str) {
    label_map(errs, &sel.match_labels, &format!("{path}.matchLabels"));
    for (i, req) in sel.match_expressions.iter().enumerate() {
        let rp = format!("{path}.matchExpressions[{i}]");
        match req.operator {
            Operator::In | Operator::NotIn => {
                if req.values.is_empty() {
                    errs.push(FieldError::required(
                        format!("{rp}.values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            Operator::Exists | Operator::DoesNotExist => {
                if !req.values.is_empty() {
                    errs.push(FieldError::forbidden(
                        format!("{rp}.values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
        }
        for msg in names::label_key(&req.key) {
            errs.push(FieldError::invalid_str(format!("{rp}.key"), &req.key, msg));
        }
        for (j, v) in req.values.iter().enumerate() {
            for msg in names::label_value(v) {
                errs.push(FieldError::invalid_str(format!("{rp}.values[{j}]"), v, msg));
            }
        }
    }
}

/// `ValidateNetworkPolicyPort` (the protocol is checked while decoding).
fn policy_port(errs: &mut Vec<FieldError>, port: &PolicyPort, path: &str) {
    match &port.port {
        Some(PortRef::Number(p)) => {
            if *p == 0 {
                errs.push(FieldError::invalid(format!("{path}.port"), "0", PORT_RANGE));
            }
            if let Some(end) = port.end_port {
                if end < *p {
                    errs.push(FieldError::invalid(
                        format!("{path}.endPort"),
                        end.to_string(),
                        "must be greater than or equal to `port`",
                    ));
                }
                if end == 0 {
                    errs.push(FieldError::invalid(
                        format!("{path}.endPort"),
                        "0",
                        PORT_RANGE,
                    ));
                }
            }
        }
        Some(PortRef::Name(name)) => {
            if let Some(end) = port.end_port {
                errs.push(FieldError::invalid(
                    format!("{path}.endPort"),
                    end.to_string(),
                    "may not be specified when `port` is non-numeric",
                ));
            }
            for msg in names::port_name(name) {
                errs.push(FieldError::invalid_str(format!("{path}.port"), name, msg));
            }
        }
        None => {
            if let Some(end) = port.end_port {
                errs.push(FieldError::invalid(
                    format!("{path}.endPort"),
                    end.to_string(),
                    "may not be specified when `port` is not specified",
                ));
            }
        }
    }
}

/// `ValidateNetworkPolicyPeer` + `ValidateIPBlock` (peer shape is checked while decoding:
/// the typed peer cannot be empty or mix ipBlock with selectors).
fn policy_peer(errs: &mut Vec<FieldError>, peer: &PolicyPeer, path: &str) {
    match peer {
        PolicyPeer::Pods {
            pod_selector,
            namespace_selector,
        } => {
            if pod_selector.is_none() && namespace_selector.is_none() {
                errs.push(FieldError::required(path, "must specify a peer"));
            }
            if let Some(s) = pod_selector {
                selector(errs, s, &format!("{path}.podSelector"));
            }
            if let Some(s) = namespace_selector {
                selector(errs, s, &format!("{path}.namespaceSelector"));
            }
        }
        PolicyPeer::IpBlock(block) => {
            for (i, ex) in block.except.iter().enumerate() {
                if !strict_subset(ex.network(), ex.prefix_len(), &block.cidr) {
                    errs.push(FieldError::invalid_str(
                        format!("{path}.ipBlock.except[{i}]"),
                        &ex.to_string(),
                        "must be a strict subset of `cidr`",
                    ));
                }
            }
        }
    }
}

/// The API server's test: the except's address lies in the cidr and its prefix is longer.
fn strict_subset(addr: IpAddr, prefix: u8, cidr: &ipnet::IpNet) -> bool {
    cidr.contains(&addr) && prefix > cidr.prefix_len()
}
