//! One label change, and one policy edit, at 10,000 rules (the `weftctl bench policy`
//! world), committed over netlink (`policy::netlink`) vs `nft -f -`, in a scratch network
//! namespace (as root):
//!
//! ```text
//! cargo run --release -p weft-lab --example policy_netlink_bench [changes]
//! ```
//!
//! Each change relabels one peer pod (its addresses leave or join atoms' peer sets), committed
//! in turn over netlink on a socket per commit, over netlink on a kept socket
//! (`weft_nft::Session`), and by `nft -f -`; prints the median and mean of each. Then each
//! policy edit moves the ports of one allow policy (`weftctl bench policy`'s edit: new atom
//! chains, their peer sets and port-map entries; the old ones deleted) and the next moves
//! them back; edits alternate in pairs between netlink on the kept socket and `nft -f -`.
//! `PROBE=1` first times one add and one delete in a set of each role.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use weft_agent::policy::netlink;
use weft_agent::policy::nft::apply_blocking;
use weft_lab::bench::policy::world;
use weft_net::NetNs;
use weft_policy::plan::{self, Compiler, Op, PlanOptions};

struct Scratch(String);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn stats(mut v: Vec<Duration>) -> String {
    v.sort();
    let mean = v.iter().sum::<Duration>() / v.len().max(1) as u32;
    format!(
        "median {:.2} ms, mean {:.2} ms, min {:.2} ms, max {:.2} ms (n={})",
        v[v.len() / 2].as_secs_f64() * 1e3,
        mean.as_secs_f64() * 1e3,
        v[0].as_secs_f64() * 1e3,
        v[v.len() - 1].as_secs_f64() * 1e3,
        v.len()
    )
}

fn main() -> Result<(), String> {
    let changes: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(40);
    let table = "wtnlb_policy";
    let opts = PlanOptions {
        table: table.to_string(),
        ..PlanOptions::new(world::NODE)
    };
    let mut c = Compiler::new(world::world(10_000, true), opts);
    let name = format!("wtnlb{}", std::process::id());
    let st = Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .map_err(|e| e.to_string())?;
    if !st.success() {
        return Err("ip netns add failed".into());
    }
    let ns_guard = Scratch(name.clone());
    let ns =
        NetNs::open(Path::new(&format!("/run/netns/{}", ns_guard.0))).map_err(|e| e.to_string())?;
    let first = plan::render(c.plan());
    let t = Instant::now();
    ns.run(|| apply_blocking(&first))
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let elems: usize = c.plan().sets.values().map(|s| s.elements.len()).sum();
    eprintln!(
        "initial plan: {} sets, {} chains, {elems} elements, nft -f {:.0} ms",
        c.plan().sets.len(),
        c.plan().chains.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
    if std::env::var_os("PROBE").is_some() {
        probe(&ns, table, c.plan())?;
    }
    let (mut via_netlink, mut via_nft, mut build) = (Vec::new(), Vec::new(), Vec::new());
    let (mut commit_only, mut setns) = (Vec::new(), Vec::new());
    let mut via_session = Vec::new();
    // A socket opened in the scratch namespace and kept for the whole run.
    let mut session = ns
        .run(weft_nft::Session::open)
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    for _ in 0..20 {
        let t = Instant::now();
        ns.run(|| ()).map_err(|e| e.to_string())?;
        setns.push(t.elapsed());
    }
    let mut weights = Vec::new();
    for j in 0..changes * 3 {
        let (pns, pname) = world::relabel_target(j / 2);
        let old = c.plan().clone();
        let mut e = c
            .world()
            .endpoint(&pns, &pname)
            .ok_or("relabel target missing")?
            .clone();
        let moved = e.labels.get("instance").map(String::as_str) != Some("moved");
        e.labels.insert(
            "instance".into(),
            if moved { "moved".into() } else { "1".into() },
        );
        c.upsert_endpoint(e);
        let ops: Vec<Op> = c.take_ops();
        weights.push(ops.iter().map(Op::weight).sum::<usize>());
        if j % 3 == 2 {
            let t = Instant::now();
            let batch = netlink::batch(table, &ops, &old, c.plan())
                .ok_or_else(|| format!("change {j} is not element-only: {ops:?}"))?;
            netlink::commit_on(&mut session, batch).map_err(|e| e.to_string())?;
            via_session.push(t.elapsed());
        } else if j % 3 == 0 {
            let t = Instant::now();
            let batch = netlink::batch(table, &ops, &old, c.plan())
                .ok_or_else(|| format!("change {j} is not element-only: {ops:?}"))?;
            build.push(t.elapsed());
            let kernel = ns
                .run(|| {
                    let t = Instant::now();
                    netlink::commit(batch).map(|()| t.elapsed())
                })
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            via_netlink.push(t.elapsed());
            commit_only.push(kernel);
        } else {
            let t = Instant::now();
            let script = plan::render_ops(table, &ops);
            ns.run(|| apply_blocking(&script))
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            via_nft.push(t.elapsed());
        }
    }
    weights.sort();
    eprintln!(
        "per change: {} ops' elements (median {})",
        weights.len(),
        weights[weights.len() / 2]
    );
    eprintln!("netlink (build + commit): {}", stats(via_netlink));
    eprintln!("  of which building the batch: {}", stats(build));
    eprintln!(
        "  of which the netlink round trip alone: {}",
        stats(commit_only)
    );
    eprintln!(
        "  (entering and leaving the scratch netns: {})",
        stats(setns)
    );
    eprintln!(
        "netlink on a kept socket (Session; build + commit): {}",
        stats(via_session)
    );
    eprintln!("nft -f (render + spawn + commit): {}", stats(via_nft));
    let k = world::edit_target(10_000);
    // `weftctl bench policy`'s edit: the second port moves along the pool, to ports other
    // policies use (their regions' atoms exist: only elements change at this scale).
    policy_edits(
        &ns,
        &mut c,
        &mut session,
        table,
        changes,
        "policy edit, port moved within the pool",
        &|j| world::allow_policy(k, if j % 2 == 0 { 1 + j / 2 } else { 0 }, true),
    )?;
    // The same policy's second port moved to a port no policy uses, and back: a new region,
    // so a new atom chain with its peer sets and port-map entries; back, they are deleted.
    policy_edits(
        &ns,
        &mut c,
        &mut session,
        table,
        changes,
        "policy edit, port moved to a new port (new atom)",
        &|j| {
            let mut p = world::allow_policy(k, 0, true);
            if j % 2 == 0 {
                p.spec.ingress[0].ports[1] = weft_policy::PolicyPort::tcp(41_000 + j as u16 / 2);
            }
            p
        },
    )?;
    // The last change went through the session: closing its socket now pays the wait for
    // the deferred frees that the kept socket kept off the commit path.
    let t = Instant::now();
    drop(session);
    eprintln!(
        "closing the kept socket after a change: {:.2} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    drop(ns_guard);
    Ok(())
}

/// `changes` policy edits each way (`edit(j)` is the policy after edit `j`; odd edits undo
/// the one before): netlink on the kept socket vs `nft -f -`.
fn policy_edits(
    ns: &NetNs,
    c: &mut Compiler,
    session: &mut weft_nft::Session,
    table: &str,
    changes: usize,
    what: &str,
    edit: &dyn Fn(usize) -> weft_policy::NetworkPolicy,
) -> Result<(), String> {
    let (mut via_session, mut via_nft, mut objects) = (Vec::new(), Vec::new(), Vec::new());
    for j in 0..changes * 4 {
        let old = c.plan().clone();
        c.upsert_policy(edit(j));
        let ops: Vec<Op> = c.take_ops();
        objects.push(
            ops.iter()
                .filter(|o| {
                    !matches!(
                        o,
                        Op::AddElements { .. }
                            | Op::DeleteElements { .. }
                            | Op::ReplaceElements { .. }
                    )
                })
                .count(),
        );
        // Pairs (edit, undo) alternate between the two ways.
        if (j / 2) % 2 == 0 {
            let t = Instant::now();
            let batch = netlink::batch(table, &ops, &old, c.plan())
                .ok_or_else(|| format!("edit {j} can't go over netlink: {ops:?}"))?;
            netlink::commit_on(session, batch).map_err(|e| e.to_string())?;
            via_session.push(t.elapsed());
        } else {
            let t = Instant::now();
            let script = plan::render_ops(table, &ops);
            ns.run(|| apply_blocking(&script))
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            via_nft.push(t.elapsed());
        }
    }
    objects.sort();
    eprintln!(
        "{what}: {} edits, chains/sets added or deleted per edit: median {}, max {}",
        objects.len(),
        objects[objects.len() / 2],
        objects[objects.len() - 1]
    );
    eprintln!(
        "  netlink on a kept socket (build + commit): {}",
        stats(via_session)
    );
    eprintln!("  nft -f (render + spawn + commit): {}", stats(via_nft));
    Ok(())
}

/// Where the kernel's time goes: one element added then deleted in one set of each role,
/// then in all those sets at once (one batch each way).
fn probe(ns: &NetNs, table: &str, p: &plan::Plan) -> Result<(), String> {
    use weft_nft::{Element, SetKind, TableBatch, Verdict};
    let mut seen = std::collections::BTreeSet::new();
    let mut probed = Vec::new();
    for (name, s) in &p.sets {
        let tag = (s.role, s.interval, s.map, s.key);
        if !seen.insert(tag) {
            continue;
        }
        let (key, kind) = match s.key {
            plan::KeyType::Ipv4 => (
                vec![198, 18, 0, 1],
                if s.interval {
                    SetKind::Interval
                } else {
                    SetKind::Hash
                },
            ),
            plan::KeyType::Ipv6 => (
                vec![0xfd, 0x77]
                    .into_iter()
                    .chain([0; 13])
                    .chain([1])
                    .collect(),
                if s.interval {
                    SetKind::Interval
                } else {
                    SetKind::Hash
                },
            ),
            plan::KeyType::ProtoPort => (
                weft_nft::concat_key(&[&[6], &60001u16.to_be_bytes()]),
                SetKind::ConcatInterval,
            ),
            plan::KeyType::Ipv4Pair => (vec![198, 18, 0, 1, 198, 18, 0, 2], SetKind::Hash),
            plan::KeyType::Ipv6Pair => continue,
        };
        let mut el = Element::key(key);
        if s.map {
            el = el.with_verdict(match s.elements.values().next() {
                Some(Some(plan::Verdict::Jump(c))) => Verdict::Jump(c.clone()),
                _ => Verdict::Accept,
            });
        }
        // Per commit: until the kernel's ACKs (the change is in), then closing the socket.
        let (mut adds, mut dels, mut closes) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..5 {
            for add in [true, false] {
                let mut b = TableBatch::new(table);
                if add {
                    b.add_elements(name, kind, std::slice::from_ref(&el));
                } else {
                    b.delete_elements(name, kind, std::slice::from_ref(&el));
                }
                let (ack, close) = ns
                    .run(|| -> Result<(Duration, Duration), String> {
                        let t = Instant::now();
                        let mut sock = weft_nft::Session::open().map_err(|e| e.to_string())?;
                        sock.commit(b).map_err(|e| e.to_string())?;
                        let ack = t.elapsed();
                        drop(sock);
                        Ok((ack, t.elapsed() - ack))
                    })
                    .map_err(|e| e.to_string())??;
                if add {
                    adds.push(ack)
                } else {
                    dels.push(ack);
                    closes.push(close);
                }
            }
        }
        probed.push((name.clone(), kind, el.clone()));
        eprintln!(
            "{name} {tag:?} ({} elements):\n  add {}\n  del {}\n  closing the socket after del {}",
            s.elements.len(),
            stats(adds),
            stats(dels),
            stats(closes)
        );
    }
    let (mut adds, mut dels) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        for add in [true, false] {
            let mut b = TableBatch::new(table);
            for (name, kind, el) in &probed {
                if add {
                    b.add_elements(name, *kind, std::slice::from_ref(el));
                } else {
                    b.delete_elements(name, *kind, std::slice::from_ref(el));
                }
            }
            let d = ns
                .run(|| {
                    let t = Instant::now();
                    b.commit().map(|()| t.elapsed()).map_err(|e| e.to_string())
                })
                .map_err(|e| e.to_string())??;
            if add { adds.push(d) } else { dels.push(d) }
        }
    }
    eprintln!(
        "all {} sets in one batch:\n  add {}\n  del {}",
        probed.len(),
        stats(adds),
        stats(dels)
    );
    Ok(())
}
