//! The plugin log: one JSON line per invocation, appended with O_APPEND so concurrent plugin
//! processes never interleave within a line. Logging never fails a verb.

use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};
use weft_cni::skel::Outcome;

pub fn append(path: &Path, plugin: &str, o: &Outcome) {
    let time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let mut line = json!({
        "time": time,
        "plugin": plugin,
        "command": o.command.as_deref().unwrap_or(""),
        "containerID": o.container_id.as_deref().unwrap_or(""),
        "ifname": o.ifname.as_deref().unwrap_or(""),
        "network": o.config.as_ref().and_then(|c| c.get("name")).cloned().unwrap_or_default(),
        "durationMs": (o.duration.as_secs_f64() * 1e6).round() / 1e3,
        "outcome": if o.error.is_none() { "ok" } else { "error" },
    });
    if let Some(e) = &o.error {
        line["code"] = json!(e.code);
        line["msg"] = json!(e.msg);
    }
    let mut text = line.to_string();
    text.push('\n');
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        // One write call per line: O_APPEND makes it atomic with respect to other writers.
        let _ = f.write_all(text.as_bytes());
    }
}

/// A warning about a verb that still succeeds, as its own line in the plugin log.
pub fn warn(req: &weft_cni::Request, msg: &str) {
    let Some(path) = crate::config::log_file(Some(&req.config)) else {
        return;
    };
    let time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let line = json!({
        "time": time,
        "plugin": "weft",
        "level": "warning",
        "containerID": req.container_id,
        "ifname": req.ifname,
        "msg": msg,
    });
    write_line(path.as_path(), line.to_string());
}

fn write_line(path: &Path, mut text: String) {
    text.push('\n');
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(text.as_bytes());
    }
}
