//! The node's own pods, as the plugin registered them: one [`EndpointFile`] per attachment
//! in `<run-dir>/endpoints/`. The files are the authority for this node's pods (they exist
//! while the pod is attached, whether or not the agent ran at the time); the datastore only
//! gets a copy for the other nodes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use weft_proto::EndpointFile;

use crate::log;

/// (container id, ifname) → the file's content.
pub type Local = BTreeMap<(String, String), EndpointFile>;

/// Read every endpoint file; unreadable ones are logged and skipped (a half-written file
/// never appears: the plugin renames it into place).
pub fn scan(dir: &Path) -> Local {
    let mut out = Local::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return out,
        Err(e) => {
            log::warn(
                "cannot read the endpoints directory",
                &[
                    ("dir", dir.display().to_string().into()),
                    ("error", e.to_string().into()),
                ],
            );
            return out;
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        if let Some(f) = read(&entry.path()) {
            out.insert((f.container_id.clone(), f.ifname.clone()), f);
        }
    }
    out
}

/// One endpoint file, if it is there and readable.
pub fn read(path: &PathBuf) -> Option<EndpointFile> {
    let text = std::fs::read_to_string(path).ok()?;
    match serde_json::from_str::<EndpointFile>(&text) {
        Ok(f) => Some(f),
        Err(e) => {
            log::warn(
                "unreadable endpoint file skipped",
                &[
                    ("file", path.display().to_string().into()),
                    ("error", e.to_string().into()),
                ],
            );
            None
        }
    }
}
