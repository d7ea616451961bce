//! The policy truth table's parts: `scenarios` (the cluster, the policies and in-place
//! edits, as data, and their rendering),
//! `oracle` (the expected verdicts, from the Kubernetes API semantics, independent of
//! weft-policy), `probe` (echo listeners and parallel real connections), `sctp` (SCTP
//! INIT probes over raw sockets, for a kernel without an SCTP stack), `icmp` (echo probes),
//! `spot` (the oracle against cells worked out by hand).

pub mod icmp;
pub mod oracle;
pub mod probe;
pub mod scenarios;
pub mod sctp;
mod spot;
