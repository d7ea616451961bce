//! One nf_tables transaction on one `inet` table, built by the caller and committed at once:
//! the kernel applies all of it or none of it. What can go into it is defined next to the
//! objects it touches (set elements in `elements`, sets, chains and rules in `objects`);
//! this module owns the batch itself, name checks, the batch-local ids of sets created in
//! it, and the socket it is sent on.
//!
//! It never creates or deletes tables and never touches base chains: those stay with the
//! caller's full rebuild (`nft -f`).
//!
//! Everything happens in the network namespace of the thread that opened the socket.

use std::collections::HashMap;

use crate::Error;
use crate::nl::{Batch, Socket};

/// A netlink socket kept open for many [`TableBatch`] commits.
///
/// Why it exists: when an nf_tables socket is closed, the kernel (6.x, `nft_rcv_nl_event`)
/// flushes the deferred destruction of the last transactions, which waits for an RCU grace
/// period (8–16 ms measured at HZ=250) whenever they deleted elements. With one socket per
/// commit, as `nft -f` has, every change that removes anything pays that wait; on a socket
/// that stays open the kernel frees the old elements in the background instead.
///
/// The socket belongs to the network namespace of the thread that opened it, whatever
/// thread later commits on it.
pub struct Session {
    sock: Socket,
}

impl Session {
    pub fn open() -> Result<Session, Error> {
        Ok(Session {
            sock: Socket::open()?,
        })
    }

    /// As [`TableBatch::commit`], on this session's socket.
    pub fn commit(&mut self, batch: TableBatch) -> Result<(), Error> {
        if let Some(e) = batch.invalid {
            return Err(e);
        }
        if batch.batch.is_empty() {
            return Ok(());
        }
        self.sock.transact(batch.batch)
    }
}

/// Changes to one `inet` table, committed as one transaction in the caller's order (a
/// diff's order matters: the kernel checks every message against the state the earlier
/// ones left, e.g. a rule's set must exist, a deleted chain must be unreferenced; a failed
/// commit applies nothing).
pub struct TableBatch {
    pub(crate) table: String,
    pub(crate) batch: Batch,
    /// The first invalid name given, reported by `commit` (so the builders chain).
    pub(crate) invalid: Option<Error>,
    /// Sets created in this batch and their batch-local ids (`NFTA_SET_ID`), which nft sends
    /// with every later reference to them in the same batch.
    pub(crate) set_ids: HashMap<String, u32>,
    last_set_id: u32,
}

impl TableBatch {
    /// An empty batch for table `inet <table>`.
    pub fn new(table: &str) -> TableBatch {
        let invalid = (!valid_name(table)).then(|| Error::InvalidTableName {
            name: table.to_string(),
        });
        TableBatch {
            table: table.to_string(),
            batch: Batch::new(),
            invalid,
            set_ids: HashMap::new(),
            last_set_id: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// Send the batch and wait for the kernel's verdict on every message, on a socket opened
    /// for this call in the calling thread's network namespace. On error nothing was
    /// applied; the error names the table, the object and the operation of the first
    /// message the kernel refused. Closing the socket costs an RCU grace period after a
    /// batch that deleted anything (see [`Session`]); callers that commit often should keep
    /// a `Session`.
    pub fn commit(self) -> Result<(), Error> {
        Session::open()?.commit(self)
    }

    /// Whether `set` can be named; records the first bad one. False also once the batch is
    /// already invalid (nothing more is encoded then).
    pub(crate) fn check_set(&mut self, set: &str) -> bool {
        if !valid_name(set) {
            self.invalid.get_or_insert_with(|| Error::InvalidSetName {
                table: self.table.clone(),
                name: set.to_string(),
            });
        }
        self.invalid.is_none()
    }

    /// As [`check_set`](Self::check_set), for a chain name.
    pub(crate) fn check_chain(&mut self, chain: &str) -> bool {
        if !valid_name(chain) {
            self.invalid.get_or_insert_with(|| Error::InvalidChainName {
                table: self.table.clone(),
                name: chain.to_string(),
            });
        }
        self.invalid.is_none()
    }

    /// The batch-local id of `set` if this batch created it.
    pub(crate) fn set_id(&self, set: &str) -> Option<u32> {
        self.set_ids.get(set).copied()
    }

    /// A new batch-local id for a set created now (nft numbers them 1, 2, … per batch).
    pub(crate) fn new_set_id(&mut self, set: &str) -> u32 {
        self.last_set_id += 1;
        let id = self.last_set_id;
        self.set_ids.insert(set.to_string(), id);
        id
    }

    #[cfg(test)]
    pub(crate) fn wire(&self) -> &[u8] {
        self.batch.wire()
    }
}

/// Names the kernel (NFT_NAME_MAXLEN, 256 with the NUL) and an attribute can hold.
pub(crate) fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 255 && !n.contains('\0')
}
