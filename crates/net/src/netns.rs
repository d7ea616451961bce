//! Network namespaces as open file handles.
//!
//! A `NetNs` holds the namespace file open, so the namespace stays alive and the handle
//! stays valid even if the bind mount is removed meanwhile. Entering a namespace with
//! `setns` changes only the calling thread; `run` always switches back, also when the
//! closure panics, because a thread left in a pod's namespace would silently program the
//! wrong network for everything it does afterwards.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};
use nix::sys::stat::fstat;
use nix::sys::statfs::fstatfs;

use crate::error::{Error, Result};

const NSFS_MAGIC: i64 = 0x6e73_6673;
const PROC_SUPER_MAGIC: i64 = 0x9fa0;
/// `_IO(0xb7, 0x3)` from linux/nsfs.h: asks an nsfs file which namespace type it is.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

#[derive(Debug)]
pub struct NetNs {
    file: File,
    path: PathBuf,
}

impl NetNs {
    /// Opens a network namespace file (`/var/run/netns/X`, `/proc/<pid>/ns/net`).
    /// Anything else — a regular file, an unmounted bind-mount target, another namespace
    /// type — is `Error::NotNetns`, so a stale CNI_NETNS never ends up as the host's.
    pub fn open(path: &Path) -> Result<NetNs> {
        let file = File::open(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => Error::NotFound {
                what: format!("netns {}", path.display()),
            },
            _ => Error::io(format!("open netns {}", path.display()), e),
        })?;
        let not_netns = || Error::NotNetns {
            path: path.to_owned(),
        };
        let fs = fstatfs(&file)
            .map_err(|e| Error::io(format!("fstatfs {}", path.display()), e.into()))?;
        let magic = fs.filesystem_type().0 as i64;
        if magic != NSFS_MAGIC && magic != PROC_SUPER_MAGIC {
            return Err(not_netns());
        }
        // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd we own.
        let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
        if kind != libc::CLONE_NEWNET {
            return Err(not_netns());
        }
        Ok(NetNs {
            file,
            path: path.to_owned(),
        })
    }

    /// The calling thread's current network namespace.
    pub fn current() -> Result<NetNs> {
        NetNs::open(Path::new("/proc/thread-self/ns/net"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// The namespace's identity: the device and inode of its nsfs file, the same whichever
    /// path (a bind mount, `/proc/<pid>/ns/net`) it was opened by, and never shared with
    /// another namespace while this one lives.
    pub fn id(&self) -> Result<(u64, u64)> {
        let st = fstat(&self.file)
            .map_err(|e| Error::io(format!("fstat {}", self.path.display()), e.into()))?;
        Ok((st.st_dev, st.st_ino))
    }

    /// True when both handles name the same namespace (same nsfs inode).
    pub fn same_as(&self, other: &NetNs) -> Result<bool> {
        Ok(self.id()? == other.id()?)
    }

    /// Runs `f` on this thread with the thread inside this namespace, then moves the
    /// thread back to the namespace it was in, even if `f` panics (a failed switch back
    /// while unwinding aborts the process). An `Err` with op "setns" after `f` ran means
    /// the switch back failed: treat it as fatal for the thread.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> Result<T> {
        let original = NetNs::current()?;
        enter(self)?;
        let guard = Restore {
            original: Some(original),
        };
        let value = f();
        guard.finish()?;
        Ok(value)
    }
}

fn enter(ns: &NetNs) -> Result<()> {
    setns(ns.fd(), CloneFlags::CLONE_NEWNET).map_err(|e| Error::Kernel {
        op: "setns",
        context: ns.path.display().to_string(),
        errno: e as i32,
        ext_ack: None,
        source: io::Error::from(e),
    })
}

/// Returns the thread to its original namespace when dropped (the panic path).
struct Restore {
    original: Option<NetNs>,
}

impl Restore {
    fn finish(mut self) -> Result<()> {
        match self.original.take() {
            Some(ns) => enter(&ns),
            None => Ok(()),
        }
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        if let Some(ns) = self.original.take()
            && enter(&ns).is_err()
        {
            // Unwinding with the thread stuck in another namespace would let the caller
            // keep working against the wrong network; stopping is the only safe answer.
            std::process::abort();
        }
    }
}
