//! `weftctl bench policy`: NetworkPolicy at scale on one node (issue 4) — 1,000 pods and
//! 100 / 1,000 / 10,000 rules: the time to apply the whole table from scratch, the time to
//! apply one change (a pod relabelled, a policy edited), and the per-packet cost
//! (iperf3 throughput and sockperf TCP ping-pong between two policed pods, and the rate of
//! new connections, whose first packets are the ones that walk the rules) against the
//! same pods with no policy, and against the same policies rendered the way iptables-based
//! implementations do ([`weft_policy::plan::compile_linear`]: one rule per peer and port,
//! one linear chain per pod behind one jump rule per pod) — all in the same run.
//!
//! The world is synthetic and fixed (`world`); two of its pods are real namespaces behind a
//! node namespace (`net`), the table goes where weftd's goes (the node's `forward` hook).
//! Before each variant's measurements a probe on a port no rule allows must fail (and
//! succeed with no policy), so every figure is of a table that really polices the flow.
//!
//! A full apply = `nft -f -` of `render_ops(diff(before, after))` as one transaction, timed
//! end to end and by part: compile (a fresh [`Compiler`]), diff (`diff` from nothing),
//! render, nft (spawn to exit). A change is committed as weftd commits it: the compiler's
//! update, `take_ops`, then — when the ops are element ops only — one netlink batch on a
//! socket kept open in the node namespace (`weft_agent::policy::netlink`), else
//! `render_ops` and `nft -f -`. Every variant is applied from nothing and removed (`delete table`) once per round;
//! the rounds rotate the order, and a ratio is the median of per-round ratios, as in
//! `bench dataplane`.

mod net;
mod report;
pub mod world;

use std::time::Instant;

use clap::Args;
use clap::builder::RangedU64ValueParser;
use weft_policy::plan::{self, Compiler, HookPoint, Op, Plan, PlanOptions, Rule, Verdict};
use weft_policy::{Endpoint, World};

use super::dataplane::tools::{Placement, Tools};
use super::error::{BenchError, Result};
use super::scratch::ScratchDir;
use super::signal;
use net::Net;
use report::{ChangeReport, Kind, PolicyReport, TableSize, Timing, VariantReport};
use weft_agent::policy::netlink;
use weft_ctl::exe;

/// Options of `weftctl bench policy`.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// Rule counts to measure (comma-separated multiples of 10; a rule is one peer address
    /// or CIDR × one port).
    #[arg(long, value_delimiter = ',', default_values_t = [100, 1000, 10_000])]
    pub rules: Vec<usize>,
    /// Seconds per per-packet measurement (iperf3 adds one unmeasured second).
    #[arg(long, default_value_t = 5, value_parser = RangedU64ValueParser::<u32>::new().range(1..=600))]
    pub seconds: u32,
    /// Rounds over all variants; figures are medians over rounds.
    #[arg(long, default_value_t = 3, value_parser = RangedU64ValueParser::<usize>::new().range(1..=50))]
    pub rounds: usize,
    /// Timed single changes of each kind per size and round (made and undone in turn).
    #[arg(long, default_value_t = 10, value_parser = RangedU64ValueParser::<usize>::new().range(2..=1000))]
    pub changes: usize,
    /// Policies' fifth peer is one more pod instead of an external /24 (no ipBlocks: no
    /// CIDR interval sets, which `nft` reads back on every change).
    #[arg(long)]
    pub no_cidrs: bool,
}

/// The smallest: the client's policy and one more to edit.
const MIN_RULES: usize = 2 * world::RULES_PER_POLICY;
/// The largest rule count accepted (the linear rendering grows with it times the pods).
const MAX_RULES: usize = 100_000;

#[derive(Debug, Clone, Copy)]
enum Variant {
    Bare,
    NoPolicy,
    Weft(usize),
    Linear(usize),
}

/// Runs the benchmark and prints the report. Missing a target is a result, not an error.
pub fn run(args: &PolicyArgs) -> Result<()> {
    run_inner(args).map_err(|e| {
        if signal::interrupted() {
            BenchError::Interrupted
        } else {
            e
        }
    })
}

fn run_inner(args: &PolicyArgs) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(BenchError::NotRoot);
    }
    let mut sizes = args.rules.clone();
    sizes.sort_unstable();
    sizes.dedup();
    if sizes.is_empty()
        || sizes
            .iter()
            .any(|&n| n < MIN_RULES || n % world::RULES_PER_POLICY != 0 || n > MAX_RULES)
    {
        return Err(BenchError::Unexpected {
            what: "--rules".to_owned(),
            detail: format!(
                "each count must be a multiple of {} from {MIN_RULES} to {MAX_RULES}",
                world::RULES_PER_POLICY,
            ),
        });
    }
    let tools = Tools::find()?;
    let nft = exe::which("nft").ok_or(BenchError::MissingTool {
        tool: "nft",
        hint: "Debian: apt-get install nftables",
    })?;
    signal::install()?;
    let load_before = super::load_average();
    let pid = std::process::id();
    let scratch = ScratchDir::create(super::SCRATCH_PREFIX)?;

    let cidrs = !args.no_cidrs;
    let worlds: Vec<World> = sizes.iter().map(|&n| world::world(n, cidrs)).collect();
    let addr = |w: &World, who| {
        world::endpoint(w, who)
            .and_then(|e| e.addresses.first().copied())
            .ok_or_else(|| BenchError::Unexpected {
                what: "the synthetic world".to_owned(),
                detail: format!("no pod {}/{}", who.0, who.1),
            })
    };
    let (client, server) = (
        addr(&worlds[0], world::CLIENT)?,
        addr(&worlds[0], world::SERVER)?,
    );
    eprintln!(
        "weftctl: bench policy: node, client and server namespaces (wtb{pid}nn/nc/ns), {} pods, rules {sizes:?}",
        worlds[0].endpoints.len()
    );
    let net = Net::build(
        pid,
        client,
        server,
        world::DENIED_PORT,
        world::CONNECT_PORT,
        nft,
    )?;
    let servers = tools.servers(&net.server_ns, &server.to_string(), scratch.path(), "0")?;
    // The servers need a moment to listen, and `iperf3 -J` reports a refused connection as
    // a JSON error with exit 0, which the client helper does not retry.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let opts = PlanOptions::new(world::NODE);

    net.masquerade(true)?;
    let mut variants = vec![Variant::Bare, Variant::NoPolicy];
    variants.extend((0..sizes.len()).map(Variant::Weft));
    variants.extend((0..sizes.len()).map(Variant::Linear));
    let mut results: Vec<VariantReport> = variants
        .iter()
        .map(|v| match *v {
            Variant::Bare => VariantReport::new(Kind::Bare, 0),
            Variant::NoPolicy => VariantReport::new(Kind::NoPolicy, 0),
            Variant::Weft(s) => VariantReport::new(Kind::Weft, sizes[s]),
            Variant::Linear(s) => VariantReport::new(Kind::Linear, sizes[s]),
        })
        .collect();
    let mut changes: Vec<ChangeReport> = sizes
        .iter()
        .map(|&rules| ChangeReport {
            rules,
            ..ChangeReport::default()
        })
        .collect();

    let mut servers = servers;
    for round in 0..args.rounds {
        let n = variants.len();
        for step in 0..n {
            let i = (step + round) % n;
            signal::check()?;
            for s in servers.iter_mut() {
                if s.exited().is_some() {
                    return Err(s.died());
                }
            }
            let label = results[i].label();
            eprintln!(
                "weftctl: round {}/{}: {label}: apply, probe, iperf3 on 2 CPUs and on 1, sockperf, connect rate ({} s each)",
                round + 1,
                args.rounds,
                args.seconds
            );
            let installed = match variants[i] {
                Variant::Bare => {
                    net.masquerade(false)?;
                    false
                }
                Variant::NoPolicy => false,
                Variant::Weft(s) => {
                    let (timing, size, mut compiler) = apply_weft(&net, &worlds[s], &opts)?;
                    results[i].applies.push(timing);
                    results[i].size = size;
                    time_changes(&net, &mut compiler, &mut changes[s], args.changes, cidrs)?;
                    true
                }
                Variant::Linear(s) => {
                    let (timing, size) = apply_linear(&net, &worlds[s], &opts, server)?;
                    results[i].applies.push(timing);
                    results[i].size = size;
                    true
                }
            };
            // The policy must be in effect (and the probe able to tell).
            let open = net.probe()?;
            if open == installed {
                return Err(BenchError::Unexpected {
                    what: format!(
                        "{label}: the probe to the denied port {}",
                        world::DENIED_PORT
                    ),
                    detail: if installed {
                        "connected: the table does not police the measured flow".to_owned()
                    } else {
                        "failed with no policy: the probe cannot tell".to_owned()
                    },
                });
            }
            let addr = server.to_string();
            let tp = tools.throughput(&net.client_ns, &addr, args.seconds, Placement::TwoCpus)?;
            let tp1 = tools.throughput(&net.client_ns, &addr, args.seconds, Placement::OneCpu)?;
            let rr = tools.request_response(&net.client_ns, &addr, args.seconds)?;
            let crr = net.connect_rate(world::CONNECT_PORT, args.seconds, tools.cpus.1)?;
            results[i].crr.push(crr);
            results[i].throughput.push(tp);
            results[i].throughput_one_cpu.push(tp1);
            results[i].rr.push(rr);
            if installed {
                net.nft(&format!("delete table inet {}\n", opts.table))?;
            }
            if let Variant::Bare = variants[i] {
                net.masquerade(true)?;
            }
        }
    }
    let load_after = super::load_average();

    drop(servers);
    net.remove()?;
    drop(scratch);

    let report = PolicyReport {
        cidrs,
        pods: worlds[0].endpoints.len(),
        seconds: args.seconds,
        rounds: args.rounds,
        cpus: std::thread::available_parallelism().map_or(0, usize::from),
        pinned: tools.cpus,
        load_before,
        load_after,
        variants: results,
        changes,
    };
    print!("{}", report.to_table());
    Ok(())
}

fn weight(ops: &[Op]) -> usize {
    ops.iter().map(Op::weight).sum()
}

/// Compiles `world` from scratch and applies it; returns the timing, the table's size and
/// the compiler (for the changes).
fn apply_weft(
    net: &Net,
    world: &World,
    opts: &PlanOptions,
) -> Result<(Timing, TableSize, Compiler)> {
    let w = world.clone();
    let t = Instant::now();
    let compiler = Compiler::new(w, opts.clone());
    let compile = t.elapsed();
    let (timing, size) = apply_from_nothing(net, compiler.plan(), compile, 0)?;
    Ok((timing, size, compiler))
}

/// The iptables-style rendering, applied from scratch.
fn apply_linear(
    net: &Net,
    world: &World,
    opts: &PlanOptions,
    server: std::net::IpAddr,
) -> Result<(Timing, TableSize)> {
    let t = Instant::now();
    let p = plan::compile_linear(world, opts);
    let compile = t.elapsed();
    apply_from_nothing(net, &p, compile, linear_path(&p, server))
}

/// Diffs `p` from the empty plan, renders it and gives it to `nft -f` (no table before):
/// the timing of each part after `compile`, and the table's size.
fn apply_from_nothing(
    net: &Net,
    p: &Plan,
    compile: std::time::Duration,
    path_rules: usize,
) -> Result<(Timing, TableSize)> {
    let t = Instant::now();
    let ops = plan::diff(&Plan::empty(&p.table), p);
    let diff = t.elapsed();
    let t = Instant::now();
    let script = plan::render_ops(&p.table, &ops);
    let render = t.elapsed();
    let nft = net.nft(&script)?;
    let size = TableSize {
        sets: p.sets.len(),
        chains: p.chains.len(),
        elements: p.sets.values().map(|s| s.elements.len()).sum(),
        rules: p.chains.values().map(|c| c.rules.len()).sum(),
        path_rules,
    };
    let timing = Timing {
        compile,
        diff,
        render,
        nft,
        weight: weight(&ops),
        bytes: script.len(),
        netlink: false,
    };
    Ok((timing, size))
}

/// Rules a new connection to `server` meets in a linear plan's forward chains before the
/// pod chain accepts it: every rule ahead of the server's jump in each forward base chain,
/// plus the pod chain's rules (the accept is its last).
fn linear_path(p: &Plan, server: std::net::IpAddr) -> usize {
    let mut n = 0;
    for c in p
        .chains
        .values()
        .filter(|c| c.hook.is_some_and(|h| h.point == HookPoint::Forward))
    {
        for r in &c.rules {
            n += 1;
            if let Rule::Match {
                daddr: Some((a, _)),
                verdict: Verdict::Jump(target),
                ..
            } = r
                && *a == server
            {
                n += p.chains.get(target).map_or(0, |t| t.rules.len() - 1);
                break;
            }
        }
    }
    n
}

/// `count` single changes of each kind on the applied table, each timed by part and applied
/// as its own transaction; every second change undoes the one before, so the table ends as
/// it began.
fn time_changes(
    net: &Net,
    c: &mut Compiler,
    report: &mut ChangeReport,
    count: usize,
    cidrs: bool,
) -> Result<()> {
    let table = c.options().table.clone();
    let mut session = net.netlink_session()?;
    let mut apply = |c: &mut Compiler, change: &dyn Fn(&mut Compiler)| -> Result<Timing> {
        let t = Instant::now();
        change(c);
        let compile = t.elapsed();
        let t = Instant::now();
        let ops = c.take_ops();
        let diff = t.elapsed();
        let t = Instant::now();
        if let Some(batch) = netlink::batch(&table, &ops, c.plan(), c.plan()) {
            let render = t.elapsed();
            let t = Instant::now();
            netlink::commit_on(&mut session, batch).map_err(|e| BenchError::Unexpected {
                what: "netlink commit".to_owned(),
                detail: e.to_string(),
            })?;
            return Ok(Timing {
                compile,
                diff,
                render,
                nft: t.elapsed(),
                weight: weight(&ops),
                bytes: 0,
                netlink: true,
            });
        }
        let script = plan::render_ops(&table, &ops);
        let render = t.elapsed();
        let nft = net.nft(&script)?;
        Ok(Timing {
            compile,
            diff,
            render,
            nft,
            weight: weight(&ops),
            bytes: script.len(),
            netlink: false,
        })
    };
    for j in 0..count {
        signal::check()?;
        let (ns, name) = world::relabel_target(j / 2);
        let Some(mut e): Option<Endpoint> = c.world().endpoint(&ns, &name).cloned() else {
            return Err(BenchError::Unexpected {
                what: "relabel".to_owned(),
                detail: format!("no pod {ns}/{name}"),
            });
        };
        let value = if j % 2 == 0 {
            "moved".to_owned()
        } else {
            "1".to_owned()
        };
        e.labels.insert("instance".into(), value);
        report
            .relabel
            .push(apply(c, &|c: &mut Compiler| c.upsert_endpoint(e.clone()))?);
    }
    let k = world::edit_target(report.rules);
    for j in 0..count {
        signal::check()?;
        let shift = if j % 2 == 0 { 1 + j / 2 } else { 0 };
        let p = world::allow_policy(k, shift, cidrs);
        report
            .edit
            .push(apply(c, &|c: &mut Compiler| c.upsert_policy(p.clone()))?);
    }
    Ok(())
}
