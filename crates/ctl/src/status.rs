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
use serde_json::Value;
use weft_proto::{Request, ask};

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
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("cannot ask weftd at {socket}: {detail} (is weftd running on this node?)")]
    Unreachable { socket: String, detail: String },
    #[error("weftd at {socket} refused the status request: {detail}")]
    Refused { socket: String, detail: String },
}

/// weftd's status object, from its socket.
pub fn fetch(socket: &Path) -> Result<Value, StatusError> {
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
    Ok(reply.status.unwrap_or(Value::Null))
}

pub fn run(args: &StatusArgs) -> Result<(), StatusError> {
    let st = fetch(&args.socket)?;
    print(&st, args.output);
    Ok(())
}

pub fn print(st: &Value, output: Output) {
    match output {
        Output::Json => println!("{st}"),
        Output::Text => print!("{}", render(st)),
    }
}

fn list(v: &Value) -> String {
    match v.as_array() {
        Some(a) if !a.is_empty() => a
            .iter()
            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "none".to_owned(),
    }
}

fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

/// The status as a few lines a person reads.
pub fn render(st: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node {}: lease {}, datastore {}",
        text(&st["node"]),
        text(&st["lease"]),
        if st["datastoreReachable"] == true {
            "reachable"
        } else {
            "UNREACHABLE"
        }
    );
    let _ = writeln!(
        out,
        "  blocks {}; pod MTU {}; peers {}",
        list(&st["blocks"]),
        text(&st["podMtu"]),
        text(&st["peers"])
    );
    let p = &st["policy"];
    if p.is_null() {
        return out;
    }
    let _ = writeln!(
        out,
        "  policy: {} at revision {}; {} policies, {} local pods; {} classes, {} chains, {} rules, {} elements",
        if p["inSync"] == true {
            "in sync"
        } else {
            "NOT in sync"
        },
        text(&p["revision"]),
        text(&p["policies"]),
        text(&p["endpoints"]),
        text(&p["classes"]),
        text(&p["chains"]),
        text(&p["rules"]),
        text(&p["elements"]),
    );
    let c = &p["lastChange"];
    if c["mode"].as_str().is_some_and(|m| !m.is_empty()) {
        let _ = writeln!(
            out,
            "  last change: {} ms ({}, {} ops via {}; compile {} ms, persist {} ms, commit {} ms)",
            text(&c["totalMs"]),
            text(&c["mode"]),
            text(&c["ops"]),
            text(&c["via"]),
            text(&c["compileMs"]),
            text(&c["persistMs"]),
            text(&c["nftMs"]),
        );
    }
    for key in ["lastError", "counterError"] {
        if let Some(e) = p[key].as_str() {
            let _ = writeln!(out, "  {key}: {e}");
        }
    }
    if let Some(u) = p["unenforceable"].as_array().filter(|u| !u.is_empty()) {
        let _ = writeln!(
            out,
            "  unenforceable (macvlan) pods: {}",
            list(&Value::from(u.clone()))
        );
    }
    let pods = p["deniedPods"].as_array().cloned().unwrap_or_default();
    let denied: Vec<&Value> = pods
        .iter()
        .filter(|d| d["packets"].as_u64() > Some(0))
        .collect();
    if denied.is_empty() {
        let _ = writeln!(out, "  denied: no packets");
    }
    for d in denied {
        let _ = writeln!(
            out,
            "  denied {} {} ({}): {} packets, {} bytes; policies {}",
            d["direction"].as_str().unwrap_or("?"),
            d["pod"].as_str().unwrap_or("?"),
            text(&d["address"]),
            text(&d["packets"]),
            text(&d["bytes"]),
            list(&d["policies"]),
        );
    }
    if let Some(n) = p["deniedUnknownPods"].as_u64().filter(|n| *n > 0) {
        let _ = writeln!(out, "  denied, pod address not programmed: {n} packets");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_names_the_node_the_policy_state_and_each_denied_pod() {
        let st = json!({
            "node": "n1", "lease": 42, "blocks": ["10.244.0.0/26"], "podMtu": 1450,
            "peers": 2, "datastoreReachable": false,
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
        });
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
    fn an_absent_weftd_is_a_clear_error() {
        let e = fetch(Path::new("/nonexistent/weft/weftd.sock")).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("/nonexistent/weft/weftd.sock") && msg.contains("is weftd running"),
            "{msg}"
        );
    }
}
