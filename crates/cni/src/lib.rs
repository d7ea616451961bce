//! The CNI protocol, as a library: what a plugin reads (environment, request configuration),
//! what it writes (results in every supported spec version, error objects), the verb
//! dispatch that turns a process invocation into a typed request (`skel`), and the runtime side
//! that executes plugin chains the way libcni does (`runtime`).
//!
//! This crate owns the wire format and nothing else: it must not touch the kernel, the IPAM
//! store or any weft-specific configuration key, so that every binary (plugin, tools, tests)
//! can speak CNI without pulling in networking code.

pub mod args;
pub mod env;
pub mod error;
pub mod result;
pub mod runtime;
pub mod skel;
pub mod version;

pub use error::{CniError, Code};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
pub use skel::{Command, Plugin, Request};
