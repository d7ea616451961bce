//! Executing a CNI plugin exactly as a container runtime does, and the timed phases built on it.
//!
//! Each exec gets a clean environment with the `CNI_*` variables and the config on stdin, and
//! starts in the bench's node namespace, the way a runtime's own process lives in the host
//! namespace. The wall time of one exec runs from spawn to reaped exit with stdout read: what
//! a runtime waits for.
//!
//! The child is spawned the way Go's `os/exec` (containerd, CRI-O) spawns it: by
//! `posix_spawn`, a `clone(CLONE_VM|CLONE_VFORK)` that copies no page tables. A closure
//! between fork and exec would force a real `fork(2)` of this whole process, a cost that grows
//! with weftctl's own memory and belongs to no plugin. So the spawning thread itself enters
//! the node namespace before the clock starts (the child inherits it) and returns to its own
//! after the clock stops.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::config;
use super::error::{BenchError, Result};
use super::signal;

/// `PATH` for the plugins: the reference bridge runs `iptables` for `ipMasq`.
const PLUGIN_PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One pod sandbox: a container id and its network namespace.
#[derive(Debug, Clone)]
pub struct Pod {
    pub index: usize,
    pub container_id: String,
    pub netns: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Add,
    Del,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Add => "ADD",
            Verb::Del => "DEL",
        }
    }
}

/// A plugin binary with its config, bound to a node namespace.
#[derive(Debug)]
pub struct Plugin {
    pub label: String,
    binary: PathBuf,
    cni_path: OsString,
    config: Value,
    add_stdin: Vec<u8>,
    node: File,
}

impl Plugin {
    pub fn new(
        label: impl Into<String>,
        binary: PathBuf,
        cni_path: OsString,
        config: Value,
        node: File,
    ) -> Self {
        let add_stdin = config.to_string().into_bytes();
        Plugin {
            label: label.into(),
            binary,
            cni_path,
            config,
            add_stdin,
            node,
        }
    }

    /// ADD for one pod: its wall time and the parsed result (needed for the DEL's `prevResult`).
    pub fn add(&self, pod: &Pod) -> Result<(Duration, Value)> {
        let (elapsed, stdout) = self.exec(Verb::Add, pod, &self.add_stdin)?;
        let result = check_add_result(&stdout).map_err(|reason| BenchError::BadResult {
            plugin: self.label.clone(),
            pod: pod.index,
            reason,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
        })?;
        Ok((elapsed, result))
    }

    /// DEL for one pod, with the ADD's result as `prevResult` when we have it.
    pub fn del(&self, pod: &Pod, prev_result: Option<&Value>) -> Result<Duration> {
        // Built before the clock starts: the runtime's own work is not the plugin's.
        let stdin = config::with_prev_result(&self.config, prev_result).to_string();
        let (elapsed, _) = self.exec(Verb::Del, pod, stdin.as_bytes())?;
        Ok(elapsed)
    }

    fn exec(&self, verb: Verb, pod: &Pod, stdin: &[u8]) -> Result<(Duration, Vec<u8>)> {
        signal::check()?;
        let mut cmd = Command::new(&self.binary);
        cmd.env_clear()
            .env("CNI_COMMAND", verb.as_str())
            .env("CNI_CONTAINERID", &pod.container_id)
            .env("CNI_NETNS", &pod.netns)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", &self.cni_path)
            .env("PATH", PLUGIN_PATH_ENV)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let in_node = ThreadInNetns::enter(&self.node)?;

        let start = Instant::now();
        let mut child = cmd.spawn().map_err(BenchError::io(format!(
            "executing {} {}",
            self.binary.display(),
            verb.as_str()
        )))?;
        if let Some(mut pipe) = child.stdin.take() {
            // A plugin that exits without reading its config closes the pipe: its exit status
            // below tells the story, so a broken pipe here is not the error to report.
            let _ = pipe.write_all(stdin);
        }
        let output = child.wait_with_output().map_err(BenchError::io(format!(
            "waiting for {} {}",
            self.binary.display(),
            verb.as_str()
        )))?;
        let elapsed = start.elapsed();
        in_node.leave()?;

        if !output.status.success() {
            signal::check()?;
            return Err(BenchError::PluginFailed {
                plugin: self.label.clone(),
                verb: verb.as_str(),
                pod: pod.index,
                netns: pod.netns.clone(),
                status: output.status,
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        Ok((elapsed, output.stdout))
    }
}

/// The calling thread moved into a network namespace until `leave` (or drop) moves it back.
/// `setns(2)` on a network namespace changes only the calling thread's; children spawned
/// from it start there.
struct ThreadInNetns {
    home: Option<File>,
}

impl ThreadInNetns {
    fn enter(ns: &File) -> Result<Self> {
        let home = File::open("/proc/thread-self/ns/net")
            .map_err(BenchError::io("opening this thread's network namespace"))?;
        // SAFETY: setns(2) on an open namespace fd; it touches only this thread's state.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(BenchError::io("entering the node namespace")(
                std::io::Error::last_os_error(),
            ));
        }
        Ok(ThreadInNetns { home: Some(home) })
    }

    fn leave(mut self) -> Result<()> {
        self.back()
            .map_err(BenchError::io("returning to this thread's own namespace"))
    }

    fn back(&mut self) -> std::io::Result<()> {
        let Some(home) = self.home.take() else {
            return Ok(());
        };
        // SAFETY: as in `enter`, with the namespace this thread started in.
        if unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for ThreadInNetns {
    fn drop(&mut self) {
        // A thread left in a bench namespace would run every later step there.
        if self.back().is_err() {
            eprintln!("weftctl bench: cannot return a thread to its network namespace; stopping");
            std::process::abort();
        }
    }
}

/// A successful ADD prints a result with at least one address; anything else is a bug we
/// must not time as a success.
fn check_add_result(stdout: &[u8]) -> std::result::Result<Value, String> {
    let value: Value = serde_json::from_slice(stdout).map_err(|err| format!("not JSON: {err}"))?;
    match value.get("ips").and_then(Value::as_array) {
        Some(ips) if !ips.is_empty() => Ok(value),
        _ => Err("no `ips` in the result".to_owned()),
    }
}

/// Sequential ADD×N then DEL×N.
#[derive(Debug, Default)]
pub struct Sequential {
    pub add: Vec<Duration>,
    pub del: Vec<Duration>,
    pub add_wall: Duration,
    pub del_wall: Duration,
}

/// One pod at a time: every ADD, then every DEL (a runtime starting, then stopping, N pods).
pub fn sequential(plugin: &Plugin, pods: &[Pod]) -> Result<Sequential> {
    let mut out = Sequential::default();
    let mut results = Vec::with_capacity(pods.len());
    let start = Instant::now();
    for pod in pods {
        let (elapsed, result) = plugin.add(pod)?;
        out.add.push(elapsed);
        results.push(result);
    }
    out.add_wall = start.elapsed();

    let start = Instant::now();
    for (pod, result) in pods.iter().zip(&results) {
        out.del.push(plugin.del(pod, Some(result))?);
    }
    out.del_wall = start.elapsed();
    Ok(out)
}

/// Churn: `workers` threads, each taking every `workers`-th pod and doing ADD then DEL on it.
#[derive(Debug, Default)]
pub struct Churn {
    pub add: Vec<Duration>,
    pub del: Vec<Duration>,
    pub wall: Duration,
}

pub fn churn(plugin: &Plugin, pods: &[Pod], workers: usize) -> Result<Churn> {
    let workers = workers.max(1);
    let stop = AtomicBool::new(false);
    let collected = Mutex::new(Churn::default());

    let start = Instant::now();
    let outcomes: Vec<Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let (stop, collected) = (&stop, &collected);
                scope.spawn(move || {
                    let mut add = Vec::new();
                    let mut del = Vec::new();
                    let share = pods.iter().skip(w).step_by(workers);
                    let outcome = churn_worker(plugin, share, stop, &mut add, &mut del);
                    if outcome.is_err() {
                        stop.store(true, Ordering::Relaxed);
                    }
                    if let Ok(mut c) = collected.lock() {
                        c.add.extend(add);
                        c.del.extend(del);
                    }
                    outcome
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Err(BenchError::WorkerPanicked)))
            .collect()
    });
    let wall = start.elapsed();

    // Prefer the first real failure over the "interrupted"/"stopped" fallout of others.
    if let Some(err) = outcomes.into_iter().filter_map(Result::err).next() {
        return Err(err);
    }
    let mut churn = collected
        .into_inner()
        .map_err(|_| BenchError::WorkerPanicked)?;
    churn.wall = wall;
    Ok(churn)
}

/// One churn worker: ADD then DEL for each of its pods, until done or told to stop.
fn churn_worker<'a>(
    plugin: &Plugin,
    share: impl Iterator<Item = &'a Pod>,
    stop: &AtomicBool,
    add: &mut Vec<Duration>,
    del: &mut Vec<Duration>,
) -> Result<()> {
    for pod in share {
        // Another worker failed: stop soon so its error surfaces.
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let (elapsed, result) = plugin.add(pod)?;
        add.push(elapsed);
        del.push(plugin.del(pod, Some(&result))?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_result_needs_ips() {
        assert!(check_add_result(br#"{"ips":[{"address":"10.0.0.2/16"}]}"#).is_ok());
        assert!(check_add_result(br#"{"ips":[]}"#).is_err());
        assert!(check_add_result(br#"{"code":7,"msg":"x"}"#).is_err());
        assert!(check_add_result(b"garbage").is_err());
    }
}
