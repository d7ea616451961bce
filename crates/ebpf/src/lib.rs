//! weft's eBPF fast path (`datapath: ebpf`).
//!
//! **Owns:** the BPF programs (C in `bpf/*.bpf.c`, compiled by `build.rs` with Debian's clang
//! and embedded here), their maps, and their life in the kernel through aya 0.14: loading,
//! pinning under one bpffs directory (default [`DEFAULT_PIN_DIR`]), attaching to a pod's
//! host-side veth on tcx ingress (the pod's egress), the endpoint entries the programs read,
//! the decision counters they keep, and removing all of it.
//!
//! Two programs, one object (`bpf/datapath.bpf.c`), sharing its maps:
//!
//! - `weft_from_pod` on each pod's host veth: IPv4 from a known, unpoliced pod to a local
//!   unpoliced pod is handed over with `bpf_redirect_peer`; to a pod on a peer node (a block
//!   in `weft_peers`) it goes out with `bpf_fib_lookup` + `bpf_redirect_neigh`, if the FIB
//!   picks weft's route to that peer: out of the uplink (host-gw), or into `weft.vx`
//!   (VXLAN), whose own neighbour and FDB entries encapsulate it as on the kernel path;
//! - `weft_from_uplink` on the node's uplink and on `weft.vx`: IPv4 from a pod on a peer
//!   node to a local unpoliced pod is delivered with `bpf_redirect_peer`.
//!
//! Everything else goes on down the kernel path (`TC_ACT_OK`), and so does every packet of
//! a connection the kernel path carries (`weft_kernel_flows`, e.g. the replies of a Service's
//! NAT): the C file's header says what is taken and why.
//!
//! Pins, under the pin directory:
//!
//! ```text
//! weft_endpoints        hash: pod IPv4 (network order) → EndpointValue
//! weft_peers            LPM trie: peer pod block → PeerValue (next hop, device)
//! weft_kernel_flows     LRU hash: (pod IPv4, port, protocol) of kernel-path connections
//! weft_fast_conns       LRU hash: connections the fast path carried (both directions under
//!                       one key) → when last seen, the end that opened it, cut; policed
//!                       pods' established ones stay, cut ones are dropped
//! weft_config           array: [0] flags (1: keep policed pods' established connections,
//!                       2: drop those marked cut)
//! weft_stats            per-CPU array, slots as in Counters: [0] local redirect,
//!                       [1] passed, [2] to a peer, [3] from a peer, [4] kernel flow,
//!                       [5] kept (a policed pod's established fast connection),
//!                       [6] dropped as cut
//! from_pod-<hash>       the programs; <hash> is the object's, so an upgraded weftd loads
//! from_uplink-<hash>    its own and moves every attachment over atomically
//! links/<host ifname>   one tcx link per attached pod veth
//! uplinks/<ifname>      one tcx link per attached arrival device (uplink, weft.vx);
//!                       a dot in a name is pinned as %2e (bpffs refuses dots)
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
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap, Map, MapData, MapError, PerCpuArray};
use aya::pin::PinError;
use aya::programs::links::{FdLink, LinkError, PinnedLink};
use aya::programs::tc::{SchedClassifierLink, TcAttachType};
use aya::programs::{ProgramError, SchedClassifier};

/// Where weftd pins its programs and maps unless told otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/weft";

/// The compiled `bpf/datapath.bpf.c`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/datapath.bpf.o"));

const PROG: &str = "weft_from_pod";
const UPLINK_PROG: &str = "weft_from_uplink";
/// Pin name prefixes of the two programs (`<prefix><hash>`).
const PROG_PIN: &str = "from_pod-";
const UPLINK_PROG_PIN: &str = "from_uplink-";
const ENDPOINTS: &str = "weft_endpoints";
const PEERS: &str = "weft_peers";
const STATS: &str = "weft_stats";
const KERNEL_FLOWS: &str = "weft_kernel_flows";
const FAST_CONNS: &str = "weft_fast_conns";
const CONFIG: &str = "weft_config";
/// `weft_config[0]` bits: policed pods' established fast connections stay on the fast path;
/// those marked cut are dropped.
const CFG_KEEP_ESTABLISHED: u32 = 1;
const CFG_CUT: u32 = 2;
/// `weft_conn.flags`: the plan denies the connection.
const CONN_CUT: u8 = 1;

/// What a pod that becomes policed does with the connections the fast path carried for it
/// (`weft_config`). A new connection of a policed pod always meets nftables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Established {
    /// Every packet of a policed pod meets nftables, which takes a connection it has not
    /// seen as new. What an unconfigured map means.
    Rejudge,
    /// They stay on the fast path, as conntrack keeps established connections (weftd's
    /// default).
    Keep,
    /// They stay, except those marked cut ([`Datapath::set_cut`]), whose packets are
    /// dropped both ways (`--policy-cut-established`).
    KeepUnlessCut,
}

/// `struct weft_conn_key`: both ends of a connection, the lower (address, port) first, all
/// as in the packet (network order).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnKey {
    lo_addr: u32,
    hi_addr: u32,
    lo_port: u16,
    hi_port: u16,
    proto: u8,
    pad: [u8; 3],
}

// SAFETY: integers and a byte array, no padding (4 + 4 + 2 + 2 + 1 + 3 = 16).
unsafe impl aya::Pod for ConnKey {}

/// `struct weft_conn`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct ConnRaw {
    seen: u64,
    orig_addr: u32,
    orig_port: u16,
    flags: u8,
    pad: u8,
}

// SAFETY: integers, no padding (8 + 4 + 2 + 1 + 1 = 16).
unsafe impl aya::Pod for ConnRaw {}

/// A connection the fast path carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FastConn {
    pub key: ConnKey,
    /// The protocol (6, 17, 1).
    pub protocol: u8,
    /// The end that opened it (a SYN's source, else the first packet's): address and port
    /// (the ICMP echo identifier for ICMP).
    pub orig: (Ipv4Addr, u16),
    /// The other end.
    pub resp: (Ipv4Addr, u16),
    /// Marked cut: its packets are dropped under [`Established::KeepUnlessCut`].
    pub cut: bool,
}

impl FastConn {
    fn of(key: ConnKey, v: &ConnRaw) -> FastConn {
        let end = |a: u32, p: u16| (Ipv4Addr::from(a.to_ne_bytes()), u16::from_be(p));
        let lo = end(key.lo_addr, key.lo_port);
        let hi = end(key.hi_addr, key.hi_port);
        let orig = end(v.orig_addr, v.orig_port);
        let resp = if orig == lo { hi } else { lo };
        FastConn {
            key,
            protocol: key.proto,
            orig,
            resp,
            cut: v.flags & CONN_CUT != 0,
        }
    }
}
const LINKS: &str = "links";
const UPLINKS: &str = "uplinks";
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

/// A peer node's pod block in `weft_peers`: the route weft programmed to it; the layout of
/// `struct weft_peer` in the C. The programs send to the block only when the FIB picks
/// exactly this next hop and device.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerValue {
    /// The route's next hop: the peer node's address (host-gw), or its VTEP address on
    /// `weft.vx` (VXLAN).
    pub gateway: Ipv4Addr,
    /// The device the route goes out of: the uplink, or `weft.vx`.
    pub ifindex: u32,
}

/// The map's form of [`PeerValue`] (address in network order).
#[repr(C)]
#[derive(Clone, Copy)]
struct PeerRaw {
    gateway: u32,
    ifindex: u32,
}

// SAFETY: two u32, no padding.
unsafe impl aya::Pod for PeerRaw {}

/// What the programs decided, summed over CPUs (the slots of `weft_stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// [0] Delivered from a local pod to a local pod by `bpf_redirect_peer`.
    pub redirected: u64,
    /// [1] A pod's packet handed on to the kernel path (from a local pod, or from a peer's
    /// pod to a local one; any reason). The node's own traffic is not counted.
    pub passed: u64,
    /// [2] Sent from a local pod to a peer node by `bpf_redirect_neigh`.
    pub to_peer: u64,
    /// [3] Delivered from a peer node to a local pod by `bpf_redirect_peer`.
    pub from_peer: u64,
    /// [4] Passed because the flow belongs to the kernel path (also counted in `passed`).
    pub kernel_flow: u64,
    /// [5] A policed pod's packet found to belong to a connection the fast path carried
    /// before, which stays there.
    pub kept: u64,
    /// [6] Dropped: a packet of a fast connection marked cut.
    pub cut: u64,
}

/// How full one of the fast path's maps is: a full endpoint map leaves new pods on the
/// kernel path, a full peer map new peers, and a full kernel-flow map evicts the oldest
/// flows (whose replies could then take the fast path past conntrack).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapFill {
    pub name: &'static str,
    pub entries: u32,
    pub max_entries: u32,
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
    #[error("program: {0}")]
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
    /// `weft_from_pod`, for the pods' host veths.
    prog: SchedClassifier,
    prog_id: u32,
    /// `weft_from_uplink`, for the node's uplink.
    uplink_prog: SchedClassifier,
    uplink_prog_id: u32,
    endpoints: HashMap<MapData, u32, EndpointValue>,
    peers: LpmTrie<MapData, u32, PeerRaw>,
    stats: PerCpuArray<MapData, u64>,
}

impl std::fmt::Debug for Datapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datapath")
            .field("dir", &self.dir)
            .field("prog_id", &self.prog_id)
            .field("uplink_prog_id", &self.uplink_prog_id)
            .finish()
    }
}

/// FNV-1a: names the program pins after the object, so a different build is told apart.
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
    for sub in [LINKS, UPLINKS] {
        std::fs::create_dir_all(dir.join(sub)).map_err(io_err(dir))?;
    }
    Ok(())
}

/// Which of the two programs a link or pin belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Pod,
    Uplink,
}

impl Role {
    fn links_dir(self) -> &'static str {
        match self {
            Role::Pod => LINKS,
            Role::Uplink => UPLINKS,
        }
    }
}

fn load_and_pin(dir: &Path, pins: &[(&str, PathBuf)]) -> Result<(), Error> {
    let mut obj = EbpfLoader::new()
        .default_map_pin_directory(dir)
        .load(OBJECT)
        .map_err(|e| Error::Load(Box::new(e)))?;
    for (name, pin) in pins {
        let prog: &mut SchedClassifier = obj
            .program_mut(name)
            .ok_or_else(|| prog_err(ProgramError::NotLoaded))?
            .try_into()
            .map_err(prog_err)?;
        prog.load().map_err(prog_err)?;
        prog.pin(pin).map_err(|e| Error::Pin {
            path: pin.clone(),
            source: Box::new(e),
        })?;
    }
    Ok(())
}

fn open_prog(pin: &Path) -> Result<(SchedClassifier, u32), Error> {
    let prog = SchedClassifier::from_pin(pin).map_err(prog_err)?;
    let id = prog.info().map_err(prog_err)?.id();
    Ok((prog, id))
}

impl Datapath {
    /// Opens the fast path pinned in `dir`, loading and pinning it first when this build's
    /// programs are not there (first start, or an upgrade: then every pinned link is moved
    /// to the new program in one `bpf_link_update` each, and the old programs unpinned).
    /// Maps are reused by name, so endpoint and peer entries survive both.
    pub fn open(dir: &Path) -> Result<Datapath, Error> {
        ensure_bpffs(dir)?;
        let hash = object_hash(OBJECT);
        let prog_pin = dir.join(format!("{PROG_PIN}{hash:016x}"));
        let uplink_pin = dir.join(format!("{UPLINK_PROG_PIN}{hash:016x}"));
        let fresh = !prog_pin.exists() || !uplink_pin.exists();
        if fresh {
            // A half-pinned pair (a crash between the two pins) is loaded again whole.
            for p in [&prog_pin, &uplink_pin] {
                match std::fs::remove_file(p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err(p)(e)),
                }
            }
            load_and_pin(
                dir,
                &[(PROG, prog_pin.clone()), (UPLINK_PROG, uplink_pin.clone())],
            )?;
        }
        let (prog, prog_id) = open_prog(&prog_pin)?;
        let (uplink_prog, uplink_prog_id) = open_prog(&uplink_pin)?;
        let endpoints = open_map(dir, ENDPOINTS)?;
        let endpoints = HashMap::try_from(endpoints).map_err(map_err(ENDPOINTS))?;
        let peers = LpmTrie::try_from(open_map(dir, PEERS)?).map_err(map_err(PEERS))?;
        let stats = PerCpuArray::try_from(open_map(dir, STATS)?).map_err(map_err(STATS))?;
        let mut dp = Datapath {
            dir: dir.to_path_buf(),
            prog,
            prog_id,
            uplink_prog,
            uplink_prog_id,
            endpoints,
            peers,
            stats,
        };
        if fresh {
            dp.adopt_links(Role::Pod)?;
            dp.adopt_links(Role::Uplink)?;
            dp.unpin_other_programs(&[&prog_pin, &uplink_pin])?;
        }
        Ok(dp)
    }

    fn prog_mut(&mut self, role: Role) -> &mut SchedClassifier {
        match role {
            Role::Pod => &mut self.prog,
            Role::Uplink => &mut self.uplink_prog,
        }
    }

    fn prog_id_of(&self, role: Role) -> u32 {
        match role {
            Role::Pod => self.prog_id,
            Role::Uplink => self.uplink_prog_id,
        }
    }

    /// Points every pinned link of `role` at this build's program (after an upgrade).
    fn adopt_links(&mut self, role: Role) -> Result<(), Error> {
        for path in self.link_pins(role)? {
            let pinned = PinnedLink::from_pin(&path).map_err(|e| Error::Link {
                path: path.clone(),
                source: Box::new(e),
            })?;
            let fd: FdLink = pinned.into();
            let link = SchedClassifierLink::try_from(fd).map_err(|e| Error::Link {
                path: path.clone(),
                source: Box::new(e),
            })?;
            let prog = self.prog_mut(role);
            let id = prog.attach_to_link(link).map_err(prog_err)?;
            // The pin holds the link; our copy of its fd may go.
            let _ = prog.take_link(id).map_err(prog_err)?;
        }
        Ok(())
    }

    fn unpin_other_programs(&self, keep: &[&Path]) -> Result<(), Error> {
        for e in std::fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let p = e.map_err(io_err(&self.dir))?.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let ours = name.starts_with(PROG_PIN) || name.starts_with(UPLINK_PROG_PIN);
            if ours && !keep.contains(&p.as_path()) {
                std::fs::remove_file(&p).map_err(io_err(&p))?;
            }
        }
        Ok(())
    }

    fn link_pins(&self, role: Role) -> Result<Vec<PathBuf>, Error> {
        let links = self.dir.join(role.links_dir());
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

    /// The kernel's id of the loaded pod program.
    pub fn program_id(&self) -> u32 {
        self.prog_id
    }

    /// The kernel's id of the loaded uplink program.
    pub fn uplink_program_id(&self) -> u32 {
        self.uplink_prog_id
    }

    fn link_pin(&self, role: Role, ifname: &str) -> Result<PathBuf, Error> {
        if ifname.is_empty() || ifname.contains('/') || ifname.starts_with('.') {
            return Err(Error::BadInterface(ifname.to_string()));
        }
        Ok(self.dir.join(role.links_dir()).join(pin_name(ifname)))
    }

    /// Whether our pod program is attached on tcx ingress of `host_if` (in this thread's
    /// network namespace).
    pub fn is_attached(&self, host_if: &str) -> Result<bool, Error> {
        Ok(tcx_ingress_programs(host_if)?.contains(&self.prog_id))
    }

    /// Whether our uplink program is attached on tcx ingress of `ifname`.
    pub fn is_uplink_attached(&self, ifname: &str) -> Result<bool, Error> {
        Ok(tcx_ingress_programs(ifname)?.contains(&self.uplink_prog_id))
    }

    /// Attaches the pod program to tcx ingress of `host_if` and pins the link, unless it is
    /// attached already (a restart, a repeated ADD): then nothing changes. A pin left by a
    /// veth that is gone (its link dead) is replaced. Returns whether it attached anew.
    pub fn attach(&mut self, host_if: &str) -> Result<bool, Error> {
        self.attach_role(Role::Pod, host_if)
    }

    /// The same for the uplink program on the node's uplink `ifname`: packets from peer
    /// nodes' pods to local pods are delivered from there.
    pub fn attach_uplink(&mut self, ifname: &str) -> Result<bool, Error> {
        self.attach_role(Role::Uplink, ifname)
    }

    fn attach_role(&mut self, role: Role, ifname: &str) -> Result<bool, Error> {
        let pin = self.link_pin(role, ifname)?;
        if pin.exists() {
            if tcx_ingress_programs(ifname)?.contains(&self.prog_id_of(role)) {
                return Ok(false);
            }
            std::fs::remove_file(&pin).map_err(io_err(&pin))?;
        }
        let prog = self.prog_mut(role);
        let id = prog
            .attach(ifname, TcAttachType::Ingress)
            .map_err(prog_err)?;
        let link: FdLink = prog
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

    /// Detaches the pod program from `host_if` now, and removes the link's pin. Absent is
    /// fine.
    pub fn detach(&mut self, host_if: &str) -> Result<(), Error> {
        unpin_link(&self.link_pin(Role::Pod, host_if)?)
    }

    /// Detaches the uplink program from `ifname` now, and removes the link's pin.
    pub fn detach_uplink(&mut self, ifname: &str) -> Result<(), Error> {
        unpin_link(&self.link_pin(Role::Uplink, ifname)?)
    }

    fn pinned_names(&self, role: Role) -> Result<Vec<String>, Error> {
        Ok(self
            .link_pins(role)?
            .iter()
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(ifname_of_pin))
            .collect())
    }

    /// The host veths with a pinned link.
    pub fn attached(&self) -> Result<Vec<String>, Error> {
        self.pinned_names(Role::Pod)
    }

    /// The uplinks with a pinned link.
    pub fn uplinks(&self) -> Result<Vec<String>, Error> {
        self.pinned_names(Role::Uplink)
    }

    /// Puts (or replaces) one pod address.
    pub fn insert(&mut self, addr: Ipv4Addr, value: EndpointValue) -> Result<(), Error> {
        self.endpoints
            .insert(u32::from_ne_bytes(addr.octets()), value, 0)
            .map_err(map_err(ENDPOINTS))
    }

    /// Removes one pod address; absent is fine.
    pub fn remove(&mut self, addr: Ipv4Addr) -> Result<(), Error> {
        ignore_absent(
            self.endpoints.remove(&u32::from_ne_bytes(addr.octets())),
            ENDPOINTS,
        )
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

    /// Puts (or replaces) a peer node's pod block `addr/prefix` and the route weft
    /// programmed to it.
    pub fn insert_peer(
        &mut self,
        addr: Ipv4Addr,
        prefix: u8,
        value: PeerValue,
    ) -> Result<(), Error> {
        let raw = PeerRaw {
            gateway: u32::from_ne_bytes(value.gateway.octets()),
            ifindex: value.ifindex,
        };
        self.peers
            .insert(&peer_key(addr, prefix), raw, 0)
            .map_err(map_err(PEERS))
    }

    /// Removes a peer block; absent is fine.
    pub fn remove_peer(&mut self, addr: Ipv4Addr, prefix: u8) -> Result<(), Error> {
        ignore_absent(self.peers.remove(&peer_key(addr, prefix)), PEERS)
    }

    /// Every peer block in the map, as `(address, prefix length, route)`.
    pub fn peers(&self) -> Result<Vec<(Ipv4Addr, u8, PeerValue)>, Error> {
        let mut out = Vec::new();
        for kv in self.peers.iter() {
            let (k, v) = kv.map_err(map_err(PEERS))?;
            let prefix = u8::try_from(k.prefix_len()).unwrap_or(32);
            out.push((
                Ipv4Addr::from(k.data().to_ne_bytes()),
                prefix,
                PeerValue {
                    gateway: Ipv4Addr::from(v.gateway.to_ne_bytes()),
                    ifindex: v.ifindex,
                },
            ));
        }
        out.sort_by_key(|(a, p, _)| (*a, *p));
        Ok(out)
    }

    /// What a pod that becomes policed does with its established fast connections.
    pub fn set_established(&mut self, mode: Established) -> Result<(), Error> {
        let mut cfg: aya::maps::Array<MapData, u32> =
            aya::maps::Array::try_from(open_map(&self.dir, CONFIG)?).map_err(map_err(CONFIG))?;
        let flags = match mode {
            Established::Rejudge => 0,
            Established::Keep => CFG_KEEP_ESTABLISHED,
            Established::KeepUnlessCut => CFG_KEEP_ESTABLISHED | CFG_CUT,
        };
        cfg.set(0, flags, 0).map_err(map_err(CONFIG))
    }

    /// The mode `weft_config` holds.
    pub fn established(&self) -> Result<Established, Error> {
        let cfg: aya::maps::Array<MapData, u32> =
            aya::maps::Array::try_from(open_map(&self.dir, CONFIG)?).map_err(map_err(CONFIG))?;
        let flags = cfg.get(&0, 0).map_err(map_err(CONFIG))?;
        Ok(if flags & CFG_KEEP_ESTABLISHED == 0 {
            Established::Rejudge
        } else if flags & CFG_CUT == 0 {
            Established::Keep
        } else {
            Established::KeepUnlessCut
        })
    }

    fn conns_map(&self) -> Result<HashMap<MapData, ConnKey, ConnRaw>, Error> {
        HashMap::try_from(open_map(&self.dir, FAST_CONNS)?).map_err(map_err(FAST_CONNS))
    }

    /// Every connection in `weft_fast_conns` (one syscall or two per entry).
    pub fn fast_conns(&self) -> Result<Vec<FastConn>, Error> {
        let conns = self.conns_map()?;
        let mut out = Vec::new();
        for kv in conns.iter() {
            match kv {
                Ok((k, v)) => out.push(FastConn::of(k, &v)),
                // Evicted between the key walk and the lookup.
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(FAST_CONNS)(e)),
            }
        }
        Ok(out)
    }

    /// Marks a connection cut, or clears the mark; a connection gone already (evicted,
    /// idle) is fine. Returns whether an entry changed.
    pub fn set_cut(&mut self, key: &ConnKey, cut: bool) -> Result<bool, Error> {
        let mut conns = self.conns_map()?;
        let mut v = match conns.get(key, 0) {
            Ok(v) => v,
            Err(MapError::KeyNotFound) => return Ok(false),
            Err(e) => return Err(map_err(FAST_CONNS)(e)),
        };
        let flags = if cut {
            v.flags | CONN_CUT
        } else {
            v.flags & !CONN_CUT
        };
        if flags == v.flags {
            return Ok(false);
        }
        v.flags = flags;
        // BPF_EXIST: an entry evicted meanwhile is not brought back.
        match conns.insert(key, v, 2) {
            Ok(()) => Ok(true),
            Err(MapError::SyscallError(e)) if e.io_error.kind() == io::ErrorKind::NotFound => {
                Ok(false)
            }
            Err(e) => Err(map_err(FAST_CONNS)(e)),
        }
    }

    /// The fill level of each map with entries (the stats array is always full). Counting
    /// walks the keys: one syscall per entry, for status, not for a hot path.
    pub fn map_fill(&self) -> Result<Vec<MapFill>, Error> {
        let max = |name: &'static str| -> Result<u32, Error> {
            let info = aya::maps::MapInfo::from_pin(self.dir.join(name)).map_err(map_err(name))?;
            Ok(info.max_entries())
        };
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let flows: HashMap<MapData, [u8; 8], u8> =
            HashMap::try_from(open_map(&self.dir, KERNEL_FLOWS)?).map_err(map_err(KERNEL_FLOWS))?;
        let conns = self.conns_map()?;
        Ok(vec![
            MapFill {
                name: ENDPOINTS,
                entries: count(self.endpoints.keys().count()),
                max_entries: max(ENDPOINTS)?,
            },
            MapFill {
                name: PEERS,
                entries: count(self.peers.keys().count()),
                max_entries: max(PEERS)?,
            },
            MapFill {
                name: KERNEL_FLOWS,
                entries: count(flows.keys().count()),
                max_entries: max(KERNEL_FLOWS)?,
            },
            MapFill {
                name: FAST_CONNS,
                entries: count(conns.keys().count()),
                max_entries: max(FAST_CONNS)?,
            },
        ])
    }

    /// The decision counters, summed over CPUs. A slot the pinned map lacks (a map pinned
    /// by an older build, with fewer slots) reads as zero.
    pub fn counters(&self) -> Result<Counters, Error> {
        let sum = |i: u32| -> Result<u64, Error> {
            match self.stats.get(&i, 0) {
                Ok(v) => Ok(v.iter().copied().fold(0u64, u64::wrapping_add)),
                Err(MapError::OutOfBounds { .. }) => Ok(0),
                Err(e) => Err(map_err(STATS)(e)),
            }
        };
        Ok(Counters {
            redirected: sum(0)?,
            passed: sum(1)?,
            to_peer: sum(2)?,
            from_peer: sum(3)?,
            kernel_flow: sum(4)?,
            kept: sum(5)?,
            cut: sum(6)?,
        })
    }
}

/// The pin name of an interface's link. bpffs refuses names with a dot (`weft.vx`): dots
/// are escaped as `%2e`, and `%` as `%25` so that every name comes back unchanged.
fn pin_name(ifname: &str) -> String {
    ifname.replace('%', "%25").replace('.', "%2e")
}

fn ifname_of_pin(pin: &str) -> String {
    pin.replace("%2e", ".").replace("%25", "%")
}

fn peer_key(addr: Ipv4Addr, prefix: u8) -> Key<u32> {
    Key::new(u32::from(prefix.min(32)), u32::from_ne_bytes(addr.octets()))
}

fn ignore_absent(r: Result<(), MapError>, name: &'static str) -> Result<(), Error> {
    match r {
        Ok(()) => Ok(()),
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(map_err(name)(e)),
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
    for sub in [LINKS, UPLINKS] {
        let links = dir.join(sub);
        if links.exists() {
            for e in std::fs::read_dir(&links).map_err(io_err(&links))? {
                unpin_link(&e.map_err(io_err(&links))?.path())?;
            }
            std::fs::remove_dir(&links).map_err(io_err(&links))?;
        }
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

/// What the tests of this crate and of weftd's share; not for production use.
#[doc(hidden)]
pub mod testing {
    use std::path::PathBuf;

    /// A pin directory of the calling process's own on the host's bpffs
    /// (`/sys/fs/bpf/weft-test-<tag>-<pid>`): emptied when made, removed with everything
    /// pinned in it on drop, also on a panic.
    pub struct ScratchPins(pub PathBuf);

    impl ScratchPins {
        pub fn new(tag: &str) -> ScratchPins {
            let p = PathBuf::from(format!(
                "/sys/fs/bpf/weft-test-{tag}-{}",
                std::process::id()
            ));
            let _ = super::remove_all(&p);
            ScratchPins(p)
        }
    }

    impl Drop for ScratchPins {
        fn drop(&mut self) {
            let _ = super::remove_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_layout_matches_the_c_struct() {
        assert_eq!(std::mem::size_of::<EndpointValue>(), 20);
        assert_eq!(std::mem::size_of::<PeerRaw>(), 8);
        assert_eq!(std::mem::size_of::<Key<u32>>(), 8);
        assert_eq!(std::mem::size_of::<ConnKey>(), 16);
        assert_eq!(std::mem::size_of::<ConnRaw>(), 16);
    }

    #[test]
    fn pin_names_have_no_dot_and_give_the_name_back() {
        for name in ["weft.vx", "veth1a2b", "a%2eb", "x.%.y", "%"] {
            let pin = pin_name(name);
            assert!(!pin.contains('.'), "{pin}");
            assert_eq!(ifname_of_pin(&pin), name);
        }
        assert_eq!(pin_name("weft.vx"), "weft%2evx");
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
