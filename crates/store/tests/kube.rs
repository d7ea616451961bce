//! The Kubernetes store against a real kube-apiserver (and, where it matters, a real
//! kube-controller-manager): what the contract suite cannot say because only this store has
//! it: node CIDRs as blocks, blocks freed with their Node, the ConfigMap, a relist after an
//! outage folded in as a diff, pods read at their ADD.

use std::process::Command;
use std::time::Duration;

use weft_store::kube::{IpamMode, KubeOptions, KubeStore};
use weft_store::{Datastore, Family, ObjectEvent, ObjectKind, StoreError};
use weft_testkit::kube::{ControllerOptions, KubeApi, KubeOptions as ApiOptions};

/// What the project ships: weft's namespace and its CRD come from here.
fn manifest() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/weft.yaml")
}

/// A control plane with weft's namespace and CRD, off the async runtime's threads.
async fn control_plane(opts: ApiOptions) -> KubeApi {
    tokio::task::block_in_place(move || {
        let api = KubeApi::start(opts).expect("kube-apiserver");
        api.apply_manifest(&manifest(), &["Namespace", "CustomResourceDefinition"]);
        api
    })
}

async fn connect(api: &KubeApi) -> KubeStore {
    KubeStore::connect(KubeOptions {
        kubeconfig: Some(api.admin_kubeconfig()),
        request_timeout: Duration::from_secs(3),
        ..KubeOptions::default()
    })
    .await
    .expect("kube client")
}

fn config_map(api: &KubeApi, data: &[(&str, &str)]) {
    let mut yaml = String::from(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: weft-config, namespace: weft-system}\ndata:\n",
    );
    for (k, v) in data {
        yaml.push_str(&format!("  {k}: {v:?}\n"));
    }
    api.apply(&yaml);
}

fn node(api: &KubeApi, name: &str) {
    api.apply(&format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n"
    ));
}

async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipam_kubernetes_waits_for_pod_cidrs_then_uses_them() {
    let api = control_plane(ApiOptions {
        controller_manager: Some(ControllerOptions {
            node_cidrs: Some(("10.244.0.0/16".into(), 24)),
        }),
        ..ApiOptions::default()
    })
    .await;
    config_map(
        &api,
        &[
            ("cidrV4", "10.244.0.0/16"),
            ("blockSizeV4", "24"),
            ("ipam", "kubernetes"),
        ],
    );
    let store = connect(&api).await;
    assert_eq!(store.ipam(), IpamMode::Kubernetes);
    let lease = store.grant_lease(Duration::from_secs(20)).await.unwrap();
    // No Node yet: a wait that says so, not a failure.
    match store.claim_block("n1", Family::V4, lease).await {
        Err(StoreError::NotYet { reason, .. }) => assert!(reason.contains("no Node"), "{reason}"),
        other => panic!("claim before the Node exists: {other:?}"),
    }
    node(&api, "n1");
    // kube-controller-manager allocates the node's CIDR within seconds.
    let mut b = None;
    for _ in 0..300 {
        if let Ok(got) = store.claim_block("n1", Family::V4, lease).await {
            b = Some(got);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let b = b.unwrap_or_else(|| {
        panic!(
            "no podCIDR for n1 after 60 s; kube-controller-manager says:\n{}",
            api.log_tail("kube-controller-manager")
        )
    });
    let listed = api.kubectl_ok(&["get", "node", "n1", "-o", "jsonpath={.spec.podCIDRs[0]}"]);
    assert_eq!(b.to_string(), listed.trim());
    store.adopt_block("n1", b, lease).await.unwrap();
    node(&api, "n2");
    let b2 = eventually(Duration::from_secs(60), "a podCIDR for n2", || async {
        store.claim_block("n2", Family::V4, lease).await.ok()
    })
    .await;
    assert_ne!(b, b2);
    assert!(matches!(
        store.adopt_block("n2", b, lease).await,
        Err(StoreError::NotOwner { owner, .. }) if owner == "n1"
    ));
    let snap = store.snapshot().await.unwrap();
    let mut owners: Vec<(String, String)> = snap
        .blocks
        .iter()
        .map(|o| (o.node.clone(), o.block.to_string()))
        .collect();
    owners.sort();
    assert_eq!(
        owners,
        vec![("n1".into(), b.to_string()), ("n2".into(), b2.to_string())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_pod_cidrs_is_waited_for_with_the_flags_to_set() {
    // No controller manager: nothing will allocate.
    let api = control_plane(ApiOptions::default()).await;
    config_map(&api, &[("cidrV4", "10.244.0.0/16"), ("ipam", "kubernetes")]);
    node(&api, "n1");
    let store = connect(&api).await;
    let lease = store.grant_lease(Duration::from_secs(20)).await.unwrap();
    match store.claim_block("n1", Family::V4, lease).await {
        Err(StoreError::NotYet { reason, .. }) => {
            for flag in [
                "--allocate-node-cidrs=true",
                "--cluster-cidr=10.244.0.0/16",
                "--node-cidr-mask-size-ipv4",
            ] {
                assert!(reason.contains(flag), "{flag} not in: {reason}");
            }
        }
        other => panic!("claim without podCIDRs: {other:?}"),
    }
    // Set by hand, as an operator may.
    api.kubectl_ok(&[
        "patch",
        "node",
        "n1",
        "-p",
        r#"{"spec":{"podCIDR":"10.244.7.0/24","podCIDRs":["10.244.7.0/24"]}}"#,
    ]);
    let b = store.claim_block("n1", Family::V4, lease).await.unwrap();
    assert_eq!(b.to_string(), "10.244.7.0/24");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_node_gives_its_blocks_back() {
    let api = control_plane(ApiOptions::default()).await;
    config_map(&api, &[("cidrV4", "10.244.0.0/24"), ("blockSizeV4", "26")]);
    node(&api, "n1");
    node(&api, "n2");
    let a = connect(&api).await;
    let b = connect(&api).await;
    let lease = a.grant_lease(Duration::from_secs(20)).await.unwrap();
    let mine = [
        a.claim_block("n1", Family::V4, lease).await.unwrap(),
        a.claim_block("n1", Family::V4, lease).await.unwrap(),
    ];
    // Owned by the Node object: the garbage collector frees them with it.
    let uid = api.kubectl_ok(&["get", "node", "n1", "-o", "jsonpath={.metadata.uid}"]);
    let owner = api.kubectl_ok(&[
        "get",
        "weftblock",
        "10-244-0-0-26",
        "-o",
        "jsonpath={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].uid}",
    ]);
    assert_eq!(owner, format!("Node/{uid}"));
    let theirs = b.claim_block("n2", Family::V4, lease).await.unwrap();
    assert!(!mine.contains(&theirs));
    // No controller manager runs here: weftd's own sweep frees them.
    api.kubectl_ok(&["delete", "node", "n1"]);
    eventually(Duration::from_secs(20), "n1's blocks freed", || async {
        let snap = b.snapshot().await.ok()?;
        snap.blocks.iter().all(|o| o.node != "n1").then_some(())
    })
    .await;
    let listed = api.kubectl_ok(&["get", "weftblocks", "-o", "name"]);
    assert_eq!(
        listed.trim(),
        "weftblock.weft.dev/10-244-0-128-26",
        "{listed}"
    );
    // And they are handed out again, lowest first.
    let again = b.claim_block("n2", Family::V4, lease).await.unwrap();
    assert_eq!(again, mine[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_map_is_refused_whole_with_the_key() {
    let api = control_plane(ApiOptions::default()).await;
    config_map(&api, &[("cidrV4", "10.244.0.0/16"), ("backend", "ipip")]);
    // Even connecting reads the ConfigMap (its IPAM mode): refused there already.
    let e = KubeStore::connect(KubeOptions {
        kubeconfig: Some(api.admin_kubeconfig()),
        ..KubeOptions::default()
    })
    .await
    .err()
    .expect("a bad ConfigMap accepted");
    assert!(e.to_string().contains("backend"), "{e}");
    config_map(
        &api,
        &[
            ("cidrV4", "10.244.0.0/16"),
            ("backend", "vxlan"),
            ("mtu", "99999"),
        ],
    );
    let e = KubeStore::connect(KubeOptions {
        kubeconfig: Some(api.admin_kubeconfig()),
        ..KubeOptions::default()
    })
    .await
    .err()
    .expect("mtu 99999 accepted");
    assert!(
        e.to_string().contains("key mtu") && e.to_string().contains("outside"),
        "{e}"
    );
    // weft's own pool must not overlap the node CIDRs kube-controller-manager hands out.
    config_map(&api, &[("cidrV4", "10.244.0.0/16")]);
    api.apply(
        "apiVersion: v1\nkind: Node\nmetadata: {name: n1}\nspec: {podCIDR: 10.244.1.0/24, podCIDRs: [10.244.1.0/24]}\n",
    );
    match connect(&api).await.config().await {
        Err(e) => assert!(
            e.to_string().contains("cidrV4") && e.to_string().contains("overlaps"),
            "{e}"
        ),
        Ok(c) => panic!("overlapping pool accepted: {c:?}"),
    }
    // Nothing was written by any of it.
    let blocks = api.kubectl_ok(&["get", "weftblocks", "-o", "name"]);
    assert!(blocks.trim().is_empty(), "{blocks}");
    let ann = api.kubectl_ok(&[
        "get",
        "node",
        "n1",
        "-o",
        "jsonpath={.metadata.annotations}",
    ]);
    assert!(!ann.contains("weft.dev"), "{ann}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_bridged_from_the_cache_and_the_relist_is_a_diff() {
    let mut api = control_plane(ApiOptions::default()).await;
    config_map(&api, &[("cidrV4", "10.244.0.0/16")]);
    api.kubectl_ok(&["create", "namespace", "shop"]);
    for p in ["p1", "p2", "p3"] {
        api.apply(&format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {p}, namespace: shop}}\nspec: {{podSelector: {{}}}}\n"
        ));
    }
    let store = connect(&api).await;
    let (rev, before) = store.list_objects(ObjectKind::NetworkPolicy).await.unwrap();
    assert_eq!(before.len(), 3);
    let mut rx = store.watch_objects(rev).await.unwrap();
    api.stop_apiserver();
    // Reads are served from the cache; a write says the API is unavailable.
    let (_, during) = store.list_objects(ObjectKind::NetworkPolicy).await.unwrap();
    assert_eq!(during, before);
    assert!(matches!(
        store.config().await,
        Err(StoreError::Unavailable { .. })
    ));
    // A pod the cache has not seen cannot be read: weftd refuses its ADD on this answer
    // (docs/kubernetes.md), rather than guess its labels.
    assert!(matches!(
        store.fetch_pod("shop", "never-seen").await,
        Err(StoreError::Unavailable { .. })
    ));
    // While the server is down, p2 goes (straight from etcd): the watch cannot report it,
    // only a relist can.
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &api.etcd_endpoint(),
            "del",
            "/registry/networkpolicies/shop/p2",
        ])
        .output()
        .expect("etcdctl");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1", "{out:?}");
    tokio::task::block_in_place(|| api.start_apiserver_again()).expect("restart");
    let ev = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match rx.recv().await {
                Some(ObjectEvent::Put(o)) if o.kind == ObjectKind::Namespace => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("no event after the restart");
    assert!(
        matches!(&ev, Some(ObjectEvent::Deleted { kind: ObjectKind::NetworkPolicy, name, .. }) if name == "p2"),
        "{ev:?}"
    );
    // …and nothing else: p1 and p3 did not change, so nothing is said about them.
    let quiet = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match rx.recv().await {
                Some(ObjectEvent::Put(o)) if o.kind == ObjectKind::Namespace => continue,
                other => return other,
            }
        }
    })
    .await;
    assert!(
        quiet.is_err(),
        "an event for an unchanged object: {quiet:?}"
    );
    let (_, after) = store.list_objects(ObjectKind::NetworkPolicy).await.unwrap();
    let names: Vec<&str> = after.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["p1", "p3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_is_read_from_the_api_before_the_watch_reports_it() {
    let api = control_plane(ApiOptions::default()).await;
    config_map(&api, &[("cidrV4", "10.244.0.0/16")]);
    api.kubectl_ok(&["create", "namespace", "shop"]);
    // No controller manager makes the namespace's default ServiceAccount here.
    api.kubectl_ok(&["create", "serviceaccount", "default", "-n", "shop"]);
    let store = connect(&api).await;
    store.list_objects(ObjectKind::PodLabels).await.unwrap();
    api.apply(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web-0, namespace: shop, labels: {app: web}}\n\
         spec:\n  nodeName: n1\n  automountServiceAccountToken: false\n  containers:\n  - name: c\n    image: never-pulled\n    ports: [{name: http, containerPort: 8080}]\n",
    );
    let got = store
        .fetch_pod("shop", "web-0")
        .await
        .unwrap()
        .expect("the pod");
    assert_eq!(got.value["metadata"]["labels"]["app"], "web");
    assert_eq!(got.value["spec"]["ports"][0]["name"], "http");
    assert_eq!(got.value["spec"]["ports"][0]["containerPort"], 8080);
    assert!(store.fetch_pod("shop", "nope").await.unwrap().is_none());
    let (_, all) = store.list_objects(ObjectKind::PodLabels).await.unwrap();
    assert!(all.iter().any(|o| o.name == "web-0"));
    // A 1.20 server does not label namespaces by name; weft does, so a policy can select
    // a namespace by name on any version.
    let (_, nss) = store.list_objects(ObjectKind::Namespace).await.unwrap();
    let shop = nss.iter().find(|o| o.name == "shop").expect("shop");
    assert_eq!(
        shop.value["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "shop"
    );
}
