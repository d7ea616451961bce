//! nf_tables rule expressions and verdicts as netlink attributes, encoded attribute for
//! attribute as nftables 1.0.6 (libnftnl) writes them, so a rule we add lists exactly like
//! one `nft` added.
//!
//! Only encoders live here: which expressions make up a rule is decided by the rule's owner
//! (the masquerade rules in the crate root, the policy table's rules in `objects`).

use crate::nl::Attrs;

// --- attribute numbers (linux/netfilter/nf_tables.h) ----------------------------------------
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFTA_LOOKUP_SET: u16 = 1;
const NFTA_LOOKUP_SREG: u16 = 2;
const NFTA_LOOKUP_DREG: u16 = 3;
const NFTA_LOOKUP_SET_ID: u16 = 4;
const NFTA_LOOKUP_FLAGS: u16 = 5;
const NFTA_BITWISE_SREG: u16 = 1;
const NFTA_BITWISE_DREG: u16 = 2;
const NFTA_BITWISE_LEN: u16 = 3;
const NFTA_BITWISE_MASK: u16 = 4;
const NFTA_BITWISE_XOR: u16 = 5;
const NFTA_BYTEORDER_SREG: u16 = 1;
const NFTA_BYTEORDER_DREG: u16 = 2;
const NFTA_BYTEORDER_OP: u16 = 3;
const NFTA_BYTEORDER_LEN: u16 = 4;
const NFTA_BYTEORDER_SIZE: u16 = 5;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_LIMIT_RATE: u16 = 1;
const NFTA_LIMIT_UNIT: u16 = 2;
const NFTA_LIMIT_BURST: u16 = 3;
const NFTA_LIMIT_TYPE: u16 = 4;
const NFTA_LIMIT_FLAGS: u16 = 5;
const NFTA_LOG_PREFIX: u16 = 2;

/// The verdict register; `NFT_REG_1` is the first 16-byte data register, `NFT_REG32_01`
/// the second 4-byte one (a concatenation's second field lands there).
pub(crate) const NFT_REG_VERDICT: u32 = 0;
pub(crate) const NFT_REG_1: u32 = 1;
pub(crate) const NFT_REG32_01: u32 = 9;

pub(crate) const NFT_META_NFPROTO: u32 = 15;
pub(crate) const NFT_META_L4PROTO: u32 = 16;
pub(crate) const NFT_CMP_EQ: u32 = 0;
pub(crate) const NFT_CMP_NEQ: u32 = 1;
pub(crate) const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
pub(crate) const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFT_LOOKUP_F_INV: u32 = 1;
const NFT_BYTEORDER_HTON: u32 = 1;
/// `limit rate N/second`: unit in seconds, nft's default burst of 5 packets.
const LIMIT_UNIT_SECOND: u64 = 1;
const LIMIT_DEFAULT_BURST: u32 = 5;

pub(crate) const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;
const NFT_RETURN: i32 = -5;

/// A verdict, in a rule or as the value of a verdict-map element.
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

    pub(crate) fn chain(&self) -> Option<&str> {
        match self {
            Verdict::Jump(c) | Verdict::Goto(c) => Some(c),
            _ => None,
        }
    }
}

/// `NFTA_DATA_VERDICT` with its code and target chain, inside a data attribute.
pub(crate) fn verdict_data(d: &mut Attrs<'_>, v: &Verdict) {
    d.nest(NFTA_DATA_VERDICT, |vd| {
        vd.be32(NFTA_VERDICT_CODE, v.code() as u32);
        if let Some(c) = v.chain() {
            vd.str(NFTA_VERDICT_CHAIN, c);
        }
    });
}

/// `NFTA_DATA_VALUE` inside a data attribute.
pub(crate) fn value_data(d: &mut Attrs<'_>, value: &[u8]) {
    d.bytes(NFTA_DATA_VALUE, value);
}

pub(crate) fn expr(l: &mut Attrs<'_>, name: &str, data: impl FnOnce(&mut Attrs<'_>)) {
    l.nest(NFTA_LIST_ELEM, |e| {
        e.str(NFTA_EXPR_NAME, name).nest(NFTA_EXPR_DATA, data);
    });
}

pub(crate) fn meta(l: &mut Attrs<'_>, key: u32, dreg: u32) {
    expr(l, "meta", |a| {
        a.be32(NFTA_META_KEY, key).be32(NFTA_META_DREG, dreg);
    });
}

pub(crate) fn cmp(l: &mut Attrs<'_>, op: u32, value: &[u8]) {
    expr(l, "cmp", |a| {
        a.be32(NFTA_CMP_SREG, NFT_REG_1)
            .be32(NFTA_CMP_OP, op)
            .nest(NFTA_CMP_DATA, |d| value_data(d, value));
    });
}

pub(crate) fn payload(l: &mut Attrs<'_>, dreg: u32, base: u32, offset: u32, len: u32) {
    expr(l, "payload", |a| {
        a.be32(NFTA_PAYLOAD_DREG, dreg)
            .be32(NFTA_PAYLOAD_BASE, base)
            .be32(NFTA_PAYLOAD_OFFSET, offset)
            .be32(NFTA_PAYLOAD_LEN, len);
    });
}

/// How a `lookup` reads its set.
pub(crate) struct Lookup<'a> {
    pub set: &'a str,
    /// Batch-local id of a set created in the same batch (nft always sends one).
    pub set_id: Option<u32>,
    /// `Some(NFT_REG_VERDICT)` for a verdict map (`vmap`).
    pub dreg: Option<u32>,
    pub inverted: bool,
}

pub(crate) fn lookup(l: &mut Attrs<'_>, k: &Lookup<'_>) {
    expr(l, "lookup", |a| {
        a.be32(NFTA_LOOKUP_SREG, NFT_REG_1);
        if let Some(d) = k.dreg {
            a.be32(NFTA_LOOKUP_DREG, d);
        }
        a.str(NFTA_LOOKUP_SET, k.set);
        if let Some(id) = k.set_id {
            a.be32(NFTA_LOOKUP_SET_ID, id);
        }
        if k.inverted {
            a.be32(NFTA_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
        }
    });
}

/// `reg1 = (reg1 & mask) ^ 0` over `mask.len()` bytes.
pub(crate) fn bitwise_mask(l: &mut Attrs<'_>, mask: &[u8]) {
    expr(l, "bitwise", |a| {
        a.be32(NFTA_BITWISE_SREG, NFT_REG_1)
            .be32(NFTA_BITWISE_DREG, NFT_REG_1)
            .be32(NFTA_BITWISE_LEN, mask.len() as u32)
            .nest(NFTA_BITWISE_MASK, |d| value_data(d, mask))
            .nest(NFTA_BITWISE_XOR, |d| value_data(d, &vec![0; mask.len()]));
    });
}

/// Host to network order of `len` bytes in elements of `size` bytes, in place in reg 1.
pub(crate) fn byteorder_hton(l: &mut Attrs<'_>, len: u32, size: u32) {
    expr(l, "byteorder", |a| {
        a.be32(NFTA_BYTEORDER_SREG, NFT_REG_1)
            .be32(NFTA_BYTEORDER_DREG, NFT_REG_1)
            .be32(NFTA_BYTEORDER_OP, NFT_BYTEORDER_HTON)
            .be32(NFTA_BYTEORDER_LEN, len)
            .be32(NFTA_BYTEORDER_SIZE, size);
    });
}

/// The rule's verdict (`accept`, `jump c`, …).
pub(crate) fn immediate_verdict(l: &mut Attrs<'_>, v: &Verdict) {
    expr(l, "immediate", |a| {
        a.be32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT)
            .nest(NFTA_IMMEDIATE_DATA, |d| verdict_data(d, v));
    });
}

/// `limit rate N/second` (packets, default burst).
pub(crate) fn limit_per_second(l: &mut Attrs<'_>, rate: u32) {
    expr(l, "limit", |a| {
        a.bytes(NFTA_LIMIT_RATE, &u64::from(rate).to_be_bytes())
            .bytes(NFTA_LIMIT_UNIT, &LIMIT_UNIT_SECOND.to_be_bytes())
            .be32(NFTA_LIMIT_BURST, LIMIT_DEFAULT_BURST)
            .be32(NFTA_LIMIT_TYPE, 0)
            .be32(NFTA_LIMIT_FLAGS, 0);
    });
}

pub(crate) fn log_prefix(l: &mut Attrs<'_>, prefix: &str) {
    expr(l, "log", |a| {
        a.str(NFTA_LOG_PREFIX, prefix);
    });
}

/// A counter with no initial values (the kernel starts it at zero).
pub(crate) fn counter(l: &mut Attrs<'_>) {
    expr(l, "counter", |_| {});
}
