//! The local single-node store: same contract as etcd where it applies, one file, one
//! process.

use std::time::Duration;

use weft_store::{
    BlockOwner, ClusterConfig, Datastore, Family, LocalStore, NodeRecord, StoreError, WatchEvent,
};
use weft_testkit::temp_dir;

struct Dir(std::path::PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir() -> Dir {
    Dir(temp_dir("local").unwrap())
}

fn cfg() -> ClusterConfig {
    ClusterConfig::from_json(r#"{"cidrV4":"10.244.0.0/24","blockSizeV4":26,"cidrV6":"fd00::/120"}"#)
        .unwrap()
}

fn node(name: &str) -> NodeRecord {
    NodeRecord {
        name: name.into(),
        underlay_v4: Some("192.0.2.1".parse().unwrap()),
        underlay_v6: None,
        vtep_mac: "02:00:00:00:00:01".into(),
        mtu: 1500,
        blocks: vec![],
    }
}

async fn next(rx: &mut tokio::sync::mpsc::Receiver<WatchEvent>) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("no event within 5 s")
        .expect("channel closed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_persistence_and_the_lock() {
    let d = dir();
    let path = d.0.join("state").join("store.json");
    let s = LocalStore::open(&path).unwrap();

    // A second open, in this process or another, is refused while the first lives.
    match LocalStore::open(&path) {
        Err(e @ StoreError::Locked { .. }) => {
            let m = e.to_string();
            assert!(
                m.contains("in use by another process") && m.contains("store.json.lock"),
                "{m}"
            );
        }
        Err(e) => panic!("expected Locked, got {e}"),
        Ok(_) => panic!("opened twice"),
    }

    assert_eq!(s.config().await.unwrap(), None);
    assert!(matches!(s.grant_lease(Duration::from_secs(5)).await, Ok(1)));
    assert!(matches!(
        s.claim_block("n1", Family::V4, 1).await,
        Err(StoreError::NoConfig)
    ));
    // Bad config: refused, nothing written.
    let mut bad = cfg();
    bad.block_size_v4 = 20;
    assert!(matches!(
        s.init_config(&bad).await,
        Err(StoreError::InvalidConfig(_))
    ));
    assert_eq!(s.config().await.unwrap(), None);

    assert_eq!(s.init_config(&cfg()).await.unwrap(), cfg());
    assert_eq!(s.init_config(&cfg()).await.unwrap(), cfg());
    let mut other = cfg();
    other.vxlan_vni = 7;
    assert!(matches!(
        s.init_config(&other).await,
        Err(StoreError::ConfigConflict { .. })
    ));

    let lease = s.grant_lease(Duration::from_secs(5)).await.unwrap();
    assert_eq!(s.keep_alive(lease).await.unwrap(), Duration::from_secs(5));
    s.put_node(&node("n1"), lease).await.unwrap();
    let b1 = s.claim_block("n1", Family::V4, lease).await.unwrap();
    let b2 = s.claim_block("n1", Family::V4, lease).await.unwrap();
    let b6 = s.claim_block("n1", Family::V6, lease).await.unwrap();
    assert_eq!(
        (b1.to_string(), b2.to_string(), b6.to_string()),
        (
            "10.244.0.0/26".into(),
            "10.244.0.64/26".into(),
            "fd00::/122".into()
        )
    );
    assert!(matches!(
        s.adopt_block("n2", b1, lease).await,
        Err(StoreError::NotOwner { owner, .. }) if owner == "n1"
    ));
    assert!(matches!(
        s.release_block("n2", b1).await,
        Err(StoreError::NotOwner { .. })
    ));
    s.release_block("n1", b2).await.unwrap();
    assert!(matches!(
        s.put_node(&node("n2"), 999).await,
        Err(StoreError::LeaseNotFound(999))
    ));
    assert!(matches!(
        s.claim_block("Bad_Name", Family::V4, lease).await,
        Err(StoreError::InvalidConfig(_))
    ));
    let snap = s.snapshot().await.unwrap();

    // Reopen after the first is dropped: everything is still there, leases too.
    drop(s);
    let s = LocalStore::open(&path).unwrap();
    let again = s.snapshot().await.unwrap();
    assert_eq!(again, snap);
    assert_eq!(again.config, Some(cfg()));
    assert_eq!(again.nodes, vec![node("n1")]);
    assert_eq!(
        again.blocks,
        vec![
            BlockOwner {
                block: b1,
                node: "n1".into(),
                lease
            },
            BlockOwner {
                block: b6,
                node: "n1".into(),
                lease
            },
        ]
    );
    s.keep_alive(lease).await.unwrap();
    // A new lease for the restarted agent; it adopts its blocks and lets the old lease go.
    let l2 = s.grant_lease(Duration::from_secs(5)).await.unwrap();
    assert_ne!(l2, lease);
    s.adopt_block("n1", b1, l2).await.unwrap();
    s.adopt_block("n1", b6, l2).await.unwrap();
    s.put_node(&node("n1"), l2).await.unwrap();
    s.revoke_lease(lease).await.unwrap();
    let snap = s.snapshot().await.unwrap();
    assert_eq!(snap.blocks.len(), 2);
    assert!(snap.blocks.iter().all(|b| b.lease == l2));
    assert_eq!(snap.nodes.len(), 1);
    assert!(matches!(
        s.keep_alive(lease).await,
        Err(StoreError::LeaseNotFound(_))
    ));

    // The space fills up; then NoFreeBlock.
    for _ in 0..3 {
        s.claim_block("n1", Family::V4, l2).await.unwrap();
    }
    assert!(matches!(
        s.claim_block("n1", Family::V4, l2).await,
        Err(StoreError::NoFreeBlock {
            family: Family::V4,
            ..
        })
    ));

    // The file is plain JSON, no temp file is left behind.
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"cidrV4\": \"10.244.0.0/24\""), "{text}");
    assert!(!path.with_file_name("store.json.tmp").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reports_this_process_writes() {
    let d = dir();
    let s = LocalStore::open(&d.0.join("store.json")).unwrap();
    s.init_config(&cfg()).await.unwrap();
    let rev = s.snapshot().await.unwrap().revision;
    let mut rx = s.watch(rev).await.unwrap();
    let lease = s.grant_lease(Duration::from_secs(5)).await.unwrap();
    s.put_node(&node("n1"), lease).await.unwrap();
    assert_eq!(next(&mut rx).await, WatchEvent::NodePut(node("n1")));
    let b = s.claim_block("n1", Family::V4, lease).await.unwrap();
    assert_eq!(
        next(&mut rx).await,
        WatchEvent::BlockPut(BlockOwner {
            block: b,
            node: "n1".into(),
            lease
        })
    );
    s.release_block("n1", b).await.unwrap();
    assert_eq!(next(&mut rx).await, WatchEvent::BlockDeleted(b));
    let b = s.claim_block("n1", Family::V4, lease).await.unwrap();
    assert!(matches!(next(&mut rx).await, WatchEvent::BlockPut(_)));
    s.revoke_lease(lease).await.unwrap();
    assert_eq!(next(&mut rx).await, WatchEvent::NodeDeleted("n1".into()));
    assert_eq!(next(&mut rx).await, WatchEvent::BlockDeleted(b));

    // A watch from an old revision cannot be replayed: Resync first.
    let mut old = s.watch(rev).await.unwrap();
    assert_eq!(next(&mut old).await, WatchEvent::Resync);

    drop(s);
    let end = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
    assert_eq!(end, Ok(None), "channel must close with the store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_file_is_reported_not_overwritten() {
    let d = dir();
    let path = d.0.join("store.json");
    std::fs::write(&path, "{ this is not json").unwrap();
    match LocalStore::open(&path) {
        Err(StoreError::Corrupt { key, .. }) => assert!(key.ends_with("store.json")),
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("opened a corrupt file"),
    }
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{ this is not json"
    );
    // The failed open released its lock.
    std::fs::remove_file(&path).unwrap();
    LocalStore::open(&path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_store_dispatches() {
    let d = dir();
    let s = weft_store::AnyStore::Local(LocalStore::open(&d.0.join("s.json")).unwrap());
    let shared = std::sync::Arc::new(s);
    shared.init_config(&cfg()).await.unwrap();
    let lease = shared.grant_lease(Duration::from_secs(1)).await.unwrap();
    assert_eq!(
        shared
            .claim_block("n", Family::V6, lease)
            .await
            .unwrap()
            .to_string(),
        "fd00::/122"
    );
}

#[tokio::test]
async fn policy_objects_persist_and_are_watched() {
    use weft_store::{ObjectEvent, ObjectKind};
    let d = dir();
    let path = d.0.join("store.json");
    let value = serde_json::json!({"kind": "PodLabels", "metadata": {"name": "web"}});
    {
        let s = LocalStore::open(&path).unwrap();
        let (rev, none) = s.list_objects(ObjectKind::PodLabels).await.unwrap();
        assert!(none.is_empty());
        let mut rx = s.watch_objects(rev).await.unwrap();
        s.put_object(ObjectKind::PodLabels, "shop", "web", &value)
            .await
            .unwrap();
        let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(ev, ObjectEvent::Put(o) if o.namespace == "shop" && o.name == "web"));
    }
    let s = LocalStore::open(&path).unwrap();
    let (_, list) = s.list_objects(ObjectKind::PodLabels).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].namespace.as_str(), &list[0].value),
        ("shop", &value)
    );
    assert!(
        s.delete_object(ObjectKind::PodLabels, "shop", "web")
            .await
            .unwrap()
    );
    assert!(
        !s.delete_object(ObjectKind::PodLabels, "shop", "web")
            .await
            .unwrap()
    );
    assert!(
        s.list_objects(ObjectKind::PodLabels)
            .await
            .unwrap()
            .1
            .is_empty()
    );
}

#[tokio::test]
async fn endpoints_persist_and_go_with_their_lease() {
    use weft_store::{EndpointRecord, ObjectEvent};
    let d = dir();
    let path = d.0.join("store.json");
    let rec = EndpointRecord {
        node: "n1".into(),
        namespace: "shop".into(),
        name: "web-0".into(),
        container_id: "c1".into(),
        ifname: "eth0".into(),
        addresses: vec!["10.244.0.2".parse().unwrap()],
    };
    let lease = {
        let s = LocalStore::open(&path).unwrap();
        let lease = s.grant_lease(Duration::from_secs(20)).await.unwrap();
        let (rev, none) = s.list_endpoints().await.unwrap();
        assert!(none.is_empty());
        let mut rx = s.watch_objects(rev).await.unwrap();
        s.put_endpoint(&rec, lease).await.unwrap();
        let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ev, ObjectEvent::EndpointPut(rec.clone()));
        lease
    };
    let s = LocalStore::open(&path).unwrap();
    assert_eq!(s.list_endpoints().await.unwrap().1, vec![rec.clone()]);
    let view = s.policy_view().await.unwrap();
    assert_eq!(view.endpoints, vec![rec.clone()]);
    assert!(view.objects.is_empty());
    assert_eq!(view.snapshot.revision, s.list_endpoints().await.unwrap().0);
    let (rev, _) = s.list_endpoints().await.unwrap();
    let mut rx = s.watch_objects(rev).await.unwrap();
    s.revoke_lease(lease).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(ev, ObjectEvent::EndpointDeleted { name, .. } if name == "web-0"));
    assert!(s.list_endpoints().await.unwrap().1.is_empty());
    assert!(matches!(
        s.put_endpoint(&rec, lease).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    assert!(!s.delete_endpoint("n1", "shop", "web-0").await.unwrap());
}
