//! NetworkPolicy on this node: the datastore's view and this node's endpoint files become a
//! [`weft_policy::World`], fed to an incremental [`plan::Compiler`] kept for this node and
//! moved into the kernel as the compiler's ops ([`plan::Compiler::take_ops`]), one atomic
//! transaction at a time: after the first build every change (elements, and for policy
//! edits new or vanished class/atom chains and their sets) as one nf_tables netlink batch
//! ([`netlink`]); the table, base chains and replaced chains as `nft -f -`
//! ([`plan::render_ops`]); the applied plan is kept in `<run-dir>/policy-plan.json` and its
//! journal ([`persist`]).
//!
//! Restart safety, the property everything here serves — a restarted agent never opens a
//! denied flow, even for an instant:
//! - SIGTERM leaves the table in place;
//! - at start the persisted plan is put back as one transaction that replaces the whole table
//!   (`add table; delete table; <plan>`): the kernel ends up exactly as last applied whatever
//!   it held (missing, drifted), and packets see either the old ruleset or the new one;
//! - nothing new is applied before a complete view was loaded from the datastore; until
//!   then attach requests are refused (the pod stays in the node's default-deny);
//! - the first apply builds the compiler from the whole view and diffs its plan against the
//!   restored one;
//! - the plan file is written *before* each commit, so it is never behind the kernel;
//! - a failed transaction leaves the kernel as it was (nft commits all or nothing); the next
//!   apply then builds a new compiler from the whole view and replaces the table whole.
//!
//! The view is loaded whole at start, on `policy-sync` and when something only a load sees
//! changed ([`Policy::mark_reload`]); otherwise the object watch's events are folded into it
//! in memory ([`Policy::on_object_event`]). After each load the object watch restarts from
//! the load's revision ([`Policy::rewatch_due`]). Events mark the view dirty; a lone event is
//! applied almost at once ([`SETTLE`]), a burst is coalesced into one apply and one
//! transaction per [`COALESCE`]. An `attach` is applied at once, and answered after the
//! commit.

pub mod cut;
mod denied;
mod endpoints;
mod error;
mod feed;
pub mod netlink;
pub mod nft;
mod persist;
mod view;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
#[cfg(debug_assertions)]
use serde_json::json;
use tokio::time::Instant;
#[cfg(debug_assertions)]
use weft_policy::World;
use weft_policy::plan::{self, Compiler, Plan, PlanOptions};
use weft_proto::{
    ApplyMode, ApplyTiming, CommitVia, DeniedClass, DeniedPod, Direction, EndpointFile,
    EndpointMode, LastCut, PolicyStatus, Reply, endpoints_dir,
};
use weft_store::{Datastore, EndpointRecord, LeaseId, ObjectEvent, Revision, StoreError};

use crate::config::Settings;
use crate::log;
use crate::metrics;
use crate::socket;
pub use denied::DeniedIndex;
pub use error::Error;

use endpoints::Local;
use feed::Touched;
use persist::Persisted;
use view::View;

/// How long events are gathered before one load and one transaction, when they follow an
/// apply closely (a burst): at most one apply per this much time while events keep coming.
pub const COALESCE: Duration = Duration::from_millis(30);
/// How long a lone event (nothing applied for [`COALESCE`]) waits before it is applied:
/// long enough for events already queued with it (a pod's labels and its endpoint) to be
/// folded in first, short of making a single change wait out a whole window.
pub const SETTLE: Duration = Duration::from_millis(2);
/// How soon a failed apply is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// How soon a failed load is tried again.
const LOAD_RETRY: Duration = Duration::from_secs(3);

pub struct Policy {
    node: String,
    opts: PlanOptions,
    endpoints_dir: PathBuf,
    /// `policy-plan.json` and its journal.
    persist: Persisted,
    local: Local,
    /// None until the first complete load from the datastore.
    view: Option<View>,
    /// What the kernel's table holds, as far as this agent knows, and the compiler once
    /// there is one.
    enforced: Enforced,
    /// The view revision of the last successful apply.
    applied_revision: Revision,
    /// An apply is due at this instant.
    due: Option<Instant>,
    /// When the last apply ended: events closer to it than [`COALESCE`] are gathered.
    last_apply: Option<Instant>,
    /// The next apply must load the whole view first (nodes or blocks changed, the watch
    /// resynced, a periodic rescan); otherwise it applies the view as the object watch's
    /// events left it.
    reload: bool,
    /// The view was loaded at this revision: the object watch must start again from it
    /// (events already queued may predate the load; folding them in would step back).
    rewatch: Option<Revision>,
    last_error: Option<String>,
    /// How long the last load, compile+diff and nft transaction took.
    timing: Timing,
    /// The same, for the last apply that committed a transaction.
    last_change: Timing,
    /// What this agent last wrote to the datastore for its own pods.
    published: BTreeMap<(String, String), EndpointRecord>,
    /// What changed since the compiler was last fed.
    touched: Touched,
    /// The netlink socket changes are committed on, kept open: closing one after
    /// a batch that deleted elements waits for an RCU grace period (8–16 ms here).
    session: Option<weft_nft::Session>,
    /// The node's blocks and underlay addresses the compiler's world was built with.
    fed_node: Option<(Vec<IpNet>, Vec<IpAddr>)>,
    /// `--policy-cut-established`, and what its last sweep did.
    cut_established: bool,
    last_cut: Result<cut::Sweep, Error>,
    /// A cut ran since [`Policy::cut_due`] was last asked: the eBPF datapath's fast
    /// connections are to be judged against the plan too.
    cut_pending: bool,
}

/// The plan the kernel's table holds and how the next apply gets there. One value rather
/// than a plan, an optional compiler and a flag: the combinations that cannot happen (a
/// restored plan beside a compiler, a known kernel before any plan) cannot be built.
enum Enforced {
    /// Nothing was put back at start (no plan file, or it could not be read or applied):
    /// the table is left as it is until the first apply replaces it whole. Holds an empty
    /// plan, which is what the status reports meanwhile.
    Unrestored(Plan),
    /// The persisted plan was put back at start and nothing was compiled since: the kernel
    /// holds it, and the first apply diffs a new compiler's plan against it (once).
    Restored(Plan),
    /// The kernel holds the compiler's plan: each change is fed to it and its ops are
    /// the transaction.
    Compiled(Compiler),
    /// A commit was refused: the compiler holds the plan that was tried, the kernel
    /// whatever it held (nf_tables commits all or nothing, but no diff is trusted now). The
    /// next apply builds a new compiler and replaces the table whole.
    Refused(Compiler),
}

impl Enforced {
    /// The plan the kernel holds when [`Enforced::kernel_known`], else the one last tried
    /// (or the empty one).
    fn plan(&self) -> &Plan {
        match self {
            Enforced::Unrestored(p) | Enforced::Restored(p) => p,
            Enforced::Compiled(c) | Enforced::Refused(c) => c.plan(),
        }
    }

    fn kernel_known(&self) -> bool {
        matches!(self, Enforced::Restored(_) | Enforced::Compiled(_))
    }

    /// The commit of the compiler's plan failed.
    fn refuse(&mut self, table: &str) {
        let placeholder = Enforced::Unrestored(Plan::empty(table));
        *self = match std::mem::replace(self, placeholder) {
            Enforced::Compiled(c) => Enforced::Refused(c),
            other => other,
        };
    }
}

impl Policy {
    pub fn new(s: &Settings) -> Policy {
        let mut opts = PlanOptions::new(&s.node_name);
        opts.log_per_second = s.policy_log_rate;
        opts.cut_established = s.policy_cut_established;
        Policy {
            node: s.node_name.clone(),
            enforced: Enforced::Unrestored(Plan::empty(&opts.table)),
            opts,
            endpoints_dir: endpoints_dir(&s.socket_path()),
            persist: Persisted::new(&s.run_dir),
            local: Local::new(),
            view: None,
            applied_revision: 0,
            due: None,
            last_apply: None,
            reload: true,
            rewatch: None,
            last_error: None,
            published: BTreeMap::new(),
            timing: Timing::default(),
            last_change: Timing::default(),
            touched: Touched::everything(),
            session: None,
            fed_node: None,
            cut_established: s.policy_cut_established,
            last_cut: Ok(cut::Sweep::default()),
            cut_pending: false,
        }
    }

    /// Put the last applied plan back (one transaction replacing the table) and read the
    /// endpoint files. Without a persisted plan the kernel is left alone until the first
    /// complete view.
    pub async fn restore(&mut self) {
        self.local = endpoints::scan(&self.endpoints_dir);
        self.warn_unenforceable();
        let saved = match self.persist.load() {
            Ok(Some(p)) => p,
            Ok(None) => return,
            Err(e) => {
                log::error(
                    "persisted policy plan unreadable; the kernel table is kept until the first complete view",
                    &[
                        (
                            "file",
                            self.persist.plan_path().display().to_string().into(),
                        ),
                        ("error", e.to_string().into()),
                    ],
                );
                return;
            }
        };
        if saved.table != self.opts.table {
            return;
        }
        match nft::replace_table(&saved).await {
            Ok(()) => {
                log::info(
                    "persisted policy plan restored",
                    &[("classes", saved.classes.len().into())],
                );
                self.enforced = Enforced::Restored(saved);
                self.share_plan();
            }
            Err(e) => log::error(
                "cannot restore the persisted policy plan",
                &[("error", e.to_string().into())],
            ),
        }
    }

    /// Something the view depends on changed: load and apply soon.
    pub fn mark_dirty(&mut self) {
        let now = Instant::now();
        // Leading edge: a change after a quiet spell goes in at once; within a window of
        // the last apply it waits for the window's end, with whatever else comes meanwhile.
        let at = match self.last_apply {
            Some(t) if now < t + COALESCE => t + COALESCE,
            _ => now + SETTLE,
        };
        self.due = Some(self.due.map_or(at, |d| d.min(at)));
    }

    /// Something only a full load of the view sees changed (nodes, blocks, a broken watch):
    /// load the whole view and apply soon.
    pub fn mark_reload(&mut self) {
        self.reload = true;
        self.touched.whole = true;
        self.mark_dirty();
    }

    /// One event of the object watch (started at the revision of the last load, see
    /// [`Policy::take_rewatch`]): folded into the view in memory, applied soon.
    pub fn on_object_event(&mut self, ev: ObjectEvent) {
        match &ev {
            ObjectEvent::EndpointPut(rec) if rec.node == self.node => {
                self.published
                    .insert((rec.namespace.clone(), rec.name.clone()), rec.clone());
            }
            ObjectEvent::EndpointDeleted {
                node,
                namespace,
                name,
            } if *node == self.node => {
                self.published.remove(&(namespace.clone(), name.clone()));
            }
            _ => {}
        }
        // Until the watch restarted from the last load's revision, its events may predate
        // the view: not folded in (a load follows).
        self.touched.event(&ev);
        let folded = match &mut self.view {
            Some(v) if self.rewatch.is_none() => v.apply_event(ev),
            _ => false,
        };
        if folded {
            self.mark_dirty();
        } else {
            self.mark_reload();
        }
    }

    /// The revision the object watch must be started again from after a load (until
    /// [`Policy::rewatched`]).
    pub fn rewatch_due(&self) -> Option<Revision> {
        self.rewatch
    }

    /// The object watch was started again from [`Policy::rewatch_due`].
    pub fn rewatched(&mut self) {
        self.rewatch = None;
    }

    /// When the next load and apply is due.
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// Re-read the endpoint files (a pod added while the agent was down, a DEL it missed).
    pub fn rescan(&mut self) {
        let now = endpoints::scan(&self.endpoints_dir);
        if now != self.local {
            self.local = now;
            self.warn_unenforceable();
        }
        self.mark_reload();
    }

    /// Whether pod `namespace/name` is selected by a NetworkPolicy in the view, so its
    /// packets must keep the nftables path (the eBPF datapath, `crate::datapath`). Yes
    /// when unsure: before the view is loaded, or while its labels are unknown.
    pub fn policed(&self, namespace: &str, name: &str) -> bool {
        let Some(view) = &self.view else {
            return true;
        };
        match view.endpoint(&self.node, &self.local, namespace, name) {
            Some(ep) => view.policies().any(|p| p.selects(&ep)),
            None => true,
        }
    }

    /// This node's endpoint files as last read (at start, at each rescan, on `attach`).
    pub fn local_endpoints(&self) -> impl Iterator<Item = &EndpointFile> {
        self.local.values()
    }

    fn warn_unenforceable(&self) {
        for f in self
            .local
            .values()
            .filter(|f| f.mode == EndpointMode::Macvlan)
        {
            log::error(
                "NetworkPolicy cannot be enforced for a macvlan pod: its traffic never passes this node's netfilter",
                &[
                    ("namespace", f.namespace.clone().into()),
                    ("pod", f.name.clone().into()),
                ],
            );
        }
    }

    /// Apply the view — loaded again first when `load` (the `policy-sync` barrier), when
    /// a reload is pending or nothing was loaded yet; else as the object watch's events
    /// left it — then bring this node's published endpoints in line. Failures are logged
    /// and retried ([`RETRY`]); with the datastore down the kernel keeps what it has.
    pub async fn flush<S: Datastore>(
        &mut self,
        store: &S,
        lease: LeaseId,
        blocks: &[IpNet],
        underlay: &[IpAddr],
        load: bool,
    ) -> Result<(), Error> {
        self.due = None;
        if !(load || self.reload || self.view.is_none()) {
            self.timing = Timing::default();
            self.apply(blocks, underlay).await?;
            self.publish(store, lease).await;
            return Ok(());
        }
        let started = std::time::Instant::now();
        let loaded = View::load(store, self.view.as_ref()).await;
        self.timing = Timing {
            load_ms: ms(started),
            ..Timing::default()
        };
        match loaded {
            Ok(v) => {
                self.published = v
                    .endpoints
                    .iter()
                    .filter(|e| e.node == self.node)
                    .map(|e| ((e.namespace.clone(), e.name.clone()), e.clone()))
                    .collect();
                self.rewatch = Some(v.revision);
                self.reload = false;
                self.view = Some(v);
                self.touched.whole = true;
            }
            Err(e) => {
                // Not sooner: every attempt can hold the control loop for a request timeout
                // while the datastore is down; its watch's Resync brings the load forward.
                self.due = Some(Instant::now() + LOAD_RETRY);
                let e = Error::Load(e);
                self.last_error = Some(e.to_string());
                return Err(e);
            }
        }
        self.apply(blocks, underlay).await?;
        self.publish(store, lease).await;
        Ok(())
    }

    /// The plan the kernel holds when it is known (else the one last tried).
    fn plan(&self) -> &Plan {
        self.enforced.plan()
    }

    /// After a change that cut conntrack's entries (`--policy-cut-established`), once: the
    /// plan the eBPF datapath's fast connections are to be judged against.
    pub fn cut_due(&mut self) -> Option<&Plan> {
        std::mem::take(&mut self.cut_pending).then(|| self.enforced.plan())
    }

    /// Bring the compiler to the current view for this node and commit the difference.
    ///
    /// While the kernel is known to hold the compiler's plan, only what changed is fed to it
    /// ([`feed::feed`]: pods and policies upserted or removed; namespaces or nodes replace
    /// the world) and its ops are the transaction. Otherwise — the first apply after a start,
    /// or after a failed commit — a new compiler is built from the whole view and its plan
    /// is diffed against the restored one, or replaces the table whole.
    async fn apply(&mut self, blocks: &[IpNet], underlay: &[IpAddr]) -> Result<(), Error> {
        let applied = self.apply_now(blocks, underlay).await;
        self.last_apply = Some(Instant::now());
        applied
    }

    async fn apply_now(&mut self, blocks: &[IpNet], underlay: &[IpAddr]) -> Result<(), Error> {
        let Some(view) = &self.view else {
            return Err(Error::NotLoaded);
        };
        let started = std::time::Instant::now();
        let revision = view.revision;
        let incremental = matches!(self.enforced, Enforced::Compiled(_));
        let node = (blocks.to_vec(), underlay.to_vec());
        let touched = std::mem::take(&mut self.touched);
        // Only what the events named is looked up when nothing else can have changed;
        // otherwise the whole world is built and compared.
        let world = (!incremental || touched.whole || self.fed_node.as_ref() != Some(&node))
            .then(|| view.world(&self.node, &self.local, blocks, underlay));
        self.fed_node = Some(node);
        self.timing.world_ms = ms(started);
        let compiled = std::time::Instant::now();
        let script = match (&mut self.enforced, world) {
            (Enforced::Compiled(c), world) => {
                #[cfg(debug_assertions)]
                let before = c.world().clone();
                let fed = match world {
                    Some(world) => feed::feed(c, world),
                    None => feed::feed_touched(c, &touched, view, &self.node, &self.local),
                };
                let ops = c.take_ops();
                self.timing.mode = if fed.whole {
                    ApplyMode::World
                } else {
                    ApplyMode::Incremental
                };
                self.timing.fed_endpoints = fed.endpoints;
                self.timing.fed_policies = fed.policies;
                self.timing.ops = ops.len();
                #[cfg(debug_assertions)]
                self_check(
                    c,
                    &(
                        before,
                        view.world(&self.node, &self.local, blocks, underlay),
                    ),
                    &self.opts,
                );
                (!ops.is_empty()).then_some(Commit::Ops { ops, journal: true })
            }
            (enforced, world) => {
                let world =
                    world.unwrap_or_else(|| view.world(&self.node, &self.local, blocks, underlay));
                let c = Compiler::new(world, self.opts.clone());
                self.timing.fed_endpoints = c.world().endpoints.len();
                self.timing.fed_policies = c.world().policies.len();
                let script = if let Enforced::Restored(restored) = enforced {
                    let ops = plan::diff(restored, c.plan());
                    self.timing.mode = ApplyMode::Diff;
                    self.timing.ops = ops.len();
                    (!ops.is_empty()).then_some(Commit::Ops {
                        ops,
                        journal: false,
                    })
                } else {
                    self.timing.mode = ApplyMode::Replace;
                    self.timing.ops = 0;
                    Some(Commit::Replace)
                };
                // A restored plan is only ever diffed against once: from now on the
                // compiler's plan is it, and the commit below makes the kernel hold it or
                // turns this into `Refused`.
                *enforced = Enforced::Compiled(c);
                script
            }
        };
        self.timing.compile_ms = ms(compiled);
        let changed = script.is_some();
        let persisting = std::time::Instant::now();
        if changed || !self.persist.is_current() {
            // Written before the commit: a crash between the two leaves files one step
            // ahead of the kernel, and a restart restoring them applies what this commit was
            // about to. Written after, they could be one step behind, and restoring them
            // could reopen a flow this commit had just denied.
            let plan = self.enforced.plan();
            let written = match &script {
                Some(Commit::Ops { ops, journal: true }) => self.persist.record(ops, plan),
                _ => self.persist.write_whole(plan),
            };
            if let Err(e) = written {
                log::error(
                    "policy plan not persisted",
                    &[("error", e.to_string().into())],
                );
            }
        }
        self.timing.persist_ms = ms(persisting);
        let started = std::time::Instant::now();
        self.timing.nft_ms = 0.0;
        if let Some(script) = script {
            let applied = self.commit(script).await;
            self.timing.nft_ms = ms(started);
            if let Err(e) = applied {
                // nft commits all or nothing, but say so by trusting no diff next time (and
                // write the file again then: it now holds a plan the kernel refused). The
                // compiler moved on to that plan: the next apply builds a new one from the
                // whole view and replaces the table with its plan.
                self.enforced.refuse(&self.opts.table);
                self.share_plan();
                self.persist.invalidate();
                self.due = Some(Instant::now() + RETRY);
                let e = Error::Apply {
                    table: self.opts.table.clone(),
                    source: Box::new(e),
                };
                log::error("policy not applied", &[("error", e.to_string().into())]);
                self.last_error = Some(e.to_string());
                return Err(e);
            }
            // A sum of µs-rounded figures: rounded again, or 0.703 prints as 0.7030000000000001.
            self.timing.total_ms = ((self.timing.load_ms
                + self.timing.world_ms
                + self.timing.compile_ms
                + self.timing.persist_ms
                + self.timing.nft_ms)
                * 1e3)
                .round()
                / 1e3;
            self.last_change = self.timing;
            metrics::get().policy_commit(self.timing.nft_ms / 1e3);
            log::info(
                "policy applied",
                &[
                    ("revision", revision.into()),
                    ("classes", self.plan().classes.len().into()),
                    ("mode", self.timing.mode.as_str().into()),
                    ("ops", self.timing.ops.into()),
                    ("loadMs", self.timing.load_ms.into()),
                    ("worldMs", self.timing.world_ms.into()),
                    ("compileMs", self.timing.compile_ms.into()),
                    ("persistMs", self.timing.persist_ms.into()),
                    ("nftMs", self.timing.nft_ms.into()),
                    ("via", self.timing.via.as_str().into()),
                ],
            );
        }
        // After the commit, so not on its path: a journal grown large is folded into a new
        // plan file on a thread of its own (the loop pays for a copy of the plan).
        if changed {
            self.persist.tend(self.enforced.plan());
        }
        // A new compiler's plan is the kernel's now, committed or equal to the restored one.
        if changed || !incremental {
            self.share_plan();
        }
        self.applied_revision = revision;
        self.last_error = None;
        if changed && self.cut_established {
            self.cut().await;
            self.cut_pending = true;
        }
        Ok(())
    }

    /// Gives `/metrics` what it needs to read denied packets per policy on its own: the
    /// index of the plan the kernel holds, or none while that is unknown. Built only when
    /// someone scrapes: it walks every class and pod map of the plan.
    fn share_plan(&self) {
        let m = metrics::get();
        if m.serving() {
            m.policy_plan(
                self.enforced
                    .kernel_known()
                    .then(|| DeniedIndex::of(self.plan())),
            );
        }
    }

    /// Hands a change to the kernel: elements, new and deleted sets and regular chains as one
    /// netlink batch on the kept session; the table, base chains and replaced chains (first
    /// build, option changes) through `nft -f`. Both are one atomic transaction.
    async fn commit(&mut self, commit: Commit) -> Result<(), Error> {
        let ops = match commit {
            Commit::Ops { ops, .. } => ops,
            Commit::Replace => {
                self.timing.via = CommitVia::Nft;
                return nft::replace_table(self.plan()).await;
            }
        };
        let plan = self.plan();
        let Some(batch) = netlink::batch(&self.opts.table, &ops, plan, plan) else {
            self.timing.via = CommitVia::Nft;
            return nft::apply(plan::render_ops(&self.opts.table, &ops)).await;
        };
        self.timing.via = CommitVia::Netlink;
        let session = self.session.take();
        let (session, done) = tokio::task::spawn_blocking(move || {
            let mut session = match session {
                Some(s) => s,
                None => match weft_nft::Session::open() {
                    Ok(s) => s,
                    Err(e) => return (None, Err(Error::Socket(e))),
                },
            };
            let done = netlink::commit_on(&mut session, batch);
            // After a refusal, start the next commit on a fresh socket.
            (done.is_ok().then_some(session), done)
        })
        .await
        .map_err(|source| Error::Thread {
            what: "netlink commit",
            source,
        })?;
        self.session = session;
        done
    }

    /// Cut the conntrack entries of flows the applied plan denies, and release the cut ones
    /// it allows again (before the apply is answered: a `policy-sync` that returns has done
    /// both). A failure is logged, not retried: the policy itself is in place.
    async fn cut(&mut self) {
        self.last_cut = cut::sweep(self.plan().clone()).await;
        match &self.last_cut {
            Ok(s) if s.cut > 0 || s.released > 0 => log::info(
                "established connections of denied flows cut",
                &[
                    ("entries", s.entries.into()),
                    ("cut", s.cut.into()),
                    ("released", s.released.into()),
                ],
            ),
            Ok(_) => {}
            Err(e) => log::error(
                "cutting established connections failed",
                &[("error", e.to_string().into())],
            ),
        }
    }

    /// Write this node's pods to the datastore (for the other nodes) where the copy there
    /// differs; remove copies of pods no longer here. Best effort: retried at the next load.
    async fn publish<S: Datastore>(&mut self, store: &S, lease: LeaseId) {
        let mut desired: BTreeMap<(String, String), EndpointRecord> = BTreeMap::new();
        for f in self.local.values() {
            let rec = desired
                .entry((f.namespace.clone(), f.name.clone()))
                .or_insert_with(|| EndpointRecord {
                    node: self.node.clone(),
                    namespace: f.namespace.clone(),
                    name: f.name.clone(),
                    container_id: f.container_id.clone(),
                    ifname: f.ifname.clone(),
                    addresses: Vec::new(),
                });
            for a in &f.addresses {
                if !rec.addresses.contains(a) {
                    rec.addresses.push(*a);
                }
            }
        }
        for (key, rec) in &desired {
            if self.published.get(key) == Some(rec) {
                continue;
            }
            match store.put_endpoint(rec, lease).await {
                Ok(()) => {
                    self.published.insert(key.clone(), rec.clone());
                }
                Err(e) => {
                    log_publish_error(&e, &rec.namespace, &rec.name);
                    return;
                }
            }
        }
        let stale: Vec<(String, String)> = self
            .published
            .keys()
            .filter(|k| !desired.contains_key(*k))
            .cloned()
            .collect();
        for (ns, name) in stale {
            match store.delete_endpoint(&self.node, &ns, &name).await {
                Ok(_) => {
                    self.published.remove(&(ns, name));
                }
                Err(e) => {
                    log_publish_error(&e, &ns, &name);
                    return;
                }
            }
        }
    }

    /// Pods were attached (each a container id and ifname): read their files, program
    /// them all in one commit, and answer each once it is committed. Runtimes start pods
    /// in bursts (a Deployment's replicas arrive at a kubelet together); taking the queued
    /// ADDs as one batch reads the unknown pods' labels concurrently and commits once,
    /// where one at a time the last ADD of 30 waited for 29 API reads and commits.
    pub async fn attach_many<S: Datastore>(
        &mut self,
        store: &S,
        pods: &[(String, String)],
        blocks: &[IpNet],
        underlay: &[IpAddr],
    ) -> Vec<Reply> {
        let mut replies: Vec<Option<Reply>> = vec![None; pods.len()];
        let mut files = Vec::new();
        for (i, (container_id, ifname)) in pods.iter().enumerate() {
            if [container_id, ifname]
                .iter()
                .any(|s| s.is_empty() || s.contains('/') || s.starts_with('.'))
            {
                replies[i] = Some(socket::refuse("invalid container id or ifname"));
                continue;
            }
            let path = self
                .endpoints_dir
                .join(format!("{container_id}-{ifname}.json"));
            match endpoints::read(&path) {
                Some(f) => files.push((i, f)),
                None => {
                    replies[i] = Some(socket::refuse(&format!(
                        "no readable endpoint file {}",
                        path.display()
                    )))
                }
            }
        }
        let unlearned = self.learn_pods(store, files.iter().map(|(_, f)| f)).await;
        let mut accepted = Vec::new();
        for (i, f) in files {
            if let Some(why) = unlearned.get(&(f.namespace.clone(), f.name.clone())) {
                replies[i] = Some(socket::refuse(why));
                continue;
            }
            let (container_id, ifname) = &pods[i];
            if f.mode == EndpointMode::Macvlan {
                self.warn_unenforceable();
            }
            self.touched
                .pods
                .insert((f.namespace.clone(), f.name.clone()));
            if let Some(old) = self.local.insert((container_id.clone(), ifname.clone()), f) {
                self.touched.pods.insert((old.namespace, old.name));
            }
            accepted.push(i);
        }
        if !accepted.is_empty() {
            // Applied with the view in memory: nothing is loaded.
            self.timing = Timing::default();
            let reply = if self.view.is_none() {
                self.mark_dirty();
                socket::refuse(
                    "the policy view is not loaded from the datastore yet; the pod stays isolated until it is",
                )
            } else {
                match self.apply(blocks, underlay).await {
                    Ok(()) => Reply::done(),
                    Err(e) => socket::refuse(&e.to_string()),
                }
            };
            for i in accepted {
                replies[i] = Some(reply.clone());
            }
        }
        replies
            .into_iter()
            .map(|r| r.unwrap_or_else(|| socket::refuse("attach not handled")))
            .collect()
    }

    /// On Kubernetes the CNI ADD can come before the watch reports the pod: its labels are
    /// read from the API now (all of a batch's at once), so the policy it gets before ADD
    /// returns is its own. When they cannot be read (the API server down), that pod's ADD
    /// is refused rather than the pod started under policies chosen for labels it may not
    /// have: the runtime retries. Returns the pods refused so, with the reason.
    async fn learn_pods<'a, S: Datastore>(
        &mut self,
        store: &S,
        files: impl Iterator<Item = &'a EndpointFile>,
    ) -> BTreeMap<(String, String), String> {
        let Some(view) = &self.view else {
            return BTreeMap::new();
        };
        let wanted: BTreeSet<(String, String)> = files
            .filter(|f| !view.has_pod_labels(&f.namespace, &f.name))
            .map(|f| (f.namespace.clone(), f.name.clone()))
            .collect();
        let fetched = futures::future::join_all(
            wanted
                .iter()
                .map(|(namespace, name)| store.fetch_pod(namespace, name)),
        )
        .await;
        let mut refused = BTreeMap::new();
        for ((namespace, name), got) in wanted.into_iter().zip(fetched) {
            match got {
                Ok(Some(obj)) => {
                    if let Some(v) = &mut self.view {
                        v.apply_event(ObjectEvent::Put(obj));
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    let why = format!(
                        "pod {namespace}/{name} is not in weftd's cache and its labels cannot be \
                         read ({e}); retry once the API server answers"
                    );
                    refused.insert((namespace, name), why);
                }
            }
        }
        refused
    }

    /// A pod was detached: forget it and re-apply soon.
    pub fn detach(&mut self, container_id: &str, ifname: &str) -> Reply {
        if let Some(old) = self
            .local
            .remove(&(container_id.to_string(), ifname.to_string()))
        {
            self.touched.pods.insert((old.namespace, old.name));
        }
        self.mark_dirty();
        Reply::done()
    }

    /// Publish this node's endpoints after an attach or detach (outside the reply path).
    pub async fn publish_now<S: Datastore>(&mut self, store: &S, lease: LeaseId) {
        if self.view.is_some() {
            self.publish(store, lease).await;
        }
    }

    /// The policy part of the agent's status, with per-class drop counters from the kernel.
    pub async fn status(&self) -> PolicyStatus {
        let counters = if self.enforced.kernel_known() {
            nft::drop_counters(self.opts.table.clone())
                .await
                .map_err(|e| e.to_string())
        } else {
            Err("the kernel table is not (yet) the applied plan".to_string())
        };
        let mut per_chain: BTreeMap<String, u64> = BTreeMap::new();
        let mut pods = Vec::new();
        let mut unknown: u64 = 0;
        let mut counter_error = None;
        match counters {
            Ok(d) => {
                for (chain, packets) in d.chains {
                    *per_chain.entry(chain).or_default() += packets;
                }
                // Each isolated pod is in one class per direction: its element counter is
                // what that class (its policies) denied it.
                for (dir, addr, packets, bytes) in d.pods {
                    let map = plan::SetName::PodMap(dir, plan::Family::of(addr)).to_string();
                    let direction = match dir {
                        weft_policy::Direction::Ingress => Direction::Ingress,
                        weft_policy::Direction::Egress => Direction::Egress,
                    };
                    let class = self
                        .plan()
                        .sets
                        .get(&map)
                        .and_then(|s| s.elements.get(&weft_policy::plan::Elem::addr(addr)))
                        .and_then(|v| match v {
                            Some(weft_policy::plan::Verdict::Jump(c)) => Some(c.clone()),
                            _ => None,
                        });
                    let Some(class) = class else { continue };
                    *per_chain.entry(class.clone()).or_default() += packets;
                    let pod = self
                        .local
                        .values()
                        .find(|f| f.addresses.contains(&addr))
                        .map(|f| format!("{}/{}", f.namespace, f.name));
                    let policies: Vec<String> = self
                        .plan()
                        .classes
                        .get(&class)
                        .map(|i| i.policies.iter().map(|p| p.to_string()).collect())
                        .unwrap_or_default();
                    pods.push(DeniedPod {
                        pod,
                        address: addr,
                        direction,
                        policies,
                        packets,
                        bytes,
                    });
                }
            }
            Err(e) => counter_error = Some(e),
        }
        let mut denied = Vec::new();
        for (chain, packets) in per_chain {
            match self.plan().classes.get(&chain) {
                Some(info) => denied.push(DeniedClass {
                    direction: match info.direction {
                        weft_policy::Direction::Ingress => Direction::Ingress,
                        weft_policy::Direction::Egress => Direction::Egress,
                    },
                    policies: info.policies.iter().map(|p| p.to_string()).collect(),
                    chain,
                    packets,
                }),
                None => unknown += packets,
            }
        }
        let rules: usize = self.plan().chains.values().map(|c| c.rules.len()).sum();
        let elements: usize = self.plan().sets.values().map(|s| s.elements.len()).sum();
        let unenforceable: Vec<String> = self
            .local
            .values()
            .filter(|f| f.mode == EndpointMode::Macvlan)
            .map(|f| format!("{}/{}", f.namespace, f.name))
            .collect();
        PolicyStatus {
            table: format!("inet {}", self.opts.table),
            revision: self.applied_revision,
            view_loaded: self.view.is_some(),
            in_sync: self.in_sync(),
            policies: self.view.as_ref().map_or(0, |v| v.policies().count()),
            endpoints: self.local.len(),
            classes: self.plan().classes.len(),
            chains: self.plan().chains.len(),
            rules,
            elements,
            denied,
            denied_pods: pods,
            denied_unknown_pods: unknown,
            counter_error,
            last_error: self.last_error.clone(),
            unenforceable,
            cut_established: self.cut_established,
            last_cut: match &self.last_cut {
                Ok(c) => LastCut::Swept {
                    entries: c.entries,
                    cut: c.cut,
                    released: c.released,
                },
                Err(e) => LastCut::Failed {
                    error: e.to_string(),
                },
            },
            last_apply: self.timing.to_status(),
            last_change: self.last_change.to_status(),
        }
    }

    /// The kernel holds the plan of a complete view (as loaded or as events left it since),
    /// and its last commit was not refused. Unlike [`Policy::in_sync`] it stays true while
    /// a change waits out its coalescing delay or the datastore is down: pods can be
    /// attached meanwhile.
    pub fn applied(&self) -> bool {
        self.view.is_some() && self.enforced.kernel_known()
    }

    /// Loaded, applied, and nothing waiting.
    pub fn in_sync(&self) -> bool {
        self.view.is_some()
            && self.enforced.kernel_known()
            && self.due.is_none()
            && self.last_error.is_none()
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Timing {
    /// Reading the view from the datastore (0 for an attach, which uses the view in memory).
    load_ms: f64,
    /// Building the world from the view and this node's endpoint files.
    world_ms: f64,
    /// Feeding the compiler (or compiling from scratch) and rendering the ops.
    compile_ms: f64,
    /// Writing `policy-plan.json`.
    persist_ms: f64,
    /// Committing the change to the kernel (netlink or `nft`).
    nft_ms: f64,
    /// How the last change was committed: one netlink batch on a kept socket (elements,
    /// regular chains, sets) or `nft -f` (the table, base or replaced chains).
    via: CommitVia,
    /// The sum of the above, for the last committed change.
    total_ms: f64,
    /// How the plan was reached ([`ApplyMode`]).
    mode: ApplyMode,
    /// Ops of the last diff (0 for a whole-table replace).
    ops: usize,
    /// Pods and policies fed to the compiler (all of them for a new compiler).
    fed_endpoints: usize,
    fed_policies: usize,
}

impl Timing {
    fn to_status(self) -> ApplyTiming {
        ApplyTiming {
            mode: self.mode,
            load_ms: self.load_ms,
            world_ms: self.world_ms,
            compile_ms: self.compile_ms,
            persist_ms: self.persist_ms,
            nft_ms: self.nft_ms,
            via: self.via,
            total_ms: self.total_ms,
            ops: self.ops,
            endpoints_fed: self.fed_endpoints,
            policies_fed: self.fed_policies,
        }
    }
}

/// What a change hands to the kernel.
enum Commit {
    /// These ops on the table as it is; `journal` when they may be recorded as a journal
    /// line (an incremental step) rather than as a whole new plan file.
    Ops { ops: Vec<plan::Op>, journal: bool },
    /// The whole table, replacing whatever the kernel holds.
    Replace,
}

/// Debug builds check every incremental step: the compiler's world is the view's (up to
/// order: fed policies and pods go last) and its plan is a compile from scratch of that
/// world. (Not against a compile of the view's world as ordered: the plan depends on the
/// order of policies — a class lists its policies in world order — so the same policies in
/// another order give an equivalent plan, not an equal one.) The release agent trusts the
/// compiler's own tests: a full compile is the cost the compiler is there to avoid.
#[cfg(debug_assertions)]
fn self_check(c: &Compiler, (before, world): &(World, World), opts: &PlanOptions) {
    let sorted = |w: &World| {
        let mut w = w.clone();
        w.namespaces.sort();
        w.nodes.sort();
        w.endpoints.sort();
        w.policies.sort();
        w
    };
    let same_world = sorted(c.world()) == sorted(world);
    let same_plan = same_world && c.plan() == &plan::compile(c.world(), opts);
    if !same_plan {
        let dump = std::env::temp_dir().join(format!("weft-selfcheck-{}.json", std::process::id()));
        let _ = std::fs::write(
            &dump,
            serde_json::to_string(&json!({"node": opts.node, "before": before, "after": world,
                "compilerWorld": c.world()}))
            .unwrap_or_default(),
        );
        panic!(
            "policy self-check failed: {} (worlds in {})",
            if same_world {
                "the incremental plan differs from a full compile of its world"
            } else {
                "the compiler's world is not the view's"
            },
            dump.display()
        );
    }
}

fn ms(since: std::time::Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

fn log_publish_error(e: &StoreError, ns: &str, name: &str) {
    log::warn(
        "endpoint not published to the datastore; retried at the next load",
        &[
            ("namespace", ns.to_string().into()),
            ("pod", name.to_string().into()),
            ("error", e.to_string().into()),
        ],
    );
}
