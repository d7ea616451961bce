//! Weft's cluster datastore: the cluster config (pod CIDRs, block sizes, backend), node
//! records and block ownership, behind one interface ([`Datastore`]) with two
//! implementations: [`EtcdStore`] (etcd v3, many nodes, leases and compare-and-swap),
//! [`LocalStore`] (one node, one JSON file, no server) and, with the feature `kubernetes`,
//! `kube::KubeStore` (the Kubernetes API: Nodes, Pods, Namespaces, NetworkPolicies, and
//! WeftBlock custom resources or the nodes' podCIDRs).
//!
//! Owns: the config model and its validation ([`ClusterConfig`]), the node/block model, the
//! key layout in etcd, block enumeration and claiming, lease handling, watches.
//!
//! Must not: touch the kernel or the network configuration, know about CNI or the plugin,
//! or be linked into the plugin binaries (it pulls in tokio and gRPC). It decides nothing
//! about routing: it reports who owns what, and the agent acts on it.
//!
//! It also keeps the policy objects (Namespaces, NetworkPolicies, PodLabels) as opaque JSON
//! by kind/namespace/name ([`ObjectKind`]); their meaning belongs to `weft-policy`.
//!
//! The safety property everything here serves: a block has at most one owner at a time,
//! and a block is handed out again only once the datastore itself has dropped the old
//! owner's key (its lease expired or was revoked, or the owner released it). Every write
//! that can race is a single transaction; every etcd request is bounded by a timeout.

mod blocks;
mod config;
mod error;
mod etcd;
mod keys;
#[cfg(feature = "kubernetes")]
pub mod kube;
mod local;
mod model;
mod objects;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use tokio::sync::mpsc;

pub use config::{
    BackendKind, ClusterConfig, DEFAULT_BLOCK_SIZE_V4, DEFAULT_BLOCK_SIZE_V6, DEFAULT_VXLAN_PORT,
    DEFAULT_VXLAN_VNI, Family, MAX_VNI,
};
pub use error::{ConfigError, StoreError};
pub use etcd::{EtcdOptions, EtcdStore, TlsFiles};
pub use keys::DEFAULT_PREFIX;
pub use local::LocalStore;
pub use model::{
    BlockOwner, EndpointRecord, NodeRecord, PolicyView, Snapshot, WatchEvent, validate_node_name,
};
pub use objects::{ObjectEvent, ObjectKind, StoredObject};

/// An etcd lease id (the local store numbers its own from 1).
pub type LeaseId = i64;
/// A datastore revision: every write increases it.
pub type Revision = i64;

/// The cluster datastore. All methods are safe to call concurrently, from many processes.
/// Methods that take a node name validate it ([`validate_node_name`]) and write nothing
/// when it is invalid.
pub trait Datastore: Send + Sync + 'static {
    /// Store `cfg` if no config exists (transaction); if one exists, equal → Ok(existing),
    /// different → ConfigConflict. Nothing written on error.
    fn init_config(
        &self,
        cfg: &ClusterConfig,
    ) -> impl Future<Output = Result<ClusterConfig, StoreError>> + Send;

    fn config(&self) -> impl Future<Output = Result<Option<ClusterConfig>, StoreError>> + Send;

    /// A lease of at least `ttl` (whole seconds, rounded up; etcd may grant more).
    fn grant_lease(
        &self,
        ttl: Duration,
    ) -> impl Future<Output = Result<LeaseId, StoreError>> + Send;

    /// One keep-alive round trip; Ok(remaining ttl); LeaseNotFound when it expired.
    fn keep_alive(
        &self,
        lease: LeaseId,
    ) -> impl Future<Output = Result<Duration, StoreError>> + Send;

    /// Revoking a lease that is already gone succeeds.
    fn revoke_lease(&self, lease: LeaseId) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Node record attached to `lease` (disappears when the lease expires).
    fn put_node(
        &self,
        rec: &NodeRecord,
        lease: LeaseId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Claim the first free block of `family` for `node`, attached to `lease`, by
    /// compare-and-swap (create-if-absent); retry on a lost race; NoFreeBlock when the CIDR
    /// is full.
    fn claim_block(
        &self,
        node: &str,
        family: Family,
        lease: LeaseId,
    ) -> impl Future<Output = Result<IpNet, StoreError>> + Send;

    /// Re-attach a block this node held (e.g. after restart / new lease): succeeds if the
    /// block key is absent or already owned by `node` (then re-put with `lease`), NotOwner
    /// otherwise. CAS. InvalidBlock if `block` is not one of the cluster's blocks.
    fn adopt_block(
        &self,
        node: &str,
        block: IpNet,
        lease: LeaseId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Delete the block key only if owned by `node` (CAS). Ok if it is already absent.
    fn release_block(
        &self,
        node: &str,
        block: IpNet,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Config, nodes and blocks at one revision. Unreadable node records are left out
    /// (watch reports them as deleted); an unreadable config is `Corrupt`.
    fn snapshot(&self) -> impl Future<Output = Result<Snapshot, StoreError>> + Send;

    /// Events after `from` (snapshot().revision). Runs a background task; on watch failure
    /// it reconnects (with backoff, forever) and sends Resync. Channel closes only when the
    /// store is dropped (or the receiver is).
    fn watch(
        &self,
        from: Revision,
    ) -> impl Future<Output = Result<mpsc::Receiver<WatchEvent>, StoreError>> + Send;

    /// Stores (creates or replaces) a policy object. `namespace` is "" for cluster-scoped
    /// kinds; names with '/' are refused (`InvalidObjectName`).
    fn put_object(
        &self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
        value: &serde_json::Value,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes a policy object; Ok(false) when there was none.
    fn delete_object(
        &self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Every object of `kind` at one revision, sorted by namespace and name, and that
    /// revision (to start `watch_objects` from). A value that is not JSON is `Corrupt`.
    fn list_objects(
        &self,
        kind: ObjectKind,
    ) -> impl Future<Output = Result<(Revision, Vec<StoredObject>), StoreError>> + Send;

    /// Changes to policy objects and endpoints after `from`, with the same
    /// reconnect/Resync contract as [`Datastore::watch`].
    fn watch_objects(
        &self,
        from: Revision,
    ) -> impl Future<Output = Result<mpsc::Receiver<ObjectEvent>, StoreError>> + Send;

    /// Publishes (creates or replaces) a pod's endpoint, attached to its node's `lease`.
    /// LeaseNotFound when the lease is gone; invalid names are refused.
    fn put_endpoint(
        &self,
        rec: &EndpointRecord,
        lease: LeaseId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes a pod's endpoint; Ok(false) when there was none.
    fn delete_endpoint(
        &self,
        node: &str,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Every endpoint of every node at one revision, sorted by node, namespace and name.
    /// Unreadable records are left out (the watch reports them as deleted).
    fn list_endpoints(
        &self,
    ) -> impl Future<Output = Result<(Revision, Vec<EndpointRecord>), StoreError>> + Send;

    /// Nodes, blocks, policy objects and endpoints, all at one revision (one read).
    fn policy_view(&self) -> impl Future<Output = Result<PolicyView, StoreError>> + Send;

    /// [`Datastore::policy_view`] with the objects handed to `each` one at a time (in an
    /// order of the store's choosing) instead of collected: the returned view's `objects`
    /// is empty. A reader
    /// that keeps only what it makes of each object (weftd parses them) then never holds
    /// every object's JSON at once — at 10,000 pods that whole list is ~25 MiB. The
    /// default collects the view and hands its objects over.
    fn policy_view_each<F: FnMut(StoredObject) + Send>(
        &self,
        mut each: F,
    ) -> impl Future<Output = Result<PolicyView, StoreError>> + Send {
        async move {
            let mut pv = self.policy_view().await?;
            for o in std::mem::take(&mut pv.objects) {
                each(o);
            }
            Ok(pv)
        }
    }

    /// The PodLabels object of `namespace/name` read from the source of truth now, for a pod
    /// whose CNI ADD can come before the datastore's watch reports it (Kubernetes). Stores
    /// whose pod objects are written before the ADD answer None: their view already has it.
    fn fetch_pod(
        &self,
        _namespace: &str,
        _name: &str,
    ) -> impl Future<Output = Result<Option<StoredObject>, StoreError>> + Send {
        async { Ok(None) }
    }
}

/// Either store, chosen at run time from the agent's configuration.
#[derive(Clone)]
pub enum AnyStore {
    Etcd(EtcdStore),
    Local(LocalStore),
    #[cfg(feature = "kubernetes")]
    Kube(kube::KubeStore),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnyStore::Etcd($s) => $e,
            AnyStore::Local($s) => $e,
            #[cfg(feature = "kubernetes")]
            AnyStore::Kube($s) => $e,
        }
    };
}

impl Datastore for AnyStore {
    async fn init_config(&self, cfg: &ClusterConfig) -> Result<ClusterConfig, StoreError> {
        dispatch!(self, s => s.init_config(cfg).await)
    }
    async fn config(&self) -> Result<Option<ClusterConfig>, StoreError> {
        dispatch!(self, s => s.config().await)
    }
    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        dispatch!(self, s => s.grant_lease(ttl).await)
    }
    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        dispatch!(self, s => s.keep_alive(lease).await)
    }
    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        dispatch!(self, s => s.revoke_lease(lease).await)
    }
    async fn put_node(&self, rec: &NodeRecord, lease: LeaseId) -> Result<(), StoreError> {
        dispatch!(self, s => s.put_node(rec, lease).await)
    }
    async fn claim_block(
        &self,
        node: &str,
        family: Family,
        lease: LeaseId,
    ) -> Result<IpNet, StoreError> {
        dispatch!(self, s => s.claim_block(node, family, lease).await)
    }
    async fn adopt_block(
        &self,
        node: &str,
        block: IpNet,
        lease: LeaseId,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.adopt_block(node, block, lease).await)
    }
    async fn release_block(&self, node: &str, block: IpNet) -> Result<(), StoreError> {
        dispatch!(self, s => s.release_block(node, block).await)
    }
    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        dispatch!(self, s => s.snapshot().await)
    }
    async fn watch(&self, from: Revision) -> Result<mpsc::Receiver<WatchEvent>, StoreError> {
        dispatch!(self, s => s.watch(from).await)
    }
    async fn put_object(
        &self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
        value: &serde_json::Value,
    ) -> Result<(), StoreError> {
        dispatch!(self, s => s.put_object(kind, namespace, name, value).await)
    }
    async fn delete_object(
        &self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.delete_object(kind, namespace, name).await)
    }
    async fn list_objects(
        &self,
        kind: ObjectKind,
    ) -> Result<(Revision, Vec<StoredObject>), StoreError> {
        dispatch!(self, s => s.list_objects(kind).await)
    }
    async fn watch_objects(
        &self,
        from: Revision,
    ) -> Result<mpsc::Receiver<ObjectEvent>, StoreError> {
        dispatch!(self, s => s.watch_objects(from).await)
    }
    async fn put_endpoint(&self, rec: &EndpointRecord, lease: LeaseId) -> Result<(), StoreError> {
        dispatch!(self, s => s.put_endpoint(rec, lease).await)
    }
    async fn delete_endpoint(
        &self,
        node: &str,
        namespace: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        dispatch!(self, s => s.delete_endpoint(node, namespace, name).await)
    }
    async fn list_endpoints(&self) -> Result<(Revision, Vec<EndpointRecord>), StoreError> {
        dispatch!(self, s => s.list_endpoints().await)
    }
    async fn policy_view(&self) -> Result<PolicyView, StoreError> {
        dispatch!(self, s => s.policy_view().await)
    }
    async fn policy_view_each<F: FnMut(StoredObject) + Send>(
        &self,
        each: F,
    ) -> Result<PolicyView, StoreError> {
        dispatch!(self, s => s.policy_view_each(each).await)
    }
    async fn fetch_pod(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<StoredObject>, StoreError> {
        dispatch!(self, s => s.fetch_pod(namespace, name).await)
    }
}

/// A shared store is a store, so the agent can hand one to several tasks.
impl<T: Datastore> Datastore for Arc<T> {
    fn init_config(
        &self,
        cfg: &ClusterConfig,
    ) -> impl Future<Output = Result<ClusterConfig, StoreError>> + Send {
        (**self).init_config(cfg)
    }
    fn config(&self) -> impl Future<Output = Result<Option<ClusterConfig>, StoreError>> + Send {
        (**self).config()
    }
    fn grant_lease(
        &self,
        ttl: Duration,
    ) -> impl Future<Output = Result<LeaseId, StoreError>> + Send {
        (**self).grant_lease(ttl)
    }
    fn keep_alive(
        &self,
        lease: LeaseId,
    ) -> impl Future<Output = Result<Duration, StoreError>> + Send {
        (**self).keep_alive(lease)
    }
    fn revoke_lease(&self, lease: LeaseId) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).revoke_lease(lease)
    }
    fn put_node(
        &self,
        rec: &NodeRecord,
        lease: LeaseId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).put_node(rec, lease)
    }
    fn claim_block(
        &self,
        node: &str,
        family: Family,
        lease: LeaseId,
    ) -> impl Future<Output = Result<IpNet, StoreError>> + Send {
        (**self).claim_block(node, family, lease)
    }
    fn adopt_block(
        &self,
        node: &str,
        block: IpNet,
        lease: LeaseId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).adopt_block(node, block, lease)
    }
    fn release_block(
        &self,
        node: &str,
        block: IpNet,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).release_block(node, block)
    }
    fn snapshot(&self) -> impl Future<Output = Result<Snapshot, StoreError>> + Send {
        (**self).snapshot()
    }
    fn watch(
        &self,
        from: Revision,
    ) -> impl Future<Output = Result<mpsc::Receiver<WatchEvent>, StoreError>> + Send {
        (**self).watch(from)
    }
    fn put_object(
        &self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
        value: &serde_json::Value,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).put_object(kind, namespace, name, value)
    }
    fn delete_object(
        &self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        (**self).delete_object(kind, namespace, name)
    }
    fn list_objects(
        &self,
        kind: ObjectKind,
    ) -> impl Future<Output = Result<(Revision, Vec<StoredObject>), StoreError>> + Send {
        (**self).list_objects(kind)
    }
    fn watch_objects(
        &self,
        from: Revision,
    ) -> impl Future<Output = Result<mpsc::Receiver<ObjectEvent>, StoreError>> + Send {
        (**self).watch_objects(from)
    }
    fn put_endpoint(
        &self,
        rec: &EndpointRecord,
        lease: LeaseId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).put_endpoint(rec, lease)
    }
    fn delete_endpoint(
        &self,
        node: &str,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        (**self).delete_endpoint(node, namespace, name)
    }
    fn list_endpoints(
        &self,
    ) -> impl Future<Output = Result<(Revision, Vec<EndpointRecord>), StoreError>> + Send {
        (**self).list_endpoints()
    }
    fn policy_view(&self) -> impl Future<Output = Result<PolicyView, StoreError>> + Send {
        (**self).policy_view()
    }
    fn policy_view_each<F: FnMut(StoredObject) + Send>(
        &self,
        each: F,
    ) -> impl Future<Output = Result<PolicyView, StoreError>> + Send {
        (**self).policy_view_each(each)
    }
    fn fetch_pod(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<StoredObject>, StoreError>> + Send {
        (**self).fetch_pod(namespace, name)
    }
}
