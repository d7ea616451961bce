//! `weftctl status`: what a node's weftd says about itself — lease, blocks, pod MTU, peers,
//! the datastore, and NetworkPolicy (in sync or not, the plan's size, the last change and
//! how it was committed, denied packets per pod and policy) — read from its socket
//! (`status`), for a person (text) or a script (`-o json`, weftd's own object).
//!
//! Must not change anything: it only asks.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use weft_proto::{ApplyMode, Request, Status, ask};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// weftd's socket (its `--run-dir` + `/weftd.sock`).
    #[arg(long, default_value = "/run/weft/weftd.sock", value_name = "PATH")]
    pub socket: PathBuf,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// The whole cluster from its Kubernetes API instead of this node's weftd.
    #[command(flatten)]
    pub kube: crate::policy::KubeArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("cannot ask weftd at {socket}: {detail} (is weftd running on this node?)")]
    Unreachable { socket: String, detail: String },
    #[error("weftd at {socket} refused the status request: {detail}")]
    Refused { socket: String, detail: String },
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
}

/// weftd's status, from its socket.
pub fn fetch(socket: &Path) -> Result<Status, StatusError> {
    let reply = ask(socket, &Request::Status, Duration::from_secs(5)).map_err(|e| {
        StatusError::Unreachable {
            socket: socket.display().to_string(),
            detail: e.to_string(),
        }
    })?;
    if !reply.ok {
        return Err(StatusError::Refused {
            socket: socket.display().to_string(),
            detail: reply.error.unwrap_or_default(),
        });
    }
    reply
        .status
        .map(|s| *s)
        .ok_or_else(|| StatusError::Refused {
            socket: socket.display().to_string(),
            detail: "the reply holds no status".into(),
        })
}

pub fn run(args: &StatusArgs) -> Result<(), StatusError> {
    if args.kube.chosen() {
        return Ok(crate::cluster::run(&args.kube, args.output)?);
    }
    let st = fetch(&args.socket)?;
    print(&st, args.output);
    Ok(())
}

pub fn print(st: &Status, output: Output) {
    match output {
        Output::Json => println!("{}", json(st)),
        Output::Text => print!("{}", render(st)),
    }
}

/// The status as weftd sent it: one JSON object (`-o json`).
pub fn json(st: &Status) -> String {
    // A struct of strings, numbers and addresses always serialises.
    serde_json::to_string(st).unwrap_or_default()
}

fn list<T: std::fmt::Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "none".to_owned();
    }
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The status as a few lines a person reads.
pub fn render(st: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node {}: lease {}, datastore {}",
        st.node,
        st.lease,
        if st.datastore_reachable {
            "reachable"
        } else {
            "UNREACHABLE"
        }
    );
    let _ = writeln!(
        out,
        "  blocks {}; pod MTU {}; peers {}",
        list(&st.blocks),
        st.pod_mtu
            .map_or_else(|| "unknown".to_owned(), |m| m.to_string()),
        st.peers
    );
    if let Some(d) = &st.datapath {
        let _ = write!(out, "  datapath: {}", d.active);
        if d.active != d.requested {
            let _ = write!(out, " (asked for {})", d.requested);
        }
        if d.active == "ebpf" {
            let _ = write!(
                out,
                "; program {} on {} pod veths; {} addresses ({} policed); {} packets redirected, {} passed",
                d.program_id
                    .map_or_else(|| "?".to_owned(), |i| i.to_string()),
                d.attached,
                d.endpoints,
                d.policed,
                d.redirected,
                d.passed
            );
            let _ = write!(
                out,
                "; uplink {}{} with {} peer blocks: {} to peers, {} from peers, {} kernel flows, {} kept established, {} cut",
                d.uplink.as_deref().unwrap_or("none"),
                d.tunnel
                    .as_deref()
                    .map_or_else(String::new, |t| format!(" and {t}")),
                d.peers,
                d.to_peer,
                d.from_peer,
                d.kernel_flow,
                d.kept,
                d.cut
            );
        }
        let _ = writeln!(out);
        if !d.maps.is_empty() {
            let maps: Vec<String> = d
                .maps
                .iter()
                .map(|m| format!("{} {}/{}", m.name, m.entries, m.max_entries))
                .collect();
            let _ = writeln!(out, "  datapath maps: {}", maps.join(", "));
        }
        if let Some(e) = &d.error {
            let _ = writeln!(out, "  datapath ERROR: {e}");
        }
    }
    let p = &st.policy;
    let _ = writeln!(
        out,
        "  policy: {} at revision {}; {} policies, {} local pods; {} classes, {} chains, {} rules, {} elements",
        if p.in_sync { "in sync" } else { "NOT in sync" },
        p.revision,
        p.policies,
        p.endpoints,
        p.classes,
        p.chains,
        p.rules,
        p.elements,
    );
    let c = &p.last_change;
    if c.mode != ApplyMode::None {
        let _ = writeln!(
            out,
            "  last change: {} ms ({}, {} ops via {}; compile {} ms, persist {} ms, commit {} ms)",
            c.total_ms,
            c.mode.as_str(),
            c.ops,
            c.via.as_str(),
            c.compile_ms,
            c.persist_ms,
            c.nft_ms,
        );
    }
    for (key, e) in [
        ("lastError", &p.last_error),
        ("counterError", &p.counter_error),
    ] {
        if let Some(e) = e {
            let _ = writeln!(out, "  {key}: {e}");
        }
    }
    if !p.unenforceable.is_empty() {
        let _ = writeln!(
            out,
            "  unenforceable (macvlan) pods: {}",
            list(&p.unenforceable)
        );
    }
    let denied: Vec<_> = p.denied_pods.iter().filter(|d| d.packets > 0).collect();
    if denied.is_empty() {
        let _ = writeln!(out, "  denied: no packets");
    }
    for d in denied {
        let _ = writeln!(
            out,
            "  denied {} {} ({}): {} packets, {} bytes; policies {}",
            d.direction.as_str(),
            d.pod.as_deref().unwrap_or("?"),
            d.address,
            d.packets,
            d.bytes,
            list(&d.policies),
        );
    }
    if p.denied_unknown_pods > 0 {
        let _ = writeln!(
            out,
            "  denied, pod address not programmed: {} packets",
            p.denied_unknown_pods
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_names_the_node_the_policy_state_and_each_denied_pod() {
        let st: Status = serde_json::from_value(json!({
            "node": "n1", "lease": 42, "blocks": ["10.244.0.0/26"], "podMtu": 1450,
            "peers": 2, "datastoreReachable": false,
            "datapath": {"requested": "ebpf", "active": "nft",
                "error": "/sys/fs/bpf/weft: not on a bpffs"},
            "policy": {"inSync": true, "revision": 17, "policies": 3, "endpoints": 4,
                "classes": 2, "chains": 9, "rules": 30, "elements": 50,
                "lastChange": {"mode": "incremental", "totalMs": 0.8, "ops": 3,
                    "via": "netlink", "compileMs": 0.4, "persistMs": 0.1, "nftMs": 0.3},
                "deniedPods": [
                    {"pod": "shop/db", "address": "10.244.0.2", "direction": "ingress",
                     "policies": ["shop/deny-all"], "packets": 5, "bytes": 300},
                    {"pod": "shop/web", "address": "10.244.0.3", "direction": "ingress",
                     "policies": ["shop/deny-all"], "packets": 0, "bytes": 0}],
                "deniedUnknownPods": 0}
        }))
        .unwrap();
        let t = render(&st);
        assert!(
            t.contains("node n1: lease 42, datastore UNREACHABLE"),
            "{t}"
        );
        assert!(
            t.contains("blocks 10.244.0.0/26; pod MTU 1450; peers 2"),
            "{t}"
        );
        assert!(t.contains("policy: in sync at revision 17"), "{t}");
        assert!(t.contains("datapath: nft (asked for ebpf)"), "{t}");
        assert!(
            t.contains("datapath ERROR: /sys/fs/bpf/weft: not on a bpffs"),
            "{t}"
        );
        assert!(t.contains("3 ops via netlink"), "{t}");
        assert!(
            t.contains(
                "denied ingress shop/db (10.244.0.2): 5 packets, 300 bytes; policies shop/deny-all"
            ),
            "{t}"
        );
        assert!(
            !t.contains("shop/web"),
            "pods with nothing denied are not listed: {t}"
        );
    }

    #[test]
    fn ebpf_text_names_the_arrival_devices_and_each_maps_fill() {
        let st: Status = serde_json::from_value(json!({
            "node": "n1",
            "datapath": {"requested": "ebpf", "active": "ebpf", "programId": 7, "attached": 2,
                "endpoints": 2, "uplink": "eth0", "tunnel": "weft.vx", "peers": 3,
                "maps": [{"name": "weft_endpoints", "entries": 2, "maxEntries": 65536},
                         {"name": "weft_kernel_flows", "entries": 65536, "maxEntries": 65536}]}
        }))
        .unwrap();
        let t = render(&st);
        assert!(
            t.contains("uplink eth0 and weft.vx with 3 peer blocks"),
            "{t}"
        );
        assert!(
            t.contains("datapath maps: weft_endpoints 2/65536, weft_kernel_flows 65536/65536"),
            "{t}"
        );
    }

    /// `weftctl status -o json` prints weftd's whole document: every key of it, camelCase,
    /// absent values as null. A key that disappears (renamed, skipped when empty) fails here.
    #[test]
    fn json_output_keeps_every_key() {
        let out: serde_json::Value = serde_json::from_str(&json(&Status::default())).unwrap();
        let keys = |v: &serde_json::Value| -> Vec<String> {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(
            keys(&out),
            [
                "blocks",
                "datapath",
                "datastoreReachable",
                "lease",
                "node",
                "peers",
                "podMtu",
                "policy"
            ]
        );
        assert_eq!(
            keys(&out["policy"]),
            [
                "chains",
                "classes",
                "counterError",
                "cutEstablished",
                "denied",
                "deniedPods",
                "deniedUnknownPods",
                "elements",
                "endpoints",
                "inSync",
                "lastApply",
                "lastChange",
                "lastCut",
                "lastError",
                "policies",
                "revision",
                "rules",
                "table",
                "unenforceable",
                "viewLoaded"
            ]
        );
        for timing in ["lastApply", "lastChange"] {
            assert_eq!(
                keys(&out["policy"][timing]),
                [
                    "compileMs",
                    "endpointsFed",
                    "loadMs",
                    "mode",
                    "nftMs",
                    "ops",
                    "persistMs",
                    "policiesFed",
                    "totalMs",
                    "via",
                    "worldMs"
                ]
            );
        }
        assert_eq!(
            keys(&out["policy"]["lastCut"]),
            ["cut", "entries", "released"]
        );
        assert_eq!(out["podMtu"], serde_json::Value::Null);
        assert_eq!(out["policy"]["lastError"], serde_json::Value::Null);
        // A weftd from before the datapath setting: null, and no line for it.
        assert_eq!(out["datapath"], serde_json::Value::Null);
        assert!(!render(&Status::default()).contains("datapath"));
    }

    #[test]
    fn an_absent_weftd_is_a_clear_error() {
        let e = fetch(Path::new("/nonexistent/weft/weftd.sock")).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("/nonexistent/weft/weftd.sock") && msg.contains("is weftd running"),
            "{msg}"
        );
    }
}
