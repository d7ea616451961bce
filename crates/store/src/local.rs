//! The local datastore, for a single node without any server: the whole state in one JSON
//! file, replaced atomically on every write (temp file, fsync, rename, directory fsync), and a
//! process-exclusive lock on a sidecar `<file>.lock` so two agents cannot share it.
//!
//! Semantics that differ from etcd, on purpose:
//! - Leases never expire: with one node there is nobody to hand its blocks to, and a
//!   restarted agent adopts them. `keep_alive` succeeds until the lease is revoked, and
//!   leases survive reopening the store.
//! - `watch` reports only the writes this process makes through this store (the file has no
//!   other writer while we hold the lock). A watch from a revision other than the current
//!   one starts with [`WatchEvent::Resync`], as history is not kept.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};

use crate::blocks::BlockSpace;
use crate::config::{ClusterConfig, Family};
use crate::error::StoreError;
use crate::model::{
    BlockOwner, EndpointRecord, NodeRecord, PolicyView, Snapshot, WatchEvent, validate_node_name,
};
use crate::objects::{ObjectEvent, ObjectKind, StoredObject, check_endpoint_names, check_names};
use crate::{Datastore, LeaseId, Revision};

const FORMAT_VERSION: u32 = 1;
/// Events kept for slow watchers before they get a `Resync` instead.
const BROADCAST: usize = 1024;

/// The local single-node datastore. Cheap to clone; the lock is released when the last
/// clone is dropped.
#[derive(Clone)]
pub struct LocalStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    state: Mutex<State>,
    events: broadcast::Sender<(Revision, WatchEvent)>,
    object_events: broadcast::Sender<ObjectEvent>,
    /// Held for the store's lifetime; the OS lock goes with the descriptor.
    _lock: File,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct State {
    version: u32,
    revision: Revision,
    next_lease: LeaseId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    config: Option<ClusterConfig>,
    #[serde(default)]
    leases: BTreeMap<String, u64>,
    #[serde(default)]
    nodes: BTreeMap<String, NodeEntry>,
    #[serde(default)]
    blocks: Vec<BlockEntry>,
    /// Policy objects by kind folder, then `namespace/name` (or `name` when
    /// cluster-scoped), as in the etcd key layout.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    objects: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
    /// Pods' endpoints by `node/namespace/name`, each with its node's lease.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    endpoints: BTreeMap<String, EndpointEntry>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EndpointEntry {
    lease: LeaseId,
    record: EndpointRecord,
}

fn endpoint_id(node: &str, namespace: &str, name: &str) -> String {
    format!("{node}/{namespace}/{name}")
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NodeEntry {
    lease: LeaseId,
    record: NodeRecord,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BlockEntry {
    block: IpNet,
    node: String,
    lease: LeaseId,
}

impl State {
    fn has_lease(&self, lease: LeaseId) -> bool {
        self.leases.contains_key(&lease.to_string())
    }

    fn require_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        if self.has_lease(lease) {
            Ok(())
        } else {
            Err(StoreError::LeaseNotFound(lease))
        }
    }

    fn block_pos(&self, block: &IpNet) -> Option<usize> {
        self.blocks.iter().position(|b| b.block == *block)
    }

    fn put_block(&mut self, block: IpNet, node: &str, lease: LeaseId) -> WatchEvent {
        let entry = BlockEntry {
            block,
            node: node.to_string(),
            lease,
        };
        match self.block_pos(&block) {
            Some(i) => self.blocks[i] = entry,
            None => {
                self.blocks.push(entry);
                self.blocks.sort_by_key(|b| b.block);
            }
        }
        WatchEvent::BlockPut(BlockOwner {
            block,
            node: node.to_string(),
            lease,
        })
    }
}

/// Something to write: the new state and the events it makes.
type Change = (State, Vec<WatchEvent>);

impl LocalStore {
    /// Opens (or starts) the store at `path`, creating the parent directory. Fails with
    /// [`StoreError::Locked`] if another process, or another `LocalStore` in this one, has
    /// it open.
    pub fn open(path: &Path) -> Result<LocalStore, StoreError> {
        let io = |what, source| StoreError::Io {
            path: path.to_path_buf(),
            what,
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| io("creating its directory", e))?;
        }
        let lock_path = sidecar(path, "lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io("opening the lock file", e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    path: path.to_path_buf(),
                    lock: lock_path,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io("locking", e)),
        }
        let state = match std::fs::read(path) {
            Ok(bytes) => {
                let st: State =
                    serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                        key: path.display().to_string(),
                        detail: e.to_string(),
                    })?;
                if st.version != FORMAT_VERSION {
                    return Err(StoreError::Corrupt {
                        key: path.display().to_string(),
                        detail: format!("format version {} is not {FORMAT_VERSION}", st.version),
                    });
                }
                st
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State {
                version: FORMAT_VERSION,
                next_lease: 1,
                ..State::default()
            },
            Err(e) => return Err(io("reading", e)),
        };
        let (events, _) = broadcast::channel(BROADCAST);
        let (object_events, _) = broadcast::channel(BROADCAST);
        Ok(LocalStore {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                state: Mutex::new(state),
                events,
                object_events,
                _lock: lock,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on a copy of the state under the lock off the async threads (the write
    /// fsyncs); if it returns a change, writes it durably, then makes it current and
    /// announces its events.
    async fn update<T: Send + 'static>(
        &self,
        f: impl FnOnce(&State) -> Result<(T, Option<Change>), StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        run_blocking(move || {
            let mut guard = inner.lock_state();
            let (out, change) = f(&guard)?;
            if let Some((mut next, events)) = change {
                next.revision = guard.revision + 1;
                inner.persist(&next)?;
                // Endpoints that went with a revoked lease are announced like deletions.
                for (id, e) in &guard.endpoints {
                    if !next.endpoints.contains_key(id) {
                        let _ = inner.object_events.send(ObjectEvent::EndpointDeleted {
                            node: e.record.node.clone(),
                            namespace: e.record.namespace.clone(),
                            name: e.record.name.clone(),
                        });
                    }
                }
                *guard = next;
                for ev in events {
                    // No receiver is fine: nobody watches.
                    let _ = inner.events.send((guard.revision, ev));
                }
            }
            Ok(out)
        })
        .await
    }

    /// Writes one object change (`Some` value: put, `None`: delete) and announces it;
    /// Ok(whether the object existed before).
    async fn write_object(
        &self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
        value: Option<serde_json::Value>,
    ) -> Result<bool, StoreError> {
        check_names(kind, namespace, name)?;
        let inner = self.inner.clone();
        let (namespace, name) = (namespace.to_string(), name.to_string());
        run_blocking(move || {
            let mut guard = inner.lock_state();
            let id = object_id(kind, &namespace, &name);
            let existed = guard
                .objects
                .get(kind.folder())
                .is_some_and(|m| m.contains_key(&id));
            if value.is_none() && !existed {
                return Ok(false);
            }
            let mut next = guard.clone();
            let folder = next.objects.entry(kind.folder().to_string()).or_default();
            let event = match value {
                Some(value) => {
                    folder.insert(id, value.clone());
                    ObjectEvent::Put(StoredObject {
                        kind,
                        namespace,
                        name,
                        value,
                    })
                }
                None => {
                    folder.remove(&id);
                    if folder.is_empty() {
                        next.objects.remove(kind.folder());
                    }
                    ObjectEvent::Deleted {
                        kind,
                        namespace,
                        name,
                    }
                }
            };
            next.revision = guard.revision + 1;
            inner.persist(&next)?;
            *guard = next;
            // No receiver is fine: nobody watches.
            let _ = inner.object_events.send(event);
            Ok(existed)
        })
        .await
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&State) -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        run_blocking(move || Ok(f(&inner.lock_state()))).await
    }
}

async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(StoreError::Unavailable {
            op: "local store",
            detail: format!("the worker thread failed: {e}"),
        }),
    }
}

fn snapshot_of(st: &State) -> Snapshot {
    Snapshot {
        revision: st.revision,
        config: st.config.clone(),
        nodes: st.nodes.values().map(|e| e.record.clone()).collect(),
        blocks: st
            .blocks
            .iter()
            .map(|b| BlockOwner {
                block: b.block,
                node: b.node.clone(),
                lease: b.lease,
            })
            .collect(),
    }
}

fn object_id(kind: ObjectKind, namespace: &str, name: &str) -> String {
    if kind.namespaced() {
        format!("{namespace}/{name}")
    } else {
        name.to_string()
    }
}

fn sidecar(path: &Path, ext: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

impl Inner {
    fn lock_state(&self) -> MutexGuard<'_, State> {
        // Updates work on a copy and swap it in whole, so a panic cannot leave the state
        // half-changed: a poisoned lock is safe to use.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn persist(&self, state: &State) -> Result<(), StoreError> {
        let io = |what, source| StoreError::Io {
            path: self.path.clone(),
            what,
            source,
        };
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| StoreError::Corrupt {
            key: self.path.display().to_string(),
            detail: format!("cannot serialize: {e}"),
        })?;
        let tmp = sidecar(&self.path, "tmp");
        let mut f = File::create(&tmp).map_err(|e| io("creating the temporary file", e))?;
        f.write_all(&bytes)
            .and_then(|()| f.sync_all())
            .map_err(|e| io("writing the temporary file", e))?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(|e| io("renaming the temporary file", e))?;
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("syncing its directory", e))?;
        Ok(())
    }
}

impl Datastore for LocalStore {
    async fn init_config(&self, cfg: &ClusterConfig) -> Result<ClusterConfig, StoreError> {
        cfg.validate()?;
        let cfg = cfg.clone();
        self.update(move |st| match &st.config {
            Some(existing) if *existing == cfg => Ok((existing.clone(), None)),
            Some(existing) => Err(StoreError::ConfigConflict {
                existing: Box::new(existing.clone()),
                requested: Box::new(cfg),
            }),
            None => {
                let mut next = st.clone();
                next.config = Some(cfg.clone());
                Ok((cfg, Some((next, Vec::new()))))
            }
        })
        .await
    }

    async fn config(&self) -> Result<Option<ClusterConfig>, StoreError> {
        self.read(|st| st.config.clone()).await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let secs = ttl.as_secs().max(1);
        self.update(move |st| {
            let mut next = st.clone();
            let id = st.next_lease.max(1);
            next.next_lease = id + 1;
            next.leases.insert(id.to_string(), secs);
            Ok((id, Some((next, Vec::new()))))
        })
        .await
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        self.read(move |st| match st.leases.get(&lease.to_string()) {
            Some(secs) => Ok(Duration::from_secs(*secs)),
            None => Err(StoreError::LeaseNotFound(lease)),
        })
        .await?
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.update(move |st| {
            if !st.has_lease(lease) {
                return Ok(((), None));
            }
            let mut next = st.clone();
            next.leases.remove(&lease.to_string());
            let mut events = Vec::new();
            next.nodes.retain(|name, e| {
                let keep = e.lease != lease;
                if !keep {
                    events.push(WatchEvent::NodeDeleted(name.clone()));
                }
                keep
            });
            next.blocks.retain(|b| {
                let keep = b.lease != lease;
                if !keep {
                    events.push(WatchEvent::BlockDeleted(b.block));
                }
                keep
            });
            next.endpoints.retain(|_, e| e.lease != lease);
            Ok(((), Some((next, events))))
        })
        .await
    }

    async fn put_node(&self, rec: &NodeRecord, lease: LeaseId) -> Result<(), StoreError> {
        rec.validate()?;
        let rec = rec.clone();
        self.update(move |st| {
            st.require_lease(lease)?;
            let mut next = st.clone();
            next.nodes.insert(
                rec.name.clone(),
                NodeEntry {
                    lease,
                    record: rec.clone(),
                },
            );
            Ok(((), Some((next, vec![WatchEvent::NodePut(rec)]))))
        })
        .await
    }

    async fn claim_block(
        &self,
        node: &str,
        family: Family,
        lease: LeaseId,
    ) -> Result<IpNet, StoreError> {
        validate_node_name(node)?;
        let node = node.to_string();
        self.update(move |st| {
            let cfg = st.config.as_ref().ok_or(StoreError::NoConfig)?;
            let space = BlockSpace::new(cfg, family)?;
            st.require_lease(lease)?;
            let block = space.first_free(st.blocks.iter().map(|b| &b.block)).ok_or(
                StoreError::NoFreeBlock {
                    family,
                    cidr: space.cidr,
                },
            )?;
            let mut next = st.clone();
            let ev = next.put_block(block, &node, lease);
            Ok((block, Some((next, vec![ev]))))
        })
        .await
    }

    async fn adopt_block(
        &self,
        node: &str,
        block: IpNet,
        lease: LeaseId,
    ) -> Result<(), StoreError> {
        validate_node_name(node)?;
        let node = node.to_string();
        self.update(move |st| {
            let cfg = st.config.as_ref().ok_or(StoreError::NoConfig)?;
            BlockSpace::new(cfg, Family::of(&block))?
                .check(&block)
                .map_err(|reason| StoreError::InvalidBlock { block, reason })?;
            if let Some(i) = st.block_pos(&block)
                && st.blocks[i].node != node
            {
                return Err(StoreError::NotOwner {
                    block,
                    owner: st.blocks[i].node.clone(),
                });
            }
            st.require_lease(lease)?;
            let mut next = st.clone();
            let ev = next.put_block(block, &node, lease);
            Ok(((), Some((next, vec![ev]))))
        })
        .await
    }

    async fn release_block(&self, node: &str, block: IpNet) -> Result<(), StoreError> {
        validate_node_name(node)?;
        let node = node.to_string();
        self.update(move |st| {
            let Some(i) = st.block_pos(&block) else {
                return Ok(((), None));
            };
            if st.blocks[i].node != node {
                return Err(StoreError::NotOwner {
                    block,
                    owner: st.blocks[i].node.clone(),
                });
            }
            let mut next = st.clone();
            next.blocks.remove(i);
            Ok(((), Some((next, vec![WatchEvent::BlockDeleted(block)]))))
        })
        .await
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        self.read(snapshot_of).await
    }

    async fn watch(&self, from: Revision) -> Result<mpsc::Receiver<WatchEvent>, StoreError> {
        // Subscribe under the state lock so no write falls between reading the revision
        // and subscribing.
        let (mut sub, current) = {
            let st = self.inner.lock_state();
            (self.inner.events.subscribe(), st.revision)
        };
        let (tx, rx) = mpsc::channel(BROADCAST);
        tokio::spawn(async move {
            if from != current && tx.send(WatchEvent::Resync).await.is_err() {
                return;
            }
            loop {
                let got = tokio::select! {
                    _ = tx.closed() => return,
                    got = sub.recv() => got,
                };
                let ev = match got {
                    Ok((_, ev)) => ev,
                    Err(broadcast::error::RecvError::Lagged(_)) => WatchEvent::Resync,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    async fn put_object(
        &self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
        value: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.write_object(kind, namespace, name, Some(value.clone()))
            .await
            .map(|_| ())
    }

    async fn delete_object(
        &self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        self.write_object(kind, namespace, name, None).await
    }

    async fn list_objects(
        &self,
        kind: ObjectKind,
    ) -> Result<(Revision, Vec<StoredObject>), StoreError> {
        self.read(move |st| {
            let objects = st
                .objects
                .get(kind.folder())
                .into_iter()
                .flatten()
                .map(|(id, value)| {
                    let (namespace, name) = match id.split_once('/') {
                        Some((ns, n)) if kind.namespaced() => (ns.to_string(), n.to_string()),
                        _ => (String::new(), id.clone()),
                    };
                    StoredObject {
                        kind,
                        namespace,
                        name,
                        value: value.clone(),
                    }
                })
                .collect();
            (st.revision, objects)
        })
        .await
    }

    async fn watch_objects(
        &self,
        from: Revision,
    ) -> Result<mpsc::Receiver<ObjectEvent>, StoreError> {
        let (mut sub, current) = {
            let st = self.inner.lock_state();
            (self.inner.object_events.subscribe(), st.revision)
        };
        let (tx, rx) = mpsc::channel(BROADCAST);
        tokio::spawn(async move {
            if from != current && tx.send(ObjectEvent::Resync).await.is_err() {
                return;
            }
            loop {
                let got = tokio::select! {
                    _ = tx.closed() => return,
                    got = sub.recv() => got,
                };
                let ev = match got {
                    Ok(ev) => ev,
                    Err(broadcast::error::RecvError::Lagged(_)) => ObjectEvent::Resync,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if tx.send(ev).await.is_err() {
                    return;
                }
            }
        });
        Ok(rx)
    }

    async fn put_endpoint(&self, rec: &EndpointRecord, lease: LeaseId) -> Result<(), StoreError> {
        check_endpoint_names(&rec.node, &rec.namespace, &rec.name)?;
        let rec = rec.clone();
        let inner = self.inner.clone();
        run_blocking(move || {
            let mut guard = inner.lock_state();
            guard.require_lease(lease)?;
            let mut next = guard.clone();
            next.endpoints.insert(
                endpoint_id(&rec.node, &rec.namespace, &rec.name),
                EndpointEntry {
                    lease,
                    record: rec.clone(),
                },
            );
            next.revision = guard.revision + 1;
            inner.persist(&next)?;
            *guard = next;
            let _ = inner.object_events.send(ObjectEvent::EndpointPut(rec));
            Ok(())
        })
        .await
    }

    async fn delete_endpoint(
        &self,
        node: &str,
        namespace: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        check_endpoint_names(node, namespace, name)?;
        let (node, namespace, name) = (node.to_string(), namespace.to_string(), name.to_string());
        let inner = self.inner.clone();
        run_blocking(move || {
            let mut guard = inner.lock_state();
            let id = endpoint_id(&node, &namespace, &name);
            if !guard.endpoints.contains_key(&id) {
                return Ok(false);
            }
            let mut next = guard.clone();
            next.endpoints.remove(&id);
            next.revision = guard.revision + 1;
            inner.persist(&next)?;
            *guard = next;
            let _ = inner.object_events.send(ObjectEvent::EndpointDeleted {
                node,
                namespace,
                name,
            });
            Ok(true)
        })
        .await
    }

    async fn list_endpoints(&self) -> Result<(Revision, Vec<EndpointRecord>), StoreError> {
        self.read(|st| {
            let mut out: Vec<EndpointRecord> =
                st.endpoints.values().map(|e| e.record.clone()).collect();
            out.sort();
            (st.revision, out)
        })
        .await
    }

    async fn policy_view(&self) -> Result<PolicyView, StoreError> {
        self.read(|st| {
            let mut objects = Vec::new();
            for kind in ObjectKind::ALL {
                for (id, value) in st.objects.get(kind.folder()).into_iter().flatten() {
                    let (namespace, name) = match id.split_once('/') {
                        Some((ns, n)) if kind.namespaced() => (ns.to_string(), n.to_string()),
                        _ => (String::new(), id.clone()),
                    };
                    objects.push(StoredObject {
                        kind,
                        namespace,
                        name,
                        value: value.clone(),
                    });
                }
            }
            objects.sort_by(|a, b| {
                (a.kind, &a.namespace, &a.name).cmp(&(b.kind, &b.namespace, &b.name))
            });
            let mut endpoints: Vec<EndpointRecord> =
                st.endpoints.values().map(|e| e.record.clone()).collect();
            endpoints.sort();
            PolicyView {
                snapshot: snapshot_of(st),
                objects,
                endpoints,
            }
        })
        .await
    }
}
