//! Records every program that a process and all its descendants execute, with the kernel's
//! own `sched_process_exec` tracepoint in a tracefs instance of its own (so it does not
//! disturb, nor is disturbed by, other users of ftrace). The instance follows this process's
//! pid and, through `event-fork`, every process forked from it from then on.
//!
//! Only successful execs are seen: a program that is missing fails its exec, and the test
//! that ran it fails by itself.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

const TRACEFS: &str = "/sys/kernel/tracing";
/// Per-CPU ring size: room for bursts while the reader sleeps.
const BUFFER_KB: &str = "8192";

/// A running recording; [`Watch::finish`] ends it.
pub struct Watch {
    dir: PathBuf,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<io::Result<BTreeSet<PathBuf>>>>,
}

/// What a recording saw.
#[derive(Debug)]
pub struct Recording {
    pub programs: BTreeSet<PathBuf>,
    /// Events the ring dropped (overrun): the list may be incomplete when non-zero.
    pub lost: u64,
}

impl Watch {
    /// Starts recording the execs of this process's future children. `tag` names the
    /// instance (with this pid, so that concurrent recordings do not meet).
    pub fn start(tag: &str) -> io::Result<Watch> {
        let root = tracefs()?;
        remove_orphans(&root.join("instances"), tag);
        let dir = root
            .join("instances")
            .join(format!("{tag}-{}", std::process::id()));
        fs::create_dir(&dir).map_err(|e| context(&dir, e))?;
        let mut watch = Watch {
            dir,
            stop: Arc::new(AtomicBool::new(false)),
            reader: None,
        };
        // On an error below, dropping `watch` removes the instance again.
        watch.write("buffer_size_kb", BUFFER_KB)?;
        // Follow this pid before the event is on, so nothing else is ever recorded.
        watch.write("set_event_pid", &std::process::id().to_string())?;
        watch.write("options/event-fork", "1")?;
        watch.write("events/sched/sched_process_exec/enable", "1")?;
        let pipe = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(watch.dir.join("trace_pipe"))
            .map_err(|e| context(&watch.dir, e))?;
        let stop = Arc::clone(&watch.stop);
        watch.reader = Some(std::thread::spawn(move || read_pipe(pipe, &stop)));
        Ok(watch)
    }

    /// Stops recording and returns what was seen.
    pub fn finish(mut self) -> io::Result<Recording> {
        self.write("events/sched/sched_process_exec/enable", "0")?;
        self.stop.store(true, Ordering::SeqCst);
        let programs = match self.reader.take().map(JoinHandle::join) {
            Some(Ok(r)) => r?,
            Some(Err(_)) => return Err(io::Error::other("trace reader panicked")),
            None => BTreeSet::new(),
        };
        let lost = self.lost()?;
        Ok(Recording { programs, lost })
    }

    fn lost(&self) -> io::Result<u64> {
        let mut lost = 0;
        for entry in fs::read_dir(self.dir.join("per_cpu"))? {
            let stats = fs::read_to_string(entry?.path().join("stats"))?;
            for line in stats.lines() {
                if let Some(n) = line
                    .strip_prefix("overrun:")
                    .or_else(|| line.strip_prefix("dropped events:"))
                {
                    lost += n.trim().parse::<u64>().unwrap_or(0);
                }
            }
        }
        Ok(lost)
    }

    fn write(&self, file: &str, value: &str) -> io::Result<()> {
        let path = self.dir.join(file);
        fs::write(&path, value).map_err(|e| context(&path, e))
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        // Removing an instance frees its buffers; it fails while a reader has it open.
        let _ = fs::remove_dir(&self.dir);
    }
}

/// Removes the instances of recordings whose process is gone (killed before its drop ran):
/// each holds its ring buffers until removed. Best effort.
fn remove_orphans(instances: &Path, tag: &str) {
    let Ok(entries) = fs::read_dir(instances) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(tag))
            .and_then(|n| n.strip_prefix('-'))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir(entry.path());
        }
    }
}

/// The tracefs mount, mounted where the kernel expects it when it is not yet.
fn tracefs() -> io::Result<PathBuf> {
    let root = PathBuf::from(TRACEFS);
    if root.join("instances").is_dir() {
        return Ok(root);
    }
    let c = |s: &str| std::ffi::CString::new(s).map_err(io::Error::other);
    let (src, target, fstype) = (c("nodev")?, c(TRACEFS)?, c("tracefs")?);
    // SAFETY: plain C strings that live across the call; no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(context(&root, io::Error::last_os_error()));
    }
    Ok(root)
}

fn read_pipe(mut pipe: File, stop: &AtomicBool) -> io::Result<BTreeSet<PathBuf>> {
    let mut programs = BTreeSet::new();
    let mut pending = String::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        // Read the flag before the read: after `stop`, one read that finds the pipe empty
        // means everything recorded has been taken.
        let stopping = stop.load(Ordering::SeqCst);
        match pipe.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => {
                pending.push_str(&String::from_utf8_lossy(&buf[..n]));
                while let Some(end) = pending.find('\n') {
                    let line: String = pending.drain(..=end).collect();
                    if let Some((file, pid)) = exec_event(&line) {
                        programs.insert(absolute(file, pid));
                    }
                }
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        if stopping {
            return Ok(programs);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The program and pid of one `sched_process_exec` line of trace output.
pub fn exec_event(line: &str) -> Option<(&str, u32)> {
    let rest = line.split_once("sched_process_exec: filename=")?.1;
    let end = rest.rfind(" pid=")?;
    let pid = rest[end + 5..].split_whitespace().next()?.parse().ok()?;
    Some((&rest[..end], pid))
}

/// A relative filename is relative to the process's working directory at its exec: the
/// process's own view of its executable says which file that was, while it lives.
fn absolute(file: &str, pid: u32) -> PathBuf {
    let path = PathBuf::from(file);
    if path.is_absolute() {
        return path;
    }
    fs::read_link(format!("/proc/{pid}/exe"))
        .or_else(|_| std::env::current_dir().map(|d| d.join(&path)))
        .unwrap_or(path)
}

fn context(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_tracepoint_line() {
        let l = "  ip-17851   [001] .....   436.578177: sched_process_exec: \
                 filename=/usr/sbin/ip pid=17851 old_pid=17851\n";
        assert_eq!(exec_event(l), Some(("/usr/sbin/ip", 17851)));
        assert_eq!(exec_event("  <idle>-0 [000] sched_switch: prev"), None);
    }
}
