//! Running `nft`: one script as one atomic transaction, and reading the table back for its
//! counters. The agent may spawn `nft` (the plugins may not); it runs on a blocking thread
//! so the control loop is not held by a slow commit.

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use serde_json::Value;

/// Give `script` to `nft -f -`; Err carries nft's complaint.
pub async fn apply(script: String) -> Result<(), String> {
    tokio::task::spawn_blocking(move || apply_blocking(&script))
        .await
        .map_err(|e| format!("nft thread failed: {e}"))?
}

fn apply_blocking(script: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| format!("writing to nft: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft -f failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// What the kernel counted as denied in `inet <table>`.
#[derive(Debug, Default, PartialEq)]
pub struct Denied {
    /// Packets dropped by each chain's `counter drop` rule: chain → packets.
    pub chains: Vec<(String, u64)>,
    /// Per-pod counters: (set, pod address, packets, bytes) for every element of the
    /// `denied_*` sets (`weft_policy::plan::Role::Counted`).
    pub pods: Vec<(String, IpAddr, u64, u64)>,
}

/// Reads the table's drop counters (one `nft -j list table`).
pub async fn drop_counters(table: String) -> Result<Denied, String> {
    tokio::task::spawn_blocking(move || {
        let out = Command::new("nft")
            .args(["-j", "list", "table", "inet", &table])
            .output()
            .map_err(|e| format!("cannot run nft: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "nft list table inet {table}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let v: Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("nft -j output unreadable: {e}"))?;
        Ok(Denied {
            chains: parse_drop_counters(&v),
            pods: parse_element_counters(&v),
        })
    })
    .await
    .map_err(|e| format!("nft thread failed: {e}"))?
}

/// From `nft -j list table`: the elements of the `denied_*` sets with their counters.
pub fn parse_element_counters(v: &Value) -> Vec<(String, IpAddr, u64, u64)> {
    let mut out = Vec::new();
    let items = v.get("nftables").and_then(Value::as_array);
    for item in items.into_iter().flatten() {
        let Some(set) = item.get("set") else {
            continue;
        };
        let Some(name) = set.get("name").and_then(Value::as_str) else {
            continue;
        };
        if !name.starts_with("denied_") {
            continue;
        }
        for e in set
            .get("elem")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(elem) = e.get("elem") else {
                continue;
            };
            let addr = elem
                .get("val")
                .and_then(Value::as_str)
                .and_then(|a| a.parse().ok());
            let counter = elem.get("counter");
            let count = |k: &str| counter.and_then(|c| c.get(k)).and_then(Value::as_u64);
            if let (Some(addr), Some(packets), Some(bytes)) =
                (addr, count("packets"), count("bytes"))
            {
                out.push((name.to_string(), addr, packets, bytes));
            }
        }
    }
    out
}

/// From `nft -j list table`: for each rule with a counter followed by `drop`, its chain and
/// packet count (summed per chain).
pub fn parse_drop_counters(v: &Value) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    let items = v
        .get("nftables")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for item in items {
        let Some(rule) = item.get("rule") else {
            continue;
        };
        let Some(exprs) = rule.get("expr").and_then(Value::as_array) else {
            continue;
        };
        let drops = exprs.iter().any(|e| e.get("drop").is_some());
        let packets = exprs
            .iter()
            .find_map(|e| e.get("counter")?.get("packets")?.as_u64());
        let (true, Some(packets)) = (drops, packets) else {
            continue;
        };
        let chain = rule
            .get("chain")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        match out.iter_mut().find(|(c, _)| *c == chain) {
            Some((_, n)) => *n += packets,
            None => out.push((chain, packets)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_of_drop_rules_per_chain() {
        let v: Value = serde_json::from_str(
            r#"{"nftables":[{"metainfo":{}},
            {"rule":{"family":"inet","table":"t","chain":"ci_1","handle":3,
              "expr":[{"counter":{"packets":7,"bytes":420}},{"drop":null}]}},
            {"rule":{"family":"inet","table":"t","chain":"pod_ingress","handle":4,
              "expr":[{"match":{}},{"counter":{"packets":2,"bytes":1}},{"drop":null}]}},
            {"rule":{"family":"inet","table":"t","chain":"pod_ingress","handle":5,
              "expr":[{"counter":{"packets":1,"bytes":1}},{"drop":null}]}},
            {"rule":{"family":"inet","table":"t","chain":"ai_1","handle":6,
              "expr":[{"match":{}},{"accept":null}]}}]}"#,
        )
        .unwrap();
        assert_eq!(
            parse_drop_counters(&v),
            vec![("ci_1".to_string(), 7), ("pod_ingress".to_string(), 3)]
        );
    }

    #[test]
    fn counters_of_pods_from_the_denied_sets() {
        // As nft 1.0.6 prints a set declared with `counter;`.
        let v: Value = serde_json::from_str(
            r#"{"nftables":[{"metainfo":{}},
            {"set":{"family":"inet","name":"denied_in4","table":"t","type":"ipv4_addr",
              "elem":[{"elem":{"val":"10.0.0.2","counter":{"packets":2,"bytes":168}}},
                      {"elem":{"val":"10.0.0.3","counter":{"packets":0,"bytes":0}}}],
              "stmt":[{"counter":null}]}},
            {"set":{"family":"inet","name":"known4","table":"t","type":"ipv4_addr",
              "elem":["10.0.0.2"]}}]}"#,
        )
        .unwrap();
        let ip = |a: &str| a.parse::<IpAddr>().unwrap();
        assert_eq!(
            parse_element_counters(&v),
            vec![
                ("denied_in4".to_string(), ip("10.0.0.2"), 2, 168),
                ("denied_in4".to_string(), ip("10.0.0.3"), 0, 0)
            ]
        );
    }
}
