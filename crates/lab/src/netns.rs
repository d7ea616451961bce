//! Named network namespaces under `/run/netns`, made and removed the way `ip netns` does,
//! shared by the benchmark and the lab.
//!
//! Creation and removal go through one `ip -batch` process each (not one `ip` per namespace):
//! with a few hundred namespaces that is the difference between milliseconds and seconds.
//! `ip` owns the bind-mount dance (the `/run/netns` mount point, propagation), which is
//! easy to get subtly wrong by hand.

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};

/// Where `ip netns` keeps its bind mounts (weft-ctl's, which opens a lab's namespace too).
pub use weft_ctl::lab::names::NETNS_DIR;

/// What can go wrong making or removing namespaces.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("running `ip -batch` (is iproute2 installed?)")]
    Spawn(#[source] io::Error),

    #[error("`ip -batch` failed to {action} network namespaces ({status}): {stderr}")]
    Batch {
        action: &'static str,
        status: ExitStatus,
        stderr: String,
    },

    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },

    #[error("bringing lo up in netns {name}")]
    Lo {
        name: String,
        #[source]
        source: weft_net::Error,
    },
}

pub type Result<T, E = NetnsError> = std::result::Result<T, E>;

/// Path of a named network namespace.
pub fn path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(name)
}

/// Whether a named namespace exists.
pub fn exists(name: &str) -> bool {
    path(name).exists()
}

/// Opens a named namespace, for `setns(2)` (the fd is close-on-exec, so children don't inherit it).
pub fn open(name: &str) -> Result<File> {
    let path = path(name);
    File::open(&path).map_err(|source| NetnsError::Io {
        what: format!("opening netns {}", path.display()),
        source,
    })
}

/// The names of all named namespaces; none when `/run/netns` does not exist yet.
pub fn list() -> Result<Vec<String>> {
    match std::fs::read_dir(NETNS_DIR) {
        Ok(entries) => Ok(entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(NetnsError::Io {
            what: format!("listing {NETNS_DIR}"),
            source,
        }),
    }
}

/// Creates every namespace in `names` and brings `lo` up in each (a runtime does too).
pub fn create(names: &[String]) -> Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    let script: String = names.iter().map(|n| format!("netns add {n}\n")).collect();
    ip_batch(&script, false, "create")?;
    for name in names {
        lo_up(name)?;
    }
    Ok(())
}

/// Deletes the namespaces of `names` that exist; a missing one is not an error.
pub fn remove(names: &[String]) -> Result<()> {
    let script: String = names
        .iter()
        .filter(|name| exists(name))
        .map(|name| format!("netns del {name}\n"))
        .collect();
    if script.is_empty() {
        return Ok(());
    }
    ip_batch(&script, true, "delete")
}

/// Named network namespaces owned by the caller; dropping the set deletes them all.
#[derive(Debug)]
pub struct NetnsSet {
    names: Vec<String>,
}

impl NetnsSet {
    /// Creates every namespace in `names` (see [`create`]).
    ///
    /// The names are recorded before anything is created, so a failure half-way still removes
    /// whatever did get created.
    pub fn create(names: Vec<String>) -> Result<Self> {
        let set = NetnsSet { names };
        create(&set.names)?;
        Ok(set)
    }

    /// Takes ownership of namespaces that already exist (a crashed run's leftovers).
    pub fn adopt(names: Vec<String>) -> Self {
        NetnsSet { names }
    }

    /// Deletes the namespaces now, reporting failure (Drop does the same, silently).
    pub fn remove(mut self) -> Result<()> {
        let names = std::mem::take(&mut self.names);
        remove(&names)
    }
}

impl Drop for NetnsSet {
    fn drop(&mut self) {
        if let Err(err) = remove(&self.names) {
            eprintln!("weftctl: cleanup: {err}");
        }
    }
}

/// `ip -batch` lines take no `-n`, so `lo` comes up over netlink, in-process.
fn lo_up(name: &str) -> Result<()> {
    let fail = |source| NetnsError::Lo {
        name: name.to_owned(),
        source,
    };
    let ns = weft_net::NetNs::open(&path(name)).map_err(fail)?;
    let mut handle = weft_net::Handle::new_in(&ns).map_err(fail)?;
    match handle.link_by_name("lo").map_err(fail)? {
        Some(lo) => handle.set_up(lo.index).map_err(fail),
        None => Ok(()),
    }
}

/// Runs `ip -batch -` on `script`; `force` keeps going past a failing line.
fn ip_batch(script: &str, force: bool, action: &'static str) -> Result<()> {
    let mut cmd = Command::new("ip");
    if force {
        cmd.arg("-force");
    }
    let mut child = cmd
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NetnsError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|source| NetnsError::Io {
                what: "writing to `ip -batch`".to_owned(),
                source,
            })?;
    }
    let output = child.wait_with_output().map_err(|source| NetnsError::Io {
        what: "waiting for `ip -batch`".to_owned(),
        source,
    })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(NetnsError::Batch {
            action,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}
