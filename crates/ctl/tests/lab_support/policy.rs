//! Waiting until every node's weftd enforces the datastore's current policy: weftd's
//! `policy-sync` request (one JSON line on its socket) loads the policy view now, applies
//! it, and answers once it is committed to the kernel.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::Value;

use super::Lab;

/// Asks `policy-sync` of every node's weftd in the lab's record; each node's policy status
/// (its `status` reply field), or what went wrong where.
pub fn policy_sync(lab: &Lab) -> Result<Vec<Value>, String> {
    lab.node_names()
        .iter()
        .map(|node| {
            let path = lab.state_dir().join(format!("nodes/{node}/run/weftd.sock"));
            let fail = |e: std::io::Error| format!("{}: {e}", path.display());
            let mut s = UnixStream::connect(&path).map_err(fail)?;
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .map_err(fail)?;
            s.write_all(b"{\"op\":\"policy-sync\"}\n").map_err(fail)?;
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).map_err(fail)?;
            let reply: Value = serde_json::from_str(line.trim())
                .map_err(|e| format!("{node}: reply {line:?}: {e}"))?;
            if reply["ok"] == true {
                Ok(reply["status"].clone())
            } else {
                Err(format!("{node}: {reply}"))
            }
        })
        .collect()
}
