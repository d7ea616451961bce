//! The lab's daemons (etcd, kube-apiserver and kube-controller-manager, one weftd per
//! node): starting them detached inside a namespace, finding them again, stopping them.
//!
//! A daemon is started through `ip netns exec`, which gives it the namespace's own view of
//! `/sys` as well as its network, in a session of its own (setsid: the person's Ctrl-C in the
//! terminal that ran `lab up` must not reach it), with stdio on its log file and its working
//! directory in the lab's state dir. `ip netns exec` execs the command in place, so the pid
//! we get is the daemon's, and it goes into a pidfile at once. A kubelet node's daemons
//! (containerd, kubelet, kube-proxy) enter the node's network and mount namespaces with
//! setns(2) instead (`Place::Node`): they need the host's `/sys` with its cgroup mounts.
//!
//! A pid alone is not trusted (pids are reused): a process counts as the lab's only while its
//! network namespace is one of the lab's, its cgroup one of the lab's kubelets' (a pod's
//! processes, in network namespaces of containerd's), or its cwd or command line lies in
//! the lab's state dir. `lab down` finds leftovers the same way, pidfile or not.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::error::{LabError, Result};
use crate::netns;

/// Command names of what the lab starts (`ip` is what a daemon is called until `ip netns exec`
/// execs it; the kernel keeps 15 bytes of a name: `kube-controller` is the manager).
const DAEMONS: &[&str] = &[
    "etcd",
    "weftd",
    "ip",
    "kube-apiserver",
    "kube-controller",
    "kube-scheduler",
    "containerd",
    "containerd-shim",
    "kubelet",
    "kube-proxy",
];

/// How to recognize the lab's processes.
#[derive(Debug, Clone)]
pub struct Owner {
    /// The lab's state dir: a process working or named there is the lab's.
    pub state_dir: PathBuf,
    /// Inodes of the lab's network namespaces: a process inside one is the lab's.
    pub netns_inodes: HashSet<u64>,
    /// What the cgroup paths of the lab's kubelets' pods start with (`/weft-lab.<lab>.`).
    cgroup_prefix: String,
    /// This process and its ancestors, never the lab's (a shell started by `lab exec` may
    /// run `lab down` itself).
    spared: HashSet<u32>,
}

impl Owner {
    /// The owner record of a lab whose namespaces start with `prefix`.
    pub fn new(state_dir: PathBuf, prefix: &str, lab: &str) -> Result<Owner> {
        let netns_inodes = netns::list()?
            .into_iter()
            .filter(|n| n.starts_with(prefix))
            .filter_map(|n| fs::metadata(netns::path(&n)).ok().map(|m| m.ino()))
            .collect();
        Ok(Owner {
            state_dir,
            netns_inodes,
            cgroup_prefix: format!("/{}", cgroup_prefix(lab)),
            spared: ancestors(),
        })
    }

    /// Whether `pid` is a live process of the lab: anything inside one of its namespaces,
    /// or one of the lab's daemons (by command name) working or named in its state dir —
    /// the latter finds a daemon whose namespace is already gone. A person's shell or `less`
    /// in the state dir is not the lab's.
    pub fn owns(&self, pid: u32) -> bool {
        if self.spared.contains(&pid) || !alive(pid) {
            return false;
        }
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        if let Ok(meta) = fs::metadata(proc_dir.join("ns/net"))
            && self.netns_inodes.contains(&meta.ino())
        {
            return true;
        }
        if fs::read_to_string(proc_dir.join("cgroup")).is_ok_and(|groups| {
            groups
                .lines()
                .filter_map(|l| l.splitn(3, ':').nth(2))
                .any(|path| path.starts_with(&self.cgroup_prefix))
        }) {
            return true;
        }
        let is_daemon = fs::read_to_string(proc_dir.join("comm"))
            .is_ok_and(|comm| DAEMONS.contains(&comm.trim_end()));
        if !is_daemon {
            return false;
        }
        if fs::read_link(proc_dir.join("cwd")).is_ok_and(|cwd| cwd.starts_with(&self.state_dir)) {
            return true;
        }
        // With the trailing '/': lab `weft` must not claim lab `weft2`'s daemons.
        let marker = format!("{}/", self.state_dir.display());
        fs::read(proc_dir.join("cmdline")).is_ok_and(|cmdline| {
            cmdline
                .split(|b| *b == 0)
                .any(|arg| String::from_utf8_lossy(arg).contains(marker.as_str()))
        })
    }

    /// Every live process of the lab.
    pub fn scan(&self) -> Vec<u32> {
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| self.owns(*pid))
            .collect()
    }
}

/// The name every cgroup of a lab's kubelets starts with (kubelet's cgroupRoot is
/// `/<this><node>`), in each hierarchy: `lab down` removes those directories.
pub fn cgroup_prefix(lab: &str) -> String {
    format!("weft-lab.{lab}.")
}

/// This process and its ancestors.
fn ancestors() -> HashSet<u32> {
    let mut set = HashSet::new();
    let mut pid = std::process::id();
    while pid > 1 && set.insert(pid) {
        pid = match parent_of(pid) {
            Some(p) => p,
            None => break,
        };
    }
    set
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Whether `pid` exists and is not a zombie (a killed daemon whose parent is gone may
/// linger as one under an init that does not reap).
pub fn alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, Some("Z" | "X" | "x"))
}

/// Where a daemon runs.
pub enum Place<'a> {
    /// In a named network namespace (through `ip netns exec`).
    Netns(&'a str),
    /// In a kubelet node: its network namespace and its view of the host's paths
    /// (`nodeview`), entered with setns(2).
    Node { netns: &'a str, mnt: &'a Path },
}

/// What to start.
pub struct Daemon<'a> {
    /// For messages: "etcd", "weftd on n1".
    pub label: String,
    pub place: Place<'a>,
    pub program: &'a Path,
    pub args: Vec<String>,
    pub cwd: &'a Path,
    pub log: &'a Path,
    pub pidfile: &'a Path,
}

/// Starts a daemon detached inside its namespace and records its pid.
pub fn spawn(d: &Daemon<'_>) -> Result<Child> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(d.log)
        .map_err(LabError::io(format!("opening {}", d.log.display())))?;
    let log2 = log
        .try_clone()
        .map_err(LabError::io(format!("opening {}", d.log.display())))?;
    let mut cmd = match d.place {
        Place::Netns(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns]).arg(d.program);
            cmd
        }
        Place::Node { .. } => Command::new(d.program),
    };
    cmd.args(&d.args)
        .current_dir(d.cwd)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    let entered = match d.place {
        Place::Netns(_) => None,
        Place::Node { netns, mnt } => {
            let open =
                |p: &Path| File::open(p).map_err(LabError::io(format!("opening {}", p.display())));
            let cwd = std::ffi::CString::new(d.cwd.as_os_str().as_encoded_bytes())
                .map_err(|_| LabError::invalid("path", d.cwd.display().to_string(), "NUL"))?;
            Some((open(mnt)?, open(&crate::netns::path(netns))?, cwd))
        }
    };
    // SAFETY: setsid(2), setns(2) and chdir(2) are async-signal-safe and touch only what
    // was opened and allocated before the fork; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some((mnt, net, cwd)) = &entered {
                use std::os::fd::AsRawFd;
                // The mount namespace first: entering it moves the root and the cwd to the
                // node's view, where the cwd is set again (the lab's state is bound there).
                if libc::setns(mnt.as_raw_fd(), libc::CLONE_NEWNS) < 0
                    || libc::setns(net.as_raw_fd(), libc::CLONE_NEWNET) < 0
                    || libc::chdir(cwd.as_ptr()) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(LabError::io(format!(
        "starting {} ({})",
        d.label,
        d.program.display()
    )))?;
    super::state::write_atomic(d.pidfile, format!("{}\n", child.id()).as_bytes())?;
    Ok(child)
}

/// The pid in a pidfile, if any.
pub fn read_pidfile(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Sends `signal` to each pid, then waits up to `grace` for all to be gone; survivors get
/// SIGKILL and another short wait. Returns the pids still alive at the end (normally none).
pub fn stop(pids: &[u32], signal: libc::c_int, grace: Duration) -> Vec<u32> {
    for &pid in pids {
        send(pid, signal);
    }
    let left = wait_gone(pids, grace);
    if left.is_empty() || signal == libc::SIGKILL {
        return left;
    }
    for &pid in &left {
        send(pid, libc::SIGKILL);
    }
    wait_gone(&left, Duration::from_secs(2))
}

fn send(pid: u32, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) with a concrete pid; an ESRCH (already gone) is what we want anyway.
        unsafe { libc::kill(pid, signal) };
    }
}

/// Waits until none of `pids` is alive or `within` passed; returns those still alive.
pub fn wait_gone(pids: &[u32], within: Duration) -> Vec<u32> {
    let deadline = Instant::now() + within;
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last non-empty line of a log, trimmed to a readable length.
pub fn log_tail(path: &Path) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    use std::io::{Read, Seek, SeekFrom};
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(4096)));
    let mut buf = Vec::new();
    let _ = file.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let line = line.trim();
    if line.chars().count() > 300 {
        let cut: String = line.chars().take(300).collect();
        format!("{cut}…")
    } else {
        line.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_spared() {
        assert!(alive(std::process::id()));
        assert!(ancestors().contains(&std::process::id()));
        assert!(!alive(u32::MAX));
    }

    #[test]
    fn log_tail_takes_the_last_line() {
        let dir = std::env::temp_dir().join(format!("weftctl-tail-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let log = dir.join("x.log");
        fs::write(&log, "first\nlast words\n\n").unwrap();
        assert_eq!(log_tail(&log), "last words");
        assert_eq!(log_tail(&dir.join("missing")), "");
        fs::remove_dir_all(&dir).unwrap();
    }
}
