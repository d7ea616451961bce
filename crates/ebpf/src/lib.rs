//! weft's eBPF fast path (`datapath: ebpf`).
//!
//! **Owns:** the BPF programs (C in `bpf/*.bpf.c`, compiled by `build.rs` with Debian's clang
//! and embedded here), their maps, and their life in the kernel through aya 0.14: loading,
//! pinning under one bpffs directory (default [`DEFAULT_PIN_DIR`]), attaching to a pod's
//! host-side veth on tcx ingress (the pod's egress), the endpoint entries the programs read,
//! the decision counters they keep, and removing all of it.
//!
//! The first slice has one program, `weft_from_pod` (`bpf/from_pod.bpf.c`): IPv4 from a local
//! pod to a local pod, neither policed, is handed to the destination with
//! `bpf_redirect_peer`; everything else goes on down the kernel path (`TC_ACT_OK`).
//!
//! Pins, under the pin directory:
//!
//! ```text
//! weft_endpoints        hash: pod IPv4 (network order) → EndpointValue
//! weft_stats            per-CPU array: [0] redirected, [1] passed
//! from_pod-<hash>       the program; <hash> is the object's, so an upgraded weftd loads
//!                       its own and moves every attachment over atomically
//! links/<host ifname>   one tcx link per attached pod veth
//! ```
//!
//! The pins keep everything in the kernel across weftd restarts: a restarted weftd reopens
//! them and re-attaches nothing that is still attached.
//!
//! **Must not:** decide policy (weftd says which pods are policed), spawn `tc`/`bpftool`/`ip`,
//! be linked by the plugin binaries (they stay synchronous and small; weftd does the BPF
//! work when the plugin's ADD asks it to attach), or take traffic it cannot deliver exactly
//! as the kernel path would. Synchronous: every call is a few syscalls.

use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use aya::EbpfLoader;
use aya::maps::{HashMap, Map, MapData, MapError, PerCpuArray};
use aya::pin::PinError;
use aya::programs::links::{FdLink, LinkError, PinnedLink};
use aya::programs::tc::{SchedClassifierLink, TcAttachType};
use aya::programs::{ProgramError, SchedClassifier};

/// Where weftd pins its programs and maps unless told otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/weft";

/// The compiled `bpf/from_pod.bpf.c`.
static FROM_POD: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/from_pod.bpf.o"));

const PROG: &str = "weft_from_pod";
const ENDPOINTS: &str = "weft_endpoints";
const STATS: &str = "weft_stats";
const LINKS: &str = "links";
/// `statfs(2)` magic of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// The pod is selected by a NetworkPolicy: its packets keep the nftables path.
pub const FLAG_POLICED: u32 = 1;

/// One pod address in `weft_endpoints`; the layout of `struct weft_endpoint` in the C.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointValue {
    /// The host side of the pod's veth (bpf_redirect_peer's target).
    pub ifindex: u32,
    pub flags: u32,
    /// The pod's own MAC.
    pub mac: [u8; 6],
    /// The MAC the pod sees as its gateway's (the bridge's, or the host veth's in ptp mode).
    pub gw_mac: [u8; 6],
}

// SAFETY: plain integers and byte arrays, no padding (4 + 4 + 6 + 6 = 20, alignment 4).
unsafe impl aya::Pod for EndpointValue {}

/// What the programs decided, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Delivered to a local pod by `bpf_redirect_peer`.
    pub redirected: u64,
    /// Handed on to the kernel path.
    pub passed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{dir}: not on a bpffs (mount one there, or choose a directory on one)")]
    NotBpffs { dir: PathBuf },
    #[error("mounting bpffs on {dir}: {source}")]
    Mount { dir: PathBuf, source: io::Error },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("loading the BPF object: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    #[error("program {PROG}: {0}")]
    Program(#[source] Box<ProgramError>),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: Box<MapError>,
    },
    #[error("pinning {path}: {source}")]
    Pin {
        path: PathBuf,
        #[source]
        source: Box<PinError>,
    },
    #[error("link {path}: {source}")]
    Link {
        path: PathBuf,
        #[source]
        source: Box<LinkError>,
    },
    #[error("interface {0:?} is not a name weft gives a host veth")]
    BadInterface(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn prog_err(e: ProgramError) -> Error {
    Error::Program(Box::new(e))
}

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> Error {
    move |e| Error::Map {
        name,
        source: Box::new(e),
    }
}

/// The loaded, pinned fast path, as weftd holds it.
pub struct Datapath {
    dir: PathBuf,
    prog: SchedClassifier,
    prog_id: u32,
    endpoints: HashMap<MapData, u32, EndpointValue>,
    stats: PerCpuArray<MapData, u64>,
}

impl std::fmt::Debug for Datapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datapath")
            .field("dir", &self.dir)
            .field("prog_id", &self.prog_id)
            .finish()
    }
}

/// FNV-1a: names the program pin after the object, so a different build is told apart.
fn object_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn statfs_magic(path: &Path) -> Result<i64, io::Error> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statfs writes only into `buf`, which is large enough; `c` is NUL-terminated.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut buf) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // f_type is i64 on x86_64, not everywhere
    Ok(buf.f_type as i64)
}

/// Makes sure `dir` exists on a bpffs. When `/sys/fs/bpf` (where `dir` lives by default) has
/// no bpffs mounted yet, as on a host where nothing BPF ran, one is mounted there — what
/// every BPF agent does; any other directory must already be on one.
pub fn ensure_bpffs(dir: &Path) -> Result<(), Error> {
    let root = Path::new("/sys/fs/bpf");
    if dir.starts_with(root) && statfs_magic(root).map_err(io_err(root))? != BPF_FS_MAGIC {
        let c = c"bpf";
        let target = c"/sys/fs/bpf";
        // SAFETY: all pointers are valid NUL-terminated strings or null (no data).
        let rc =
            unsafe { libc::mount(c.as_ptr(), target.as_ptr(), c.as_ptr(), 0, std::ptr::null()) };
        if rc != 0 {
            return Err(Error::Mount {
                dir: root.to_path_buf(),
                source: io::Error::last_os_error(),
            });
        }
    }
    // The nearest directory there is: `dir` and its parents may be made below.
    let probe = dir.ancestors().find(|p| p.exists()).unwrap_or(root);
    if statfs_magic(probe).map_err(io_err(probe))? != BPF_FS_MAGIC {
        return Err(Error::NotBpffs {
            dir: dir.to_path_buf(),
        });
    }
    std::fs::create_dir_all(dir.join(LINKS)).map_err(io_err(dir))?;
    Ok(())
}

impl Datapath {
    /// Opens the fast path pinned in `dir`, loading and pinning it first when this build's
    /// program is not there (first start, or an upgrade: then every pinned link is moved
    /// to the new program in one `bpf_link_update` each, and the old program unpinned).
    /// Maps are reused by name, so endpoint entries survive both.
    pub fn open(dir: &Path) -> Result<Datapath, Error> {
        ensure_bpffs(dir)?;
        let prog_pin = dir.join(format!("from_pod-{:016x}", object_hash(FROM_POD)));
        let fresh = !prog_pin.exists();
        if fresh {
            let mut obj = EbpfLoader::new()
                .default_map_pin_directory(dir)
                .load(FROM_POD)
                .map_err(|e| Error::Load(Box::new(e)))?;
            let prog: &mut SchedClassifier = obj
                .program_mut(PROG)
                .ok_or_else(|| prog_err(ProgramError::NotLoaded))?
                .try_into()
                .map_err(prog_err)?;
            prog.load().map_err(prog_err)?;
            prog.pin(&prog_pin).map_err(|e| Error::Pin {
                path: prog_pin.clone(),
                source: Box::new(e),
            })?;
        }
        let mut dp = Datapath::from_pins(dir, &prog_pin)?;
        if fresh {
            dp.adopt_links()?;
            dp.unpin_other_programs(&prog_pin)?;
        }
        Ok(dp)
    }

    fn from_pins(dir: &Path, prog_pin: &Path) -> Result<Datapath, Error> {
        let prog = SchedClassifier::from_pin(prog_pin).map_err(prog_err)?;
        let prog_id = prog.info().map_err(prog_err)?.id();
        let endpoints = open_map(dir, ENDPOINTS)?;
        let endpoints = HashMap::try_from(endpoints).map_err(map_err(ENDPOINTS))?;
        let stats = PerCpuArray::try_from(open_map(dir, STATS)?).map_err(map_err(STATS))?;
        Ok(Datapath {
            dir: dir.to_path_buf(),
            prog,
            prog_id,
            endpoints,
            stats,
        })
    }

    /// Points every pinned link at this program (after an upgrade).
    fn adopt_links(&mut self) -> Result<(), Error> {
        for path in self.link_pins()? {
            let pinned = PinnedLink::from_pin(&path).map_err(|e| Error::Link {
                path: path.clone(),
                source: Box::new(e),
            })?;
            let fd: FdLink = pinned.into();
            let link = SchedClassifierLink::try_from(fd).map_err(|e| Error::Link {
                path: path.clone(),
                source: Box::new(e),
            })?;
            let id = self.prog.attach_to_link(link).map_err(prog_err)?;
            // The pin holds the link; our copy of its fd may go.
            let _ = self.prog.take_link(id).map_err(prog_err)?;
        }
        Ok(())
    }

    fn unpin_other_programs(&self, keep: &Path) -> Result<(), Error> {
        for e in std::fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let p = e.map_err(io_err(&self.dir))?.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name.starts_with("from_pod-") && p != keep {
                std::fs::remove_file(&p).map_err(io_err(&p))?;
            }
        }
        Ok(())
    }

    fn link_pins(&self) -> Result<Vec<PathBuf>, Error> {
        let links = self.dir.join(LINKS);
        let mut out = Vec::new();
        for e in std::fs::read_dir(&links).map_err(io_err(&links))? {
            out.push(e.map_err(io_err(&links))?.path());
        }
        out.sort();
        Ok(out)
    }

    /// The pin directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The kernel's id of the loaded program.
    pub fn program_id(&self) -> u32 {
        self.prog_id
    }

    fn link_pin(&self, host_if: &str) -> Result<PathBuf, Error> {
        if host_if.is_empty() || host_if.contains('/') || host_if.starts_with('.') {
            return Err(Error::BadInterface(host_if.to_string()));
        }
        Ok(self.dir.join(LINKS).join(host_if))
    }

    /// Whether our program is attached on tcx ingress of `host_if` (in this thread's
    /// network namespace).
    pub fn is_attached(&self, host_if: &str) -> Result<bool, Error> {
        Ok(tcx_ingress_programs(host_if)?.contains(&self.prog_id))
    }

    /// Attaches the program to tcx ingress of `host_if` and pins the link, unless it is
    /// attached already (a restart, a repeated ADD): then nothing changes. A pin left by a
    /// veth that is gone (its link dead) is replaced. Returns whether it attached anew.
    pub fn attach(&mut self, host_if: &str) -> Result<bool, Error> {
        let pin = self.link_pin(host_if)?;
        if pin.exists() {
            if self.is_attached(host_if)? {
                return Ok(false);
            }
            std::fs::remove_file(&pin).map_err(io_err(&pin))?;
        }
        let id = self
            .prog
            .attach(host_if, TcAttachType::Ingress)
            .map_err(prog_err)?;
        let link: FdLink = self
            .prog
            .take_link(id)
            .map_err(prog_err)?
            .try_into()
            .map_err(|e| Error::Link {
                path: pin.clone(),
                source: Box::new(e),
            })?;
        // Dropping the PinnedLink closes our fd; the pin keeps the link attached.
        link.pin(&pin).map_err(|e| Error::Pin {
            path: pin.clone(),
            source: Box::new(e),
        })?;
        Ok(true)
    }

    /// Detaches the program from `host_if` now, and removes the link's pin. Absent is fine.
    pub fn detach(&mut self, host_if: &str) -> Result<(), Error> {
        let pin = self.link_pin(host_if)?;
        unpin_link(&pin)
    }

    /// The host veths with a pinned link.
    pub fn attached(&self) -> Result<Vec<String>, Error> {
        Ok(self
            .link_pins()?
            .iter()
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_string))
            .collect())
    }

    /// Puts (or replaces) one pod address.
    pub fn insert(&mut self, addr: Ipv4Addr, value: EndpointValue) -> Result<(), Error> {
        self.endpoints
            .insert(u32::from_ne_bytes(addr.octets()), value, 0)
            .map_err(map_err(ENDPOINTS))
    }

    /// Removes one pod address; absent is fine.
    pub fn remove(&mut self, addr: Ipv4Addr) -> Result<(), Error> {
        match self.endpoints.remove(&u32::from_ne_bytes(addr.octets())) {
            Ok(()) => Ok(()),
            Err(MapError::KeyNotFound) => Ok(()),
            Err(MapError::SyscallError(e)) if e.io_error.kind() == io::ErrorKind::NotFound => {
                Ok(())
            }
            Err(e) => Err(map_err(ENDPOINTS)(e)),
        }
    }

    /// Every pod address in the map.
    pub fn endpoints(&self) -> Result<Vec<(Ipv4Addr, EndpointValue)>, Error> {
        let mut out = Vec::new();
        for kv in self.endpoints.iter() {
            let (k, v) = kv.map_err(map_err(ENDPOINTS))?;
            out.push((Ipv4Addr::from(k.to_ne_bytes()), v));
        }
        out.sort_by_key(|(a, _)| *a);
        Ok(out)
    }

    /// The decision counters, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, Error> {
        let sum = |i: u32| -> Result<u64, Error> {
            let v = self.stats.get(&i, 0).map_err(map_err(STATS))?;
            Ok(v.iter().copied().fold(0u64, u64::wrapping_add))
        };
        Ok(Counters {
            redirected: sum(0)?,
            passed: sum(1)?,
        })
    }
}

/// Detaches the link pinned at `path` (BPF_LINK_DETACH) and removes the pin. Only removing
/// the pin would detach it too, but later: bpffs drops its reference after an RCU grace
/// period, from a work queue, so DEL would return with the program still attached.
fn unpin_link(path: &Path) -> Result<(), Error> {
    match sys::obj_get(path) {
        Ok(fd) => {
            // ENOLINK/EINVAL: the device went already, and the link with it.
            if let Err(e) = sys::link_detach(&fd)
                && !matches!(e.raw_os_error(), Some(libc::ENOLINK) | Some(libc::EINVAL))
            {
                return Err(io_err(path)(e));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(path)(e)),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// The two bpf(2) commands aya 0.14 does not expose.
mod sys {
    use std::io;
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt as _;
    use std::path::Path;

    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_LINK_DETACH: libc::c_long = 34;

    /// `union bpf_attr`, as large as the fields these commands use (the kernel reads
    /// `size` bytes and takes the rest as zero).
    #[repr(C, align(8))]
    #[derive(Default)]
    struct Attr([u32; 8]);

    fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
        // SAFETY: `attr` is a valid, initialised bpf_attr prefix of the size passed.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                attr as *mut Attr,
                std::mem::size_of::<Attr>(),
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc)
        }
    }

    /// BPF_OBJ_GET: a new fd for the object pinned at `path`.
    pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
        let c = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let ptr = c.as_ptr() as u64;
        let mut attr = Attr::default();
        // pathname (u64), then bpf_fd, file_flags: zero.
        attr.0[0] = ptr as u32;
        attr.0[1] = (ptr >> 32) as u32;
        let fd = bpf(BPF_OBJ_GET, &mut attr)?;
        let fd = i32::try_from(fd).map_err(|_| io::Error::other("fd out of range"))?;
        // SAFETY: the kernel just returned this fd to us; nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// BPF_LINK_DETACH: detach the link now, whoever else holds it.
    pub fn link_detach(link: &OwnedFd) -> io::Result<()> {
        use std::os::fd::AsRawFd as _;
        let mut attr = Attr::default();
        attr.0[0] = u32::try_from(link.as_raw_fd()).map_err(|_| io::Error::other("bad fd"))?;
        bpf(BPF_LINK_DETACH, &mut attr).map(|_| ())
    }
}

/// The ids of the programs on tcx ingress of `ifname` (in this thread's namespace), weft's
/// or anyone's: what a check for leftovers reads.
pub fn tcx_ingress_programs(ifname: &str) -> Result<Vec<u32>, Error> {
    let (_, progs) = SchedClassifier::query_tcx(ifname, TcAttachType::Ingress).map_err(prog_err)?;
    Ok(progs.iter().map(|p| p.id()).collect())
}

fn open_map(dir: &Path, name: &'static str) -> Result<Map, Error> {
    let data = MapData::from_pin(dir.join(name)).map_err(map_err(name))?;
    Map::from_map_data(data).map_err(map_err(name))
}

/// Removes everything weft pinned in `dir`: links first (each detached at once), then the
/// programs and maps, then the directory. Nothing there is fine.
/// What `datapath: nft` and uninstalling leave: no pins, programs, maps or qdiscs (tcx
/// makes none).
pub fn remove_all(dir: &Path) -> Result<bool, Error> {
    if !dir.exists() {
        return Ok(false);
    }
    let links = dir.join(LINKS);
    if links.exists() {
        for e in std::fs::read_dir(&links).map_err(io_err(&links))? {
            unpin_link(&e.map_err(io_err(&links))?.path())?;
        }
        std::fs::remove_dir(&links).map_err(io_err(&links))?;
    }
    for e in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let p = e.map_err(io_err(dir))?.path();
        std::fs::remove_file(&p).map_err(io_err(&p))?;
    }
    std::fs::remove_dir(dir).map_err(io_err(dir))?;
    Ok(true)
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_layout_matches_the_c_struct() {
        assert_eq!(std::mem::size_of::<EndpointValue>(), 20);
    }

    #[test]
    fn macs_parse() {
        assert_eq!(
            parse_mac("0a:58:0A:f4:01:02"),
            Some([0x0a, 0x58, 0x0a, 0xf4, 1, 2])
        );
        assert_eq!(parse_mac("0a:58:0a:f4:01"), None);
        assert_eq!(parse_mac("0a:58:0a:f4:01:02:03"), None);
        assert_eq!(parse_mac("zz:58:0a:f4:01:02"), None);
    }
}
