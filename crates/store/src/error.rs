//! The two error types: [`ConfigError`] for input that is wrong (nothing was written), and
//! [`StoreError`] for everything a datastore call can answer besides success.

use std::path::PathBuf;

use ipnet::IpNet;

use crate::LeaseId;
use crate::config::{ClusterConfig, Family};

/// Input that cannot be accepted: a cluster config, a node name, a node record. Each message
/// names the field and says what is wrong with it, because a person reads these at
/// `weftd` start-up or from `weftctl`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not JSON, not an object, or a key this version does not know (typos fail loudly).
    #[error("cluster config is not valid: {0}")]
    Malformed(String),
    /// A known key with a value of the wrong type or syntax.
    #[error("cluster config {field}: {reason}")]
    Field { field: &'static str, reason: String },
    #[error("cluster config has no pod CIDR: set cidrV4, cidrV6 or both")]
    NoCidr,
    #[error("cluster config {field}: {net} has host bits set; did you mean {canonical}")]
    HostBits {
        field: &'static str,
        net: IpNet,
        canonical: IpNet,
    },
    #[error("cluster config {field}: {net} is not an {expected} network")]
    WrongFamily {
        field: &'static str,
        net: IpNet,
        expected: Family,
    },
    #[error("cluster config {field}: {net} overlaps {other} ({what})")]
    Overlap {
        field: &'static str,
        net: IpNet,
        other: IpNet,
        what: &'static str,
    },
    #[error(
        "cluster config {field}: /{size} blocks do not fit in {cidr} (the block size must be at least the CIDR's prefix length /{})",
        cidr.prefix_len()
    )]
    BlockDoesNotFit {
        field: &'static str,
        size: u8,
        cidr: IpNet,
    },
    #[error(
        "cluster config {field}: /{size} blocks are too small to hold pod addresses (at most /{max})"
    )]
    BlockTooSmall {
        field: &'static str,
        size: u8,
        max: u8,
    },
    #[error(
        "cluster config {field}: /{size} blocks cut {cidr} into 2^{bits} blocks, more than the limit of 2^{limit}; use larger blocks"
    )]
    TooManyBlocks {
        field: &'static str,
        size: u8,
        cidr: IpNet,
        bits: u8,
        limit: u8,
    },
    #[error("cluster config vxlanVni: {0} is outside 1..=16777215")]
    Vni(u32),
    #[error("cluster config vxlanPort: 0 is not a usable UDP port")]
    Port,
    /// Node names follow DNS-1123 subdomain rules, like Kubernetes node names.
    #[error("node name {name:?}: {reason}")]
    NodeName { name: String, reason: &'static str },
    /// A value of the Kubernetes ConfigMap `weft-config` (keys that are cluster config keys
    /// report as such).
    #[error("ConfigMap weft-config key {key}: {reason}")]
    ConfigMap { key: String, reason: String },
    #[error("node record {node:?} {field}: {reason}")]
    NodeRecord {
        node: String,
        field: &'static str,
        reason: String,
    },
}

/// What a datastore call can fail with. Callers act on the variant: retry later
/// ([`StoreError::Unavailable`]), start over with a new lease ([`StoreError::LeaseNotFound`]),
/// stop and tell a person (most others).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or did not answer within the request timeout. Retry.
    #[error("datastore unavailable during {op}: {detail}")]
    Unavailable { op: &'static str, detail: String },
    /// The lease expired or was revoked; everything attached to it is gone.
    #[error("lease {0:x} not found (expired or revoked)")]
    LeaseNotFound(LeaseId),
    #[error("no free {family} block left in {cidr}")]
    NoFreeBlock { family: Family, cidr: IpNet },
    #[error("block {block} is owned by node {owner:?}")]
    NotOwner { block: IpNet, owner: String },
    #[error(
        "the datastore already holds a different cluster config: existing {}, requested {}",
        existing.to_json(), requested.to_json()
    )]
    ConfigConflict {
        existing: Box<ClusterConfig>,
        requested: Box<ClusterConfig>,
    },
    #[error(transparent)]
    InvalidConfig(#[from] ConfigError),
    /// A stored value this version cannot read (someone wrote it by hand, or a newer
    /// version with an incompatible format did).
    #[error("datastore key {key}: {detail}")]
    Corrupt { key: String, detail: String },
    /// Certificates or keys could not be read or were refused in the TLS handshake.
    #[error("etcd TLS: {0}")]
    Tls(String),
    // --- added beyond the agreed API ---
    /// `claim_block`/`adopt_block` before any cluster config was stored.
    #[error("the datastore holds no cluster config yet (run init_config first)")]
    NoConfig,
    /// The cluster config has no CIDR for this family.
    #[error("the cluster config has no {0} CIDR")]
    FamilyDisabled(Family),
    /// A block handed to `adopt_block`/`release_block` that is not one of the cluster's
    /// blocks (wrong size, outside the CIDR, host bits set).
    #[error("{block} is not a block of this cluster: {reason}")]
    InvalidBlock { block: IpNet, reason: String },
    /// The local store's file or its lock could not be used.
    #[error("local datastore {}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    /// Another process (or another `LocalStore` in this one) has the local store open.
    #[error(
        "local datastore {} is in use by another process (lock {} is held)",
        path.display(),
        lock.display()
    )]
    Locked { path: PathBuf, lock: PathBuf },
    /// The cluster is not ready for this yet (a Node object not created, no podCIDRs
    /// allocated): retry, and tell a person what is missing.
    #[error("waiting during {op}: {reason}")]
    NotYet { op: &'static str, reason: String },
    /// The credentials lack a permission; the API server's message names the verb and the
    /// resource.
    #[error("not permitted during {op}: {detail}")]
    Forbidden { op: &'static str, detail: String },
    /// The Kubernetes API refused a request for a reason not covered above.
    #[error("Kubernetes API during {op}: {detail} (HTTP {code})")]
    Api {
        op: &'static str,
        code: u16,
        detail: String,
    },
    /// A policy object's namespace or name that cannot be a key segment.
    #[error("{kind} {name}: {reason}")]
    InvalidObjectName {
        kind: &'static str,
        name: String,
        reason: String,
    },
}
