//! The compiled plans, walked the way nftables evaluates them, agree with the reference
//! evaluator on randomized worlds (seeded: a failure names its seed and replays).

mod common;

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
    let (mut flows, mut allowed) = (0, 0);
    // A fixed number of worlds, not a time budget: the same test on a loaded CI machine
    // (it failed there with "only 22 worlds in the time budget").
    let seeds = 60;
    for seed in 0..seeds {
        let (n, a) = agree(seed, false);
        flows += n;
        allowed += a;
    }
    // Both outcomes must be common, or the test proves little.
    assert!(
        allowed > flows / 10 && allowed < flows * 9 / 10,
        "{allowed} of {flows} allowed"
    );
    eprintln!("{seeds} worlds, {flows} flows agree ({allowed} allowed)");
}

#[test]
fn linear_plans_agree_with_the_evaluator() {
    for seed in 10_000..10_040 {
        agree(seed, true);
    }
}
