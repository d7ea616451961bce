//! `--policy-cut-established`: after a committed change, the conntrack entries of flows the
//! new plan denies are deleted, so established connections of a newly denied flow stop too
//! (by default they keep going: the table accepts `ct state established` first).
//!
//! Each entry is judged by [`Plan::walk`] on the plan just committed — the model the
//! dataplane is checked against — as the first packet of its connection: source = the
//! original source, destination and port = where the connection really goes (the reply
//! direction's source, after any DNAT), hook `input` when that address is this node's own,
//! else `forward`. Entries that this table never judges are kept: protocols without ports
//! (ICMP…), and connections this node opened itself (their source is one of its addresses:
//! node-originated traffic leaves through `output`, which weft does not filter).
//!
//! Without loose TCP pickup a cut connection's later segments are `ct state invalid`, never
//! `new`: so the cut also sets `net.netfilter.nf_conntrack_tcp_loose=0` in this namespace.
//! With pickup on, the kernel would take the next segment in either direction for a new
//! connection, and one from the side that may connect (the server's ACK to an unisolated
//! client) would re-admit the whole connection.

use std::collections::HashSet;
use std::net::IpAddr;

use weft_net::Handle;
use weft_net::conntrack::{Conntrack, CtEntry, has_ports};
use weft_policy::plan::{HookPoint, Packet, Plan};

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sweep {
    /// Entries in the table.
    pub entries: usize,
    /// Entries deleted (newly denied flows).
    pub cut: usize,
}

const LOOSE: &str = "net/netfilter/nf_conntrack_tcp_loose";

/// Delete the entries `plan` denies, in this process's namespace (a blocking thread).
pub async fn sweep(plan: Plan) -> Result<Sweep, String> {
    tokio::task::spawn_blocking(move || sweep_blocking(&plan))
        .await
        .map_err(|e| format!("conntrack thread failed: {e}"))?
}

fn sweep_blocking(plan: &Plan) -> Result<Sweep, String> {
    // The table's own `ct state` rule loaded nf_conntrack, so the key exists.
    if weft_net::sysctl::get(LOOSE)
        .map_err(|e| e.to_string())?
        .trim()
        != "0"
    {
        weft_net::sysctl::set(LOOSE, "0").map_err(|e| e.to_string())?;
    }
    let local: HashSet<IpAddr> = Handle::new()
        .and_then(|mut h| h.addrs(None))
        .map_err(|e| format!("listing this node's addresses: {e}"))?
        .into_iter()
        .map(|a| a.addr.addr())
        .collect();
    let mut ct = Conntrack::new().map_err(|e| e.to_string())?;
    let entries = ct.dump().map_err(|e| e.to_string())?;
    let mut done = Sweep {
        entries: entries.len(),
        cut: 0,
    };
    for e in &entries {
        if !denied(plan, e, &local) {
            continue;
        }
        // Gone already (expired, closed) is as good as cut.
        if ct.delete(e).map_err(|e| e.to_string())? {
            done.cut += 1;
        }
    }
    Ok(done)
}

/// Whether the plan denies this entry's connection as a new one.
pub fn denied(plan: &Plan, e: &CtEntry, local: &HashSet<IpAddr>) -> bool {
    if !has_ports(e.orig.protocol) || local.contains(&e.orig.src) {
        return false;
    }
    let dst = e.reply.src;
    let hook = if local.contains(&dst) {
        HookPoint::Input
    } else {
        HookPoint::Forward
    };
    let pkt = Packet {
        src: e.orig.src,
        dst,
        protocol: e.orig.protocol,
        port: e.reply.sport,
    };
    // A plan that cannot be walked is one the kernel took; keep the entry rather than guess.
    matches!(plan.walk(hook, &pkt), Ok(false))
}
