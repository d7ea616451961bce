//! Policy objects (Namespaces, NetworkPolicies, PodLabels) kept as opaque JSON by kind,
//! namespace and name. The store neither parses nor validates their content: `weftctl apply`
//! validates them with `weft-policy` before writing, and readers parse what they list. Only
//! the names are checked, because they become key segments.

use serde_json::Value;

use crate::error::StoreError;
use crate::model::EndpointRecord;

/// The kinds of policy object the store keeps, each under its own key folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    /// Cluster-scoped: its namespace is always "".
    Namespace,
    NetworkPolicy,
    PodLabels,
}

impl ObjectKind {
    pub const ALL: [ObjectKind; 3] = [
        ObjectKind::Namespace,
        ObjectKind::NetworkPolicy,
        ObjectKind::PodLabels,
    ];

    /// The key folder: `namespaces`, `networkpolicies`, `podlabels`.
    pub fn folder(self) -> &'static str {
        match self {
            ObjectKind::Namespace => "namespaces",
            ObjectKind::NetworkPolicy => "networkpolicies",
            ObjectKind::PodLabels => "podlabels",
        }
    }

    /// The manifest `kind` (`Namespace`, `NetworkPolicy`, `PodLabels`).
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Namespace => "Namespace",
            ObjectKind::NetworkPolicy => "NetworkPolicy",
            ObjectKind::PodLabels => "PodLabels",
        }
    }

    pub fn from_name(kind: &str) -> Option<ObjectKind> {
        ObjectKind::ALL.into_iter().find(|k| k.name() == kind)
    }

    pub fn namespaced(self) -> bool {
        self != ObjectKind::Namespace
    }
}

/// One stored object. `namespace` is "" for a Namespace.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredObject {
    pub kind: ObjectKind,
    pub namespace: String,
    pub name: String,
    pub value: Value,
}

/// A change to a policy object, as delivered by [`crate::Datastore::watch_objects`].
#[derive(Clone, Debug, PartialEq)]
pub enum ObjectEvent {
    Put(StoredObject),
    Deleted {
        kind: ObjectKind,
        namespace: String,
        name: String,
    },
    /// A node's agent published (or replaced) one of its pods.
    EndpointPut(EndpointRecord),
    /// A pod's endpoint key went away (deleted, or its node's lease expired).
    EndpointDeleted {
        node: String,
        namespace: String,
        name: String,
    },
    /// The watch broke or history was lost: re-list with `list_objects` and
    /// `list_endpoints`.
    Resync,
}

/// Checks that `namespace`/`name` can be key segments: non-empty (namespace empty exactly
/// for cluster-scoped kinds), at most 253 bytes, no '/', no control characters.
pub(crate) fn check_names(kind: ObjectKind, namespace: &str, name: &str) -> Result<(), StoreError> {
    let bad = |what: &str, value: &str, reason: &str| StoreError::InvalidObjectName {
        kind: kind.name(),
        name: format!("{what} {value:?}"),
        reason: reason.to_string(),
    };
    if kind.namespaced() {
        check_segment(namespace).map_err(|r| bad("namespace", namespace, r))?;
    } else if !namespace.is_empty() {
        return Err(bad(
            "namespace",
            namespace,
            "must be empty: the kind is cluster-scoped",
        ));
    }
    check_segment(name).map_err(|r| bad("name", name, r))
}

/// Checks an endpoint's key segments: a valid node name, a usable namespace and name.
pub(crate) fn check_endpoint_names(
    node: &str,
    namespace: &str,
    name: &str,
) -> Result<(), StoreError> {
    crate::model::validate_node_name(node)?;
    let bad = |what: &str, value: &str, reason: &str| StoreError::InvalidObjectName {
        kind: "Endpoint",
        name: format!("{what} {value:?}"),
        reason: reason.to_string(),
    };
    check_segment(namespace).map_err(|r| bad("namespace", namespace, r))?;
    check_segment(name).map_err(|r| bad("name", name, r))
}

fn check_segment(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("must not be empty");
    }
    if s.len() > 253 {
        return Err("is longer than 253 bytes");
    }
    if s.contains('/') || s.chars().any(char::is_control) {
        return Err("must not contain '/' or control characters");
    }
    Ok(())
}
