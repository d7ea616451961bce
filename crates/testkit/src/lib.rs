//! weft-testkit: what Weft's tests share, and nothing else — never in a binary.
//!
//! Owns: [`TestNs`], a throw-away named network namespace (created with `ip`, so the
//! scaffolding is never the code under test); [`run`] and friends for the commands tests
//! inspect the kernel with; [`is_root`], [`assert_root`] and [`require_root!`]; [`temp_dir`]
//! and [`TempDir`]; [`Rng`], the replayable PRNG of randomized tests; and [`etcd`], a real
//! etcd on loopback and a test PKI; [`kube`], a real kube-apiserver (and controller manager)
//! on top of such an etcd; [`tcp`], a server that tells a client where it saw it from.
//! (NetworkPolicy worlds are `weft_policy::testing`: they
//! are made of weft-policy's types.) And the guard that keeps a fresh machine passing:
//! [`execwatch`] records every program a command and its descendants execute (the kernel's
//! `sched_process_exec` tracepoint), [`installs`] tells which Debian package each comes from
//! and whether the set-up scripts install it; the `exec-guard` binary runs the test suite
//! under both (`scripts/test.sh`).
//!
//! Must not: be anything but a dev-dependency (and the optional dependency of weft-policy's
//! `testing` feature, which only dev-dependencies enable); depend on any crate of weft (their
//! tests use the kit: a dev-dependency cycle would build two copies of the crate under
//! test); touch anything it did not make (every name carries the caller's prefix and the
//! process id); send traffic anywhere but loopback and its own namespaces.

pub mod etcd;
pub mod execwatch;
pub mod installs;
pub mod kube;
mod netns;
pub mod tcp;

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub use netns::TestNs;

/// `cmd args…` with no stdin, which must succeed; returns stdout. Panics with the command and
/// its stderr otherwise.
#[track_caller]
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A process's status and both its outputs, for an assertion message.
pub fn text(out: &Output) -> String {
    format!(
        "status {}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd` with `stdin` written to it, stdout and stderr captured.
pub fn output_with_stdin(mut cmd: Command, stdin: &str) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut pipe = child.stdin.take().expect("piped stdin");
    pipe.write_all(stdin.as_bytes()).expect("write stdin");
    drop(pipe);
    child.wait_with_output().expect("wait for the child")
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// For tests that cannot mean anything without root: fail, saying why.
#[track_caller]
pub fn assert_root() {
    assert!(
        is_root(),
        "these tests need root (they create network namespaces)"
    );
}

/// For kernel tests that skip without root: say so loudly instead of failing obscurely.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::is_root() {
            eprintln!("SKIPPED: needs root (creates network namespaces)");
            return;
        }
    };
}

/// A new empty directory, unique across processes and threads, on tmpfs (`/dev/shm`) when
/// there is one: etcd and IPAM fsync, and tests need not wait for a disk.
pub fn temp_dir(tag: &str) -> io::Result<PathBuf> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let base = Path::new("/dev/shm");
    let base = if base.is_dir() {
        base.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = base.join(format!(
        "weft-test-{tag}-{}-{}-{nanos}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A small deterministic PRNG (xorshift64*), so randomized tests replay exactly.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Seeded from `WEFT_SEED`, else from the clock; says which, so a failure can be replayed.
    pub fn from_env_or_time(what: &str) -> Rng {
        let seed = std::env::var("WEFT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0)
                    | 1
            });
        eprintln!("{what}: seed {seed} (rerun with WEFT_SEED={seed})");
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// A [`temp_dir`] removed, with everything in it, on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        TempDir(temp_dir(tag).unwrap_or_else(|e| panic!("making a temp dir for {tag}: {e}")))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
