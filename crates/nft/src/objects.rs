//! Sets, verdict maps, regular chains and their rules in a [`TableBatch`]: what a policy
//! edit creates (a class's port map, an atom's chain and peer sets) and what it deletes.
//!
//! Only regular (non-base) chains and the closed list of rule shapes in [`Rule`] are
//! supported; base chains with hooks, tables and anything else stay with `nft -f`. Every
//! message mirrors `nft --debug=mnl` of nftables 1.0.6 for the same command, including the
//! set userdata (key byte order, concatenation typeof) that `nft list` needs to print the set
//! as nft declared it, so a table built here lists like one built by `nft -f`. As with
//! elements, references to a set created in the same batch carry its batch-local id.

use crate::TableBatch;
use crate::expr::{
    self, Lookup, NFT_CMP_EQ, NFT_META_L4PROTO, NFT_META_NFPROTO, NFT_PAYLOAD_NETWORK_HEADER,
    NFT_PAYLOAD_TRANSPORT_HEADER, NFT_REG_1, NFT_REG_VERDICT, NFT_REG32_01, Verdict,
};
use crate::nl::{Attrs, NLM_F_APPEND, NLM_F_CREATE, Op};

const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DATA_TYPE: u16 = 6;
const NFTA_SET_DATA_LEN: u16 = 7;
const NFTA_SET_DESC: u16 = 9;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_USERDATA: u16 = 13;
const NFTA_SET_EXPR: u16 = 17;
const NFTA_SET_DESC_CONCAT: u16 = 2;
const NFTA_SET_FIELD_LEN: u16 = 1;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;

const NFT_SET_INTERVAL: u32 = 0x4;
const NFT_SET_MAP: u32 = 0x8;
const NFT_SET_CONCAT: u32 = 0x80;
/// nft's data type of verdict-map values (`NFT_DATA_VERDICT`), with data length 0.
const NFT_DATA_VERDICT: u32 = 0xffff_ff00;

/// The kernel's `NF_LOG_PREFIXLEN` (128) less the NUL.
const MAX_LOG_PREFIX: usize = 127;

/// nft datatype ids, and how nft numbers a concatenation (`a << 6 | b`).
const TYPE_IPV4_ADDR: u32 = 7;
const TYPE_IPV6_ADDR: u32 = 8;
const TYPE_INET_PROTO: u32 = 12;
const TYPE_INET_SERVICE: u32 = 13;
const TYPE_BITS: u32 = 6;

// Set userdata records (libnftnl NFTNL_UDATA_SET_*), as nft 1.0.6 writes them.
/// KEYBYTEORDER = big endian (single address keys): `nft list` prints addresses.
const UDATA_KEY_BIG_ENDIAN: [u8; 6] = [0x00, 0x04, 0x02, 0x00, 0x00, 0x00];
/// KEYBYTEORDER = 0 (concatenations carry their fields' order in the typeof below).
const UDATA_KEY_ORDER_NONE: [u8; 6] = [0x00, 0x04, 0x00, 0x00, 0x00, 0x00];
/// DATABYTEORDER = 0 (verdict maps).
const UDATA_DATA_ORDER_NONE: [u8; 6] = [0x01, 0x04, 0x00, 0x00, 0x00, 0x00];
/// The record nft 1.0.6 writes for every concatenated `type` key (copied byte for byte).
const UDATA_CONCAT: [u8; 10] = [0x03, 0x08, 0x00, 0x04, 0x0d, 0x00, 0x00, 0x00, 0x01, 0x00];
/// DATA_INTERVAL = 0 (verdict maps).
const UDATA_DATA_INTERVAL_OFF: [u8; 6] = [0x06, 0x04, 0x00, 0x00, 0x00, 0x00];

/// The key type of a set: the ones weft's policy table uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    /// `ipv4_addr`
    Ipv4,
    /// `ipv6_addr`
    Ipv6,
    /// `ipv4_addr . ipv4_addr`
    Ipv4Pair,
    /// `ipv6_addr . ipv6_addr`
    Ipv6Pair,
    /// `inet_proto . inet_service`
    ProtoPort,
}

impl KeyType {
    /// Field types and their lengths before padding.
    fn fields(self) -> &'static [(u32, u32)] {
        match self {
            KeyType::Ipv4 => &[(TYPE_IPV4_ADDR, 4)],
            KeyType::Ipv6 => &[(TYPE_IPV6_ADDR, 16)],
            KeyType::Ipv4Pair => &[(TYPE_IPV4_ADDR, 4), (TYPE_IPV4_ADDR, 4)],
            KeyType::Ipv6Pair => &[(TYPE_IPV6_ADDR, 16), (TYPE_IPV6_ADDR, 16)],
            KeyType::ProtoPort => &[(TYPE_INET_PROTO, 1), (TYPE_INET_SERVICE, 2)],
        }
    }

    fn is_concat(self) -> bool {
        self.fields().len() > 1
    }

    fn type_id(self) -> u32 {
        self.fields()
            .iter()
            .fold(0, |acc, (t, _)| (acc << TYPE_BITS) | t)
    }

    /// Key length in the kernel: each field padded to 4 bytes.
    fn len(self) -> u32 {
        self.fields().iter().map(|(_, l)| l.div_ceil(4) * 4).sum()
    }
}

/// A set or verdict map to create (`add set` / `add map … : verdict`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetSpec {
    pub key: KeyType,
    /// `flags interval`
    pub interval: bool,
    /// A verdict map: every element maps to a verdict.
    pub verdict_map: bool,
    /// `counter;`: every element gets its own packet/byte counter.
    pub counter: bool,
}

impl SetSpec {
    fn flags(&self) -> u32 {
        let mut f = 0;
        if self.interval {
            f |= NFT_SET_INTERVAL;
            // The pipapo backend: nft marks interval concatenations only.
            if self.key.is_concat() {
                f |= NFT_SET_CONCAT;
            }
        }
        if self.verdict_map {
            f |= NFT_SET_MAP;
        }
        f
    }

    fn userdata(&self) -> Vec<u8> {
        let mut u = Vec::with_capacity(28);
        if self.key.is_concat() {
            u.extend_from_slice(&UDATA_KEY_ORDER_NONE);
        } else {
            u.extend_from_slice(&UDATA_KEY_BIG_ENDIAN);
        }
        if self.verdict_map {
            u.extend_from_slice(&UDATA_DATA_ORDER_NONE);
        }
        if self.key.is_concat() {
            u.extend_from_slice(&UDATA_CONCAT);
        }
        if self.verdict_map {
            u.extend_from_slice(&UDATA_DATA_INTERVAL_OFF);
        }
        u
    }
}

/// Source or destination address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Saddr,
    Daddr,
}

/// The rules of weft's regular chains (a closed list, each encoded as nft compiles it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rule {
    /// `ip saddr @set <verdict>` (`v6`: `ip6 …`): in an `inet` table nft first checks the
    /// family (`meta nfproto`), then loads the address and looks it up.
    AddrIn {
        v6: bool,
        field: Field,
        set: String,
        verdict: Verdict,
    },
    /// `meta l4proto . th dport vmap @map`
    PortVmap { map: String },
    /// `limit rate N/second log prefix "…"` (no verdict: the packet goes on).
    Log { prefix: String, per_second: u32 },
    /// `counter drop`
    CounterDrop,
}

impl TableBatch {
    /// `add set` (or `add map … : verdict`): a new empty set. Adding an identical existing
    /// set is no error for the kernel (no `NLM_F_EXCL`, as `nft add`).
    pub fn add_set(&mut self, name: &str, spec: &SetSpec) -> &mut Self {
        if !self.check_set(name) {
            return self;
        }
        let id = self.new_set_id(name);
        let ctx = format!("table inet {} set {name}: add set", self.table);
        let table = self.table.as_str();
        self.batch.msg(Op::NewSet, NLM_F_CREATE, ctx, |a| {
            a.str(NFTA_SET_TABLE, table)
                .str(NFTA_SET_NAME, name)
                .be32(NFTA_SET_FLAGS, spec.flags())
                .be32(NFTA_SET_KEY_TYPE, spec.key.type_id())
                .be32(NFTA_SET_KEY_LEN, spec.key.len());
            if spec.verdict_map {
                a.be32(NFTA_SET_DATA_TYPE, NFT_DATA_VERDICT)
                    .be32(NFTA_SET_DATA_LEN, 0);
            }
            a.be32(NFTA_SET_ID, id);
            // The pipapo backend needs each field's length.
            if spec.interval && spec.key.is_concat() {
                a.nest(NFTA_SET_DESC, |d| {
                    d.nest(NFTA_SET_DESC_CONCAT, |c| {
                        for (_, len) in spec.key.fields() {
                            c.nest(NFTA_LIST_ELEM, |f| {
                                f.be32(NFTA_SET_FIELD_LEN, *len);
                            });
                        }
                    });
                });
            }
            a.bytes(NFTA_SET_USERDATA, &spec.userdata());
            if spec.counter {
                a.nest(NFTA_SET_EXPR, |e| {
                    e.str(NFTA_EXPR_NAME, "counter")
                        .nest(NFTA_EXPR_DATA, |_| {});
                });
            }
        });
        self
    }

    /// `delete set` / `delete map`: the kernel refuses (`EBUSY`) while a rule uses it.
    pub fn delete_set(&mut self, name: &str) -> &mut Self {
        if !self.check_set(name) {
            return self;
        }
        self.named(
            Op::DelSet,
            0,
            ("set", "delete"),
            (NFTA_SET_TABLE, NFTA_SET_NAME),
            name,
        );
        self
    }

    /// `add chain` for a regular chain (no hook): reached only by jumps and gotos.
    pub fn add_chain(&mut self, name: &str) -> &mut Self {
        if !self.check_chain(name) {
            return self;
        }
        let attrs = (NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME);
        self.named(Op::NewChain, NLM_F_CREATE, ("chain", "add"), attrs, name);
        self
    }

    /// `delete chain`, with its rules: the kernel refuses (`EBUSY`) while anything jumps to
    /// it (a rule or a verdict-map element).
    pub fn delete_chain(&mut self, name: &str) -> &mut Self {
        if !self.check_chain(name) {
            return self;
        }
        let attrs = (NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME);
        self.named(Op::DelChain, 0, ("chain", "delete"), attrs, name);
        self
    }

    /// A message that only names the table and one object: `(kind, verb)` for the error
    /// context, `(table, name)` the attribute numbers.
    fn named(
        &mut self,
        op: Op,
        flags: u16,
        (kind, verb): (&str, &str),
        (table_attr, name_attr): (u16, u16),
        name: &str,
    ) {
        let ctx = format!("table inet {} {kind} {name}: {verb} {kind}", self.table);
        let table = self.table.as_str();
        self.batch.msg(op, flags, ctx, |a| {
            a.str(table_attr, table).str(name_attr, name);
        });
    }

    /// `add rule`: append `rule` to `chain`.
    pub fn add_rule(&mut self, chain: &str, rule: &Rule) -> &mut Self {
        if !self.check_chain(chain) {
            return self;
        }
        let (set, verdict) = match rule {
            Rule::AddrIn { set, verdict, .. } => (Some(set.as_str()), Some(verdict)),
            Rule::PortVmap { map } => (Some(map.as_str()), None),
            Rule::Log { .. } | Rule::CounterDrop => (None, None),
        };
        if let Some(s) = set
            && !self.check_set(s)
        {
            return self;
        }
        if let Some(c) = verdict.and_then(Verdict::chain)
            && !self.check_chain(c)
        {
            return self;
        }
        if let Rule::Log { prefix, .. } = rule
            && (prefix.len() > MAX_LOG_PREFIX || prefix.contains('\0'))
        {
            self.invalid
                .get_or_insert_with(|| crate::Error::InvalidLogPrefix {
                    table: self.table.clone(),
                    chain: chain.to_string(),
                    prefix: prefix.clone(),
                });
            return self;
        }
        let set_id = set.and_then(|s| self.set_id(s));
        let ctx = format!(
            "table inet {} chain {chain}: add rule {}",
            self.table,
            describe(rule)
        );
        let table = self.table.as_str();
        self.batch
            .msg(Op::NewRule, NLM_F_CREATE | NLM_F_APPEND, ctx, |a| {
                a.str(NFTA_RULE_TABLE, table)
                    .str(NFTA_RULE_CHAIN, chain)
                    .nest(NFTA_RULE_EXPRESSIONS, |l| encode_rule(l, rule, set_id));
            });
        self
    }
}

/// The rule as nft would print it, for error reports.
fn describe(rule: &Rule) -> String {
    match rule {
        Rule::AddrIn {
            v6,
            field,
            set,
            verdict,
        } => format!(
            "{} {} @{set} {verdict:?}",
            if *v6 { "ip6" } else { "ip" },
            match field {
                Field::Saddr => "saddr",
                Field::Daddr => "daddr",
            }
        ),
        Rule::PortVmap { map } => format!("meta l4proto . th dport vmap @{map}"),
        Rule::Log { prefix, per_second } => {
            format!("limit rate {per_second}/second log prefix {prefix:?}")
        }
        Rule::CounterDrop => "counter drop".into(),
    }
}

fn encode_rule(l: &mut Attrs<'_>, rule: &Rule, set_id: Option<u32>) {
    match rule {
        Rule::AddrIn {
            v6,
            field,
            set,
            verdict,
        } => {
            let (nfproto, offset, len) = match (v6, field) {
                (false, Field::Saddr) => (libc::NFPROTO_IPV4, 12, 4),
                (false, Field::Daddr) => (libc::NFPROTO_IPV4, 16, 4),
                (true, Field::Saddr) => (libc::NFPROTO_IPV6, 8, 16),
                (true, Field::Daddr) => (libc::NFPROTO_IPV6, 24, 16),
            };
            expr::meta(l, NFT_META_NFPROTO, NFT_REG_1);
            expr::cmp(l, NFT_CMP_EQ, &[nfproto as u8]);
            expr::payload(l, NFT_REG_1, NFT_PAYLOAD_NETWORK_HEADER, offset, len);
            expr::lookup(
                l,
                &Lookup {
                    set,
                    set_id,
                    dreg: None,
                    inverted: false,
                },
            );
            expr::immediate_verdict(l, verdict);
        }
        Rule::PortVmap { map } => {
            // nft 1.0.6 converts the 1-byte protocol as if it were a 2-byte host-order
            // field; the result is the same byte, and we mirror it to list identically.
            expr::meta(l, NFT_META_L4PROTO, NFT_REG_1);
            expr::byteorder_hton(l, 1, 2);
            // th dport: transport header offset 2, into the concatenation's second field.
            expr::payload(l, NFT_REG32_01, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2);
            expr::lookup(
                l,
                &Lookup {
                    set: map,
                    set_id,
                    dreg: Some(NFT_REG_VERDICT),
                    inverted: false,
                },
            );
        }
        Rule::Log { prefix, per_second } => {
            expr::limit_per_second(l, *per_second);
            expr::log_prefix(l, prefix);
        }
        Rule::CounterDrop => {
            expr::counter(l);
            expr::immediate_verdict(l, &Verdict::Drop);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testbytes::{hex, msgs};

    const T: &str = "0e000100 6e66746f 626a6361 70000000";

    /// The six sets of the captures below, on table `nftobjcap`.
    fn six_sets() -> TableBatch {
        let spec = |key, interval, verdict_map, counter| SetSpec {
            key,
            interval,
            verdict_map,
            counter,
        };
        let mut b = TableBatch::new("nftobjcap");
        b.add_set("a4", &spec(KeyType::Ipv4, false, false, false))
            .add_set("n6", &spec(KeyType::Ipv6, true, false, false))
            .add_set("pm", &spec(KeyType::ProtoPort, true, true, false))
            .add_set("p6", &spec(KeyType::Ipv6Pair, false, false, false))
            .add_set("c4", &spec(KeyType::Ipv4, false, false, true))
            .add_set("m6", &spec(KeyType::Ipv6, false, true, false));
        b
    }

    /// `nft --debug=mnl -f` (nftables 1.0.6) of, on a fresh table `inet nftobjcap`:
    ///
    /// ```text
    /// add set inet nftobjcap a4 { type ipv4_addr; }
    /// add set inet nftobjcap n6 { type ipv6_addr; flags interval; }
    /// add map inet nftobjcap pm { type inet_proto . inet_service : verdict; flags interval; }
    /// add set inet nftobjcap p6 { type ipv6_addr . ipv6_addr; }
    /// add set inet nftobjcap c4 { type ipv4_addr; counter; }
    /// add map inet nftobjcap m6 { type ipv6_addr : verdict; }
    /// ```
    #[test]
    fn sets_match_nft() {
        let nft = [
            "07000200 61340000 08000300 00000000 08000400 00000007 08000500 00000004
             08000a00 00000001 0a000d00 00040200 00000000",
            "07000200 6e360000 08000300 00000004 08000400 00000008 08000500 00000010
             08000a00 00000002 0a000d00 00040200 00000000",
            "07000200 706d0000 08000300 0000008c 08000400 0000030d 08000500 00000008
             08000600 ffffff00 08000700 00000000 08000a00 00000003 20000980 1c000280
             0c000180 08000100 00000001 0c000180 08000100 00000002 20000d00 00040000
             00000104 00000000 03080004 0d000000 01000604 00000000",
            "07000200 70360000 08000300 00000000 08000400 00000208 08000500 00000020
             08000a00 00000004 14000d00 00040000 00000308 00040d00 00000100",
            "07000200 63340000 08000300 00000000 08000400 00000007 08000500 00000004
             08000a00 00000005 0a000d00 00040200 00000000 14001180 0c000100 636f756e
             74657200 04000280",
            "07000200 6d360000 08000300 00000008 08000400 00000008 08000500 00000010
             08000600 ffffff00 08000700 00000000 08000a00 00000006 16000d00 00040200
             00000104 00000000 06040000 00000000",
        ];
        let b = six_sets();
        let got = msgs(&b);
        assert_eq!(got.len(), nft.len());
        for (i, (g, n)) in got.iter().zip(nft).enumerate() {
            assert_eq!(*g, hex(&format!("{T} {n}")), "set message {i}");
        }
    }

    /// The same capture, continued (sets above have ids 1..6):
    ///
    /// ```text
    /// add chain inet nftobjcap c1
    /// add rule inet nftobjcap c1 ip saddr @a4 accept
    /// add rule inet nftobjcap c1 ip6 daddr @n6 goto tgt
    /// add rule inet nftobjcap c1 ip daddr @c4 jump tgt
    /// add rule inet nftobjcap c1 meta l4proto . th dport vmap @pm
    /// add rule inet nftobjcap c1 limit rate 10/second log prefix "weft deny ci_x: "
    /// add rule inet nftobjcap c1 ip saddr @a4 return
    /// add rule inet nftobjcap c1 counter drop
    /// delete chain inet nftobjcap c1
    /// delete map inet nftobjcap pm
    /// ```
    #[test]
    fn chain_rules_and_deletes_match_nft() {
        let meta_cmp = |proto: &str| {
            format!(
                "24000180 09000100 6d657461 00000000 14000280 08000200 0000000f 08000100
                 00000001 2c000180 08000100 636d7000 20000280 08000100 00000001 08000200
                 00000000 0c000380 05000100 {proto}000000"
            )
        };
        let payload = |off: &str, len: &str| {
            format!(
                "34000180 0c000100 7061796c 6f616400 24000280 08000100 00000001 08000200
                 00000001 08000300 000000{off} 08000400 000000{len}"
            )
        };
        let lookup = |set: &str, id: &str| {
            format!(
                "2c000180 0b000100 6c6f6f6b 75700000 1c000280 08000200 00000001 07000100
                 {set}0000 08000400 000000{id}"
            )
        };
        let imm = |code: &str| {
            format!(
                "30000180 0e000100 696d6d65 64696174 65000000 1c000280 08000100 00000000
                 10000280 0c000280 08000100 {code}"
            )
        };
        let imm_tgt = |code: &str| {
            format!(
                "38000180 0e000100 696d6d65 64696174 65000000 24000280 08000100 00000000
                 18000280 14000280 08000100 {code} 08000200 74677400"
            )
        };
        let rule = |len: &str, exprs: String| format!("{T} 07000200 63310000 {len}000480 {exprs}");
        let nft = [
            format!("{T} 07000300 63310000"),
            rule(
                "e4",
                meta_cmp("02") + &payload("0c", "04") + &lookup("6134", "01") + &imm("00000001"),
            ),
            rule(
                "ec",
                meta_cmp("0a")
                    + &payload("18", "10")
                    + &lookup("6e36", "02")
                    + &imm_tgt("fffffffc"),
            ),
            rule(
                "ec",
                meta_cmp("02")
                    + &payload("10", "04")
                    + &lookup("6334", "05")
                    + &imm_tgt("fffffffd"),
            ),
            rule(
                "d0",
                "24000180 09000100 6d657461 00000000 14000280 08000200 00000010 08000100
                 00000001 40000180 0e000100 62797465 6f726465 72000000 2c000280 08000100
                 00000001 08000200 00000001 08000300 00000001 08000400 00000001 08000500
                 00000002 34000180 0c000100 7061796c 6f616400 24000280 08000100 00000009
                 08000200 00000002 08000300 00000002 08000400 00000002 34000180 0b000100
                 6c6f6f6b 75700000 24000280 08000200 00000001 08000300 00000000 07000100
                 706d0000 08000400 00000003"
                    .into(),
            ),
            rule(
                "70",
                "44000180 0a000100 6c696d69 74000000 34000280 0c000100 00000000 0000000a
                 0c000200 00000000 00000001 08000300 00000005 08000400 00000000 08000500
                 00000000 28000180 08000100 6c6f6700 1c000280 15000200 77656674 2064656e
                 79206369 5f783a20 00000000"
                    .into(),
            ),
            rule(
                "e4",
                meta_cmp("02") + &payload("0c", "04") + &lookup("6134", "01") + &imm("fffffffb"),
            ),
            rule(
                "48",
                "14000180 0c000100 636f756e 74657200 04000280 30000180 0e000100 696d6d65
                 64696174 65000000 1c000280 08000100 00000000 10000280 0c000280 08000100
                 00000000"
                    .into(),
            ),
            format!("{T} 07000300 63310000"),
            format!("{T} 07000200 706d0000"),
        ];
        let mut b = six_sets();
        let addr = |v6, field, set: &str, verdict| Rule::AddrIn {
            v6,
            field,
            set: set.into(),
            verdict,
        };
        let tgt = || "tgt".to_string();
        b.add_chain("c1")
            .add_rule("c1", &addr(false, Field::Saddr, "a4", Verdict::Accept))
            .add_rule("c1", &addr(true, Field::Daddr, "n6", Verdict::Goto(tgt())))
            .add_rule("c1", &addr(false, Field::Daddr, "c4", Verdict::Jump(tgt())))
            .add_rule("c1", &Rule::PortVmap { map: "pm".into() })
            .add_rule(
                "c1",
                &Rule::Log {
                    prefix: "weft deny ci_x: ".into(),
                    per_second: 10,
                },
            )
            .add_rule("c1", &addr(false, Field::Saddr, "a4", Verdict::Return))
            .add_rule("c1", &Rule::CounterDrop)
            .delete_chain("c1")
            .delete_set("pm");
        let got = msgs(&b);
        let got = &got[6..];
        assert_eq!(got.len(), nft.len());
        for (i, (g, n)) in got.iter().zip(&nft).enumerate() {
            assert_eq!(*g, hex(n), "message {i}");
        }
    }

    #[test]
    fn overlong_log_prefix_fails_at_commit() {
        let mut b = TableBatch::new("t");
        b.add_chain("c").add_rule(
            "c",
            &Rule::Log {
                prefix: "x".repeat(128),
                per_second: 1,
            },
        );
        assert!(matches!(
            b.commit(),
            Err(crate::Error::InvalidLogPrefix { .. })
        ));
    }

    #[test]
    fn bad_chain_names_fail_at_commit() {
        let mut b = TableBatch::new("t");
        b.add_rule(
            "c",
            &Rule::AddrIn {
                v6: false,
                field: Field::Saddr,
                set: "s".into(),
                verdict: Verdict::Jump(String::new()),
            },
        );
        assert!(matches!(
            b.commit(),
            Err(crate::Error::InvalidChainName { .. })
        ));
    }
}
