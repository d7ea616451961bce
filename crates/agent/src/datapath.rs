//! The node's datapath (`--datapath`): `nft` (kernel forwarding, nftables policy: nothing to
//! do here) or `ebpf`, weft-ebpf's fast path, whose kernel side this module keeps in step
//! with the node's pods (docs/agent.md, "Datapath"):
//!
//! - at start the programs and maps are loaded, or reopened from their pins, and every pod
//!   of the endpoint files is put in the endpoint map and attached (a pod still attached
//!   is left as it is: a restart re-attaches nothing);
//! - `attach` (before the plugin's ADD returns) and `detach` (DEL) do the same for one pod;
//! - after each policy change the `policed` flags follow the policy state: a pod selected by
//!   a NetworkPolicy keeps the nftables path for its new connections, so policy stays exact
//!   in this first slice. Flags are raised before a commit and lowered after it, so no new
//!   connection of a pod the kernel's policy selects skips it. Its established connections
//!   stay where they are, as conntrack keeps them on the kernel path; with
//!   `--policy-cut-established` each fast connection is judged against the plan after every
//!   change, as conntrack's entries are, and the denied ones are marked cut (dropped both
//!   ways by the programs) until a change allows them again.
//!
//! - once the backend is up, the arrival program goes on the underlay interface (the one
//!   holding the node's underlay address) and on `weft.vx` while it exists, and the peer
//!   map follows weft's own routes (`proto 87`) out of a device with the program: host-gw
//!   peers (a next hop out of the uplink) and VXLAN peers (the peer's VTEP address, onlink,
//!   out of `weft.vx`). It is re-read after every batch of peer changes and every resync.
//!   A route out of a device without the program stays out of the map, so no flow leaves by
//!   the fast path whose replies would arrive by the kernel's.
//!
//! If the fast path cannot be loaded or attached at start-up, weftd logs an error, says so in
//! its status and runs as `nft`: every pod keeps the kernel path, never an unpoliced one.
//! With `nft`, whatever an earlier `ebpf` run pinned is removed (links, program, maps).
//!
//! The BPF calls are a few syscalls each (microseconds; a load at start, milliseconds), so
//! they run on the control loop itself, like the endpoint bookkeeping they go with.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use std::path::PathBuf;

use clap::ValueEnum;
use weft_ebpf::{EndpointValue, Established, FLAG_POLICED, PeerValue};
use weft_proto::{DatapathStatus, EndpointFile, MapFill};

use crate::log;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    Nft,
    Ebpf,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Nft => "nft",
            Kind::Ebpf => "ebpf",
        }
    }
}

/// The datapath as weftd runs it.
pub struct Datapath {
    requested: Kind,
    pin_dir: PathBuf,
    fast: Option<weft_ebpf::Datapath>,
    /// The underlay interface with the arrival program: name, ifindex.
    uplink: Option<(String, u32)>,
    /// `weft.vx`'s ifindex, while it exists with the arrival program on it.
    tunnel: Option<u32>,
    /// Why `ebpf` was asked for and `nft` runs.
    error: Option<String>,
}

/// Whether a pod's packets must keep the nftables path (the policy state's answer).
pub type Policed<'a> = &'a dyn Fn(&EndpointFile) -> bool;

impl Datapath {
    /// Brings the datapath up for the pods of `pods` (all treated as policed until the
    /// policy view says otherwise: weftd has not loaded it yet). A pod that becomes policed
    /// keeps its established fast connections; with `cut_established`
    /// (`--policy-cut-established`) only those [`Datapath::cut`] finds the plan allows.
    pub fn start<'a>(
        requested: Kind,
        pin_dir: PathBuf,
        cut_established: bool,
        pods: impl Iterator<Item = &'a EndpointFile>,
    ) -> Datapath {
        let mut dp = Datapath {
            requested,
            pin_dir,
            fast: None,
            uplink: None,
            tunnel: None,
            error: None,
        };
        match requested {
            Kind::Nft => match weft_ebpf::remove_all(&dp.pin_dir) {
                Ok(true) => log::info(
                    "datapath nft: the eBPF fast path of an earlier run removed",
                    &[("pinDir", dp.pin_dir.display().to_string().into())],
                ),
                Ok(false) => {}
                Err(e) => log::error(
                    "datapath nft: cannot remove the eBPF fast path of an earlier run",
                    &[("error", e.to_string().into())],
                ),
            },
            Kind::Ebpf => {
                let pods: Vec<&EndpointFile> = pods.collect();
                if let Err(e) = dp.bring_up(&pods, cut_established) {
                    log::error(
                        "datapath ebpf failed at start-up; running as nft (every pod on the kernel path)",
                        &[("error", e.clone().into())],
                    );
                    // Nothing half-done may stay: a program attached to some pods with an
                    // endpoint map weftd no longer keeps could skip policy.
                    dp.fast = None;
                    if let Err(rm) = weft_ebpf::remove_all(&dp.pin_dir) {
                        log::error(
                            "cannot remove the half-loaded eBPF fast path",
                            &[("error", rm.to_string().into())],
                        );
                    }
                    dp.error = Some(e);
                }
            }
        }
        dp
    }

    fn bring_up(&mut self, pods: &[&EndpointFile], cut_established: bool) -> Result<(), String> {
        let mut fast = weft_ebpf::Datapath::open(&self.pin_dir).map_err(|e| e.to_string())?;
        fast.set_established(if cut_established {
            Established::KeepUnlessCut
        } else {
            Established::Keep
        })
        .map_err(|e| e.to_string())?;
        // Pods gone while weftd was down: their entries and links.
        prune(&mut fast, pods)?;
        let all_policed = |_: &EndpointFile| true;
        for f in pods {
            add(&mut fast, f, &all_policed)?;
        }
        log::info(
            "datapath ebpf up",
            &[
                ("pinDir", self.pin_dir.display().to_string().into()),
                ("programId", fast.program_id().into()),
                ("pods", pods.len().into()),
            ],
        );
        self.fast = Some(fast);
        Ok(())
    }

    /// Drops the entries and links of pods no longer among `pods` (endpoint files removed
    /// behind weftd's back, pods collected by its GC).
    pub fn prune<'a>(&mut self, pods: impl Iterator<Item = &'a EndpointFile>) {
        let Some(fast) = &mut self.fast else {
            return;
        };
        let pods: Vec<&EndpointFile> = pods.collect();
        if let Err(e) = prune(fast, &pods) {
            log::warn(
                "eBPF datapath: stale pods not removed",
                &[("error", e.into())],
            );
        }
    }

    /// A pod was attached (its policy committed): into the map, then the program on its
    /// veth. A failure leaves the pod on the kernel path and is logged, not an ADD failure.
    pub fn attach(&mut self, f: &EndpointFile, policed: Policed<'_>) {
        let Some(fast) = &mut self.fast else {
            return;
        };
        if let Err(e) = add(fast, f, policed) {
            log::error(
                "eBPF datapath: pod not attached; it keeps the kernel path",
                &[
                    ("namespace", f.namespace.clone().into()),
                    ("pod", f.name.clone().into()),
                    ("error", e.into()),
                ],
            );
            let _ = remove(fast, f);
        }
    }

    /// A pod was detached (DEL): its program link and its entries go.
    pub fn detach(&mut self, f: &EndpointFile) {
        let Some(fast) = &mut self.fast else {
            return;
        };
        if let Err(e) = remove(fast, f) {
            log::warn(
                "eBPF datapath: pod not fully detached",
                &[
                    ("namespace", f.namespace.clone().into()),
                    ("pod", f.name.clone().into()),
                    ("error", e.into()),
                ],
            );
        }
    }

    /// Sets the `policed` flags of `pods` as `policed` says; with `raise_only`, only raises
    /// them (before a policy commit: a pod about to be selected must leave the fast path
    /// first; one about to be released waits for the commit).
    pub fn sync_policed<'a>(
        &mut self,
        pods: impl Iterator<Item = &'a EndpointFile>,
        policed: Policed<'_>,
        raise_only: bool,
    ) {
        let Some(fast) = &mut self.fast else {
            return;
        };
        let current: BTreeMap<Ipv4Addr, EndpointValue> = match fast.endpoints() {
            Ok(e) => e.into_iter().collect(),
            Err(e) => {
                log::error(
                    "eBPF datapath: endpoint map unreadable",
                    &[("error", e.to_string().into())],
                );
                return;
            }
        };
        for f in pods {
            let want = policed(f);
            if raise_only && !want {
                continue;
            }
            for a in v4(f) {
                let Some(v) = current.get(&a) else { continue };
                let is = v.flags & FLAG_POLICED != 0;
                if is == want {
                    continue;
                }
                let flags = if want {
                    v.flags | FLAG_POLICED
                } else {
                    v.flags & !FLAG_POLICED
                };
                if let Err(e) = fast.insert(a, EndpointValue { flags, ..*v }) {
                    log::error(
                        "eBPF datapath: policed flag not set",
                        &[
                            ("address", a.to_string().into()),
                            ("error", e.to_string().into()),
                        ],
                    );
                }
            }
        }
    }

    /// Attaches the uplink program to the interface holding `underlay_v4` (a restart finds
    /// it attached and leaves it), detaches it from any other interface an earlier run
    /// used, and fills the peer map. A failure leaves cross-node traffic on the kernel path
    /// (the peer map emptied) and is logged; same-node traffic keeps its fast path.
    pub fn set_uplink(&mut self, underlay_v4: Ipv4Addr) {
        let Some(fast) = &mut self.fast else {
            return;
        };
        match attach_uplink(fast, underlay_v4) {
            Ok(uplink) => {
                log::info(
                    "eBPF datapath: uplink attached",
                    &[
                        ("uplink", uplink.0.clone().into()),
                        ("programId", fast.uplink_program_id().into()),
                    ],
                );
                self.uplink = Some(uplink);
            }
            Err(e) => log::error(
                "eBPF datapath: uplink not attached; traffic to and from peers keeps the kernel path",
                &[("error", e.into())],
            ),
        }
        self.sync_peers();
    }

    /// Makes the peer map what weft's routes say: every IPv4 route weft programmed with a
    /// next hop out of the uplink (a host-gw peer's block) or out of `weft.vx` (a VXLAN
    /// peer's), each only while that device has the arrival program; nothing else. The
    /// program follows `weft.vx` first: the backend makes it, and remakes it when its
    /// identity changes (a new ifindex, whose link must be made anew).
    pub fn sync_peers(&mut self) {
        let Some(fast) = &mut self.fast else {
            return;
        };
        let tunnel = match sync_tunnel(fast) {
            Ok((t, fresh)) => {
                if fresh {
                    log::info(
                        "eBPF datapath: VXLAN device attached",
                        &[
                            ("device", weft_backend::DEVICE.into()),
                            ("programId", fast.uplink_program_id().into()),
                        ],
                    );
                }
                t
            }
            Err(e) => {
                log::error(
                    "eBPF datapath: arrival program not on the VXLAN device; VXLAN peers keep the kernel path",
                    &[("device", weft_backend::DEVICE.into()), ("error", e.into())],
                );
                None
            }
        };
        self.tunnel = tunnel;
        let uplink = self.uplink.as_ref().map(|(_, i)| *i);
        if let Err(e) = sync_peers(fast, uplink, tunnel) {
            log::error("eBPF datapath: peer map not synced", &[("error", e.into())]);
        }
    }

    /// `--policy-cut-established`, after a committed change: the fast connections the plan
    /// denies are marked cut (their packets dropped, both ways), and cut ones it allows again
    /// are released, each judged as its first packet would be, as conntrack's entries are
    /// (policy::cut). ICMP, which has no ports, is never cut there either.
    pub fn cut(&mut self, plan: &weft_policy::plan::Plan) {
        let Some(fast) = &mut self.fast else {
            return;
        };
        match cut_fast_conns(fast, plan) {
            Ok((0, 0)) => {}
            Ok((cut, released)) => log::info(
                "eBPF datapath: established fast connections of denied flows cut",
                &[("cut", cut.into()), ("released", released.into())],
            ),
            Err(e) => log::error(
                "eBPF datapath: cutting established fast connections failed",
                &[("error", e.into())],
            ),
        }
    }

    pub fn status(&self) -> DatapathStatus {
        let mut st = DatapathStatus {
            requested: self.requested.as_str().into(),
            active: if self.fast.is_some() { "ebpf" } else { "nft" }.into(),
            error: self.error.clone(),
            ..DatapathStatus::default()
        };
        if let Some(fast) = &self.fast {
            st.pin_dir = Some(fast.dir().display().to_string());
            st.program_id = Some(fast.program_id());
            st.attached = fast.attached().map(|a| a.len()).unwrap_or(0);
            if let Ok(eps) = fast.endpoints() {
                st.endpoints = eps.len();
                st.policed = eps
                    .iter()
                    .filter(|(_, v)| v.flags & FLAG_POLICED != 0)
                    .count();
            }
            st.uplink = self.uplink.as_ref().map(|(n, _)| n.clone());
            st.tunnel = self.tunnel.map(|_| weft_backend::DEVICE.to_owned());
            st.peers = fast.peers().map(|p| p.len()).unwrap_or(0);
            match fast.map_fill() {
                Ok(maps) => {
                    st.maps = maps
                        .into_iter()
                        .map(|m| MapFill {
                            name: m.name.to_owned(),
                            entries: m.entries,
                            max_entries: m.max_entries,
                        })
                        .collect()
                }
                Err(e) => st.error = Some(format!("map fill unreadable: {e}")),
            }
            match fast.counters() {
                Ok(c) => {
                    st.redirected = c.redirected;
                    st.passed = c.passed;
                    st.to_peer = c.to_peer;
                    st.from_peer = c.from_peer;
                    st.kernel_flow = c.kernel_flow;
                    st.kept = c.kept;
                    st.cut = c.cut;
                }
                Err(e) => st.error = Some(format!("counters unreadable: {e}")),
            }
        }
        st
    }
}

/// Marks cut the fast connections `plan` denies and releases the cut ones it allows:
/// (cut, released).
fn cut_fast_conns(
    fast: &mut weft_ebpf::Datapath,
    plan: &weft_policy::plan::Plan,
) -> Result<(usize, usize), String> {
    let (mut cut, mut released) = (0, 0);
    for c in fast.fast_conns().map_err(|e| e.to_string())? {
        if !weft_nft::conntrack::has_ports(c.protocol) {
            continue;
        }
        // Pod to pod: the forward hook on this node, whichever end is local.
        let denied = crate::policy::cut::denies(
            plan,
            weft_policy::plan::HookPoint::Forward,
            IpAddr::V4(c.orig.0),
            IpAddr::V4(c.resp.0),
            c.protocol,
            c.resp.1,
        );
        if denied != c.cut && fast.set_cut(&c.key, denied).map_err(|e| e.to_string())? {
            if denied {
                cut += 1;
            } else {
                released += 1;
            }
        }
    }
    Ok((cut, released))
}

fn prune(fast: &mut weft_ebpf::Datapath, pods: &[&EndpointFile]) -> Result<(), String> {
    for (addr, _) in fast.endpoints().map_err(|e| e.to_string())? {
        if !pods.iter().any(|f| f.addresses.contains(&IpAddr::V4(addr))) {
            fast.remove(addr).map_err(|e| e.to_string())?;
        }
    }
    for veth in fast.attached().map_err(|e| e.to_string())? {
        if !pods
            .iter()
            .any(|f| f.host_interface.as_deref() == Some(veth.as_str()))
        {
            fast.detach(&veth).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

fn v4(f: &EndpointFile) -> impl Iterator<Item = Ipv4Addr> + '_ {
    f.addresses.iter().filter_map(|a| match a {
        IpAddr::V4(a) => Some(*a),
        IpAddr::V6(_) => None,
    })
}

/// Entries first, then the link: the program finds the pod the moment it is attached.
/// A pod without a host veth (macvlan) or a recorded MAC (a file of an earlier release) is
/// left on the kernel path.
fn add(
    fast: &mut weft_ebpf::Datapath,
    f: &EndpointFile,
    policed: Policed<'_>,
) -> Result<(), String> {
    let (Some(veth), Some(mac)) = (&f.host_interface, &f.mac) else {
        return Ok(());
    };
    let mac = weft_ebpf::parse_mac(mac).ok_or_else(|| format!("bad pod MAC {mac:?}"))?;
    let mut nl = weft_net::Handle::new().map_err(|e| e.to_string())?;
    let host = nl
        .link_by_name(veth)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("host veth {veth} not found"))?;
    // What the pod sees as its gateway's MAC: the bridge's (bridge mode), else the host
    // veth's own (ptp).
    let gw = match host.master {
        Some(m) => nl
            .link_by_index(m)
            .map_err(|e| e.to_string())?
            .and_then(|l| l.mac),
        None => host.mac,
    };
    let gw_mac = gw.ok_or_else(|| format!("no gateway MAC for {veth}"))?;
    let flags = if policed(f) { FLAG_POLICED } else { 0 };
    for a in v4(f) {
        fast.insert(
            a,
            EndpointValue {
                ifindex: host.index,
                flags,
                mac,
                gw_mac,
            },
        )
        .map_err(|e| e.to_string())?;
    }
    fast.attach(veth).map_err(|e| e.to_string())?;
    Ok(())
}

/// The link (packets from the pod), then the entries (packets to it). The plugin deletes
/// the veth anyway; the pin would keep a dead link alive.
fn remove(fast: &mut weft_ebpf::Datapath, f: &EndpointFile) -> Result<(), String> {
    if let Some(veth) = &f.host_interface {
        fast.detach(veth).map_err(|e| e.to_string())?;
    }
    for a in v4(f) {
        fast.remove(a).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The interface holding `underlay_v4`, with the uplink program attached; other uplinks'
/// links (an earlier run's, on another interface) detached.
fn attach_uplink(
    fast: &mut weft_ebpf::Datapath,
    underlay_v4: Ipv4Addr,
) -> Result<(String, u32), String> {
    let mut nl = weft_net::Handle::new().map_err(|e| e.to_string())?;
    let index = nl
        .addrs(None)
        .map_err(|e| e.to_string())?
        .iter()
        .find(|a| a.addr.addr() == IpAddr::V4(underlay_v4))
        .map(|a| a.index)
        .ok_or_else(|| format!("no interface holds the underlay address {underlay_v4}"))?;
    let name = nl
        .link_by_index(index)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("underlay interface #{index} not found"))?
        .name;
    for old in fast.uplinks().map_err(|e| e.to_string())? {
        if old != name && old != weft_backend::DEVICE {
            fast.detach_uplink(&old).map_err(|e| e.to_string())?;
        }
    }
    fast.attach_uplink(&name).map_err(|e| e.to_string())?;
    Ok((name, index))
}

/// The arrival program on `weft.vx` when it exists (its ifindex, and whether it was
/// attached just now), its link gone when not.
fn sync_tunnel(fast: &mut weft_ebpf::Datapath) -> Result<(Option<u32>, bool), String> {
    let mut nl = weft_net::Handle::new().map_err(|e| e.to_string())?;
    let dev = weft_backend::DEVICE;
    match nl.link_by_name(dev).map_err(|e| e.to_string())? {
        Some(link) => {
            let fresh = fast.attach_uplink(dev).map_err(|e| e.to_string())?;
            Ok((Some(link.index), fresh))
        }
        None => {
            fast.detach_uplink(dev).map_err(|e| e.to_string())?;
            Ok((None, false))
        }
    }
}

/// The peer map from weft's routes out of `uplink` (host-gw) and `tunnel` (VXLAN), the
/// ifindexes of the devices with the arrival program; neither: emptied.
fn sync_peers(
    fast: &mut weft_ebpf::Datapath,
    uplink: Option<u32>,
    tunnel: Option<u32>,
) -> Result<(), String> {
    let mut want: BTreeMap<(Ipv4Addr, u8), PeerValue> = BTreeMap::new();
    let devices: Vec<u32> = uplink.into_iter().chain(tunnel).collect();
    if !devices.is_empty() {
        let mut nl = weft_net::Handle::new().map_err(|e| e.to_string())?;
        let routes = nl
            .routes_by_protocol(false, weft_backend::RTPROT_WEFT)
            .map_err(|e| e.to_string())?;
        for r in routes {
            // The main table's routes with a next hop out of a device with the program.
            let Some(oif) = r.oif.filter(|i| devices.contains(i)) else {
                continue;
            };
            if !matches!(r.table, None | Some(254)) {
                continue;
            }
            let (IpNet::V4(dst), Some(IpAddr::V4(gateway))) = (r.dst, r.gateway) else {
                continue;
            };
            want.insert(
                (dst.network(), dst.prefix_len()),
                PeerValue {
                    gateway,
                    ifindex: oif,
                },
            );
        }
    }
    let have = fast.peers().map_err(|e| e.to_string())?;
    for (addr, prefix, v) in &have {
        if want.get(&(*addr, *prefix)) != Some(v) {
            fast.remove_peer(*addr, *prefix)
                .map_err(|e| e.to_string())?;
        }
    }
    for ((addr, prefix), v) in want {
        if !have.contains(&(addr, prefix, v)) {
            fast.insert_peer(addr, prefix, v)
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}
