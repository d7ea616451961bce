//! `weft-policy`: Kubernetes `networking.k8s.io/v1` NetworkPolicy for weft — the model, the
//! manifests, the meaning, and the nftables plan that enforces it.
//!
//! It owns:
//! - **the model** ([`NetworkPolicy`], [`LabelSelector`], [`Namespace`], [`PodLabels`],
//!   [`Endpoint`], [`Node`], all gathered in a [`World`]);
//! - **manifests** ([`parse`]): YAML or JSON exactly as kubectl takes them, strict (unknown or
//!   unimplemented fields are errors), validated with the API server's field paths and
//!   messages ([`FieldError`]); [`Object::to_json`] writes them back;
//! - **the semantics** ([`evaluate`]): the reference evaluator, which says whether a new
//!   connection is allowed and by which policy and rule, or which policies isolate it
//!   ([`Verdict`]); `weftctl policy explain` prints it;
//! - **the dataplane plan** ([`plan`]): [`plan::compile`] turns a `World` into a
//!   [`plan::Plan`] — an nftables table described as data (sets, verdict maps, chains, rules)
//!   whose per-packet cost is a handful of hash/interval lookups whatever the number of pods,
//!   policies or rules; [`plan::diff`] turns two plans into the small, ordered, flush-free
//!   operations that move the kernel from one to the other; [`plan::render`] and
//!   [`plan::render_ops`] write them as `nft -f` text; [`plan::compile_linear`] builds the
//!   same policy the way iptables-based implementations do (for benchmarks);
//!   [`plan::Plan::walk`] runs a packet through a plan as nftables would.
//!
//! It must not touch the kernel, spawn processes, read files, or use an async runtime: data
//! in, data out. The agent applies plans, the CLI reads files; both build on this crate.
//!
//! Typical use (the agent):
//!
//! ```
//! use weft_policy::{parse, ParseOptions, Object, World, plan};
//! let objects = parse(
//!     "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
//!      metadata: {name: deny-all, namespace: shop}\nspec: {podSelector: {}}\n",
//!     &ParseOptions::default(),
//! ).unwrap();
//! let mut world = World::default();
//! for o in objects {
//!     if let Object::NetworkPolicy(p) = o { world.policies.push(p) }
//! }
//! let opts = plan::PlanOptions::new("node-a");
//! let before = plan::Plan::empty(&opts.table);
//! let after = plan::compile(&world, &opts);
//! let ops = plan::diff(&before, &after);
//! let nft_script = plan::render_ops(&after.table, &ops); // one `nft -f -` transaction
//! assert!(nft_script.starts_with("add table inet weft_policy"));
//! ```

mod eval;
mod manifest;
mod model;
pub mod plan;
mod validate;

pub use eval::{EvalError, Party, Peer, Resolved, Side, Verdict, evaluate, evaluate_addrs};
pub use manifest::{ManifestError, Object, ParseError, ParseOptions, parse};
pub use model::{
    Direction, Endpoint, IpBlock, LabelSelector, Labels, NAMESPACE_NAME_LABEL, NamedPort,
    Namespace, NetworkPolicy, Node, Operator, PodLabels, PolicyPeer, PolicyPort, PolicyRef,
    PolicySpec, PortRef, Protocol, Requirement, Rule, RuleRef, World,
};
pub use validate::{ErrorKind, FieldError};
