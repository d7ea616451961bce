//! weftd's datastore with exactly the RBAC that deploy/weft.yaml grants: authenticated as the
//! ServiceAccount `weft-system/weft` (not as an admin), every call weftd makes works; with a
//! verb taken away, the call that needs it fails and the error names the verb and resource.

use std::path::PathBuf;
use std::time::Duration;

use weft_store::kube::{KubeOptions, KubeStore};
use weft_store::{Datastore, EndpointRecord, Family, NodeRecord, StoreError};
use weft_testkit::kube::{KubeApi, KubeOptions as ApiOptions, service_account};

fn manifest() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/weft.yaml")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weftd_works_with_the_manifests_rbac_and_names_a_missing_verb() {
    let sa = service_account("weft-system", "weft");
    let api = tokio::task::block_in_place(|| {
        let api = KubeApi::start(ApiOptions {
            users: vec![sa.clone()],
            ..ApiOptions::default()
        })
        .expect("kube-apiserver");
        // The whole manifest, as an operator applies it (no kubelet runs the DaemonSet).
        api.apply_manifest(&manifest(), &[]);
        for n in ["n1", "n2"] {
            api.apply(&format!(
                "apiVersion: v1\nkind: Node\nmetadata: {{name: {n}}}\n"
            ));
        }
        api.kubectl_ok(&["create", "namespace", "shop"]);
        api.kubectl_ok(&["create", "serviceaccount", "default", "-n", "shop"]);
        api.apply(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop, labels: {app: web}}\n\
             spec: {nodeName: n1, automountServiceAccountToken: false, containers: [{name: c, image: never-pulled}]}\n",
        );
        api.apply(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: shop}\nspec: {podSelector: {}}\n",
        );
        api
    });
    let store = KubeStore::connect(KubeOptions {
        kubeconfig: Some(api.kubeconfig(&sa.0)),
        ..KubeOptions::default()
    })
    .await
    .expect("connect as the ServiceAccount");

    // Everything weftd does, in the order it does it.
    let cfg = store
        .config()
        .await
        .unwrap()
        .expect("the shipped ConfigMap");
    assert!(cfg.cidr_v4.is_some());
    store.node_addresses("n1").await.unwrap();
    let lease = store.grant_lease(Duration::from_secs(20)).await.unwrap();
    store.keep_alive(lease).await.unwrap();
    let snap = store.snapshot().await.unwrap();
    let mut rx = store.watch(snap.revision).await.unwrap();
    let b = store.claim_block("n1", Family::V4, lease).await.unwrap();
    store.adopt_block("n1", b, lease).await.unwrap();
    let rec = NodeRecord {
        name: "n1".into(),
        underlay_v4: Some("192.0.2.1".parse().unwrap()),
        underlay_v6: None,
        vtep_mac: "02:00:00:00:00:01".into(),
        mtu: 1450,
        blocks: vec![b],
    };
    store.put_node(&rec, lease).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .is_some()
    );
    let view = store.policy_view().await.unwrap();
    assert!(view.objects.iter().any(|o| o.name == "deny"));
    assert!(store.fetch_pod("shop", "web").await.unwrap().is_some());
    let ep = EndpointRecord {
        node: "n1".into(),
        namespace: "shop".into(),
        name: "web".into(),
        container_id: "c".into(),
        ifname: "eth0".into(),
        addresses: vec!["10.244.0.2".parse().unwrap()],
    };
    store.put_endpoint(&ep, lease).await.unwrap();
    store.release_block("n1", b).await.unwrap();
    let cond = api.kubectl_ok(&[
        "get",
        "node",
        "n1",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"NetworkUnavailable\")].status}",
    ]);
    assert_eq!(cond, "False");

    // A verb taken away: the error names it.
    tokio::task::block_in_place(|| {
        api.kubectl_ok(&[
            "patch",
            "clusterrole",
            "weft",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/rules/1/verbs","value":["get"]},{"op":"replace","path":"/rules/5/verbs","value":["get","list","watch","update","delete"]}]"#,
        ]);
    });
    match store.put_node(&rec, lease).await {
        Err(StoreError::Forbidden { detail, .. }) => {
            assert!(
                detail.contains("cannot patch resource \"nodes/status\""),
                "{detail}"
            );
            assert!(
                detail.contains("system:serviceaccount:weft-system:weft"),
                "{detail}"
            );
        }
        other => panic!("put_node without the verb: {other:?}"),
    }
    match store.claim_block("n2", Family::V4, lease).await {
        Err(StoreError::Forbidden { detail, .. }) => {
            assert!(
                detail.contains("cannot create resource \"weftblocks\""),
                "{detail}"
            )
        }
        other => panic!("claim without create: {other:?}"),
    }
}
