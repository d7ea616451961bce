//! [`TestNs`]: a named network namespace for one test, made and removed with `ip netns`.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;

use crate::run;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A named network namespace (`/run/netns/<name>`) with `lo` up, deleted on drop, also when
/// the test panics.
#[derive(Debug)]
pub struct TestNs {
    pub name: String,
    deleted: bool,
}

impl TestNs {
    /// A fresh namespace named `<prefix><pid>x<n>`: the prefix says which tests made it, the
    /// pid and counter keep concurrent tests and test processes apart.
    pub fn new(prefix: &str) -> TestNs {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        TestNs::named(format!("{prefix}{}x{n}", std::process::id()))
    }

    /// A fresh namespace called exactly `name`; a leftover of that name (a killed earlier run
    /// with the same pid) is removed first.
    pub fn named(name: String) -> TestNs {
        del(&name);
        run("ip", &["netns", "add", &name]);
        let ns = TestNs {
            name,
            deleted: false,
        };
        // Loopback up, as a runtime leaves a pod's: local addresses and pings behave.
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// The namespace file, for `setns(2)`.
    pub fn file(&self) -> File {
        let path = self.path();
        File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
    }

    /// `ip -n <ns> args…`, which must succeed; returns stdout.
    #[track_caller]
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// `ip netns exec <ns> cmd…`.
    pub fn output(&self, cmd: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("spawn ip netns exec {} {cmd:?}: {e}", self.name))
    }

    /// `ip netns exec <ns> cmd…`: whether it succeeded, and stdout then stderr.
    pub fn exec(&self, cmd: &[&str]) -> (bool, String) {
        let out = self.output(cmd);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// `ip netns exec <ns> cmd…`, which must succeed; returns stdout.
    #[track_caller]
    pub fn exec_ok(&self, cmd: &[&str]) -> String {
        let out = self.output(cmd);
        assert!(
            out.status.success(),
            "in {}: {cmd:?} failed: {}\n{}{}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `f` on a fresh thread that has joined this namespace, and waits for it.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f).join().expect("thread in netns panicked")
    }

    /// Runs `f` on a fresh thread that has joined this namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let file = self.file();
        std::thread::spawn(move || {
            // SAFETY: setns on the calling thread with a namespace fd we own.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            drop(file);
            f()
        })
    }

    /// `ip netns del` now (a pod whose namespace vanished before its DEL).
    pub fn delete(&mut self) {
        del(&self.name);
        self.deleted = true;
    }

    /// Whether [`TestNs::delete`] removed it already.
    pub fn is_deleted(&self) -> bool {
        self.deleted
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        if !self.deleted {
            del(&self.name);
        }
    }
}

fn del(name: &str) {
    let _ = Command::new("ip")
        .args(["netns", "del", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
