//! Set elements in a [`TableBatch`]: add and delete elements of sets and verdict maps, many
//! sets at once, in ONE nf_tables batch (atomic: the kernel applies all of it or none of it),
//! without spawning `nft`.
//!
//! This module only moves elements (sets and chains are `objects`), and it knows nothing
//! about what the sets mean: callers give raw keys (network byte order, as
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
//! `delete element`, except that we send `NFTA_SET_ELEM_LIST_SET_ID` only for a set created
//! in the same batch (nft sends an id from its cache for any set; the kernel reads it only
//! when the name is not found) and leave out nft's extra end element at key 0 that it puts
//! into an empty interval set (the rbtree does not need it; `nft list` shows neither).
//! Elements of a set declared with `counter` get their counter from the kernel, which
//! clones the set's expressions into every element that carries none.

use crate::TableBatch;
use crate::expr::{Verdict, value_data, verdict_data};
use crate::nl::{Attrs, NLM_F_CREATE, Op};

const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_SET_ELEM_USERDATA: u16 = 6;
const NFTA_SET_ELEM_KEY_END: u16 = 10;
const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;

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

impl TableBatch {
    /// Add `elems` to `set` (`add element`: an identical existing element is no error).
    pub fn add_elements(&mut self, set: &str, kind: SetKind, elems: &[Element]) -> &mut Self {
        self.push(Op::NewSetElem, set, kind, elems);
        self
    }

    /// Delete `elems` from `set` (each must exist, exactly: same key and range).
    pub fn delete_elements(&mut self, set: &str, kind: SetKind, elems: &[Element]) -> &mut Self {
        self.push(Op::DelSetElem, set, kind, elems);
        self
    }

    fn push(&mut self, op: Op, set: &str, kind: SetKind, elems: &[Element]) {
        if !self.check_set(set) || elems.is_empty() {
            return;
        }
        let set_id = self.set_id(set);
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
                    .str(NFTA_SET_ELEM_LIST_SET, set);
                if let Some(id) = set_id {
                    a.be32(NFTA_SET_ELEM_LIST_SET_ID, id);
                }
                a.nest(NFTA_SET_ELEM_LIST_ELEMENTS, |l| {
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
    x.nest(ty, |v| value_data(v, k));
}

fn data(x: &mut Attrs<'_>, verdict: Option<&Verdict>) {
    let Some(v) = verdict else { return };
    x.nest(NFTA_SET_ELEM_DATA, |d| verdict_data(d, v));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    use crate::testbytes::{hex, msgs};

    /// The attributes (after nlmsghdr + nfgenmsg) of the batch's only element message.
    fn only_msg_attrs(b: &TableBatch) -> Vec<u8> {
        let mut m = msgs(b);
        assert_eq!(m.len(), 1, "exactly one message");
        m.remove(0)
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
        let mut b = TableBatch::new("nftelcap");
        b.add_elements(
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
        let mut b = TableBatch::new("nftelcap");
        b.delete_elements(
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
        let mut b = TableBatch::new("nftelcap");
        b.add_elements("h4", SetKind::Hash, &[Element::key(vec![10, 1, 2, 3])]);
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
        let mut b = TableBatch::new("t");
        b.add_elements("s", SetKind::Hash, &elems);
        assert!(b.batch.len() > 1);
    }

    #[test]
    fn bad_names_fail_at_commit() {
        let mut b = TableBatch::new("t");
        b.add_elements("", SetKind::Hash, &[Element::key(vec![1, 2, 3, 4])]);
        assert!(matches!(b.commit(), Err(Error::InvalidSetName { .. })));
        assert!(matches!(
            TableBatch::new("").commit(),
            Err(Error::InvalidTableName { .. })
        ));
    }
}
