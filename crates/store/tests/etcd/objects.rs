//! Policy objects on real etcd: put, list, delete, watch, and the raw key layout.

use std::time::Duration;

use serde_json::json;
use weft_store::{Datastore, ObjectEvent, ObjectKind, StoreError, StoredObject};

use super::{connect, raw_keys, server};

async fn next(rx: &mut tokio::sync::mpsc::Receiver<ObjectEvent>) -> ObjectEvent {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("no object event within 5 s")
        .expect("object watch closed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_list_delete_watch() {
    let srv = server();
    let store = connect(&srv).await;
    let (rev, empty) = store.list_objects(ObjectKind::NetworkPolicy).await.unwrap();
    assert!(empty.is_empty());
    let mut rx = store.watch_objects(rev).await.unwrap();

    let deny = json!({"kind": "NetworkPolicy", "metadata": {"name": "deny", "namespace": "shop"}});
    let allow =
        json!({"kind": "NetworkPolicy", "metadata": {"name": "allow", "namespace": "shop"}});
    let ns = json!({"kind": "Namespace", "metadata": {"name": "shop"}});
    store
        .put_object(ObjectKind::NetworkPolicy, "shop", "deny", &deny)
        .await
        .unwrap();
    store
        .put_object(ObjectKind::NetworkPolicy, "shop", "allow", &allow)
        .await
        .unwrap();
    store
        .put_object(ObjectKind::Namespace, "", "shop", &ns)
        .await
        .unwrap();

    let keys: Vec<String> = raw_keys(&srv).await.into_iter().map(|(k, _)| k).collect();
    for k in [
        "/weft/v1/policy/networkpolicies/shop/deny",
        "/weft/v1/policy/networkpolicies/shop/allow",
        "/weft/v1/policy/namespaces/shop",
    ] {
        assert!(keys.iter().any(|x| x == k), "{k} missing in {keys:?}");
    }

    let (_, list) = store.list_objects(ObjectKind::NetworkPolicy).await.unwrap();
    let names: Vec<&str> = list.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["allow", "deny"]);
    assert_eq!(list[1].value, deny);
    let (_, nss) = store.list_objects(ObjectKind::Namespace).await.unwrap();
    assert_eq!(
        nss,
        vec![StoredObject {
            kind: ObjectKind::Namespace,
            namespace: String::new(),
            name: "shop".into(),
            value: ns.clone(),
        }]
    );
    assert!(
        store
            .list_objects(ObjectKind::PodLabels)
            .await
            .unwrap()
            .1
            .is_empty()
    );

    match next(&mut rx).await {
        ObjectEvent::Put(o) => assert_eq!((o.name.as_str(), o.value), ("deny", deny)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(next(&mut rx).await, ObjectEvent::Put(o) if o.name == "allow"));
    assert!(matches!(next(&mut rx).await, ObjectEvent::Put(o) if o.kind == ObjectKind::Namespace));

    assert!(
        store
            .delete_object(ObjectKind::NetworkPolicy, "shop", "deny")
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_object(ObjectKind::NetworkPolicy, "shop", "deny")
            .await
            .unwrap()
    );
    assert_eq!(
        next(&mut rx).await,
        ObjectEvent::Deleted {
            kind: ObjectKind::NetworkPolicy,
            namespace: "shop".into(),
            name: "deny".into()
        }
    );
    let (_, list) = store.list_objects(ObjectKind::NetworkPolicy).await.unwrap();
    assert_eq!(list.len(), 1);

    let err = store
        .put_object(ObjectKind::PodLabels, "a/b", "x", &json!({}))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidObjectName { .. }), "{err}");
    let err = store
        .put_object(ObjectKind::Namespace, "shop", "x", &json!({}))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidObjectName { .. }), "{err}");
}

/// The object watch sees only objects (node writes do not show), and after an etcd restart
/// it says Resync, then carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_watch_ignores_nodes_and_resyncs_after_restart() {
    let mut srv = server();
    let store = connect(&srv).await;
    let (rev, _) = store.list_objects(ObjectKind::PodLabels).await.unwrap();
    let mut rx = store.watch_objects(rev).await.unwrap();
    let lease = store.grant_lease(Duration::from_secs(60)).await.unwrap();
    store.put_node(&super::node("n1"), lease).await.unwrap();
    let v = json!({"kind": "PodLabels"});
    store
        .put_object(ObjectKind::PodLabels, "default", "a", &v)
        .await
        .unwrap();
    assert!(matches!(next(&mut rx).await, ObjectEvent::Put(o) if o.name == "a"));

    srv.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    srv.restart().unwrap();
    assert_eq!(next(&mut rx).await, ObjectEvent::Resync);
    store
        .put_object(ObjectKind::PodLabels, "default", "b", &v)
        .await
        .unwrap();
    assert!(matches!(next(&mut rx).await, ObjectEvent::Put(o) if o.name == "b"));
}
