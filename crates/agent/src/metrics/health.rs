//! What `/healthz` and `/readyz` judge: pure functions of the facts the control loop left
//! in the snapshot and of the time, so the rules are tested here without a node.

use std::fmt;
use std::time::Duration;

/// The least silence tolerated before the control loop is judged stalled, whatever
/// `--resync-interval`: one step may legitimately wait out a datastore timeout (3 s) and a
/// retry back-off (up to 3 s) before it says anything.
pub const MIN_LIVENESS_BOUND: Duration = Duration::from_secs(10);

/// How long the control loop may stay silent: two resync intervals (a live loop finishes a
/// step at least every resync interval, and more often for lease renewals), at least
/// [`MIN_LIVENESS_BOUND`].
pub fn liveness_bound(resync_interval: Duration) -> Duration {
    (resync_interval * 2).max(MIN_LIVENESS_BOUND)
}

/// What makes the node ready to run pods, as the control loop last reported it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Facts {
    /// A datastore call succeeded since weftd started. Sticky: a later outage does not take
    /// it back, because pods keep starting through one (docs/agent.md, "Datastore outages").
    pub datastore_answered: bool,
    /// Blocks the node holds, all families.
    pub blocks: usize,
    /// weftd wrote the conflist (and has not removed it since for want of a block).
    pub conflist_written: bool,
    /// The kernel holds the plan of a complete policy view loaded since start, and its
    /// last commit was not refused: until then `attach` is refused and ADDs fail.
    pub policy_applied: bool,
}

/// One unmet readiness condition; its `Display` is the line `/readyz` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmet {
    Datastore,
    NoBlock,
    NoConflist,
    Policy,
    /// The control loop has been silent longer than the liveness bound: the facts above
    /// are stale, whatever they say.
    Stalled(Stalled),
}

/// The control loop's silence, past its bound: what `/healthz` fails with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stalled {
    pub silent: Duration,
    pub bound: Duration,
}

impl fmt::Display for Stalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "control loop silent for {}s (bound {}s)",
            self.silent.as_secs(),
            self.bound.as_secs()
        )
    }
}

impl fmt::Display for Unmet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unmet::Datastore => write!(f, "not ready: the datastore has not answered since start"),
            Unmet::NoBlock => write!(f, "not ready: no block held"),
            Unmet::NoConflist => write!(f, "not ready: conflist not written"),
            Unmet::Policy => write!(
                f,
                "not ready: policy not synced (no complete view committed to the kernel yet, \
                 or its last commit was refused)"
            ),
            Unmet::Stalled(s) => write!(f, "not ready: {s}"),
        }
    }
}

/// The silence, when it is past `bound`.
pub fn stalled(silent: Duration, bound: Duration) -> Option<Stalled> {
    (silent > bound).then_some(Stalled { silent, bound })
}

/// Every unmet condition, in a fixed order (the order a starting node meets them in).
pub fn unmet(f: &Facts, silent: Duration, bound: Duration) -> Vec<Unmet> {
    let mut out = Vec::new();
    if !f.datastore_answered {
        out.push(Unmet::Datastore);
    }
    if f.blocks == 0 {
        out.push(Unmet::NoBlock);
    }
    if !f.conflist_written {
        out.push(Unmet::NoConflist);
    }
    if !f.policy_applied {
        out.push(Unmet::Policy);
    }
    out.extend(stalled(silent, bound).map(Unmet::Stalled));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const READY: Facts = Facts {
        datastore_answered: true,
        blocks: 2,
        conflist_written: true,
        policy_applied: true,
    };
    const BOUND: Duration = Duration::from_secs(60);

    fn lines(f: &Facts, silent: u64) -> Vec<String> {
        unmet(f, Duration::from_secs(silent), BOUND)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_ready_node_lists_nothing() {
        assert!(unmet(&READY, Duration::ZERO, BOUND).is_empty());
        assert!(
            unmet(&READY, BOUND, BOUND).is_empty(),
            "the bound itself is alive"
        );
    }

    #[test]
    fn a_fresh_node_lists_every_condition_in_order() {
        assert_eq!(
            unmet(&Facts::default(), Duration::ZERO, BOUND),
            [
                Unmet::Datastore,
                Unmet::NoBlock,
                Unmet::NoConflist,
                Unmet::Policy
            ]
        );
    }

    #[test]
    fn each_condition_is_reported_alone() {
        let cases = [
            (
                Facts {
                    datastore_answered: false,
                    ..READY
                },
                "not ready: the datastore has not answered since start",
            ),
            (Facts { blocks: 0, ..READY }, "not ready: no block held"),
            (
                Facts {
                    conflist_written: false,
                    ..READY
                },
                "not ready: conflist not written",
            ),
            (
                Facts {
                    policy_applied: false,
                    ..READY
                },
                "not ready: policy not synced (no complete view committed to the kernel yet, \
                 or its last commit was refused)",
            ),
        ];
        for (facts, line) in cases {
            assert_eq!(lines(&facts, 0), [line], "{facts:?}");
        }
    }

    #[test]
    fn a_silent_loop_is_stalled_and_not_ready_whatever_the_facts() {
        assert_eq!(
            lines(&READY, 61),
            ["not ready: control loop silent for 61s (bound 60s)"]
        );
        let silence = stalled(Duration::from_secs(61), BOUND).expect("stalled");
        assert_eq!(
            silence.to_string(),
            "control loop silent for 61s (bound 60s)"
        );
        assert_eq!(stalled(Duration::from_secs(59), BOUND), None);
    }

    #[test]
    fn the_bound_is_two_resyncs_and_never_under_ten_seconds() {
        assert_eq!(
            liveness_bound(Duration::from_secs(30)),
            Duration::from_secs(60)
        );
        assert_eq!(liveness_bound(Duration::from_secs(1)), MIN_LIVENESS_BOUND);
    }
}
