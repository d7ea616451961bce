//! The runtime side of CNI: executes a network configuration (a conflist, or a single plugin
//! config) the way libcni does — plugin lookup in `CNI_PATH`, injected `name`/`cniVersion`,
//! `runtimeConfig` from capability arguments, `prevResult` threading, DEL in reverse order.
//! Used by `weftctl`, the benchmarks and the tests; the plugins themselves never need it.

// ExecError carries the plugin's whole stderr for people to read; it is built once per failed
// process execution, so its size costs nothing worth boxing for.
#![allow(clippy::result_large_err)]

use crate::error::CniError;
use serde_json::{Map, Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What identifies one attachment of a container to a network.
#[derive(Debug, Clone, Default)]
pub struct Attachment {
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub cni_args: Option<String>,
    /// Capability arguments (`portMappings`, `mac`, `ips`, `bandwidth`, …).
    pub capability_args: Map<String, Value>,
}

/// A plugin failed; `code` is `None` when it printed no CNI error object.
#[derive(Debug, Clone)]
pub struct ExecError {
    pub plugin: String,
    pub command: String,
    pub code: Option<u32>,
    pub msg: String,
    pub details: String,
    pub stderr: String,
}

impl std::fmt::Display for ExecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "plugin {} {} failed", self.plugin, self.command)?;
        if let Some(c) = self.code {
            write!(f, " with code {c}")?;
        }
        write!(f, ": {}", self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        if !self.stderr.trim().is_empty() {
            write!(f, "; stderr: {}", self.stderr.trim())?;
        }
        Ok(())
    }
}

impl std::error::Error for ExecError {}

type Customize = Box<dyn Fn(&mut Command) + Send + Sync>;

/// Executes plugins found in `cni_path`. `customize` may adjust each child process (e.g. a
/// `pre_exec` that enters a test's node namespace).
#[derive(Default)]
pub struct Runtime {
    pub cni_path: Vec<PathBuf>,
    pub customize: Option<Customize>,
}

impl Runtime {
    pub fn new(cni_path: Vec<PathBuf>) -> Runtime {
        Runtime {
            cni_path,
            customize: None,
        }
    }

    pub fn find(&self, plugin_type: &str) -> Result<PathBuf, ExecError> {
        let err = |msg: String| ExecError {
            plugin: plugin_type.to_string(),
            command: String::new(),
            code: None,
            msg,
            details: String::new(),
            stderr: String::new(),
        };
        if plugin_type.is_empty() || plugin_type.contains('/') || plugin_type.contains('\\') {
            return Err(err(format!("invalid plugin type \"{plugin_type}\"")));
        }
        self.cni_path
            .iter()
            .map(|d| d.join(plugin_type))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                err(format!(
                    "failed to find plugin \"{plugin_type}\" in CNI_PATH"
                ))
            })
    }

    /// Executes one plugin verb with `stdin`; returns its stdout parsed as JSON (or Null).
    pub fn exec(
        &self,
        plugin_type: &str,
        command: &str,
        att: Option<&Attachment>,
        stdin: &[u8],
    ) -> Result<Value, ExecError> {
        let bin = self.find(plugin_type)?;
        let mut cmd = Command::new(&bin);
        let path = join_path(&self.cni_path);
        cmd.env("CNI_COMMAND", command).env("CNI_PATH", &path);
        match att {
            Some(a) => {
                cmd.env("CNI_CONTAINERID", &a.container_id)
                    .env("CNI_NETNS", &a.netns)
                    .env("CNI_IFNAME", &a.ifname)
                    .env("CNI_ARGS", a.cni_args.as_deref().unwrap_or(""));
            }
            None => {
                for k in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS"] {
                    cmd.env(k, "");
                }
            }
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(c) = &self.customize {
            c(&mut cmd);
        }
        let fail = |msg: String, stderr: String, code: Option<u32>, details: String| ExecError {
            plugin: plugin_type.to_string(),
            command: command.to_string(),
            code,
            msg,
            details,
            stderr,
        };
        let mut child = spawn_retrying(&mut cmd).map_err(|e| {
            fail(
                format!("cannot execute {}: {e}", bin.display()),
                String::new(),
                None,
                String::new(),
            )
        })?;
        if let Some(mut input) = child.stdin.take() {
            // A plugin may exit without reading stdin (VERSION); a broken pipe is not an error.
            let _ = input.write_all(stdin);
        }
        let out = child.wait_with_output().map_err(|e| {
            fail(
                format!("waiting for {}: {e}", bin.display()),
                String::new(),
                None,
                String::new(),
            )
        })?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let parsed: Option<Value> = if stdout.trim().is_empty() {
            None
        } else {
            serde_json::from_str(stdout.trim()).ok()
        };
        if !out.status.success() {
            return Err(match parsed.as_ref().and_then(CniError::from_json) {
                Some(e) => fail(e.msg, stderr, Some(e.code), e.details),
                None => fail(
                    format!("exited with {} and printed {:?}", out.status, stdout.trim()),
                    stderr,
                    None,
                    String::new(),
                ),
            });
        }
        match (stdout.trim().is_empty(), parsed) {
            (true, _) => Ok(Value::Null),
            (false, Some(v)) => Ok(v),
            (false, None) => Err(fail(
                format!("printed something that is not JSON: {:?}", stdout.trim()),
                stderr,
                None,
                String::new(),
            )),
        }
    }

    pub fn add(&self, netconf: &Value, att: &Attachment) -> Result<Value, ExecError> {
        let (version, name, plugins) = split(netconf)?;
        let mut prev: Option<Value> = None;
        for p in &plugins {
            let stdin = request(p, &version, &name, Some(att), prev.as_ref(), None);
            prev = Some(self.exec(type_of(p), "ADD", Some(att), &stdin)?);
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    pub fn check(&self, netconf: &Value, att: &Attachment, prev: &Value) -> Result<(), ExecError> {
        let (version, name, plugins) = split(netconf)?;
        for p in &plugins {
            let stdin = request(p, &version, &name, Some(att), Some(prev), None);
            self.exec(type_of(p), "CHECK", Some(att), &stdin)?;
        }
        Ok(())
    }

    pub fn del(
        &self,
        netconf: &Value,
        att: &Attachment,
        prev: Option<&Value>,
    ) -> Result<(), ExecError> {
        let (version, name, plugins) = split(netconf)?;
        // Before 0.4.0 DEL carried no prevResult.
        let prev = if version.starts_with("0.3") {
            None
        } else {
            prev
        };
        for p in plugins.iter().rev() {
            let stdin = request(p, &version, &name, Some(att), prev, None);
            self.exec(type_of(p), "DEL", Some(att), &stdin)?;
        }
        Ok(())
    }

    pub fn gc(&self, netconf: &Value, valid: &[(String, String)]) -> Result<(), Vec<ExecError>> {
        let (version, name, plugins) = split(netconf).map_err(|e| vec![e])?;
        let list: Vec<Value> = valid
            .iter()
            .map(|(id, ifname)| json!({"containerID": id, "ifname": ifname}))
            .collect();
        let mut errors = Vec::new();
        for p in &plugins {
            let stdin = request(p, &version, &name, None, None, Some(&list));
            if let Err(e) = self.exec(type_of(p), "GC", None, &stdin) {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    pub fn status(&self, netconf: &Value) -> Result<(), ExecError> {
        let (version, name, plugins) = split(netconf)?;
        for p in &plugins {
            let stdin = request(p, &version, &name, None, None, None);
            self.exec(type_of(p), "STATUS", None, &stdin)?;
        }
        Ok(())
    }
}

fn join_path(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d: &PathBuf| d.as_path())
        .map(Path::to_string_lossy)
        .collect::<Vec<_>>()
        .join(":")
}

fn type_of(p: &Value) -> &str {
    p.get("type").and_then(Value::as_str).unwrap_or("")
}

/// (cniVersion, name, plugin objects) of a conflist or of a single plugin config.
fn split(netconf: &Value) -> Result<(String, String, Vec<Value>), ExecError> {
    let bad = |msg: &str| ExecError {
        plugin: String::new(),
        command: String::new(),
        code: None,
        msg: msg.to_string(),
        details: String::new(),
        stderr: String::new(),
    };
    let version = netconf
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or("0.1.0")
        .to_string();
    let name = netconf
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("network configuration has no name"))?
        .to_string();
    let plugins = match netconf.get("plugins") {
        Some(Value::Array(list)) if !list.is_empty() => list.clone(),
        Some(_) => return Err(bad("conflist has no plugins")),
        None => vec![netconf.clone()],
    };
    Ok((version, name, plugins))
}

fn request(
    plugin: &Value,
    version: &str,
    name: &str,
    att: Option<&Attachment>,
    prev: Option<&Value>,
    gc_list: Option<&[Value]>,
) -> Vec<u8> {
    let mut obj = plugin.as_object().cloned().unwrap_or_default();
    obj.insert("cniVersion".into(), json!(version));
    obj.insert("name".into(), json!(name));
    if let Some(att) = att {
        let caps = plugin.get("capabilities").and_then(Value::as_object);
        let mut rc = Map::new();
        if let Some(caps) = caps {
            for (cap, on) in caps {
                if on.as_bool() == Some(true)
                    && let Some(v) = att.capability_args.get(cap)
                {
                    rc.insert(cap.clone(), v.clone());
                }
            }
        }
        if !rc.is_empty() {
            obj.insert("runtimeConfig".into(), Value::Object(rc));
        }
    }
    if let Some(prev) = prev.filter(|p| !p.is_null()) {
        obj.insert("prevResult".into(), prev.clone());
    }
    if let Some(list) = gc_list {
        obj.insert(
            "cni.dev/valid-attachments".into(),
            Value::Array(list.to_vec()),
        );
        obj.insert("cni.dev/attachments".into(), Value::Array(list.to_vec()));
    }
    serde_json::to_vec(&Value::Object(obj)).unwrap_or_default()
}

/// Spawns `cmd`, retrying a few times on "text file busy" (`ETXTBSY`): a plugin binary just
/// written by another thread can still be open for writing in a child that has forked but not
/// yet exec'd. libcni retries the same way (`pkg/invoke/raw_exec.go`).
pub fn spawn_retrying(cmd: &mut Command) -> std::io::Result<std::process::Child> {
    let mut tries = 0u64;
    loop {
        match cmd.spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 5 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10 * tries));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_injects_name_version_and_capabilities() {
        let p = json!({"type": "portmap", "capabilities": {"portMappings": true, "mac": false}});
        let mut att = Attachment::default();
        att.capability_args
            .insert("portMappings".into(), json!([{"hostPort": 8080}]));
        att.capability_args
            .insert("mac".into(), json!("aa:bb:cc:dd:ee:ff"));
        let v: Value = serde_json::from_slice(&request(
            &p,
            "1.0.0",
            "net",
            Some(&att),
            Some(&json!({"ips": []})),
            None,
        ))
        .unwrap();
        assert_eq!(v["name"], "net");
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
        assert!(v["runtimeConfig"].get("mac").is_none());
        assert!(v.get("prevResult").is_some());
    }

    #[test]
    fn single_config_is_a_one_plugin_list() {
        let (v, n, p) =
            split(&json!({"cniVersion": "1.1.0", "name": "x", "type": "weft"})).unwrap();
        assert_eq!((v.as_str(), n.as_str(), p.len()), ("1.1.0", "x", 1));
        assert!(split(&json!({"name": "x", "plugins": []})).is_err());
    }
}
