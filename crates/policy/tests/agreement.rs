//! The compiled plans, walked the way nftables evaluates them, agree with the reference
//! evaluator on randomized worlds (seeded: a failure names its seed and replays).

mod common;

use std::time::{Duration, Instant};

use common::*;
use weft_policy::{Protocol, evaluate_addrs};

fn agree(seed: u64, linear: bool) -> (usize, usize) {
    let mut r = Rng::new(seed);
    let w = random_world(&mut r);
    let p = plans(&w, linear);
    let addrs = probe_addresses(&w);
    let mut n = 0;
    let mut allowed = 0;
    for &src in &addrs {
        for &dst in &addrs {
            if src.is_ipv4() != dst.is_ipv4() {
                continue;
            }
            for proto in [Protocol::Tcp, Protocol::Udp, Protocol::Sctp] {
                for &port in PROBE_PORTS {
                    let v = evaluate_addrs(&w, src, dst, port, proto);
                    let walked = walk(&w, &p, src, dst, proto, port);
                    assert_eq!(
                        walked, v.allowed,
                        "seed {seed} (linear: {linear}): {src} -> {dst} {port}/{proto}: plan says {walked}, evaluator:\n{v}\nworld: {w:#?}"
                    );
                    n += 1;
                    allowed += usize::from(v.allowed);
                }
            }
        }
    }
    (n, allowed)
}

#[test]
fn compiled_plans_agree_with_the_evaluator() {
    let start = Instant::now();
    let (mut flows, mut allowed) = (0, 0);
    let mut seed = 0;
    // Bounded by count and by time (debug builds on a busy machine).
    while seed < 400 && start.elapsed() < Duration::from_secs(4) {
        let (n, a) = agree(seed, false);
        flows += n;
        allowed += a;
        seed += 1;
    }
    assert!(seed >= 50, "only {seed} worlds in the time budget");
    // Both outcomes must be common, or the test proves little.
    assert!(
        allowed > flows / 10 && allowed < flows * 9 / 10,
        "{allowed} of {flows} allowed"
    );
    eprintln!("{seed} worlds, {flows} flows agree ({allowed} allowed)");
}

#[test]
fn linear_plans_agree_with_the_evaluator() {
    let start = Instant::now();
    let mut seed = 10_000;
    while seed < 10_150 && start.elapsed() < Duration::from_secs(3) {
        agree(seed, true);
        seed += 1;
    }
    assert!(seed >= 10_030);
}
