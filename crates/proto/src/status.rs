//! What weftd says about itself (`{"op":"status"}`, and the answer to `policy-sync`):
//! written by weftd, read by `weftctl status` (which prints it as is with `-o json`) and by
//! tests. The keys are a contract (docs/agent.md, docs/policy.md "Status and sync"):
//! camelCase, every field always present — `null` for an absent value, never a missing key.
//!
//! A reader is lenient: a key it does not know is ignored and a missing one takes its
//! default, so a `weftctl` of one release still reads the weftd of another.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The node as its weftd sees it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Status {
    pub node: String,
    /// The datastore lease the node's record and blocks hang on.
    pub lease: i64,
    pub blocks: Vec<IpNet>,
    /// None until the dataplane is open.
    pub pod_mtu: Option<u32>,
    /// Peers programmed in the kernel.
    pub peers: usize,
    pub datastore_reachable: bool,
    pub policy: PolicyStatus,
    /// The datapath in use (`--datapath`); null from weftds older than the eBPF one.
    pub datapath: Option<DatapathStatus>,
}

/// How pod packets are forwarded on this node (docs/agent.md, "Datapath").
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DatapathStatus {
    /// What `--datapath` asked for: `nft` or `ebpf`.
    pub requested: String,
    /// What runs: `ebpf`, or `nft` (asked for, or the fallback when the eBPF fast path could
    /// not be loaded or attached at start-up: then `error` says why).
    pub active: String,
    pub error: Option<String>,
    /// The bpffs directory of the pins (`ebpf` only).
    pub pin_dir: Option<String>,
    /// The kernel's id of the loaded program (`ebpf` only).
    pub program_id: Option<u32>,
    /// Host veths the program is attached to.
    pub attached: usize,
    /// Pod addresses in the endpoint map, and how many of them are policed (their packets
    /// keep the nftables path).
    pub endpoints: usize,
    pub policed: usize,
    /// The programs' decisions since they were loaded: delivered by `bpf_redirect_peer`
    /// from a local pod to a local pod, and passed on to the kernel path.
    pub redirected: u64,
    pub passed: u64,
    /// The uplink the arrival program is attached to (`ebpf` only).
    pub uplink: Option<String>,
    /// The VXLAN device the arrival program is attached to (`weft.vx`, while it exists).
    pub tunnel: Option<String>,
    /// Peer pod blocks in the peer map: the host-gw and VXLAN routes weft programmed to
    /// peers.
    pub peers: usize,
    /// Sent to a pod on a peer node by `bpf_redirect_neigh`.
    pub to_peer: u64,
    /// Delivered from a pod on a peer node by `bpf_redirect_peer`, on the uplink.
    pub from_peer: u64,
    /// Passed because the connection is the kernel path's (a Service's NAT, say); also
    /// counted in `passed`.
    pub kernel_flow: u64,
    /// A policed pod's packets found to belong to a connection the fast path carried before
    /// the pod was policed, which stays there (not with `--policy-cut-established`).
    pub kept: u64,
    /// Packets dropped because their fast connection was cut (`--policy-cut-established`).
    pub cut: u64,
    /// How full each BPF map is (`ebpf` only).
    pub maps: Vec<MapFill>,
}

/// One BPF map's fill level.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MapFill {
    pub name: String,
    pub entries: u32,
    pub max_entries: u32,
}

/// NetworkPolicy on this node: the plan in the kernel and what it denied.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PolicyStatus {
    /// `inet weft_policy`.
    pub table: String,
    /// The datastore revision of the view last applied.
    pub revision: i64,
    /// A complete view has been loaded since start.
    pub view_loaded: bool,
    /// Loaded, applied, nothing pending, last apply succeeded (a momentary state).
    pub in_sync: bool,
    /// NetworkPolicies in the view.
    pub policies: usize,
    /// This node's endpoint files.
    pub endpoints: usize,
    pub classes: usize,
    pub chains: usize,
    pub rules: usize,
    pub elements: usize,
    /// Packets dropped per class chain.
    pub denied: Vec<DeniedClass>,
    /// Packets denied per isolated local pod and direction.
    pub denied_pods: Vec<DeniedPod>,
    /// Packets dropped because their pod address was not programmed.
    pub denied_unknown_pods: u64,
    /// Why the kernel's counters could not be read.
    pub counter_error: Option<String>,
    /// Why the last apply failed.
    pub last_error: Option<String>,
    /// Local pods NetworkPolicy cannot police (macvlan), as `ns/name`.
    pub unenforceable: Vec<String>,
    /// `--policy-cut-established`.
    pub cut_established: bool,
    pub last_cut: LastCut,
    /// The last apply, committed or not.
    pub last_apply: ApplyTiming,
    /// The last apply that committed a transaction.
    pub last_change: ApplyTiming,
}

/// One class chain's drops.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeniedClass {
    pub chain: String,
    /// Spelt as Kubernetes' `policyTypes` (`Ingress`, `Egress`), unlike [`DeniedPod`]'s.
    #[serde(with = "policy_type")]
    pub direction: Direction,
    /// `ns/name` of the policies that make up the class.
    pub policies: Vec<String>,
    pub packets: u64,
}

/// One isolated pod's denied traffic in one direction (the kernel's per-element counters).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeniedPod {
    /// `ns/name`; None when no local endpoint file has the address.
    pub pod: Option<String>,
    pub address: IpAddr,
    pub direction: Direction,
    pub policies: Vec<String>,
    pub packets: u64,
    pub bytes: u64,
}

/// Which way traffic is policed, seen from the pod (`ingress`, `egress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// [`Direction`] as `Ingress`/`Egress`; either case reads.
mod policy_type {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    use super::Direction;

    pub fn serialize<S: Serializer>(d: &Direction, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match d {
            Direction::Ingress => "Ingress",
            Direction::Egress => "Egress",
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Direction, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "Ingress" | "ingress" => Ok(Direction::Ingress),
            "Egress" | "egress" => Ok(Direction::Egress),
            other => Err(D::Error::unknown_variant(other, &["Ingress", "Egress"])),
        }
    }
}

/// What the last `--policy-cut-established` sweep did: `{"entries", "cut", "released"}` or
/// `{"error"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LastCut {
    /// Entries in the conntrack table, how many were cut (deleted, or marked for UDP), and
    /// how many cut ones a later change allowed again (their mark cleared).
    Swept {
        entries: usize,
        cut: usize,
        #[serde(default)]
        released: usize,
    },
    Failed {
        error: String,
    },
}

impl Default for LastCut {
    fn default() -> LastCut {
        LastCut::Swept {
            entries: 0,
            cut: 0,
            released: 0,
        }
    }
}

/// How long one apply took, step by step (ms, rounded to the µs), and what it did.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ApplyTiming {
    pub mode: ApplyMode,
    /// The datastore read (0 when the view in memory was applied).
    pub load_ms: f64,
    pub world_ms: f64,
    pub compile_ms: f64,
    pub persist_ms: f64,
    /// The transaction.
    pub nft_ms: f64,
    pub via: CommitVia,
    /// The sum of the above, when committed.
    pub total_ms: f64,
    /// Ops of the diff (0 for a whole-table replace).
    pub ops: usize,
    pub endpoints_fed: usize,
    pub policies_fed: usize,
}

/// How an apply reached its plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApplyMode {
    /// No apply yet (`""`).
    #[default]
    #[serde(rename = "")]
    None,
    /// Pods and policies fed to the compiler.
    Incremental,
    /// Namespaces or nodes changed: the compiler's world replaced.
    World,
    /// A new compiler diffed against the restored plan.
    Diff,
    /// The whole table replaced.
    Replace,
}

impl ApplyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyMode::None => "",
            ApplyMode::Incremental => "incremental",
            ApplyMode::World => "world",
            ApplyMode::Diff => "diff",
            ApplyMode::Replace => "replace",
        }
    }
}

/// How a change went to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommitVia {
    /// Nothing committed yet (`""`).
    #[default]
    #[serde(rename = "")]
    None,
    /// One nf_tables batch on weftd's kept netlink socket.
    Netlink,
    /// `nft -f`: the table's first build, base or replaced chains.
    Nft,
}

impl CommitVia {
    pub fn as_str(self) -> &'static str {
        match self {
            CommitVia::None => "",
            CommitVia::Netlink => "netlink",
            CommitVia::Nft => "nft",
        }
    }
}
