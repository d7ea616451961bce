//! What weftctl knows of a lab (`--lab NAME` of the policy commands): its names and its
//! record, `/run/weft-lab/<lab>/state.json`, which weft-lab's `weftctl lab` writes and
//! reads through this same code, so the two never disagree on the format.
//!
//! Modules: `names` (every name a lab puts on the machine, and the validation of the names
//! people give it) and `state` (the record and the lock).
//!
//! Must not: make or change anything on the machine but the record and its lock: building,
//! checking and removing labs is weft-lab's.

pub mod names;
pub mod state;

use std::io;
use std::net::Ipv4Addr;

/// Where the nodes find the lab's etcd: segment 0's router address, in the underlay
/// namespace (`names::Names::underlay`), where weft-lab's topology puts it.
pub const ETCD_ENDPOINT: &str = "http://192.168.100.1:2379";
pub const ETCD_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 1);
pub const ETCD_PORT: u16 = 2379;

/// What can go wrong with a lab's names and record. weft-lab's `LabError` wraps it whole, so
/// every message reads the same from `weftctl lab` and from `weftctl get --lab`.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: String,
    },

    #[error("no lab named {lab:?} (start it with `weftctl lab up --name {lab} …`)")]
    NoSuchLab { lab: String },

    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },

    #[error("{what} is corrupt")]
    State {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

impl RecordError {
    /// Wraps an I/O error with what we were doing.
    pub fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> RecordError {
        let what = what.into();
        move |source| RecordError::Io { what, source }
    }

    pub fn invalid(
        what: &'static str,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> RecordError {
        RecordError::Invalid {
            what,
            value: value.into(),
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = RecordError> = std::result::Result<T, E>;
