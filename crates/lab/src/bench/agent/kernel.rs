//! What the kernel of the agent's namespace holds, read over netlink (weft-net), never by
//! parsing `ip`: counts of weft's entries, waiting for one route, and the flush-and-rebuild
//! the agent is compared with.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use weft_backend::{DEVICE, Kind, Peer, RTPROT_WEFT};
use weft_net::{Handle, Route};

use crate::bench::error::{BenchError, Result};

/// weft's entries in one namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Main-table routes with `proto 87`, both families.
    pub routes: usize,
    /// Permanent FDB entries with a remote VTEP on `weft.vx`.
    pub fdb: usize,
    /// Permanent neighbour entries on `weft.vx`, both families.
    pub neigh: usize,
}

impl Counts {
    /// Whether every count reached `want`'s.
    pub fn reached(&self, want: &Counts) -> bool {
        self.routes >= want.routes && self.fdb >= want.fdb && self.neigh >= want.neigh
    }

    pub fn total(&self) -> usize {
        self.routes + self.fdb + self.neigh
    }

    /// What weftd must program for `peers` peers with `families` address families: a route
    /// per block; with the overlay also one FDB entry per peer and a neighbour entry per
    /// peer and family. Every synthetic peer shares the agent's segment, so `auto` takes
    /// host-gw for all of them.
    pub fn expected(kind: Kind, peers: usize, families: usize) -> Counts {
        let overlay = kind == Kind::Vxlan;
        Counts {
            routes: peers * families,
            fdb: if overlay { peers } else { 0 },
            neigh: if overlay { peers * families } else { 0 },
        }
    }
}

/// weft's routes, both families: one kernel-filtered dump per family. A peer's route is
/// the last entry the backend writes for it, so this alone says how far programming got.
pub fn route_count(h: &mut Handle, v6: bool) -> Result<usize> {
    let mut n = 0;
    for fam in families(v6) {
        n += h
            .routes_by_protocol(fam, RTPROT_WEFT)
            .map_err(BenchError::net("dumping weft's routes"))?
            .len();
    }
    Ok(n)
}

/// Reads the counts with one dump per table (routes per family, FDB, neighbours per family).
pub fn counts(h: &mut Handle, v6: bool) -> Result<Counts> {
    let mut c = Counts {
        routes: route_count(h, v6)?,
        ..Counts::default()
    };
    if let Some(vx) = vx_index(h)? {
        c.fdb = h
            .fdb_entries(vx)
            .map_err(BenchError::net(format!("dumping the FDB of {DEVICE}")))?
            .iter()
            .filter(|e| e.is_permanent() && e.dst.is_some())
            .count();
        for fam in families(v6) {
            c.neigh += h
                .neighbours(vx, fam)
                .map_err(BenchError::net(format!("dumping neighbours on {DEVICE}")))?
                .iter()
                .filter(|n| n.is_permanent())
                .count();
        }
    }
    Ok(c)
}

fn families(v6: bool) -> impl Iterator<Item = bool> {
    [false, true].into_iter().filter(move |f| !*f || v6)
}

/// The index of `weft.vx`, if the agent made it.
pub fn vx_index(h: &mut Handle) -> Result<Option<u32>> {
    Ok(h.link_by_name(DEVICE)
        .map_err(BenchError::net(format!("looking up {DEVICE}")))?
        .map(|l| l.index))
}

/// Whether weft's route to `block` is in the FIB (one lookup, no dump).
pub fn has_route(h: &mut Handle, block: &IpNet) -> Result<bool> {
    let probe = first_host(block);
    let found = h
        .route_lookup(probe)
        .map_err(BenchError::net(format!("looking up the route to {probe}")))?;
    Ok(found.is_some_and(|r| r.dst == block.trunc() && r.protocol == Some(RTPROT_WEFT)))
}

/// The first address after the network address (inside every block weft hands out).
fn first_host(block: &IpNet) -> IpAddr {
    match block {
        IpNet::V4(n) => IpAddr::from(u32::from(n.network()).wrapping_add(1).to_be_bytes()),
        IpNet::V6(n) => IpAddr::from(u128::from(n.network()).wrapping_add(1).to_be_bytes()),
    }
}

/// What a flush or a rebuild did and how long it took.
#[derive(Debug, Clone, Copy)]
pub struct Bulk {
    pub entries: usize,
    pub took: Duration,
}

/// Deletes every weft entry: routes with `proto 87`, then the neighbour and FDB entries on
/// `weft.vx` (the device stays, as a flush-and-rebuild agent would keep it). Reading what to
/// delete is part of the cost.
pub fn flush(h: &mut Handle, v6: bool) -> Result<Bulk> {
    let t = Instant::now();
    let mut entries = 0;
    for fam in families(v6) {
        let routes = h
            .routes_by_protocol(fam, RTPROT_WEFT)
            .map_err(BenchError::net("dumping weft's routes"))?;
        for r in routes {
            let mut del = Route::new(r.dst).protocol(RTPROT_WEFT);
            del.metric = r.metric;
            h.route_del(&del)
                .map_err(BenchError::net(format!("deleting the route to {}", r.dst)))?;
            entries += 1;
        }
    }
    if let Some(vx) = vx_index(h)? {
        for fam in families(v6) {
            let neighbours = h
                .neighbours(vx, fam)
                .map_err(BenchError::net(format!("dumping neighbours on {DEVICE}")))?;
            for n in neighbours.into_iter().filter(|n| n.is_permanent()) {
                h.neigh_del(vx, n.ip)
                    .map_err(BenchError::net(format!("deleting neighbour {}", n.ip)))?;
                entries += 1;
            }
        }
        let fdb = h
            .fdb_entries(vx)
            .map_err(BenchError::net(format!("dumping the FDB of {DEVICE}")))?;
        for e in fdb.into_iter().filter(|e| e.is_permanent()) {
            let Some(dst) = e.dst else { continue };
            h.fdb_del(vx, e.mac, dst)
                .map_err(BenchError::net(format!("deleting an FDB entry to {dst}")))?;
            entries += 1;
        }
    }
    Ok(Bulk {
        entries,
        took: t.elapsed(),
    })
}

/// Writes every peer's entries again, as the backend would (FDB, neighbours, then routes;
/// see weft-backend's plan), in one pass on one socket: the rebuild half of a
/// flush-and-rebuild.
pub fn rebuild(h: &mut Handle, kind: Kind, underlay: u32, peers: &[Peer]) -> Result<Bulk> {
    let vx = if kind == Kind::Vxlan {
        Some(vx_index(h)?.ok_or_else(|| BenchError::Unexpected {
            what: "rebuild".to_owned(),
            detail: format!("{DEVICE} is missing"),
        })?)
    } else {
        None
    };
    let t = Instant::now();
    let mut entries = 0;
    for p in peers {
        // The VTEP address of a family: the network address of the peer's first block of it.
        let vtep = |v6: bool| {
            p.blocks
                .iter()
                .find(|b| b.addr().is_ipv6() == v6)
                .map(IpNet::network)
        };
        let route = |b: &IpNet| -> Option<Route> {
            let r = Route::new(b.trunc()).protocol(RTPROT_WEFT);
            match (vx, b) {
                (Some(vx), _) => vtep(b.addr().is_ipv6()).map(|gw| r.via(gw).dev(vx).onlink()),
                (None, IpNet::V4(_)) => Some(r.via(IpAddr::V4(p.underlay_v4)).dev(underlay)),
                (None, IpNet::V6(_)) => p.underlay_v6.map(|a| r.via(IpAddr::V6(a)).dev(underlay)),
            }
        };
        if let Some(vx) = vx {
            h.fdb_add(vx, p.vtep_mac, IpAddr::V4(p.underlay_v4))
                .map_err(BenchError::net(format!(
                    "adding the FDB entry of {}",
                    p.name
                )))?;
            entries += 1;
            for v6 in [false, true] {
                if let Some(ip) = vtep(v6) {
                    h.neigh_add(vx, ip, p.vtep_mac)
                        .map_err(BenchError::net(format!(
                            "adding the neighbour of {}",
                            p.name
                        )))?;
                    entries += 1;
                }
            }
        }
        for b in &p.blocks {
            if let Some(r) = route(b) {
                h.route_replace(&r)
                    .map_err(BenchError::net(format!("adding the route to {b}")))?;
                entries += 1;
            }
        }
    }
    Ok(Bulk {
        entries,
        took: t.elapsed(),
    })
}
