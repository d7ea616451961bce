//! Files weftd writes for others to read (the conflist, the persisted policy plan): whole or
//! not at all, so a reader — a container runtime, weftd after a crash — never sees half a file.

use std::io::Write;
use std::path::Path;

/// Writes `contents` to `path` through a dot-prefixed temp file in the same directory (fsync,
/// rename, fsync of the directory). Runtimes watching a CNI config directory ignore the temp
/// name (dot-prefixed, not `.conf`/`.conflist`) if they look while it exists.
pub fn write_atomically(path: &Path, contents: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "weft".into());
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
