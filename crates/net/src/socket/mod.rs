//! The netlink transport: one NETLINK_ROUTE socket and its request/reply loop.

pub(crate) mod netlink;
