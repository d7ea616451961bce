//! Error types. Each names what failed and where, so the plugin can map it to a CNI code
//! (ConfigError → 7, AllocError::Exhausted → 50 for STATUS, the rest → 11) in one place.

use std::net::IpAddr;
use std::path::PathBuf;

/// A configuration problem, naming the offending key.
///
/// `key` is relative to the request's `ipam` object (`ranges[0][1].subnet`, `dataDir`), or,
/// for keys outside it, the full request path (`runtimeConfig.ips[0]`, `args.cni.ips[1]`,
/// `name`); Display prints `ipam.<key>: <message>` for the former, `<key>: <message>` for the
/// latter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", display_key(key))]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

/// Top-level request keys that live outside the `ipam` object.
const TOP_LEVEL_KEYS: [&str; 4] = ["runtimeConfig", "args", "name", "cniVersion"];

fn display_key(key: &str) -> String {
    let head = key.split(['.', '[']).next().unwrap_or_default();
    if key.is_empty() {
        "ipam".to_owned()
    } else if TOP_LEVEL_KEYS.contains(&head) {
        key.to_owned()
    } else {
        format!("ipam.{key}")
    }
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// A failure of the on-disk lease store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The network name would not be a single directory component under the data dir.
    #[error("network name {0:?} cannot be used as a directory name")]
    InvalidNetworkName(String),
}

impl StoreError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| StoreError::Io { op, path, source }
    }
}

/// Why `Locked::allocate` handed out nothing.
#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    /// Every address of range set `set` is leased (or is its gateway).
    #[error("no IP addresses available in range set {set}: {ranges}")]
    Exhausted { set: usize, ranges: String },
    /// The (container id, ifname) pair already holds a lease in one of the requested sets.
    #[error(
        "container {id} interface {ifname} already holds a lease; duplicate allocation is not allowed"
    )]
    Duplicate { id: String, ifname: String },
    /// The requested IP is in no range (between rangeStart and rangeEnd) of any set, or
    /// another requested IP already claims the only set containing it.
    #[error("requested IP {0} is not within any range set (one requested IP per set)")]
    RequestedNotInRange(IpAddr),
    #[error("requested IP {0} is already leased")]
    RequestedInUse(IpAddr),
    #[error("requested IP {0} is the subnet's gateway")]
    RequestedGateway(IpAddr),
    #[error(transparent)]
    Store(#[from] StoreError),
}
