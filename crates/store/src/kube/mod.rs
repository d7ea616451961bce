//! The Kubernetes API as weft's datastore ([`KubeStore`]): Nodes, Pods, Namespaces and
//! NetworkPolicies are the cluster's own objects; weft's blocks are WeftBlock custom
//! resources (`ipam: weft`) or the nodes' `spec.podCIDRs` (`ipam: kubernetes`); the cluster
//! config is the ConfigMap `weft-config`.
//!
//! Reads are served from a local cache that list-then-watch keeps current ([`mirror`]), so
//! weftd asks the API server nothing per pod or per policy. Writes go to the API server and
//! are folded into the cache from the server's answer, so a caller reads its own writes.
//!
//! How the etcd contract maps here:
//! - A lease is the node's life: blocks belong to the Node object (ownerReferences, so the
//!   garbage collector frees them when the Node is deleted; weftd's own sweep does the same
//!   where no garbage collector runs). `grant_lease` waits until the Node exists,
//!   `keep_alive` is a round trip to the API server, `revoke_lease` frees nothing.
//! - A block is claimed by creating its WeftBlock (the name is the CIDR, so two nodes racing
//!   for it get one 201 and one 409), moved and released only with UID and resourceVersion
//!   preconditions.
//! - Endpoints of other nodes are their pods' `status.podIPs`; this process's own pods count
//!   from their CNI attach on (`put_endpoint`), before the kubelet reports them.
//!
//! Must not: write anything but its Node's status, WeftBlocks, and (for `init_config` and
//! `put_object`, which weftd does not call on a cluster) the ConfigMap and policy objects.

pub mod configmap;
mod convert;
mod mirror;
mod slim;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams,
    Preconditions,
};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

pub use configmap::{IpamMode, KubeConfig};
pub use convert::{
    ANN_READY, ANN_UNDERLAY_OVERRIDE, LABEL_NS_NAME, block_name, node_addresses as addresses_of,
};

use crate::blocks::BlockSpace;
use crate::config::{ClusterConfig, Family};
use crate::error::{ConfigError, StoreError};
use crate::model::{EndpointRecord, NodeRecord, PolicyView, Snapshot, WatchEvent};
use crate::objects::{ObjectEvent, ObjectKind, StoredObject, check_endpoint_names, check_names};
use crate::{Datastore, LeaseId, Revision, validate_node_name};
use mirror::{BlockEntry, Change, Kind, State};
use slim::{SlimNode, SlimPod};

/// The ConfigMap that holds the cluster config.
pub const CONFIG_MAP: &str = "weft-config";
/// How long a read waits for the caches' first list before it reports the API unavailable.
const SYNC_WAIT: Duration = Duration::from_secs(10);
/// Rounds of a compare-and-swap loop before giving up (each lost round means someone else
/// wrote the same object meanwhile).
const CAS_ROUNDS: usize = 16;
/// Objects per page of a watch's list.
const LIST_PAGE: u32 = 500;
/// How often orphaned blocks (their Node gone) are looked for, besides at each Node delete.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// How to reach the API server.
#[derive(Debug, Clone)]
pub struct KubeOptions {
    /// A kubeconfig file; None infers like kubectl (`$KUBECONFIG`, `~/.kube/config`) and then
    /// the in-cluster ServiceAccount.
    pub kubeconfig: Option<PathBuf>,
    /// The namespace of weft's ConfigMap.
    pub namespace: String,
    /// IPAM mode for a cluster whose ConfigMap does not exist yet (`init_config` writes it).
    pub ipam: IpamMode,
    /// Bound on every request but watches.
    pub request_timeout: Duration,
}

impl Default for KubeOptions {
    fn default() -> KubeOptions {
        KubeOptions {
            kubeconfig: None,
            namespace: "weft-system".to_string(),
            ipam: IpamMode::Weft,
            request_timeout: Duration::from_secs(10),
        }
    }
}

fn block_resource() -> ApiResource {
    ApiResource {
        group: "weft.dev".into(),
        version: "v1".into(),
        api_version: "weft.dev/v1".into(),
        kind: "WeftBlock".into(),
        plural: "weftblocks".into(),
    }
}

/// A store on the Kubernetes API. Clones share one cache; its watches stop when the last
/// clone is dropped.
#[derive(Clone)]
pub struct KubeStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    opts: KubeOptions,
    ipam: IpamMode,
    state: Arc<Mutex<State>>,
    /// The last error of each watch, cleared when it lists again: why a read is waiting.
    errors: Arc<Mutex<BTreeMap<&'static str, String>>>,
    config: Mutex<Option<KubeConfig>>,
    lease_ttl: Mutex<Duration>,
    tasks: Vec<AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind, still consistent per field.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The API's answer as a [`StoreError`]: unreachable or overloaded servers are
/// `Unavailable` (the caller retries), a refusal names what was refused.
fn api_err(op: &'static str, e: kube::Error) -> StoreError {
    match e {
        kube::Error::Api(s) if s.code == 403 => StoreError::Forbidden {
            op,
            detail: s.message,
        },
        kube::Error::Api(s) if s.code >= 500 || s.code == 429 => StoreError::Unavailable {
            op,
            detail: s.message,
        },
        kube::Error::Api(s) => StoreError::Api {
            op,
            code: s.code,
            detail: s.message,
        },
        other => StoreError::Unavailable {
            op,
            detail: other.to_string(),
        },
    }
}

fn code_of(e: &kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        _ => 0,
    }
}

impl KubeStore {
    /// Connects (the client only; the server may be down) and starts the caches.
    pub async fn connect(opts: KubeOptions) -> Result<KubeStore, StoreError> {
        let config = match &opts.kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                    StoreError::Unavailable {
                        op: "connect",
                        detail: format!("kubeconfig {}: {e}", path.display()),
                    }
                })?;
                kube::Config::from_custom_kubeconfig(kc, &Default::default())
                    .await
                    .map_err(|e| StoreError::Unavailable {
                        op: "connect",
                        detail: format!("kubeconfig {}: {e}", path.display()),
                    })?
            }
            None => kube::Config::infer()
                .await
                .map_err(|e| StoreError::Unavailable {
                    op: "connect",
                    detail: format!("no kubeconfig and not in a cluster: {e}"),
                })?,
        };
        let client = Client::try_from(config).map_err(|e| StoreError::Unavailable {
            op: "connect",
            detail: e.to_string(),
        })?;
        // The ConfigMap's IPAM mode decides what the caches follow.
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &opts.namespace);
        let ipam = match tokio::time::timeout(opts.request_timeout, cms.get_opt(CONFIG_MAP)).await {
            Ok(Ok(Some(cm))) => configmap::parse(&cm.data.unwrap_or_default())?.ipam,
            Ok(Ok(None)) => opts.ipam,
            Ok(Err(e)) => return Err(api_err("connect", e)),
            Err(_) => {
                return Err(StoreError::Unavailable {
                    op: "connect",
                    detail: "the API server did not answer in time".into(),
                });
            }
        };
        let state = Arc::new(Mutex::new(State::new(ipam)));
        let errors = Arc::new(Mutex::new(BTreeMap::new()));
        let mut tasks = Vec::new();
        let w = |kind, name| Watch {
            kind,
            name,
            state: state.clone(),
            errors: errors.clone(),
        };
        // Nodes and Pods are watched as slim types (`slim`): only the fields weft reads are
        // decoded, so a list page holds names, labels and addresses, not whole objects.
        tasks.push(w(Kind::Nodes, "nodes").spawn(
            Api::<SlimNode>::all(client.clone()),
            |s, n: &SlimNode| s.upsert_node(&n.to_node()),
            |s, n: &SlimNode| s.remove_node(n.meta().name.as_deref().unwrap_or_default()),
        ));
        if ipam == IpamMode::Weft {
            tasks.push(w(Kind::Blocks, "weftblocks").spawn(
                Api::<DynamicObject>::all_with(client.clone(), &block_resource()),
                |s, b: &DynamicObject| {
                    if let Some((cidr, entry)) = block_entry(b) {
                        s.upsert_block(cidr, entry)
                    }
                },
                |s, b: &DynamicObject| {
                    s.remove_block(b.metadata.name.as_deref().unwrap_or_default())
                },
            ));
        }
        tasks.push(w(Kind::Namespaces, "namespaces").spawn(
            Api::<Namespace>::all(client.clone()),
            |s, n: &Namespace| s.upsert_namespace(n),
            |s, n: &Namespace| s.remove_namespace(n.metadata.name.as_deref().unwrap_or_default()),
        ));
        tasks.push(w(Kind::Policies, "networkpolicies").spawn(
            Api::<NetworkPolicy>::all(client.clone()),
            |s, p: &NetworkPolicy| s.upsert_policy(p),
            |s, p: &NetworkPolicy| {
                s.remove_policy(
                    p.metadata.namespace.as_deref().unwrap_or_default(),
                    p.metadata.name.as_deref().unwrap_or_default(),
                )
            },
        ));
        tasks.push(w(Kind::Pods, "pods").spawn(
            Api::<SlimPod>::all(client.clone()),
            |s, p: &SlimPod| s.upsert_pod(&p.to_pod()),
            |s, p: &SlimPod| {
                s.remove_pod(
                    p.meta().namespace.as_deref().unwrap_or_default(),
                    p.meta().name.as_deref().unwrap_or_default(),
                )
            },
        ));
        if ipam == IpamMode::Weft {
            tasks.push(spawn_sweeper(client.clone(), state.clone()));
        }
        Ok(KubeStore {
            inner: Arc::new(Inner {
                client,
                ipam,
                state,
                errors,
                config: Mutex::new(None),
                lease_ttl: Mutex::new(Duration::from_secs(20)),
                tasks,
                opts,
            }),
        })
    }

    pub fn ipam(&self) -> IpamMode {
        self.inner.ipam
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    async fn timed<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<Result<T, kube::Error>, StoreError> {
        tokio::time::timeout(self.inner.opts.request_timeout, fut)
            .await
            .map_err(|_| StoreError::Unavailable {
                op,
                detail: format!(
                    "no answer from the API server within {:?}",
                    self.inner.opts.request_timeout
                ),
            })
    }

    /// Waits until the caches of `kinds` have listed once.
    async fn synced(&self, op: &'static str, kinds: &[Kind]) -> Result<(), StoreError> {
        let kinds: Vec<Kind> = kinds
            .iter()
            .copied()
            .filter(|k| *k != Kind::Blocks || self.inner.ipam == IpamMode::Weft)
            .collect();
        let deadline = Instant::now() + SYNC_WAIT;
        loop {
            if kinds.iter().all(|k| self.state().synced.contains(k)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let errors = lock(&self.inner.errors);
                let why: Vec<String> = errors.iter().map(|(k, e)| format!("{k}: {e}")).collect();
                return Err(StoreError::Unavailable {
                    op,
                    detail: if why.is_empty() {
                        "the API caches have not listed yet".into()
                    } else {
                        format!("the API caches have not listed yet ({})", why.join("; "))
                    },
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The ConfigMap, parsed; None when it does not exist. Refuses (whole) a map with a bad
    /// value, and an `ipam: weft` pool that overlaps a node's podCIDR.
    pub async fn kube_config(&self) -> Result<Option<KubeConfig>, StoreError> {
        let api: Api<ConfigMap> =
            Api::namespaced(self.inner.client.clone(), &self.inner.opts.namespace);
        let cm = self
            .timed("config", api.get_opt(CONFIG_MAP))
            .await?
            .map_err(|e| api_err("config", e))?;
        let Some(cm) = cm else {
            return Ok(None);
        };
        let cfg = configmap::parse(&cm.data.unwrap_or_default())?;
        if cfg.ipam != self.inner.ipam {
            return Err(ConfigError::ConfigMap {
                key: "ipam".into(),
                reason: format!(
                    "changed from {} to {} while weftd runs; restart weftd to switch",
                    self.inner.ipam.as_str(),
                    cfg.ipam.as_str()
                ),
            }
            .into());
        }
        if cfg.ipam == IpamMode::Weft {
            self.synced("config", &[Kind::Nodes]).await?;
            self.check_pool(&cfg.cluster)?;
        }
        *lock(&self.inner.config) = Some(cfg.clone());
        Ok(Some(cfg))
    }

    /// weft's own pool and kube-controller-manager's node CIDRs must not share addresses:
    /// both would hand them out.
    fn check_pool(&self, cfg: &ClusterConfig) -> Result<(), ConfigError> {
        let st = self.state();
        for f in cfg.families() {
            let Some(pool) = cfg.cidr(f) else { continue };
            for (node, e) in &st.nodes {
                if let Some(c) = e
                    .pod_cidrs
                    .iter()
                    .find(|c| c.contains(&pool.network()) || pool.contains(&c.network()))
                {
                    return Err(ConfigError::ConfigMap {
                        key: match f {
                            Family::V4 => "cidrV4".into(),
                            Family::V6 => "cidrV6".into(),
                        },
                        reason: format!(
                            "{pool} overlaps node {node}'s podCIDR {c}, which \
                             kube-controller-manager hands out: set ipam: kubernetes to use \
                             the node CIDRs, or give weft a range of its own"
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    async fn cluster_config(&self, op: &'static str) -> Result<ClusterConfig, StoreError> {
        if let Some(c) = lock(&self.inner.config).clone() {
            return Ok(c.cluster);
        }
        match self.kube_config().await {
            Ok(Some(c)) => Ok(c.cluster),
            Ok(None) => Err(StoreError::NoConfig),
            Err(StoreError::Unavailable { detail, .. }) => {
                Err(StoreError::Unavailable { op, detail })
            }
            Err(e) => Err(e),
        }
    }

    /// A Node, fresh from the API server (and folded into the cache).
    async fn get_node(&self, op: &'static str, name: &str) -> Result<Node, StoreError> {
        let api: Api<Node> = Api::all(self.inner.client.clone());
        match self
            .timed(op, api.get_opt(name))
            .await?
            .map_err(|e| api_err(op, e))?
        {
            Some(n) => {
                self.state().upsert_node(&n);
                Ok(n)
            }
            None => Err(StoreError::NotYet {
                op,
                reason: format!(
                    "there is no Node {name:?} yet (the kubelet registers it; weftd's NODE_NAME \
                     must be the node's name)"
                ),
            }),
        }
    }

    /// The node's underlay addresses: the operator's `weft.dev/underlay-address` annotation,
    /// else its InternalIPs.
    pub async fn node_addresses(
        &self,
        name: &str,
    ) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>), StoreError> {
        let n = self.get_node("node addresses", name).await?;
        Ok(convert::node_addresses(&n))
    }

    fn blocks_api(&self) -> Api<DynamicObject> {
        Api::all_with(self.inner.client.clone(), &block_resource())
    }

    async fn get_block(
        &self,
        op: &'static str,
        b: &IpNet,
    ) -> Result<Option<DynamicObject>, StoreError> {
        let api = self.blocks_api();
        let found = self
            .timed(op, api.get_opt(&block_name(b)))
            .await?
            .map_err(|e| api_err(op, e))?;
        let mut st = self.state();
        match &found {
            Some(o) => {
                if let Some((c, e)) = block_entry(o) {
                    st.upsert_block(c, e);
                }
            }
            None => st.remove_block(&block_name(b)),
        }
        Ok(found)
    }

    /// Creates the WeftBlock for `b`, owned by `node`; Ok(false) when it exists already.
    async fn create_block(
        &self,
        op: &'static str,
        node: &Node,
        b: IpNet,
    ) -> Result<bool, StoreError> {
        let node_name = node.metadata.name.clone().unwrap_or_default();
        let mut obj = DynamicObject::new(&block_name(&b), &block_resource()).data(json!({
            "spec": {"cidr": b.to_string(), "node": node_name, "family": Family::of(&b).key()},
        }));
        obj.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: node_name,
            uid: node.metadata.uid.clone().unwrap_or_default(),
            ..OwnerReference::default()
        }]);
        let api = self.blocks_api();
        match self
            .timed(op, api.create(&PostParams::default(), &obj))
            .await?
        {
            Ok(created) => {
                if let Some((c, e)) = block_entry(&created) {
                    self.state().upsert_block(c, e);
                }
                Ok(true)
            }
            Err(e) if code_of(&e) == 409 => Ok(false),
            Err(e) => Err(api_err(op, e)),
        }
    }

    /// Deletes `obj` only as it was read: same UID, same resourceVersion.
    async fn delete_block_exactly(
        &self,
        op: &'static str,
        obj: &DynamicObject,
    ) -> Result<bool, StoreError> {
        let name = obj.metadata.name.clone().unwrap_or_default();
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: obj.metadata.uid.clone(),
                resource_version: obj.metadata.resource_version.clone(),
            }),
            ..DeleteParams::default()
        };
        let api = self.blocks_api();
        match self.timed(op, api.delete(&name, &dp)).await? {
            Ok(_) => {
                self.state().remove_block(&name);
                Ok(true)
            }
            Err(e) if code_of(&e) == 404 => {
                self.state().remove_block(&name);
                Ok(true)
            }
            Err(e) if code_of(&e) == 409 => Ok(false),
            Err(e) => Err(api_err(op, e)),
        }
    }

    /// Starts a watch on the mirror's log: past changes after `from`, then live ones.
    fn subscribe<T: Clone + Send + 'static>(
        &self,
        from: Revision,
        pick: fn(&Change) -> Option<T>,
        resync: T,
    ) -> mpsc::Receiver<T> {
        let (tx, rx) = mpsc::channel(1024);
        let (past, mut live) = self.state().since(from);
        tokio::spawn(async move {
            let mut last = from;
            match past {
                None => {
                    if tx.send(resync.clone()).await.is_err() {
                        return;
                    }
                }
                Some(list) => {
                    for (rev, c) in list {
                        last = rev;
                        if let Some(ev) = pick(&c)
                            && tx.send(ev).await.is_err()
                        {
                            return;
                        }
                    }
                }
            }
            loop {
                match live.recv().await {
                    Ok((rev, c)) => {
                        if rev <= last {
                            continue;
                        }
                        last = rev;
                        if let Some(ev) = pick(&c)
                            && tx.send(ev).await.is_err()
                        {
                            return;
                        }
                    }
                    // Fell behind the broadcast: the receiver must load everything again.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        if tx.send(resync.clone()).await.is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        rx
    }

    fn snapshot_locked(&self, st: &State, config: Option<ClusterConfig>) -> Snapshot {
        Snapshot {
            revision: st.rev,
            config,
            nodes: st.node_records(),
            blocks: st.block_owners(),
        }
    }

    /// The pod `namespace/name` read from the API server now (a pod the cache has not seen
    /// yet: its CNI ADD can come before the watch event). Folded into the cache.
    pub async fn fetch_pod_now(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<StoredObject>, StoreError> {
        let api: Api<Pod> = Api::namespaced(self.inner.client.clone(), namespace);
        let pod = self
            .timed("fetch pod", api.get_opt(name))
            .await?
            .map_err(|e| api_err("fetch pod", e))?;
        let mut st = self.state();
        match pod {
            Some(p) => st.upsert_pod(&p),
            None => return Ok(None),
        }
        let key = (namespace.to_string(), name.to_string());
        Ok(st.pods.get(&key).map(|p| StoredObject {
            kind: ObjectKind::PodLabels,
            namespace: key.0.clone(),
            name: key.1.clone(),
            value: p.labels_json(&key.0, &key.1),
        }))
    }
}

/// One Node as weft sees it (`weftctl status --kubernetes`).
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSummary {
    pub name: String,
    /// What its weftd published, once its network is up; None before (or without weft).
    pub record: Option<NodeRecord>,
    /// The blocks it owns (WeftBlocks, or its podCIDRs).
    pub blocks: Vec<IpNet>,
    /// Pods with an address on it.
    pub pods: usize,
}

impl KubeStore {
    /// Every Node, weft-ready or not, with its blocks and pods.
    pub async fn nodes(&self) -> Result<Vec<NodeSummary>, StoreError> {
        self.synced("nodes", &[Kind::Nodes, Kind::Blocks, Kind::Pods])
            .await?;
        let st = self.state();
        let owners = st.block_owners();
        let endpoints = st.endpoints();
        Ok(st
            .nodes
            .iter()
            .map(|(name, e)| NodeSummary {
                name: name.clone(),
                record: e.record.clone(),
                blocks: owners
                    .iter()
                    .filter(|o| o.node == *name)
                    .map(|o| o.block)
                    .collect(),
                pods: endpoints.iter().filter(|p| p.node == *name).count(),
            })
            .collect())
    }
}

fn block_entry(o: &DynamicObject) -> Option<(IpNet, BlockEntry)> {
    let spec = o.data.get("spec")?;
    let cidr: IpNet = spec.get("cidr")?.as_str()?.parse().ok()?;
    Some((
        cidr,
        BlockEntry {
            name: o.metadata.name.clone()?,
            node: spec.get("node")?.as_str()?.to_string(),
            uid: o.metadata.uid.clone().unwrap_or_default(),
            resource_version: o.metadata.resource_version.clone().unwrap_or_default(),
        },
    ))
}

/// One list-then-watch feeding the mirror.
struct Watch {
    kind: Kind,
    name: &'static str,
    state: Arc<Mutex<State>>,
    errors: Arc<Mutex<BTreeMap<&'static str, String>>>,
}

impl Watch {
    fn spawn<K>(
        self,
        api: Api<K>,
        apply: fn(&mut State, &K),
        delete: fn(&mut State, &K),
    ) -> AbortHandle
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
    {
        tokio::spawn(async move {
            // Bookmarks (the default) keep the resourceVersion fresh on quiet kinds, so a
            // reconnect resumes instead of relisting; a relist, when the server says the
            // version expired, is folded in as a diff (mirror::State::init_done).
            //
            // Lists are paginated, 500 objects a page, each page folded into the mirror and
            // dropped before the next is read. The list semantic stays `MostRecent`: with
            // `Any` (resourceVersion=0) the API server answers from its watch cache and
            // ignores the limit, one page of the whole kind.
            let config = watcher::Config::default()
                .list_semantic(watcher::ListSemantic::MostRecent)
                .page_size(LIST_PAGE);
            let mut events = watcher(api, config).default_backoff().boxed();
            while let Some(ev) = events.next().await {
                match ev {
                    Ok(ev) => {
                        let mut st = lock(&self.state);
                        match ev {
                            watcher::Event::Init => st.init(self.kind),
                            watcher::Event::InitApply(o) | watcher::Event::Apply(o) => {
                                apply(&mut st, &o)
                            }
                            watcher::Event::Delete(o) => delete(&mut st, &o),
                            watcher::Event::InitDone => {
                                st.init_done(self.kind);
                                lock(&self.errors).remove(self.name);
                            }
                        }
                    }
                    Err(e) => {
                        lock(&self.errors).insert(self.name, e.to_string());
                    }
                }
            }
        })
        .abort_handle()
    }
}

/// Deletes WeftBlocks whose Node is gone (with UID preconditions): the garbage collector does
/// it too, through ownerReferences, but a cluster may run without one, and a Node deleted
/// and created again under the same name must not keep the old one's blocks.
fn spawn_sweeper(client: Client, state: Arc<Mutex<State>>) -> AbortHandle {
    tokio::spawn(async move {
        let api: Api<DynamicObject> = Api::all_with(client, &block_resource());
        let wake = lock(&state).node_gone.clone();
        loop {
            let orphans: Vec<(String, String)> = {
                let st = lock(&state);
                if !(st.synced.contains(&Kind::Nodes) && st.synced.contains(&Kind::Blocks)) {
                    Vec::new()
                } else {
                    st.blocks
                        .values()
                        .filter(|b| !st.nodes.contains_key(&b.node))
                        .map(|b| (b.name.clone(), b.uid.clone()))
                        .collect()
                }
            };
            for (name, uid) in orphans {
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: Some(uid),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                // Another node's sweep or the garbage collector may be first: fine.
                let _ = api.delete(&name, &dp).await;
            }
            // Whichever comes first: a Node deleted, or the round's time.
            let _ = tokio::time::timeout(SWEEP_INTERVAL, wake.notified()).await;
        }
    })
    .abort_handle()
}

impl Datastore for KubeStore {
    async fn init_config(&self, cfg: &ClusterConfig) -> Result<ClusterConfig, StoreError> {
        cfg.validate()?;
        let api: Api<ConfigMap> =
            Api::namespaced(self.inner.client.clone(), &self.inner.opts.namespace);
        for _ in 0..CAS_ROUNDS {
            if let Some(existing) = self.kube_config().await? {
                if existing.cluster == *cfg {
                    return Ok(existing.cluster);
                }
                return Err(StoreError::ConfigConflict {
                    existing: Box::new(existing.cluster),
                    requested: Box::new(cfg.clone()),
                });
            }
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(CONFIG_MAP.into()),
                    namespace: Some(self.inner.opts.namespace.clone()),
                    ..ObjectMeta::default()
                },
                data: Some(configmap::render(&KubeConfig {
                    cluster: cfg.clone(),
                    ipam: self.inner.ipam,
                    mtu: None,
                })),
                ..ConfigMap::default()
            };
            match self
                .timed("init_config", api.create(&PostParams::default(), &cm))
                .await?
            {
                Ok(_) => {}
                Err(e) if code_of(&e) == 409 => {}
                Err(e) => return Err(api_err("init_config", e)),
            }
        }
        Err(StoreError::Unavailable {
            op: "init_config",
            detail: "the ConfigMap kept changing".into(),
        })
    }

    async fn config(&self) -> Result<Option<ClusterConfig>, StoreError> {
        Ok(self.kube_config().await?.map(|c| c.cluster))
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        *lock(&self.inner.lease_ttl) = ttl;
        self.keep_alive(1).await?;
        Ok(1)
    }

    async fn keep_alive(&self, _lease: LeaseId) -> Result<Duration, StoreError> {
        let v = self
            .timed("keep_alive", self.inner.client.apiserver_version())
            .await?;
        v.map_err(|e| api_err("keep_alive", e))?;
        Ok(*lock(&self.inner.lease_ttl))
    }

    async fn revoke_lease(&self, _lease: LeaseId) -> Result<(), StoreError> {
        Ok(())
    }

    async fn put_node(&self, rec: &NodeRecord, _lease: LeaseId) -> Result<(), StoreError> {
        rec.validate()?;
        let now = chrono_now();
        // Strategic merge: annotations are merged key by key and conditions by type, so the
        // kubelet's conditions and others' annotations stay.
        let patch = json!({
            "metadata": {"annotations": convert::node_annotations(rec)},
            "status": {"conditions": [{
                "type": "NetworkUnavailable",
                "status": "False",
                "reason": "WeftIsUp",
                "message": "weft set up this node's pod network",
                "lastTransitionTime": now,
                "lastHeartbeatTime": now,
            }]},
        });
        let api: Api<Node> = Api::all(self.inner.client.clone());
        let pp = PatchParams::default();
        match self
            .timed(
                "put_node",
                api.patch_status(&rec.name, &pp, &Patch::Strategic(&patch)),
            )
            .await?
        {
            Ok(n) => {
                self.state().upsert_node(&n);
                Ok(())
            }
            Err(e) if code_of(&e) == 404 => Err(StoreError::NotYet {
                op: "put_node",
                reason: format!("there is no Node {:?} yet", rec.name),
            }),
            Err(e) => Err(api_err("put_node", e)),
        }
    }

    async fn claim_block(
        &self,
        node: &str,
        family: Family,
        _lease: LeaseId,
    ) -> Result<IpNet, StoreError> {
        validate_node_name(node)?;
        let cfg = self.cluster_config("claim_block").await?;
        let n = self.get_node("claim_block", node).await?;
        if self.inner.ipam == IpamMode::Kubernetes {
            return match convert::pod_cidrs(&n)
                .into_iter()
                .find(|c| Family::of(c) == family)
            {
                Some(c) => Ok(c),
                None => Err(StoreError::NotYet {
                    op: "claim_block",
                    reason: format!(
                        "Node {node:?} has no {family} spec.podCIDRs yet (ipam: kubernetes): run \
                         kube-controller-manager with --allocate-node-cidrs=true \
                         --cluster-cidr={} --node-cidr-mask-size{}=<prefix length>, or set the \
                         node's podCIDRs",
                        cfg.cidr(family).map(|c| c.to_string()).unwrap_or_default(),
                        match family {
                            Family::V4 => "-ipv4",
                            Family::V6 => "-ipv6",
                        }
                    ),
                }),
            };
        }
        let space = BlockSpace::new(&cfg, family)?;
        self.synced("claim_block", &[Kind::Blocks]).await?;
        let mut lost: Vec<IpNet> = Vec::new();
        // Every lost round is a block another node took; the loop ends when the pool is full.
        loop {
            let taken: Vec<IpNet> = {
                let st = self.state();
                st.blocks
                    .keys()
                    .copied()
                    .chain(lost.iter().copied())
                    .collect()
            };
            let Some(b) = space.first_free(&taken) else {
                return Err(StoreError::NoFreeBlock {
                    family,
                    cidr: cfg.cidr(family).ok_or(StoreError::FamilyDisabled(family))?,
                });
            };
            if self.create_block("claim_block", &n, b).await? {
                return Ok(b);
            }
            lost.push(b);
        }
    }

    async fn adopt_block(
        &self,
        node: &str,
        block: IpNet,
        _lease: LeaseId,
    ) -> Result<(), StoreError> {
        validate_node_name(node)?;
        let cfg = self.cluster_config("adopt_block").await?;
        BlockSpace::new(&cfg, Family::of(&block))?
            .check(&block)
            .map_err(|reason| StoreError::InvalidBlock { block, reason })?;
        let n = self.get_node("adopt_block", node).await?;
        if self.inner.ipam == IpamMode::Kubernetes {
            if convert::pod_cidrs(&n).contains(&block) {
                return Ok(());
            }
            let owner = self
                .state()
                .block_owners()
                .into_iter()
                .find(|o| o.block == block)
                .map(|o| o.node)
                .unwrap_or_else(|| "no node (not among this node's podCIDRs)".into());
            return Err(StoreError::NotOwner { block, owner });
        }
        for _ in 0..CAS_ROUNDS {
            match self.get_block("adopt_block", &block).await? {
                None => {
                    if self.create_block("adopt_block", &n, block).await? {
                        return Ok(());
                    }
                }
                Some(o) => {
                    let owner = block_entry(&o).map(|(_, e)| e.node).unwrap_or_default();
                    if owner != node {
                        return Err(StoreError::NotOwner { block, owner });
                    }
                    let uid = n.metadata.uid.clone().unwrap_or_default();
                    let owned_by_this_node = o
                        .metadata
                        .owner_references
                        .iter()
                        .flatten()
                        .any(|r| r.kind == "Node" && r.uid == uid);
                    if owned_by_this_node {
                        return Ok(());
                    }
                    // The block names this node but an older Node object of the same name:
                    // take it over by replacing the object as read (resourceVersion CAS),
                    // before the garbage collector frees it.
                    let mut fresh = o.clone();
                    fresh.metadata.owner_references = Some(vec![OwnerReference {
                        api_version: "v1".into(),
                        kind: "Node".into(),
                        name: node.to_string(),
                        uid,
                        ..OwnerReference::default()
                    }]);
                    let api = self.blocks_api();
                    let name = block_name(&block);
                    match self
                        .timed(
                            "adopt_block",
                            api.replace(&name, &PostParams::default(), &fresh),
                        )
                        .await?
                    {
                        Ok(o) => {
                            if let Some((c, e)) = block_entry(&o) {
                                self.state().upsert_block(c, e);
                            }
                            return Ok(());
                        }
                        Err(e) if matches!(code_of(&e), 404 | 409) => {}
                        Err(e) => return Err(api_err("adopt_block", e)),
                    }
                }
            }
        }
        Err(StoreError::Unavailable {
            op: "adopt_block",
            detail: format!("block {block} kept changing under us"),
        })
    }

    async fn release_block(&self, node: &str, block: IpNet) -> Result<(), StoreError> {
        validate_node_name(node)?;
        if self.inner.ipam == IpamMode::Kubernetes {
            // The node's podCIDRs are kube-controller-manager's to take back.
            return Ok(());
        }
        for _ in 0..CAS_ROUNDS {
            let Some(o) = self.get_block("release_block", &block).await? else {
                return Ok(());
            };
            let owner = block_entry(&o).map(|(_, e)| e.node).unwrap_or_default();
            if owner != node {
                return Err(StoreError::NotOwner { block, owner });
            }
            if self.delete_block_exactly("release_block", &o).await? {
                return Ok(());
            }
        }
        Err(StoreError::Unavailable {
            op: "release_block",
            detail: format!("block {block} kept changing under us"),
        })
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let config = self.config().await?;
        self.synced("snapshot", &[Kind::Nodes, Kind::Blocks])
            .await?;
        let st = self.state();
        Ok(self.snapshot_locked(&st, config))
    }

    async fn watch(&self, from: Revision) -> Result<mpsc::Receiver<WatchEvent>, StoreError> {
        Ok(self.subscribe(
            from,
            |c| match c {
                Change::Store(e) => Some(e.clone()),
                Change::Object(_) => None,
            },
            WatchEvent::Resync,
        ))
    }

    async fn put_object(
        &self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
        value: &Value,
    ) -> Result<(), StoreError> {
        check_names(kind, namespace, name)?;
        let client = self.inner.client.clone();
        let pp = PostParams::default();
        match kind {
            ObjectKind::NetworkPolicy => {
                let mut p: NetworkPolicy =
                    serde_json::from_value(value.clone()).map_err(|e| StoreError::Api {
                        op: "put_object",
                        code: 400,
                        detail: format!("not a NetworkPolicy: {e}"),
                    })?;
                p.metadata.name = Some(name.into());
                p.metadata.namespace = Some(namespace.into());
                let api: Api<NetworkPolicy> = Api::namespaced(client, namespace);
                let saved = create_or_replace(self, "put_object", &api, name, p).await?;
                self.state().upsert_policy(&saved);
            }
            ObjectKind::Namespace => {
                let labels: BTreeMap<String, String> = value
                    .pointer("/metadata/labels")
                    .and_then(|l| serde_json::from_value(l.clone()).ok())
                    .unwrap_or_default();
                let ns = Namespace {
                    metadata: ObjectMeta {
                        name: Some(name.into()),
                        labels: Some(labels),
                        ..ObjectMeta::default()
                    },
                    ..Namespace::default()
                };
                let api: Api<Namespace> = Api::all(client);
                let saved = create_or_replace(self, "put_object", &api, name, ns).await?;
                self.state().upsert_namespace(&saved);
            }
            ObjectKind::PodLabels => {
                let labels: BTreeMap<String, Option<String>> = value
                    .pointer("/metadata/labels")
                    .and_then(|l| serde_json::from_value(l.clone()).ok())
                    .unwrap_or_default();
                let api: Api<Pod> = Api::namespaced(client, namespace);
                let Some(mut pod) = self
                    .timed("put_object", api.get_opt(name))
                    .await?
                    .map_err(|e| api_err("put_object", e))?
                else {
                    return Err(StoreError::Api {
                        op: "put_object",
                        code: 404,
                        detail: format!(
                            "PodLabels on Kubernetes are the labels of Pod {namespace}/{name}, \
                             which does not exist"
                        ),
                    });
                };
                pod.metadata.labels = Some(
                    labels
                        .into_iter()
                        .filter_map(|(k, v)| Some((k, v?)))
                        .collect(),
                );
                let saved = self
                    .timed("put_object", api.replace(name, &pp, &pod))
                    .await?
                    .map_err(|e| api_err("put_object", e))?;
                self.state().upsert_pod(&saved);
            }
        }
        Ok(())
    }

    async fn delete_object(
        &self,
        kind: ObjectKind,
        namespace: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        check_names(kind, namespace, name)?;
        let client = self.inner.client.clone();
        let dp = DeleteParams::default();
        let result = match kind {
            ObjectKind::NetworkPolicy => {
                let api: Api<NetworkPolicy> = Api::namespaced(client, namespace);
                self.timed("delete_object", api.delete(name, &dp))
                    .await?
                    .map(|_| ())
            }
            ObjectKind::Namespace => {
                let api: Api<Namespace> = Api::all(client);
                self.timed("delete_object", api.delete(name, &dp))
                    .await?
                    .map(|_| ())
            }
            ObjectKind::PodLabels => {
                return Err(StoreError::Api {
                    op: "delete_object",
                    code: 405,
                    detail: "PodLabels on Kubernetes are a Pod's labels: delete or relabel the Pod"
                        .into(),
                });
            }
        };
        match result {
            Ok(()) => {
                let mut st = self.state();
                // A namespace terminates; its watch event removes it.
                if kind == ObjectKind::NetworkPolicy {
                    st.remove_policy(namespace, name);
                }
                Ok(true)
            }
            Err(e) if code_of(&e) == 404 => Ok(false),
            Err(e) => Err(api_err("delete_object", e)),
        }
    }

    async fn list_objects(
        &self,
        kind: ObjectKind,
    ) -> Result<(Revision, Vec<StoredObject>), StoreError> {
        let need = match kind {
            ObjectKind::Namespace => Kind::Namespaces,
            ObjectKind::NetworkPolicy => Kind::Policies,
            ObjectKind::PodLabels => Kind::Pods,
        };
        self.synced("list_objects", &[need]).await?;
        let st = self.state();
        Ok((st.rev, st.objects(kind)))
    }

    async fn watch_objects(
        &self,
        from: Revision,
    ) -> Result<mpsc::Receiver<ObjectEvent>, StoreError> {
        Ok(self.subscribe(
            from,
            |c| match c {
                Change::Object(e) => Some(e.clone()),
                Change::Store(_) => None,
            },
            ObjectEvent::Resync,
        ))
    }

    async fn put_endpoint(&self, rec: &EndpointRecord, _lease: LeaseId) -> Result<(), StoreError> {
        check_endpoint_names(&rec.node, &rec.namespace, &rec.name)?;
        self.state().put_local_endpoint(rec.clone());
        Ok(())
    }

    async fn delete_endpoint(
        &self,
        node: &str,
        namespace: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        check_endpoint_names(node, namespace, name)?;
        Ok(self.state().delete_local_endpoint(node, namespace, name))
    }

    async fn list_endpoints(&self) -> Result<(Revision, Vec<EndpointRecord>), StoreError> {
        self.synced("list_endpoints", &[Kind::Pods]).await?;
        let st = self.state();
        Ok((st.rev, st.endpoints()))
    }

    async fn policy_view(&self) -> Result<PolicyView, StoreError> {
        let mut objects = Vec::new();
        let mut view = self.policy_view_each(|o| objects.push(o)).await?;
        view.objects = objects;
        Ok(view)
    }

    async fn policy_view_each<F: FnMut(StoredObject) + Send>(
        &self,
        mut each: F,
    ) -> Result<PolicyView, StoreError> {
        let config = self.config().await?;
        self.synced(
            "policy_view",
            &[
                Kind::Nodes,
                Kind::Blocks,
                Kind::Namespaces,
                Kind::Policies,
                Kind::Pods,
            ],
        )
        .await?;
        let st = self.state();
        for k in ObjectKind::ALL {
            st.each_object(k, &mut each);
        }
        Ok(PolicyView {
            snapshot: self.snapshot_locked(&st, config),
            objects: Vec::new(),
            endpoints: st.endpoints(),
        })
    }

    async fn fetch_pod(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<StoredObject>, StoreError> {
        self.fetch_pod_now(namespace, name).await
    }
}

/// Creates `obj`, or replaces the existing one as read (resourceVersion CAS, retried).
async fn create_or_replace<K>(
    store: &KubeStore,
    op: &'static str,
    api: &Api<K>,
    name: &str,
    mut obj: K,
) -> Result<K, StoreError>
where
    K: Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let pp = PostParams::default();
    for _ in 0..CAS_ROUNDS {
        let current = store
            .timed(op, api.get_opt(name))
            .await?
            .map_err(|e| api_err(op, e))?;
        let r = match current {
            None => {
                obj.meta_mut().resource_version = None;
                store.timed(op, api.create(&pp, &obj)).await?
            }
            Some(c) => {
                obj.meta_mut().resource_version = c.meta().resource_version.clone();
                store.timed(op, api.replace(name, &pp, &obj)).await?
            }
        };
        match r {
            Ok(saved) => return Ok(saved),
            Err(e) if code_of(&e) == 409 => continue,
            Err(e) => return Err(api_err(op, e)),
        }
    }
    Err(StoreError::Unavailable {
        op,
        detail: format!("{name} kept changing under us"),
    })
}

/// RFC 3339 in UTC, seconds precision, as Kubernetes writes times.
fn chrono_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_rfc3339() {
        let t = super::chrono_now();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z'), "{t}");
    }
}
