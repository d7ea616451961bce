//! The masquerade table `inet <name>` (production: `inet weft`): chain `postrouting` (nat,
//! srcnat), the interval sets `masq4` / `masq6` holding pod ranges, and the two rules
//!
//! ```text
//! ip  saddr @masq4 ip  daddr != @masq4 ip  daddr != 224.0.0.0/4 masquerade
//! ip6 saddr @masq6 ip6 daddr != @masq6 ip6 daddr != ff00::/8  masquerade
//! ```
//!
//! It runs on the CNI plugin's per-pod hot path: the common case is one netlink round trip.
//! The messages mirror byte-for-byte what `nft --debug=mnl` (nftables 1.0.6) sends for the
//! same ruleset, including the set/element userdata `nft list` needs to print ranges.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Subnets, Ipv6Subnets};
use nix::errno::Errno;

use crate::Error;
use crate::expr::{
    self, NFT_CMP_EQ, NFT_CMP_NEQ, NFT_META_NFPROTO, NFT_PAYLOAD_NETWORK_HEADER, NFT_REG_1,
};
use crate::nl::{
    Attrs, Batch, NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL, Op, Socket, be32, parse_attrs,
};

// --- nf_tables attribute numbers (linux/netfilter/nf_tables.h) --------------------------------
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_TABLE_FLAGS: u16 = 2;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_USERDATA: u16 = 13;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_SET_ELEM_USERDATA: u16 = 6;

const NF_INET_POST_ROUTING: u32 = 4;
const NF_IP_PRI_NAT_SRC: u32 = 100;
const NF_ACCEPT: u32 = 1;
const NFT_SET_INTERVAL: u32 = 0x4;
const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;

/// nft's userdata on the set: key byte order = big endian. Without it `nft list` prints the
/// elements as raw integers instead of addresses.
const SET_UDATA_KEY_BIG_ENDIAN: [u8; 6] = [0x00, 0x04, 0x02, 0x00, 0x00, 0x00];
/// nft's userdata on a start element whose interval runs to the top of the address space
/// (no end element can exist past it): NFTNL_UDATA_SET_ELEM_FLAGS = INTERVAL_OPEN.
const ELEM_UDATA_INTERVAL_OPEN: [u8; 6] = [0x01, 0x04, 0x01, 0x00, 0x00, 0x00];

const CHAIN: &str = "postrouting";
/// Bound on optimistic-concurrency retries; each retry means another process changed the
/// table between our read and our write, so a handful is plenty.
const MAX_ATTEMPTS: usize = 8;
/// Keep each NEWSETELEM well under the 64 KiB netlink attribute limit.
const ELEMS_PER_MSG: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    const ALL: [Family; 2] = [Family::V4, Family::V6];

    fn set(self) -> &'static str {
        match self {
            Family::V4 => "masq4",
            Family::V6 => "masq6",
        }
    }
    /// Batch-local set id, so rules in the creating batch can reference the new set.
    fn set_id(self) -> u32 {
        match self {
            Family::V4 => 1,
            Family::V6 => 2,
        }
    }
    fn key_len(self) -> usize {
        match self {
            Family::V4 => 4,
            Family::V6 => 16,
        }
    }
    /// nft's datatype ids: ipv4_addr = 7, ipv6_addr = 8.
    fn key_type(self) -> u32 {
        match self {
            Family::V4 => 7,
            Family::V6 => 8,
        }
    }
    fn max(self) -> u128 {
        match self {
            Family::V4 => u32::MAX as u128,
            Family::V6 => u128::MAX,
        }
    }
    fn key(self, v: u128) -> Vec<u8> {
        v.to_be_bytes()[16 - self.key_len()..].to_vec()
    }
}

/// A set interval as stored by the kernel: a start element and, unless the range reaches the
/// top of the address space, an end element at (last address + 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Interval {
    start: u128,
    end: Option<u128>,
}

impl Interval {
    fn from_net(net: &IpNet) -> (Family, Interval) {
        let (fam, start, last) = match net.trunc() {
            IpNet::V4(n) => (
                Family::V4,
                u32::from(n.network()) as u128,
                u32::from(n.broadcast()) as u128,
            ),
            IpNet::V6(n) => (
                Family::V6,
                u128::from(n.network()),
                u128::from(n.broadcast()),
            ),
        };
        let end = if last == fam.max() {
            None
        } else {
            Some(last + 1)
        };
        (fam, Interval { start, end })
    }

    fn last(&self, fam: Family) -> u128 {
        self.end.map_or(fam.max(), |e| e - 1)
    }

    fn covers(&self, o: &Interval, fam: Family) -> bool {
        self.start <= o.start && o.last(fam) <= self.last(fam)
    }

    fn overlaps(&self, o: &Interval, fam: Family) -> bool {
        self.start <= o.last(fam) && o.start <= self.last(fam)
    }

    fn to_nets(self, fam: Family) -> Vec<IpNet> {
        let last = self.last(fam);
        match fam {
            Family::V4 => Ipv4Subnets::new(
                Ipv4Addr::from(self.start as u32),
                Ipv4Addr::from(last as u32),
                0,
            )
            .map(IpNet::V4)
            .collect(),
            Family::V6 => Ipv6Subnets::new(Ipv6Addr::from(self.start), Ipv6Addr::from(last), 0)
                .map(IpNet::V6)
                .collect(),
        }
    }
}

/// Requested ranges split by family, normalised (host bits cleared) and with duplicates and
/// ranges nested inside another requested range dropped: one batch must not carry two
/// overlapping intervals, the kernel would reject it as a clash.
#[derive(Default)]
struct Wanted {
    v4: Vec<Interval>,
    v6: Vec<Interval>,
}

impl Wanted {
    fn new(ranges: &[IpNet]) -> Wanted {
        let mut w = Wanted::default();
        for net in ranges {
            let (fam, iv) = Interval::from_net(net);
            w.get_mut(fam).push(iv);
        }
        for fam in Family::ALL {
            let v = w.get_mut(fam);
            // Larger ranges sort first at equal starts, so each nested CIDR follows its cover.
            v.sort_by_key(|iv| (iv.start, std::cmp::Reverse(iv.last(fam))));
            let mut out: Vec<Interval> = Vec::with_capacity(v.len());
            for iv in v.drain(..) {
                if out.last().is_none_or(|k| !k.covers(&iv, fam)) {
                    out.push(iv);
                }
            }
            *v = out;
        }
        w
    }

    fn get(&self, fam: Family) -> &[Interval] {
        match fam {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        }
    }

    fn get_mut(&mut self, fam: Family) -> &mut Vec<Interval> {
        match fam {
            Family::V4 => &mut self.v4,
            Family::V6 => &mut self.v6,
        }
    }

    fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

/// Handle on the masquerade table. Holds no socket: every call opens its own, in the network
/// namespace of the calling thread, so one value can be shared across threads.
#[derive(Clone, Debug)]
pub struct Masquerade {
    table: String,
}

impl Masquerade {
    /// `table` is the name of the `inet` table; production uses `"weft"`.
    pub fn new(table: &str) -> Masquerade {
        Masquerade {
            table: table.to_string(),
        }
    }

    /// Ensure the table, chain, sets and both rules exist and every range in `ranges` is
    /// covered by its family's set.
    ///
    /// Common case (table exists): one batch adding the elements. Re-adding an identical
    /// interval is accepted by the kernel (no `NLM_F_EXCL`). If the table is missing, the
    /// whole ruleset is created in one transaction whose `NEWTABLE` carries `NLM_F_EXCL`, so
    /// concurrent callers cannot duplicate the rules: losers see `EEXIST` and just add their
    /// elements. A range that overlaps an existing element without being identical (the
    /// kernel answers `EEXIST` for that) is reconciled: if an existing interval already
    /// covers it nothing changes, otherwise the overlapped intervals are replaced by their
    /// union in one batch.
    pub fn ensure(&self, ranges: &[IpNet]) -> Result<(), Error> {
        let want = Wanted::new(ranges);
        self.check_name()?;
        let mut sock = Socket::open()?;
        let mut last_err = None;
        for _ in 0..MAX_ATTEMPTS {
            if !want.is_empty() {
                let mut b = Batch::new();
                for fam in Family::ALL {
                    self.add_elems(&mut b, fam, want.get(fam), false);
                }
                match sock.transact(b) {
                    Ok(()) => return Ok(()),
                    // Table or set missing: create them below.
                    Err(e) if e.errno() == Some(Errno::ENOENT) => last_err = Some(e),
                    // Overlap with a different existing interval.
                    Err(e) if e.errno() == Some(Errno::EEXIST) => {
                        return self.reconcile(&mut sock, &want);
                    }
                    Err(e) => return Err(e),
                }
            }
            match sock.transact(self.create_batch(&want)) {
                Ok(()) => return Ok(()),
                Err(Error::Kernel {
                    op: "NEWTABLE",
                    errno: Errno::EEXIST,
                    ..
                }) if want.is_empty() => {
                    // Nothing to add. The table exists; we trust it is complete rather than
                    // paying a round trip per pod to inspect it.
                    return Ok(());
                }
                // Someone else created the table since our element batch: add again.
                Err(Error::Kernel {
                    op: "NEWTABLE",
                    errno: Errno::EEXIST,
                    ..
                }) => {}
                Err(e) => return Err(e),
            }
        }
        // Only reachable if the table exists but a set inside it keeps being missing (e.g. an
        // operator deleted it by hand): report the last kernel error with a hint.
        Err(match last_err {
            Some(Error::Kernel { op, errno, context }) => Error::Kernel {
                op,
                errno,
                context: format!("{context}; table exists but is incomplete, delete it to rebuild"),
            },
            Some(e) => e,
            None => Error::protocol("ensure gave up without an error"),
        })
    }

    /// Remove each range's interval from its set. Ranges that are not present as an exact
    /// element (including when the table does not exist) are ignored; a range merely covered
    /// by a larger element is not an element and is left alone.
    pub fn remove(&self, ranges: &[IpNet]) -> Result<(), Error> {
        self.check_name()?;
        let mut sock = Socket::open()?;
        let mut asked = Wanted::default();
        for net in ranges {
            let (fam, iv) = Interval::from_net(net);
            asked.get_mut(fam).push(iv);
        }
        let mut last_err = None;
        // Read first so we only delete exact elements: DELSETELEM matches on key and end flag
        // alone, so deleting 10.0.0.0/24 blindly would also take the start of 10.0.0.0/16.
        for _ in 0..MAX_ATTEMPTS {
            let mut b = Batch::new();
            let mut any = false;
            for fam in Family::ALL {
                if asked.get(fam).is_empty() {
                    continue;
                }
                let present = match self.read_intervals(&mut sock, fam)? {
                    Some(p) => p,
                    None => continue, // no table or set: nothing to remove
                };
                let mut del: Vec<Interval> = asked
                    .get(fam)
                    .iter()
                    .filter(|iv| present.contains(iv))
                    .copied()
                    .collect();
                del.dedup();
                if !del.is_empty() {
                    any = true;
                    self.elem_msgs(&mut b, Op::DelSetElem, fam, &del, false);
                }
            }
            if !any {
                return Ok(());
            }
            match sock.transact(b) {
                Ok(()) => return Ok(()),
                // A concurrent remover won the race for some element: re-read and retry.
                Err(e) if e.errno() == Some(Errno::ENOENT) => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| Error::protocol("remove gave up without an error")))
    }

    /// The ranges in both sets, as CIDRs (IPv4 first, ascending). Empty if the table or a
    /// set does not exist.
    pub fn ranges(&self) -> Result<Vec<IpNet>, Error> {
        self.check_name()?;
        let mut sock = Socket::open()?;
        let mut out = Vec::new();
        for fam in Family::ALL {
            for iv in self.read_intervals(&mut sock, fam)?.unwrap_or_default() {
                out.extend(iv.to_nets(fam));
            }
        }
        Ok(out)
    }

    /// Delete the whole table (chain, rules and sets with it). `false` if it did not exist.
    pub fn delete_table(&self) -> Result<bool, Error> {
        self.check_name()?;
        let mut sock = Socket::open()?;
        let mut b = Batch::new();
        b.msg(Op::DelTable, 0, self.ctx(""), |a| {
            a.str(NFTA_TABLE_NAME, &self.table);
        });
        match sock.transact(b) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(Errno::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Checked before every operation so the encoder never sees a name the kernel's
    /// NFT_NAME_MAXLEN (256 including NUL) would reject or a netlink attribute can't hold.
    fn check_name(&self) -> Result<(), Error> {
        let t = &self.table;
        if t.is_empty() || t.len() > 255 || t.contains('\0') {
            return Err(Error::InvalidTableName { name: t.clone() });
        }
        Ok(())
    }

    fn ctx(&self, what: &str) -> String {
        if what.is_empty() {
            format!("table inet {}", self.table)
        } else {
            format!("table inet {} {what}", self.table)
        }
    }

    /// Slow path of `ensure`: some requested interval overlaps a different existing one.
    fn reconcile(&self, sock: &mut Socket, want: &Wanted) -> Result<(), Error> {
        let mut last_err = None;
        for _ in 0..MAX_ATTEMPTS {
            let mut b = Batch::new();
            for fam in Family::ALL {
                if want.get(fam).is_empty() {
                    continue;
                }
                let existing = self
                    .read_intervals(sock, fam)?
                    .ok_or_else(|| Error::Kernel {
                        op: Op::GetSetElem.name(),
                        errno: Errno::ENOENT,
                        context: self.ctx(&format!("set {} vanished", fam.set())),
                    })?;
                let (dels, adds) = plan_merge(fam, &existing, want.get(fam));
                // Deletions first: the adds overlap them and are only legal once they're gone
                // (the kernel skips elements inactive in the next generation).
                self.elem_msgs(&mut b, Op::DelSetElem, fam, &dels, false);
                self.elem_msgs(&mut b, Op::NewSetElem, fam, &adds, false);
            }
            if b.is_empty() {
                return Ok(());
            }
            match sock.transact(b) {
                Ok(()) => return Ok(()),
                // The set changed under us (concurrent ensure/remove): re-read and re-plan.
                Err(e) if matches!(e.errno(), Some(Errno::EEXIST | Errno::ENOENT)) => {
                    last_err = Some(e)
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| Error::protocol("reconcile gave up without an error")))
    }

    fn add_elems(&self, b: &mut Batch, fam: Family, ivs: &[Interval], zero_end: bool) {
        self.elem_msgs(b, Op::NewSetElem, fam, ivs, zero_end);
    }

    /// NEWSETELEM/DELSETELEM messages for `ivs` (chunked). `zero_end` prepends the end
    /// element at address 0 that nft puts into an empty interval set; we mirror it when we
    /// create the set so the result is indistinguishable from an nft-made one.
    fn elem_msgs(&self, b: &mut Batch, op: Op, fam: Family, ivs: &[Interval], zero_end: bool) {
        let zero_end = zero_end && !ivs.iter().any(|iv| iv.start == 0);
        if ivs.is_empty() && !zero_end {
            return;
        }
        let flags = if op == Op::NewSetElem {
            NLM_F_CREATE
        } else {
            0
        };
        let chunks: Vec<&[Interval]> = if ivs.is_empty() {
            vec![&[][..]]
        } else {
            ivs.chunks(ELEMS_PER_MSG).collect()
        };
        for (i, chunk) in chunks.into_iter().enumerate() {
            let ctx = self.ctx(&format!("set {}", fam.set()));
            b.msg(op, flags, ctx, |a| {
                a.str(NFTA_SET_ELEM_LIST_TABLE, &self.table)
                    .str(NFTA_SET_ELEM_LIST_SET, fam.set())
                    .be32(NFTA_SET_ELEM_LIST_SET_ID, fam.set_id())
                    .nest(NFTA_SET_ELEM_LIST_ELEMENTS, |l| {
                        if zero_end && i == 0 {
                            end_elem(l, fam, 0);
                        }
                        for iv in chunk {
                            l.nest(NFTA_LIST_ELEM, |e| {
                                e.nest(NFTA_SET_ELEM_KEY, |k| {
                                    k.bytes(NFTA_DATA_VALUE, &fam.key(iv.start));
                                });
                                if iv.end.is_none() {
                                    e.bytes(NFTA_SET_ELEM_USERDATA, &ELEM_UDATA_INTERVAL_OPEN);
                                }
                            });
                            if let Some(end) = iv.end {
                                end_elem(l, fam, end);
                            }
                        }
                    });
            });
        }
    }

    /// The full ruleset in one transaction, as `nft -f` would send it.
    fn create_batch(&self, want: &Wanted) -> Batch {
        let t = self.table.as_str();
        let mut b = Batch::new();
        b.msg(Op::NewTable, NLM_F_CREATE | NLM_F_EXCL, self.ctx(""), |a| {
            a.str(NFTA_TABLE_NAME, t).be32(NFTA_TABLE_FLAGS, 0);
        });
        b.msg(
            Op::NewChain,
            NLM_F_CREATE,
            self.ctx("chain postrouting"),
            |a| {
                a.str(NFTA_CHAIN_TABLE, t)
                    .str(NFTA_CHAIN_NAME, CHAIN)
                    .str(NFTA_CHAIN_TYPE, "nat")
                    .be32(NFTA_CHAIN_POLICY, NF_ACCEPT)
                    .nest(NFTA_CHAIN_HOOK, |h| {
                        h.be32(NFTA_HOOK_HOOKNUM, NF_INET_POST_ROUTING)
                            .be32(NFTA_HOOK_PRIORITY, NF_IP_PRI_NAT_SRC);
                    });
            },
        );
        for fam in Family::ALL {
            b.msg(
                Op::NewSet,
                NLM_F_CREATE,
                self.ctx(&format!("set {}", fam.set())),
                |a| {
                    a.str(NFTA_SET_TABLE, t)
                        .str(NFTA_SET_NAME, fam.set())
                        .be32(NFTA_SET_FLAGS, NFT_SET_INTERVAL)
                        .be32(NFTA_SET_KEY_TYPE, fam.key_type())
                        .be32(NFTA_SET_KEY_LEN, fam.key_len() as u32)
                        .be32(NFTA_SET_ID, fam.set_id())
                        .bytes(NFTA_SET_USERDATA, &SET_UDATA_KEY_BIG_ENDIAN);
                },
            );
        }
        for fam in Family::ALL {
            let ctx = self.ctx(&format!("chain postrouting rule for {}", fam.set()));
            b.msg(Op::NewRule, NLM_F_CREATE | NLM_F_APPEND, ctx, |a| {
                a.str(NFTA_RULE_TABLE, t)
                    .str(NFTA_RULE_CHAIN, CHAIN)
                    .nest(NFTA_RULE_EXPRESSIONS, |l| masq_rule(l, fam));
            });
        }
        for fam in Family::ALL {
            self.add_elems(&mut b, fam, want.get(fam), true);
        }
        b
    }

    /// Dump one set's elements and pair them back into intervals. `None` if the table or set
    /// does not exist.
    fn read_intervals(
        &self,
        sock: &mut Socket,
        fam: Family,
    ) -> Result<Option<Vec<Interval>>, Error> {
        let mut elems: Vec<(u128, bool)> = Vec::new();
        let ctx = self.ctx(&format!("set {}", fam.set()));
        let res = sock.dump(
            Op::GetSetElem,
            &ctx,
            |a| {
                a.str(NFTA_SET_ELEM_LIST_TABLE, &self.table)
                    .str(NFTA_SET_ELEM_LIST_SET, fam.set());
            },
            |payload| {
                for attr in parse_attrs(payload)? {
                    if attr.ty != NFTA_SET_ELEM_LIST_ELEMENTS {
                        continue;
                    }
                    for el in parse_attrs(attr.data)? {
                        if el.ty == NFTA_LIST_ELEM {
                            elems.push(parse_elem(el.data, fam)?);
                        }
                    }
                }
                Ok(())
            },
        );
        match res {
            Ok(()) => Ok(Some(pair_elements(elems))),
            Err(e) if e.errno() == Some(Errno::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn end_elem(l: &mut Attrs<'_>, fam: Family, key: u128) {
    l.nest(NFTA_LIST_ELEM, |e| {
        e.be32(NFTA_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END)
            .nest(NFTA_SET_ELEM_KEY, |k| {
                k.bytes(NFTA_DATA_VALUE, &fam.key(key));
            });
    });
}

fn parse_elem(data: &[u8], fam: Family) -> Result<(u128, bool), Error> {
    let mut key = None;
    let mut end = false;
    for a in parse_attrs(data)? {
        match a.ty {
            NFTA_SET_ELEM_KEY => {
                for v in parse_attrs(a.data)? {
                    if v.ty == NFTA_DATA_VALUE {
                        if v.data.len() != fam.key_len() {
                            return Err(Error::protocol(format!(
                                "set {} key of {} bytes",
                                fam.set(),
                                v.data.len()
                            )));
                        }
                        let mut b = [0u8; 16];
                        b[16 - v.data.len()..].copy_from_slice(v.data);
                        key = Some(u128::from_be_bytes(b));
                    }
                }
            }
            NFTA_SET_ELEM_FLAGS => end = be32(a.data)? & NFT_SET_ELEM_INTERVAL_END != 0,
            _ => {}
        }
    }
    let key = key.ok_or_else(|| Error::protocol("set element without key"))?;
    Ok((key, end))
}

/// The rbtree dumps start and end elements in descending key order; sort and pair each start
/// with the next end. Ends sort before starts at equal keys because an end at K closes the
/// interval below K while a start at K opens the adjacent one. Stray ends (nft's end element
/// at address 0) bound nothing and are dropped.
fn pair_elements(mut elems: Vec<(u128, bool)>) -> Vec<Interval> {
    elems.sort_by_key(|&(k, end)| (k, !end));
    let mut out = Vec::new();
    let mut open: Option<u128> = None;
    for (k, end) in elems {
        if end {
            if let Some(s) = open.take() {
                out.push(Interval {
                    start: s,
                    end: Some(k),
                });
            }
        } else {
            if let Some(s) = open.replace(k) {
                // Two starts in a row: the first interval effectively runs up to this one.
                out.push(Interval {
                    start: s,
                    end: Some(k),
                });
            }
        }
    }
    if let Some(s) = open {
        out.push(Interval {
            start: s,
            end: None,
        });
    }
    out
}

/// Decide which existing intervals to delete and what to add so every requested interval is
/// covered and no two elements overlap: a request already covered changes nothing, otherwise
/// it replaces every interval it overlaps with their union.
fn plan_merge(
    fam: Family,
    existing: &[Interval],
    want: &[Interval],
) -> (Vec<Interval>, Vec<Interval>) {
    // (interval, added by us in this plan)
    let mut cur: Vec<(Interval, bool)> = existing.iter().map(|&iv| (iv, false)).collect();
    let mut dels = Vec::new();
    for req in want {
        if cur.iter().any(|(c, _)| c.covers(req, fam)) {
            continue;
        }
        let mut merged = *req;
        cur.retain(|&(c, new)| {
            if !c.overlaps(req, fam) {
                return true;
            }
            merged.start = merged.start.min(c.start);
            merged.end = match (merged.end, c.end) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
            if !new {
                dels.push(c);
            }
            false
        });
        cur.push((merged, true));
    }
    let adds = cur
        .into_iter()
        .filter(|&(_, new)| new)
        .map(|(iv, _)| iv)
        .collect();
    (dels, adds)
}

/// `ip saddr @masq4 ip daddr != @masq4 ip daddr != 224.0.0.0/4 masquerade` (and the IPv6
/// twin), expression for expression as nft compiles it.
fn masq_rule(l: &mut Attrs<'_>, fam: Family) {
    let (nfproto, saddr, daddr) = match fam {
        Family::V4 => (libc::NFPROTO_IPV4 as u8, 12, 16),
        Family::V6 => (libc::NFPROTO_IPV6 as u8, 8, 24),
    };
    let len = fam.key_len() as u32;
    let net = |l: &mut Attrs<'_>, offset: u32, len: u32| {
        expr::payload(l, NFT_REG_1, NFT_PAYLOAD_NETWORK_HEADER, offset, len);
    };
    let set = |inverted: bool| expr::Lookup {
        set: fam.set(),
        set_id: Some(fam.set_id()),
        dreg: None,
        inverted,
    };
    // inet chains see both families: match the family first, as nft does.
    expr::meta(l, NFT_META_NFPROTO, NFT_REG_1);
    expr::cmp(l, NFT_CMP_EQ, &[nfproto]);
    net(l, saddr, len);
    expr::lookup(l, &set(false));
    net(l, daddr, len);
    expr::lookup(l, &set(true));
    match fam {
        Family::V4 => {
            // daddr & 240.0.0.0 != 224.0.0.0
            net(l, daddr, 4);
            expr::bitwise_mask(l, &[0xf0, 0, 0, 0]);
            expr::cmp(l, NFT_CMP_NEQ, &[0xe0, 0, 0, 0]);
        }
        Family::V6 => {
            // ff00::/8 is byte-aligned, so nft loads just the first byte.
            net(l, daddr, 1);
            expr::cmp(l, NFT_CMP_NEQ, &[0xff]);
        }
    }
    expr::expr(l, "masq", |_| {});
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(s: u128, e: Option<u128>) -> Interval {
        Interval { start: s, end: e }
    }

    #[test]
    fn pairs_descending_dump_with_zero_end_and_adjacent_ranges() {
        // 10.0.0.0/24, 10.0.1.0/24 (adjacent), 240.0.0.0/4 (open), nft's 0 end.
        let a = 0x0a00_0000;
        let elems = vec![
            (0xf000_0000, false),
            (a + 0x200, true),
            (a + 0x100, false),
            (a + 0x100, true),
            (a, false),
            (0, true),
        ];
        assert_eq!(
            pair_elements(elems),
            vec![
                iv(a, Some(a + 0x100)),
                iv(a + 0x100, Some(a + 0x200)),
                iv(0xf000_0000, None)
            ]
        );
    }

    #[test]
    fn wanted_drops_nested_and_duplicates() {
        let nets: Vec<IpNet> = [
            "10.1.0.0/16",
            "10.0.0.0/8",
            "10.0.0.5/8",
            "192.168.0.0/24",
            "fd00::/64",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let w = Wanted::new(&nets);
        assert_eq!(w.v4.len(), 2);
        assert_eq!(w.v6.len(), 1);
    }

    #[test]
    fn merge_plan() {
        let f = Family::V4;
        let existing = [iv(100, Some(200)), iv(300, Some(400))];
        // Covered: nothing to do.
        assert_eq!(
            plan_merge(f, &existing, &[iv(120, Some(130))]),
            (vec![], vec![])
        );
        // Covers the first: replace it.
        assert_eq!(
            plan_merge(f, &existing, &[iv(0, Some(256))]),
            (vec![iv(100, Some(200))], vec![iv(0, Some(256))])
        );
        // Partial overlap with both: union.
        assert_eq!(
            plan_merge(f, &existing, &[iv(150, Some(350))]),
            (existing.to_vec(), vec![iv(100, Some(400))])
        );
    }

    #[test]
    fn interval_from_net_top_of_space_is_open() {
        let (_, i) = Interval::from_net(&"240.0.0.0/4".parse().unwrap());
        assert_eq!(i, iv(0xf000_0000, None));
        assert_eq!(
            i.to_nets(Family::V4),
            vec!["240.0.0.0/4".parse::<IpNet>().unwrap()]
        );
    }
}
