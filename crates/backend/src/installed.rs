//! What weft has installed in the kernel, entry by entry, and who it is for.
//!
//! One map covers routes (keyed by destination), neighbour entries on `weft.vx` (keyed by
//! IP) and FDB entries on `weft.vx` (keyed by MAC): the kernel itself keeps one of each per
//! key, so a write with replace semantics moves an entry instead of duplicating it. It is
//! filled from dumps in `open`/`resync` (entries without an owner yet) and kept current by
//! every write and delete, so a peer's change is a lookup here, not a kernel dump.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use weft_net::{Handle, Route};

use crate::RTPROT_WEFT;
use crate::error::Error;

/// Variant order is deletion order: routes go before the entries they resolve through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Key {
    Route(IpNet),
    Neigh(IpAddr),
    Fdb([u8; 6]),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Value {
    Route {
        gateway: Option<IpAddr>,
        oif: Option<u32>,
        onlink: bool,
    },
    /// Permanent `ip -> mac` on device `dev`.
    Neigh { dev: u32, mac: [u8; 6] },
    /// Permanent `mac -> dst` on device `dev`.
    Fdb { dev: u32, dst: IpAddr },
}

#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub value: Value,
    /// A route's metric when read from the kernel; `None` for what weft wrote (the
    /// kernel's default metric).
    pub metric: Option<u32>,
    /// The peer this entry is for; `None` when read back and not yet claimed.
    pub owner: Option<Arc<str>>,
}

impl Slot {
    /// The kernel entry is exactly `value` at the default metric (what a write produces).
    pub fn is(&self, value: &Value) -> bool {
        self.value == *value && self.at_default_metric()
    }

    fn at_default_metric(&self) -> bool {
        match (self.metric, self.value) {
            (None | Some(0), _) => true,
            // An IPv6 route added without a metric gets 1024.
            (Some(m), Value::Route { .. }) => m == 1024,
            _ => false,
        }
    }
}

/// An entry that cannot have a slot: a second kernel entry under a key already taken
/// (another metric, another FDB remote). Only ever deleted.
#[derive(Debug, Clone)]
pub(crate) struct Extra {
    pub key: Key,
    pub value: Value,
    pub metric: Option<u32>,
}

#[derive(Debug, Default)]
pub(crate) struct Installed {
    pub slots: HashMap<Key, Slot>,
    pub extras: Vec<Extra>,
}

impl Installed {
    /// Reads weft's entries: routes carrying [`RTPROT_WEFT`], permanent neighbour entries
    /// and FDB entries on `vx`. Five dumps, whatever the number of peers.
    pub fn load(h: &mut Handle, vx: Option<u32>) -> Result<Installed, Error> {
        let mut me = Installed::default();
        for v6 in [false, true] {
            let routes = h
                .routes_by_protocol(v6, RTPROT_WEFT)
                .map_err(Error::net("reading weft's routes"))?;
            for r in routes {
                let value = Value::Route {
                    gateway: r.gateway,
                    oif: r.oif,
                    onlink: r.onlink,
                };
                me.load_one(Key::Route(r.dst), value, r.metric);
            }
        }
        let Some(vx) = vx else {
            return Ok(me);
        };
        for v6 in [false, true] {
            let neighs = h
                .neighbours(vx, v6)
                .map_err(Error::net("reading neighbour entries on weft.vx"))?;
            for n in neighs.into_iter().filter(|n| n.is_permanent()) {
                if let Some(mac) = n.mac {
                    me.load_one(Key::Neigh(n.ip), Value::Neigh { dev: vx, mac }, None);
                }
            }
        }
        let fdb = h
            .fdb_entries(vx)
            .map_err(Error::net("reading FDB entries on weft.vx"))?;
        for e in fdb {
            if let Some(dst) = e.dst {
                me.load_one(Key::Fdb(e.mac), Value::Fdb { dev: vx, dst }, None);
            }
        }
        Ok(me)
    }

    fn load_one(&mut self, key: Key, value: Value, metric: Option<u32>) {
        let slot = Slot {
            value,
            metric,
            owner: None,
        };
        match self.slots.get_mut(&key) {
            None => {
                self.slots.insert(key, slot);
            }
            Some(old) => {
                // The slot keeps the entry a write would leave; the other is surplus.
                let surplus = if !old.at_default_metric() && slot.at_default_metric() {
                    std::mem::replace(old, slot)
                } else {
                    slot
                };
                self.extras.push(Extra {
                    key,
                    value: surplus.value,
                    metric: surplus.metric,
                });
            }
        }
    }
}

/// Writes one entry with replace semantics (creates it or moves it to the new value).
pub(crate) fn write(h: &mut Handle, key: Key, value: Value) -> Result<(), weft_net::Error> {
    match (key, value) {
        (
            Key::Route(dst),
            Value::Route {
                gateway,
                oif,
                onlink,
            },
        ) => {
            let mut r = Route::new(dst).protocol(RTPROT_WEFT);
            r.gateway = gateway;
            r.oif = oif;
            r.onlink = onlink;
            h.route_replace(&r)
        }
        (Key::Neigh(ip), Value::Neigh { dev, mac }) => h.neigh_add(dev, ip, mac),
        (Key::Fdb(mac), Value::Fdb { dev, dst }) => h.fdb_add(dev, mac, dst),
        _ => Err(weft_net::Error::Invalid(format!(
            "internal: {key:?} cannot hold {value:?}"
        ))),
    }
}

/// Deletes one entry; an entry already gone is not an error.
pub(crate) fn delete(
    h: &mut Handle,
    key: Key,
    value: Value,
    metric: Option<u32>,
) -> Result<(), weft_net::Error> {
    let done = match (key, value) {
        (Key::Route(dst), _) => {
            let mut r = Route::new(dst).protocol(RTPROT_WEFT);
            r.metric = metric;
            h.route_del(&r)
        }
        (Key::Neigh(ip), Value::Neigh { dev, .. }) => h.neigh_del(dev, ip),
        (Key::Fdb(mac), Value::Fdb { dev, dst }) => h.fdb_del(dev, mac, dst),
        _ => Err(weft_net::Error::Invalid(format!(
            "internal: {key:?} cannot hold {value:?}"
        ))),
    };
    match done {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

/// How an entry reads in an error message.
pub(crate) fn describe(key: Key, value: Value) -> String {
    match (key, value) {
        (Key::Route(dst), Value::Route { gateway, .. }) => match gateway {
            Some(gw) => format!("route {dst} via {gw}"),
            None => format!("route {dst}"),
        },
        (Key::Neigh(ip), Value::Neigh { mac, .. }) => {
            format!("neighbour {ip} lladdr {}", weft_net::format_mac(mac))
        }
        (Key::Fdb(mac), Value::Fdb { dst, .. }) => {
            format!("fdb {} dst {dst}", weft_net::format_mac(mac))
        }
        (key, _) => format!("{key:?}"),
    }
}
