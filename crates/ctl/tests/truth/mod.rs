//! The policy truth table's parts: `scenarios` (the cluster and the policies, as data),
//! `oracle` (the expected verdicts, from the Kubernetes API semantics, independent of
//! weft-policy), `probe` (echo listeners and parallel real connections), `sctp` (SCTP
//! INIT probes over raw sockets, for a kernel without an SCTP stack), `icmp` (echo probes).

pub mod icmp;
pub mod oracle;
pub mod probe;
pub mod scenarios;
pub mod sctp;
