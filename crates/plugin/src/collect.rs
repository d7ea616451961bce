//! Cleaning up one attachment whose DEL never came, as DEL would: the host veth, then the
//! IPAM leases, then the endpoint file.
//!
//! Two callers decide *which* attachments, each in its own way: the GC verb takes those the
//! runtime no longer lists (`cni.dev/valid-attachments`), weftd's own GC those whose pod
//! network namespace is gone (crates/agent/src/gc.rs). Both clean through [`collect`], so
//! what is removed, how, and in what order is written once.
//!
//! The order is DEL's: no address is freed while an interface may still carry it, and the
//! endpoint file, the record of what there is to clean, goes last: a step that fails leaves
//! itself and everything after it to the next pass, which finds the file again.
//!
//! Unlike DEL nothing here enters the pod's namespace (it may be gone, or its path may name
//! another pod's namespace by now: deleting the host end removes the pair either way), and
//! nothing forks (weftd is multi-threaded), so the kernel's deferred part of a link delete
//! (15–20 ms, see `teardown`) is waited for here.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use weft_ipam::{Store, StoreError};
use weft_net::Handle;

use crate::endpoint;
use crate::names;

/// One attachment, as its endpoint file describes it.
#[derive(Debug, Clone, Copy)]
pub struct Attachment<'a> {
    /// The CNI network name (the veth's alias and the lease directory carry it).
    pub network: &'a str,
    pub container_id: &'a str,
    pub ifname: &'a str,
    /// The node end of the pod's veth (bridge, ptp); None in macvlan mode.
    pub host_interface: Option<&'a str>,
    /// The addresses ADD leased: which lease files to read first (a hint, as DEL's
    /// `prevResult`; a wrong or empty one only costs a scan of every lease).
    pub addresses: &'a [IpAddr],
}

/// Where the attachment's state lives. A `None` is left alone: the GC verb leaves leases to
/// the IPAM plugin's own GC (which may not be weft-ipam), and a plugin without an agent has
/// no endpoint files.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stores<'a> {
    /// The node agent's socket; the endpoint files are next to it.
    pub agent_socket: Option<&'a Path>,
    /// weft-ipam's `dataDir`; the leases are in `<dataDir>/<network>/`.
    pub ipam_data_dir: Option<&'a Path>,
}

/// What [`collect`] removed; an empty value when everything was gone already.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collected {
    pub veth_deleted: bool,
    /// The addresses whose lease files were removed.
    pub released: Vec<IpAddr>,
    pub endpoint_removed: bool,
}

/// The step that failed; the steps after it were not tried.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("deleting host veth {name}: {source}")]
    Veth {
        name: String,
        #[source]
        source: weft_net::Error,
    },
    #[error("releasing the leases in {}: {source}", dir.display())]
    Leases {
        dir: PathBuf,
        #[source]
        source: StoreError,
    },
    #[error("removing endpoint file {}: {source}", path.display())]
    Endpoint {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Removes what `a` left on the node; what is already gone is fine (idempotent).
pub fn collect(
    host: &mut Handle,
    stores: Stores<'_>,
    a: &Attachment<'_>,
) -> Result<Collected, CollectError> {
    let mut done = Collected::default();
    if let Some(name) = a.host_interface {
        done.veth_deleted =
            delete_host_veth(host, a, name).map_err(|source| CollectError::Veth {
                name: name.to_string(),
                source,
            })?;
    }
    if let Some(dir) = stores.ipam_data_dir {
        done.released = release_leases(dir, a.network, a.container_id, a.ifname, a.addresses)
            .map_err(|source| CollectError::Leases {
                dir: dir.join(a.network),
                source,
            })?;
    }
    if let Some(socket) = stores.agent_socket {
        done.endpoint_removed =
            endpoint::remove_file(socket, a.container_id, a.ifname).map_err(|source| {
                CollectError::Endpoint {
                    path: weft_proto::endpoint_path(socket, a.container_id, a.ifname),
                    source,
                }
            })?;
    }
    Ok(done)
}

/// Releases the pair's leases in `<data_dir>/<network>/`, reading the `hint`ed addresses'
/// files first: weft-ipam's DEL, and [`collect`]'s lease step.
pub fn release_leases(
    data_dir: &Path,
    network: &str,
    container_id: &str,
    ifname: &str,
    hint: &[IpAddr],
) -> Result<Vec<IpAddr>, StoreError> {
    let store = Store::open(data_dir, network)?;
    let mut locked = store.lock()?;
    locked.release_hinted(container_id, ifname, hint)
}

/// Deletes the attachment's host veth; `Ok(false)` when there is none to delete.
fn delete_host_veth(
    host: &mut Handle,
    a: &Attachment<'_>,
    name: &str,
) -> Result<bool, weft_net::Error> {
    let Some(link) = host.link_by_name(name)? else {
        return Ok(false);
    };
    // The name is a hash of the attachment and the alias spells it out. A link of this
    // name whose alias names another attachment is not ours to delete (and ours is gone);
    // one without an alias can only be a veth of this name made without one.
    let ours = names::alias(a.network, a.container_id, a.ifname);
    if link.alias.as_deref().is_some_and(|alias| alias != ours) {
        return Ok(false);
    }
    match host.delete_link(link.index) {
        Ok(()) => Ok(true),
        // Gone between the lookup and the delete: with the pod's namespace, most likely.
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_ipam::{Range, RangeSet};

    #[test]
    fn releases_the_pairs_leases_and_file_only_and_is_idempotent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (data, socket) = (dir.path().join("ipam"), dir.path().join("run/weftd.sock"));
        let set = RangeSet(vec![
            Range::new("10.98.0.0/29".parse().expect("net"), None, None, None).expect("range"),
        ]);
        let store = Store::open(&data, "n1").expect("open");
        let (gone, kept) = {
            let mut locked = store.lock().expect("lock");
            let sets = [set];
            let gone = locked.allocate("c-gone", "eth0", &sets, &[]);
            let kept = locked.allocate("c-kept", "eth0", &sets, &[]);
            (gone.expect("gone"), kept.expect("kept"))
        };
        let eps = weft_proto::endpoints_dir(&socket);
        std::fs::create_dir_all(&eps).expect("mkdir");
        for id in ["c-gone", "c-kept"] {
            std::fs::write(weft_proto::endpoint_path(&socket, id, "eth0"), "{}").expect("file");
        }
        let mut host = Handle::new().expect("netlink");
        let stores = Stores {
            agent_socket: Some(&socket),
            ipam_data_dir: Some(&data),
        };
        let addresses: Vec<IpAddr> = gone.iter().map(|l| l.address.addr()).collect();
        let a = Attachment {
            network: "n1",
            container_id: "c-gone",
            ifname: "eth0",
            host_interface: None,
            // A wrong hint costs a scan, never another pair's lease.
            addresses: &[kept[0].address.addr()],
        };
        let done = collect(&mut host, stores, &a).expect("collect");
        assert_eq!(
            done,
            Collected {
                veth_deleted: false,
                released: addresses,
                endpoint_removed: true,
            }
        );
        let left = store.lock().expect("lock").leases().expect("leases");
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(left[0].0, kept[0].address.addr());
        assert!(weft_proto::endpoint_path(&socket, "c-kept", "eth0").exists());
        assert_eq!(
            collect(&mut host, stores, &a).expect("again"),
            Collected::default()
        );
    }
}
