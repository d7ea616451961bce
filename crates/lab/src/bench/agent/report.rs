//! The agent benchmark's table and its verdict on the targets.

use std::fmt::Write;
use std::time::Duration;

use super::kernel::{Bulk, Counts};
use super::{Backend, LogMarks, Memory};
use crate::bench::stats::{Summary, ms};

/// The size the start-up and memory targets are stated for.
pub const TARGET_PEERS: usize = 5000;
/// All peers programmed within this, at [`TARGET_PEERS`].
pub const TARGET_PROGRAMMED: Duration = Duration::from_secs(2);
/// A join programmed within this after its write (p99, at every size).
pub const TARGET_JOIN: Duration = Duration::from_millis(100);
/// weftd's resident memory at [`TARGET_PEERS`], MiB (judged on the peak, VmHWM).
pub const TARGET_RSS_MIB: f64 = 50.0;

/// Everything measured for one cluster size.
#[derive(Debug)]
pub struct SizeReport {
    pub peers: usize,
    pub entries: Counts,
    pub load: Duration,
    pub programmed: Duration,
    pub polls: usize,
    pub log: LogMarks,
    /// Start until weftd's socket answers (start-up finished: reconciled and watching).
    pub ready: Duration,
    pub joins: Summary,
    /// Which join (1-based) was the slowest.
    pub slowest_join: usize,
    pub join_writes: Summary,
    pub rss_programmed: Memory,
    pub rss_joined: Memory,
    pub restart: Duration,
    pub restart_lowest: Counts,
    pub restart_entries: Counts,
    pub flush: Bulk,
    pub rebuild: Bulk,
    pub count_cost: Duration,
}

#[derive(Debug)]
pub struct AgentReport {
    pub backend: Backend,
    pub ipv6: bool,
    pub joins: usize,
    pub weftd: String,
    pub sizes: Vec<SizeReport>,
}

/// One cell of a row: a figure of one size, formatted.
type Cell = Box<dyn Fn(&SizeReport) -> String>;

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn opt_ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_owned(), |d| format!("{:.0} ms", ms(d)))
}

impl AgentReport {
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "weftctl bench agent: one weftd ({}), backend {:?}, {}, {} joins per size",
            self.weftd,
            self.backend,
            if self.ipv6 { "dual-stack" } else { "IPv4" },
            self.joins
        );
        let _ = writeln!(out);
        let rows: Vec<(&str, Cell)> = vec![
            (
                "kernel entries (routes/fdb/neigh)",
                Box::new(|s| format!("{}/{}/{}", s.entries.routes, s.entries.fdb, s.entries.neigh)),
            ),
            (
                "etcd load, untimed (records+blocks)",
                Box::new(|s| format!("{:.0} ms", ms(s.load))),
            ),
            (
                "START -> ALL PROGRAMMED",
                Box::new(|s| format!("{:.0} ms", ms(s.programmed))),
            ),
            ("  weftd log: node ready", Box::new(|s| opt_ms(s.log.ready))),
            (
                "  weftd log: first peer programmed",
                Box::new(|s| opt_ms(s.log.first_peer)),
            ),
            (
                "  weftd log: last peer programmed",
                Box::new(|s| opt_ms(s.log.last_peer)),
            ),
            (
                "  polls (one poll costs)",
                Box::new(|s| format!("{} ({:.1} ms)", s.polls, ms(s.count_cost))),
            ),
            (
                "  start -> socket answers (ready)",
                Box::new(|s| format!("{:.0} ms", ms(s.ready))),
            ),
            (
                "JOIN write -> route p50",
                Box::new(|s| format!("{:.2} ms", s.joins.p50_ms)),
            ),
            (
                "JOIN write -> route p99",
                Box::new(|s| format!("{:.2} ms", s.joins.p99_ms)),
            ),
            (
                "  join max (which)",
                Box::new(|s| format!("{:.2} ms (#{})", s.joins.max_ms, s.slowest_join)),
            ),
            (
                "  etcd put (ack) p50",
                Box::new(|s| format!("{:.2} ms", s.join_writes.p50_ms)),
            ),
            (
                "RSS programmed: VmRSS / VmHWM",
                Box::new(|s| {
                    format!(
                        "{:.1} / {:.1} MiB",
                        mib(s.rss_programmed.rss_kib),
                        mib(s.rss_programmed.hwm_kib)
                    )
                }),
            ),
            (
                "RSS after joins: VmRSS / VmHWM",
                Box::new(|s| {
                    format!(
                        "{:.1} / {:.1} MiB",
                        mib(s.rss_joined.rss_kib),
                        mib(s.rss_joined.hwm_kib)
                    )
                }),
            ),
            (
                "restart, nothing to change -> ready",
                Box::new(|s| format!("{:.0} ms", ms(s.restart))),
            ),
            (
                "  entries at their lowest meanwhile",
                Box::new(|s| {
                    let (l, w) = (s.restart_lowest, s.restart_entries);
                    if l == w {
                        format!("{} (none lost)", l.total())
                    } else {
                        format!("{} of {}", l.total(), w.total())
                    }
                }),
            ),
            (
                "FLUSH (dump + delete all)",
                Box::new(|s| format!("{:.0} ms", ms(s.flush.took))),
            ),
            (
                "REBUILD (re-add all)",
                Box::new(|s| format!("{:.0} ms", ms(s.rebuild.took))),
            ),
            (
                "FLUSH + REBUILD",
                Box::new(|s| format!("{:.0} ms", ms(s.flush.took + s.rebuild.took))),
            ),
            (
                "  entries rebuilt",
                Box::new(|s| s.rebuild.entries.to_string()),
            ),
        ];
        let _ = write!(out, "{:<38}", "peers");
        for s in &self.sizes {
            let _ = write!(out, "{:>22}", s.peers);
        }
        let _ = writeln!(out);
        for (label, cell) in &rows {
            let _ = write!(out, "{label:<38}");
            for s in &self.sizes {
                let _ = write!(out, "{:>22}", cell(s));
            }
            let _ = writeln!(out);
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "{:<42}{:>14}{:>12}  result", "target", "value", "goal");
        for t in self.targets() {
            let _ = writeln!(
                out,
                "{:<42}{:>14}{:>12}  {}",
                t.name, t.value, t.goal, t.result
            );
        }
        out
    }

    /// The three targets; n/a when the run did not include the size they are for.
    pub fn targets(&self) -> Vec<Target> {
        let at_target = self.sizes.iter().find(|s| s.peers == TARGET_PEERS);
        let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" }.to_owned();
        let na = || format!("n/a (run with --peers {TARGET_PEERS})");
        let mut out = Vec::new();
        out.push(match at_target {
            Some(s) => Target {
                name: format!("{TARGET_PEERS} peers programmed (start -> all)"),
                value: format!("{:.0} ms", ms(s.programmed)),
                goal: format!("< {} ms", TARGET_PROGRAMMED.as_millis()),
                result: verdict(s.programmed < TARGET_PROGRAMMED),
            },
            None => Target {
                name: format!("{TARGET_PEERS} peers programmed (start -> all)"),
                value: "-".to_owned(),
                goal: format!("< {} ms", TARGET_PROGRAMMED.as_millis()),
                result: na(),
            },
        });
        // The worst p99 over every size run.
        let worst = self
            .sizes
            .iter()
            .max_by(|a, b| a.joins.p99_ms.total_cmp(&b.joins.p99_ms));
        if let Some(s) = worst {
            out.push(Target {
                name: format!("join programmed after write (p99, at {})", s.peers),
                value: format!("{:.2} ms", s.joins.p99_ms),
                goal: format!("< {} ms", TARGET_JOIN.as_millis()),
                result: verdict(s.joins.p99_ms < ms(TARGET_JOIN)),
            });
        }
        out.push(match at_target {
            Some(s) => {
                let peak = mib(s.rss_joined.hwm_kib);
                Target {
                    name: format!("RSS at {TARGET_PEERS} peers (VmHWM, peak)"),
                    value: format!("{peak:.1} MiB"),
                    goal: format!("< {TARGET_RSS_MIB:.0} MiB"),
                    result: verdict(peak < TARGET_RSS_MIB),
                }
            }
            None => Target {
                name: format!("RSS at {TARGET_PEERS} peers (VmHWM, peak)"),
                value: "-".to_owned(),
                goal: format!("< {TARGET_RSS_MIB:.0} MiB"),
                result: na(),
            },
        });
        out
    }
}

/// One judged target.
#[derive(Debug)]
pub struct Target {
    pub name: String,
    pub value: String,
    pub goal: String,
    pub result: String,
}
