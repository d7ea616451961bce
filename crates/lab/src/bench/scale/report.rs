//! The scale benchmark's table (one column per datastore), its JSON, and the verdict on the
//! issue's targets.

use std::fmt::Write;
use std::time::Duration;

use serde_json::{Value, json};

use super::kernel::Counts;
use super::{Sync, Writes};
use crate::bench::agent::LogMarks;
use crate::bench::stats::{Summary, ms};

/// Spawn to every route and the whole policy in the kernel.
pub const TARGET_SYNC: Duration = Duration::from_secs(5);
/// A pod or policy written → in the kernel, p99.
pub const TARGET_WRITE_MS: f64 = 200.0;
/// weftd's peak resident set.
pub const TARGET_RSS_MIB: f64 = 100.0;

/// Everything measured against one datastore.
#[derive(Debug)]
pub struct SideReport {
    pub datastore: &'static str,
    /// Starting the datastore (etcd; etcd + kube-apiserver).
    pub control_plane_ms: f64,
    /// Writing the world to it, untimed for the figures.
    pub setup_ms: f64,
    pub entries: Counts,
    pub sync: Sync,
    pub log: LogMarks,
    pub pods: Writes,
    pub policies: Writes,
    /// (VmRSS, VmHWM) in MiB.
    pub rss_synced: (f64, f64),
    pub rss_end: (f64, f64),
    pub apiserver_rss_mib: Option<f64>,
}

#[derive(Debug)]
pub struct ScaleReport {
    pub weftd: String,
    pub nodes: usize,
    pub pods: usize,
    pub local_pods: usize,
    pub policies: usize,
    pub namespaces: usize,
    pub writes: usize,
    pub seed: u64,
    pub load_before: String,
    pub load_after: String,
    pub sides: Vec<SideReport>,
}

/// One judged target of one datastore.
#[derive(Debug)]
pub struct Target {
    pub datastore: &'static str,
    pub name: &'static str,
    pub value: f64,
    pub unit: &'static str,
    pub limit: f64,
    pub pass: bool,
}

fn opt_ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_owned(), |d| format!("{:.0} ms", ms(d)))
}

fn summary_json(s: &Summary) -> Value {
    serde_json::to_value(s).unwrap_or(Value::Null)
}

impl SideReport {
    fn targets(&self) -> Vec<Target> {
        let t = |name, value, unit, limit: f64| Target {
            datastore: self.datastore,
            name,
            value,
            unit,
            limit,
            pass: value < limit,
        };
        vec![
            t(
                "full sync (spawn -> routes + policy)",
                ms(self.sync.full),
                "ms",
                ms(TARGET_SYNC),
            ),
            t(
                "pod write -> kernel p99",
                self.pods.to_kernel.p99_ms,
                "ms",
                TARGET_WRITE_MS,
            ),
            t(
                "policy write -> kernel p99",
                self.policies.to_kernel.p99_ms,
                "ms",
                TARGET_WRITE_MS,
            ),
            t(
                "weftd peak RSS (VmHWM)",
                self.rss_end.1,
                "MiB",
                TARGET_RSS_MIB,
            ),
        ]
    }

    fn to_json(&self) -> Value {
        let writes = |w: &Writes| {
            json!({"toKernel": summary_json(&w.to_kernel), "fromStart": summary_json(&w.from_start),
                   "ack": summary_json(&w.ack), "what": w.what})
        };
        let st = &self.sync.status;
        json!({
            "datastore": self.datastore,
            "controlPlaneMs": self.control_plane_ms,
            "setupMs": self.setup_ms,
            "kernel": {"routes": self.entries.routes, "fdb": self.entries.fdb, "neigh": self.entries.neigh},
            "sync": {"fullMs": ms(self.sync.full), "routesMs": ms(self.sync.routes),
                     "policyMs": ms(self.sync.policy), "polls": self.sync.polls},
            "policy": {"policies": st.policies, "endpoints": st.endpoints, "classes": st.classes,
                       "chains": st.chains, "rules": st.rules, "elements": st.elements,
                       "revision": st.revision},
            "log": {"nodeReadyMs": self.log.ready.map(ms), "firstPeerMs": self.log.first_peer.map(ms),
                    "lastPeerMs": self.log.last_peer.map(ms), "firstPolicyMs": self.log.first_policy.map(ms),
                    "firstPolicyParts": self.log.first_policy_parts.map(|p| json!({
                        "loadMs": p[0], "worldMs": p[1], "compileMs": p[2], "nftMs": p[3]}))},
            "podWrites": writes(&self.pods),
            "policyWrites": writes(&self.policies),
            "rssSyncedMib": self.rss_synced.0, "hwmSyncedMib": self.rss_synced.1,
            "rssEndMib": self.rss_end.0, "hwmEndMib": self.rss_end.1,
            "apiserverRssMib": self.apiserver_rss_mib,
            "targets": self.targets().iter().map(|t| json!({
                "name": t.name, "value": t.value, "unit": t.unit, "limit": t.limit, "pass": t.pass,
            })).collect::<Vec<_>>(),
        })
    }
}

impl ScaleReport {
    pub fn to_json(&self) -> String {
        let v = json!({
            "weftd": self.weftd,
            "world": {"nodes": self.nodes, "pods": self.pods, "localPods": self.local_pods,
                      "policies": self.policies, "namespaces": self.namespaces, "seed": self.seed},
            "writes": self.writes,
            "loadBefore": self.load_before,
            "loadAfter": self.load_after,
            "datastores": self.sides.iter().map(SideReport::to_json).collect::<Vec<_>>(),
        });
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }

    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "weftctl bench scale: one weftd ({}); {} nodes, {} pods ({} on the agent's node), {} policies in {} namespaces, seed {}; {} timed writes of each kind; load average {} before, {} after",
            self.weftd,
            self.nodes,
            self.pods,
            self.local_pods,
            self.policies,
            self.namespaces,
            self.seed,
            self.writes,
            self.load_before,
            self.load_after
        );
        let _ = writeln!(out);
        type Cell = Box<dyn Fn(&SideReport) -> String>;
        let w = |f: fn(&SideReport) -> &Writes, g: fn(&Summary) -> f64| -> Cell {
            Box::new(move |s| format!("{:.2} ms", g(&f(s).to_kernel)))
        };
        let rows: Vec<(&str, Cell)> = vec![
            (
                "datastore up (untimed)",
                Box::new(|s| format!("{:.1} s", s.control_plane_ms / 1e3)),
            ),
            (
                "world written (untimed)",
                Box::new(|s| format!("{:.1} s", s.setup_ms / 1e3)),
            ),
            (
                "kernel entries (routes/fdb/neigh)",
                Box::new(|s| format!("{}/{}/{}", s.entries.routes, s.entries.fdb, s.entries.neigh)),
            ),
            (
                "policy plan (classes/chains/rules/elems)",
                Box::new(|s| {
                    let st = &s.sync.status;
                    format!("{}/{}/{}/{}", st.classes, st.chains, st.rules, st.elements)
                }),
            ),
            (
                "FULL SYNC (spawn -> routes + policy)",
                Box::new(|s| format!("{:.0} ms", ms(s.sync.full))),
            ),
            (
                "  all routes/FDB/neigh in the kernel",
                Box::new(|s| format!("{:.0} ms", ms(s.sync.routes))),
            ),
            (
                "  policy in sync (status)",
                Box::new(|s| format!("{:.0} ms", ms(s.sync.policy))),
            ),
            ("  weftd log: node ready", Box::new(|s| opt_ms(s.log.ready))),
            (
                "  weftd log: first / last peer",
                Box::new(|s| format!("{} / {}", opt_ms(s.log.first_peer), opt_ms(s.log.last_peer))),
            ),
            (
                "  weftd log: first plan committed",
                Box::new(|s| opt_ms(s.log.first_policy)),
            ),
            (
                "    load/world/compile/nft",
                Box::new(|s| {
                    s.log.first_policy_parts.map_or_else(
                        || "-".into(),
                        |p| format!("{:.0}/{:.0}/{:.0}/{:.0} ms", p[0], p[1], p[2], p[3]),
                    )
                }),
            ),
            ("POD write -> kernel p50", w(|s| &s.pods, |x| x.p50_ms)),
            ("POD write -> kernel p99", w(|s| &s.pods, |x| x.p99_ms)),
            (
                "  from write start p50 / p99",
                Box::new(|s| {
                    format!(
                        "{:.2} / {:.2} ms",
                        s.pods.from_start.p50_ms, s.pods.from_start.p99_ms
                    )
                }),
            ),
            (
                "  the write's own answer p50",
                Box::new(|s| format!("{:.2} ms", s.pods.ack.p50_ms)),
            ),
            (
                "POLICY write -> kernel p50",
                w(|s| &s.policies, |x| x.p50_ms),
            ),
            (
                "POLICY write -> kernel p99",
                w(|s| &s.policies, |x| x.p99_ms),
            ),
            (
                "  from write start p50 / p99",
                Box::new(|s| {
                    format!(
                        "{:.2} / {:.2} ms",
                        s.policies.from_start.p50_ms, s.policies.from_start.p99_ms
                    )
                }),
            ),
            (
                "  the write's own answer p50",
                Box::new(|s| format!("{:.2} ms", s.policies.ack.p50_ms)),
            ),
            (
                "weftd RSS synced: VmRSS / VmHWM",
                Box::new(|s| format!("{:.1} / {:.1} MiB", s.rss_synced.0, s.rss_synced.1)),
            ),
            (
                "weftd RSS at the end: VmRSS / VmHWM",
                Box::new(|s| format!("{:.1} / {:.1} MiB", s.rss_end.0, s.rss_end.1)),
            ),
            (
                "kube-apiserver RSS (for scale)",
                Box::new(|s| {
                    s.apiserver_rss_mib
                        .map_or_else(|| "-".into(), |m| format!("{m:.0} MiB"))
                }),
            ),
        ];
        let _ = write!(out, "{:<42}", "");
        for s in &self.sides {
            let _ = write!(out, "{:>24}", s.datastore);
        }
        let _ = writeln!(out);
        for (label, cell) in &rows {
            let _ = write!(out, "{label:<42}");
            for s in &self.sides {
                let _ = write!(out, "{:>24}", cell(s));
            }
            let _ = writeln!(out);
        }
        let _ = writeln!(out);
        for s in &self.sides {
            let _ = writeln!(out, "{}: pod writes: {}", s.datastore, s.pods.what);
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<12}{:<40}{:>12}{:>12}  result",
            "datastore", "target", "value", "goal"
        );
        for s in &self.sides {
            for t in s.targets() {
                let _ = writeln!(
                    out,
                    "{:<12}{:<40}{:>12}{:>12}  {}",
                    t.datastore,
                    t.name,
                    format!("{:.1} {}", t.value, t.unit),
                    format!("< {:.0} {}", t.limit, t.unit),
                    if t.pass { "PASS" } else { "FAIL" }
                );
            }
        }
        out
    }
}
