//! NetworkPolicy updates under traffic: while many counted flows run (UDP with sequence
//! numbers, long-lived TCP connections writing both ways and checking every byte; same node
//! and across nodes; IPv4 and IPv6; some allowed, some denied), the policy set is changed four
//! times — (a) relabel pods, (b) edit policies (add a port, remove a peer), (c) add a policy,
//! (d) delete one — and after each `policy-sync` every flow is checked against what it must do
//! now, with new-connection probes for the flows the change flips. At the end every flow the
//! changes did not affect has lost not one datagram and not one byte. Bridge mode (same-node
//! traffic bridged, filtered through br_netfilter) and ptp mode (routed).
//!
//! Conntrack: a flow a change newly denies has a live entry, and by default it keeps going
//! (replies of admitted connections are allowed; `docs/policy.md`), only NEW connections of it
//! are refused. With `--policy-cut-established` weftd deletes the entries of the flows a
//! change denies: those flows stop, and the others still lose nothing.

mod lab_support;

use std::time::Duration;

use lab_support::policy::tcp_open;
use lab_support::traffic::{TcpFlow, UdpFlow};
use lab_support::*;

const UDP_INTERVAL: Duration = Duration::from_millis(5);
const TCP_INTERVAL: Duration = Duration::from_millis(10);
/// How long a flow is watched for (not) delivering after a change.
const WINDOW: Duration = Duration::from_millis(600);

/// db pods take web pods on 7000-7199 (TCP and UDP).
const DB: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: upd}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{protocol: TCP, port: 7000, endPort: 7199}, {protocol: UDP, port: 7000, endPort: 7199}]
";

/// cache pods take web and db pods on 7100-7199.
const CACHE: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: cache, namespace: upd}
spec:
  podSelector: {matchLabels: {app: cache}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}, {podSelector: {matchLabels: {app: db}}}]
    ports: [{protocol: TCP, port: 7100, endPort: 7199}, {protocol: UDP, port: 7100, endPort: 7199}]
";

/// (b): db gains the ports 7200-7210, cache loses its db peer.
const EDITED: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: upd}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
    ports:
    - {protocol: TCP, port: 7000, endPort: 7199}
    - {protocol: UDP, port: 7000, endPort: 7199}
    - {protocol: TCP, port: 7200, endPort: 7210}
    - {protocol: UDP, port: 7200, endPort: 7210}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: cache, namespace: upd}
spec:
  podSelector: {matchLabels: {app: cache}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{protocol: TCP, port: 7100, endPort: 7199}, {protocol: UDP, port: 7100, endPort: 7199}]
";

/// (c): web pods take only db pods (any port).
const WEB: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: upd}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: db}}}]
";

const STEPS: [&str; 5] = [
    "initial policies",
    "(a) relabel d web→other, f other→web, g other→db",
    "(b) edit: db +ports 7200-7210, cache −peer db",
    "(c) add policy web (from db only)",
    "(d) delete policy db",
];

#[derive(Clone, Copy)]
enum Kind {
    /// Answered: the receiver sends each sequence number back, so conntrack sees replies.
    Udp,
    /// One way only: to conntrack every datagram is a new connection (no reply seen).
    UdpOneWay,
    Tcp,
}

/// A flow and whether a NEW connection of it is allowed after each step.
struct Spec {
    kind: Kind,
    from: &'static str,
    to: &'static str,
    v6: bool,
    port: u16,
    allowed: [bool; 5],
}

const fn spec(
    kind: Kind,
    from: &'static str,
    to: &'static str,
    v6: bool,
    port: u16,
    allowed: [bool; 5],
) -> Spec {
    Spec {
        kind,
        from,
        to,
        v6,
        port,
        allowed,
    }
}

const Y: bool = true;
const N: bool = false;

/// Pods: a (n1, web), b (n1, db), f (n1, other), g (n1, other); c (n2, db), d (n2, web),
/// e (n2, cache).
const FLOWS: [Spec; 18] = [
    // Never affected.
    spec(Kind::Udp, "a", "c", false, 7001, [Y, Y, Y, Y, Y]),
    spec(Kind::Tcp, "a", "b", false, 7002, [Y, Y, Y, Y, Y]),
    spec(Kind::Udp, "b", "a", true, 7003, [Y, Y, Y, Y, Y]),
    spec(Kind::Tcp, "c", "a", true, 7004, [Y, Y, Y, Y, Y]),
    spec(Kind::Udp, "a", "e", true, 7150, [Y, Y, Y, Y, Y]),
    spec(Kind::Tcp, "a", "d", false, 7005, [Y, Y, Y, Y, Y]),
    // (a) d leaves web: denied until (d) deletes the db policy.
    spec(Kind::Tcp, "d", "c", false, 7010, [Y, N, N, N, Y]),
    spec(Kind::Udp, "d", "b", true, 7012, [Y, N, N, N, Y]),
    spec(Kind::UdpOneWay, "d", "b", false, 7014, [Y, N, N, N, Y]),
    // (a) g becomes db: selected by the db policy, it takes only web on 7000-7199.
    spec(Kind::Udp, "e", "g", false, 7600, [Y, N, N, N, Y]),
    spec(Kind::Tcp, "a", "g", true, 7040, [Y, Y, Y, Y, Y]),
    // (a) f joins web.
    spec(Kind::Udp, "f", "c", false, 7013, [N, Y, Y, Y, Y]),
    // (b) the new port.
    spec(Kind::Udp, "a", "c", false, 7200, [N, N, Y, Y, Y]),
    // (b) the removed peer.
    spec(Kind::Udp, "c", "e", false, 7101, [Y, Y, N, N, N]),
    spec(Kind::Tcp, "b", "e", true, 7103, [Y, Y, N, N, N]),
    // (c) the new policy isolates web.
    spec(Kind::Udp, "e", "a", false, 7400, [Y, Y, Y, N, N]),
    // (d) the deleted policy.
    spec(Kind::Udp, "e", "c", false, 7020, [N, N, N, N, Y]),
    // Always denied (outside cache's ports).
    spec(Kind::Udp, "c", "e", true, 7500, [N, N, N, N, N]),
];

/// New TCP connections (IPv4) probed after each step: (from, to, port, allowed).
const PROBES: [&[(&str, &str, u16, bool)]; 5] = [
    &[
        ("d", "c", 7030, Y),
        ("f", "c", 7031, N),
        ("b", "g", 7042, Y),
    ],
    &[
        ("d", "c", 7032, N),
        ("f", "b", 7033, Y),
        ("b", "g", 7041, N),
    ],
    &[("a", "c", 7201, Y), ("c", "e", 7102, N)],
    &[("e", "a", 7401, N), ("b", "a", 7402, Y)],
    &[("d", "c", 7034, Y), ("e", "c", 7021, Y)],
];

enum Running {
    Udp(UdpFlow),
    Tcp(TcpFlow),
}

impl Running {
    /// Bytes or datagrams delivered so far in the direction policy judges (to `to`).
    fn delivered(&self) -> u64 {
        match self {
            Running::Udp(f) => f.received(),
            Running::Tcp(f) => f.received(),
        }
    }

    fn label(&self) -> &str {
        match self {
            Running::Udp(f) => f.label(),
            Running::Tcp(f) => f.label(),
        }
    }
}

/// Whether each flow must be delivering after `step`: a new connection is allowed, or (by
/// default, not with the cut) its conntrack entry from an earlier step still carries it.
/// `None`: no claim (a cut TCP connection that policy allows again resumes after its own
/// retransmission backoff, which may be longer than the window).
fn expected(s: &Spec, step: usize, cut: bool) -> Option<bool> {
    if matches!(s.kind, Kind::UdpOneWay) {
        return Some(s.allowed[step]);
    }
    if !cut {
        // Once admitted, the entry stays live: the flow never pauses.
        return Some(s.allowed[..=step].iter().any(|a| *a));
    }
    let was_cut = (1..=step).any(|i| s.allowed[i - 1] && !s.allowed[i]);
    if matches!(s.kind, Kind::Tcp) && was_cut && s.allowed[step] {
        return None;
    }
    Some(s.allowed[step])
}

/// Whether the flow delivered at every step and so must have lost nothing.
fn never_interrupted(s: &Spec, cut: bool) -> bool {
    (0..5).all(|step| expected(s, step, cut) == Some(true))
}

fn lab_with_pods(cut: bool, mode: &str, datapath: &str) -> Lab {
    require_cluster_binaries();
    let lab = Lab::new();
    let mut args = vec![
        "--nodes",
        "2",
        "--pods-per-node",
        "0",
        "--mode",
        mode,
        "--datapath",
        datapath,
    ];
    if cut {
        args.push("--policy-cut-established");
    }
    lab.up_ok(&args);
    lab.add_app_pods(
        "upd",
        &[
            ("a", "1", "web"),
            ("b", "1", "db"),
            ("f", "1", "other"),
            ("g", "1", "other"),
            ("c", "2", "db"),
            ("d", "2", "web"),
            ("e", "2", "cache"),
        ],
    );
    lab
}

/// Watches every flow for a window and compares with what it must do after `step`.
fn check_step(flows: &[(&Spec, Running)], step: usize, cut: bool) {
    // What was in flight when the change was committed has arrived by now.
    std::thread::sleep(Duration::from_millis(200));
    let before: Vec<u64> = flows.iter().map(|(_, f)| f.delivered()).collect();
    std::thread::sleep(WINDOW);
    let mut wrong = Vec::new();
    for ((s, f), b) in flows.iter().zip(before) {
        let delta = f.delivered() - b;
        if let Some(want) = expected(s, step, cut)
            && (delta > 0) != want
        {
            wrong.push(format!(
                "{}: {} in {WINDOW:?}, want {}",
                f.label(),
                delta,
                if want { "delivering" } else { "nothing" }
            ));
        }
        if let Running::Tcp(t) = f
            && let Some(e) = t.error()
        {
            wrong.push(format!("{}: {e}", f.label()));
        }
    }
    assert!(
        wrong.is_empty(),
        "after {} (cut: {cut}):\n{}",
        STEPS[step],
        wrong.join("\n")
    );
}

fn probe_step(lab: &Lab, step: usize) {
    let mut wrong = Vec::new();
    for &(from, to, port, want) in PROBES[step] {
        let got = tcp_open(lab, from, to, port);
        if got != want {
            wrong.push(format!("new tcp {from} → {to}:{port}: {got}, want {want}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "after {}:\n{}",
        STEPS[step],
        wrong.join("\n")
    );
}

fn updates_under_traffic(cut: bool, mode: &str, datapath: &str) {
    let lab = lab_with_pods(cut, mode, datapath);
    lab.apply(&format!("{DB}---\n{CACHE}"));
    lab.policy_sync();
    let flows: Vec<(&Spec, Running)> = FLOWS
        .iter()
        .map(|s| {
            let dst = lab.pod_addr(s.to, s.v6).expect("pod address");
            let f = match s.kind {
                Kind::Udp => Running::Udp(UdpFlow::start_answered(
                    &lab,
                    s.from,
                    s.to,
                    dst,
                    s.port,
                    UDP_INTERVAL,
                )),
                Kind::UdpOneWay => Running::Udp(UdpFlow::start(
                    &lab,
                    s.from,
                    s.to,
                    dst,
                    s.port,
                    UDP_INTERVAL,
                )),
                Kind::Tcp => Running::Tcp(TcpFlow::start(
                    &lab,
                    s.from,
                    s.to,
                    dst,
                    s.port,
                    TCP_INTERVAL,
                )),
            };
            (s, f)
        })
        .collect();
    check_step(&flows, 0, cut);
    probe_step(&lab, 0);
    let changes: [&dyn Fn(); 4] = [
        &|| {
            lab.ok(&["pod", "label"], &["d", "app=other"]);
            lab.ok(&["pod", "label"], &["f", "app=web"]);
            lab.ok(&["pod", "label"], &["g", "app=db"]);
        },
        &|| lab.apply(EDITED),
        &|| lab.apply(WEB),
        &|| lab.delete(DB),
    ];
    for (i, change) in changes.iter().enumerate() {
        let step = i + 1;
        change();
        lab.policy_sync();
        check_step(&flows, step, cut);
        probe_step(&lab, step);
    }

    for (_, f) in &flows {
        match f {
            Running::Udp(u) => u.stop_sending(),
            Running::Tcp(t) => t.stop_writing(),
        }
    }
    let mut wrong = Vec::new();
    let (mut datagrams, mut bytes, mut whole) = (0u64, 0u64, 0usize);
    for (s, f) in flows {
        let intact = never_interrupted(s, cut);
        match f {
            Running::Udp(u) => {
                let r = u.finish();
                eprintln!("{r}");
                if intact {
                    whole += 1;
                    datagrams += r.received;
                    if r.lost_count != 0 || r.send_errors != 0 || r.sent == 0 {
                        wrong.push(r.to_string());
                    }
                } else if s.allowed.iter().any(|a| *a) && r.received == 0 {
                    wrong.push(format!("{r}: never delivered"));
                } else if !s.allowed[0]
                    && s.allowed[4]
                    && s.allowed.iter().skip_while(|a| !**a).all(|a| *a)
                    && r.lost_count != r.first_received.unwrap_or(0)
                {
                    // Newly allowed and never denied again: lost only before admission.
                    wrong.push(format!("{r}: lost datagrams after it was admitted"));
                } else if !s.allowed.iter().any(|a| *a) && r.received != 0 {
                    wrong.push(format!("{r}: a flow denied throughout got through"));
                }
            }
            Running::Tcp(t) => {
                for r in t.finish() {
                    eprintln!("{r}");
                    if intact {
                        bytes += r.received;
                        if r.error.is_some() || r.sent == 0 || r.received != r.sent {
                            wrong.push(r.to_string());
                        }
                    }
                }
                whole += usize::from(intact);
            }
        }
    }
    // What weftd says it cut (its log lines), on both nodes.
    let cut_entries: u64 = ["n1", "n2"]
        .iter()
        .flat_map(|n| {
            let path = lab.state_dir().join(format!("nodes/{n}/weftd.log"));
            std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| v["msg"] == "established connections of denied flows cut")
                .filter_map(|v| v["cut"].as_u64())
                .collect::<Vec<_>>()
        })
        .sum();
    eprintln!("{mode}, cut {cut}: weftd deleted {cut_entries} conntrack entries");
    if cut {
        // d → c, d → b (two), e → g, c → e, b → e, e → a at least.
        assert!(cut_entries >= 7, "only {cut_entries} entries cut");
    } else {
        assert_eq!(cut_entries, 0, "entries cut without the option");
    }
    eprintln!(
        "{mode}, cut {cut}: {whole} flows never interrupted: {datagrams} datagrams and {bytes} bytes, none lost"
    );
    assert!(wrong.is_empty(), "(cut: {cut})\n{}", wrong.join("\n"));
    if datapath == "ebpf" {
        fast_path_took_part(&lab, cut);
    }
}

/// On `--datapath ebpf` the run proves something about the fast path only if it carried
/// flows and held on to them through the changes: packets redirected on every node, and
/// flows of pods that became policed kept established (by default) or cut (with the cut).
fn fast_path_took_part(lab: &Lab, cut: bool) {
    let (mut kept, mut dropped) = (0, 0);
    for node in ["n1", "n2"] {
        let dp = &lab.weftd_status(node)["datapath"];
        assert_eq!(dp["active"], "ebpf", "{node}: {dp}");
        let n = |k: &str| dp[k].as_u64().unwrap_or(0);
        assert!(
            n("redirected") + n("toPeer") + n("fromPeer") > 0,
            "{node}: nothing on the fast path: {dp}"
        );
        kept += n("kept");
        dropped += n("cut");
    }
    eprintln!("ebpf, cut {cut}: {kept} packets kept established, {dropped} dropped as cut");
    if cut {
        assert!(dropped > 0, "no fast connection was cut");
    } else {
        assert!(
            kept > 0,
            "no established fast connection outlived its pod's policing"
        );
        assert_eq!(dropped, 0, "cut without the option");
    }
}

#[test]
fn updates_flip_exactly_the_affected_flows_and_established_ones_keep_going() {
    updates_under_traffic(false, "bridge", "nft");
}

#[test]
fn updates_flip_exactly_the_affected_flows_in_ptp_mode() {
    updates_under_traffic(false, "ptp", "nft");
}

#[test]
fn with_cut_established_newly_denied_connections_stop_and_the_others_lose_nothing() {
    updates_under_traffic(true, "bridge", "nft");
}

/// On the eBPF datapath: flows of unpoliced pods run on the fast path until a change
/// polices one of their ends; established ones stay there.
#[test]
fn updates_flip_exactly_the_affected_flows_on_ebpf() {
    updates_under_traffic(false, "bridge", "ebpf");
}

#[test]
fn updates_flip_exactly_the_affected_flows_in_ptp_mode_on_ebpf() {
    updates_under_traffic(false, "ptp", "ebpf");
}

#[test]
fn with_cut_established_on_ebpf_newly_denied_connections_stop() {
    updates_under_traffic(true, "bridge", "ebpf");
}
