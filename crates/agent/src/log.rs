//! weftd's log: one JSON object per line on stderr (a DaemonSet's log collector or journald
//! picks it up), with a timestamp, a level, a message and structured fields.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

fn emit(level: &str, msg: &str, fields: &[(&str, Value)]) {
    let mut obj = Map::new();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    obj.insert("time".into(), Value::from((now * 1000.0).round() / 1000.0));
    obj.insert("level".into(), level.into());
    obj.insert("msg".into(), msg.into());
    for (k, v) in fields {
        obj.insert((*k).into(), v.clone());
    }
    let mut line = Value::Object(obj).to_string();
    line.push('\n');
    // A closed stderr must not take the agent down with it.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

pub fn info(msg: &str, fields: &[(&str, Value)]) {
    emit("info", msg, fields);
}

pub fn warn(msg: &str, fields: &[(&str, Value)]) {
    emit("warn", msg, fields);
}

pub fn error(msg: &str, fields: &[(&str, Value)]) {
    emit("error", msg, fields);
}
