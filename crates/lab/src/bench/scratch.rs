//! A private temp directory for a run's files (IPAM data, logs, etcd data), removed on drop.

use std::fs;
use std::path::{Path, PathBuf};

use super::error::{BenchError, Result};

/// A directory under the system temp dir that this run created and will remove.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
    keep: bool,
}

impl ScratchDir {
    /// Creates `<tmp>/<prefix><pid>`; refuses to reuse an existing one, which would belong to
    /// another run (or a crashed one whose data must not mix into our figures).
    pub fn create(prefix: &str) -> Result<Self> {
        Self::create_in(&std::env::temp_dir(), prefix)
    }

    /// [`ScratchDir::create`] under `base` (e.g. `/dev/shm`, for an etcd whose every commit
    /// is an fsync: the benchmark measures weft, not the disk).
    pub fn create_in(base: &Path, prefix: &str) -> Result<Self> {
        let path = base.join(format!("{prefix}{}", std::process::id()));
        fs::create_dir(&path).map_err(BenchError::io(format!(
            "creating temp dir {}",
            path.display()
        )))?;
        Ok(ScratchDir { path, keep: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Leaves the directory in place when dropped (for looking at logs afterwards).
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("weftctl: kept {}", self.path.display());
            return;
        }
        if let Err(err) = fs::remove_dir_all(&self.path) {
            eprintln!("weftctl: cleanup: removing {}: {err}", self.path.display());
        }
    }
}
