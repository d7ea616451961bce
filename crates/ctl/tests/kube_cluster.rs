//! weftctl against a real kube-apiserver, found as kubectl finds it (`--kubeconfig`,
//! `$KUBECONFIG`, `~/.kube/config`): `status --kubernetes` lists every Node with what its
//! weftd published, and `policy explain` judges pods the API server knows, under policies
//! written with kubectl.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use weft_store::kube::{KubeOptions, KubeStore};
use weft_store::{Datastore, Family, NodeRecord};
use weft_testkit::kube::{KubeApi, KubeOptions as ApiOptions};

fn weftctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weftctl"))
}

fn out(o: &Output) -> String {
    assert!(
        o.status.success(),
        "weftctl failed: {}",
        weft_testkit::text(o)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// What the kubelet would write: the pod's addresses, through the status subresource.
fn set_pod_ip(api: &KubeApi, ns: &str, name: &str, ip: &str) {
    let text = api.kubectl_ok(&["get", "pod", "-n", ns, name, "-o", "json"]);
    let mut pod: serde_json::Value = serde_json::from_str(&text).unwrap();
    pod["status"]["phase"] = "Running".into();
    pod["status"]["podIP"] = ip.into();
    pod["status"]["podIPs"] = serde_json::json!([{"ip": ip}]);
    let file = weft_testkit::TempDir::new("pod");
    let path = file.path().join("pod.json");
    std::fs::write(&path, pod.to_string()).unwrap();
    api.kubectl_ok(&[
        "replace",
        "--raw",
        &format!("/api/v1/namespaces/{ns}/pods/{name}/status"),
        "-f",
        &path.display().to_string(),
    ]);
}

fn pod(api: &KubeApi, name: &str, app: &str, node: &str, ip: &str) {
    api.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: shop, labels: {{app: {app}}}}}\n\
         spec:\n  nodeName: {node}\n  automountServiceAccountToken: false\n  containers:\n  - {{name: c, image: never-pulled}}\n"
    ));
    set_pod_ip(api, "shop", name, ip);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_explain_read_a_cluster_like_kubectl() {
    let api = tokio::task::block_in_place(|| {
        let api = KubeApi::start(ApiOptions::default()).expect("kube-apiserver");
        api.apply_manifest(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/weft.yaml"),
            &["Namespace", "CustomResourceDefinition"],
        );
        api.apply(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: weft-config, namespace: weft-system}\n\
             data: {cidrV4: 10.244.0.0/16, blockSizeV4: '24', backend: host-gw}\n",
        );
        for n in ["n1", "n2"] {
            api.apply(&format!(
                "apiVersion: v1\nkind: Node\nmetadata: {{name: {n}}}\n"
            ));
        }
        api.kubectl_ok(&["create", "namespace", "shop"]);
        api.kubectl_ok(&["create", "serviceaccount", "default", "-n", "shop"]);
        api
    });
    // n1's weftd has started; n2's has not.
    let store = KubeStore::connect(KubeOptions {
        kubeconfig: Some(api.admin_kubeconfig()),
        ..KubeOptions::default()
    })
    .await
    .unwrap();
    let lease = store.grant_lease(Duration::from_secs(20)).await.unwrap();
    let block = store.claim_block("n1", Family::V4, lease).await.unwrap();
    let rec = NodeRecord {
        name: "n1".into(),
        underlay_v4: Some("192.0.2.11".parse().unwrap()),
        underlay_v6: None,
        vtep_mac: "02:00:00:00:00:11".into(),
        mtu: 1500,
        blocks: vec![block],
    };
    store.put_node(&rec, lease).await.unwrap();
    tokio::task::block_in_place(|| {
        pod(&api, "web", "web", "n1", "10.244.0.2");
        pod(&api, "db", "db", "n1", "10.244.0.3");
    });

    let kubeconfig = api.admin_kubeconfig();
    let text = out(&weftctl()
        .args(["status", "--kubeconfig"])
        .arg(&kubeconfig)
        .output()
        .unwrap());
    assert!(text.contains("backend host-gw; ipam weft"), "{text}");
    assert!(text.contains("nodes: 1 of 2 ready"), "{text}");
    assert!(
        text.contains("n1: ready   underlay 192.0.2.11 vtep 02:00:00:00:00:11 mtu 1500; blocks 10.244.0.0/24; 2 pods"),
        "{text}"
    );
    assert!(text.contains("n2: NOT READY"), "{text}");
    // $KUBECONFIG, as kubectl reads it, with JSON out.
    let json = out(&weftctl()
        .args(["status", "--kubernetes", "-o", "json"])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap());
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["nodes"][0]["name"], "n1");
    assert_eq!(v["nodes"][0]["ready"], true);
    assert_eq!(v["nodes"][1]["ready"], false);
    assert_eq!(v["config"]["ipam"], "weft");

    // A policy written with kubectl, explained from ~/.kube/config.
    tokio::task::block_in_place(|| {
        api.apply(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: db-from-web, namespace: shop}\n\
             spec:\n  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {app: web}}}]\n    ports: [{port: 5432}]\n",
        )
    });
    let home = weft_testkit::TempDir::new("home");
    std::fs::create_dir_all(home.path().join(".kube")).unwrap();
    std::fs::copy(&kubeconfig, home.path().join(".kube/config")).unwrap();
    let explain = |src: &str, port: &str| {
        out(&weftctl()
            .args(["policy", "explain", "--kubernetes", src, "shop/db", port])
            .env_remove("KUBECONFIG")
            .env("HOME", home.path())
            .output()
            .unwrap())
    };
    let allowed = explain("shop/web", "5432/tcp");
    assert!(allowed.starts_with("ALLOWED tcp/5432"), "{allowed}");
    assert!(allowed.contains("shop/db-from-web"), "{allowed}");
    let denied = explain("shop/web", "80/tcp");
    assert!(denied.starts_with("DENIED tcp/80"), "{denied}");
    // Without any way to reach a cluster: a clear error, not a hang.
    let none = weftctl()
        .args(["status", "--kubernetes"])
        .env_remove("KUBECONFIG")
        .env("HOME", "/nonexistent")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert!(!none.status.success());
    let err = String::from_utf8_lossy(&none.stderr);
    assert!(err.contains("kubeconfig"), "{err}");
}
