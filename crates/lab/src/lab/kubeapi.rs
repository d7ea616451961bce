//! The lab's part on its Kubernetes datastore: what a kubelet (and a cloud provider) would
//! write. A Node object per lab node, made before its weftd starts, with its underlay
//! addresses as `InternalIP`s; a Pod object per lab pod, made before its CNI ADD (bound to
//! its node by `spec.nodeName`: no scheduler runs), its `status.podIPs` and `phase:
//! Running` written after the ADD, its labels patched by `pod label`, and the object
//! deleted (at once: no kubelet is there to confirm a graceful end) after its DEL.
//!
//! Every request runs on a current-thread runtime while the calling thread is inside the
//! router namespace, where the API server's address is reachable; a [`Session`] keeps its
//! connections between requests.
//!
//! Must not: write anything a weftd writes (Node annotations and conditions, WeftBlocks),
//! or weft's ConfigMap (that is `controlplane`'s, once, at `up`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::{Value, json};
use weft_net::NetNs;

use super::controlplane;
use super::error::{LabError, Result};
use super::names::{LabelChange, Names};
use super::state;
use crate::netns;

/// Bound on each request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new namespace may take to get its `default` ServiceAccount (made by the
/// controller manager; the API server refuses pods until it exists).
const SERVICE_ACCOUNT_TIMEOUT: Duration = Duration::from_secs(30);
/// The image of every lab pod's one container. Nothing ever pulls or runs it: the lab's
/// pods are network namespaces, and no kubelet runs.
const POD_IMAGE: &str = "weft.dev/lab/never-pulled:0";

/// A pod as [`Session::pod_states`] reports it.
#[derive(Debug, Clone)]
pub struct PodState {
    pub name: String,
    pub node: String,
    pub phase: String,
    pub ip: Option<IpAddr>,
}

/// A client of the lab's API server (as its admin).
pub struct Session {
    // Declared before `rt`: dropped first, while the runtime still exists.
    client: Client,
    rt: tokio::runtime::Runtime,
    ns: NetNs,
    ns_name: String,
    /// For messages: where to look when the controller manager does not do its part.
    controller_log: PathBuf,
}

fn code_of(e: &kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        _ => 0,
    }
}

/// `fut` bounded by [`REQUEST_TIMEOUT`], its error saying `what` was asked.
async fn timed<T>(
    what: impl Into<String>,
    fut: impl Future<Output = std::result::Result<T, kube::Error>>,
) -> Result<std::result::Result<T, kube::Error>> {
    let what = what.into();
    tokio::time::timeout(REQUEST_TIMEOUT, fut)
        .await
        .map_err(|_| LabError::Tool {
            what,
            detail: format!(
                "no answer from the lab's kube-apiserver ({}) within {}s",
                controlplane::url(),
                REQUEST_TIMEOUT.as_secs()
            ),
        })
}

/// Like [`timed`], any API error an error.
async fn ask<T>(
    what: impl Into<String>,
    fut: impl Future<Output = std::result::Result<T, kube::Error>>,
) -> Result<T> {
    let what = what.into();
    timed(what.clone(), fut)
        .await?
        .map_err(LabError::kube(what))
}

impl Session {
    /// Connects with the lab's admin kubeconfig.
    pub fn connect(names: &Names) -> Result<Session> {
        let ns_name = names.underlay();
        let ns = NetNs::open(&netns::path(&ns_name))
            .map_err(LabError::net(format!("opening netns {ns_name}")))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(LabError::io("starting an async runtime"))?;
        let path = controlplane::paths(names).admin_kubeconfig;
        let bad = |e: &dyn std::fmt::Display| LabError::Tool {
            what: format!("kubeconfig {}", path.display()),
            detail: e.to_string(),
        };
        let kc = Kubeconfig::read_from(&path).map_err(|e| bad(&e))?;
        // The client's worker is spawned on the runtime as it is made, and its sockets are
        // made in whatever namespace the thread is in when a request needs one: always the
        // router's (see `block`).
        let client = ns
            .run(|| {
                rt.block_on(async {
                    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                        .await
                        .map_err(|e| bad(&e))?;
                    Client::try_from(cfg).map_err(|e| bad(&e))
                })
            })
            .map_err(LabError::net(format!("entering netns {ns_name}")))??;
        Ok(Session {
            client,
            rt,
            ns,
            ns_name,
            controller_log: controlplane::paths(names).controller_log,
        })
    }

    /// Runs `fut` to completion inside the router namespace.
    fn block<T>(&self, fut: impl Future<Output = Result<T>>) -> Result<T> {
        self.ns
            .run(|| self.rt.block_on(fut))
            .map_err(LabError::net(format!("entering netns {}", self.ns_name)))?
    }

    /// Makes the Node object of `node` (or brings its addresses up to date): its underlay
    /// addresses as `InternalIP`s, which is where weftd on Kubernetes takes them from.
    pub fn ensure_node(&self, node: &state::Node) -> Result<()> {
        let mut addresses = vec![json!({"type": "InternalIP", "address": node.address4})];
        if let Some(v6) = node.address6 {
            addresses.push(json!({"type": "InternalIP", "address": v6}));
        }
        addresses.push(json!({"type": "Hostname", "address": node.name}));
        let status = json!({"addresses": addresses});
        let obj: Node = from_json(json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": node.name,
                "labels": {"kubernetes.io/hostname": node.name, "kubernetes.io/os": "linux"},
            },
            // A Node's status may be given on create (kubelets register that way); later
            // changes go through the status subresource.
            "status": status,
        }))?;
        let api: Api<Node> = Api::all(self.client.clone());
        let what = format!("creating Node {}", node.name);
        self.block(async {
            match timed(what.clone(), api.create(&PostParams::default(), &obj)).await? {
                Ok(_) => Ok(()),
                Err(e) if code_of(&e) == 409 => {
                    let patch = json!({ "status": status });
                    ask(
                        format!("updating Node {}'s addresses", node.name),
                        api.patch_status(
                            &node.name,
                            &PatchParams::default(),
                            &Patch::Merge(&patch),
                        ),
                    )
                    .await
                    .map(drop)
                }
                Err(e) => Err(LabError::kube(what)(e)),
            }
        })
    }

    /// Deletes a Node object (its WeftBlocks go with it: they are owned by it, and the
    /// controller manager's garbage collector follows ownerReferences).
    pub fn delete_node(&self, name: &str) -> Result<()> {
        let api: Api<Node> = Api::all(self.client.clone());
        self.block(async {
            let what = format!("deleting Node {name}");
            match timed(what.clone(), api.delete(name, &DeleteParams::default())).await? {
                Ok(_) => Ok(()),
                Err(e) if code_of(&e) == 404 => Ok(()),
                Err(e) => Err(LabError::kube(what)(e)),
            }
        })
    }

    /// Makes namespace `name` unless it exists, and waits until it can take pods.
    pub fn ensure_namespace(&self, name: &str) -> Result<()> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), name);
        self.block(async {
            let what = format!("creating namespace {name}");
            if ask(what.clone(), namespaces.get_opt(name)).await?.is_none() {
                let obj: Namespace = from_json(json!({
                    "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name},
                }))?;
                match timed(
                    what.clone(),
                    namespaces.create(&PostParams::default(), &obj),
                )
                .await?
                {
                    Ok(_) => {}
                    Err(e) if code_of(&e) == 409 => {}
                    Err(e) => return Err(LabError::kube(what)(e)),
                }
            }
            let deadline = Instant::now() + SERVICE_ACCOUNT_TIMEOUT;
            let what = format!("reading ServiceAccount {name}/default");
            while ask(what.clone(), accounts.get_opt("default"))
                .await?
                .is_none()
            {
                if Instant::now() > deadline {
                    return Err(LabError::Tool {
                        what: format!("namespace {name}"),
                        detail: format!(
                            "no ServiceAccount `default` after {}s (is kube-controller-manager \
                             running? its log: {})",
                            SERVICE_ACCOUNT_TIMEOUT.as_secs(),
                            self.controller_log.display()
                        ),
                    });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(())
        })
    }

    /// Makes the Pod object of `pod` on its node, as a kubelet finds it before it starts
    /// the pod's sandbox. One left by an earlier attempt is kept if it matches the record
    /// (its labels brought up to date), else replaced.
    pub fn create_pod(&self, pod: &state::Pod) -> Result<()> {
        let obj: Pod = from_json(pod_object(pod))?;
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let id = format!("{}/{}", pod.namespace, pod.name);
        self.block(async {
            let what = format!("creating Pod {id}");
            for _ in 0..3 {
                match timed(what.clone(), api.create(&PostParams::default(), &obj)).await? {
                    Ok(_) => return Ok(()),
                    Err(e) if code_of(&e) == 409 => {}
                    Err(e) => return Err(LabError::kube(what)(e)),
                }
                let Some(existing) =
                    ask(format!("reading Pod {id}"), api.get_opt(&pod.name)).await?
                else {
                    continue;
                };
                if placement(&existing) == placement(&obj) {
                    let patch = json!({"metadata": {"labels": labels_patch(
                        existing.metadata.labels.as_ref(), &pod.labels)}});
                    return ask(
                        format!("relabelling Pod {id}"),
                        api.patch(&pod.name, &PatchParams::default(), &Patch::Merge(&patch)),
                    )
                    .await
                    .map(drop);
                }
                delete_pod_now(&api, &id, &pod.name).await?;
            }
            Err(LabError::Tool {
                what,
                detail: "it kept being there and different from the lab's record".into(),
            })
        })
    }

    /// Writes what a kubelet reports once the pod's sandbox has its network: `Running`, its
    /// addresses, its node's address.
    pub fn pod_running(&self, pod: &state::Pod, host_ip: IpAddr) -> Result<()> {
        let ips: Vec<Value> = pod
            .addresses
            .iter()
            .map(|a| json!({"ip": a.addr()}))
            .collect();
        let mut status = json!({"phase": "Running", "hostIP": host_ip, "podIPs": ips});
        if let Some(first) = pod.addresses.first() {
            status["podIP"] = json!(first.addr());
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let patch = json!({ "status": status });
        self.block(ask(
            format!("writing Pod {}/{}'s status", pod.namespace, pod.name),
            api.patch_status(&pod.name, &PatchParams::default(), &Patch::Merge(&patch)),
        ))
        .map(drop)
    }

    /// Applies `changes` to the Pod's labels (labels others set stay).
    pub fn relabel_pod(&self, pod: &state::Pod, changes: &[LabelChange]) -> Result<()> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let labels: serde_json::Map<String, Value> = changes
            .iter()
            .map(|c| match c {
                LabelChange::Set(k, v) => (k.clone(), Value::from(v.as_str())),
                LabelChange::Remove(k) => (k.clone(), Value::Null),
            })
            .collect();
        let patch = json!({"metadata": {"labels": labels}});
        self.block(ask(
            format!("relabelling Pod {}/{}", pod.namespace, pod.name),
            api.patch(&pod.name, &PatchParams::default(), &Patch::Merge(&patch)),
        ))
        .map(drop)
    }

    /// The pods of `namespace` that `selector` selects, as the API has them now: name,
    /// node, phase and first address (the benchmarks poll this).
    pub fn pod_states(&self, namespace: &str, selector: &str) -> Result<Vec<PodState>> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let lp = kube::api::ListParams::default().labels(selector);
        let list = self.block(ask(format!("listing pods {selector}"), api.list(&lp)))?;
        Ok(list
            .items
            .into_iter()
            .map(|p| {
                let status = p.status.unwrap_or_default();
                PodState {
                    name: p.metadata.name.unwrap_or_default(),
                    node: p.spec.and_then(|s| s.node_name).unwrap_or_default(),
                    phase: status.phase.unwrap_or_default(),
                    ip: status.pod_ip.and_then(|ip| ip.parse().ok()),
                }
            })
            .collect())
    }

    /// Deletes the Pod object at once (no grace period: no kubelet is there to confirm a
    /// graceful end, so the object would stay `Terminating`). Gone already is fine.
    pub fn delete_pod(&self, namespace: &str, name: &str) -> Result<()> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let id = format!("{namespace}/{name}");
        self.block(delete_pod_now(&api, &id, name))
    }
}

/// A container port's name, number and protocol.
type PortKey<'a> = (Option<&'a str>, i32, Option<&'a str>);

/// What a Pod object fixes for good and the lab decides: its node and its named ports (the
/// server fills in the rest of a container, so containers are not compared whole).
fn placement(p: &Pod) -> Option<(Option<&str>, Vec<PortKey<'_>>)> {
    let spec = p.spec.as_ref()?;
    let ports = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .map(|p| (p.name.as_deref(), p.container_port, p.protocol.as_deref()))
        .collect();
    Some((spec.node_name.as_deref(), ports))
}

async fn delete_pod_now(api: &Api<Pod>, id: &str, name: &str) -> Result<()> {
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    let what = format!("deleting Pod {id}");
    match timed(what.clone(), api.delete(name, &dp)).await? {
        Ok(_) => Ok(()),
        Err(e) if code_of(&e) == 404 => Ok(()),
        Err(e) => Err(LabError::kube(what)(e)),
    }
}

/// A merge patch of `metadata.labels` from `current` to `wanted`: removed keys as null.
fn labels_patch(
    current: Option<&BTreeMap<String, String>>,
    wanted: &BTreeMap<String, String>,
) -> Value {
    let mut patch: serde_json::Map<String, Value> = current
        .into_iter()
        .flatten()
        .filter(|(k, _)| !wanted.contains_key(*k))
        .map(|(k, _)| (k.clone(), Value::Null))
        .collect();
    for (k, v) in wanted {
        patch.insert(k.clone(), Value::from(v.as_str()));
    }
    Value::Object(patch)
}

/// The Pod object of a lab pod: bound to its node, its labels and named ports, one
/// container that nothing runs.
fn pod_object(pod: &state::Pod) -> Value {
    let ports: Vec<Value> = pod
        .ports
        .iter()
        .map(|p| json!({"name": p.name, "containerPort": p.port, "protocol": p.protocol}))
        .collect();
    let mut container = json!({"name": "pod", "image": POD_IMAGE, "imagePullPolicy": "Never"});
    if !ports.is_empty() {
        container["ports"] = Value::from(ports);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod.name,
            "namespace": pod.namespace,
            "labels": pod.labels,
            "annotations": {"weft.dev/lab-container-id": pod.container_id},
        },
        "spec": {
            "nodeName": pod.node,
            "containers": [container],
            // No token to mount (none is made for the lab's accounts), no Service
            // variables to inject: nothing runs in the container.
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "terminationGracePeriodSeconds": 0,
        },
    })
}

fn from_json<T: serde::de::DeserializeOwned>(v: Value) -> Result<T> {
    serde_json::from_value(v).map_err(|e| LabError::Tool {
        what: "building a Kubernetes object".into(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_patch_removes_what_is_not_wanted() {
        let current = BTreeMap::from([
            ("app".to_owned(), "web".to_owned()),
            ("old".to_owned(), "x".to_owned()),
        ]);
        let wanted = BTreeMap::from([("app".to_owned(), "db".to_owned())]);
        assert_eq!(
            labels_patch(Some(&current), &wanted),
            json!({"app": "db", "old": null})
        );
        assert_eq!(labels_patch(None, &wanted), json!({"app": "db"}));
    }

    #[test]
    fn a_pod_object_is_bound_and_carries_its_ports() {
        let pod = state::Pod {
            name: "web".into(),
            namespace: "alpha".into(),
            node: "n2".into(),
            labels: BTreeMap::from([("app".to_owned(), "web".to_owned())]),
            ports: vec![state::NamedPort {
                name: "http".into(),
                protocol: "TCP".into(),
                port: 8080,
            }],
            container_id: "weftlab-t-web".into(),
            addresses: Vec::new(),
            result: None,
        };
        let obj: Pod = from_json(pod_object(&pod)).unwrap();
        // As the server returns it: defaults filled in, the same placement.
        let mut stored = obj.clone();
        if let Some(spec) = stored.spec.as_mut() {
            spec.containers[0].termination_message_path = Some("/dev/termination-log".into());
        }
        assert_eq!(placement(&stored), placement(&obj));
        let mut moved = obj.clone();
        if let Some(spec) = moved.spec.as_mut() {
            spec.node_name = Some("n1".into());
        }
        assert_ne!(placement(&moved), placement(&obj));
        let spec = obj.spec.unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("n2"));
        let port = &spec.containers[0].ports.as_ref().unwrap()[0];
        assert_eq!(
            (port.name.as_deref(), port.container_port),
            (Some("http"), 8080)
        );
        assert_eq!(obj.metadata.labels.unwrap()["app"], "web");
    }
}
