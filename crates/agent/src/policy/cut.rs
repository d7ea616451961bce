//! `--policy-cut-established`: after a committed change, the conntrack entries of flows the
//! new plan denies are cut, so established connections of a newly denied flow stop too (by
//! default they keep going: the table accepts `ct state established` first).
//!
//! How an entry is cut depends on whether a packet of the flow can start it again:
//! - TCP, SCTP, DCCP: the entry is deleted. Only an opening packet (SYN, INIT) creates an
//!   entry, so the connection's later packets are `ct state invalid` and the plan judges
//!   them as new ones (see loose pickup below).
//! - UDP, UDP-Lite: any datagram creates an entry, in either direction. A reply already on
//!   its way when the entry is deleted (or sent later to a datagram received before) creates
//!   the reversed entry, and the denied side's next datagram is then that entry's
//!   *established reply*: the flow goes on as if never cut (this happened under load in the
//!   lab's updates test). So the entry is kept and marked with [`CUT_MARK`], and the plan's
//!   base chains drop every packet of a marked connection, both ways, before they accept
//!   established ones. The entry lives while the flow keeps sending and expires when it goes
//!   quiet; a later change that allows the flow again clears the mark (`released`).
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
use weft_nft::conntrack::{Conntrack, CtEntry, has_ports};
use weft_policy::plan::{CUT_MARK, HookPoint, Packet, Plan};

use super::Error;

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sweep {
    /// Entries in the table.
    pub entries: usize,
    /// Entries cut (newly denied flows): deleted, or marked for UDP.
    pub cut: usize,
    /// Marked entries whose flows the plan allows again: their mark cleared.
    pub released: usize,
}

const LOOSE: &str = "net/netfilter/nf_conntrack_tcp_loose";

/// Cut the entries `plan` denies and release the cut ones it allows, in this process's
/// namespace (on a blocking thread).
pub async fn sweep(plan: Plan) -> Result<Sweep, Error> {
    tokio::task::spawn_blocking(move || sweep_here(&plan))
        .await
        .map_err(|source| Error::Thread {
            what: "conntrack",
            source,
        })?
}

/// [`sweep`] on the calling thread, in its network namespace.
pub fn sweep_here(plan: &Plan) -> Result<Sweep, Error> {
    // The table's own `ct state` rule loaded nf_conntrack, so the key exists.
    if weft_net::sysctl::get(LOOSE)
        .map_err(Error::cut("reading nf_conntrack_tcp_loose"))?
        .trim()
        != "0"
    {
        weft_net::sysctl::set(LOOSE, "0").map_err(Error::cut("turning TCP loose pickup off"))?;
    }
    let local: HashSet<IpAddr> = Handle::new()
        .and_then(|mut h| h.addrs(None))
        .map_err(Error::cut("listing this node's addresses"))?
        .into_iter()
        .map(|a| a.addr.addr())
        .collect();
    let mut ct = Conntrack::new().map_err(Error::cut("opening ctnetlink"))?;
    let entries = ct.dump().map_err(Error::cut("conntrack dump"))?;
    let mut done = Sweep {
        entries: entries.len(),
        ..Sweep::default()
    };
    for e in &entries {
        // An entry that is gone already (expired, closed) is as good as cut, or released.
        match (denied(plan, e, &local), e.mark & CUT_MARK != 0) {
            (true, false) => {
                let cut = if restarts_either_way(e.orig.protocol) {
                    ct.set_mark(e, CUT_MARK, CUT_MARK)
                        .map_err(Error::cut("conntrack mark"))?
                } else {
                    ct.delete(e).map_err(Error::cut("conntrack delete"))?
                };
                done.cut += usize::from(cut);
            }
            (false, true) => {
                let released = ct
                    .set_mark(e, 0, CUT_MARK)
                    .map_err(Error::cut("conntrack unmark"))?;
                done.released += usize::from(released);
            }
            _ => {}
        }
    }
    Ok(done)
}

/// UDP and UDP-Lite: a datagram in either direction starts a connection when there is none.
fn restarts_either_way(protocol: u8) -> bool {
    matches!(protocol, 17 | 136)
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
    denies(plan, hook, e.orig.src, dst, e.orig.protocol, e.reply.sport)
}

/// Whether the plan denies a new connection from `src` to `dst`:`port` at `hook`. A plan
/// that cannot be walked is one the kernel took: then the connection is kept rather than
/// guessed at.
pub fn denies(
    plan: &Plan,
    hook: HookPoint,
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    port: u16,
) -> bool {
    let pkt = Packet {
        src,
        dst,
        protocol,
        port,
    };
    matches!(plan.walk(hook, &pkt), Ok(false))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use weft_nft::conntrack::Tuple;
    use weft_policy::plan::{PlanOptions, compile};
    use weft_policy::{Endpoint, Labels, Node, Object, ParseOptions, World, parse};

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn pod(name: &str, app: &str, node: &str, addr: &str) -> Endpoint {
        Endpoint {
            namespace: "shop".into(),
            name: name.into(),
            labels: Labels::from([("app".to_string(), app.to_string())]),
            node: node.into(),
            addresses: vec![ip(addr)],
            ports: BTreeMap::new(),
        }
    }

    /// db (on n1) takes web on TCP 5432 only.
    fn plan() -> Plan {
        let objects = parse(
            "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{protocol: TCP, port: 5432}]
",
            &ParseOptions::default(),
        )
        .unwrap();
        let policies = objects
            .into_iter()
            .filter_map(|o| match o {
                Object::NetworkPolicy(p) => Some(p),
                _ => None,
            })
            .collect();
        let world = World {
            namespaces: vec![],
            nodes: vec![Node {
                name: "n1".into(),
                addresses: vec![ip("192.168.0.1"), ip("10.244.0.1")],
                pod_cidrs: vec!["10.244.0.0/26".parse().unwrap()],
            }],
            endpoints: vec![
                pod("db", "db", "n1", "10.244.0.2"),
                pod("web", "web", "n1", "10.244.0.3"),
                pod("batch", "batch", "n1", "10.244.0.4"),
            ],
            policies,
        };
        compile(&world, &PlanOptions::new("n1"))
    }

    fn entry(protocol: u8, src: &str, dst: &str, dport: u16) -> CtEntry {
        let orig = Tuple {
            src: ip(src),
            dst: ip(dst),
            protocol,
            sport: 40000,
            dport,
        };
        CtEntry {
            orig,
            reply: Tuple {
                src: orig.dst,
                dst: orig.src,
                protocol,
                sport: dport,
                dport: 40000,
            },
            zone: 0,
            mark: 0,
            id: Some(1),
        }
    }

    #[test]
    fn only_entries_of_denied_flows_are_judged_denied() {
        let p = plan();
        let local: HashSet<IpAddr> = [ip("192.168.0.1"), ip("10.244.0.1")].into();
        let cut = |proto, src, dst, port| denied(&p, &entry(proto, src, dst, port), &local);
        // web → db on the allowed port: kept; on another port, or from batch: cut.
        assert!(!cut(6, "10.244.0.3", "10.244.0.2", 5432));
        assert!(cut(6, "10.244.0.3", "10.244.0.2", 80));
        assert!(cut(6, "10.244.0.4", "10.244.0.2", 5432));
        assert!(cut(17, "10.244.0.3", "10.244.0.2", 5432));
        // db is isolated for ingress only: its own connections out are kept.
        assert!(!cut(6, "10.244.0.2", "10.244.0.4", 80));
        // The node's own connections (kubelet probes) never pass the table: kept.
        assert!(!cut(6, "10.244.0.1", "10.244.0.2", 80));
        // No ports, not judged.
        assert!(!cut(1, "10.244.0.4", "10.244.0.2", 0));
    }
}
