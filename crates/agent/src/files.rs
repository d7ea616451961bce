//! Files weftd writes for others to read (the conflist, the persisted policy plan): whole or
//! not at all, so a reader — a container runtime, weftd after a crash — never sees half a file.

use std::io::Write;
use std::path::Path;

/// Writes `contents` to `path` through a dot-prefixed temp file in the same directory (fsync,
/// rename, fsync of the directory). Runtimes watching a CNI config directory ignore the temp
/// name (dot-prefixed, not `.conf`/`.conflist`) if they look while it exists.
pub fn write_atomically(path: &Path, contents: &str) -> std::io::Result<()> {
    write_atomically_with(path, |f| f.write_all(contents.as_bytes()))
}

/// [`write_atomically`] of what `write` writes, through a buffer: for contents too large to
/// hold whole first (the policy plan file of a large cluster is tens of MB of JSON).
pub fn write_atomically_with(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "weft".into());
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    write(&mut f)?;
    let f = f.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
