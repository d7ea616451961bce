//! Weft's IP address management: the `weft-ipam` logic shared by the `weft-ipam` binary and
//! the in-process path of `weft`.
//!
//! Owns: reading host-local-compatible IPAM config out of a CNI request ([`IpamConfig`]),
//! validating ranges ([`Range`], [`RangeSet`]), the on-disk lease store ([`Store`], byte
//! compatible with host-local so both may share a dataDir), round-robin allocation,
//! release, GC and free counts.
//!
//! Must not: speak the CNI protocol (env, stdin/stdout, result JSON, error codes — the
//! plugin maps [`ConfigError`]/[`AllocError`] to codes), touch the kernel or network
//! namespaces, or hold the store lock across more than one call's worth of work.
//!
//! Crash safety is the point: the plugin may be SIGKILLed at any instant, so a lease file
//! is either absent or complete (see [`store`]), and everything is re-derived from the
//! directory under the lock — there is no cache to go stale.

mod alloc;
mod config;
mod dns;
mod error;
mod range;
pub mod store;

pub use alloc::Lease;
pub use config::{IpamConfig, RouteSpec};
pub use dns::DnsSpec;
pub use error::{AllocError, ConfigError, StoreError};
pub use range::{Range, RangeError, RangeSet};
pub use store::{Locked, Owner, Store};
