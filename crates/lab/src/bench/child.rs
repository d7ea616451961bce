//! Processes a benchmark runs inside one of its namespaces (etcd, weftd, iperf3 and sockperf
//! servers), tied to this run's life.
//!
//! Started through `ip netns exec` (the namespace's own `/sys` as well as its network, as the
//! lab does), with stdio on a log file. Each child asks the kernel for SIGKILL when weftctl
//! dies (`PR_SET_PDEATHSIG`), so not even a SIGKILLed run leaves a daemon behind; the Drop
//! guard kills and reaps it on every ordinary way out. They stay in weftctl's process group,
//! so a Ctrl-C in the terminal reaches them too.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::error::{BenchError, Result};

/// A child process in a namespace; killed and reaped on drop.
#[derive(Debug)]
pub struct Daemon {
    label: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    /// Starts `program args…` inside netns `netns`, stdout and stderr appended to `log`.
    pub fn spawn(
        label: impl Into<String>,
        netns: &str,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> Result<Daemon> {
        let label = label.into();
        let open = || {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map_err(BenchError::io(format!("opening {}", log.display())))
        };
        let (out, err) = (open()?, open()?);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        die_with_parent(&mut cmd);
        let child = cmd.spawn().map_err(BenchError::io(format!(
            "starting {label} ({}) in netns {netns}",
            program.display()
        )))?;
        Ok(Daemon {
            label,
            child: Some(child),
            log: log.to_owned(),
        })
    }

    /// The process id (`ip netns exec` execs the program in place, so it is the program's).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// An error saying this daemon died, with the end of its log.
    pub fn died(&mut self) -> BenchError {
        let status = self
            .exited()
            .map_or_else(|| "still running".to_owned(), |s| s.to_string());
        BenchError::Daemon {
            what: self.label.clone(),
            reason: format!("exited ({status})"),
            tail: self.log_tail(),
        }
    }

    /// The last lines of the log, for error messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log, 12)
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`; reaps it. Returns its exit
    /// status (None if it had to be killed).
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill(2) on our own, not yet reaped child: the pid cannot be reused.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Makes the child receive SIGKILL when this process's main thread ends. Children must be
/// spawned from the main thread (the death signal follows the thread that forked).
pub fn die_with_parent(cmd: &mut Command) {
    let parent = std::process::id();
    // SAFETY: prctl(2) and getppid(2) are async-signal-safe; nothing else runs between fork
    // and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(std::io::Error::other(
                    "weftctl exited while starting a child",
                ));
            }
            Ok(())
        });
    }
}

/// The last `lines` non-empty lines of a log file (at most its last 8 KiB).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(8192)));
    let mut buf = Vec::new();
    let _ = file.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let tail: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .rev()
        .take(lines)
        .collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// Runs `ip ARGS…` to completion (dies with us); a failure carries its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    run("ip", args)
}

/// Runs `program ARGS…` to completion (dies with us); a failure carries its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<()> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    die_with_parent(&mut cmd);
    let out = cmd
        .output()
        .map_err(BenchError::io(format!("running {program}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(BenchError::Command {
            what: format!("{program} {}", args.join(" ")),
            status: out.status.to_string(),
            output: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}
