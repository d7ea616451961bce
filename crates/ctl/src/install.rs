//! `weftctl install-cni --from DIR --to DIR NAME…`: puts the CNI plugins on a node. The
//! DaemonSet's init container runs it (deploy/weft.yaml): the image has no shell, so no `cp`
//! or `mv`, and a plain copy would not do anyway — the container runtime executes whatever is
//! in the node's CNI bin dir for every pod, at any instant, so a binary must never be seen
//! half written; and a binary that is running cannot be opened for writing (ETXTBSY), so an
//! upgrade must not write over the old file.
//!
//! Each file is copied to `.<name>.tmp-<pid>` in the target directory (same filesystem, so
//! the rename is atomic), fsynced, made 0755 and renamed over `<name>`; then the directory is
//! fsynced, so the new name survives a power loss. A pod that starts meanwhile executes either
//! the old file or the new one, whole.
//!
//! Must not: leave a temporary file behind when it fails, or touch any file of the target
//! directory but the names it was given and their temporary files.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use clap::Args;

#[derive(Debug, Args)]
pub struct InstallCniArgs {
    /// Where the plugin binaries are (in the image: /usr/local/bin).
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
    /// The node's CNI bin dir, as mounted into the container (created when missing).
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// The binaries to install, by file name.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{name:?} is not a file name (a plugin is named without a directory)")]
    BadName { name: String },
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> InstallError + use<> {
    let path = path.to_path_buf();
    move |source| InstallError::Io { what, path, source }
}

/// Installs every name, in order; says on stdout what it installed. Stops at the first
/// failure: the names before it are installed, the one that failed is as it was.
pub fn run(args: &InstallCniArgs) -> Result<(), InstallError> {
    // All names are checked before anything is written: a typo in the last one should not
    // leave a node with half of an upgrade.
    for name in &args.names {
        if !is_file_name(name) {
            return Err(InstallError::BadName { name: name.clone() });
        }
    }
    fs::create_dir_all(&args.to).map_err(io_err("creating", &args.to))?;
    for name in &args.names {
        let bytes = install_one(&args.from.join(name), &args.to, name)?;
        println!("installed {} ({bytes} bytes)", args.to.join(name).display());
    }
    Ok(())
}

/// A single path component that names a file.
fn is_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

/// Copies `src` to `dir/name` through a temporary file in `dir`; returns the size copied.
pub fn install_one(src: &Path, dir: &Path, name: &str) -> Result<u64, InstallError> {
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    // In a container this process is often pid 1 on every run: a temporary file of ours that
    // a killed earlier run left is this very path, and it is ours to replace.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("removing the stale", &tmp)(e)),
    }
    let result = copy_then_rename(src, &tmp, &dir.join(name));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    let bytes = result?;
    // The rename is durable only once the directory is on disk.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing", dir))?;
    Ok(bytes)
}

fn copy_then_rename(src: &Path, tmp: &Path, dest: &Path) -> Result<u64, InstallError> {
    let mut input = File::open(src).map_err(io_err("opening", src))?;
    let mut output = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o700)
        .open(tmp)
        .map_err(io_err("creating", tmp))?;
    let bytes = io::copy(&mut input, &mut output).map_err(io_err("copying into", tmp))?;
    // Executable only once complete; set explicitly, as the umask may have cut the mode above.
    output
        .set_permissions(fs::Permissions::from_mode(0o755))
        .map_err(io_err("setting the mode of", tmp))?;
    output.sync_all().map_err(io_err("syncing", tmp))?;
    drop(output);
    fs::rename(tmp, dest).map_err(io_err("renaming into place", dest))?;
    Ok(bytes)
}
