//! What a benchmark run found: per-variant latency summaries and throughput, the kernel
//! floor, and the targets judged against them; printed as a table or as JSON.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::stats::{Summary, per_second};

/// Raw samples of one variant, accumulated over the rounds.
#[derive(Debug, Default)]
pub struct Samples {
    pub seq_add: Vec<Duration>,
    pub seq_del: Vec<Duration>,
    pub seq_wall: Duration,
    pub seq_pods: usize,
    pub churn_add: Vec<Duration>,
    pub churn_del: Vec<Duration>,
    pub churn_wall: Duration,
    pub churn_pods: usize,
    /// The plugin's own durations (weft's log) for the sequential phases.
    pub self_add: Vec<Duration>,
    pub self_del: Vec<Duration>,
}

/// One plugin + config under test.
#[derive(Debug, Clone, Serialize)]
pub struct VariantReport {
    pub label: String,
    pub ipmasq: bool,
    pub seq_add: Summary,
    pub seq_del: Summary,
    /// Sequential ADD×N + DEL×N: pods / (ADD phase wall + DEL phase wall).
    pub seq_pods_per_s: f64,
    pub churn_add: Summary,
    pub churn_del: Summary,
    /// N-way churn: pods / wall time of the whole churn phase.
    pub churn_pods_per_s: f64,
    /// Sequential ADD/DEL as the plugin itself timed them (weft's log); absent for the
    /// reference, which logs nothing.
    pub self_add: Option<Summary>,
    pub self_del: Option<Summary>,
}

impl VariantReport {
    pub fn new(label: impl Into<String>, ipmasq: bool, s: &Samples) -> Self {
        VariantReport {
            label: label.into(),
            ipmasq,
            seq_add: Summary::of(&s.seq_add),
            seq_del: Summary::of(&s.seq_del),
            seq_pods_per_s: per_second(s.seq_pods, s.seq_wall),
            churn_add: Summary::of(&s.churn_add),
            churn_del: Summary::of(&s.churn_del),
            churn_pods_per_s: per_second(s.churn_pods, s.churn_wall),
            self_add: (!s.self_add.is_empty()).then(|| Summary::of(&s.self_add)),
            self_del: (!s.self_del.is_empty()).then(|| Summary::of(&s.self_del)),
        }
    }
}

/// The bare veth create/delete in the node namespace.
#[derive(Debug, Clone, Serialize)]
pub struct FloorReport {
    pub veth_create: Summary,
    pub veth_delete: Summary,
    /// Informational: the same delete with both ends up, as a pod's veth is.
    pub veth_delete_up: Summary,
}

/// One of the targets.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub name: &'static str,
    /// How the value is computed, for the reader.
    pub ratio: &'static str,
    pub value: Option<f64>,
    /// `"<="` or `">="`.
    pub op: &'static str,
    pub limit: f64,
    /// `None` when this run did not measure it (e.g. ipMasq without `--ipmasq`).
    pub pass: Option<bool>,
    pub note: Option<&'static str>,
}

impl Target {
    fn at_most(name: &'static str, ratio: &'static str, value: f64, limit: f64) -> Self {
        Target {
            name,
            ratio,
            value: Some(value),
            op: "<=",
            limit,
            pass: Some(value <= limit),
            note: None,
        }
    }

    fn at_least(name: &'static str, ratio: &'static str, value: f64, limit: f64) -> Self {
        Target {
            name,
            ratio,
            value: Some(value),
            op: ">=",
            limit,
            pass: Some(value >= limit),
            note: None,
        }
    }
}

/// How much slower with ipMasq still counts as "no slower": run-to-run noise of a p50 over a
/// few hundred execs on a 2-core machine is a few percent.
pub const IPMASQ_TOLERANCE: f64 = 1.05;

/// Judges the targets. `weft` and `reference` are measured with the same ipMasq setting;
/// `weft_plain` is weft without ipMasq in the same run (only when ipMasq is on).
pub fn targets(
    weft: &VariantReport,
    reference: &VariantReport,
    weft_plain: Option<&VariantReport>,
    floor: &FloorReport,
) -> Vec<Target> {
    let mut out = vec![Target::at_most(
        "ADD p50 vs reference",
        "weft ADD p50 / reference ADD p50",
        weft.seq_add.p50_ms / reference.seq_add.p50_ms,
        0.25,
    )];
    out.push(match weft_plain {
        Some(plain) => {
            let mut t = Target::at_most(
                "ADD p50 with ipMasq vs without",
                "weft+ipMasq ADD p50 / weft ADD p50",
                weft.seq_add.p50_ms / plain.seq_add.p50_ms,
                IPMASQ_TOLERANCE,
            );
            t.note = Some("\"no slower\", with 5% allowed for noise");
            t
        }
        None => Target {
            name: "ADD p50 with ipMasq vs without",
            ratio: "weft+ipMasq ADD p50 / weft ADD p50",
            value: None,
            op: "<=",
            limit: IPMASQ_TOLERANCE,
            pass: None,
            note: Some("run with --ipmasq to measure"),
        },
    });
    out.push(Target::at_most(
        "DEL p50 vs bare veth delete",
        "weft DEL p50 / bare veth delete p50",
        weft.seq_del.p50_ms / floor.veth_delete.p50_ms,
        1.2,
    ));
    // Not one of the targets: every pod's veth is up when DEL comes, and closing a
    // running device costs the kernel more than deleting a down one, so this says how far
    // weft is from what the kernel needs for the teardown it really does.
    out.push(Target {
        name: "DEL p50 vs veth delete (up)",
        ratio: "weft DEL p50 / up veth delete p50",
        value: Some(weft.seq_del.p50_ms / floor.veth_delete_up.p50_ms),
        op: "<=",
        limit: 1.2,
        pass: None,
        note: Some("informational"),
    });
    out.push(Target::at_least(
        "churn pods/s vs reference",
        "weft churn pods/s / reference churn pods/s",
        weft.churn_pods_per_s / reference.churn_pods_per_s,
        2.0,
    ));
    out
}

/// Where and how the run was made.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub kernel: String,
    pub cpus: usize,
    pub cpu_model: String,
    pub pods: usize,
    pub parallel: usize,
    pub rounds: usize,
    pub ipmasq: bool,
    pub cni_version: &'static str,
    pub weft: String,
    pub reference_dir: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub run: RunInfo,
    pub variants: Vec<VariantReport>,
    pub floor: FloorReport,
    pub targets: Vec<Target>,
}

impl Report {
    pub fn to_json(&self) -> String {
        // Plain data with string keys: serialisation cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_else(|err| format!("{{\"error\":\"{err}\"}}"))
    }

    /// The human table.
    pub fn to_table(&self) -> String {
        let r = &self.run;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "weftctl bench cni: {} pods, {}-way churn, {} rounds (ABBA order), ipMasq {}, cniVersion {}",
            r.pods,
            r.parallel,
            r.rounds,
            if r.ipmasq { "on" } else { "off" },
            r.cni_version
        );
        let _ = writeln!(
            s,
            "machine: Linux {}, {} CPUs ({})\n",
            r.kernel, r.cpus, r.cpu_model
        );
        let _ = writeln!(
            s,
            "{:<26} {:<14} {:>5} {:>9} {:>9} {:>9} {:>9}",
            "plugin", "phase", "n", "p50 ms", "p99 ms", "mean ms", "pods/s"
        );
        let row = |s: &mut String, label: &str, phase: &str, sum: &Summary, rate: Option<f64>| {
            let rate = rate.map_or(String::new(), |v| format!("{v:.1}"));
            let _ = writeln!(
                s,
                "{:<26} {:<14} {:>5} {:>9.3} {:>9.3} {:>9.3} {:>9}",
                label, phase, sum.n, sum.p50_ms, sum.p99_ms, sum.mean_ms, rate
            );
        };
        for v in &self.variants {
            row(&mut s, &v.label, "ADD", &v.seq_add, None);
            row(&mut s, &v.label, "DEL", &v.seq_del, Some(v.seq_pods_per_s));
            let churn = format!("{}-way ADD", r.parallel);
            row(&mut s, &v.label, &churn, &v.churn_add, None);
            let churn = format!("{}-way DEL", r.parallel);
            row(
                &mut s,
                &v.label,
                &churn,
                &v.churn_del,
                Some(v.churn_pods_per_s),
            );
            if let Some(own) = &v.self_add {
                row(&mut s, &v.label, "ADD (in-proc)", own, None);
            }
            if let Some(own) = &v.self_del {
                row(&mut s, &v.label, "DEL (in-proc)", own, None);
            }
        }
        row(
            &mut s,
            "kernel floor",
            "veth create",
            &self.floor.veth_create,
            None,
        );
        row(
            &mut s,
            "kernel floor",
            "veth delete",
            &self.floor.veth_delete,
            None,
        );
        row(
            &mut s,
            "kernel floor",
            "veth del (up)",
            &self.floor.veth_delete_up,
            None,
        );
        let _ = writeln!(
            s,
            "(pods/s on a DEL row: sequential ADD+DEL phases, or the {}-way churn phase;\n \
             in-proc: the sequential phases as weft's own log times them, without exec;\n \
             veth delete: bare pair, both ends down, the DEL target's floor; del (up): both ends up)\n",
            r.parallel
        );

        let _ = writeln!(
            s,
            "{:<32} {:<44} {:>7} {:>8}  result",
            "target", "ratio", "value", "goal"
        );
        for t in &self.targets {
            let value = t.value.map_or("-".to_owned(), |v| format!("{v:.3}"));
            let result = match t.pass {
                Some(true) => "PASS",
                Some(false) => "MISS",
                None => "n/a",
            };
            let note = t.note.map_or(String::new(), |n| format!("  ({n})"));
            let _ = writeln!(
                s,
                "{:<32} {:<44} {:>7} {:>3} {:<4}  {result}{note}",
                t.name, t.ratio, value, t.op, t.limit
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variant(label: &str, add_ms: u64, del_ms: u64, churn_wall_ms: u64) -> VariantReport {
        let s = Samples {
            seq_add: vec![Duration::from_millis(add_ms); 4],
            seq_del: vec![Duration::from_millis(del_ms); 4],
            seq_wall: Duration::from_millis(4 * (add_ms + del_ms)),
            seq_pods: 4,
            churn_add: vec![Duration::from_millis(add_ms); 4],
            churn_del: vec![Duration::from_millis(del_ms); 4],
            churn_wall: Duration::from_millis(churn_wall_ms),
            churn_pods: 4,
            ..Samples::default()
        };
        VariantReport::new(label, false, &s)
    }

    fn floor(delete_ms: u64) -> FloorReport {
        FloorReport {
            veth_create: Summary::of(&[Duration::from_millis(1)]),
            veth_delete: Summary::of(&[Duration::from_millis(delete_ms)]),
            veth_delete_up: Summary::of(&[Duration::from_millis(delete_ms)]),
        }
    }

    #[test]
    fn targets_pass_and_miss() {
        let weft = variant("weft", 2, 12, 100);
        let reference = variant("ref", 10, 20, 300);
        let t = targets(&weft, &reference, None, &floor(10));
        assert_eq!(t[0].pass, Some(true)); // 0.2 <= 0.25
        assert_eq!(t[1].pass, None); // ipMasq not measured
        assert_eq!(t[2].pass, Some(true)); // 1.2 <= 1.2
        assert_eq!(t[3].pass, None); // informational
        assert_eq!(t[4].pass, Some(true)); // 3x >= 2x

        let slow = variant("weft", 3, 13, 200);
        let t = targets(&slow, &reference, Some(&weft), &floor(10));
        assert_eq!(t[0].pass, Some(false));
        assert_eq!(t[1].pass, Some(false)); // 1.5x slower with ipMasq
        assert_eq!(t[2].pass, Some(false));
        assert_eq!(t[4].pass, Some(false));
    }

    #[test]
    fn table_mentions_every_target() {
        let weft = variant("weft", 2, 12, 100);
        let reference = variant("ref", 10, 20, 300);
        let fl = floor(10);
        let report = Report {
            run: RunInfo {
                kernel: "6.18".into(),
                cpus: 2,
                cpu_model: "test".into(),
                pods: 4,
                parallel: 8,
                rounds: 2,
                ipmasq: false,
                cni_version: "1.0.0",
                weft: "weft".into(),
                reference_dir: "/usr/lib/cni".into(),
            },
            targets: targets(&weft, &reference, None, &fl),
            variants: vec![weft, reference],
            floor: fl,
        };
        let table = report.to_table();
        for t in &report.targets {
            assert!(table.contains(t.name), "{table}");
        }
        assert!(table.contains("PASS") && table.contains("n/a"));
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["targets"].as_array().map(Vec::len), Some(5));
    }
}
