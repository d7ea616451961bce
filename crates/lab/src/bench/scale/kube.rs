//! The world in a real kube-apiserver, written through the API as a cluster's own writers
//! write it: the WeftBlock CRD and weft's ConfigMap (the operator), Namespaces with a
//! `default` ServiceAccount each (what kube-controller-manager would make: the API server
//! refuses pods without it), each peer's Node with the annotations its weftd publishes
//! (`weft.dev/ready`, underlay, VTEP MAC, MTU, blocks) and its WeftBlock (owned by the Node),
//! Pods bound to their node (what the scheduler does) and their `status.podIPs` through the
//! status subresource (what the kubelet does), and NetworkPolicies.
//!
//! Every request runs with the calling thread inside the agent's namespace, where the API
//! server listens: the async runtime is single-threaded and only driven from
//! [`KubeWorld::block_on`], which enters the namespace first.
//!
//! Must not: write anything weftd itself writes for its own node (its Node's annotations,
//! its WeftBlock), or time anything but the probe writes it is asked for.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, Config};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;
use weft_backend::Peer;
use weft_net::NetNs;
use weft_store::NodeRecord;
use weft_store::kube::{CONFIG_MAP, block_name};

use super::world::{Namespace as WorldNs, Pod as WorldPod, Policy, SELF_NODE, World};
use crate::bench::agent::cluster::record;
use crate::bench::error::{BenchError, Result};

/// Requests in flight while loading: enough to keep the API server's two CPUs busy without
/// queueing in its max-requests-inflight.
const IN_FLIGHT: usize = 16;
/// weft's ConfigMap lives here (weftd's `--kube-namespace`).
pub const WEFT_NAMESPACE: &str = "weft-system";
const CRD_TIMEOUT: Duration = Duration::from_secs(30);
/// A new CRD's resource can 404 for a moment after it is Established.
const RESOURCE_RETRY: Duration = Duration::from_millis(200);

fn crd_resource() -> ApiResource {
    ApiResource {
        group: "apiextensions.k8s.io".into(),
        version: "v1".into(),
        api_version: "apiextensions.k8s.io/v1".into(),
        kind: "CustomResourceDefinition".into(),
        plural: "customresourcedefinitions".into(),
    }
}

fn block_resource() -> ApiResource {
    ApiResource {
        group: "weft.dev".into(),
        version: "v1".into(),
        api_version: "weft.dev/v1".into(),
        kind: "WeftBlock".into(),
        plural: "weftblocks".into(),
    }
}

/// What the operator applies: the CRD comes from here, not from a copy.
const MANIFEST: &str = include_str!("../../../../../deploy/weft.yaml");

/// The objects of deploy/weft.yaml of this kind.
fn manifest_objects(kind: &str) -> Vec<Value> {
    MANIFEST
        .split("\n---")
        .filter_map(|doc| yaml_serde::from_str::<Value>(doc).ok())
        .filter(|v| v["kind"] == kind)
        .collect()
}

/// The WeftBlock CRD of deploy/weft.yaml.
fn crd() -> Result<Value> {
    manifest_objects("CustomResourceDefinition")
        .pop()
        .ok_or_else(|| BenchError::Unexpected {
            what: "reading deploy/weft.yaml".into(),
            detail: "it holds no CustomResourceDefinition".into(),
        })
}

/// weftd's identity and its rights, as deploy/weft.yaml gives them: (kind, group, plural).
const RBAC_KINDS: [(&str, &str, &str); 5] = [
    ("ServiceAccount", "", "serviceaccounts"),
    ("ClusterRole", "rbac.authorization.k8s.io", "clusterroles"),
    (
        "ClusterRoleBinding",
        "rbac.authorization.k8s.io",
        "clusterrolebindings",
    ),
    ("Role", "rbac.authorization.k8s.io", "roles"),
    ("RoleBinding", "rbac.authorization.k8s.io", "rolebindings"),
];

fn api_error(what: impl Into<String>) -> impl FnOnce(kube::Error) -> BenchError {
    let what = what.into();
    move |e| BenchError::Unexpected {
        what,
        detail: e.to_string(),
    }
}

fn typed<K: DeserializeOwned>(what: &str, v: Value) -> Result<K> {
    serde_json::from_value(v).map_err(|e| BenchError::Unexpected {
        what: format!("building {what}"),
        detail: e.to_string(),
    })
}

/// A client of the run's API server.
pub struct KubeWorld {
    rt: Runtime,
    ns: NetNs,
    client: Client,
}

impl KubeWorld {
    /// A client from `kubeconfig` (the control plane's admin), used from inside `ns`.
    pub fn connect(ns: NetNs, kubeconfig: &Path) -> Result<KubeWorld> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(BenchError::io("starting the async runtime"))?;
        let kc = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| {
            BenchError::Unexpected {
                what: format!("reading {}", kubeconfig.display()),
                detail: e.to_string(),
            }
        })?;
        let client = ns
            .run(|| {
                rt.block_on(async {
                    let cfg = Config::from_custom_kubeconfig(kc, &Default::default()).await?;
                    Client::try_from(cfg)
                })
            })
            .map_err(BenchError::net("entering the agent's namespace"))?
            .map_err(|e| BenchError::Unexpected {
                what: "a client of the API server".into(),
                detail: e.to_string(),
            })?;
        Ok(KubeWorld { rt, ns, client })
    }

    pub fn block_on<F: Future>(&self, f: F) -> Result<F::Output> {
        self.ns
            .run(|| self.rt.block_on(f))
            .map_err(BenchError::net("entering the agent's namespace"))
    }

    /// What the operator installs before weftd: the CRD (waited for until Established),
    /// the `weft-system` namespace and weft's ConfigMap with `data`.
    pub fn install(&self, data: BTreeMap<String, String>) -> Result<()> {
        let client = self.client.clone();
        self.block_on(async move {
            let crds: Api<DynamicObject> = Api::all_with(client.clone(), &crd_resource());
            let obj: DynamicObject = typed("the WeftBlock CRD", crd()?)?;
            crds.create(&PostParams::default(), &obj)
                .await
                .map_err(api_error("creating the WeftBlock CRD"))?;
            let deadline = Instant::now() + CRD_TIMEOUT;
            loop {
                let got = crds
                    .get("weftblocks.weft.dev")
                    .await
                    .map_err(api_error("reading the WeftBlock CRD"))?;
                let established = got.data["status"]["conditions"]
                    .as_array()
                    .is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Established" && c["status"] == "True")
                    });
                if established {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(BenchError::Timeout {
                        what: "the WeftBlock CRD to be Established".into(),
                        secs: CRD_TIMEOUT.as_secs(),
                        detail: got.data["status"].to_string(),
                    });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let nss: Api<Namespace> = Api::all(client.clone());
            let ns: Namespace = typed(
                "a namespace",
                json!({"metadata": {"name": WEFT_NAMESPACE}}),
            )?;
            nss.create(&PostParams::default(), &ns)
                .await
                .map_err(api_error("creating namespace weft-system"))?;
            let cms: Api<ConfigMap> = Api::namespaced(client.clone(), WEFT_NAMESPACE);
            let cm: ConfigMap = typed(
                "the ConfigMap",
                json!({"metadata": {"name": CONFIG_MAP, "namespace": WEFT_NAMESPACE}, "data": data}),
            )?;
            cms.create(&PostParams::default(), &cm)
                .await
                .map_err(api_error("creating ConfigMap weft-config"))?;
            // weftd runs as the manifest's ServiceAccount, so a right the manifest lacks
            // fails the benchmark as it would fail a cluster.
            for (kind, group, plural) in RBAC_KINDS {
                let version = "v1";
                let resource = ApiResource {
                    group: group.into(),
                    version: version.into(),
                    api_version: if group.is_empty() {
                        version.into()
                    } else {
                        format!("{group}/{version}")
                    },
                    kind: kind.into(),
                    plural: plural.into(),
                };
                for v in manifest_objects(kind) {
                    let obj: DynamicObject = typed(kind, v)?;
                    let api: Api<DynamicObject> = match obj.metadata.namespace.as_deref() {
                        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
                        None => Api::all_with(client.clone(), &resource),
                    };
                    api.create(&PostParams::default(), &obj)
                        .await
                        .map_err(api_error(format!("creating the manifest's {kind}")))?;
                }
            }
            Ok(())
        })?
    }

    /// Writes the whole world, [`IN_FLIGHT`] requests at a time; returns how long it took.
    pub fn load(&self, world: &World) -> Result<Duration> {
        let t = Instant::now();
        let client = self.client.clone();
        let namespaces = world.namespaces.clone();
        self.block_on(bounded(namespaces, move |n| {
            let client = client.clone();
            async move { create_namespace(&client, &n).await }
        }))??;
        // The agent's own Node: weftd publishes its annotations and claims its block.
        let client = self.client.clone();
        self.block_on(async move {
            let nodes: Api<Node> = Api::all(client);
            let node: Node = typed("a Node", json!({"metadata": {"name": SELF_NODE}}))?;
            nodes
                .create(&PostParams::default(), &node)
                .await
                .map(|_| ())
                .map_err(api_error(format!("creating Node {SELF_NODE}")))
        })??;
        let client = self.client.clone();
        self.block_on(bounded(world.peers.clone(), move |p| {
            let client = client.clone();
            async move { create_peer(&client, &p).await }
        }))??;
        let client = self.client.clone();
        let pods: Vec<(WorldPod, String)> = world
            .pods
            .iter()
            .map(|p| (p.clone(), p.node_name(world).to_owned()))
            .collect();
        self.block_on(bounded(pods, move |(p, node)| {
            let client = client.clone();
            async move {
                create_pod(&client, &p, &node).await?;
                pod_ips(&client, &p).await
            }
        }))??;
        let client = self.client.clone();
        self.block_on(bounded(world.policies.clone(), move |p| {
            let client = client.clone();
            async move { create_policy(&client, &p).await }
        }))??;
        Ok(t.elapsed())
    }

    /// A Pod bound to its node, without an address yet (what the scheduler leaves).
    pub fn pod(&self, world: &World, p: &WorldPod) -> Result<()> {
        let node = p.node_name(world).to_owned();
        self.block_on(create_pod(&self.client, p, &node))?
    }

    /// The write that makes a remote pod a peer: its `status.podIPs`, as the kubelet
    /// reports it. Returns when the API server answered.
    pub fn pod_ips(&self, p: &WorldPod) -> Result<()> {
        self.block_on(pod_ips(&self.client, p))?
    }

    pub fn policy(&self, p: &Policy) -> Result<()> {
        self.block_on(create_policy(&self.client, p))?
    }
}

/// Runs `f` on every item, at most [`IN_FLIGHT`] at once; the first error wins.
async fn bounded<T, F, Fut>(items: Vec<T>, f: F) -> Result<()>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let mut tasks: JoinSet<Result<()>> = JoinSet::new();
    let mut first = None;
    let note = |first: &mut Option<BenchError>,
                done: Option<std::result::Result<Result<()>, _>>| {
        let err = match done {
            Some(Ok(Ok(()))) | None => return,
            Some(Ok(Err(e))) => e,
            Some(Err(_)) => BenchError::WorkerPanicked,
        };
        first.get_or_insert(err);
    };
    for item in items {
        while tasks.len() >= IN_FLIGHT {
            note(&mut first, tasks.join_next().await);
        }
        tasks.spawn(f(item));
    }
    while let Some(done) = tasks.join_next().await {
        note(&mut first, Some(done));
    }
    first.map_or(Ok(()), Err)
}

async fn create_namespace(client: &Client, n: &WorldNs) -> Result<()> {
    let nss: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = typed(
        "a namespace",
        json!({"metadata": {"name": n.name, "labels": n.labels}}),
    )?;
    nss.create(&PostParams::default(), &ns)
        .await
        .map_err(api_error(format!("creating namespace {}", n.name)))?;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &n.name);
    let sa: ServiceAccount = typed(
        "a ServiceAccount",
        json!({"metadata": {"name": "default", "namespace": n.name}}),
    )?;
    sas.create(&PostParams::default(), &sa)
        .await
        .map(|_| ())
        .map_err(api_error(format!(
            "creating ServiceAccount {}/default",
            n.name
        )))
}

/// A peer as its weftd leaves it: the Node with weft's annotations (created with them: the
/// watch sees the same object a status patch would give), then its WeftBlock, owned by it.
async fn create_peer(client: &Client, p: &Peer) -> Result<()> {
    let rec: NodeRecord = record(p);
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = typed(
        "a Node",
        json!({"metadata": {"name": p.name, "annotations": annotations(&rec)}}),
    )?;
    let created = nodes
        .create(&PostParams::default(), &node)
        .await
        .map_err(api_error(format!("creating Node {}", p.name)))?;
    let blocks: Api<DynamicObject> = Api::all_with(client.clone(), &block_resource());
    for b in &rec.blocks {
        let mut obj = DynamicObject::new(&block_name(b), &block_resource()).data(json!({
            "spec": {"cidr": b.to_string(), "node": p.name, "family": if b.addr().is_ipv4() { "v4" } else { "v6" }},
        }));
        obj.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: p.name.clone(),
            uid: created.metadata.uid.clone().unwrap_or_default(),
            ..OwnerReference::default()
        }]);
        let mut tries = 0;
        loop {
            match blocks.create(&PostParams::default(), &obj).await {
                Ok(_) => break,
                Err(kube::Error::Api(s)) if s.code == 404 && tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(RESOURCE_RETRY).await;
                }
                Err(e) => return Err(api_error(format!("creating WeftBlock {b}"))(e)),
            }
        }
    }
    Ok(())
}

/// The annotations a peer's weftd publishes (docs/kubernetes.md, "Where each thing comes
/// from"), written from the documented contract rather than weft-store's own encoder, so a
/// drift between the two shows up here.
fn annotations(rec: &NodeRecord) -> BTreeMap<String, String> {
    let blocks: Vec<String> = rec.blocks.iter().map(ToString::to_string).collect();
    let mut a: BTreeMap<String, String> = [
        ("weft.dev/vtep-mac", rec.vtep_mac.clone()),
        ("weft.dev/mtu", rec.mtu.to_string()),
        ("weft.dev/blocks", blocks.join(",")),
        ("weft.dev/ready", "true".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if let Some(v4) = rec.underlay_v4 {
        a.insert("weft.dev/underlay-v4".into(), v4.to_string());
    }
    if let Some(v6) = rec.underlay_v6 {
        a.insert("weft.dev/underlay-v6".into(), v6.to_string());
    }
    a
}

async fn create_pod(client: &Client, p: &WorldPod, node: &str) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &p.namespace);
    let pod: Pod = typed(
        "a Pod",
        json!({
            "metadata": {"name": p.name, "namespace": p.namespace, "labels": p.labels},
            "spec": {
                "nodeName": node,
                "automountServiceAccountToken": false,
                "containers": [{"name": "app", "image": "registry.invalid/weft-bench:1",
                                "ports": [{"name": "http", "containerPort": 8080}]}],
            },
        }),
    )?;
    pods.create(&PostParams::default(), &pod)
        .await
        .map(|_| ())
        .map_err(api_error(format!(
            "creating Pod {}/{}",
            p.namespace, p.name
        )))
}

async fn pod_ips(client: &Client, p: &WorldPod) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &p.namespace);
    let ip = p.address.to_string();
    let status = json!({"status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}});
    pods.patch_status(&p.name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map(|_| ())
        .map_err(api_error(format!(
            "writing status.podIPs of Pod {}/{}",
            p.namespace, p.name
        )))
}

async fn create_policy(client: &Client, p: &Policy) -> Result<()> {
    let api: Api<NetworkPolicy> = Api::namespaced(client.clone(), &p.namespace);
    let np: NetworkPolicy = typed("a NetworkPolicy", p.object.clone())?;
    api.create(&PostParams::default(), &np)
        .await
        .map(|_| ())
        .map_err(api_error(format!(
            "creating NetworkPolicy {}/{}",
            p.namespace, p.name
        )))
}
