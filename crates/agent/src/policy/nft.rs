//! Running `nft`: one script as one atomic transaction, and reading the table back for its
//! counters. The agent may spawn `nft` (the plugins may not); it runs on a blocking thread
//! so the control loop is not held by a slow commit.

use std::io::Write;
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

/// Packets dropped by each chain's `counter drop` rule in `inet <table>`: chain → packets.
pub async fn drop_counters(table: String) -> Result<Vec<(String, u64)>, String> {
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
        Ok(parse_drop_counters(&v))
    })
    .await
    .map_err(|e| format!("nft thread failed: {e}"))?
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
}
