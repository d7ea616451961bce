//! What weftd's policy table holds, read over netlink (weft-nft's element dumps), never by
//! running `nft`: which peer sets hold an address, and which class chain an isolated pod's
//! address jumps to. Every function works in the namespace of the calling thread.

use std::collections::BTreeMap;
use std::net::IpAddr;

use weft_nft::counters;
use weft_policy::plan::{Family, SetName};

use crate::bench::error::{BenchError, Result};

/// weftd's policy table (`inet weft_policy`).
pub const TABLE: &str = "weft_policy";

fn nft_err(what: String) -> impl FnOnce(weft_nft::Error) -> BenchError {
    move |e| BenchError::Unexpected {
        what,
        detail: e.to_string(),
    }
}

/// Every address held by the table's peer sets (pod peers' sets), with the sets holding it.
pub fn peer_sets() -> Result<BTreeMap<IpAddr, Vec<String>>> {
    let names = counters::set_names(TABLE).map_err(nft_err("listing the policy sets".into()))?;
    let mut out: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
    for set in names.into_iter().filter(|n| is_peer_set(n)) {
        let elems = counters::elements(TABLE, &set)
            .map_err(nft_err(format!("listing the elements of {set}")))?;
        for e in elems {
            if let Some(a) = e.address() {
                out.entry(a).or_default().push(set.clone());
            }
        }
    }
    Ok(out)
}

/// A set of pod addresses: a pod peer's, `pp_<h>4` / `pp_<h>6` (shared by the table's
/// atoms), or a union atom's, `pu_<h>4` / `pu_<h>6` (`pn_`/`nu_` interval sets hold
/// ipBlocks, which this world has none of).
fn is_peer_set(name: &str) -> bool {
    matches!(name.parse(), Ok(SetName::Peer(p, _)) if p.kind().holds_pods())
}

/// Whether `set` holds `addr` (one dump of that set).
pub fn set_has(set: &str, addr: IpAddr) -> Result<bool> {
    Ok(counters::elements(TABLE, set)
        .map_err(nft_err(format!("listing the elements of {set}")))?
        .iter()
        .any(|e| e.address() == Some(addr)))
}

/// The class chain an isolated local pod's address jumps to for its ingress (the `in4` /
/// `in6` verdict map); None when the pod is not isolated for ingress.
pub fn ingress_class(addr: IpAddr) -> Result<Option<String>> {
    let family = if addr.is_ipv4() {
        Family::V4
    } else {
        Family::V6
    };
    let map = SetName::PodMap(weft_policy::Direction::Ingress, family).to_string();
    Ok(counters::elements(TABLE, &map)
        .map_err(nft_err(format!("listing the elements of {map}")))?
        .into_iter()
        .find(|e| e.address() == Some(addr))
        .and_then(|e| e.jump))
}
