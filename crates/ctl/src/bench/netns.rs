//! The benchmark's network namespaces: named ones under `/run/netns`, as a runtime makes them,
//! created before any timing starts and removed when the set is dropped.
//!
//! Creation and removal go through one `ip -batch` process each (not one `ip` per namespace):
//! with a few hundred pods that is the difference between milliseconds and seconds of setup.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::error::{BenchError, Result};

/// Where `ip netns` keeps its bind mounts.
const NETNS_DIR: &str = "/run/netns";

/// Path of a named network namespace.
pub fn path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(name)
}

/// Opens a named namespace, for `setns(2)` (the fd is close-on-exec, so plugins don't inherit it).
pub fn open(name: &str) -> Result<File> {
    let path = path(name);
    File::open(&path).map_err(BenchError::io(format!("opening netns {}", path.display())))
}

/// Named network namespaces owned by this run; dropping the set deletes them all.
#[derive(Debug)]
pub struct NetnsSet {
    names: Vec<String>,
}

impl NetnsSet {
    /// Creates every namespace in `names`, and brings `lo` up in each (a runtime does too).
    ///
    /// The names are recorded before anything is created, so a failure half-way still removes
    /// whatever did get created.
    pub fn create(names: Vec<String>) -> Result<Self> {
        let set = NetnsSet { names };
        let mut script = String::new();
        for name in &set.names {
            script.push_str(&format!("netns add {name}\n"));
        }
        ip_batch(&script, false, "create")?;
        for name in &set.names {
            lo_up(name)?;
        }
        Ok(set)
    }

    /// Takes ownership of namespaces that already exist (a crashed run's leftovers).
    pub fn adopt(names: Vec<String>) -> Self {
        NetnsSet { names }
    }

    /// Deletes the namespaces now, reporting failure (Drop does the same, silently).
    pub fn remove(mut self) -> Result<()> {
        let names = std::mem::take(&mut self.names);
        remove_names(&names)
    }
}

impl Drop for NetnsSet {
    fn drop(&mut self) {
        if let Err(err) = remove_names(&self.names) {
            eprintln!("weftctl: cleanup: {err}");
        }
    }
}

/// `ip -batch` lines take no `-n`, so `lo` comes up over netlink, in-process.
fn lo_up(name: &str) -> Result<()> {
    let fail = |err: weft_net::Error| BenchError::Io {
        what: format!("bringing lo up in netns {name}: {err}"),
        source: std::io::Error::other(err.to_string()),
    };
    let ns = weft_net::NetNs::open(&path(name)).map_err(fail)?;
    let mut handle = weft_net::Handle::new_in(&ns).map_err(fail)?;
    match handle.link_by_name("lo").map_err(fail)? {
        Some(lo) => handle.set_up(lo.index).map_err(fail),
        None => Ok(()),
    }
}

fn remove_names(names: &[String]) -> Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    // Only names that still exist: a partial create or an earlier removal is not an error.
    let script: String = names
        .iter()
        .filter(|name| path(name).exists())
        .map(|name| format!("netns del {name}\n"))
        .collect();
    if script.is_empty() {
        return Ok(());
    }
    ip_batch(&script, true, "delete")
}

/// Runs `ip -batch -` on `script`; `force` keeps going past a failing line.
fn ip_batch(script: &str, force: bool, action: &'static str) -> Result<()> {
    let mut cmd = Command::new("ip");
    if force {
        cmd.arg("-force");
    }
    let mut child = cmd
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(BenchError::io(
            "running `ip -batch` (is iproute2 installed?)",
        ))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(BenchError::io("writing to `ip -batch`"))?;
    }
    let output = child
        .wait_with_output()
        .map_err(BenchError::io("waiting for `ip -batch`"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(BenchError::Netns {
            action,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}
