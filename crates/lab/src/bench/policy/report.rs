//! The policy benchmark's tables and its verdict on the targets.

use std::fmt::Write;
use std::time::Duration;

use crate::bench::dataplane::report::median;
use crate::bench::dataplane::tools::{PingPong, Throughput};
use crate::bench::stats::{Summary, ms, per_round};

/// One change applied in under this, at the largest size (the issue: 10 ms at 10,000 rules).
const TARGET_CHANGE_MS: f64 = 10.0;
/// Throughput with policy, as a fraction of no policy.
const TARGET_THROUGHPUT: f64 = 0.95;
/// Full apply from scratch, at the largest size.
const TARGET_FULL_MS: f64 = 1000.0;

/// Where the time of one apply went.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timing {
    pub compile: Duration,
    pub diff: Duration,
    pub render: Duration,
    pub nft: Duration,
    /// nftables ops (elements for element ops) and the script's size (0 over netlink).
    pub weight: usize,
    pub bytes: usize,
    /// Committed as one netlink element batch (`render` is then building the batch and
    /// `nft` the commit on the kept socket), not by `nft -f`.
    pub netlink: bool,
}

impl Timing {
    pub fn total(&self) -> Duration {
        self.compile + self.diff + self.render + self.nft
    }
}

/// What a rendering put in the kernel.
#[derive(Debug, Clone, Copy, Default)]
pub struct TableSize {
    pub sets: usize,
    pub chains: usize,
    pub elements: usize,
    pub rules: usize,
    /// Linear rendering: rules a packet to the server passes before its accept (base chain
    /// jumps before the server's, then the pod chain); weft: lookups are constant.
    pub path_rules: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No netfilter at all in the node namespace (no conntrack): the kernel's floor.
    Bare,
    /// A weft node without NetworkPolicy: weftd's masquerade table (a nat chain, hence
    /// conntrack) and nothing else — what every policed variant adds its table to.
    NoPolicy,
    Weft,
    Linear,
}

/// Every round's figures of one variant.
#[derive(Debug)]
pub struct VariantReport {
    pub kind: Kind,
    pub rules: usize,
    pub size: TableSize,
    pub applies: Vec<Timing>,
    /// The denied probe failed (as it must under policy) in every round.
    pub denied_blocked: bool,
    pub throughput: Vec<Throughput>,
    pub throughput_one_cpu: Vec<Throughput>,
    pub rr: Vec<PingPong>,
    /// New connections per second (connect + reset).
    pub crr: Vec<f64>,
}

impl VariantReport {
    pub fn new(kind: Kind, rules: usize) -> VariantReport {
        VariantReport {
            kind,
            rules,
            size: TableSize::default(),
            applies: Vec::new(),
            denied_blocked: !matches!(kind, Kind::NoPolicy | Kind::Bare),
            throughput: Vec::new(),
            throughput_one_cpu: Vec::new(),
            rr: Vec::new(),
            crr: Vec::new(),
        }
    }

    pub fn label(&self) -> String {
        match self.kind {
            Kind::Bare => "bare (no netfilter)".to_owned(),
            Kind::NoPolicy => "no policy".to_owned(),
            Kind::Weft => format!("weft, {} rules", self.rules),
            Kind::Linear => format!("linear, {} rules", self.rules),
        }
    }

    fn values(&self, m: Metric) -> Vec<f64> {
        match m {
            Metric::Tp => self
                .throughput
                .iter()
                .map(|t| t.bits_per_second / 1e9)
                .collect(),
            Metric::Tp1 => self
                .throughput_one_cpu
                .iter()
                .map(|t| t.bits_per_second / 1e9)
                .collect(),
            Metric::Rr => self.rr.iter().map(|r| r.per_second).collect(),
            Metric::Crr => self.crr.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Metric {
    Tp,
    Tp1,
    Rr,
    Crr,
}

/// The timed single changes at one size.
#[derive(Debug, Default)]
pub struct ChangeReport {
    pub rules: usize,
    pub relabel: Vec<Timing>,
    pub edit: Vec<Timing>,
}

#[derive(Debug)]
pub struct PolicyReport {
    /// Each policy has an external /24 among its peers.
    pub cidrs: bool,
    pub pods: usize,
    pub seconds: u32,
    pub rounds: usize,
    pub cpus: usize,
    pub pinned: (usize, usize),
    pub load_before: String,
    pub load_after: String,
    pub variants: Vec<VariantReport>,
    pub changes: Vec<ChangeReport>,
}

fn summary(samples: &[Timing], part: impl Fn(&Timing) -> Duration) -> Summary {
    Summary::of(&samples.iter().map(part).collect::<Vec<_>>())
}

/// Median over rounds of `a`'s figure over `b`'s in the same round; 0 without data.
fn paired(a: &VariantReport, b: &VariantReport, m: Metric) -> f64 {
    median(
        a.values(m)
            .into_iter()
            .zip(b.values(m))
            .filter(|(_, y)| *y > 0.0)
            .map(|(x, y)| x / y),
    )
}

impl PolicyReport {
    fn none(&self) -> Option<&VariantReport> {
        self.variants.iter().find(|v| v.kind == Kind::NoPolicy)
    }

    fn ratio(&self, v: &VariantReport, m: Metric) -> f64 {
        self.none().map_or(0.0, |n| paired(v, n, m))
    }

    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let sizes: Vec<String> = self.changes.iter().map(|c| c.rules.to_string()).collect();
        let _ = writeln!(
            out,
            "weftctl bench policy: {} pods on one node, rules {}, {} round(s) of {} s per measurement, {} CPUs, load average {} before, {} after",
            self.pods,
            sizes.join("/"),
            self.rounds,
            self.seconds,
            self.cpus,
            self.load_before,
            self.load_after
        );
        let _ = writeln!(
            out,
            "A rule is one (peer address or CIDR) x port pair; every rule selects the measured server pod and the client is allowed by the last two. Peers: {}.",
            if self.cidrs {
                "4 pods and 1 external /24 per policy"
            } else {
                "5 pods per policy, no ipBlocks (--no-cidrs)"
            }
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "full apply from scratch, ms (median over rounds): compile + diff + render + nft -f = total"
        );
        let _ = writeln!(
            out,
            "{:<22}{:>8}{:>8}{:>9}{:>8}{:>9}{:>9}{:>9}{:>9}{:>9}",
            "variant",
            "sets",
            "chains",
            "elements",
            "rules",
            "compile",
            "diff",
            "render",
            "nft",
            "total"
        );
        for v in self
            .variants
            .iter()
            .filter(|v| !matches!(v.kind, Kind::NoPolicy | Kind::Bare))
        {
            let p50 = |f: fn(&Timing) -> Duration| summary(&v.applies, f).p50_ms;
            let _ = writeln!(
                out,
                "{:<22}{:>8}{:>8}{:>9}{:>8}{:>9.1}{:>9.1}{:>9.1}{:>9.1}{:>9.1}  ({} KiB)",
                v.label(),
                v.size.sets,
                v.size.chains,
                v.size.elements,
                v.size.rules,
                p50(|t| t.compile),
                p50(|t| t.diff),
                p50(|t| t.render),
                p50(|t| t.nft),
                p50(Timing::total),
                v.applies.first().map_or(0, |t| t.bytes / 1024),
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "one change on the applied weft table, ms: p50 of each part, total p50 / p90 / max (Compiler update + take_ops + build the netlink batch (render_ops when it has the table or base chains) + commit on the kept socket (nft -f); netlink = changes committed over netlink)"
        );
        let _ = writeln!(
            out,
            "{:<8}{:<14}{:>5}{:>9}{:>8}{:>8}{:>8}{:>9}{:>8}{:>8}{:>9}{:>9}",
            "rules",
            "change",
            "n",
            "compile",
            "diff",
            "render",
            "commit",
            "total",
            "p90",
            "max",
            "elements",
            "netlink"
        );
        for c in &self.changes {
            for (name, samples) in [("relabel pod", &c.relabel), ("edit policy", &c.edit)] {
                let p50 = |f: fn(&Timing) -> Duration| summary(samples, f).p50_ms;
                let total = summary(samples, Timing::total);
                let _ = writeln!(
                    out,
                    "{:<8}{:<14}{:>5}{:>9.2}{:>8.2}{:>8.2}{:>8.2}{:>9.2}{:>8.2}{:>8.2}{:>9}{:>9}",
                    c.rules,
                    name,
                    samples.len(),
                    p50(|t| t.compile),
                    p50(|t| t.diff),
                    p50(|t| t.render),
                    p50(|t| t.nft),
                    total.p50_ms,
                    percentile_ms(samples, 90.0),
                    total.max_ms,
                    median(samples.iter().map(|t| t.weight as f64)),
                    format!(
                        "{}/{}",
                        samples.iter().filter(|t| t.netlink).count(),
                        samples.len()
                    ),
                );
            }
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "per packet: iperf3 1 TCP stream on 2 CPUs (client CPU {}, server CPU {}) and on 1 (CPU {}), sockperf TCP ping-pong on CPU {};",
            self.pinned.0, self.pinned.1, self.pinned.1, self.pinned.1
        );
        let _ = writeln!(
            out,
            "new connections/s (connect + reset) on CPU {}; medians over rounds; /none = median of per-round ratios to no policy (a weft node without policy:\nweftd's masquerade table, so conntrack is on, as on every weft node; bare = no netfilter in the node namespace at all);",
            self.pinned.1
        );
        let _ = writeln!(
            out,
            "path = rules a new connection's first packet passes (linear; later packets only meet the conntrack test)"
        );
        let _ = writeln!(
            out,
            "{:<22}{:>7}{:>8}{:>7}{:>8}{:>7}{:>9}{:>7}{:>9}{:>8}{:>7}{:>8}",
            "variant",
            "path",
            "Gbit/s",
            "/none",
            "1-CPU",
            "/none",
            "RR/s",
            "/none",
            "RTT p50",
            "conn/s",
            "/none",
            "denied"
        );
        for v in &self.variants {
            let _ = writeln!(
                out,
                "{:<22}{:>7}{:>8.2}{:>7.3}{:>8.2}{:>7.3}{:>9.0}{:>7.3}{:>7.1}us{:>8.0}{:>7.3}{:>8}",
                v.label(),
                v.size.path_rules,
                median(v.values(Metric::Tp).into_iter()),
                self.ratio(v, Metric::Tp),
                median(v.values(Metric::Tp1).into_iter()),
                self.ratio(v, Metric::Tp1),
                median(v.values(Metric::Rr).into_iter()),
                self.ratio(v, Metric::Rr),
                median(v.rr.iter().map(|r| r.rtt_p50_us)),
                median(v.values(Metric::Crr).into_iter()),
                self.ratio(v, Metric::Crr),
                match v.kind {
                    Kind::NoPolicy | Kind::Bare => "open",
                    _ if v.denied_blocked => "blocked",
                    _ => "OPEN!",
                }
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "per round: Gbit/s on 2 CPUs | Gbit/s on 1 CPU | thousand round trips/s | thousand connections/s"
        );
        for v in &self.variants {
            let fmt = |m: Metric, unit: f64, prec: usize| per_round(&v.values(m), unit, prec);
            let _ = writeln!(
                out,
                "{:<22}{} | {} | {} | {}",
                v.label(),
                fmt(Metric::Tp, 1.0, 2),
                fmt(Metric::Tp1, 1.0, 2),
                fmt(Metric::Rr, 1000.0, 1),
                fmt(Metric::Crr, 1000.0, 2)
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "{:<52}{:>10}{:>12}  result", "target", "value", "goal");
        for t in self.targets() {
            let goal = if t.at_most {
                format!("< {:.0}", t.goal)
            } else {
                format!(">= {:.2}", t.goal)
            };
            let _ = writeln!(
                out,
                "{:<52}{:>10.3}{:>12}  {}",
                t.name,
                t.value,
                goal,
                if t.met() { "PASS" } else { "FAIL" }
            );
        }
        out
    }

    /// The targets, judged at the largest size measured (10,000 rules by default).
    pub fn targets(&self) -> Vec<Target> {
        let mut out = Vec::new();
        let Some(largest) = self.changes.iter().max_by_key(|c| c.rules) else {
            return out;
        };
        let n = largest.rules;
        for (what, samples) in [
            ("relabel pod", &largest.relabel),
            ("edit policy", &largest.edit),
        ] {
            out.push(Target {
                name: format!("one change at {n} rules, {what}: p50 ms"),
                value: summary(samples, Timing::total).p50_ms,
                goal: TARGET_CHANGE_MS,
                at_most: true,
            });
        }
        if let Some(v) = self
            .variants
            .iter()
            .find(|v| v.kind == Kind::Weft && v.rules == n)
        {
            out.push(Target {
                name: format!("throughput with {n} rules / no policy (weft)"),
                value: self.ratio(v, Metric::Tp),
                goal: TARGET_THROUGHPUT,
                at_most: false,
            });
            out.push(Target {
                name: format!("full apply of {n} rules: p50 ms (weft)"),
                value: summary(&v.applies, Timing::total).p50_ms,
                goal: TARGET_FULL_MS,
                at_most: true,
            });
        }
        out
    }
}

/// Nearest-rank percentile of the totals, ms.
fn percentile_ms(samples: &[Timing], p: f64) -> f64 {
    let mut v: Vec<Duration> = samples.iter().map(Timing::total).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    let rank = (p / 100.0 * v.len() as f64).ceil() as usize;
    ms(v[rank.clamp(1, v.len()) - 1])
}

/// One judged figure.
#[derive(Debug)]
pub struct Target {
    pub name: String,
    pub value: f64,
    pub goal: f64,
    /// The value must stay below the goal (times), not reach it (ratios).
    pub at_most: bool,
}

impl Target {
    pub fn met(&self) -> bool {
        if self.at_most {
            self.value < self.goal
        } else {
            self.value >= self.goal
        }
    }
}
