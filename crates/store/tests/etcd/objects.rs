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

fn endpoint(node: &str, name: &str, addr: &str) -> weft_store::EndpointRecord {
    weft_store::EndpointRecord {
        node: node.into(),
        namespace: "shop".into(),
        name: name.into(),
        container_id: format!("c-{name}"),
        ifname: "eth0".into(),
        addresses: vec![addr.parse().unwrap()],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_follow_their_nodes_lease() {
    let srv = server();
    let store = connect(&srv).await;
    let (rev, none) = store.list_endpoints().await.unwrap();
    assert!(none.is_empty());
    let mut rx = store.watch_objects(rev).await.unwrap();
    let lease_a = store.grant_lease(Duration::from_secs(30)).await.unwrap();
    let lease_b = store.grant_lease(Duration::from_secs(30)).await.unwrap();
    let web = endpoint("node-a", "web-0", "10.244.0.2");
    let db = endpoint("node-b", "db-0", "10.244.0.66");
    store.put_endpoint(&web, lease_a).await.unwrap();
    store.put_endpoint(&db, lease_b).await.unwrap();
    let keys: Vec<String> = raw_keys(&srv).await.into_iter().map(|(k, _)| k).collect();
    assert!(
        keys.iter()
            .any(|k| k == "/weft/v1/policy/endpoints/node-a/shop/web-0"),
        "{keys:?}"
    );
    assert_eq!(next(&mut rx).await, ObjectEvent::EndpointPut(web.clone()));
    assert_eq!(next(&mut rx).await, ObjectEvent::EndpointPut(db.clone()));
    let (_, list) = store.list_endpoints().await.unwrap();
    assert_eq!(list, vec![web.clone(), db.clone()]);
    // The whole policy view at one revision: objects, endpoints, nodes and blocks.
    let np = json!({"kind": "NetworkPolicy", "metadata": {"name": "deny", "namespace": "shop"}});
    store
        .put_object(ObjectKind::NetworkPolicy, "shop", "deny", &np)
        .await
        .unwrap();
    assert!(matches!(next(&mut rx).await, ObjectEvent::Put(_)));
    let view = store.policy_view().await.unwrap();
    assert_eq!(view.endpoints, vec![web.clone(), db.clone()]);
    assert_eq!(view.objects.len(), 1);
    assert_eq!(view.objects[0].value, np);
    assert_eq!(
        view.snapshot.revision,
        store.list_endpoints().await.unwrap().0
    );
    store
        .delete_object(ObjectKind::NetworkPolicy, "shop", "deny")
        .await
        .unwrap();
    assert!(matches!(next(&mut rx).await, ObjectEvent::Deleted { .. }));
    // Objects and endpoints do not mix in listings.
    assert!(
        store
            .list_objects(ObjectKind::PodLabels)
            .await
            .unwrap()
            .1
            .is_empty()
    );

    // A dead node's pods vanish with its lease.
    store.revoke_lease(lease_b).await.unwrap();
    assert_eq!(
        next(&mut rx).await,
        ObjectEvent::EndpointDeleted {
            node: "node-b".into(),
            namespace: "shop".into(),
            name: "db-0".into()
        }
    );
    assert_eq!(store.list_endpoints().await.unwrap().1, vec![web.clone()]);
    assert!(
        store
            .delete_endpoint("node-a", "shop", "web-0")
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_endpoint("node-a", "shop", "web-0")
            .await
            .unwrap()
    );
    assert!(matches!(
        next(&mut rx).await,
        ObjectEvent::EndpointDeleted { name, .. } if name == "web-0"
    ));
    // A lease that is gone, and names that cannot be keys, are refused.
    assert!(matches!(
        store.put_endpoint(&db, lease_b).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    let bad = weft_store::EndpointRecord {
        name: "a/b".into(),
        ..web.clone()
    };
    assert!(matches!(
        store.put_endpoint(&bad, lease_a).await,
        Err(StoreError::InvalidObjectName { .. })
    ));
    assert!(store.list_endpoints().await.unwrap().1.is_empty());
}
