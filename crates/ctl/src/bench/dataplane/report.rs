//! The dataplane benchmark's table and its verdict on the targets.

use std::fmt::Write;

use super::Kind;
use super::tools::{PingPong, Throughput};

/// Same-node and host-gw throughput, as a fraction of raw veth.
const TARGET_DIRECT: f64 = 0.95;
/// VXLAN throughput as a fraction of raw veth…
const TARGET_VXLAN_RAW: f64 = 0.80;
/// …and of the hand-built kernel VXLAN pair.
const TARGET_VXLAN_HAND: f64 = 0.97;
/// Request/response rate of every weft path, as a fraction of raw veth.
const TARGET_RR: f64 = 0.85;

/// Every round's figures of one path.
#[derive(Debug)]
pub struct PathReport {
    pub kind: Kind,
    pub throughput: Vec<Throughput>,
    pub rr: Vec<PingPong>,
}

impl PathReport {
    pub fn new(kind: Kind) -> PathReport {
        PathReport {
            kind,
            throughput: Vec::new(),
            rr: Vec::new(),
        }
    }

    /// Median throughput, Gbit/s.
    pub fn gbps(&self) -> f64 {
        median(self.throughput.iter().map(|t| t.bits_per_second / 1e9))
    }

    /// Median request/response rate, round trips per second.
    pub fn rr_rate(&self) -> f64 {
        median(self.rr.iter().map(|r| r.per_second))
    }

    pub fn rtt_p50(&self) -> f64 {
        median(self.rr.iter().map(|r| r.rtt_p50_us))
    }
}

/// Median of the values (mean of the middle two for an even count); 0 when empty.
pub fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

#[derive(Debug)]
pub struct DataplaneReport {
    pub seconds: u32,
    pub rounds: usize,
    pub cpus: usize,
    /// iperf3 client and server CPU; sockperf's both ends on the second.
    pub pinned: (usize, usize),
    pub load_before: String,
    pub load_after: String,
    pub paths: Vec<PathReport>,
}

impl DataplaneReport {
    fn path(&self, kind: Kind) -> Option<&PathReport> {
        self.paths.iter().find(|p| p.kind == kind)
    }

    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "weftctl bench dataplane: {} round(s) of {} s per measurement, {} CPUs, load average {} before, {} after",
            self.rounds, self.seconds, self.cpus, self.load_before, self.load_after
        );
        let _ = writeln!(
            out,
            "iperf3 (1 TCP stream) client on CPU {}, server on CPU {}; sockperf TCP ping-pong, both ends on CPU {}",
            self.pinned.0, self.pinned.1, self.pinned.1
        );
        let _ = writeln!(out);
        let raw = self.path(Kind::Raw);
        let raw_tp = raw.map_or(0.0, PathReport::gbps);
        let raw_rr = raw.map_or(0.0, PathReport::rr_rate);
        let ratio = |v: f64, base: f64| if base > 0.0 { v / base } else { 0.0 };
        let _ = writeln!(
            out,
            "{:<32}{:>9}{:>8}  {:<26}{:>10}{:>8}{:>10}  retrans",
            "path", "Gbit/s", "/raw", "per round", "RR/s", "/raw", "RTT p50"
        );
        for p in &self.paths {
            let rounds: Vec<String> = p
                .throughput
                .iter()
                .map(|t| format!("{:.2}", t.bits_per_second / 1e9))
                .collect();
            let retrans: u64 = p.throughput.iter().map(|t| t.retransmits).sum();
            let _ = writeln!(
                out,
                "{:<32}{:>9.2}{:>8.3}  {:<26}{:>10.0}{:>8.3}{:>8.1}us  {}",
                p.kind.label(),
                p.gbps(),
                ratio(p.gbps(), raw_tp),
                rounds.join(" "),
                p.rr_rate(),
                ratio(p.rr_rate(), raw_rr),
                p.rtt_p50(),
                retrans
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "{:<46}{:>8}{:>9}  result", "target", "value", "goal");
        for t in self.targets() {
            let _ = writeln!(
                out,
                "{:<46}{:>8.3}{:>9}  {}",
                t.name,
                t.value,
                format!(">= {:.2}", t.goal),
                if t.value >= t.goal { "PASS" } else { "FAIL" }
            );
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<46}{:>8}{:>9}  (informational: the same underlay on both sides)",
            "weft's own share", "Gbit/s", "RR/s"
        );
        for (name, weft, floor) in [
            ("host-gw / lab underlay", Kind::HostGw, Kind::Underlay),
            (
                "VXLAN / kernel VXLAN on lab underlay",
                Kind::Vxlan,
                Kind::LabVxlan,
            ),
        ] {
            let (Some(w), Some(f)) = (self.path(weft), self.path(floor)) else {
                continue;
            };
            let _ = writeln!(
                out,
                "{:<46}{:>8.3}{:>9.3}",
                name,
                ratio(w.gbps(), f.gbps()),
                ratio(w.rr_rate(), f.rr_rate())
            );
        }
        out
    }

    /// The targets as ratios of medians measured in this run.
    pub fn targets(&self) -> Vec<Target> {
        let tp = |k: Kind| self.path(k).map_or(0.0, PathReport::gbps);
        let rr = |k: Kind| self.path(k).map_or(0.0, PathReport::rr_rate);
        let over = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let raw_tp = tp(Kind::Raw);
        let raw_rr = rr(Kind::Raw);
        vec![
            Target {
                name: "same-node throughput / raw veth",
                value: over(tp(Kind::SameNode), raw_tp),
                goal: TARGET_DIRECT,
            },
            Target {
                name: "host-gw throughput / raw veth",
                value: over(tp(Kind::HostGw), raw_tp),
                goal: TARGET_DIRECT,
            },
            Target {
                name: "VXLAN throughput / raw veth",
                value: over(tp(Kind::Vxlan), raw_tp),
                goal: TARGET_VXLAN_RAW,
            },
            Target {
                name: "VXLAN throughput / hand-built VXLAN",
                value: over(tp(Kind::Vxlan), tp(Kind::HandVxlan)),
                goal: TARGET_VXLAN_HAND,
            },
            Target {
                name: "same-node request/response / raw veth",
                value: over(rr(Kind::SameNode), raw_rr),
                goal: TARGET_RR,
            },
            Target {
                name: "host-gw request/response / raw veth",
                value: over(rr(Kind::HostGw), raw_rr),
                goal: TARGET_RR,
            },
            Target {
                name: "VXLAN request/response / raw veth",
                value: over(rr(Kind::Vxlan), raw_rr),
                goal: TARGET_RR,
            },
        ]
    }
}

/// One judged ratio.
#[derive(Debug)]
pub struct Target {
    pub name: &'static str,
    pub value: f64,
    pub goal: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 2.0, 3.0].into_iter()), 2.5);
        assert_eq!(median(std::iter::empty()), 0.0);
    }
}
