//! Typed errors for everything in this crate.
//!
//! Callers branch on the variant (`NotFound` during DEL is success, `Exists` during ADD may
//! mean "someone else's interface"), so the common kernel answers get their own variants
//! instead of hiding behind an errno. Every message names the operation and the object.

use std::io;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The object (link, address, route, netns path, sysctl key) does not exist.
    #[error("{what}: not found")]
    NotFound { what: String },

    /// The kernel refused to create the object because it already exists.
    #[error("{what}: already exists")]
    Exists { what: String },

    /// The path exists but is not a network namespace file.
    #[error("{}: not a network namespace", path.display())]
    NotNetns { path: PathBuf },

    /// An interface with this name exists but is of another kind.
    #[error("interface {name}: is {found}, expected {expected}")]
    WrongKind {
        name: String,
        expected: &'static str,
        found: String,
    },

    /// The kernel answered a netlink request or a syscall with an error.
    #[error("{op} {context}: {source}{}", ext_ack.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Kernel {
        op: &'static str,
        context: String,
        errno: i32,
        /// The kernel's extended-ACK text, when it gave one (e.g. "Invalid MTU").
        ext_ack: Option<String>,
        #[source]
        source: io::Error,
    },

    /// A local I/O failure (sockets, /proc files) outside a kernel request.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },

    /// The kernel's reply did not parse or did not follow the netlink protocol.
    #[error("netlink protocol error: {context}")]
    Protocol { context: String },

    /// The caller passed something malformed (MAC string, sysctl key, name).
    #[error("invalid argument: {0}")]
    Invalid(String),
}

impl Error {
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    pub fn is_exists(&self) -> bool {
        matches!(self, Error::Exists { .. })
    }

    /// The errno behind a kernel error, if this is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Kernel { errno, .. } => Some(*errno),
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn protocol(context: impl Into<String>) -> Error {
        Error::Protocol {
            context: context.into(),
        }
    }

    /// Maps a kernel errno to the typed variant callers act on. `gone_errnos` are the
    /// extra codes that mean "no such object" for this particular operation (a route
    /// delete answers ESRCH, an address delete EADDRNOTAVAIL); ENODEV always does.
    pub(crate) fn from_errno(
        op: &'static str,
        context: &str,
        errno: i32,
        ext_ack: Option<String>,
        gone_errnos: &[i32],
    ) -> Error {
        if errno == libc::EEXIST {
            return Error::Exists {
                what: format!("{op} {context}"),
            };
        }
        if errno == libc::ENODEV || gone_errnos.contains(&errno) {
            return Error::NotFound {
                what: format!("{op} {context}"),
            };
        }
        Error::Kernel {
            op,
            context: context.to_owned(),
            errno,
            ext_ack,
            source: io::Error::from_raw_os_error(errno),
        }
    }
}
