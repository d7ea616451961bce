//! The policy truth table's parts: `scenarios` (the cluster and the policies, as data),
//! `oracle` (the expected verdicts, from the Kubernetes API semantics, independent of
//! weft-policy), `probe` (echo listeners and parallel real connections).

pub mod oracle;
pub mod probe;
pub mod scenarios;
