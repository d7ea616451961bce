//! weft's own account of its time: the `durationMs` of each line of its JSON-lines log.
//!
//! Wall time per exec (what the targets use) includes fork/exec, the dynamic loader and
//! process teardown; the plugin's self-reported duration does not. Showing both says where
//! the milliseconds go: in weft's code, or in getting a process started at all.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::error::{BenchError, Result};

/// Current size of the log, to read only what a phase adds after it. Missing = 0.
pub fn offset(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Self-reported ADD and DEL durations of the log lines written since `from`.
pub fn durations_since(path: &Path, from: u64) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let context = || format!("reading weft log {}", path.display());
    let mut file = File::open(path).map_err(BenchError::io(context()))?;
    file.seek(SeekFrom::Start(from))
        .map_err(BenchError::io(context()))?;
    let (mut add, mut del) = (Vec::new(), Vec::new());
    for line in BufReader::new(file).lines() {
        let line = line.map_err(BenchError::io(context()))?;
        // A line we can't read is the plugin's business (and its own tests'); skip it.
        let Some((command, ms)) = parse_line(&line) else {
            continue;
        };
        match command.as_str() {
            "ADD" => add.push(ms),
            "DEL" => del.push(ms),
            _ => {}
        }
    }
    Ok((add, del))
}

fn parse_line(line: &str) -> Option<(String, Duration)> {
    let v: Value = serde_json::from_str(line).ok()?;
    if v.get("outcome").and_then(Value::as_str) != Some("ok") {
        return None;
    }
    let command = v.get("command")?.as_str()?.to_owned();
    let ms = v.get("durationMs")?.as_f64()?;
    (ms.is_finite() && ms >= 0.0).then(|| (command, Duration::from_secs_f64(ms / 1e3)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ok_lines_only() {
        let ok = r#"{"command":"ADD","durationMs":2.5,"outcome":"ok"}"#;
        let (cmd, d) = parse_line(ok).unwrap();
        assert_eq!(cmd, "ADD");
        assert_eq!(d, Duration::from_micros(2500));
        assert!(parse_line(r#"{"command":"ADD","durationMs":2.5,"outcome":"error"}"#).is_none());
        assert!(parse_line("not json").is_none());
        assert!(parse_line(r#"{"command":"DEL","outcome":"ok"}"#).is_none());
    }
}
