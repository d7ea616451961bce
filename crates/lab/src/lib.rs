//! weft-lab: the lab and the benchmarks, the test harness of Weft as a program — the
//! `weftctl-lab` binary that `weftctl lab …` and `weftctl bench …` exec.
//!
//! Owns: `lab` (a real multi-node cluster in network namespaces of one machine: real etcd,
//! one weftd per node, pods wired by the real plugin; docs/lab.md), `bench` (CNI, agent,
//! dataplane and NetworkPolicy benchmarks against their baselines; docs/bench.md) and
//! `netns` (named namespaces made and removed in one `ip -batch`), and `kubeplane` (a real
//! etcd + kube-apiserver inside one namespace, for whatever needs a Kubernetes API). It builds on weft-ctl's
//! library for what it shares with the operator's commands: the lab's names and record,
//! `status` rendering, the policy store session.
//!
//! Must not: be a dependency of weft-ctl (the operator's CLI stays free of weftd's code, the
//! backend and nf_tables); touch anything on the machine but the namespaces, directories and
//! processes it made, found by its own prefixes; send traffic anywhere but inside them.

pub mod bench;
pub mod kubeplane;
pub mod lab;
mod netns;
