//! Pods whose DEL never came: the node's processes were killed, or the container runtime
//! lost its state, and nothing will ever tell the plugin to undo the pod's ADD. The CNI GC
//! verb exists for this, but runtimes that speak CNI 1.0.0 (containerd 1.6/1.7, the
//! DaemonSet's `--cni-version`) never send it. So weftd looks for itself, at start once the
//! node is ready and then every `--resync-interval`.
//!
//! **Decides** which attachments are gone, from what the plugin recorded in each endpoint
//! file at ADD ([`judge`]). A pod is gone when
//! - its network namespace is no longer at the recorded path, or the path names another
//!   namespace now (its nsfs identity differs), and
//! - it was attached more than `--gc-grace` ago.
//!
//! Both must hold. The namespace decides; the grace only keeps a pod whose set-up is still
//! under way out of reach, whatever the namespace looks like at that moment. What weftd
//! cannot see for sure it leaves alone ([`Unknown`]): a directory that is not the one the
//! plugin saw (weftd in a container without the host's netns directory), a path that is
//! there but no namespace (a bind mount this mount namespace does not receive), a file of an
//! earlier release with no namespace recorded.
//!
//! **Cleans** through the plugin's own cleanup, [`weft_plugin::collect`] (the one the GC
//! verb uses): the host veth, the leases in `<state-dir>/ipam/<network>/` (weft-ipam's
//! release), the endpoint file; then the control loop drops the endpoint from the policy
//! state ([`Gc::finish`]).
//!
//! **Must not:** block the control loop (a pass runs on a blocking thread, and the loop
//! takes its outcome as one more event), or touch an attachment whose record changed since
//! it was judged (the file is read again right before it is cleaned).

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::json;
use tokio::task::JoinHandle;
use weft_plugin::collect::{self, Attachment, CollectError, Collected, Stores};
use weft_proto::{EndpointFile, NetnsRecord, endpoint_path};

use crate::cniconf;
use crate::config::Settings;
use crate::log;
use crate::metrics;
use crate::policy::Policy;

/// Why a pod is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    /// Nothing is at the namespace's path any more.
    NetnsMissing,
    /// The path names another network namespace now.
    NetnsReplaced,
}

impl Gone {
    fn as_str(self) -> &'static str {
        match self {
            Gone::NetnsMissing => "network namespace gone",
            Gone::NetnsReplaced => "network namespace replaced",
        }
    }
}

/// Why weftd cannot tell whether a pod is gone; such a pod is left to DEL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unknown {
    #[error("its endpoint file records no network namespace (written by an earlier release)")]
    NoRecord,
    #[error("it is attached to network {0}, whose leases are not this agent's")]
    OtherNetwork(String),
    #[error(
        "weftd does not see the directory the plugin saw, {0} (mount the host's netns directory into weftd's container)"
    )]
    DirectoryNotSeen(PathBuf),
    #[error(
        "{0} is there but is no network namespace for weftd (a mount that does not reach weftd's mount namespace)"
    )]
    NotANamespace(PathBuf),
    #[error("{path}: {error}")]
    Unreadable { path: PathBuf, error: String },
}

impl Unknown {
    /// The kind of reason, for saying each kind once.
    fn kind(&self) -> &'static str {
        match self {
            Unknown::NoRecord => "no-record",
            Unknown::OtherNetwork(_) => "other-network",
            Unknown::DirectoryNotSeen(_) => "directory-not-seen",
            Unknown::NotANamespace(_) => "not-a-namespace",
            Unknown::Unreadable { .. } => "unreadable",
        }
    }
}

/// What weftd makes of one attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Its namespace is where ADD found it.
    Alive,
    /// Its namespace is gone, but it was attached less than the grace period ago.
    Young,
    Gone(Gone),
    Unknown(Unknown),
}

/// What the namespace's path shows now.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Netns {
    Same,
    Gone(Gone),
    Unknown(Unknown),
}

/// Looks at `rec.path`, trusting what it shows only where weftd sees the directory the
/// plugin saw (same device and inode): a directory of that name that is another (an empty
/// one in a container image, a private copy) would show any pod as gone.
fn look(rec: &NetnsRecord) -> Netns {
    let unreadable = |path: &Path, e: std::io::Error| {
        Netns::Unknown(Unknown::Unreadable {
            path: path.to_path_buf(),
            error: e.to_string(),
        })
    };
    let Some(dir) = rec.path.parent() else {
        return Netns::Unknown(Unknown::DirectoryNotSeen(rec.path.clone()));
    };
    match std::fs::metadata(dir) {
        Ok(m) if (m.dev(), m.ino()) == (rec.dir_dev, rec.dir_ino) => {}
        Ok(_) => return Netns::Unknown(Unknown::DirectoryNotSeen(dir.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Netns::Unknown(Unknown::DirectoryNotSeen(dir.to_path_buf()));
        }
        Err(e) => return unreadable(dir, e),
    }
    // stat follows the bind mount (or /proc's magic link) to the namespace's nsfs inode.
    match std::fs::metadata(&rec.path) {
        Ok(m) if (m.dev(), m.ino()) == (rec.dev, rec.ino) => Netns::Same,
        // nsfs is one filesystem for every namespace: same device, another inode is another
        // namespace.
        Ok(m) if m.dev() == rec.dev => Netns::Gone(Gone::NetnsReplaced),
        // The runtime's bind mount is not visible here, only the file it is mounted on.
        Ok(_) => Netns::Unknown(Unknown::NotANamespace(rec.path.clone())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Netns::Gone(Gone::NetnsMissing),
        Err(e) => unreadable(&rec.path, e),
    }
}

/// Whether the attachment `f` is gone, at `now`, for the agent of `network`.
pub fn judge(f: &EndpointFile, network: &str, grace: Duration, now: SystemTime) -> Verdict {
    let (Some(rec), Some(attached_ms)) = (&f.netns, f.attached_at_ms) else {
        return Verdict::Unknown(Unknown::NoRecord);
    };
    match &f.network {
        Some(n) if n == network => {}
        Some(n) => return Verdict::Unknown(Unknown::OtherNetwork(n.clone())),
        None => return Verdict::Unknown(Unknown::NoRecord),
    }
    let why = match look(rec) {
        Netns::Same => return Verdict::Alive,
        Netns::Unknown(u) => return Verdict::Unknown(u),
        Netns::Gone(why) => why,
    };
    // A clock that went back makes the pod look younger, never older.
    let attached = SystemTime::UNIX_EPOCH + Duration::from_millis(attached_ms);
    let age = now.duration_since(attached).unwrap_or_default();
    if age < grace {
        Verdict::Young
    } else {
        Verdict::Gone(why)
    }
}

/// One attachment a pass collected, or failed to.
#[derive(Debug)]
pub struct Outcome {
    pub file: EndpointFile,
    pub why: Gone,
    pub result: Result<Collected, CollectError>,
}

/// What one pass found.
#[derive(Debug, Default)]
pub struct Pass {
    pub outcomes: Vec<Outcome>,
    /// Attachments weftd cannot judge, and why.
    pub unknown: Vec<(EndpointFile, Unknown)>,
}

/// Where a pass looks and cleans (the node's paths, from [`Settings`]).
#[derive(Debug, Clone)]
struct Paths {
    network: String,
    socket: PathBuf,
    ipam_dir: PathBuf,
    grace: Duration,
}

/// Judges `files` and collects the gone ones. Runs on a blocking thread: stat calls,
/// netlink and the lease store's lock.
fn pass(paths: &Paths, files: Vec<EndpointFile>) -> Pass {
    let mut out = Pass::default();
    let mut host = None;
    for f in files {
        let why = match judge(&f, &paths.network, paths.grace, SystemTime::now()) {
            Verdict::Alive | Verdict::Young => continue,
            Verdict::Unknown(u) => {
                out.unknown.push((f, u));
                continue;
            }
            Verdict::Gone(why) => why,
        };
        // The file as it is now: gone means a DEL came meanwhile (and cleans the rest);
        // another record means another ADD, to be judged at the next pass.
        let path = endpoint_path(&paths.socket, &f.container_id, &f.ifname);
        let now: Option<EndpointFile> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if now.as_ref() != Some(&f) {
            continue;
        }
        let host = match &mut host {
            Some(h) => h,
            None => match weft_net::Handle::new() {
                Ok(h) => host.insert(h),
                Err(e) => {
                    log::warn(
                        "GC pass stopped: no netlink socket; retried at the next pass",
                        &[("error", e.to_string().into())],
                    );
                    return out;
                }
            },
        };
        let stores = Stores {
            agent_socket: Some(&paths.socket),
            ipam_data_dir: Some(&paths.ipam_dir),
        };
        let a = Attachment {
            network: &paths.network,
            container_id: &f.container_id,
            ifname: &f.ifname,
            host_interface: f.host_interface.as_deref(),
            addresses: &f.addresses,
        };
        let result = collect::collect(host, stores, &a);
        out.outcomes.push(Outcome {
            file: f,
            why,
            result,
        });
    }
    out
}

/// The GC's state in the control loop: the pass running, if any, and what was said.
pub struct Gc {
    paths: Paths,
    running: Option<JoinHandle<Pass>>,
    /// The kinds of [`Unknown`] already logged. Each is said once per run, with one pod as
    /// the example: most are a property of the node (weftd's mounts, an upgrade), not of
    /// one pod, and a line per pod and pass would bury the log.
    told: BTreeSet<&'static str>,
}

impl Gc {
    pub fn new(s: &Settings) -> Gc {
        Gc {
            paths: Paths {
                // The network of the conflist this agent writes: its leases are in
                // `<state-dir>/ipam/<network>`, where that conflist puts them.
                network: cniconf::NETWORK.to_string(),
                socket: s.socket_path(),
                ipam_dir: s.ipam_dir(),
                grace: s.gc_grace,
            },
            running: None,
            told: BTreeSet::new(),
        }
    }

    /// Starts a pass over the node's endpoint files, unless one is still running (the next
    /// tick starts one then).
    pub fn start(&mut self, policy: &Policy) {
        if self.running.is_some() {
            return;
        }
        let files: Vec<EndpointFile> = policy.local_endpoints().cloned().collect();
        if files.is_empty() {
            return;
        }
        let paths = self.paths.clone();
        self.running = Some(tokio::task::spawn_blocking(move || pass(&paths, files)));
    }

    /// The running pass's outcome once it is done; pending while none runs. Cancel-safe:
    /// dropped before the pass is done, it leaves the pass running.
    pub async fn done(&mut self) -> Option<Pass> {
        let Some(task) = self.running.as_mut() else {
            return std::future::pending().await;
        };
        let joined = task.await;
        self.running = None;
        match joined {
            Ok(pass) => Some(pass),
            Err(e) => {
                log::error(
                    "GC pass failed; retried at the next pass",
                    &[("error", e.to_string().into())],
                );
                None
            }
        }
    }

    /// Logs and counts what a pass did, and drops every collected attachment from the
    /// policy state. Returns whether any was dropped (the caller publishes the endpoints).
    pub fn finish(&mut self, pass: Pass, policy: &mut Policy) -> bool {
        let mut dropped = false;
        for (f, why) in &pass.unknown {
            if self.told.insert(why.kind()) {
                let alike = pass
                    .unknown
                    .iter()
                    .filter(|(_, w)| w.kind() == why.kind())
                    .count();
                log::info(
                    "pods left to their DEL: weftd cannot tell whether they are gone",
                    &[
                        ("pods", alike.into()),
                        ("example", format!("{}/{}", f.namespace, f.name).into()),
                        ("containerId", f.container_id.clone().into()),
                        ("reason", why.to_string().into()),
                    ],
                );
            }
        }
        for o in pass.outcomes {
            let f = &o.file;
            let fields = |extra: Vec<(&'static str, serde_json::Value)>| {
                let mut v = vec![
                    ("containerId", f.container_id.clone().into()),
                    ("ifname", f.ifname.clone().into()),
                    ("pod", format!("{}/{}", f.namespace, f.name).into()),
                    ("addresses", json!(f.addresses)),
                    ("reason", o.why.as_str().into()),
                    (
                        "netns",
                        json!(f.netns.as_ref().map(|n| n.path.display().to_string())),
                    ),
                ];
                v.extend(extra);
                v
            };
            match &o.result {
                Ok(done) => {
                    log::info(
                        "pod collected: its DEL never came",
                        &fields(vec![
                            ("vethDeleted", done.veth_deleted.into()),
                            ("released", json!(done.released)),
                        ]),
                    );
                    metrics::get().gc_collected();
                    policy.detach(&f.container_id, &f.ifname);
                    dropped = true;
                }
                Err(e) => log::warn(
                    "pod not collected; retried at the next pass",
                    &fields(vec![("error", e.to_string().into())]),
                ),
            }
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_proto::EndpointMode;

    const GRACE: Duration = Duration::from_secs(60);

    fn file(rec: Option<NetnsRecord>, attached: SystemTime) -> EndpointFile {
        EndpointFile {
            container_id: "c1".into(),
            ifname: "eth0".into(),
            namespace: "shop".into(),
            name: "web-0".into(),
            addresses: vec!["10.97.0.2".parse().unwrap()],
            host_interface: Some("wv0".into()),
            mac: None,
            mode: EndpointMode::Bridge,
            network: Some("weft".into()),
            netns: rec,
            attached_at_ms: Some(
                attached
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as u64,
            ),
        }
    }

    /// A record of this process's own namespace, as the plugin would write it for a pod
    /// in it: a path under `dir` that is, or is not, that namespace.
    fn record(dir: &Path, name: &str) -> NetnsRecord {
        let ns = std::fs::metadata("/proc/self/ns/net").unwrap();
        let d = std::fs::metadata(dir).unwrap();
        NetnsRecord {
            path: dir.join(name),
            dev: ns.dev(),
            ino: ns.ino(),
            dir_dev: d.dev(),
            dir_ino: d.ino(),
        }
    }

    #[test]
    fn a_namespace_that_is_there_is_alive_however_old() {
        // /proc/self/ns/net is this process's namespace: the path names the recorded one.
        let mut rec = record(Path::new("/proc/self/ns"), "net");
        let d = std::fs::metadata("/proc/self/ns").unwrap();
        (rec.dir_dev, rec.dir_ino) = (d.dev(), d.ino());
        let old = SystemTime::now() - Duration::from_secs(86_400);
        assert_eq!(
            judge(&file(Some(rec), old), "weft", GRACE, SystemTime::now()),
            Verdict::Alive
        );
    }

    #[test]
    fn a_missing_namespace_is_gone_only_after_the_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let rec = record(dir.path(), "cni-1");
        let now = SystemTime::now();
        let f = file(Some(rec.clone()), now - Duration::from_secs(10));
        assert_eq!(judge(&f, "weft", GRACE, now), Verdict::Young);
        let f = file(Some(rec.clone()), now - GRACE);
        assert_eq!(
            judge(&f, "weft", GRACE, now),
            Verdict::Gone(Gone::NetnsMissing)
        );
        // A clock set back: younger, never older.
        let f = file(Some(rec), now + Duration::from_secs(3600));
        assert_eq!(judge(&f, "weft", GRACE, now), Verdict::Young);
    }

    #[test]
    fn another_namespace_at_the_path_is_gone_and_a_plain_file_is_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let old = SystemTime::now() - Duration::from_secs(3600);
        // The path is a plain file: an unmounted bind-mount target as a mount namespace
        // that does not receive the mount sees it. Not a namespace: weftd cannot tell.
        std::fs::write(dir.path().join("cni-1"), "").unwrap();
        let rec = record(dir.path(), "cni-1");
        assert_eq!(
            judge(
                &file(Some(rec.clone()), old),
                "weft",
                GRACE,
                SystemTime::now()
            ),
            Verdict::Unknown(Unknown::NotANamespace(rec.path.clone()))
        );
        // A namespace, but not the one recorded (same nsfs device, another inode).
        let mut other = rec;
        other.path = "/proc/self/ns/net".into();
        let d = std::fs::metadata("/proc/self/ns").unwrap();
        (other.dir_dev, other.dir_ino) = (d.dev(), d.ino());
        other.ino += 1;
        assert_eq!(
            judge(&file(Some(other), old), "weft", GRACE, SystemTime::now()),
            Verdict::Gone(Gone::NetnsReplaced)
        );
    }

    #[test]
    fn what_weftd_cannot_see_for_sure_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let old = SystemTime::now() - Duration::from_secs(3600);
        let now = SystemTime::now();
        // Another directory of the same name (weftd's container without the host's).
        let mut rec = record(dir.path(), "cni-1");
        rec.dir_ino += 1;
        assert_eq!(
            judge(&file(Some(rec), old), "weft", GRACE, now),
            Verdict::Unknown(Unknown::DirectoryNotSeen(dir.path().to_path_buf()))
        );
        // No such directory at all.
        let mut rec = record(dir.path(), "cni-1");
        rec.path = dir.path().join("netns/cni-1");
        assert!(matches!(
            judge(&file(Some(rec), old), "weft", GRACE, now),
            Verdict::Unknown(Unknown::DirectoryNotSeen(_))
        ));
        // Nothing recorded (an earlier release), another network.
        assert_eq!(
            judge(&file(None, old), "weft", GRACE, now),
            Verdict::Unknown(Unknown::NoRecord)
        );
        let mut f = file(Some(record(dir.path(), "cni-1")), old);
        f.network = Some("other".into());
        assert_eq!(
            judge(&f, "weft", GRACE, now),
            Verdict::Unknown(Unknown::OtherNetwork("other".into()))
        );
    }
}
