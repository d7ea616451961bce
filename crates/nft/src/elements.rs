//! Set-element transactions on any `inet` table: add and delete elements of existing sets
//! and verdict maps, many sets at once, as ONE nf_tables batch (atomic: the kernel applies
//! all of it or none of it), without spawning `nft`.
//!
//! This module only moves elements. It never creates or deletes tables, sets or chains, and
//! it knows nothing about what the sets mean: callers give raw keys (network byte order, as
//! the set's key type lays them out) and say what kind of set each one is, because the
//! kernel wants interval elements encoded differently per set backend:
//!
//! - [`SetKind::Hash`]: one element, `NFTA_SET_ELEM_KEY`.
//! - [`SetKind::Interval`] (single-field `flags interval`, the rbtree): a start element at
//!   the low key and an end element (`NFT_SET_ELEM_INTERVAL_END`) at high + 1; a range that
//!   reaches the top of the key space has no end element and its start carries nft's
//!   `INTERVAL_OPEN` userdata instead.
//! - [`SetKind::ConcatInterval`] (concatenation with `flags interval`, pipapo): one element
//!   with `NFTA_SET_ELEM_KEY` = low and `NFTA_SET_ELEM_KEY_END` = high (inclusive), also for
//!   single values.
//!
//! The messages mirror what `nft --debug=mnl` (nftables 1.0.6) sends for `add element` /
//! `delete element`, except that we leave out `NFTA_SET_ELEM_LIST_SET_ID` (only meaningful
//! for a set created in the same batch) and nft's extra end element at key 0 that it puts
//! into an empty interval set (the rbtree does not need it; `nft list` shows neither).
//! Elements of a set declared with `counter` get their counter from the kernel, which
//! clones the set's expressions into every element that carries none.
//!
//! Everything happens in the network namespace of the thread that calls
//! [`ElementBatch::commit`].

use crate::Error;
use crate::nl::{Attrs, Batch, NLM_F_CREATE, Op, Socket};

const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_SET_ELEM_USERDATA: u16 = 6;
const NFTA_SET_ELEM_KEY_END: u16 = 10;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;

const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;
const NFT_RETURN: i32 = -5;

/// nft's element userdata for a start element with no end (NFTNL_UDATA_SET_ELEM_FLAGS =
/// INTERVAL_OPEN); `nft list` needs it to print the range.
const ELEM_UDATA_INTERVAL_OPEN: [u8; 6] = [0x01, 0x04, 0x01, 0x00, 0x00, 0x00];

/// Close a NEWSETELEM/DELSETELEM once its element list reaches this size: netlink
/// attribute lengths are 16-bit, and small messages keep each ACK cheap.
const MAX_ELEMENTS_BYTES: usize = 32 * 1024;

/// How the set stores elements, which decides how an element is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetKind {
    /// Plain hash set or map (no `flags interval`), single field or concatenation.
    Hash,
    /// Single-field set or map with `flags interval` (rbtree).
    Interval,
    /// Concatenation with `flags interval` (pipapo).
    ConcatInterval,
}

/// The value of a verdict-map element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
    Return,
    Jump(String),
    Goto(String),
}

impl Verdict {
    fn code(&self) -> i32 {
        match self {
            Verdict::Accept => NF_ACCEPT,
            Verdict::Drop => NF_DROP,
            Verdict::Return => NFT_RETURN,
            Verdict::Jump(_) => NFT_JUMP,
            Verdict::Goto(_) => NFT_GOTO,
        }
    }

    fn chain(&self) -> Option<&str> {
        match self {
            Verdict::Jump(c) | Verdict::Goto(c) => Some(c),
            _ => None,
        }
    }
}

/// One element: a key, or an inclusive key range for interval sets, and for verdict maps the
/// verdict (ignored by deletes: the kernel matches keys only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    /// The (low) key, laid out as the set's key type: see [`concat_key`] for concatenations.
    pub key: Vec<u8>,
    /// Inclusive high end of a range (interval sets only); `None` is the single key.
    pub key_end: Option<Vec<u8>>,
    pub verdict: Option<Verdict>,
}

impl Element {
    /// A single key.
    pub fn key(key: Vec<u8>) -> Element {
        Element {
            key,
            key_end: None,
            verdict: None,
        }
    }

    /// The inclusive range `lo..=hi` (`lo == hi` is the single key).
    pub fn range(lo: Vec<u8>, hi: Vec<u8>) -> Element {
        let key_end = (lo != hi).then_some(hi);
        Element {
            key: lo,
            key_end,
            verdict: None,
        }
    }

    pub fn with_verdict(mut self, v: Verdict) -> Element {
        self.verdict = Some(v);
        self
    }

    /// Rough wire size, to cut messages before they outgrow a netlink attribute.
    fn wire_size(&self) -> usize {
        let keys = self.key.len() + self.key_end.as_ref().map_or(self.key.len(), Vec::len);
        let chain = self
            .verdict
            .as_ref()
            .and_then(Verdict::chain)
            .map_or(0, str::len);
        2 * keys + chain + 96
    }
}

/// The key of a concatenation (`a . b`): each field padded with zeros to a multiple of 4
/// bytes, as the kernel's registers hold them (`inet_proto` is 1 byte + 3 zero bytes,
/// `inet_service` 2 bytes big-endian + 2 zero bytes, an IPv4 address 4 bytes).
pub fn concat_key(fields: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(fields.iter().map(|f| f.len() + 3).sum());
    for f in fields {
        out.extend_from_slice(f);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }
    out
}

/// `key + 1` as a big-endian number; `None` when the key is all ones (the top of its space).
fn successor(key: &[u8]) -> Option<Vec<u8>> {
    let mut out = key.to_vec();
    for b in out.iter_mut().rev() {
        if *b == 0xff {
            *b = 0;
        } else {
            *b += 1;
            return Some(out);
        }
    }
    None
}

/// A netlink socket kept open for many [`ElementBatch`] commits.
///
/// Why it exists: when an nf_tables socket is closed, the kernel (6.x, `nft_rcv_nl_event`)
/// flushes the deferred destruction of the last transactions, which waits for an RCU grace
/// period (8–16 ms measured at HZ=250) whenever they deleted elements. With one socket per
/// commit, as `nft -f` has, every change that removes anything pays that wait; on a socket
/// that stays open the kernel frees the old elements in the background instead.
///
/// The socket belongs to the network namespace of the thread that opened it, whatever
/// thread later commits on it.
pub struct Session {
    sock: Socket,
}

impl Session {
    pub fn open() -> Result<Session, Error> {
        Ok(Session {
            sock: Socket::open()?,
        })
    }

    /// As [`ElementBatch::commit`], on this session's socket.
    pub fn commit(&mut self, batch: ElementBatch) -> Result<(), Error> {
        if let Some(e) = batch.invalid {
            return Err(e);
        }
        if batch.batch.is_empty() {
            return Ok(());
        }
        self.sock.transact(batch.batch)
    }
}

/// Element changes for the sets of one `inet` table, committed as one transaction in the
/// caller's order (a diff's order matters for what packets see while it is built: the
/// kernel applies the whole batch at once, but a failed commit applies nothing).
pub struct ElementBatch {
    table: String,
    batch: Batch,
    /// The first invalid set name given, reported by `commit` (so `add`/`delete` chain).
    invalid: Option<Error>,
}

impl ElementBatch {
    /// An empty batch for table `inet <table>`.
    pub fn new(table: &str) -> ElementBatch {
        let invalid = (!valid_name(table)).then(|| Error::InvalidTableName {
            name: table.to_string(),
        });
        ElementBatch {
            table: table.to_string(),
            batch: Batch::new(),
            invalid,
        }
    }

    /// Add `elems` to `set` (`add element`: an identical existing element is no error).
    pub fn add(&mut self, set: &str, kind: SetKind, elems: &[Element]) -> &mut Self {
        self.push(Op::NewSetElem, set, kind, elems);
        self
    }

    /// Delete `elems` from `set` (each must exist, exactly: same key and range).
    pub fn delete(&mut self, set: &str, kind: SetKind, elems: &[Element]) -> &mut Self {
        self.push(Op::DelSetElem, set, kind, elems);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// Send the batch and wait for the kernel's verdict on every message, on a socket opened
    /// for this call in the calling thread's network namespace. On error nothing was
    /// applied; the error names the table, set and operation of the first message the kernel
    /// refused. Closing the socket costs an RCU grace period after a batch that deleted
    /// anything (see [`Session`]); callers that commit often should keep a `Session`.
    pub fn commit(self) -> Result<(), Error> {
        Session::open()?.commit(self)
    }

    fn push(&mut self, op: Op, set: &str, kind: SetKind, elems: &[Element]) {
        if !valid_name(set) {
            self.invalid.get_or_insert_with(|| Error::InvalidSetName {
                table: self.table.clone(),
                name: set.to_string(),
            });
            return;
        }
        if self.invalid.is_some() || elems.is_empty() {
            return;
        }
        let mut chunks: Vec<&[Element]> = Vec::new();
        let (mut start, mut size) = (0, 0);
        for (i, e) in elems.iter().enumerate() {
            let s = e.wire_size();
            if size + s > MAX_ELEMENTS_BYTES && i > start {
                chunks.push(&elems[start..i]);
                (start, size) = (i, 0);
            }
            size += s;
        }
        chunks.push(&elems[start..]);
        let verb = if op == Op::NewSetElem {
            "add"
        } else {
            "delete"
        };
        let flags = if op == Op::NewSetElem {
            NLM_F_CREATE
        } else {
            0
        };
        for chunk in chunks {
            let ctx = format!(
                "table inet {} set {set}: {verb} {} element(s)",
                self.table,
                chunk.len()
            );
            let table = self.table.as_str();
            self.batch.msg(op, flags, ctx, |a| {
                a.str(NFTA_SET_ELEM_LIST_TABLE, table)
                    .str(NFTA_SET_ELEM_LIST_SET, set)
                    .nest(NFTA_SET_ELEM_LIST_ELEMENTS, |l| {
                        // nft numbers the list entries 1, 2, …; the kernel ignores the type.
                        let mut n = 0u16;
                        let mut next = || {
                            n = n.wrapping_add(1);
                            n
                        };
                        for e in chunk {
                            encode(l, &mut next, op, kind, e);
                        }
                    });
            });
        }
    }

    #[cfg(test)]
    pub(crate) fn wire(&self) -> &[u8] {
        self.batch.wire()
    }
}

/// Names the kernel (NFT_NAME_MAXLEN, 256 with the NUL) and an attribute can hold.
fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 255 && !n.contains('\0')
}

fn encode(l: &mut Attrs<'_>, next: &mut impl FnMut() -> u16, op: Op, kind: SetKind, e: &Element) {
    // Deletes match on keys only; nft sends no data with them.
    let verdict = if op == Op::NewSetElem {
        e.verdict.as_ref()
    } else {
        None
    };
    match kind {
        SetKind::Hash => {
            l.nest(next(), |x| {
                key(x, NFTA_SET_ELEM_KEY, &e.key);
                data(x, verdict);
            });
        }
        SetKind::ConcatInterval => {
            l.nest(next(), |x| {
                key(x, NFTA_SET_ELEM_KEY, &e.key);
                key(
                    x,
                    NFTA_SET_ELEM_KEY_END,
                    e.key_end.as_deref().unwrap_or(&e.key),
                );
                data(x, verdict);
            });
        }
        SetKind::Interval => {
            let end = successor(e.key_end.as_deref().unwrap_or(&e.key));
            l.nest(next(), |x| {
                key(x, NFTA_SET_ELEM_KEY, &e.key);
                data(x, verdict);
                if end.is_none() {
                    x.bytes(NFTA_SET_ELEM_USERDATA, &ELEM_UDATA_INTERVAL_OPEN);
                }
            });
            if let Some(end) = end {
                l.nest(next(), |x| {
                    x.be32(NFTA_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
                    key(x, NFTA_SET_ELEM_KEY, &end);
                });
            }
        }
    }
}

fn key(x: &mut Attrs<'_>, ty: u16, k: &[u8]) {
    x.nest(ty, |v| {
        v.bytes(NFTA_DATA_VALUE, k);
    });
}

fn data(x: &mut Attrs<'_>, verdict: Option<&Verdict>) {
    let Some(v) = verdict else { return };
    x.nest(NFTA_SET_ELEM_DATA, |d| {
        d.nest(NFTA_DATA_VERDICT, |vd| {
            vd.be32(NFTA_VERDICT_CODE, v.code() as u32);
            if let Some(c) = v.chain() {
                vd.str(NFTA_VERDICT_CHAIN, c);
            }
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The attributes (after nlmsghdr + nfgenmsg) of the batch's only element message.
    fn only_msg_attrs(b: &ElementBatch) -> Vec<u8> {
        let w = b.wire();
        // BATCH_BEGIN is 20 bytes; the element message follows (BATCH_END is added at send).
        let m = &w[20..];
        let len = u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize;
        assert_eq!(len, m.len(), "exactly one message");
        m[20..len].to_vec()
    }

    /// `nft --debug=mnl -f` (nftables 1.0.6) for
    /// `add element inet nftelcap pm { 6 . 80-90 : jump tgt, 17 . 53 : accept }` into
    /// `map pm { type inet_proto . inet_service : verdict; flags interval; }`, without the
    /// `NFTA_SET_ELEM_LIST_SET_ID` attribute (08 00 04 00 00 00 00 05) we leave out.
    #[test]
    fn pipapo_verdict_map_add_matches_nft() {
        let nft = hex("0d000100 6e667465 6c636170 00000000
             07000200 706d0000
             74000380
               3c000180
                 10000180 0c000100 06000000 00500000
                 10000a80 0c000100 06000000 005a0000
                 18000280 14000280 08000100 fffffffd 08000200 74677400
               34000280
                 10000180 0c000100 11000000 00350000
                 10000a80 0c000100 11000000 00350000
                 10000280 0c000280 08000100 00000001");
        let tcp = concat_key(&[&[6], &80u16.to_be_bytes()]);
        let tcp_hi = concat_key(&[&[6], &90u16.to_be_bytes()]);
        let dns = concat_key(&[&[17], &53u16.to_be_bytes()]);
        let mut b = ElementBatch::new("nftelcap");
        b.add(
            "pm",
            SetKind::ConcatInterval,
            &[
                Element::range(tcp, tcp_hi).with_verdict(Verdict::Jump("tgt".into())),
                Element::key(dns).with_verdict(Verdict::Accept),
            ],
        );
        assert_eq!(only_msg_attrs(&b), nft);
    }

    /// `delete element inet nftelcap i4 { 10.0.0.0/8, 240.0.0.0/4 }` from an IPv4 interval
    /// set: start + end element, and an open start (with userdata) at the top of the space.
    #[test]
    fn rbtree_delete_matches_nft() {
        let nft = hex("0d000100 6e667465 6c636170 00000000
             07000200 69340000
             48000380
               10000180 0c000180 08000100 0a000000
               18000280 08000300 00000001 0c000180 08000100 0b000000
               1c000380 0c000180 08000100 f0000000 0a000600 01040100 00000000");
        let mut b = ElementBatch::new("nftelcap");
        b.delete(
            "i4",
            SetKind::Interval,
            &[
                Element::range(vec![10, 0, 0, 0], vec![10, 255, 255, 255]),
                Element::range(vec![240, 0, 0, 0], vec![255; 4]),
            ],
        );
        assert_eq!(only_msg_attrs(&b), nft);
    }

    /// `add element inet nftelcap h4 { 10.1.2.3 }` (hash set), without SET_ID.
    #[test]
    fn hash_add_matches_nft() {
        let nft = hex("0d000100 6e667465 6c636170 00000000
             07000200 68340000
             14000380 10000180 0c000180 08000100 0a010203");
        let mut b = ElementBatch::new("nftelcap");
        b.add("h4", SetKind::Hash, &[Element::key(vec![10, 1, 2, 3])]);
        assert_eq!(only_msg_attrs(&b), nft);
    }

    #[test]
    fn successor_carries_and_tops_out() {
        assert_eq!(successor(&[10, 0, 0, 255]), Some(vec![10, 0, 1, 0]));
        assert_eq!(successor(&[255, 255]), None);
    }

    #[test]
    fn large_lists_are_split_across_messages() {
        let elems: Vec<Element> = (0..2000u32)
            .map(|i| {
                Element::key(i.to_be_bytes().to_vec()).with_verdict(Verdict::Jump("c".repeat(40)))
            })
            .collect();
        let mut b = ElementBatch::new("t");
        b.add("s", SetKind::Hash, &elems);
        assert!(b.batch.len() > 1);
    }

    #[test]
    fn bad_names_fail_at_commit() {
        let mut b = ElementBatch::new("t");
        b.add("", SetKind::Hash, &[Element::key(vec![1, 2, 3, 4])]);
        assert!(matches!(b.commit(), Err(Error::InvalidSetName { .. })));
        assert!(matches!(
            ElementBatch::new("").commit(),
            Err(Error::InvalidTableName { .. })
        ));
    }
}
