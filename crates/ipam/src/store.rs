//! The on-disk lease store, byte-compatible with host-local so both can share a dataDir:
//!
//! ```text
//! <dataDir>/<network>/           0755
//!   lock                         empty; exclusive flock held for every operation
//!   last_reserved_ip.<N>         last address handed out from range set N (no newline)
//!   <ip>                         one lease, canonical IP text; "<id>\r\n<ifname>", 0600
//!   .tmp-<pid>-<seq>             ours only: a lease being written where O_TMPFILE is missing
//! ```
//!
//! Crash safety: a lease is written whole into a nameless `O_TMPFILE` (a `.tmp-` file on
//! filesystems without it), then hard-linked to its `<ip>` name. `link(2)` fails with EEXIST
//! if the name exists, so it is an atomic create-if-absent that never exposes a half-written
//! file — unlike host-local's `O_EXCL`-then-write, which a SIGKILL can leave empty. A process
//! killed before the link leaves no name behind at all; `.tmp-` files are only created under
//! the lock, so any seen by a lock holder are stale and removed. Files torn by others are
//! kept as "taken" until GC.

use std::ffi::CString;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::error::StoreError;
use crate::range::RangeSet;

const LOCK_FILE: &str = "lock";
const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
const TEMP_PREFIX: &str = ".tmp-";

/// Who holds a lease. `ifname` is empty for legacy (pre-0.3 host-local) leases, which
/// store only the container id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    pub id: String,
    pub ifname: String,
}

impl Owner {
    /// Parse lease file content; `None` for an empty (torn) or non-UTF-8 file.
    fn parse(content: &[u8]) -> Option<Owner> {
        // host-local compares trimmed content, so whitespace around it is not significant.
        let text = std::str::from_utf8(content).ok()?.trim();
        let (id, ifname) = text.split_once("\r\n").unwrap_or((text, ""));
        let id = id.trim();
        if id.is_empty() {
            return None;
        }
        Some(Owner {
            id: id.to_owned(),
            ifname: ifname.to_owned(),
        })
    }

    /// host-local's matching: `id\r\nifname` exactly, or a legacy lease with the same id.
    pub fn matches(&self, id: &str, ifname: &str) -> bool {
        self.id == id.trim() && (self.ifname == ifname || self.ifname.is_empty())
    }
}

/// A network's lease directory. Open one per operation; [`Store::lock`] before touching it.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    /// The directory itself, open for the fsync that makes new leases durable.
    dir_file: File,
    lock_file: File,
    /// flock is per open file description, so it does not exclude two threads sharing this
    /// `Store`; this mutex does.
    in_process: Mutex<()>,
}

/// Exclusive access to a [`Store`]; the flock is released on drop.
#[derive(Debug)]
pub struct Locked<'a> {
    pub(crate) store: &'a Store,
    _guard: MutexGuard<'a, ()>,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // Nothing useful can be done on failure; closing the Store's file releases it anyway.
        let _ = self.store.lock_file.unlock();
    }
}

/// What a directory scan found.
pub(crate) struct Scan {
    pub leases: Vec<(IpAddr, Option<Owner>)>,
    pub temps: Vec<PathBuf>,
}

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// A lease's content before it has a name: a nameless `O_TMPFILE` (kept with its content,
/// should it need a name after all, see [`Locked::link_lease`]), or a `.tmp-` file that is
/// removed by [`Locked::commit`] or when dropped. A removal that fails in drop is left to
/// the next locked scan.
pub(crate) enum TempFile {
    Anonymous { file: File, content: Vec<u8> },
    Named { path: PathBuf, armed: bool },
}

impl TempFile {
    fn remove(mut self) -> Result<(), StoreError> {
        match &mut self {
            TempFile::Anonymous { .. } => Ok(()),
            TempFile::Named { path, armed } => {
                *armed = false;
                fs::remove_file(&*path).map_err(StoreError::io("remove temp file", &*path))
            }
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let TempFile::Named { path, armed: true } = self {
            let _ = fs::remove_file(&*path);
        }
    }
}

/// Gives a nameless file the name `to` (`linkat(2)` through `/proc/self/fd`, which needs no
/// capability, unlike `AT_EMPTY_PATH`).
fn link_anonymous(file: &File, to: &Path) -> std::io::Result<()> {
    let from = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map_err(std::io::Error::other)?;
    let to = CString::new(to.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: both paths are NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `last_reserved_ip.<N>`, open for reading the round-robin hint and writing the next one.
pub(crate) struct LastReserved {
    path: PathBuf,
    /// `None` until the first address of the set: the file is created only by a write, so
    /// an allocation that fails leaves no empty hint behind.
    file: Option<File>,
    len: u64,
    pub hint: Option<IpAddr>,
}

impl LastReserved {
    /// Overwrites the hint in place: no temp file and no rename, which on ext4 would start
    /// writeback of the new file (its "replace via rename" heuristic) on every ADD. A
    /// process killed between the write and the truncate leaves a valid address followed
    /// by the old one's tail, or garbage: either way only another starting point for the
    /// next walk, which the lease files keep correct (host-local restarts at rangeStart on
    /// garbage, as we do).
    pub fn set(&mut self, ip: IpAddr) -> Result<(), StoreError> {
        let text = ip.to_string();
        let new_len = text.len() as u64;
        let file = match self.file.take() {
            Some(f) => f,
            None => OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&self.path)
                .map_err(StoreError::io("create", &self.path))?,
        };
        let file = self.file.insert(file);
        file.write_all_at(text.as_bytes(), 0)
            .and_then(|()| {
                if new_len < self.len {
                    file.set_len(new_len)
                } else {
                    Ok(())
                }
            })
            .map_err(StoreError::io("write", &self.path))?;
        self.len = new_len;
        self.hint = Some(ip);
        Ok(())
    }
}

impl Store {
    /// Open (creating as needed) `<data_dir>/<network>/` and its lock file.
    pub fn open(data_dir: &Path, network: &str) -> Result<Store, StoreError> {
        if network.is_empty() || network == "." || network == ".." || network.contains(['/', '\0'])
        {
            return Err(StoreError::InvalidNetworkName(network.to_owned()));
        }
        let dir = data_dir.join(network);
        let open_dir = || {
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY)
                .open(&dir)
        };
        // The directory exists on every ADD but a network's first: try it before creating.
        let dir_file = match open_dir() {
            Err(e) if e.kind() == ErrorKind::NotFound => DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(&dir)
                .and_then(|()| open_dir())
                .map_err(StoreError::io("create directory", &dir))?,
            r => r.map_err(StoreError::io("open directory", &dir))?,
        };
        let lock_path = dir.join(LOCK_FILE);
        let lock_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(StoreError::io("open", &lock_path))?;
        Ok(Store {
            dir,
            dir_file,
            lock_file,
            in_process: Mutex::new(()),
        })
    }

    /// Makes leases written by [`Locked::allocate_deferred`] durable with one fsync of the
    /// directory, which commits the new names (on ext4, the whole journal transaction they
    /// are in). Needs no lock (it changes nothing), so a caller can run it on another thread
    /// while it configures the interface, and must wait for it before reporting the
    /// addresses. A power loss may still leave a lease's content unwritten: an empty lease
    /// reads as taken-by-nobody (never handed out again) and GC reclaims it; the pod that
    /// owned it did not survive the power loss either.
    pub fn sync_leases(&self, ips: &[IpAddr]) -> Result<(), StoreError> {
        if ips.is_empty() {
            return Ok(());
        }
        self.sync_dir()
    }

    /// The network's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Block until this process holds the store exclusively (also against host-local).
    pub fn lock(&self) -> Result<Locked<'_>, StoreError> {
        // The mutex protects no data, so a poisoned one is still a valid lock.
        let guard = self.in_process.lock().unwrap_or_else(|p| p.into_inner());
        self.lock_file
            .lock()
            .map_err(StoreError::io("lock", self.dir.join(LOCK_FILE)))?;
        Ok(Locked {
            store: self,
            _guard: guard,
        })
    }

    /// Read every lease and temp file. Any I/O error except a file vanishing mid-scan is
    /// returned: a lease we fail to read must not be mistaken for a free address.
    fn scan(&self) -> Result<Scan, StoreError> {
        self.scan_with(true)
    }

    /// `read_owners: false` lists lease names only (owners all `None`): what an allocation
    /// needs when it does not have to look for the pair's existing leases. Reading every
    /// lease file is the part of a scan that grows with the number of pods.
    fn scan_with(&self, read_owners: bool) -> Result<Scan, StoreError> {
        let mut scan = Scan {
            leases: Vec::new(),
            temps: Vec::new(),
        };
        let entries =
            fs::read_dir(&self.dir).map_err(StoreError::io("read directory", &self.dir))?;
        for entry in entries {
            let entry = entry.map_err(StoreError::io("read directory", &self.dir))?;
            let path = entry.path();
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(TEMP_PREFIX) {
                scan.temps.push(path);
                continue;
            }
            let Ok(ip) = name.parse::<IpAddr>() else {
                continue;
            };
            let file_type = entry.file_type().map_err(StoreError::io("stat", &path))?;
            if file_type.is_dir() {
                continue;
            }
            if !read_owners {
                scan.leases.push((ip, None));
                continue;
            }
            match fs::read(&path) {
                Ok(content) => scan.leases.push((ip, Owner::parse(&content))),
                // Removed by someone not taking the lock: it is simply not a lease any more.
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io("read lease", path)(e)),
            }
        }
        scan.leases.sort_by_key(|(ip, _)| *ip);
        Ok(scan)
    }

    fn lease_path(&self, ip: IpAddr) -> PathBuf {
        self.dir.join(ip.to_string())
    }

    fn sync_dir(&self) -> Result<(), StoreError> {
        self.dir_file
            .sync_all()
            .map_err(StoreError::io("fsync directory", &self.dir))
    }

    /// Write `content` to a new nameless file in the store directory, fsynced when
    /// `durable`; a named temp file where the filesystem has no `O_TMPFILE`.
    fn write_temp(&self, content: &[u8], durable: bool) -> Result<TempFile, StoreError> {
        let anonymous = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .mode(0o600)
            .open(&self.dir);
        match anonymous {
            Ok(mut file) => {
                file.write_all(content)
                    .and_then(|()| if durable { file.sync_all() } else { Ok(()) })
                    .map_err(StoreError::io("write temp file", &self.dir))?;
                Ok(TempFile::Anonymous {
                    file,
                    content: content.to_vec(),
                })
            }
            // Filesystems (and kernels) without O_TMPFILE refuse it in one of these ways.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
                ) =>
            {
                self.write_named_temp(content, durable)
            }
            Err(e) => Err(StoreError::io("create temp file", &self.dir)(e)),
        }
    }

    fn write_named_temp(&self, content: &[u8], durable: bool) -> Result<TempFile, StoreError> {
        let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let path = self
            .dir
            .join(format!("{TEMP_PREFIX}{}-{seq}", std::process::id()));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(StoreError::io("create temp file", &path))?;
        // Armed before the write, so a failed write removes the file.
        let temp = TempFile::Named {
            path: path.clone(),
            armed: true,
        };
        file.write_all(content)
            .and_then(|()| if durable { file.sync_all() } else { Ok(()) })
            .map_err(StoreError::io("write temp file", &path))?;
        Ok(temp)
    }
}

impl Locked<'_> {
    /// Scan, removing stale temp files (safe: we hold the lock, and only lock holders
    /// create them).
    pub(crate) fn scan_cleaning(&mut self, read_owners: bool) -> Result<Scan, StoreError> {
        let scan = self.store.scan_with(read_owners)?;
        for temp in &scan.temps {
            remove_if_present(temp, "remove stale temp file")?;
        }
        Ok(scan)
    }

    /// The addresses that have a lease file (owners not read).
    pub(crate) fn lease_names(&self) -> Result<std::collections::HashSet<IpAddr>, StoreError> {
        Ok(self
            .store
            .scan_with(false)?
            .leases
            .into_iter()
            .map(|(ip, _)| ip)
            .collect())
    }

    /// Write the lease content once; link it to each address with [`Locked::link_lease`].
    /// `durable`: fsync the content before it is linked (else [`Store::sync_leases`] must
    /// follow before the allocation is reported).
    pub(crate) fn lease_content(
        &self,
        id: &str,
        ifname: &str,
        durable: bool,
    ) -> Result<TempFile, StoreError> {
        self.store
            .write_temp(format!("{}\r\n{ifname}", id.trim()).as_bytes(), durable)
    }

    /// Atomically create the lease `<ip>` from `temp`; `Ok(false)` if the address is taken.
    pub(crate) fn link_lease(&self, temp: &mut TempFile, ip: IpAddr) -> Result<bool, StoreError> {
        let path = self.store.lease_path(ip);
        let linked = match temp {
            TempFile::Named { path: from, .. } => fs::hard_link(&*from, &path),
            TempFile::Anonymous { file, content } => match link_anonymous(file, &path) {
                // No /proc to link through: the same content under a name instead.
                Err(e)
                    if e.kind() == ErrorKind::NotFound && !Path::new("/proc/self/fd").exists() =>
                {
                    let durable = true;
                    *temp = self.store.write_named_temp(content, durable)?;
                    return self.link_lease(temp, ip);
                }
                r => r,
            },
        };
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(StoreError::io("link lease", path)(e)),
        }
    }

    pub(crate) fn remove_lease(&self, ip: IpAddr) -> Result<(), StoreError> {
        remove_if_present(&self.store.lease_path(ip), "remove lease")
    }

    /// Finish an allocation: drop the temp name and make the new links durable.
    pub(crate) fn commit(&self, temp: TempFile, durable: bool) -> Result<(), StoreError> {
        temp.remove()?;
        if durable {
            self.store.sync_dir()?;
        }
        Ok(())
    }

    /// Opens `last_reserved_ip.<N>` and reads its hint; a missing file is no hint (it is
    /// created by the first [`LastReserved::set`]).
    pub(crate) fn last_reserved(&self, set_index: usize) -> Result<LastReserved, StoreError> {
        let path = self
            .store
            .dir
            .join(format!("{LAST_RESERVED_PREFIX}{set_index}"));
        let opened = OpenOptions::new().read(true).write(true).open(&path);
        let mut file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Ok(LastReserved {
                    path,
                    file: None,
                    len: 0,
                    hint: None,
                });
            }
            Err(e) => return Err(StoreError::io("open", &path)(e)),
        };
        let mut text = Vec::with_capacity(48);
        file.read_to_end(&mut text)
            .map_err(StoreError::io("read", &path))?;
        // Only a round-robin hint: garbage content just restarts at rangeStart.
        let hint = std::str::from_utf8(&text)
            .ok()
            .and_then(|t| t.trim().parse().ok());
        Ok(LastReserved {
            path,
            file: Some(file),
            len: text.len() as u64,
            hint,
        })
    }

    /// Release every lease of the pair (and legacy leases of `id`) in this network.
    /// Idempotent: releasing nothing is success. Returns the released addresses.
    pub fn release(&mut self, id: &str, ifname: &str) -> Result<Vec<IpAddr>, StoreError> {
        let scan = self.scan_cleaning(true)?;
        let mine = scan
            .leases
            .into_iter()
            .filter(|(_, owner)| owner.as_ref().is_some_and(|o| o.matches(id, ifname)))
            .map(|(ip, _)| ip)
            .collect();
        self.remove_all(mine)
    }

    /// Addresses leased to the pair (or legacy leases of `id`), sorted.
    pub fn find(&self, id: &str, ifname: &str) -> Result<Vec<IpAddr>, StoreError> {
        Ok(self
            .store
            .scan()?
            .leases
            .into_iter()
            .filter(|(_, owner)| owner.as_ref().is_some_and(|o| o.matches(id, ifname)))
            .map(|(ip, _)| ip)
            .collect())
    }

    /// Every lease file, sorted by address; owner `None` = torn or unreadable content.
    pub fn leases(&self) -> Result<Vec<(IpAddr, Option<Owner>)>, StoreError> {
        Ok(self.store.scan()?.leases)
    }

    /// Release every lease whose owner is not in `valid` (pairs of container id, ifname;
    /// a legacy lease survives if its id appears), every torn lease file, and leftover
    /// temp files. Returns the released addresses.
    pub fn gc(&mut self, valid: &[(String, String)]) -> Result<Vec<IpAddr>, StoreError> {
        let scan = self.scan_cleaning(true)?;
        let stale = scan
            .leases
            .into_iter()
            .filter(|(_, owner)| match owner {
                None => true,
                Some(o) => !valid.iter().any(|(id, ifname)| o.matches(id, ifname)),
            })
            .map(|(ip, _)| ip)
            .collect();
        self.remove_all(stale)
    }

    /// Addresses of `set` still available (capacity minus leased addresses in its ranges).
    pub fn free_count(&self, set: &RangeSet) -> Result<u128, StoreError> {
        let capacity = set
            .0
            .iter()
            .fold(0u128, |acc, r| acc.saturating_add(r.capacity()));
        let used = self
            .store
            .scan()?
            .leases
            .iter()
            .filter(|(ip, _)| set.range_for(*ip).is_some_and(|r| r.gateway != Some(*ip)))
            .count();
        Ok(capacity.saturating_sub(used as u128))
    }

    /// No fsync: a release undone by a power loss is a lease of a pod that did not survive
    /// it either, which DEL or GC reclaims; never an address handed out twice.
    fn remove_all(&self, ips: Vec<IpAddr>) -> Result<Vec<IpAddr>, StoreError> {
        for ip in &ips {
            self.remove_lease(*ip)?;
        }
        Ok(ips)
    }

    /// [`Locked::release`] when the caller knows the pair's addresses (DEL's `prevResult`):
    /// reads only those lease files instead of every one. Falls back to the full release
    /// when any of them is not the pair's (already released, or the hint is wrong). A lease
    /// of the pair outside the hint can only come from an ADD that crashed and was retried
    /// without a DEL in between; it stays until GC, as its address is not in use.
    pub fn release_hinted(
        &mut self,
        id: &str,
        ifname: &str,
        hint: &[IpAddr],
    ) -> Result<Vec<IpAddr>, StoreError> {
        let mut mine = Vec::with_capacity(hint.len());
        for ip in hint {
            let path = self.store.lease_path(*ip);
            match fs::read(&path) {
                Ok(c) if Owner::parse(&c).is_some_and(|o| o.matches(id, ifname)) => mine.push(*ip),
                Ok(_) => return self.release(id, ifname),
                Err(e) if e.kind() == ErrorKind::NotFound => return self.release(id, ifname),
                Err(e) => return Err(StoreError::io("read lease", path)(e)),
            }
        }
        if mine.is_empty() {
            return self.release(id, ifname);
        }
        self.remove_all(mine)
    }
}

fn remove_if_present(path: &Path, op: &'static str) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(StoreError::io(op, path)(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_parsing() {
        let o = Owner::parse(b"c1\r\neth0").expect("pair");
        assert_eq!((o.id.as_str(), o.ifname.as_str()), ("c1", "eth0"));
        assert!(o.matches("c1", "eth0") && !o.matches("c1", "eth1") && !o.matches("c2", "eth0"));
        let legacy = Owner::parse(b"c1\n").expect("legacy");
        assert_eq!(legacy.ifname, "");
        assert!(legacy.matches("c1", "eth7"));
        assert_eq!(Owner::parse(b""), None);
        assert_eq!(Owner::parse(b"  \r\n"), None);
        assert_eq!(Owner::parse(b"\xff\xfe"), None);
    }

    #[test]
    fn both_kinds_of_temp_file_link_into_a_complete_lease_and_leave_no_name() {
        // The named kind is what filesystems without O_TMPFILE get.
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), "t1").expect("open");
        let content = b"c1\r\neth0";
        let locked = store.lock().expect("lock");
        let temps = [
            store.write_temp(content, false).expect("anonymous"),
            store.write_named_temp(content, false).expect("named"),
        ];
        for (n, mut temp) in temps.into_iter().enumerate() {
            let anonymous = matches!(temp, TempFile::Anonymous { .. });
            assert_eq!(anonymous, n == 0, "this filesystem has O_TMPFILE");
            let ip: IpAddr = format!("10.9.0.{}", n + 2).parse().expect("ip");
            assert!(locked.link_lease(&mut temp, ip).expect("link"));
            assert!(
                !locked.link_lease(&mut temp, ip).expect("taken"),
                "EEXIST is taken"
            );
            locked.commit(temp, true).expect("commit");
            assert_eq!(
                fs::read(store.dir().join(ip.to_string())).expect("lease"),
                content
            );
        }
        let mut names: Vec<String> = fs::read_dir(store.dir())
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["10.9.0.2", "10.9.0.3", "lock"]);
    }

    #[test]
    fn rejects_bad_network_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        for bad in ["", ".", "..", "a/b", "x\0"] {
            assert!(matches!(
                Store::open(dir.path(), bad),
                Err(StoreError::InvalidNetworkName(_))
            ));
        }
    }
}
