//! `weftctl lab`: a real multi-node Weft cluster in network namespaces of one machine.
//!
//! ```text
//! lab up      underlay (router + segments + outside) → etcd (with --datastore kubernetes:
//!             + kube-apiserver + kube-controller-manager, weft's CRD and ConfigMap) → node
//!             namespaces (+ Node objects) → one weftd per node (ready = conflist written)
//!             → pods (+ Pod objects), wired by the real plugin chain
//! lab check   pod×pod, node→pod, pod→outside reachability with real packets
//! lab down    everything named or started by the lab, found by prefix and /proc scan
//! lab pod add/label/del, pods, exec, node add/del, etcd stop/start, weftd restart
//! lab kubeconfig, kubectl   the admin kubeconfig of a lab on the Kubernetes API; its kubectl
//! ```
//!
//! Modules: `names` (every name the lab creates, and validation) and `state` (the record
//! and the lock) are weft-ctl's `lab`, shared with `weftctl … --lab`; `topology` (namespaces, links, addresses), `procs` (daemons: start, find, stop),
//! `etcd`, `controlplane` (kube-apiserver, kube-controller-manager and weft's objects in
//! them), `kubeapi` (the kubelet's part: Node and Pod objects), with `--kubelet` instead
//! `kubelet` (containerd, kubelet and kube-proxy on a node) over `nodeview` (a node's own
//! view of the host's paths), `node` (weftd), `pod` (the
//! runtime side of CNI), `records` (pods as the datastore's objects: PodLabels in etcd, or
//! Pod objects), `probe` + `check` (`lab check`),
//! `up` and `down`.
//!
//! Must not: touch anything outside its own namespaces and state dir, or rely on a pid
//! without checking the process is still the lab's.

mod check;
mod controlplane;
mod down;
mod error;
mod etcd;
mod kubeapi;
mod kubelet;
mod node;
mod nodeview;
mod pod;
mod probe;
mod procs;
mod records;
pub(crate) mod topology;
mod up;

pub(crate) use controlplane::{find_bin as kube_bin, kubectl_ok};
pub(crate) use kubeapi::{PodState, Session};
pub(crate) use weft_ctl::lab::{names, state};

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

pub use error::{LabError, RecordError, Result};
use names::Names;
use procs::Owner;
use records::Objects;
use state::{Lock, State};

/// How a lab command ended, when not with an error.
pub enum Outcome {
    Done,
    /// Exit with this status (a failed check, the status of `lab exec`'s command).
    Exit(ExitCode),
}

#[derive(Debug, Args)]
pub struct LabArgs {
    /// The lab to act on; its namespaces are named wl<NAME>-…, its state is in
    /// /run/weft-lab/<NAME>/.
    #[arg(long, global = true, default_value = names::DEFAULT_LAB, value_name = "LAB")]
    name: String,
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(Debug, Subcommand)]
enum LabCommand {
    /// Build the lab, or finish one a crash left half-made (a second run is a no-op).
    Up(up::UpArgs),
    /// Reachability with real packets: pod↔pod (IPv4, IPv6), node→pod, pod→outside.
    Check(CheckArgs),
    /// Remove everything the lab made (also after a crash; twice is fine).
    Down,
    /// Add, relabel or delete a pod.
    #[command(subcommand)]
    Pod(PodCommand),
    /// List the pods: name, namespace, node, addresses, labels.
    Pods(OutputArgs),
    /// Run a command inside a pod's network namespace.
    Exec {
        pod: String,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, num_args = 1..)]
        command: Vec<String>,
    },
    /// Add a node to a running lab, or kill one.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Stop or start the lab's etcd (its data is kept).
    #[command(subcommand)]
    Etcd(EtcdCommand),
    /// Restart a node's weftd.
    #[command(subcommand)]
    Weftd(WeftdCommand),
    /// What each node's weftd says (`weftctl status` for every node, or one).
    Status {
        /// Only this node (n1, n2, … or 1, 2, …).
        node: Option<String>,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = weft_ctl::status::Output::Text)]
        output: weft_ctl::status::Output,
    },
    /// Print the path of the admin kubeconfig of a lab on the Kubernetes API. Its server is
    /// the router's address, reachable inside the router namespace only: use it there
    /// (`ip netns exec wl<LAB>-ul kubectl --kubeconfig PATH …`) or through `lab kubectl`.
    Kubeconfig,
    /// Run kubectl as the lab's admin inside its router namespace (a lab on the Kubernetes
    /// API): `weftctl lab kubectl -- apply -f policy.yaml`.
    Kubectl {
        /// kubectl's arguments, after `--`.
        #[arg(last = true, required = true, num_args = 1..)]
        args: Vec<String>,
    },
    /// Wait until every node's weftd has loaded the datastore's current policy view and
    /// committed it to the kernel (a barrier: change policy, sync, then probe).
    PolicySync {
        /// Give up after this long.
        #[arg(long, default_value_t = 30, value_name = "SECS")]
        timeout: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Debug, Args)]
struct OutputArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Debug, Args)]
struct CheckArgs {
    #[command(flatten)]
    out: OutputArgs,
    /// How long each cell keeps retrying before it counts as failed.
    #[arg(long, default_value_t = 5, value_name = "SECS")]
    timeout: u64,
}

#[derive(Debug, Subcommand)]
enum PodCommand {
    /// Make a pod on a node: its namespace (on Kubernetes its Pod object first), then CNI ADD
    /// through the node's conflist (then, on Kubernetes, the Pod's status).
    Add {
        pod: String,
        /// The node (n1, n2, … or 1, 2, …).
        #[arg(long)]
        node: String,
        /// The pod's Kubernetes namespace.
        #[arg(long, default_value = "default")]
        namespace: String,
        /// Labels, k=v,k2=v2.
        #[arg(long, default_value = "")]
        labels: String,
        /// Named container ports, name=port[/PROTO],… (TCP by default): what a policy's
        /// named port means for this pod. Fixed once the pod exists, as in Kubernetes.
        #[arg(long, default_value = "")]
        ports: String,
    },
    /// Set (k=v) or remove (k-) labels.
    Label {
        pod: String,
        #[arg(required = true, num_args = 1..)]
        changes: Vec<String>,
    },
    /// CNI DEL, then remove the pod's namespace.
    Del { pod: String },
    /// CNI CHECK with the ADD's result as prevResult (exit 1 if the plugin reports a
    /// problem).
    Check { pod: String },
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Add a node: namespace, cable to a segment, weftd; waits until it is ready.
    Add {
        /// Its name (nK); default: the next number never used in this lab.
        node: Option<String>,
        /// The segment to cable it to (0-based); default: round-robin by number.
        #[arg(long)]
        segment: Option<u32>,
    },
    /// Kill a node's weftd (SIGKILL: a crash, its lease left to expire) and remove its
    /// namespace and pods.
    Del {
        node: String,
        /// SIGTERM instead: let weftd shut down as it would on a clean stop.
        #[arg(long)]
        graceful: bool,
    },
}

#[derive(Debug, Subcommand)]
enum EtcdCommand {
    /// SIGTERM etcd and wait for it to exit.
    Stop,
    /// Start etcd again on its data and wait until it is healthy.
    Start,
}

#[derive(Debug, Subcommand)]
enum WeftdCommand {
    /// SIGTERM a node's weftd, start it again, wait until it is ready.
    Restart {
        node: String,
        /// SIGKILL instead (a crash: no chance to finish anything).
        #[arg(long)]
        kill: bool,
    },
    /// Stop a node's weftd and leave it stopped (its pods keep their network).
    Stop {
        node: String,
        /// SIGKILL instead of SIGTERM.
        #[arg(long)]
        kill: bool,
    },
    /// Start a node's weftd unless it runs; wait until it is ready.
    Start { node: String },
}

/// Runs one `weftctl lab` command.
pub fn run(args: LabArgs) -> Result<Outcome> {
    let names = Names::new(&args.name)?;
    if !nix::unistd::geteuid().is_root() {
        return Err(LabError::NotRoot);
    }
    match args.command {
        LabCommand::Up(a) => up::run(&names, &a).map(|()| Outcome::Done),
        LabCommand::Down => down::run(&names).map(|()| Outcome::Done),
        LabCommand::Check(a) => check_cmd(&names, &a),
        LabCommand::Pods(a) => pods_cmd(&names, a.output).map(|()| Outcome::Done),
        LabCommand::Exec { pod, command } => exec_cmd(&names, &pod, &command),
        LabCommand::Pod(PodCommand::Add {
            pod,
            node,
            namespace,
            labels,
            ports,
        }) => pod_add(&names, &pod, &node, &namespace, &labels, &ports).map(|()| Outcome::Done),
        LabCommand::Pod(PodCommand::Label { pod, changes }) => {
            pod_label(&names, &pod, &changes).map(|()| Outcome::Done)
        }
        LabCommand::Pod(PodCommand::Del { pod }) => pod_del(&names, &pod).map(|()| Outcome::Done),
        LabCommand::Pod(PodCommand::Check { pod }) => pod_check(&names, &pod),
        LabCommand::Node(NodeCommand::Add { node, segment }) => {
            up::node_add(&names, node.as_deref(), segment).map(|()| Outcome::Done)
        }
        LabCommand::Node(NodeCommand::Del { node, graceful }) => {
            node_del(&names, &node, graceful).map(|()| Outcome::Done)
        }
        LabCommand::Etcd(EtcdCommand::Stop) => etcd_stop(&names).map(|()| Outcome::Done),
        LabCommand::Etcd(EtcdCommand::Start) => etcd_start(&names).map(|()| Outcome::Done),
        LabCommand::Weftd(WeftdCommand::Restart { node, kill }) => {
            weftd_stop(&names, &node, kill)?;
            weftd_start(&names, &node).map(|()| Outcome::Done)
        }
        LabCommand::Weftd(WeftdCommand::Stop { node, kill }) => {
            weftd_stop(&names, &node, kill).map(|()| Outcome::Done)
        }
        LabCommand::Weftd(WeftdCommand::Start { node }) => {
            weftd_start(&names, &node).map(|()| Outcome::Done)
        }
        LabCommand::Status { node, output } => {
            status_cmd(&names, node.as_deref(), output).map(|()| Outcome::Done)
        }
        LabCommand::Kubeconfig => kubeconfig_cmd(&names).map(|()| Outcome::Done),
        LabCommand::Kubectl { args } => kubectl_cmd(&names, &args),
        LabCommand::PolicySync { timeout } => {
            policy_sync(&names, Duration::from_secs(timeout)).map(|()| Outcome::Done)
        }
    }
}

/// The lock and record of a lab that exists.
fn open_lab(names: &Names) -> Result<(Lock, State)> {
    if !names.state_dir().is_dir() {
        return Err(RecordError::NoSuchLab {
            lab: names.lab().to_owned(),
        }
        .into());
    }
    let lock = Lock::acquire(names)?;
    let state = State::load_existing(names)?;
    Ok((lock, state))
}

fn owner(names: &Names) -> Result<Owner> {
    Owner::new(names.state_dir(), &names.prefix(), names.lab())
}

/// A node given as `n2`/`2` that the lab has.
fn find_node(names: &Names, state: &State, given: &str) -> Result<String> {
    let name = names::node_name(names::node_index(given)?);
    match state.node(&name) {
        Some(_) => Ok(name),
        None => Err(LabError::NoSuchNode {
            lab: names.lab().to_owned(),
            node: name,
        }),
    }
}

fn no_such_pod(names: &Names, pod: &str) -> LabError {
    LabError::NoSuchPod {
        lab: names.lab().to_owned(),
        pod: pod.to_owned(),
    }
}

fn check_cmd(names: &Names, args: &CheckArgs) -> Result<Outcome> {
    let state = State::load_existing(names)?;
    let report = check::run(names, &state, Duration::from_secs(args.timeout.max(1)))?;
    match args.out.output {
        Output::Text => print!("{}", report.to_text()),
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ),
    }
    Ok(if report.ok {
        Outcome::Done
    } else {
        Outcome::Exit(ExitCode::FAILURE)
    })
}

#[derive(Serialize)]
struct PodView<'a> {
    name: &'a str,
    namespace: &'a str,
    node: &'a str,
    addresses: Vec<String>,
    labels: &'a BTreeMap<String, String>,
}

fn pods_cmd(names: &Names, output: Output) -> Result<()> {
    let state = State::load_existing(names)?;
    let views: Vec<PodView<'_>> = state
        .pods
        .iter()
        .map(|p| PodView {
            name: &p.name,
            namespace: &p.namespace,
            node: &p.node,
            addresses: p.addresses.iter().map(ToString::to_string).collect(),
            labels: &p.labels,
        })
        .collect();
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&views).unwrap_or_default()
        ),
        Output::Text => {
            let rows: Vec<[String; 5]> = views
                .iter()
                .map(|v| {
                    let labels: Vec<String> =
                        v.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    [
                        v.name.to_owned(),
                        v.namespace.to_owned(),
                        v.node.to_owned(),
                        if v.addresses.is_empty() {
                            "(not wired)".to_owned()
                        } else {
                            v.addresses.join(",")
                        },
                        labels.join(","),
                    ]
                })
                .collect();
            let header = ["NAME", "NAMESPACE", "NODE", "ADDRESSES", "LABELS"].map(String::from);
            let mut widths = header.clone().map(|h| h.len());
            for row in &rows {
                for (w, cell) in widths.iter_mut().zip(row) {
                    *w = (*w).max(cell.chars().count());
                }
            }
            for row in std::iter::once(&header).chain(&rows) {
                let line: Vec<String> = row
                    .iter()
                    .zip(widths)
                    .map(|(cell, w)| format!("{cell:<w$}"))
                    .collect();
                println!("{}", line.join("  ").trim_end());
            }
        }
    }
    Ok(())
}

/// Replaces this process with `ip netns exec <pod ns> CMD…`: the command gets the terminal,
/// the signals and the exit status directly.
fn exec_cmd(names: &Names, pod: &str, command: &[String]) -> Result<Outcome> {
    let state = State::load_existing(names)?;
    if state.pod(pod).is_none() {
        return Err(no_such_pod(names, pod));
    }
    let ns = names.pod(pod);
    if !crate::netns::exists(&ns) {
        return Err(LabError::invalid(
            "pod",
            pod,
            format!("its namespace {ns} is missing"),
        ));
    }
    let err = Command::new("ip")
        .args(["netns", "exec", &ns])
        .args(command)
        .exec();
    Err(LabError::io(format!("running `ip netns exec {ns} …`"))(
        err,
    ))
}

fn pod_add(
    names: &Names,
    pod: &str,
    node: &str,
    namespace: &str,
    labels: &str,
    ports: &str,
) -> Result<()> {
    names::validate_dns_label("pod name", pod)?;
    names::validate_dns_label("namespace", namespace)?;
    let labels = names::parse_labels(labels)?;
    let ports = names::parse_ports(ports)?;
    let (_lock, mut state) = open_lab(names)?;
    let node = find_node(names, &state, node)?;
    if state.pod(pod).is_some() {
        return Err(LabError::Exists {
            lab: names.lab().to_owned(),
            what: "pod",
            name: pod.to_owned(),
        });
    }
    let host = state
        .node(&node)
        .map(|n| std::net::IpAddr::from(n.address4))
        .ok_or_else(|| LabError::NoSuchNode {
            lab: names.lab().to_owned(),
            node: node.clone(),
        })?;
    let mut record = state::Pod {
        name: pod.to_owned(),
        namespace: namespace.to_owned(),
        node,
        labels,
        ports,
        container_id: names.container_id(pod),
        addresses: Vec::new(),
        result: None,
    };
    let objects = Objects::open(names, &state.options)?;
    // Planned first: a crash during the ADD leaves a record `lab up` finishes or `pod del`
    // removes, never a namespace nobody knows.
    state.pods.push(record.clone());
    state.save(names)?;
    let outcome = objects.before_add(&record).and_then(|()| {
        let added = pod::add(names, &state.options, &mut record);
        if added.is_err() {
            // As a kubelet that gives up: nothing of the pod is left.
            let _ = objects.add_failed(&record);
        }
        added
    });
    state.pods.retain(|p| p.name != pod);
    if outcome.is_ok() {
        state.pods.push(record.clone());
    }
    state.save(names)?;
    outcome?;
    let addrs: Vec<String> = record.addresses.iter().map(ToString::to_string).collect();
    println!("pod {pod} on {}: {}", record.node, addrs.join(", "));
    objects.after_add(names, &record, host)
}

fn pod_label(names: &Names, pod: &str, changes: &[String]) -> Result<()> {
    let changes = changes
        .iter()
        .map(|c| names::parse_label_change(c))
        .collect::<Result<Vec<_>, _>>()?;
    let (_lock, mut state) = open_lab(names)?;
    let record = state.pod_mut(pod).ok_or_else(|| no_such_pod(names, pod))?;
    for change in &changes {
        match change {
            names::LabelChange::Set(k, v) => {
                record.labels.insert(k.clone(), v.clone());
            }
            names::LabelChange::Remove(k) => {
                record.labels.remove(k);
            }
        }
    }
    let labels: Vec<String> = record
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let record = record.clone();
    Objects::open(names, &state.options)?.relabel(names, &record, &changes)?;
    state.save(names)?;
    println!("pod {pod}: {}", labels.join(","));
    Ok(())
}

fn pod_del(names: &Names, pod: &str) -> Result<()> {
    let (_lock, mut state) = open_lab(names)?;
    let record = state
        .pod(pod)
        .ok_or_else(|| no_such_pod(names, pod))?
        .clone();
    let objects = Objects::open(names, &state.options)?;
    pod::del(names, &state.options, &record)?;
    // Before the record forgets it: a failure here leaves a pod `pod del` can finish.
    objects.forget(names, &record)?;
    state.pods.retain(|p| p.name != pod);
    state.save(names)?;
    println!("pod {pod}: deleted");
    Ok(())
}

/// CHECK needs no lock: it changes nothing, and the record is replaced whole.
fn pod_check(names: &Names, pod: &str) -> Result<Outcome> {
    let state = State::load_existing(names)?;
    let record = state.pod(pod).ok_or_else(|| no_such_pod(names, pod))?;
    let started = std::time::Instant::now();
    let outcome = pod::check(names, &state.options, record);
    let ms = started.elapsed().as_millis();
    match outcome {
        Ok(()) => {
            println!("pod {pod}: CHECK ok ({ms} ms)");
            Ok(Outcome::Done)
        }
        Err(e @ LabError::Plugin { .. }) => {
            eprintln!("pod {pod}: CHECK failed ({ms} ms): {e}");
            Ok(Outcome::Exit(ExitCode::FAILURE))
        }
        Err(e) => Err(e),
    }
}

fn node_del(names: &Names, given: &str, graceful: bool) -> Result<()> {
    let (_lock, mut state) = open_lab(names)?;
    let node = find_node(names, &state, given)?;
    let signal = if graceful {
        libc::SIGTERM
    } else {
        libc::SIGKILL
    };
    let owner = owner(names)?;
    let killed = node::stop(names, &owner, &node, signal);
    // Its pods die with it: their cables end in the node's namespace.
    let pod_ns: Vec<String> = state
        .pods
        .iter()
        .filter(|p| p.node == node)
        .map(|p| names.pod(&p.name))
        .collect();
    let mut doomed = pod_ns;
    doomed.push(names.node(&node));
    // Anything else still inside (a `lab exec` left running) goes too.
    // A kubelet node's pods (in namespaces of containerd's) go by their cgroups.
    let leftovers: Vec<u32> = owner
        .scan()
        .into_iter()
        .filter(|pid| in_any_netns(*pid, &doomed) || kubelet::in_node_pods(names, &node, *pid))
        .collect();
    procs::stop(&leftovers, libc::SIGKILL, Duration::from_secs(2));
    crate::netns::remove(&doomed)?;
    // Its weftd's eBPF pins, if any (bpffs is not per namespace).
    let pins = node::pin_dir(names, &node);
    weft_ebpf::remove_all(&pins)
        .map_err(|e| LabError::invalid("node del", names.lab(), e.to_string()))?;
    if state.options.kubelet {
        nodeview::remove(names, &node)?;
        let left = kubelet::remove_cgroups(names, Some(&node));
        if !left.is_empty() {
            return Err(LabError::invalid(
                "node del",
                node,
                format!("cgroups {left:?} would not go"),
            ));
        }
    }
    let dir = node::paths(names, &node).dir;
    if let Err(e) = std::fs::remove_dir_all(&dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        return Err(LabError::io(format!("removing {}", dir.display()))(e));
    }
    let gone: Vec<state::Pod> = state
        .pods
        .iter()
        .filter(|p| p.node == node)
        .cloned()
        .collect();
    let pods = gone.len();
    state.pods.retain(|p| p.node != node);
    state.nodes.retain(|n| n.name != node);
    state.save(names)?;
    // On Kubernetes the node's objects go too (its WeftBlocks with the Node: it owns them).
    if let Objects::Kube(session) = Objects::open(names, &state.options)? {
        for p in &gone {
            session.delete_pod(&p.namespace, &p.name)?;
        }
        session.delete_node(&node)?;
    }
    let how = match (killed, graceful) {
        _ if state.options.kubelet => "containerd, kubelet, kube-proxy and its pods killed",
        (false, _) => "no weftd was running",
        (true, false) => "weftd killed with SIGKILL",
        (true, true) => "weftd stopped with SIGTERM",
    };
    println!("node {node}: removed ({how}; {pods} pod(s) gone)");
    Ok(())
}

/// Whether `pid` lives in one of the named namespaces.
fn in_any_netns(pid: u32, ns_names: &[String]) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(own) = std::fs::metadata(format!("/proc/{pid}/ns/net")) else {
        return false;
    };
    ns_names
        .iter()
        .any(|n| std::fs::metadata(crate::netns::path(n)).is_ok_and(|m| m.ino() == own.ino()))
}

fn etcd_stop(names: &Names) -> Result<()> {
    let (_lock, mut state) = open_lab(names)?;
    let was_running = etcd::stop(names, &owner(names)?);
    state.etcd_pid = None;
    state.save(names)?;
    let data = etcd::paths(names).data;
    if was_running {
        println!("etcd: stopped (data kept in {})", data.display());
    } else {
        println!("etcd: was not running");
    }
    Ok(())
}

fn etcd_start(names: &Names) -> Result<()> {
    let (_lock, mut state) = open_lab(names)?;
    let etcd_bin = up::require_tool("etcd", up::ETCD_HINT)?;
    let pid = etcd::ensure(names, &owner(names)?, &etcd_bin)?;
    state.etcd_pid = Some(pid);
    state.save(names)?;
    println!("etcd: running (pid {pid})");
    Ok(())
}

fn weftd_stop(names: &Names, given: &str, kill: bool) -> Result<()> {
    let (_lock, state) = open_lab(names)?;
    let node = find_node(names, &state, given)?;
    let signal = if kill { libc::SIGKILL } else { libc::SIGTERM };
    let how = if kill { "SIGKILL" } else { "SIGTERM" };
    if node::stop(names, &owner(names)?, &node, signal) {
        println!("weftd on {node}: stopped ({how})");
    } else {
        println!("weftd on {node}: was not running");
    }
    Ok(())
}

fn weftd_start(names: &Names, given: &str) -> Result<()> {
    let (_lock, mut state) = open_lab(names)?;
    let node = find_node(names, &state, given)?;
    up::require_binary(&state.options.bin_dir, "weftd")?;
    let owner = owner(names)?;
    let record = state
        .node(&node)
        .cloned()
        .ok_or_else(|| LabError::NoSuchNode {
            lab: names.lab().to_owned(),
            node: node.clone(),
        })?;
    let (starting, pid) = match node::running(names, &owner, &node) {
        Some(pid) => (node::Starting::Running(pid), pid),
        None => {
            let child = node::start(names, &state.options, &record)?;
            let pid = child.id();
            (node::Starting::Child(child), pid)
        }
    };
    let ready = node::wait_ready(names, vec![(node.clone(), starting)])?;
    if let Some(n) = state.node_mut(&node) {
        n.pid = Some(pid);
        if let Some((_, blocks)) = ready.into_iter().next() {
            n.blocks = blocks;
        }
    }
    Ok(state.save(names)?)
}

/// Prints every node's (or one node's) weftd status; with `-o json`, one array of
/// `{"node", "status"}` (or `"error"`) objects.
fn status_cmd(names: &Names, only: Option<&str>, output: weft_ctl::status::Output) -> Result<()> {
    let state = State::load_existing(names)?;
    let only = only
        .map(names::node_index)
        .transpose()?
        .map(names::node_name);
    let mut all = Vec::new();
    for n in state
        .nodes
        .iter()
        .filter(|n| only.as_ref().is_none_or(|o| *o == n.name))
    {
        let got = weft_ctl::status::fetch(&node::paths(names, &n.name).socket());
        match output {
            weft_ctl::status::Output::Json => all.push(match got {
                Ok(st) => serde_json::json!({"node": n.name, "status": st}),
                Err(e) => serde_json::json!({"node": n.name, "error": e.to_string()}),
            }),
            weft_ctl::status::Output::Text => match got {
                Ok(st) => weft_ctl::status::print(&st, output),
                Err(e) => println!("node {}: {e}", n.name),
            },
        }
    }
    if let Some(o) = &only
        && !state.nodes.iter().any(|n| n.name == *o)
    {
        return Err(LabError::invalid("node", o, "no such node in this lab"));
    }
    if output == weft_ctl::status::Output::Json {
        println!("{}", serde_json::Value::from(all));
    }
    Ok(())
}

/// Asks every node's weftd for `policy-sync` (load the view now, commit, answer), retrying
/// a node that refuses (datastore unreachable, still starting) until `timeout`.
fn policy_sync(names: &Names, timeout: Duration) -> Result<()> {
    use weft_proto::{Request, ask};
    let state = State::load_existing(names)?;
    let deadline = std::time::Instant::now() + timeout;
    for n in &state.nodes {
        let socket = node::paths(names, &n.name).socket();
        loop {
            match ask(&socket, &Request::PolicySync, Duration::from_secs(10)) {
                Ok(reply) => {
                    let p = reply.status.unwrap_or_default().policy;
                    println!(
                        "node {}: policy at revision {} ({} classes, {} rules)",
                        n.name, p.revision, p.classes, p.rules
                    );
                    break;
                }
                Err(e) if std::time::Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => {
                    return Err(LabError::invalid(
                        "node",
                        &n.name,
                        format!(
                            "weftd did not sync its policy within {}s: {e}",
                            timeout.as_secs()
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The record of a lab on the Kubernetes API.
fn kube_lab(names: &Names) -> Result<State> {
    let state = State::load_existing(names)?;
    if state.options.datastore != state::Datastore::Kubernetes {
        return Err(LabError::NotKube {
            lab: names.lab().to_owned(),
        });
    }
    Ok(state)
}

fn kubeconfig_cmd(names: &Names) -> Result<()> {
    kube_lab(names)?;
    println!("{}", controlplane::paths(names).admin_kubeconfig.display());
    Ok(())
}

/// Replaces this process with the lab's kubectl in the router namespace.
fn kubectl_cmd(names: &Names, args: &[String]) -> Result<Outcome> {
    let state = kube_lab(names)?;
    let bin = controlplane::find_bin(state.options.kube_bin.as_deref())?;
    let err = controlplane::kubectl(names, &bin).args(args).exec();
    Err(LabError::io(format!(
        "running `ip netns exec {} kubectl …`",
        names.underlay()
    ))(err))
}

/// The directory of the running weftctl: the default `--bin-dir`.
fn own_dir() -> Option<PathBuf> {
    std::env::current_exe().ok()?.parent().map(PathBuf::from)
}
