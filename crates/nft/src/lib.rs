//! `weft-nft`: everything weft says to netfilter, over raw netfilter netlink.
//!
//! **Owns:** the one netfilter netlink socket and its message/attribute encoding, batches,
//! requests and dumps (module `nl`), and what goes over it:
//! - [`Masquerade`] (module `masquerade`): the table `inet <name>` (production: `inet
//!   weft`), its `postrouting` chain, the pod-range sets `masq4` / `masq6` and their two
//!   masquerade rules;
//! - [`TableBatch`] (module `batch`): changes to any `inet` table as one atomic batch — set
//!   elements (module `elements`), regular chains, their rules, sets and verdict maps
//!   (module `objects`): the policy table's diffs after its first build. Rule expressions
//!   are encoded in module `expr`, shared with the masquerade rules;
//! - module [`counters`]: drop counters and per-element counters read back with dumps;
//! - module [`conntrack`]: a namespace's conntrack entries, dumped and deleted one by one
//!   (ctnetlink).
//!
//! [`Error`] (module `error`) is every module's error.
//!
//! **Must not:** spawn `nft`, `conntrack` or anything else, link C libraries (libnftnl,
//! libnetfilter_conntrack), open a second kind of netfilter socket, or know what a table
//! is for (policy lives in `weft-policy`, its table's layout is the caller's). It runs on
//! the CNI plugin's per-pod hot path: synchronous, no threads, and the masquerade's common
//! case is one netlink round trip. Everything happens in the network namespace of the
//! thread that opened the socket.

mod batch;
pub mod conntrack;
pub mod counters;
mod elements;
mod error;
mod expr;
mod masquerade;
mod nl;
mod objects;
#[cfg(test)]
mod testbytes;

pub use batch::{Session, TableBatch};
pub use elements::{Element, SetKind, concat_key};
pub use error::Error;
pub use expr::Verdict;
pub use masquerade::Masquerade;
pub use objects::{Field, KeyType, Rule, SetSpec};
