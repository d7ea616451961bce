//! A private temp directory for the plugins' IPAM data and logs, removed on drop.

use std::fs;
use std::path::{Path, PathBuf};

use super::error::{BenchError, Result};

/// A directory under the system temp dir that this run created and will remove.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates `<tmp>/<prefix><pid>`; refuses to reuse an existing one, which would belong to
    /// another run (or a crashed one whose data must not mix into our figures).
    pub fn create(prefix: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!("{prefix}{}", std::process::id()));
        fs::create_dir(&path).map_err(BenchError::io(format!(
            "creating temp dir {}",
            path.display()
        )))?;
        Ok(ScratchDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(err) = fs::remove_dir_all(&self.path) {
            eprintln!("weftctl: cleanup: removing {}: {err}", self.path.display());
        }
    }
}
