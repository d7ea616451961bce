//! `weftd`, the node agent: joins this node to the cluster's flat pod network.
//!
//! **Owns:** the node's registration and lease in the datastore, the blocks its pods take
//! addresses from (leased by compare-and-swap, renewed, adopted again after a restart), the
//! node's CNI conflist (so the plugin needs no datastore on the hot path), the local socket
//! the plugin asks for another block when its blocks are full, the cluster-wide masquerade
//! table, and keeping the kernel's routes / FDB / neighbour entries to every peer in step
//! with the datastore — one peer at a time as events arrive, with a periodic resync that
//! only repairs drift — NetworkPolicy for the node's pods (table `inet weft_policy`), and
//! the cleanup of pods whose DEL never came (their network namespace gone).
//!
//! **Must not:** flush and rebuild kernel state (a restart adopts what it finds, so pod
//! traffic never stops), give up a block it still holds when the datastore is merely
//! unreachable, touch namespaces other than the one it runs in, or sit on the plugin's
//! path for DEL/CHECK.
//!
//! ```text
//! config      flags → Settings            identity   underlay addresses, VTEP MAC
//! node        lease + blocks lifecycle    peers      datastore view → peer changes
//! dataplane   kernel thread (backend)     cniconf    the conflist writer
//! socket      plugin requests             log        JSON lines on stderr
//! policy      NetworkPolicy: view → plan → one nft transaction per change (cut: conntrack)
//! metrics     /metrics, /healthz, /readyz on --metrics-address (the snapshot they read)
//! gc          pods whose DEL never came (netns gone): cleaned as the plugin's GC does
//! datapath    --datapath nft|ebpf: weft-ebpf's fast path kept in step with the pods
//! ```

pub mod cniconf;
pub mod config;
pub mod datapath;
pub mod dataplane;
pub mod error;
pub mod files;
pub mod gc;
pub mod identity;
pub mod log;
pub mod metrics;
pub mod node;
pub mod peers;
pub mod policy;
pub mod socket;

pub use config::Settings;
pub use error::Error;
pub use node::run;
