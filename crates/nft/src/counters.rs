//! Reading counters back from an `inet` table over netlink: the packets of the rules that
//! count and drop, per chain, and the per-element counters of a set. One dump per question,
//! no `nft` process and no JSON: `nft -j list table` on a 10,000-rule policy table costs
//! seconds of CPU, most of it printing what the caller then throws away.
//!
//! Reads only; a table or set that does not exist is an empty answer, not an error, because
//! the agent asks while its tables come and go. [`elements`] lists a set's keys (and a
//! verdict map's chains) for readers that watch a set change.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use nix::errno::Errno;

use crate::Error;
use crate::expr::{NF_DROP, NFT_REG_VERDICT};
use crate::nl::{Attr, Op, Socket, be32, parse_attrs};

const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
/// One expression attached to an element (the kernel's form when there is exactly one).
const NFTA_SET_ELEM_EXPR: u16 = 7;
/// Several, as a list.
const NFTA_SET_ELEM_EXPRESSIONS: u16 = 11;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;

/// Packets dropped by the rules of `inet <table>` that have a counter and end in `drop`,
/// summed per chain, in the order the chains first appear. Empty if the table is missing.
pub fn drop_counters(table: &str) -> Result<Vec<(String, u64)>, Error> {
    let mut sock = Socket::open()?;
    let mut out: Vec<(String, u64)> = Vec::new();
    let res = sock.dump(
        Op::GetRule,
        &format!("rules of table inet {table}"),
        |a| {
            a.str(NFTA_RULE_TABLE, table);
        },
        |payload| {
            let mut chain = None;
            let mut counted = None;
            let mut drops = false;
            for a in parse_attrs(payload)? {
                match a.ty {
                    NFTA_RULE_CHAIN => chain = Some(text(a.data)),
                    NFTA_RULE_EXPRESSIONS => {
                        for e in list(a.data)? {
                            match expr(e.data)? {
                                ("counter", data) => counted = Some(counter(data)?.0),
                                ("immediate", data) => drops |= is_drop(data)?,
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
            if let (true, Some(packets), Some(chain)) = (drops, counted, chain) {
                match out.iter_mut().find(|(c, _)| *c == chain) {
                    Some((_, n)) => *n += packets,
                    None => out.push((chain, packets)),
                }
            }
            Ok(())
        },
    );
    missing_is_empty(res.map(|()| out))
}

/// The names of the sets (and maps) of `inet <table>`. Empty if the table is missing.
pub fn set_names(table: &str) -> Result<Vec<String>, Error> {
    let mut sock = Socket::open()?;
    let mut out = Vec::new();
    let res = sock.dump(
        Op::GetSet,
        &format!("sets of table inet {table}"),
        |a| {
            a.str(NFTA_SET_TABLE, table);
        },
        |payload| {
            for a in parse_attrs(payload)? {
                if a.ty == NFTA_SET_NAME {
                    out.push(text(a.data));
                }
            }
            Ok(())
        },
    );
    missing_is_empty(res.map(|()| out))
}

/// The elements of an address set with their counters: (address, packets, bytes), for
/// every element that carries a counter. Empty if the table or the set is missing.
pub fn element_counters(table: &str, set: &str) -> Result<Vec<(IpAddr, u64, u64)>, Error> {
    dump_elements(table, set, element)
}

/// Each element of `set` in `inet <table>` read by `read` (`None`: skipped), one dump.
/// Empty if the table or the set is missing.
fn dump_elements<T>(
    table: &str,
    set: &str,
    mut read: impl FnMut(&[u8]) -> Result<Option<T>, Error>,
) -> Result<Vec<T>, Error> {
    let mut sock = Socket::open()?;
    let mut out = Vec::new();
    let res = sock.dump(
        Op::GetSetElem,
        &format!("elements of set {set} in table inet {table}"),
        |a| {
            a.str(NFTA_SET_ELEM_LIST_TABLE, table)
                .str(NFTA_SET_ELEM_LIST_SET, set);
        },
        |payload| {
            for a in parse_attrs(payload)? {
                if a.ty != NFTA_SET_ELEM_LIST_ELEMENTS {
                    continue;
                }
                for el in list(a.data)? {
                    out.extend(read(el.data)?);
                }
            }
            Ok(())
        },
    );
    missing_is_empty(res.map(|()| out))
}

/// One element of a set or map as the kernel holds it: its key and, in a verdict map, the
/// chain it jumps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedElement {
    pub key: Vec<u8>,
    pub jump: Option<String>,
}

impl ListedElement {
    /// The key as an address, when it is one (4 or 16 bytes).
    pub fn address(&self) -> Option<IpAddr> {
        address(&self.key)
    }
}

/// Every element of `set` in `inet <table>`, one dump (for readers that watch a set change:
/// tests and benchmarks). Empty if the table or the set is missing.
pub fn elements(table: &str, set: &str) -> Result<Vec<ListedElement>, Error> {
    dump_elements(table, set, |data| listed(data).map(Some))
}

/// An element's key and verdict chain.
fn listed(data: &[u8]) -> Result<ListedElement, Error> {
    let mut el = ListedElement {
        key: Vec::new(),
        jump: None,
    };
    for a in parse_attrs(data)? {
        match a.ty {
            NFTA_SET_ELEM_KEY => {
                for v in parse_attrs(a.data)? {
                    if v.ty == NFTA_DATA_VALUE {
                        el.key = v.data.to_vec();
                    }
                }
            }
            NFTA_SET_ELEM_DATA => {
                for d in parse_attrs(a.data)? {
                    if d.ty != NFTA_DATA_VERDICT {
                        continue;
                    }
                    for v in parse_attrs(d.data)? {
                        if v.ty == NFTA_VERDICT_CHAIN {
                            el.jump = Some(text(v.data));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(el)
}

fn missing_is_empty<T: Default>(res: Result<T, Error>) -> Result<T, Error> {
    match res {
        Err(e) if e.errno() == Some(Errno::ENOENT) => Ok(T::default()),
        r => r,
    }
}

/// A netlink string attribute, without its NUL.
fn text(data: &[u8]) -> String {
    let end = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    String::from_utf8_lossy(&data[..end]).into_owned()
}

/// The `NFTA_LIST_ELEM` entries of a list attribute.
fn list(data: &[u8]) -> Result<Vec<Attr<'_>>, Error> {
    Ok(parse_attrs(data)?
        .into_iter()
        .filter(|a| a.ty == NFTA_LIST_ELEM)
        .collect())
}

/// An expression's name and its data attribute (empty if it has none).
fn expr(data: &[u8]) -> Result<(&'static str, &[u8]), Error> {
    let mut name = "";
    let mut body: &[u8] = &[];
    for a in parse_attrs(data)? {
        match a.ty {
            NFTA_EXPR_NAME => {
                name = match text(a.data).as_str() {
                    "counter" => "counter",
                    "immediate" => "immediate",
                    _ => "",
                }
            }
            NFTA_EXPR_DATA => body = a.data,
            _ => {}
        }
    }
    Ok((name, body))
}

fn be64(data: &[u8]) -> Result<u64, Error> {
    let b: [u8; 8] = data
        .try_into()
        .map_err(|_| Error::protocol(format!("expected 8-byte u64, got {} bytes", data.len())))?;
    Ok(u64::from_be_bytes(b))
}

/// (packets, bytes) of a counter expression's data.
fn counter(data: &[u8]) -> Result<(u64, u64), Error> {
    let (mut packets, mut bytes) = (None, None);
    for a in parse_attrs(data)? {
        match a.ty {
            NFTA_COUNTER_PACKETS => packets = Some(be64(a.data)?),
            NFTA_COUNTER_BYTES => bytes = Some(be64(a.data)?),
            _ => {}
        }
    }
    match (packets, bytes) {
        (Some(p), Some(b)) => Ok((p, b)),
        _ => Err(Error::protocol("counter without packets or bytes")),
    }
}

/// Whether an immediate expression's data is the verdict `drop`.
fn is_drop(data: &[u8]) -> Result<bool, Error> {
    let mut to_verdict = false;
    let mut code = None;
    for a in parse_attrs(data)? {
        match a.ty {
            NFTA_IMMEDIATE_DREG => to_verdict = be32(a.data)? == NFT_REG_VERDICT,
            NFTA_IMMEDIATE_DATA => {
                for d in parse_attrs(a.data)? {
                    if d.ty != NFTA_DATA_VERDICT {
                        continue;
                    }
                    for v in parse_attrs(d.data)? {
                        if v.ty == NFTA_VERDICT_CODE {
                            code = Some(be32(v.data)? as i32);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(to_verdict && code == Some(NF_DROP))
}

/// One set element: its address key and the counter attached to it, if both are there.
fn element(data: &[u8]) -> Result<Option<(IpAddr, u64, u64)>, Error> {
    let mut addr = None;
    let mut counted = None;
    for a in parse_attrs(data)? {
        match a.ty {
            NFTA_SET_ELEM_KEY => {
                for v in parse_attrs(a.data)? {
                    if v.ty == NFTA_DATA_VALUE {
                        addr = address(v.data);
                    }
                }
            }
            NFTA_SET_ELEM_EXPR => {
                if let ("counter", body) = expr(a.data)? {
                    counted = Some(counter(body)?);
                }
            }
            NFTA_SET_ELEM_EXPRESSIONS => {
                for e in list(a.data)? {
                    if let ("counter", body) = expr(e.data)? {
                        counted = Some(counter(body)?);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(match (addr, counted) {
        (Some(addr), Some((packets, bytes))) => Some((addr, packets, bytes)),
        _ => None,
    })
}

/// A 4- or 16-byte key as an address; other keys are not addresses.
fn address(key: &[u8]) -> Option<IpAddr> {
    if let Ok(b) = <[u8; 4]>::try_from(key) {
        return Some(IpAddr::V4(Ipv4Addr::from(b)));
    }
    <[u8; 16]>::try_from(key)
        .ok()
        .map(|b| IpAddr::V6(Ipv6Addr::from(b)))
}
