//! `Handle`: the entry point for netlink work in one network namespace.
//!
//! The operations live in `link.rs`, `addr.rs` and `route.rs` as further `impl Handle`
//! blocks; this file only owns how a handle comes to exist.

use crate::error::Result;
use crate::netns::NetNs;
use crate::socket::netlink::Netlink;

/// One NETLINK_ROUTE socket. Every operation acts in the network namespace the handle was
/// created in, whichever namespace the calling thread is in later — so a plugin can hold
/// one handle for the host and one for the pod and never switch threads back and forth.
pub struct Handle {
    pub(crate) nl: Netlink,
}

impl Handle {
    /// A handle for the calling thread's current network namespace.
    pub fn new() -> Result<Handle> {
        Ok(Handle {
            nl: Netlink::new()?,
        })
    }

    /// A handle for `ns`: the socket is opened while the thread is inside `ns`, then the
    /// thread returns to where it was.
    pub fn new_in(ns: &NetNs) -> Result<Handle> {
        ns.run(Handle::new)?
    }
}

/// Interface names the kernel accepts: 1..=15 bytes, no '/', no whitespace, not "." or "..".
pub(crate) fn check_ifname(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0);
    if ok {
        Ok(())
    } else {
        Err(crate::error::Error::Invalid(format!(
            "interface name {name:?} (1-15 bytes, no '/', ':' or whitespace)"
        )))
    }
}
