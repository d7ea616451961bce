//! Latency summaries: nearest-rank percentiles (a p99 is a latency some exec really took, not
//! an interpolation between two of them) and the mean.

use std::time::Duration;

use serde::Serialize;

/// Summary of one set of per-exec wall times, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub n: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
}

impl Summary {
    /// Summarises `samples`; an empty slice gives all zeros (n = 0).
    pub fn of(samples: &[Duration]) -> Self {
        if samples.is_empty() {
            return Summary {
                n: 0,
                p50_ms: 0.0,
                p99_ms: 0.0,
                mean_ms: 0.0,
                min_ms: 0.0,
                max_ms: 0.0,
            };
        }
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let total: Duration = sorted.iter().sum();
        Summary {
            n: sorted.len(),
            p50_ms: ms(percentile(&sorted, 50.0)),
            p99_ms: ms(percentile(&sorted, 99.0)),
            mean_ms: ms(total) / sorted.len() as f64,
            min_ms: ms(sorted[0]),
            max_ms: ms(sorted[sorted.len() - 1]),
        }
    }
}

/// Nearest-rank percentile of an ascending, non-empty slice.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One figure per round, divided by `unit`, with `prec` decimals, space-separated: the
/// "per round" lines of the bench reports.
pub fn per_round(values: &[f64], unit: f64, prec: usize) -> String {
    values
        .iter()
        .map(|v| format!("{:.prec$}", v / unit))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Milliseconds as a float, the unit every table and JSON field uses.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Throughput: pods completed per second of wall time.
pub fn per_second(count: usize, wall: Duration) -> f64 {
    if wall.is_zero() {
        0.0
    } else {
        count as f64 / wall.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_round_scales_and_rounds_each_figure() {
        assert_eq!(per_round(&[1234.5, 99_960.0], 1000.0, 1), "1.2 100.0");
        assert_eq!(per_round(&[], 1.0, 2), "");
    }

    fn millis(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let s = Summary::of(&millis(&(1..=100).rev().collect::<Vec<_>>()));
        assert_eq!(s.n, 100);
        assert_eq!(s.p50_ms, 50.0);
        assert_eq!(s.p99_ms, 99.0);
        assert_eq!(s.min_ms, 1.0);
        assert_eq!(s.max_ms, 100.0);
        assert!((s.mean_ms - 50.5).abs() < 1e-9);
    }

    #[test]
    fn small_samples_use_real_values() {
        let s = Summary::of(&millis(&[3, 1, 2]));
        assert_eq!(s.p50_ms, 2.0);
        assert_eq!(s.p99_ms, 3.0);
        let one = Summary::of(&millis(&[7]));
        assert_eq!((one.p50_ms, one.p99_ms), (7.0, 7.0));
    }

    #[test]
    fn empty_is_zero() {
        assert_eq!(Summary::of(&[]).n, 0);
    }

    #[test]
    fn throughput() {
        assert_eq!(per_second(200, Duration::from_secs(4)), 50.0);
        assert_eq!(per_second(1, Duration::ZERO), 0.0);
    }
}
