//! weftd's metrics and probes (docs/metrics.md): `/metrics` (OpenMetrics text), `/healthz`
//! and `/readyz`, served over HTTP on `--metrics-address` ([`http`]).
//!
//! **Owns:** a small snapshot of what the node is doing ([`Telemetry`]): the `weft_*`
//! metric handles ([`registry`]), the readiness facts ([`health::Facts`]), the last sign
//! of life of the control loop, and what a scrape needs to read denied packets from the
//! kernel ([`DeniedIndex`]). The control loop writes it where the facts change; the HTTP
//! task only reads it.
//!
//! **Must not:** block or wait for the control loop (a scrape or a probe reads the
//! snapshot, and kernel counters on a blocking thread, never asks the loop), hold its lock
//! across an `await`, or change anything: it observes.
//!
//! One snapshot per process ([`get`]): weftd runs one node, and some facts are reported
//! from places that have no node to hang a handle on (the datastore retries of start-up).

pub mod health;
pub mod http;
pub mod registry;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use weft_policy::PolicyRef;
use weft_proto::Request;

use crate::config::Settings;
use crate::error::Error;
use crate::log;
use crate::policy::DeniedIndex;
use health::{Facts, Stalled, Unmet};
use registry::Metrics;

/// What the HTTP side reads.
#[derive(Debug)]
pub struct Telemetry {
    metrics: Metrics,
    state: Mutex<State>,
    /// Whether `/metrics` is served: only then is a [`DeniedIndex`] worth building.
    serving: AtomicBool,
    /// One kernel counter dump at a time, however many scrapers there are.
    dump: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct State {
    facts: Facts,
    /// The control loop's last sign of life: a finished step, or an answer (or a timeout)
    /// from the datastore it is waiting on.
    alive_at: Instant,
    liveness_bound: Duration,
    denied: Option<Arc<DeniedIndex>>,
    /// The last failure to read the kernel's counters, logged once until it changes.
    counter_error: Option<String>,
}

/// The process's snapshot.
pub fn get() -> &'static Telemetry {
    static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();
    TELEMETRY.get_or_init(Telemetry::new)
}

/// Serve `--metrics-address`, if given, from now on (before the datastore is reached, so
/// the probes answer during start-up). A port that cannot be bound stops weftd.
pub fn start(s: &Settings) -> Result<(), Error> {
    let Some(addr) = s.metrics_address else {
        return Ok(());
    };
    let t = get();
    t.lock().liveness_bound = health::liveness_bound(s.resync_interval);
    let local = http::serve(addr, t)?;
    log::info(
        "serving metrics and probes",
        &[("address", local.to_string().into())],
    );
    Ok(())
}

impl Default for Telemetry {
    fn default() -> Telemetry {
        Telemetry::new()
    }
}

impl Telemetry {
    pub fn new() -> Telemetry {
        Telemetry {
            metrics: Metrics::new(),
            state: Mutex::new(State {
                facts: Facts::default(),
                alive_at: Instant::now(),
                liveness_bound: health::liveness_bound(Duration::from_secs(30)),
                denied: None,
                counter_error: None,
            }),
            serving: AtomicBool::new(false),
            dump: tokio::sync::Mutex::new(()),
        }
    }

    /// The facts are plain values, each written whole: a panic elsewhere while the lock was
    /// held cannot leave them half-updated, so a poisoned lock is used as it is.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    // --- written by the control loop ---------------------------------------------------

    /// The datastore answered (`true`) or was found unreachable. Either way the caller is
    /// not stuck: a sign of life.
    pub fn datastore(&self, reachable: bool) {
        self.metrics.set_datastore_up(reachable);
        let mut st = self.lock();
        st.facts.datastore_answered |= reachable;
        st.alive_at = Instant::now();
    }

    /// The blocks the node holds now, per address family of the cluster.
    pub fn blocks(&self, per_family: &[(&'static str, usize)]) {
        for (family, n) in per_family {
            self.metrics.set_blocks(family, *n);
        }
        self.lock().facts.blocks = per_family.iter().map(|(_, n)| n).sum();
    }

    /// The conflist was written (`true`) or removed.
    pub fn conflist(&self, written: bool) {
        self.lock().facts.conflist_written = written;
    }

    /// A step of the control loop finished.
    pub fn step(&self, peers: usize, policy_synced: bool, policy_applied: bool) {
        self.metrics.set_peers(peers);
        self.metrics.set_policy_synced(policy_synced);
        let mut st = self.lock();
        st.facts.policy_applied = policy_applied;
        st.alive_at = Instant::now();
    }

    /// A request arrived on the local socket (`None`: a line that could not be read).
    pub fn request(&self, req: Option<&Request>) {
        self.metrics.count_request(match req {
            Some(Request::Grow { .. }) => "grow",
            Some(Request::Status) => "status",
            Some(Request::Attach { .. }) => "attach",
            Some(Request::Detach { .. }) => "detach",
            Some(Request::PolicySync) => "policy-sync",
            None => "invalid",
        });
    }

    /// weftd's GC cleaned up one pod attachment whose DEL never came.
    pub fn gc_collected(&self) {
        self.metrics.count_gc_collected();
    }

    /// A policy change was committed to the kernel in `seconds`.
    pub fn policy_commit(&self, seconds: f64) {
        self.metrics.observe_commit(seconds);
    }

    /// Whether anyone reads the denied packets (building a [`DeniedIndex`] walks the plan).
    pub fn serving(&self) -> bool {
        self.serving.load(Ordering::Relaxed)
    }

    /// The plan the kernel holds changed: `None` when it is not known (nothing restored
    /// yet, a refused commit), and its counters mean nothing.
    pub fn policy_plan(&self, index: Option<DeniedIndex>) {
        self.lock().denied = index.map(Arc::new);
    }

    // --- read by the HTTP side ---------------------------------------------------------

    fn silence(&self) -> (Duration, Duration) {
        let st = self.lock();
        (st.alive_at.elapsed(), st.liveness_bound)
    }

    /// `Err` with the silence when the control loop has not shown a sign of life within
    /// its bound.
    pub fn liveness(&self) -> Result<(), Stalled> {
        let (silent, bound) = self.silence();
        health::stalled(silent, bound).map_or(Ok(()), Err)
    }

    /// The unmet readiness conditions (none: ready).
    pub fn readiness(&self) -> Vec<Unmet> {
        let facts = self.lock().facts;
        let (silent, bound) = self.silence();
        health::unmet(&facts, silent, bound)
    }

    /// The OpenMetrics exposition, with the denied packets read from the kernel now.
    pub async fn render(&self) -> Result<String, std::fmt::Error> {
        let denied = self.read_denied().await;
        self.metrics.encode(denied)
    }

    async fn read_denied(&self) -> Option<BTreeMap<PolicyRef, u64>> {
        let index = self.lock().denied.clone()?;
        let _one = self.dump.lock().await;
        let read = index.read().await.map_err(|e| e.to_string());
        // Said once per change, not at every scrape.
        let before =
            std::mem::replace(&mut self.lock().counter_error, read.as_ref().err().cloned());
        match &read {
            Ok(_) if before.is_some() => log::info("policy counters readable again", &[]),
            Err(e) if before.as_ref() != Some(e) => log::warn(
                "policy counters not read for /metrics",
                &[("error", e.clone().into())],
            ),
            _ => {}
        }
        read.ok()
    }

    fn set_serving(&self, on: bool) {
        self.serving.store(on, Ordering::Relaxed);
    }
}
