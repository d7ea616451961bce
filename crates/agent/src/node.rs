//! The node's life in the cluster: start-up (config, lease, blocks, dataplane, conflist),
//! then one control loop reacting to datastore events, lease renewals, drift repairs and
//! plugin requests.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc;
use weft_backend::{Kind, Local};
use weft_proto::{Reply, Request, Status};
use weft_store::kube::KubeStore;
use weft_store::{
    AnyStore, BackendKind, ClusterConfig, ConfigError, Datastore, EtcdStore, Family, LeaseId,
    LocalStore, NodeRecord, ObjectEvent, StoreError, WatchEvent,
};

use crate::cniconf;
use crate::config::{Mode, Settings, StoreChoice};
use crate::datapath::Datapath;
use crate::dataplane::{DataplaneHandle, Pending};
use crate::error::Error;
use crate::gc::Gc;
use crate::identity;
use crate::log;
use crate::metrics;
use crate::peers::{Change, PeerTable};
use crate::policy::{self, Policy};
use crate::socket;

/// At most this many queued requests are taken as one step: a bound on how long the
/// first of them waits behind the rest. The socket's channel holds 64.
const MAX_REQUEST_BATCH: usize = 64;

/// What survives an agent restart in `<run-dir>/node.json`: the lease to try first and the
/// blocks to adopt again, so a restart neither loses blocks nor waits for a new lease.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SavedState {
    name: String,
    lease: LeaseId,
    blocks: Vec<IpNet>,
    #[serde(default)]
    pod_mtu: u32,
    #[serde(default)]
    underlay_mtu: u32,
    #[serde(default)]
    underlay_v4: Option<Ipv4Addr>,
    #[serde(default)]
    underlay_v6: Option<Ipv6Addr>,
    #[serde(default)]
    vtep_mac: String,
}

/// A change handed to the dataplane thread, its reply still to come.
enum Queued {
    Upsert(Pending<weft_backend::Path>),
    Remove(Pending<()>),
}

struct Node {
    s: Settings,
    cfg: ClusterConfig,
    store: AnyStore,
    lease: LeaseId,
    blocks: Vec<IpNet>,
    underlay_v4: Ipv4Addr,
    underlay_v6: Option<Ipv6Addr>,
    vtep_mac: [u8; 6],
    dp: Option<DataplaneHandle>,
    table: PeerTable,
    /// Whether the last datastore call failed, so an outage is logged once, not per tick.
    store_down: bool,
    policy: Policy,
    /// `--datapath`: the eBPF fast path, when it runs.
    datapath: Datapath,
    /// Pods whose DEL never came.
    gc: Gc,
}

fn fam_name(f: Family) -> &'static str {
    match f {
        Family::V4 => "v4",
        Family::V6 => "v6",
    }
}

fn family_of(b: &IpNet) -> Family {
    match b {
        IpNet::V4(_) => Family::V4,
        IpNet::V6(_) => Family::V6,
    }
}

fn backend_kind(k: BackendKind) -> Kind {
    match k {
        BackendKind::Vxlan => Kind::Vxlan,
        BackendKind::HostGw => Kind::HostGw,
        BackendKind::Auto => Kind::Auto,
    }
}

/// Retry `op` while the datastore is unreachable (an agent starting before etcd, or during
/// an outage); any other error is final.
async fn retry<T, F, Fut>(what: &str, mut op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut wait = Duration::from_millis(200);
    let mut logged = false;
    loop {
        match op().await {
            Err(StoreError::Unavailable { op: o, detail }) => {
                metrics::get().datastore(false);
                if !logged {
                    log::warn(
                        "datastore unreachable; retrying",
                        &[
                            ("during", what.into()),
                            ("op", o.into()),
                            ("error", detail.into()),
                        ],
                    );
                    logged = true;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(3));
            }
            // The cluster is not ready for this node yet (no Node object, no podCIDRs):
            // say what is missing once, and wait rather than crash-loop.
            Err(StoreError::NotYet { op: o, reason }) => {
                // It answered: the cluster lacks something, the datastore is fine.
                metrics::get().datastore(true);
                if !logged {
                    log::warn(
                        "waiting for the cluster",
                        &[
                            ("during", what.into()),
                            ("op", o.into()),
                            ("reason", reason.into()),
                        ],
                    );
                    logged = true;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(3));
            }
            other => {
                metrics::get().datastore(true);
                return other;
            }
        }
    }
}

async fn connect(s: &Settings) -> Result<AnyStore, Error> {
    Ok(match &s.store {
        StoreChoice::Local(path) => AnyStore::Local(LocalStore::open(path)?),
        StoreChoice::Etcd(opts) => {
            AnyStore::Etcd(retry("connect", || EtcdStore::connect(opts.clone())).await?)
        }
        StoreChoice::Kubernetes(opts) => {
            AnyStore::Kube(retry("connect", || KubeStore::connect(opts.clone())).await?)
        }
    })
}

/// Run the agent until SIGTERM/SIGINT. Kernel state and the lease are left in place on exit:
/// a restarted agent adopts both, so pods never notice.
pub async fn run(s: Settings) -> Result<(), Error> {
    // Everything weftd keeps in the run dir (socket, endpoint files, plan) is root's alone.
    socket::secure_dir(&s.run_dir)?;
    metrics::start(&s)?;
    // Before anything else, and before the datastore answers: the kernel back to the last
    // applied policy plan.
    let mut policy = Policy::new(&s);
    policy.restore().await;
    // With the restored plan in the kernel, before any pod is attached: the pods of the
    // endpoint files start policed (nftables path) until the view is loaded.
    let datapath = Datapath::start(
        s.datapath,
        s.bpf_pin_dir.clone(),
        s.policy_cut_established,
        policy.local_endpoints(),
    );
    let store = connect(&s).await?;
    let cfg = match &s.cluster_config {
        Some(c) => retry("cluster config", || store.init_config(c)).await?,
        None => retry("cluster config", || store.config())
            .await?
            .ok_or(Error::NoClusterConfig)?,
    };
    let (mut flag_v4, mut flag_v6) = (s.underlay_v4, s.underlay_v6);
    // On Kubernetes the node's address is the Node's InternalIP (or the operator's
    // annotation), not a guess from the default route.
    if let AnyStore::Kube(k) = &store
        && flag_v4.is_none()
    {
        let name = s.node_name.clone();
        let (v4, v6) = retry("node addresses", || k.node_addresses(&name)).await?;
        flag_v4 = v4;
        flag_v6 = flag_v6.or(v6);
    }
    let underlay_v4 = identity::underlay_v4(flag_v4)?;
    let underlay_v6 = identity::underlay_v6(flag_v6)?;
    let mut node = Node {
        policy,
        datapath,
        gc: Gc::new(&s),
        vtep_mac: identity::vtep_mac(&s.node_name),
        table: PeerTable::new(&s.node_name),
        s,
        cfg,
        store,
        lease: 0,
        blocks: Vec::new(),
        underlay_v4,
        underlay_v6,
        dp: None,
        store_down: false,
    };
    node.start().await?;
    node.control_loop().await
}

impl Node {
    fn saved(&self) -> Option<SavedState> {
        let text = std::fs::read_to_string(self.s.node_state_path()).ok()?;
        let st: SavedState = serde_json::from_str(&text).ok()?;
        (st.name == self.s.node_name).then_some(st)
    }

    fn families(&self) -> Vec<Family> {
        [Family::V4, Family::V6]
            .into_iter()
            .filter(|f| self.cfg.cidr(*f).is_some())
            .collect()
    }

    async fn start(&mut self) -> Result<(), Error> {
        let saved = self.saved();
        // The previous lease if it is still alive, so a quick restart changes nothing.
        let mut lease = None;
        if let Some(st) = &saved {
            let id = st.lease;
            match retry("lease", || self.store.keep_alive(id)).await {
                Ok(_) => lease = Some(id),
                Err(StoreError::LeaseNotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.lease = match lease {
            Some(l) => l,
            None => {
                let ttl = self.s.lease_ttl;
                retry("lease", || self.store.grant_lease(ttl)).await?
            }
        };
        let snap = retry("snapshot", || self.store.snapshot()).await?;
        let mut candidates: Vec<IpNet> = saved.map(|s| s.blocks).unwrap_or_default();
        for b in &snap.blocks {
            if b.node == self.s.node_name && !candidates.contains(&b.block) {
                candidates.push(b.block);
            }
        }
        for b in candidates {
            if self.cfg.cidr(family_of(&b)).is_none_or(|c| !c.contains(&b)) {
                continue;
            }
            self.adopt(b).await?;
        }
        self.claim_missing().await?;
        let mut dp = DataplaneHandle::start(
            backend_kind(self.cfg.backend),
            Local {
                underlay_v4: self.underlay_v4,
                underlay_v6: self.underlay_v6,
                vtep_mac: self.vtep_mac,
                blocks: self.blocks.clone(),
                vni: self.cfg.vxlan_vni,
                port: self.cfg.vxlan_port,
            },
        )?;
        self.mtu_override(&mut dp).await?;
        let cidrs: Vec<IpNet> = self
            .families()
            .into_iter()
            .filter_map(|f| self.cfg.cidr(f))
            .collect();
        dp.masquerade(cidrs).await?;
        self.dp = Some(dp);
        // The backend's routes are in: the uplink program and the peer map follow them.
        self.datapath.set_uplink(self.underlay_v4);
        forwarding_on();
        if self.s.mode == Mode::Bridge {
            bridge_netfilter_on();
        }
        self.publish().await?;
        log::info(
            "node ready",
            &[
                ("node", self.s.node_name.clone().into()),
                ("lease", self.lease.into()),
                ("blocks", json!(self.blocks)),
                ("podMtu", self.dp().map(|d| d.pod_mtu).unwrap_or(0).into()),
                ("backend", json!(self.cfg.backend)),
            ],
        );
        Ok(())
    }

    /// The ConfigMap's `mtu` (Kubernetes) replaces the derived pod MTU; more than the uplink
    /// carries would drop full-size packets, so that is refused.
    async fn mtu_override(&self, dp: &mut DataplaneHandle) -> Result<(), Error> {
        let AnyStore::Kube(k) = &self.store else {
            return Ok(());
        };
        let Some(m) = retry("config", || k.kube_config())
            .await?
            .and_then(|c| c.mtu)
        else {
            return Ok(());
        };
        if m > dp.pod_mtu {
            return Err(StoreError::InvalidConfig(ConfigError::ConfigMap {
                key: "mtu".into(),
                reason: format!(
                    "{m} is more than this node's uplink carries for pods ({}, after the \
                     backend's overhead)",
                    dp.pod_mtu
                ),
            })
            .into());
        }
        dp.pod_mtu = m;
        Ok(())
    }

    fn underlay(&self) -> Vec<IpAddr> {
        std::iter::once(IpAddr::V4(self.underlay_v4))
            .chain(self.underlay_v6.map(IpAddr::V6))
            .collect()
    }

    /// Load the policy view and apply it (failures are logged and retried by the policy's
    /// own timer; the kernel keeps what it has).
    async fn policy_flush(&mut self, load: bool) -> Result<(), policy::Error> {
        let (blocks, underlay) = (self.blocks.clone(), self.underlay());
        self.sync_policed(true);
        let r = self
            .policy
            .flush(&self.store, self.lease, &blocks, &underlay, load)
            .await;
        self.sync_policed(false);
        if let Some(plan) = self.policy.cut_due() {
            self.datapath.cut(plan);
        }
        match &r {
            Ok(()) => {}
            // An outage the node already reported: a load is retried every few seconds
            // while it lasts, and saying so each time would bury the log.
            Err(policy::Error::Load(StoreError::Unavailable { .. })) if self.store_down => {}
            Err(e) => log::warn(
                "policy view not applied; retrying",
                &[("error", e.to_string().into())],
            ),
        }
        r
    }

    /// The eBPF datapath's `policed` flags from the policy state: raised before a commit,
    /// lowered after it (crate::datapath).
    fn sync_policed(&mut self, raise_only: bool) {
        let policy = &self.policy;
        let policed = |f: &weft_proto::EndpointFile| policy.policed(&f.namespace, &f.name);
        self.datapath
            .sync_policed(policy.local_endpoints(), &policed, raise_only);
    }

    /// After a load of the policy view at revision R, start the object watch again from R
    /// (events queued on the old one may predate R). If that fails, the old watch's events
    /// are not folded in but only ask for another load, which tries again.
    async fn policy_rewatch(&mut self, events: &mut mpsc::Receiver<ObjectEvent>) {
        let Some(rev) = self.policy.rewatch_due() else {
            return;
        };
        match self.store.watch_objects(rev).await {
            Ok(rx) => {
                *events = rx;
                self.policy.rewatched();
            }
            Err(e) => {
                log::warn(
                    "policy object watch not restarted; reloading",
                    &[("error", e.to_string().into())],
                );
                self.policy.mark_reload();
            }
        }
    }

    fn dp(&self) -> Result<&DataplaneHandle, Error> {
        self.dp.as_ref().ok_or(Error::DataplaneGone)
    }

    /// Take back a block this node held; a block another node now owns is dropped (it was
    /// proven free — our lease expired — and handed on; routing it here would collide).
    async fn adopt(&mut self, b: IpNet) -> Result<(), Error> {
        let (name, lease) = (self.s.node_name.clone(), self.lease);
        match retry("adopt block", || self.store.adopt_block(&name, b, lease)).await {
            Ok(()) => {
                if !self.blocks.contains(&b) {
                    self.blocks.push(b);
                }
                Ok(())
            }
            Err(StoreError::NotOwner { owner, .. }) => {
                log::error(
                    "block lost to another node; no longer used here",
                    &[("block", b.to_string().into()), ("owner", owner.into())],
                );
                self.blocks.retain(|x| *x != b);
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn claim(&mut self, f: Family) -> Result<IpNet, Error> {
        let (name, lease) = (self.s.node_name.clone(), self.lease);
        let b = retry("claim block", || self.store.claim_block(&name, f, lease))
            .await
            .map_err(|source| Error::NoBlock {
                family: fam_name(f),
                source,
            })?;
        self.blocks.push(b);
        log::info("block leased", &[("block", b.to_string().into())]);
        Ok(b)
    }

    /// Lease a block for every family the node has none of. A full CIDR is not fatal (the
    /// node may have lost its blocks while it was away and found every block taken): the
    /// agent keeps routing to its peers, says so, and retries at each resync.
    async fn claim_missing(&mut self) -> Result<(), Error> {
        for f in self.families() {
            if self.blocks.iter().any(|b| family_of(b) == f) {
                continue;
            }
            match self.claim(f).await {
                Ok(_) => {}
                Err(Error::NoBlock { family, source }) => log::error(
                    "no block for this node: no new pods of this family until one is free",
                    &[
                        ("family", family.into()),
                        ("error", source.to_string().into()),
                    ],
                ),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn record(&self) -> NodeRecord {
        NodeRecord {
            name: self.s.node_name.clone(),
            underlay_v4: Some(self.underlay_v4),
            underlay_v6: self.underlay_v6,
            vtep_mac: weft_net::format_mac(self.vtep_mac),
            mtu: self.dp.as_ref().map(|d| d.underlay_mtu).unwrap_or(0),
            blocks: self.blocks.clone(),
        }
    }

    /// Make the node's current blocks visible everywhere: the dataplane's VTEP address,
    /// the node record, the conflist and node.json.
    async fn publish(&mut self) -> Result<(), Error> {
        self.blocks.sort();
        let held: Vec<(&'static str, usize)> = self
            .families()
            .into_iter()
            .map(|f| {
                (
                    fam_name(f),
                    self.blocks.iter().filter(|b| family_of(b) == f).count(),
                )
            })
            .collect();
        metrics::get().blocks(&held);
        self.dp()?.set_blocks(self.blocks.clone()).await?;
        let rec = self.record();
        let lease = self.lease;
        retry("node record", || self.store.put_node(&rec, lease)).await?;
        self.write_local_files()
    }

    fn write_local_files(&self) -> Result<(), Error> {
        let dp = self.dp()?;
        if self.blocks.is_empty() {
            // No block, no addresses: without a conflist the runtime reports the node's
            // network as not ready instead of starting pods that cannot get an address.
            metrics::get().conflist(false);
            match std::fs::remove_file(self.s.conflist_path()) {
                Ok(()) => log::warn("conflist removed: the node holds no block", &[]),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(Error::Write {
                        path: self.s.conflist_path(),
                        source,
                    });
                }
            }
        } else {
            let conf = cniconf::render(&self.s, &self.blocks, dp.pod_mtu);
            let text = serde_json::to_string_pretty(&conf).unwrap_or_default();
            cniconf::write_if_changed(&self.s.conflist_path(), &text)?;
            metrics::get().conflist(true);
        }
        let st = SavedState {
            name: self.s.node_name.clone(),
            lease: self.lease,
            blocks: self.blocks.clone(),
            pod_mtu: dp.pod_mtu,
            underlay_mtu: dp.underlay_mtu,
            underlay_v4: Some(self.underlay_v4),
            underlay_v6: self.underlay_v6,
            vtep_mac: weft_net::format_mac(self.vtep_mac),
        };
        let text = serde_json::to_string_pretty(&st).unwrap_or_default();
        cniconf::write_if_changed(&self.s.node_state_path(), &text)?;
        Ok(())
    }

    async fn apply_changes(&mut self, changes: Vec<Change>) {
        // Every change is queued first, then the replies are awaited in order: the dataplane
        // thread works through the batch without waiting for this task between peers.
        let queued: Vec<(String, Result<Queued, Error>)> = changes
            .into_iter()
            .map(|c| match c {
                Change::Upsert(p) => {
                    let name = p.name.clone();
                    let q = self
                        .dp()
                        .and_then(|dp| dp.queue_upsert(p))
                        .map(Queued::Upsert);
                    (name, q)
                }
                Change::Remove(name) => {
                    let q = self
                        .dp()
                        .and_then(|dp| dp.queue_remove(name.clone()))
                        .map(Queued::Remove);
                    (name, q)
                }
            })
            .collect();
        for (what, q) in queued {
            let res = match q {
                Ok(Queued::Upsert(p)) => p.wait().await.map(|_| ()),
                Ok(Queued::Remove(p)) => p.wait().await,
                Err(e) => Err(e),
            };
            match res {
                Ok(()) => log::info("peer programmed", &[("peer", what.into())]),
                // The periodic resync retries it; one bad peer must not stop the others.
                Err(Error::Dataplane(e)) if e.is_peer_error() => log::error(
                    "peer refused by the backend; the others carry on",
                    &[("peer", what.into()), ("error", e.to_string().into())],
                ),
                Err(e) => log::error(
                    "peer not programmed",
                    &[("peer", what.into()), ("error", e.to_string().into())],
                ),
            }
        }
        // The eBPF peer map follows the routes just programmed (one route dump per batch).
        self.datapath.sync_peers();
    }

    /// Reload the whole view and repair the kernel: after a broken watch, and periodically.
    /// Also re-asserts this node's own record and blocks if the datastore lost them.
    async fn resync(&mut self) -> Result<(), Error> {
        self.resync_at().await.map(|_| ())
    }

    /// [`Self::resync`], returning the revision of the view it loaded (None when the
    /// datastore was unreachable).
    async fn resync_at(&mut self) -> Result<Option<i64>, Error> {
        let snap = match self.store.snapshot().await {
            Ok(s) => s,
            Err(e) => return self.store_error("snapshot", e).map(|_| None),
        };
        self.store_up();
        let changes = self.table.load(&snap);
        self.apply_changes(changes).await;
        let mine = self.table.my_blocks();
        let missing: Vec<IpNet> = self
            .blocks
            .iter()
            .copied()
            .filter(|b| !mine.contains(b))
            .collect();
        let me_listed = snap.nodes.iter().any(|n| n.name == self.s.node_name);
        let lacking = self
            .families()
            .into_iter()
            .any(|f| !self.blocks.iter().any(|b| family_of(b) == f));
        if !missing.is_empty() || !me_listed || lacking {
            for b in missing {
                self.adopt(b).await?;
            }
            self.claim_missing().await?;
            self.publish().await?;
        }
        // A refused peer (its block overlaps addresses still on this node, say) must not
        // stop the view from loading: the rest is repaired, the refusal logged, and the
        // next resync tries again.
        let drift = match self.dp()?.resync(self.table.desired()).await {
            Ok(d) => d,
            Err(Error::DataplaneGone) => return Err(Error::DataplaneGone),
            // Everything else was repaired: say which peers were not, count what was.
            Err(Error::Dataplane(weft_backend::Error::PeersRefused { refused, drift })) => {
                for why in refused {
                    log::error(
                        "peer not programmed; retried at the next resync",
                        &[("error", why.into())],
                    );
                }
                drift
            }
            Err(e) => {
                log::error(
                    "drift repair incomplete",
                    &[("error", e.to_string().into())],
                );
                return Ok(Some(snap.revision));
            }
        };
        if drift.added + drift.removed > 0 {
            log::warn(
                "kernel drift repaired",
                &[
                    ("added", drift.added.into()),
                    ("removed", drift.removed.into()),
                ],
            );
            self.datapath.sync_peers();
        }
        Ok(Some(snap.revision))
    }

    fn store_error(&mut self, what: &str, e: StoreError) -> Result<(), Error> {
        match e {
            StoreError::Unavailable { .. } => {
                metrics::get().datastore(false);
                if !self.store_down {
                    log::warn(
                        "datastore unreachable; pods keep working, changes wait",
                        &[("during", what.into()), ("error", e.to_string().into())],
                    );
                    self.store_down = true;
                }
                Ok(())
            }
            other => Err(other.into()),
        }
    }

    fn store_up(&mut self) {
        metrics::get().datastore(true);
        if self.store_down {
            log::info("datastore reachable again", &[]);
            self.store_down = false;
        }
    }

    async fn renew(&mut self) -> Result<(), Error> {
        match self.store.keep_alive(self.lease).await {
            Ok(_) => {
                self.store_up();
                Ok(())
            }
            Err(StoreError::LeaseNotFound(old)) => {
                // Our record and blocks expired with it. Take the blocks back if nobody took
                // them (they are still in use by our pods); drop any another node now owns.
                log::warn(
                    "node lease expired; re-registering",
                    &[("lease", old.into())],
                );
                let ttl = self.s.lease_ttl;
                self.lease = match self.store.grant_lease(ttl).await {
                    Ok(l) => l,
                    Err(e) => return self.store_error("grant lease", e),
                };
                for b in self.blocks.clone() {
                    self.adopt(b).await?;
                }
                self.claim_missing().await?;
                // The endpoints went with the old lease: publish them again.
                self.policy.mark_reload();
                self.publish().await
            }
            Err(e) => self.store_error("keep-alive", e),
        }
    }

    async fn on_event(&mut self, ev: WatchEvent) -> Result<(), Error> {
        self.store_up();
        // Nodes and blocks are part of the policy view (node addresses, pod ranges), which
        // only a full load reads.
        self.policy.mark_reload();
        if matches!(ev, WatchEvent::Resync) {
            return self.resync().await;
        }
        // Our own blocks or record vanishing while we live means our lease lapsed: renew
        // handles the re-registration.
        let lost_mine = match &ev {
            WatchEvent::BlockDeleted(b) => self.blocks.contains(b),
            WatchEvent::NodeDeleted(n) => *n == self.s.node_name,
            WatchEvent::BlockPut(o) => self.blocks.contains(&o.block) && o.node != self.s.node_name,
            _ => false,
        };
        let changes = self.table.apply(&ev);
        self.apply_changes(changes).await;
        if lost_mine {
            if let WatchEvent::BlockPut(o) = &ev {
                log::error(
                    "block taken over by another node; no longer used here",
                    &[
                        ("block", o.block.to_string().into()),
                        ("owner", o.node.clone().into()),
                    ],
                );
                self.blocks.retain(|b| *b != o.block);
                self.publish().await?;
            } else {
                self.renew().await?;
            }
        }
        Ok(())
    }

    /// What the probes and `/metrics` read about the loop, after each of its steps.
    fn observe(&self) {
        metrics::get().step(
            self.table.peer_count(),
            self.policy.in_sync(),
            self.policy.applied(),
        );
    }

    /// What `status` and `policy-sync` answer.
    async fn status(&self) -> Status {
        Status {
            node: self.s.node_name.clone(),
            lease: self.lease,
            blocks: self.blocks.clone(),
            pod_mtu: self.dp.as_ref().map(|d| d.pod_mtu),
            peers: self.table.peer_count(),
            datastore_reachable: !self.store_down,
            policy: self.policy.status().await,
            datapath: Some(self.datapath.status()),
        }
    }

    /// The request just received and those queued behind it, answered in order, except
    /// that consecutive ADDs (attaches) are one batch: a burst of pods on a node costs one
    /// round of API reads and one commit, not one each (`Policy::attach_many`).
    /// Nothing waits for a batch to fill: it is what queued while the last step ran.
    async fn on_requests(
        &mut self,
        first: socket::Incoming,
        rx: &mut mpsc::Receiver<socket::Incoming>,
    ) {
        let mut queue = vec![first];
        while queue.len() < MAX_REQUEST_BATCH {
            match rx.try_recv() {
                Ok(next) => queue.push(next),
                Err(_) => break,
            }
        }
        let mut publish = false;
        let mut queue = queue.into_iter().peekable();
        while let Some((req, reply)) = queue.next() {
            let Request::Attach {
                container_id,
                ifname,
            } = req
            else {
                publish |= matches!(req, Request::Detach { .. });
                let r = self.on_request(req).await;
                let _ = reply.send(r);
                continue;
            };
            let mut pods = vec![(container_id, ifname)];
            let mut senders = vec![reply];
            while let Some((Request::Attach { .. }, _)) = queue.peek() {
                if let Some((
                    Request::Attach {
                        container_id,
                        ifname,
                    },
                    reply,
                )) = queue.next()
                {
                    pods.push((container_id, ifname));
                    senders.push(reply);
                }
            }
            let replies = self.attach_pods(&pods).await;
            for (tx, r) in senders.into_iter().zip(replies) {
                let _ = tx.send(r);
            }
            publish = true;
        }
        // Outside the reply path: the runtime has its answers.
        if publish {
            self.policy.publish_now(&self.store, self.lease).await;
        }
    }

    /// Attaches pods (container id, ifname): their policy in one commit, then, for each
    /// one programmed, its fast path, all before the ADDs return.
    async fn attach_pods(&mut self, pods: &[(String, String)]) -> Vec<Reply> {
        let (blocks, underlay) = (self.blocks.clone(), self.underlay());
        let replies = self
            .policy
            .attach_many(&self.store, pods, &blocks, &underlay)
            .await;
        let policy = &self.policy;
        let policed = |f: &weft_proto::EndpointFile| policy.policed(&f.namespace, &f.name);
        for ((container_id, ifname), reply) in pods.iter().zip(&replies) {
            // The pod's policy is in the kernel (or its ADD is refused): now its fast path.
            if !reply.ok {
                continue;
            }
            if let Some(f) = policy
                .local_endpoints()
                .find(|f| &f.container_id == container_id && &f.ifname == ifname)
            {
                self.datapath.attach(f, &policed);
            }
        }
        replies
    }

    async fn on_request(&mut self, req: Request) -> Reply {
        match req {
            Request::Status => Reply {
                status: Some(Box::new(self.status().await)),
                ..Reply::done()
            },
            Request::Attach {
                container_id,
                ifname,
            } => {
                let mut replies = self.attach_pods(&[(container_id, ifname)]).await;
                replies
                    .pop()
                    .unwrap_or_else(|| socket::refuse("attach not handled"))
            }
            Request::Detach {
                container_id,
                ifname,
            } => {
                if let Some(f) = self
                    .policy
                    .local_endpoints()
                    .find(|f| f.container_id == container_id && f.ifname == ifname)
                {
                    self.datapath.detach(f);
                }
                self.policy.detach(&container_id, &ifname)
            }
            // The barrier: a load now sees at least the state as of the request.
            Request::PolicySync => match self.policy_flush(true).await {
                Ok(()) => Reply {
                    status: Some(Box::new(self.status().await)),
                    ..Reply::done()
                },
                Err(e) => socket::refuse(&e.to_string()),
            },
            Request::Grow { family } => {
                let f = match family {
                    weft_proto::Family::V4 => Family::V4,
                    weft_proto::Family::V6 => Family::V6,
                };
                if self.cfg.cidr(f).is_none() {
                    return socket::refuse(&format!("the cluster has no {family} CIDR"));
                }
                let b = match self.claim(f).await {
                    Ok(b) => b,
                    Err(e) => return socket::refuse(&e.to_string()),
                };
                if let Err(e) = self.publish().await {
                    return socket::refuse(&format!("block {b} leased but not published: {e}"));
                }
                Reply {
                    block: Some(b),
                    ..Reply::done()
                }
            }
        }
    }

    async fn control_loop(&mut self) -> Result<(), Error> {
        // The watch starts right after the revision the view was loaded at, so no event
        // falls between the two.
        let rev = loop {
            // A failed step (say, a peer the kernel refuses) is logged and retried, like
            // any other step of the loop; only a dead dataplane ends the agent.
            match self.resync_at().await {
                Ok(Some(rev)) => break rev,
                Ok(None) => {}
                Err(e) => survive(Err(e))?,
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        let mut events = retry("watch", || self.store.watch(rev)).await?;
        // Policy objects and endpoints from the same revision, then the first complete
        // policy view, before the socket takes any attach.
        let mut policy_events = retry("watch objects", || self.store.watch_objects(rev)).await?;
        let _ = self.policy_flush(true).await;
        self.policy_rewatch(&mut policy_events).await;
        let (req_tx, mut req_rx) = mpsc::channel::<socket::Incoming>(64);
        socket::serve(&self.s.socket_path(), req_tx)?;
        // The node is ready: the first look for pods whose DEL never came (say, while the
        // node was down), then one every resync.
        self.gc.start(&self.policy);
        let mut renew = tokio::time::interval(self.s.lease_ttl / 3);
        let mut resync = tokio::time::interval(self.s.resync_interval);
        renew.tick().await;
        resync.tick().await;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(Error::Signal)?;
        self.observe();
        loop {
            let step = tokio::select! {
                ev = events.recv() => match ev {
                    Some(ev) => self.on_event(ev).await,
                    None => {
                        // The store's watch task ended; start a new one from a fresh view.
                        match self.resync_at().await {
                            Ok(Some(rev)) => {
                                events = retry("watch", || self.store.watch(rev)).await?;
                                Ok(())
                            }
                            Ok(None) => {
                                tokio::time::sleep(Duration::from_secs(1)).await;
                                Ok(())
                            }
                            Err(e) => Err(e),
                        }
                    }
                },
                Some(first) = req_rx.recv() => {
                    self.on_requests(first, &mut req_rx).await;
                    Ok(())
                }
                ev = policy_events.recv() => {
                    match ev {
                        Some(ev) => self.policy.on_object_event(ev),
                        None => {
                            // The watch task ended: a new one from now, and a full load.
                            if let Ok(snap) = self.store.snapshot().await {
                                policy_events = retry("watch objects", || self.store.watch_objects(snap.revision)).await?;
                            } else {
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                            self.policy.mark_reload();
                        }
                    }
                    Ok(())
                }
                _ = sleep_until_due(self.policy.due()) => {
                    let _ = self.policy_flush(false).await;
                    Ok(())
                }
                _ = renew.tick() => self.renew().await,
                _ = resync.tick() => {
                    // Endpoint files added or removed behind our back (the agent was down
                    // for an ADD, a DEL could not reach it), and a full policy load.
                    self.policy.rescan();
                    self.datapath.prune(self.policy.local_endpoints());
                    // Needs no datastore: started before a resync that may wait on one.
                    self.gc.start(&self.policy);
                    self.resync().await
                }
                Some(pass) = self.gc.done() => {
                    if self.gc.finish(pass, &mut self.policy) {
                        self.datapath.prune(self.policy.local_endpoints());
                        self.policy.publish_now(&self.store, self.lease).await;
                    }
                    Ok(())
                }
                _ = term.recv() => {
                    log::info("SIGTERM: exiting; kernel state and lease left for the next start", &[]);
                    return Ok(());
                }
                _ = tokio::signal::ctrl_c() => {
                    log::info("SIGINT: exiting; kernel state and lease left for the next start", &[]);
                    return Ok(());
                }
            };
            survive(step)?;
            // A step that loaded the policy view (at some revision R) restarts the object
            // watch from R before any further event is folded in: events still queued on
            // the old watch may predate R, and folding them into a view as of R would step
            // back in time.
            self.policy_rewatch(&mut policy_events).await;
            self.observe();
        }
    }
}

/// A failed step of the control loop — a peer the kernel refused, a write — is logged and
/// retried by the next resync, also at start-up (one unprogrammable peer must not keep the
/// agent from running); only a dead dataplane thread is fatal.
fn survive(step: Result<(), Error>) -> Result<(), Error> {
    match step {
        Ok(()) => Ok(()),
        Err(Error::DataplaneGone) => Err(Error::DataplaneGone),
        Err(e) => {
            log::error(
                "control loop step failed",
                &[("error", e.to_string().into())],
            );
            Ok(())
        }
    }
}

/// Never, when nothing is due (a `select!` branch that stays pending).
async fn sleep_until_due(due: Option<tokio::time::Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Bridged pod-to-pod traffic must pass the IP hooks for the policy table to see it (the
/// sysctls are per network namespace; CONFIG_BRIDGE_NETFILTER is required). A failure is
/// logged loudly: same-node policy is not enforced without it.
fn bridge_netfilter_on() {
    for key in [
        "net/bridge/bridge-nf-call-iptables",
        "net/bridge/bridge-nf-call-ip6tables",
    ] {
        if let Err(e) = weft_net::sysctl::set(key, "1") {
            log::error(
                "cannot enable br_netfilter: NetworkPolicy between pods of this node's bridge is NOT enforced",
                &[("sysctl", key.into()), ("error", e.to_string().into())],
            );
        }
    }
}

/// Pods reach other nodes through this node: forwarding must be on. A failure is logged,
/// not fatal (a locked-down sysctl may already be set by the operator).
fn forwarding_on() {
    for key in ["net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"] {
        if let Err(e) = weft_net::sysctl::set(key, "1") {
            log::warn(
                "cannot enable forwarding",
                &[("sysctl", key.into()), ("error", e.to_string().into())],
            );
        }
    }
}
