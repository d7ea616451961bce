//! `weft-nft`: weft's nftables masquerade table, spoken over raw netfilter netlink.
//!
//! [`Masquerade`] (module `masquerade`) owns the table `inet <name>` (production: `inet
//! weft`): its `postrouting` chain, the pod-range sets `masq4` / `masq6` and their two
//! masquerade rules.
//!
//! It runs on the CNI plugin's per-pod hot path, so it must not spawn `nft` (or anything
//! else), must not link C libraries, and keeps the common case to one netlink round trip.
//! Everything happens in the network namespace of the calling thread.
//!
//! [`TableBatch`] (module `batch`) commits changes to any `inet` table as one atomic batch,
//! without spawning `nft`: set elements (module `elements`) and regular chains, their rules,
//! and sets and verdict maps (module `objects`) — the policy table's diffs after its first
//! build. Rule expressions are encoded in module `expr`, shared with the masquerade rules.
//! Module [`counters`] reads drop counters and per-element counters back with netlink dumps.
//! [`Error`] (module `error`) is every module's error.

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
