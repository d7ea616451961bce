//! `Dataplane`: the backend's state in one network namespace and its public operations.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use ipnet::IpNet;
use weft_net::Handle;

use crate::device;
use crate::error::Error;
use crate::installed::{self, Installed, Key, Value};
use crate::model::{Drift, Kind, Local, Path, Peer};
use crate::plan::{Plan, plan};
use crate::underlay::Underlay;

/// What one peer owns in the kernel.
#[derive(Debug)]
struct PeerState {
    path: Path,
    /// The keys of the entries written for (or claimed by) this peer.
    claims: Vec<Key>,
}

/// Weft's dataplane in the network namespace it was opened in. Keeps one netlink socket
/// for its whole life; not shared between threads, but may move between them (the socket
/// stays bound to the namespace of `open`).
pub struct Dataplane {
    h: Handle,
    kind: Kind,
    local: Local,
    underlay: Underlay,
    /// Index of `weft.vx`; `None` for host-gw.
    vx: Option<u32>,
    installed: Installed,
    peers: HashMap<Arc<str>, PeerState>,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane")
            .field("kind", &self.kind)
            .field("underlay", &self.underlay.name)
            .field("vx", &self.vx)
            .field("peers", &self.peers.len())
            .field("entries", &self.installed.slots.len())
            .finish()
    }
}

impl Dataplane {
    /// Idempotent. Finds the underlay interface (the one holding `underlay_v4`), creates or
    /// adopts the VXLAN device `weft.vx` (one with the same VNI, port, local address,
    /// underlay and MAC is kept untouched, so a restarted agent does not interrupt traffic;
    /// one that differs is recreated), puts the VTEP addresses on it (network address of
    /// the first local block of each family, as /32 and /128) and sets it up. For host-gw
    /// no VXLAN device is needed and a stale one is removed. Then reads what weft already
    /// installed (routes by protocol, FDB and neighbour entries on `weft.vx`), so later
    /// calls write only differences.
    ///
    /// Entries of peers that went away while no agent ran stay until [`Dataplane::resync`];
    /// an agent can call `resync` with its full peer list right after `open` instead of
    /// upserting the peers one by one.
    pub fn open(kind: Kind, local: Local) -> Result<Dataplane, Error> {
        if local.vni > weft_net::vxlan::VNI_MAX {
            return Err(Error::InvalidLocal(format!(
                "VNI {} (at most {})",
                local.vni,
                weft_net::vxlan::VNI_MAX
            )));
        }
        let mut h = Handle::new().map_err(Error::net("opening a netlink socket"))?;
        let underlay = Underlay::find(&mut h, local.underlay_v4)?;
        let mut dp = Dataplane {
            h,
            kind,
            local,
            underlay,
            vx: None,
            installed: Installed::default(),
            peers: HashMap::new(),
        };
        dp.ensure_device()?;
        dp.installed = Installed::load(&mut dp.h, dp.vx)?;
        Ok(dp)
    }

    /// Creates, adopts or (for host-gw) removes `weft.vx`, and sets its VTEP addresses.
    fn ensure_device(&mut self) -> Result<(), Error> {
        match self.kind {
            Kind::HostGw => {
                device::remove(&mut self.h)?;
                self.vx = None;
            }
            Kind::Vxlan | Kind::Auto => {
                let vx = device::ensure(&mut self.h, &self.local, &self.underlay)?;
                device::sync_vtep_addrs(&mut self.h, vx, &self.local.blocks)?;
                self.vx = Some(vx);
            }
        }
        Ok(())
    }

    /// The MTU for pod interfaces: the underlay's, less the VXLAN overhead unless the
    /// backend is host-gw. (Under `auto` some peers are reached without the overlay, but a
    /// pod's MTU cannot depend on where it sends.)
    pub fn pod_mtu(&self) -> u32 {
        match self.kind {
            Kind::HostGw => self.underlay.mtu,
            Kind::Vxlan | Kind::Auto => self.underlay.mtu.saturating_sub(device::VXLAN_OVERHEAD_V4),
        }
    }

    /// The underlay interface's MTU, as read at `open` or the last `resync`.
    pub fn underlay_mtu(&self) -> u32 {
        self.underlay.mtu
    }

    /// This node's blocks changed; the VTEP addresses follow the first block of each
    /// family. Peers are not touched.
    pub fn set_local_blocks(&mut self, blocks: &[IpNet]) -> Result<(), Error> {
        if let Some(vx) = self.vx {
            device::sync_vtep_addrs(&mut self.h, vx, blocks)?;
        }
        self.local.blocks = blocks.to_vec();
        Ok(())
    }

    /// Programs one peer, incrementally: compares with what is installed for it and writes
    /// or deletes only the difference — routes to each of its blocks, and for VXLAN one
    /// permanent neighbour entry (peer VTEP IP -> peer MAC) per family and one permanent
    /// FDB entry (peer MAC -> peer underlay address). Never flushes; an unchanged peer
    /// costs no kernel request.
    ///
    /// host-gw routes: `block via <peer underlay> dev <underlay>` (IPv6 blocks via the
    /// peer's IPv6 underlay address). VXLAN routes: `block via <peer VTEP IP> dev weft.vx
    /// onlink`, the VTEP IP being the network address of the peer's first block of that
    /// family. `auto` takes host-gw when the peer's underlay addresses are on directly
    /// connected subnets of the underlay interface, VXLAN otherwise.
    ///
    /// A peer that cannot be programmed ([`Error::NotOnSegment`] under host-gw,
    /// [`Error::InvalidPeer`]) gets nothing: entries from an earlier upsert are removed.
    pub fn upsert_peer(&mut self, peer: &Peer) -> Result<Path, Error> {
        let planned = plan(self.kind, &self.underlay, self.vx, &self.local.blocks, peer);
        let mut ignored = Drift::default();
        match planned {
            Ok(Plan { path, entries }) => {
                self.converge_peer(&peer.name, path, &entries, true, &mut ignored)?;
                Ok(path)
            }
            Err(e) => {
                self.remove_peer(&peer.name)?;
                Err(e)
            }
        }
    }

    /// Removes everything installed for the peer. Unknown names are fine.
    pub fn remove_peer(&mut self, name: &str) -> Result<(), Error> {
        let Some(path) = self.peers.get(name).map(|s| s.path) else {
            return Ok(());
        };
        let mut ignored = Drift::default();
        self.converge_peer(name, path, &[], false, &mut ignored)
    }

    /// Repairs drift against the kernel: re-reads the underlay, makes sure `weft.vx` is
    /// right (recreating it if it vanished), reads routes with weft's protocol and the FDB
    /// and neighbour entries on `weft.vx`, writes what is missing or wrong for `peers` and
    /// deletes weft entries that belong to no peer in `peers`. Afterwards `peers` is the
    /// complete set of programmed peers.
    ///
    /// A peer that cannot be programmed (a peer error from `upsert_peer`) is skipped; it
    /// was reported when it was upserted. A peer whose entries the kernel refuses does not
    /// stop the others: every other peer and the cleanup are still done, the refused peer's
    /// existing entries are kept, and the result is [`Error::PeersRefused`] naming it.
    pub fn resync(&mut self, peers: &[Peer]) -> Result<Drift, Error> {
        self.underlay = Underlay::find(&mut self.h, self.local.underlay_v4)?;
        self.ensure_device()?;
        self.installed = Installed::load(&mut self.h, self.vx)?;
        self.peers.clear();
        let mut drift = Drift::default();
        let mut refused = Vec::new();
        let mut spared: BTreeSet<Key> = BTreeSet::new();
        for peer in peers {
            let planned = plan(self.kind, &self.underlay, self.vx, &self.local.blocks, peer);
            match planned {
                Ok(Plan { path, entries }) => {
                    if let Err(e) = self.converge_peer(&peer.name, path, &entries, true, &mut drift)
                    {
                        // What it holds already is its, not stray: the next try starts there.
                        spared.extend(entries.iter().map(|(k, _)| *k));
                        refused.push(e.to_string());
                    }
                }
                Err(e) if e.is_peer_error() => {}
                Err(e) => return Err(e),
            }
        }
        let mut orphans: Vec<(Key, Value, Option<u32>)> = self
            .installed
            .slots
            .iter()
            .filter(|(k, s)| s.owner.is_none() && !spared.contains(k))
            .map(|(k, s)| (*k, s.value, s.metric))
            .collect();
        orphans.sort_by_key(|(k, _, _)| *k);
        for (key, value, metric) in orphans {
            installed::delete(&mut self.h, key, value, metric).map_err(|e| Error::Net {
                context: format!("deleting stray {}", installed::describe(key, value)),
                source: e,
            })?;
            self.installed.slots.remove(&key);
            drift.removed += 1;
        }
        while let Some(extra) = self.installed.extras.pop() {
            let done = installed::delete(&mut self.h, extra.key, extra.value, extra.metric);
            if let Err(e) = done {
                let context = format!(
                    "deleting duplicate {}",
                    installed::describe(extra.key, extra.value)
                );
                self.installed.extras.push(extra);
                return Err(Error::Net { context, source: e });
            }
            drift.removed += 1;
        }
        if refused.is_empty() {
            Ok(drift)
        } else {
            Err(Error::PeersRefused { refused, drift })
        }
    }

    /// The names of the programmed peers.
    pub fn peers(&self) -> Vec<String> {
        self.peers.keys().map(|k| k.to_string()).collect()
    }

    /// Makes the kernel hold `desired` for peer `name` and drops what it held beyond that;
    /// counts writes and deletes into `drift`. Make-before-break: new entries are written
    /// before old ones go. The peer's claims stay accurate when a request fails halfway.
    fn converge_peer(
        &mut self,
        name: &str,
        path: Path,
        desired: &[(Key, Value)],
        keep: bool,
        drift: &mut Drift,
    ) -> Result<(), Error> {
        let (owner, mut state) = match self.peers.remove_entry(name) {
            Some(entry) => entry,
            None => (
                Arc::<str>::from(name),
                PeerState {
                    path,
                    claims: Vec::new(),
                },
            ),
        };
        let result = self.converge_claims(&owner, desired, &mut state.claims, drift);
        if result.is_ok() {
            state.path = path;
        }
        // A removed peer is forgotten once it owns nothing; an upserted one stays known
        // even with nothing to own (no blocks yet).
        if (keep && result.is_ok()) || !state.claims.is_empty() {
            self.peers.insert(owner, state);
        }
        result
    }

    fn converge_claims(
        &mut self,
        owner: &Arc<str>,
        desired: &[(Key, Value)],
        claims: &mut Vec<Key>,
        drift: &mut Drift,
    ) -> Result<(), Error> {
        for &(key, value) in desired {
            match self.installed.slots.get_mut(&key) {
                Some(slot) if slot.is(&value) => slot.owner = Some(owner.clone()),
                _ => {
                    installed::write(&mut self.h, key, value).map_err(|e| Error::Net {
                        context: format!("peer {owner}: {}", installed::describe(key, value)),
                        source: e,
                    })?;
                    self.installed.slots.insert(
                        key,
                        installed::Slot {
                            value,
                            metric: None,
                            owner: Some(owner.clone()),
                        },
                    );
                    drift.added += 1;
                }
            }
            if !claims.contains(&key) {
                claims.push(key);
            }
        }
        let mut stale: Vec<Key> = claims
            .iter()
            .filter(|k| !desired.iter().any(|(d, _)| d == *k))
            .copied()
            .collect();
        stale.sort();
        for key in stale {
            let ours = self
                .installed
                .slots
                .get(&key)
                .filter(|s| s.owner.as_deref() == Some(&**owner))
                .map(|s| (s.value, s.metric));
            // An entry another peer took over since (a block that moved) stays.
            if let Some((value, metric)) = ours {
                installed::delete(&mut self.h, key, value, metric).map_err(|e| Error::Net {
                    context: format!("peer {owner}: deleting {}", installed::describe(key, value)),
                    source: e,
                })?;
                self.installed.slots.remove(&key);
                drift.removed += 1;
            }
            claims.retain(|k| *k != key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// weftd moves the dataplane onto its own thread and its errors across threads.
    #[test]
    fn dataplane_is_send_and_errors_are_send_sync() {
        fn send<T: Send>() {}
        fn send_sync<T: Send + Sync + 'static>() {}
        send::<Dataplane>();
        send_sync::<Error>();
    }
}
