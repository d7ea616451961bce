//! The crate's one error type: what the kernel refused (nf_tables or conntrack), what did
//! not parse, what the socket said, and input refused before anything was sent.

use nix::errno::Errno;

/// Errors from the kernel or the netlink exchange.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel rejected a message (`op` is the nf_tables message, e.g. `NEWSETELEM`).
    #[error("nf_tables {op} failed: {errno} ({context})")]
    Kernel {
        op: &'static str,
        errno: Errno,
        context: String,
    },
    /// The kernel's reply did not parse as expected.
    #[error("netfilter netlink protocol error: {detail}")]
    Protocol { detail: String },
    /// The table name can't be an nf_tables name (empty, over 255 bytes, or contains NUL).
    #[error("invalid nf_tables table name {name:?}")]
    InvalidTableName { name: String },
    /// A set name given to a [`TableBatch`](crate::TableBatch) can't be an nf_tables name.
    #[error("invalid nf_tables set name {name:?} in table inet {table}")]
    InvalidSetName { table: String, name: String },
    /// A chain name given to a [`TableBatch`](crate::TableBatch) (also as a jump target)
    /// can't be an nf_tables name.
    #[error("invalid nf_tables chain name {name:?} in table inet {table}")]
    InvalidChainName { table: String, name: String },
    /// A `log prefix` longer than the kernel takes (127 bytes) or containing NUL.
    #[error("invalid log prefix {prefix:?} for chain {chain} in table inet {table}")]
    InvalidLogPrefix {
        table: String,
        chain: String,
        prefix: String,
    },
    /// The kernel refused a conntrack request (`op`: `CT_GET` for a dump, `CT_DELETE`).
    #[error("ctnetlink {op} failed: {errno} ({context})")]
    Conntrack {
        op: &'static str,
        errno: Errno,
        context: String,
    },
    /// A conntrack entry that cannot be deleted by its tuple (a protocol without ports,
    /// addresses of two families).
    #[error("conntrack delete {entry}: {reason}")]
    InvalidConntrackEntry { entry: String, reason: &'static str },
    /// The netlink socket itself failed (nf_tables and conntrack share it).
    #[error("netfilter netlink socket: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The kernel errno, if this is a kernel rejection.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Kernel { errno, .. } | Error::Conntrack { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    pub(crate) fn protocol(detail: impl Into<String>) -> Error {
        Error::Protocol {
            detail: detail.into(),
        }
    }
}
