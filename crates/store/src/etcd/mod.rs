//! The etcd v3 datastore. Key layout: [`crate::keys`]. Node and block keys hang on the node's
//! lease, so a dead node's record and blocks vanish when etcd expires the lease; a block is
//! claimable only while its key is absent, which is what fences ownership: nobody reuses a
//! block until its owner's lease is proven gone by the store itself.
//!
//! Every write that can race is one transaction (compare-and-swap); every request is bounded
//! by [`EtcdOptions::timeout`]. The client reconnects by itself after etcd restarts (tonic
//! re-dials on the next request), which the tests check against a real restart.

mod conn;
mod watch;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, GetOptions, KeyValue, PutOptions, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use ipnet::IpNet;
use tokio::sync::mpsc;

use crate::blocks::BlockSpace;
use crate::config::{ClusterConfig, Family};
use crate::error::StoreError;
use crate::keys::{DEFAULT_PREFIX, KeyKind, Keys, prefix_end};
use crate::model::{
    BlockOwner, EndpointRecord, NodeRecord, PolicyView, Snapshot, WatchEvent, validate_node_name,
};
use crate::objects::{ObjectEvent, ObjectKind, StoredObject, check_endpoint_names, check_names};
use crate::{Datastore, LeaseId, Revision};

use conn::Conn;

/// Rounds a claim may lose: a round is lost only to a concurrent claim that succeeded, so
/// this is far beyond any real contention (thousands of nodes starting at once).
const CLAIM_ROUNDS: usize = 100_000;

/// Keys per range request when listing: keeps every reply far below gRPC's 4 MiB limit,
/// whatever the cluster size.
const PAGE: i64 = 1000;

/// How often a compare-and-swap may lose to a concurrent writer of the same key before we
/// give up (only `adopt_block`/`init_config`: each lost round there means someone else
/// changed that very key, which settles quickly).
const CAS_ROUNDS: usize = 16;

/// Where and how to reach etcd.
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// `http://host:port` or `https://host:port` (a bare `host:port` takes its scheme from
    /// whether `tls` is set).
    pub endpoints: Vec<String>,
    /// Key prefix, default `/weft/v1`.
    pub prefix: String,
    pub tls: Option<TlsFiles>,
    /// Bound on every single request, default 3 s.
    pub timeout: Duration,
}

impl EtcdOptions {
    /// These endpoints with the default prefix, no TLS and a 3 s timeout.
    pub fn new(endpoints: Vec<String>) -> EtcdOptions {
        EtcdOptions {
            endpoints,
            prefix: DEFAULT_PREFIX.to_string(),
            tls: None,
            timeout: Duration::from_secs(3),
        }
    }
}

impl Default for EtcdOptions {
    fn default() -> EtcdOptions {
        EtcdOptions::new(vec!["http://127.0.0.1:2379".to_string()])
    }
}

/// PEM files for etcd with client-certificate authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The etcd datastore. Cheap to clone; clones share one connection. Watches end when the
/// last clone is dropped.
#[derive(Clone)]
pub struct EtcdStore {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    conn: Conn,
    keys: Keys,
    /// The config and its mod revision. The config never changes once written, but a claim
    /// still compares the revision in its transaction, so a wiped and re-initialised store
    /// cannot make us hand out blocks of the old CIDR.
    config: Mutex<Option<(ClusterConfig, Revision)>>,
    /// Dropped with the store; watch tasks see it and close their channels.
    shutdown: tokio::sync::watch::Sender<()>,
}

impl EtcdStore {
    /// Deletes one key (no lease, no condition); whether it was there.
    async fn delete_key(&self, op: &'static str, key: String) -> Result<bool, StoreError> {
        let mut c = self.inner.conn.client();
        let resp = self.inner.conn.call(op, None, c.delete(key, None)).await?;
        Ok(resp.deleted() > 0)
    }

    /// Connects and makes one request to prove etcd answers (and accepts our TLS identity),
    /// so a wrong endpoint or certificate fails here with a clear error. `Unavailable` when
    /// etcd is not reachable yet: the caller retries.
    pub async fn connect(opts: EtcdOptions) -> Result<EtcdStore, StoreError> {
        let conn = Conn::open(&opts).await?;
        let keys = Keys::new(&opts.prefix);
        let mut c = conn.client();
        let probe = GetOptions::new().with_count_only();
        conn.call("connect", None, c.get(keys.config(), Some(probe)))
            .await?;
        let (shutdown, _) = tokio::sync::watch::channel(());
        Ok(EtcdStore {
            inner: Arc::new(Inner {
                conn,
                keys,
                config: Mutex::new(None),
                shutdown,
            }),
        })
    }

    async fn txn(
        &self,
        op: &'static str,
        lease: Option<LeaseId>,
        txn: Txn,
    ) -> Result<TxnResponse, StoreError> {
        let mut c = self.inner.conn.client();
        self.inner.conn.call(op, lease, c.txn(txn)).await
    }

    /// All keys under `prefix` at one revision, page by page.
    async fn list(
        &self,
        op: &'static str,
        prefix: &str,
        keys_only: bool,
    ) -> Result<(Revision, Vec<KeyValue>), StoreError> {
        let mut attempt = 0;
        loop {
            match self.list_once(op, prefix, keys_only).await {
                // A compaction between two pages of a pinned revision: start over.
                Err(e) if conn::is_compacted(&e) && attempt < 3 => attempt += 1,
                other => return other,
            }
        }
    }

    async fn list_once(
        &self,
        op: &'static str,
        prefix: &str,
        keys_only: bool,
    ) -> Result<(Revision, Vec<KeyValue>), StoreError> {
        let end = prefix_end(prefix);
        let mut start = prefix.as_bytes().to_vec();
        let mut revision = 0;
        let mut out = Vec::new();
        loop {
            let mut o = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if revision > 0 {
                o = o.with_revision(revision);
            }
            if keys_only {
                o = o.with_keys_only();
            }
            let mut c = self.inner.conn.client();
            let mut resp = self
                .inner
                .conn
                .call(op, None, c.get(start.clone(), Some(o)))
                .await?;
            if revision == 0 {
                revision = resp.header().map(|h| h.revision()).unwrap_or(0);
            }
            let more = resp.more();
            let kvs = resp.take_kvs();
            if let Some(last) = kvs.last() {
                start = last.key().to_vec();
                start.push(0);
            }
            let empty = kvs.is_empty();
            out.extend(kvs);
            if !more || empty {
                return Ok((revision, out));
            }
        }
    }

    /// The config and its mod revision, from the cache or from etcd.
    async fn config_with_revision(&self) -> Result<(ClusterConfig, Revision), StoreError> {
        if let Some(c) = self.cached_config() {
            return Ok(c);
        }
        self.read_config().await
    }

    /// The config and its mod revision from etcd, refreshing the cache.
    async fn read_config(&self) -> Result<(ClusterConfig, Revision), StoreError> {
        let key = self.inner.keys.config();
        let mut c = self.inner.conn.client();
        let resp = self
            .inner
            .conn
            .call("read config", None, c.get(key.clone(), None))
            .await?;
        let Some(kv) = resp.kvs().first() else {
            self.set_cached_config(None);
            return Err(StoreError::NoConfig);
        };
        let cfg = parse_config(&key, kv.value())?;
        let entry = (cfg, kv.mod_revision());
        self.set_cached_config(Some(entry.clone()));
        Ok(entry)
    }

    fn cached_config(&self) -> Option<(ClusterConfig, Revision)> {
        match self.inner.config.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn set_cached_config(&self, v: Option<(ClusterConfig, Revision)>) {
        match self.inner.config.lock() {
            Ok(mut g) => *g = v,
            Err(p) => *p.into_inner() = v,
        }
    }

    async fn try_init_config(
        &self,
        cfg: &ClusterConfig,
    ) -> Result<Option<ClusterConfig>, StoreError> {
        let key = self.inner.keys.config();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), cfg.to_json(), None)])
            .or_else([TxnOp::get(key.clone(), None)]);
        let resp = self.txn("init_config", None, txn).await?;
        if resp.succeeded() {
            return Ok(Some(cfg.clone()));
        }
        let Some(kv) = first_get_kv(&resp) else {
            // Deleted between our compare and get: try again.
            return Ok(None);
        };
        let existing = parse_config(&key, kv.value())?;
        if existing == *cfg {
            Ok(Some(existing))
        } else {
            Err(StoreError::ConfigConflict {
                existing: Box::new(existing),
                requested: Box::new(cfg.clone()),
            })
        }
    }

    async fn claim_once(
        &self,
        node: &str,
        family: Family,
        lease: LeaseId,
    ) -> Result<Option<IpNet>, StoreError> {
        let (cfg, cfg_rev) = self.config_with_revision().await?;
        let space = BlockSpace::new(&cfg, family)?;
        let keys = &self.inner.keys;
        let (_, kvs) = self.list("claim_block", &keys.blocks(family), true).await?;
        let taken: Vec<IpNet> = kvs
            .iter()
            .filter_map(|kv| match keys.classify(kv.key()) {
                KeyKind::Block(b) => Some(b),
                _ => None,
            })
            .collect();
        // A block freed by an expired lease is reused only when no never-used block is
        // left: its old owner may be partitioned rather than dead, and the longer its
        // addresses stay out of circulation the smaller that window's harm.
        let (_, used) = self.list("claim_block", &keys.used(family), true).await?;
        let used: Vec<IpNet> = used
            .iter()
            .filter_map(|kv| keys.used_of(kv.key(), family))
            .collect();
        let fresh = space.first_free(taken.iter().chain(used.iter()));
        let Some(block) = fresh.or_else(|| space.first_free(&taken)) else {
            return Err(StoreError::NoFreeBlock {
                family,
                cidr: space.cidr,
            });
        };
        let key = keys.block(&block);
        let marker = keys.used_block(&block);
        let txn = Txn::new()
            .when([
                Compare::create_revision(key.clone(), CompareOp::Equal, 0),
                Compare::mod_revision(keys.config(), CompareOp::Equal, cfg_rev),
            ])
            .and_then([
                TxnOp::put(key, node, Some(PutOptions::new().with_lease(lease))),
                TxnOp::put(marker, node, None),
            ])
            .or_else([TxnOp::get(keys.config(), None)]);
        let resp = self.txn("claim_block", Some(lease), txn).await?;
        if resp.succeeded() {
            return Ok(Some(block));
        }
        if first_get_kv(&resp).map(|kv| kv.mod_revision()) != Some(cfg_rev) {
            // The config was rewritten under us (a wiped and re-initialised store).
            self.set_cached_config(None);
        }
        Ok(None)
    }

    /// One round of adopt: `Ok(true)` done, `Ok(false)` lost a race, try again.
    async fn adopt_once(
        &self,
        node: &str,
        block: &IpNet,
        lease: LeaseId,
    ) -> Result<bool, StoreError> {
        let key = self.inner.keys.block(block);
        let put = || TxnOp::put(key.clone(), node, Some(PutOptions::new().with_lease(lease)));
        let ours = Txn::new()
            .when([Compare::value(key.clone(), CompareOp::Equal, node)])
            .and_then([put()])
            .or_else([TxnOp::get(key.clone(), None)]);
        let resp = self.txn("adopt_block", Some(lease), ours).await?;
        if resp.succeeded() {
            return Ok(true);
        }
        match first_get_kv(&resp) {
            Some(kv) if kv.value() != node.as_bytes() => {
                return Err(not_owner(*block, &kv));
            }
            Some(_) => return Ok(false),
            None => {}
        }
        let absent = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([put()])
            .or_else([TxnOp::get(key.clone(), None)]);
        let resp = self.txn("adopt_block", Some(lease), absent).await?;
        if resp.succeeded() {
            return Ok(true);
        }
        match first_get_kv(&resp) {
            Some(kv) if kv.value() != node.as_bytes() => Err(not_owner(*block, &kv)),
            _ => Ok(false),
        }
    }
}

fn not_owner(block: IpNet, kv: &KeyValue) -> StoreError {
    StoreError::NotOwner {
        block,
        owner: String::from_utf8_lossy(kv.value()).into_owned(),
    }
}

fn first_get_kv(resp: &TxnResponse) -> Option<KeyValue> {
    resp.op_responses().into_iter().find_map(|r| match r {
        TxnOpResponse::Get(g) => g.kvs().first().cloned(),
        _ => None,
    })
}

pub(crate) fn parse_config(key: &str, value: &[u8]) -> Result<ClusterConfig, StoreError> {
    let text = std::str::from_utf8(value).map_err(|e| StoreError::Corrupt {
        key: key.to_string(),
        detail: format!("not UTF-8: {e}"),
    })?;
    ClusterConfig::from_json(text).map_err(|e| StoreError::Corrupt {
        key: key.to_string(),
        detail: e.to_string(),
    })
}

/// A node record as stored, or `None` when unreadable or not matching its key (such a node
/// is treated as absent rather than failing every listing of the cluster).
/// An endpoint record, if its key and value agree and parse.
pub(crate) fn parse_endpoint(keys: &Keys, key: &[u8], value: &[u8]) -> Option<EndpointRecord> {
    let KeyKind::Endpoint(node, namespace, name) = keys.classify(key) else {
        return None;
    };
    let rec: EndpointRecord = serde_json::from_slice(value).ok()?;
    (rec.node == node && rec.namespace == namespace && rec.name == name).then_some(rec)
}

pub(crate) fn parse_node(name: &str, value: &[u8]) -> Option<NodeRecord> {
    let rec: NodeRecord = serde_json::from_slice(value).ok()?;
    (rec.name == name && rec.validate().is_ok()).then_some(rec)
}

pub(crate) fn block_owner(block: IpNet, kv: &KeyValue) -> BlockOwner {
    BlockOwner {
        block,
        node: String::from_utf8_lossy(kv.value()).into_owned(),
        lease: kv.lease(),
    }
}

fn ttl_secs(ttl: Duration) -> i64 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
}

impl Datastore for EtcdStore {
    async fn init_config(&self, cfg: &ClusterConfig) -> Result<ClusterConfig, StoreError> {
        cfg.validate()?;
        for _ in 0..CAS_ROUNDS {
            if let Some(c) = self.try_init_config(cfg).await? {
                return Ok(c);
            }
        }
        Err(StoreError::Unavailable {
            op: "init_config",
            detail: "the config key kept changing under us".into(),
        })
    }

    async fn config(&self) -> Result<Option<ClusterConfig>, StoreError> {
        match self.read_config().await {
            Ok((c, _)) => Ok(Some(c)),
            Err(StoreError::NoConfig) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let mut c = self.inner.conn.client();
        let resp = self
            .inner
            .conn
            .call("grant_lease", None, c.lease_grant(ttl_secs(ttl), None))
            .await?;
        Ok(resp.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        let conn = &self.inner.conn;
        let mut c = conn.client();
        // The client's first keep-alive answer is consumed inside `lease_keep_alive` (it
        // only reports "not found"); a second one on the same stream tells the TTL.
        let fut = async move {
            let (mut keeper, mut stream) = c.lease_keep_alive(lease).await?;
            keeper.keep_alive().await?;
            stream.message().await
        };
        match conn.call("keep_alive", Some(lease), fut).await? {
            Some(resp) if resp.ttl() > 0 => {
                Ok(Duration::from_secs(u64::try_from(resp.ttl()).unwrap_or(0)))
            }
            Some(_) => Err(StoreError::LeaseNotFound(lease)),
            None => Err(StoreError::Unavailable {
                op: "keep_alive",
                detail: "etcd closed the keep-alive stream".into(),
            }),
        }
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        let mut c = self.inner.conn.client();
        match self
            .inner
            .conn
            .call("revoke_lease", Some(lease), c.lease_revoke(lease))
            .await
        {
            // Already gone is what the caller wanted.
            Ok(_) | Err(StoreError::LeaseNotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn put_node(&self, rec: &NodeRecord, lease: LeaseId) -> Result<(), StoreError> {
        rec.validate()?;
        let value = serde_json::to_string(rec).map_err(|e| StoreError::Corrupt {
            key: self.inner.keys.node(&rec.name),
            detail: e.to_string(),
        })?;
        let mut c = self.inner.conn.client();
        self.inner
            .conn
            .call(
                "put_node",
                Some(lease),
                c.put(
                    self.inner.keys.node(&rec.name),
                    value,
                    Some(PutOptions::new().with_lease(lease)),
                ),
            )
            .await?;
        Ok(())
    }

    async fn claim_block(
        &self,
        node: &str,
        family: Family,
        lease: LeaseId,
    ) -> Result<IpNet, StoreError> {
        validate_node_name(node)?;
        // Each lost round means another writer claimed a block (or rewrote the config), so
        // the loop ends at the latest when the CIDR is full; the cap only guards against a
        // bug turning that into a spin.
        for _ in 0..CLAIM_ROUNDS {
            if let Some(b) = self.claim_once(node, family, lease).await? {
                return Ok(b);
            }
        }
        Err(StoreError::Unavailable {
            op: "claim_block",
            detail: format!("lost {CLAIM_ROUNDS} races in a row for a free {family} block"),
        })
    }

    async fn adopt_block(
        &self,
        node: &str,
        block: IpNet,
        lease: LeaseId,
    ) -> Result<(), StoreError> {
        validate_node_name(node)?;
        let (cfg, _) = self.config_with_revision().await?;
        BlockSpace::new(&cfg, Family::of(&block))?
            .check(&block)
            .map_err(|reason| StoreError::InvalidBlock { block, reason })?;
        for _ in 0..CAS_ROUNDS {
            if self.adopt_once(node, &block, lease).await? {
                return Ok(());
            }
        }
        Err(StoreError::Unavailable {
            op: "adopt_block",
            detail: format!("block {block} kept changing under us"),
        })
    }

    async fn release_block(&self, node: &str, block: IpNet) -> Result<(), StoreError> {
        validate_node_name(node)?;
        let key = self.inner.keys.block(&block);
        // Released by its owner, the block is proven unused: it loses its `used` marker and
        // is as good as a fresh one (unlike a block freed by an expired lease).
        let marker = self.inner.keys.used_block(&block);
        let txn = Txn::new()
            .when([Compare::value(key.clone(), CompareOp::Equal, node)])
            .and_then([
                TxnOp::delete(key.clone(), None),
                TxnOp::delete(marker, None),
            ])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.txn("release_block", None, txn).await?;
        if resp.succeeded() {
            return Ok(());
        }
        match first_get_kv(&resp) {
            Some(kv) => Err(not_owner(block, &kv)),
            // Already free.
            None => Ok(()),
        }
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let keys = &self.inner.keys;
        let (revision, kvs) = self.list("snapshot", &keys.root(), false).await?;
        let mut snap = Snapshot {
            revision,
            config: None,
            nodes: Vec::new(),
            blocks: Vec::new(),
        };
        for kv in &kvs {
            match keys.classify(kv.key()) {
                KeyKind::Config => {
                    let cfg = parse_config(&keys.config(), kv.value())?;
                    self.set_cached_config(Some((cfg.clone(), kv.mod_revision())));
                    snap.config = Some(cfg);
                }
                KeyKind::Node(name) => snap.nodes.extend(parse_node(&name, kv.value())),
                KeyKind::Block(b) => snap.blocks.push(block_owner(b, kv)),
                KeyKind::Object(..) | KeyKind::Endpoint(..) | KeyKind::Other => {}
            }
        }
        snap.blocks.sort_by_key(|b| b.block);
        Ok(snap)
    }

    async fn watch(&self, from: Revision) -> Result<mpsc::Receiver<WatchEvent>, StoreError> {
        watch::start(&self.inner, from).await
    }

    async fn put_object(
        &self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
        value: &serde_json::Value,
    ) -> Result<(), StoreError> {
        check_names(kind, namespace, name)?;
        let key = self.inner.keys.object(kind, namespace, name);
        let mut c = self.inner.conn.client();
        self.inner
            .conn
            .call("put_object", None, c.put(key, value.to_string(), None))
            .await?;
        Ok(())
    }

    async fn delete_object(
        &self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        check_names(kind, namespace, name)?;
        self.delete_key(
            "delete_object",
            self.inner.keys.object(kind, namespace, name),
        )
        .await
    }

    async fn list_objects(
        &self,
        kind: ObjectKind,
    ) -> Result<(Revision, Vec<StoredObject>), StoreError> {
        let keys = &self.inner.keys;
        let (revision, kvs) = self
            .list("list_objects", &keys.objects(kind), false)
            .await?;
        let mut out = Vec::new();
        for kv in &kvs {
            let KeyKind::Object(k, namespace, name) = keys.classify(kv.key()) else {
                continue;
            };
            if k != kind {
                continue;
            }
            let value = serde_json::from_slice(kv.value()).map_err(|e| StoreError::Corrupt {
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                detail: format!("not JSON: {e}"),
            })?;
            out.push(StoredObject {
                kind,
                namespace,
                name,
                value,
            });
        }
        Ok((revision, out))
    }

    async fn watch_objects(
        &self,
        from: Revision,
    ) -> Result<mpsc::Receiver<ObjectEvent>, StoreError> {
        watch::start(&self.inner, from).await
    }

    async fn put_endpoint(&self, rec: &EndpointRecord, lease: LeaseId) -> Result<(), StoreError> {
        check_endpoint_names(&rec.node, &rec.namespace, &rec.name)?;
        let key = self
            .inner
            .keys
            .endpoint(&rec.node, &rec.namespace, &rec.name);
        let value = serde_json::to_string(rec).map_err(|e| StoreError::Corrupt {
            key: key.clone(),
            detail: e.to_string(),
        })?;
        let mut c = self.inner.conn.client();
        self.inner
            .conn
            .call(
                "put_endpoint",
                Some(lease),
                c.put(key, value, Some(PutOptions::new().with_lease(lease))),
            )
            .await?;
        Ok(())
    }

    async fn delete_endpoint(
        &self,
        node: &str,
        namespace: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        check_endpoint_names(node, namespace, name)?;
        self.delete_key(
            "delete_endpoint",
            self.inner.keys.endpoint(node, namespace, name),
        )
        .await
    }

    async fn list_endpoints(&self) -> Result<(Revision, Vec<EndpointRecord>), StoreError> {
        let keys = &self.inner.keys;
        let (revision, kvs) = self
            .list("list_endpoints", &keys.endpoints(), false)
            .await?;
        let mut out: Vec<EndpointRecord> = kvs
            .iter()
            .filter_map(|kv| parse_endpoint(keys, kv.key(), kv.value()))
            .collect();
        out.sort();
        Ok((revision, out))
    }

    async fn policy_view(&self) -> Result<PolicyView, StoreError> {
        let mut objects = Vec::new();
        let mut view = self.policy_view_each(|o| objects.push(o)).await?;
        objects
            .sort_by(|a, b| (a.kind, &a.namespace, &a.name).cmp(&(b.kind, &b.namespace, &b.name)));
        view.objects = objects;
        Ok(view)
    }

    async fn policy_view_each<F: FnMut(StoredObject) + Send>(
        &self,
        mut each: F,
    ) -> Result<PolicyView, StoreError> {
        let keys = &self.inner.keys;
        let (revision, kvs) = self.list("policy_view", &keys.root(), false).await?;
        let mut view = PolicyView {
            snapshot: Snapshot {
                revision,
                config: None,
                nodes: Vec::new(),
                blocks: Vec::new(),
            },
            objects: Vec::new(),
            endpoints: Vec::new(),
        };
        // Each pair is dropped once read: the raw list shrinks while the view grows.
        for kv in kvs {
            match keys.classify(kv.key()) {
                KeyKind::Config => {
                    view.snapshot.config = Some(parse_config(&keys.config(), kv.value())?);
                }
                KeyKind::Node(name) => view.snapshot.nodes.extend(parse_node(&name, kv.value())),
                KeyKind::Block(b) => view.snapshot.blocks.push(block_owner(b, &kv)),
                KeyKind::Object(kind, namespace, name) => {
                    if let Ok(value) = serde_json::from_slice(kv.value()) {
                        each(StoredObject {
                            kind,
                            namespace,
                            name,
                            value,
                        });
                    }
                }
                KeyKind::Endpoint(..) => {
                    view.endpoints
                        .extend(parse_endpoint(keys, kv.key(), kv.value()));
                }
                KeyKind::Other => {}
            }
        }
        view.snapshot.blocks.sort_by_key(|b| b.block);
        view.endpoints.sort();
        Ok(view)
    }
}
