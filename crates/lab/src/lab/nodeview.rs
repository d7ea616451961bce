//! A kubelet node's own view of the host's paths (`lab up --kubelet`): one mount namespace
//! per node, in which containerd, kubelet, kube-proxy and every pod's runtime see the
//! standard paths of a Kubernetes node, each backed by a directory of the node's in the
//! lab's state dir:
//!
//! ```text
//! /etc/cni/net.d  /opt/cni/bin  /var/lib/containerd  /var/lib/kubelet  /var/lib/weft
//! /var/log/pods   /run
//! ```
//!
//! So two nodes on one machine never share a conflist, a plugin, an image store or weft's
//! leases, and a DaemonSet's hostPath volumes land in the node's directories. Those mount
//! points do not exist on a plain host, and the lab must not create them there: `/etc`,
//! `/opt`, `/usr` and `/var` are overlays in the node's view (the host's directory below, the
//! node's upper directory above), so the mount points are made in the node's upper
//! directory, and whatever else a node's process writes there stays the node's. A few
//! host programs a node must not have are whited out there (`HIDDEN`). `/run` is
//! the node's own (with `/run/weft-lab` bound back in, so the lab's paths mean the same in
//! both views).
//!
//! The namespace outlives the call that made it as an nsfs bind mount on
//! `<state>/mnt/<node>` (as `ip netns` keeps network namespaces), under a private bind
//! mount of `<state>/mnt` itself, which is what keeps the namespace from propagating into
//! itself. A daemon enters it with setns(2) before exec (`procs::Place::Node`), never
//! through `ip netns exec`, which remounts `/sys` and hides the cgroup mounts kubelet needs.
//!
//! Must not: mount anything in the host's own view but `<state>/mnt` and the nsfs files in
//! it, or write outside the lab's state dir.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use super::error::{LabError, Result};
use super::names::{Names, STATE_ROOT};

/// The host directories a node sees through an overlay of its own.
const OVERLAID: [&str; 4] = ["/etc", "/opt", "/usr", "/var"];
/// Host programs a node does not have (whiteouts in its overlay): the lab's nodes run no
/// systemd, so kubelet must not find `systemd-run` and try transient scopes with it (it
/// probes for it at start; on a machine whose init is not systemd that only fails).
const HIDDEN: [&str; 1] = ["/usr/bin/systemd-run"];

/// A node's directories, and where each appears in its view.
pub struct Paths {
    /// `<state>/nodes/<node>/view`: everything below is the node's.
    pub dir: PathBuf,
    /// The nsfs bind mount that keeps the namespace.
    pub mnt: PathBuf,
    pub cni_conf: PathBuf,
    pub cni_bin: PathBuf,
    pub run: PathBuf,
}

impl Paths {
    /// The node directories bound over the standard paths: (node's directory, path in
    /// the node's view). `/run` comes last: binding it hides the host's `/run/weft-lab`,
    /// whose paths the other sources are.
    fn binds(&self) -> Vec<(PathBuf, &'static str)> {
        vec![
            (self.cni_conf.clone(), "/etc/cni/net.d"),
            (self.cni_bin.clone(), "/opt/cni/bin"),
            (self.dir.join("containerd"), "/var/lib/containerd"),
            (self.dir.join("kubelet"), "/var/lib/kubelet"),
            (self.dir.join("weft"), "/var/lib/weft"),
            (self.dir.join("pods"), "/var/log/pods"),
        ]
    }

    /// Where a path of the node's `/run` is on the host.
    pub fn in_run(&self, rel: &str) -> PathBuf {
        self.run.join(rel)
    }
}

/// The directory of every node's nsfs file.
pub fn mnt_dir(names: &Names) -> PathBuf {
    names.state_dir().join("mnt")
}

pub fn paths(names: &Names, node: &str) -> Paths {
    let dir = names.state_dir().join("nodes").join(node).join("view");
    Paths {
        mnt: mnt_dir(names).join(node),
        cni_conf: dir.join("cni-conf"),
        cni_bin: dir.join("cni-bin"),
        run: dir.join("run"),
        dir,
    }
}

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| LabError::invalid("path", p.display().to_string(), "holds a NUL byte"))
}

fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<()> {
    let what = format!(
        "mounting {} on {}",
        source.map(|s| s.display().to_string()).unwrap_or_default(),
        target.display()
    );
    let source = source.map(cstr).transpose()?;
    let target_c = cstr(target)?;
    let fstype = fstype
        .map(|f| CString::new(f).map_err(|_| LabError::invalid("fstype", f, "NUL")))
        .transpose()?;
    let data = data
        .map(|d| CString::new(d).map_err(|_| LabError::invalid("mount options", d, "NUL")))
        .transpose()?;
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is a NUL-terminated string that outlives the call, or null.
    let rc = unsafe {
        libc::mount(
            ptr(&source),
            target_c.as_ptr(),
            ptr(&fstype),
            flags,
            ptr(&data).cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(LabError::io(what)(std::io::Error::last_os_error()))
    }
}

fn umount(target: &Path) -> std::io::Result<()> {
    let c = CString::new(target.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether `path` is a mount point in this process's view (its own entry in mountinfo).
fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.display().to_string();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| unescape(mp) == want)
}

/// mountinfo's octal escapes (`\040` for a space) undone.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(v) = u8::from_str_radix(&field[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An overlayfs whiteout (a 0/0 character device) for host path `hidden` in the upper
/// directory of the overlay that covers it: the file is absent from the node's view.
fn whiteout(dir: &Path, hidden: &str) -> Result<()> {
    let Some(top) = OVERLAID
        .iter()
        .find(|o| hidden.starts_with(&format!("{o}/")))
    else {
        return Err(LabError::invalid("hidden path", hidden, "under no overlay"));
    };
    let rel = &hidden[top.len() + 1..];
    let path = dir
        .join(format!("{}.upper", top.trim_start_matches('/')))
        .join(rel);
    if fs::symlink_metadata(&path).is_ok() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        mkdir(parent)?;
    }
    let c = cstr(&path)?;
    // SAFETY: a NUL-terminated path; mode and device are plain integers.
    if unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, libc::makedev(0, 0)) } != 0 {
        return Err(LabError::io(format!(
            "making the whiteout {}",
            path.display()
        ))(std::io::Error::last_os_error()));
    }
    Ok(())
}

fn mkdir(path: &Path) -> Result<()> {
    fs::create_dir_all(path).map_err(LabError::io(format!("creating {}", path.display())))
}

/// Makes node `node`'s view unless it exists. Its directories are made first (in the
/// host's view); then a thread of this process unshares its mount namespace, builds the
/// view in it, and this thread pins the namespace on the nsfs file before that thread
/// ends.
pub fn ensure(names: &Names, node: &str) -> Result<Paths> {
    let p = paths(names, node);
    if is_mount_point(&p.mnt) {
        return Ok(p);
    }
    let dir = mnt_dir(names);
    mkdir(&dir)?;
    if !is_mount_point(&dir) {
        mount(Some(&dir), &dir, None, libc::MS_BIND, None)?;
        mount(None, &dir, None, libc::MS_PRIVATE, None)?;
    }
    fs::write(&p.mnt, b"").map_err(LabError::io(format!("creating {}", p.mnt.display())))?;
    for sub in OVERLAID {
        let name = sub.trim_start_matches('/');
        mkdir(&p.dir.join(format!("{name}.upper")))?;
        mkdir(&p.dir.join(format!("{name}.work")))?;
    }
    for (source, _) in p.binds() {
        mkdir(&source)?;
    }
    mkdir(&p.run.join("weft-lab"))?;
    for hidden in HIDDEN {
        whiteout(&p.dir, hidden)?;
    }

    let (to_main, from_builder) = mpsc::channel::<Result<i32>>();
    let (to_builder, from_main) = mpsc::channel::<()>();
    let view = Paths {
        dir: p.dir.clone(),
        mnt: p.mnt.clone(),
        cni_conf: p.cni_conf.clone(),
        cni_bin: p.cni_bin.clone(),
        run: p.run.clone(),
    };
    let builder = std::thread::spawn(move || {
        let built = build_in_new_namespace(&view);
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        let _ = to_main.send(built.map(|()| tid));
        // Alive until the namespace is pinned: /proc/self/task/<tid>/ns/mnt must exist.
        let _ = from_main.recv();
    });
    let outcome = from_builder
        .recv()
        .unwrap_or_else(|_| Err(LabError::invalid("node view", node, "its builder died")));
    let pinned = outcome.and_then(|tid| {
        let ns = PathBuf::from(format!("/proc/{}/task/{tid}/ns/mnt", std::process::id()));
        mount(Some(&ns), &p.mnt, None, libc::MS_BIND, None)
    });
    let _ = to_builder.send(());
    let _ = builder.join();
    if pinned.is_err() {
        let _ = fs::remove_file(&p.mnt);
    }
    pinned.map(|()| p)
}

/// Runs on the builder thread: a mount namespace of its own (the thread's fs is unshared
/// with it), nothing propagating back to the host, then the view.
fn build_in_new_namespace(p: &Paths) -> Result<()> {
    // SAFETY: unshare affects only this thread (CLONE_NEWNS implies CLONE_FS here).
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(LabError::io("unsharing the mount namespace")(
            std::io::Error::last_os_error(),
        ));
    }
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )?;
    for sub in OVERLAID {
        let name = sub.trim_start_matches('/');
        let options = format!(
            "lowerdir={sub},upperdir={},workdir={}",
            p.dir.join(format!("{name}.upper")).display(),
            p.dir.join(format!("{name}.work")).display()
        );
        mount(
            Some(Path::new("overlay")),
            Path::new(sub),
            Some("overlay"),
            0,
            Some(&options),
        )?;
    }
    for (source, target) in p.binds() {
        let target = Path::new(target);
        mkdir(target)?;
        mount(Some(&source), target, None, libc::MS_BIND, None)?;
    }
    // The lab's state, where it is on the host, inside the node's /run (not recursive:
    // the nsfs files stay out of every view).
    let lab_root = Path::new(STATE_ROOT);
    mount(
        Some(lab_root),
        &p.run.join("weft-lab"),
        None,
        libc::MS_BIND,
        None,
    )?;
    mount(
        Some(&p.run),
        Path::new("/run"),
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )
}

/// Unpins `node`'s view (its namespace ends with its last process). Whether it was pinned.
pub fn remove(names: &Names, node: &str) -> Result<bool> {
    let p = paths(names, node);
    if !is_mount_point(&p.mnt) {
        return Ok(false);
    }
    umount(&p.mnt).map_err(LabError::io(format!("unmounting {}", p.mnt.display())))?;
    let _ = fs::remove_file(&p.mnt);
    Ok(true)
}

/// Unpins every node's view of the lab (the namespaces end with their last process) and
/// the private mount of `<state>/mnt`. Returns how many views there were.
pub fn remove_all(names: &Names) -> Result<usize> {
    let dir = mnt_dir(names);
    let mut n = 0;
    if let Ok(entries) = fs::read_dir(&dir) {
        for e in entries.flatten() {
            let path = e.path();
            if is_mount_point(&path) {
                umount(&path).map_err(LabError::io(format!("unmounting {}", path.display())))?;
                n += 1;
            }
        }
    }
    // Stacked binds from repeated `up`s after a crash: until it is no mount point.
    while is_mount_point(&dir) {
        umount(&dir).map_err(LabError::io(format!("unmounting {}", dir.display())))?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/run/a\040b"), "/run/a b");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/x\\"), r"/x\\");
    }

    #[test]
    fn run_is_bound_last() {
        let names = Names::new("t").expect("name");
        let p = paths(&names, "n1");
        let targets: Vec<&str> = p.binds().iter().map(|(_, t)| *t).collect();
        assert!(
            !targets.contains(&"/run"),
            "bound separately, after the lab's state"
        );
        assert!(targets.contains(&"/var/lib/kubelet"));
        assert!(p.mnt.starts_with(names.state_dir()));
    }
}
