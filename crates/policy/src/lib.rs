//! `weft-policy`: Kubernetes `networking.k8s.io/v1` NetworkPolicy for weft — the model, the
//! manifests, the meaning, and the nftables plan that enforces it.
//!
//! It owns:
//! - **the model** ([`NetworkPolicy`], [`LabelSelector`], [`Namespace`], [`PodLabels`],
//!   [`Endpoint`], [`Node`], all gathered in a [`World`]);
//! - **manifests** ([`parse`]): YAML or JSON exactly as kubectl takes them, strict, validated
//!   with the API server's field paths and messages ([`FieldError`]); [`Object::to_json`]
//!   writes them back;
//! - **the semantics** ([`evaluate`]): the reference evaluator, which says whether a new
//!   connection is allowed and by which policy and rule, or which policies isolate it
//!   ([`Verdict`]); `weftctl policy explain` prints it;
//! - **the dataplane plan** ([`plan`]): [`plan::compile`] turns a `World` into a
//!   [`plan::Plan`] — an nftables table described as data (sets, verdict maps, chains, rules)
//!   whose per-packet cost is a handful of hash/interval lookups whatever the number of pods,
//!   policies or rules; [`plan::diff`] turns two plans into the small, ordered, flush-free
//!   operations that move the kernel from one to the other; [`plan::Compiler`] keeps a
//!   world and its plan and turns each change (a pod, a policy) into those operations
//!   recomputing only what the change reaches (what the agent runs; `compile` is a
//!   `Compiler` used once); [`plan::render`] and
//!   [`plan::render_ops`] write them as `nft -f` text; `plan::compile_linear` (feature
//!   `bench`: a baseline for benchmarks and a second compiler for the tests, never in weftd)
//!   builds the same policy the way iptables-based implementations do;
//!   `testing` (feature `testing`, for tests only: this crate's and weft-agent's) builds
//!   worlds, random ones and their mutations, and walks packets through every node's plan;
//!   [`plan::Plan::walk`] runs a packet through a plan as nftables would.
//!
//! It must not touch the kernel, spawn processes, read files, or use an async runtime: data
//! in, data out. The agent applies plans, the CLI reads files; both build on this crate.
//! (Its tests do use the kernel: `nft` in private network namespaces.)
//!
//! # Manifests
//!
//! YAML (one or many `---` documents; YAML 1.2, so `yes`/`on` stay strings) or JSON (one
//! object or a stream of them). Kinds: `networking.k8s.io/v1` `NetworkPolicy` (and
//! `NetworkPolicyList`), `v1` `Namespace` (and `NamespaceList`), `v1` `List`, and weft's own
//! `weft.dev/v1` `PodLabels`, which gives a pod its labels (and named ports) in clusters
//! without a Kubernetes API — the pod's node and addresses come from CNI, and the agent joins
//! the two into an [`Endpoint`]:
//!
//! ```yaml
//! apiVersion: weft.dev/v1
//! kind: PodLabels
//! metadata:
//!   name: web-0                # the pod's name (DNS-1123 subdomain)
//!   namespace: shop            # defaulted like any namespaced object
//!   labels: {app: web}
//! spec:                        # optional
//!   ports:                     # named container ports: what `port: http` in a policy means
//!   - {name: http, containerPort: 8080, protocol: TCP}   # protocol defaults to TCP
//! ```
//!
//! Decoding is strict: a field outside the schema is an error, and so is a field of the
//! schema weft does not implement (`metadata.generateName`, `finalizers`, `ownerReferences`,
//! a non-empty NetworkPolicy `status`); duplicate keys are errors. Fields the server fills in
//! (`uid`, `resourceVersion`, `generation`, `creationTimestamp`, `managedFields`, `selfLink`)
//! are accepted and dropped so `kubectl get -o yaml` output applies; `annotations` are
//! validated and dropped; a Namespace's `spec.finalizers` and `status` are accepted and
//! dropped. `spec.podSelector` is required (the API says "NOT optional"). A document that
//! decodes is validated like `ValidateNetworkPolicy` does; every problem of every document
//! is reported (type errors first: a document with one is not validated further).
//!
//! # Semantics
//!
//! The reading of the API that [`evaluate`] implements and [`plan::compile`] enforces:
//! - A pod is isolated for a direction iff a policy of its namespace selects it with that
//!   direction in its effective `policyTypes` (as written; if empty, Ingress always and
//!   Egress when `egress` has rules). Isolated: only what some rule of some such policy
//!   allows (union). A rule matches when one of its peers matches the other end (empty
//!   `from`/`to`: any address) and one of its ports matches (empty `ports`: any port and
//!   protocol). A connection needs the source's egress AND the destination's ingress.
//! - `podSelector` peers select pods of the policy's namespace; `namespaceSelector` peers
//!   every pod of the matching namespaces (labels plus the automatic
//!   `kubernetes.io/metadata.name`, also for namespaces no object describes); both in one
//!   peer: the pods matching both.
//! - `ipBlock` matches the packet's address whoever owns it — external host, node or pod (the
//!   upstream e2e tests put pod IPs in `cidr` and `except`); `except` carves holes.
//! - Named ports resolve on the destination pod (ingress: the selected pod; egress: each
//!   peer pod) by name and protocol; a destination that is no pod matches no named port.
//!   `endPort` makes an inclusive range. A port entry without `port` is the whole protocol.
//! - Traffic from a pod's own node is always allowed in (kubelet probes); a pod can always
//!   reach itself. Egress from a pod to its own node is egress like any other (the docs'
//!   "two sorts of isolation" exempt only the node's inbound connections).
//!   An address several nodes hold (ptp mode's link-local gateway, the same on every node)
//!   is, as a source, the destination pod's own node when that node holds it: it is never
//!   routed, so that is where such a packet comes from.
//! - An address in a node's pod range that no known pod has is a pod the agent has not
//!   programmed: default-deny both ways, except from its own node.
//! - Replies of allowed connections are allowed (conntrack); the evaluator judges new
//!   connections. Protocols other than TCP/UDP/SCTP (ICMP…) are allowed to an isolated pod
//!   only by rules without `ports` (the API leaves them undefined); IPv6 neighbour discovery
//!   is always allowed.
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
mod join;
mod manifest;
mod model;
pub mod plan;
#[cfg(feature = "testing")]
pub mod testing;
mod validate;

pub use eval::{EvalError, Party, Peer, Resolved, Side, Verdict, evaluate, evaluate_addrs};
pub use join::{RunningPod, join_endpoints, node_addresses};
pub use manifest::{ManifestError, Object, ParseError, ParseOptions, parse};
pub use model::{
    Direction, Endpoint, IpBlock, LabelSelector, Labels, NAMESPACE_NAME_LABEL, NamedPort,
    Namespace, NetworkPolicy, Node, Operator, PodLabels, PolicyPeer, PolicyPort, PolicyRef,
    PolicySpec, PortRef, Protocol, Requirement, Rule, RuleRef, World,
};
pub use validate::{ErrorKind, FieldError};
