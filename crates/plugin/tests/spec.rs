//! Conformance tests: cni-spec.md §10, cases 1–60.
mod common;
