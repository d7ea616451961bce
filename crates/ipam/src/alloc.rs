//! Choosing addresses: host-local's round-robin walk per range set and the all-or-nothing
//! allocation across sets.
//!
//! The walk mirrors host-local's `RangeIter` exactly (start after `last_reserved_ip.<N>`
//! when it lies in the set, else at the first range's start; skip gateways; step into the
//! next range at a range's end and wrap; stop when back at the first candidate), so both
//! plugins sharing a dataDir hand out addresses in the same order.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::AllocError;
use crate::range::{Range, RangeSet, from_u128, to_u128};
use crate::store::{Locked, TempFile};

/// One allocated address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The address with its subnet's prefix length.
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
    /// Index of the range set (in the `sets` passed to `allocate`) it came from.
    pub set_index: usize,
}

/// host-local's `RangeIter`, on integers.
struct Cursor<'a> {
    set: &'a RangeSet,
    range_idx: usize,
    /// Last candidate returned (or the last reserved IP before the first step).
    cur: Option<u128>,
    /// First candidate; reaching it again means the set was walked once.
    first: Option<u128>,
}

impl<'a> Cursor<'a> {
    fn new(set: &'a RangeSet, last_reserved: Option<IpAddr>) -> Cursor<'a> {
        let resume = last_reserved.and_then(|ip| {
            let idx = set.0.iter().position(|r| r.contains(ip))?;
            Some((idx, to_u128(ip)))
        });
        Cursor {
            set,
            range_idx: resume.map_or(0, |(idx, _)| idx),
            cur: resume.map(|(_, ip)| ip),
            first: None,
        }
    }

    fn next(&mut self) -> Option<(IpAddr, &'a Range)> {
        loop {
            let ranges = &self.set.0;
            let cur = match self.cur {
                None => {
                    let start = to_u128(ranges[self.range_idx].start);
                    self.first = Some(start);
                    start
                }
                Some(prev) => {
                    let next = if prev == to_u128(ranges[self.range_idx].end) {
                        self.range_idx = (self.range_idx + 1) % ranges.len();
                        to_u128(ranges[self.range_idx].start)
                    } else {
                        prev + 1
                    };
                    match self.first {
                        None => self.first = Some(next),
                        Some(first) if first == next => return None,
                        Some(_) => {}
                    }
                    next
                }
            };
            self.cur = Some(cur);
            let range = &ranges[self.range_idx];
            let ip = from_u128(cur, range.start);
            if range.gateway != Some(ip) {
                return Some((ip, range));
            }
        }
    }
}

fn lease(ip: IpAddr, range: &Range, set_index: usize) -> Lease {
    Lease {
        // The prefix came from a valid IpNet of the same family, so this cannot fail; fall
        // back to a host prefix rather than panic.
        address: IpNet::new(ip, range.subnet.prefix_len()).unwrap_or_else(|_| IpNet::from(ip)),
        gateway: range.gateway,
        set_index,
    }
}

impl Locked<'_> {
    /// Allocate one address per range set for (`id`, `ifname`), all or nothing: on any
    /// error no lease of this call remains. A requested IP goes to the first set whose
    /// ranges contain it (one per set); the other sets are walked round-robin.
    pub fn allocate(
        &mut self,
        id: &str,
        ifname: &str,
        sets: &[RangeSet],
        requested: &[IpAddr],
    ) -> Result<Vec<Lease>, AllocError> {
        self.allocate_inner(id, ifname, sets, requested, true, true)
    }

    /// An allocation that leaves the fsyncs to the caller: the leases exist (and exclude
    /// everyone else) when it returns, and [`crate::Store::sync_leases`] makes them durable,
    /// off the lock and possibly in parallel with the caller's other work.
    ///
    /// `known_new`: the caller has already established that (`id`, `ifname`) is a new
    /// attachment (the `weft` plugin refuses an ADD whose host veth or pod interface exists),
    /// so the search of every lease file for the pair's own — the only part of an allocation
    /// whose cost grows with the number of pods — is skipped. Should the caller be wrong (an
    /// ADD that crashed and is retried without a DEL), the pair holds two leases: never a
    /// duplicate address, at most a leak until a full release or GC.
    pub fn allocate_deferred(
        &mut self,
        id: &str,
        ifname: &str,
        sets: &[RangeSet],
        requested: &[IpAddr],
        known_new: bool,
    ) -> Result<Vec<Lease>, AllocError> {
        self.allocate_inner(id, ifname, sets, requested, !known_new, false)
    }

    fn allocate_inner(
        &mut self,
        id: &str,
        ifname: &str,
        sets: &[RangeSet],
        requested: &[IpAddr],
        check_duplicate: bool,
        durable: bool,
    ) -> Result<Vec<Lease>, AllocError> {
        // A new attachment that asks for no particular address needs no list of leases: the
        // walk's link(2) tells a taken address from a free one, and the list is read only if
        // the walk keeps hitting taken ones (see `walk`). Reading the directory is the part
        // of an allocation that grows with the number of pods.
        if !check_duplicate && requested.is_empty() {
            return self.reserve_and_commit(id, ifname, sets, &[], Taken::Unknown, durable);
        }
        let scan = self.scan_cleaning(check_duplicate)?;
        for set in sets.iter().filter(|_| check_duplicate) {
            let held = scan.leases.iter().any(|(ip, owner)| {
                set.contains(*ip) && owner.as_ref().is_some_and(|o| o.matches(id, ifname))
            });
            if held {
                return Err(AllocError::Duplicate {
                    id: id.to_owned(),
                    ifname: ifname.to_owned(),
                });
            }
        }
        let taken: HashSet<IpAddr> = scan.leases.iter().map(|(ip, _)| *ip).collect();
        let wanted = match_requested(sets, requested, &taken)?;
        self.reserve_and_commit(id, ifname, sets, &wanted, Taken::Known(taken), durable)
    }

    /// Writes the lease content, links it to one address per set and commits, all or
    /// nothing. `wanted`: the requested address per set (empty: none requested).
    fn reserve_and_commit(
        &mut self,
        id: &str,
        ifname: &str,
        sets: &[RangeSet],
        wanted: &[Option<(IpAddr, &Range)>],
        mut taken: Taken,
        durable: bool,
    ) -> Result<Vec<Lease>, AllocError> {
        let mut temp = self.lease_content(id, ifname, durable)?;
        let mut leases = Vec::with_capacity(sets.len());
        let outcome = match self.reserve_all(sets, wanted, &mut temp, &mut taken, &mut leases) {
            Ok(()) => self.commit(temp, durable).map_err(AllocError::from),
            // `temp` is dropped (removed) at the end of this function.
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            for l in &leases {
                // If undoing fails, the leftover is a complete lease owned by `id`, which the
                // runtime's DEL or GC for this container reclaims; the first error is the
                // one that explains the failure.
                let _ = self.remove_lease(l.address.addr());
            }
            return Err(e);
        }
        Ok(leases)
    }

    fn reserve_all(
        &self,
        sets: &[RangeSet],
        wanted: &[Option<(IpAddr, &Range)>],
        temp: &mut TempFile,
        taken: &mut Taken,
        leases: &mut Vec<Lease>,
    ) -> Result<(), AllocError> {
        for (set_index, set) in sets.iter().enumerate() {
            let mut last = self.last_reserved(set_index)?;
            let got = match wanted.get(set_index).copied().flatten() {
                Some((ip, range)) => {
                    if !self.link_lease(temp, ip)? {
                        return Err(AllocError::RequestedInUse(ip));
                    }
                    lease(ip, range, set_index)
                }
                None => self.walk(set_index, set, temp, taken, last.hint)?,
            };
            let ip = got.address.addr();
            leases.push(got);
            // Like host-local, requested addresses move the round-robin cursor too.
            last.set(ip)?;
        }
        Ok(())
    }

    /// Round-robin from after `last_reserved_ip.<N>`. `link` decides; `taken` saves a
    /// syscall per known lease. Without a list, the walk reads one after
    /// [`LIST_AFTER_MISSES`] taken addresses in a row, so a nearly full range costs one
    /// directory read rather than a link attempt per lease.
    fn walk(
        &self,
        set_index: usize,
        set: &RangeSet,
        temp: &mut TempFile,
        taken: &mut Taken,
        hint: Option<IpAddr>,
    ) -> Result<Lease, AllocError> {
        if !set.0.is_empty() {
            let mut cursor = Cursor::new(set, hint);
            let mut misses = 0;
            while let Some((ip, range)) = cursor.next() {
                if taken.contains(ip) {
                    continue;
                }
                if self.link_lease(temp, ip)? {
                    return Ok(lease(ip, range, set_index));
                }
                misses += 1;
                if misses == LIST_AFTER_MISSES && matches!(taken, Taken::Unknown) {
                    *taken = Taken::Known(self.lease_names()?);
                }
            }
        }
        Err(AllocError::Exhausted {
            set: set_index,
            ranges: set.to_string(),
        })
    }
}

/// Taken addresses in a row after which a walk without a list of leases reads one.
const LIST_AFTER_MISSES: usize = 8;

/// What an allocation knows of the addresses already leased.
pub(crate) enum Taken {
    /// Nothing: every candidate is tried with link(2).
    Unknown,
    Known(HashSet<IpAddr>),
}

impl Taken {
    fn contains(&self, ip: IpAddr) -> bool {
        match self {
            Taken::Unknown => false,
            Taken::Known(set) => set.contains(&ip),
        }
    }
}

/// Assign each requested IP to the first set (without a requested IP yet) whose ranges
/// contain it. Checked before anything is written so a bad request leaves no trace.
fn match_requested<'a>(
    sets: &'a [RangeSet],
    requested: &[IpAddr],
    taken: &HashSet<IpAddr>,
) -> Result<Vec<Option<(IpAddr, &'a Range)>>, AllocError> {
    let mut wanted: Vec<Option<(IpAddr, &Range)>> = vec![None; sets.len()];
    for &ip in requested {
        if wanted.iter().flatten().any(|(w, _)| *w == ip) {
            continue;
        }
        if sets
            .iter()
            .flat_map(|s| &s.0)
            .any(|r| r.gateway == Some(ip))
        {
            return Err(AllocError::RequestedGateway(ip));
        }
        let slot = sets.iter().enumerate().find_map(|(i, s)| {
            wanted[i]
                .is_none()
                .then(|| s.range_for(ip).map(|r| (i, r)))
                .flatten()
        });
        let Some((i, range)) = slot else {
            return Err(AllocError::RequestedNotInRange(ip));
        };
        if taken.contains(&ip) {
            return Err(AllocError::RequestedInUse(ip));
        }
        wanted[i] = Some((ip, range));
    }
    Ok(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ranges: &[(&str, Option<&str>, Option<&str>)]) -> RangeSet {
        RangeSet(
            ranges
                .iter()
                .map(|(net, start, end)| {
                    let p = |s: &Option<&str>| s.map(|s| s.parse().expect("test IP"));
                    Range::new(net.parse().expect("test CIDR"), p(start), p(end), None)
                        .expect("valid range")
                })
                .collect(),
        )
    }

    fn walk(set: &RangeSet, last: Option<&str>) -> Vec<String> {
        let mut c = Cursor::new(set, last.map(|s| s.parse().expect("test IP")));
        std::iter::from_fn(|| c.next().map(|(ip, _)| ip.to_string())).collect()
    }

    #[test]
    fn walk_from_start_skips_gateway() {
        let s = set(&[("10.0.0.0/29", None, None)]);
        assert_eq!(
            walk(&s, None),
            ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
        );
    }

    #[test]
    fn walk_resumes_after_last_reserved_and_wraps_across_ranges() {
        let s = set(&[
            ("10.0.0.0/29", Some("10.0.0.4"), None),
            ("10.0.1.0/29", None, Some("10.0.1.3")),
        ]);
        assert_eq!(
            walk(&s, Some("10.0.1.2")),
            ["10.0.1.3", "10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.1.2"]
        );
        // A last reserved IP outside the set restarts at the first range's start.
        assert_eq!(walk(&s, Some("10.0.9.9"))[0], "10.0.0.4");
    }

    #[test]
    fn walk_single_address_range() {
        let s = set(&[("10.0.0.0/30", None, None)]);
        assert_eq!(walk(&s, None), ["10.0.0.2"]);
        assert_eq!(walk(&s, Some("10.0.0.2")), ["10.0.0.2"]);
    }
}
