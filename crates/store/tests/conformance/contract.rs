//! The datastore contract (weft_store::Datastore), as tests generic over the store.

use std::collections::BTreeSet;
use std::time::Duration;

use ipnet::IpNet;
use serde_json::{Value, json};
use tokio::sync::mpsc::Receiver;
use weft_store::{
    ClusterConfig, Datastore, EndpointRecord, Family, NodeRecord, ObjectEvent, ObjectKind,
    StoreError, WatchEvent,
};

use crate::Subject;

const TTL: Duration = Duration::from_secs(30);

fn cfg(json: &str) -> ClusterConfig {
    ClusterConfig::from_json(json).unwrap_or_else(|e| panic!("{json}: {e}"))
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn record(name: &str, blocks: Vec<IpNet>) -> NodeRecord {
    NodeRecord {
        name: name.to_string(),
        underlay_v4: Some("192.0.2.10".parse().unwrap()),
        underlay_v6: None,
        vtep_mac: "02:00:00:00:00:01".to_string(),
        mtu: 1500,
        blocks,
    }
}

async fn next<T>(rx: &mut Receiver<T>, what: &str) -> T {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no {what} within 10 s"))
        .unwrap_or_else(|| panic!("watch closed waiting for {what}"))
}

/// The next event `keep` accepts, skipping others (a store may report more, e.g. a node's
/// own status writes).
async fn next_matching<T: std::fmt::Debug>(
    rx: &mut Receiver<T>,
    what: &str,
    keep: impl Fn(&T) -> bool,
) -> T {
    loop {
        let ev = next(rx, what).await;
        if keep(&ev) {
            return ev;
        }
    }
}

pub async fn the_config_is_written_once(s: Subject) {
    let c = cfg(r#"{"cidrV4":"10.244.0.0/16","blockSizeV4":24,"backend":"host-gw"}"#);
    assert_eq!(s.a.config().await.unwrap(), None, "{}", s.name);
    assert_eq!(s.a.init_config(&c).await.unwrap(), c);
    // The second agent with the same config is fine; a different one is refused.
    assert_eq!(s.b.init_config(&c).await.unwrap(), c);
    let other = cfg(r#"{"cidrV4":"10.245.0.0/16"}"#);
    assert!(
        matches!(
            s.b.init_config(&other).await,
            Err(StoreError::ConfigConflict { .. })
        ),
        "{}",
        s.name
    );
    assert_eq!(s.b.config().await.unwrap(), Some(c));
}

pub async fn concurrent_claims_never_share_a_block(s: Subject) {
    s.a.init_config(&cfg(r#"{"cidrV4":"10.244.0.0/24","blockSizeV4":27}"#))
        .await
        .unwrap();
    let nodes = ["n1", "n2", "n3", "n4"];
    for n in nodes {
        s.node_exists(n);
    }
    let la = s.a.grant_lease(TTL).await.unwrap();
    let lb = s.b.grant_lease(TTL).await.unwrap();
    // Eight blocks, four nodes on two clients claiming three each at once: eight succeed,
    // four find the pool full, and no block has two owners.
    let mut tasks = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let (store, lease) = if i % 2 == 0 {
            (s.a.clone(), la)
        } else {
            (s.b.clone(), lb)
        };
        let n = n.to_string();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..3 {
                got.push((n.clone(), store.claim_block(&n, Family::V4, lease).await));
            }
            got
        }));
    }
    let mut won = Vec::new();
    let mut full = 0;
    for t in tasks {
        for (n, r) in t.await.unwrap() {
            match r {
                Ok(b) => won.push((b, n)),
                Err(StoreError::NoFreeBlock { .. }) => full += 1,
                Err(e) => panic!("{}: {n}: {e}", s.name),
            }
        }
    }
    let distinct: BTreeSet<IpNet> = won.iter().map(|(b, _)| *b).collect();
    assert_eq!(won.len(), 8, "{}: {won:?}", s.name);
    assert_eq!(
        distinct.len(),
        8,
        "{}: a block handed out twice: {won:?}",
        s.name
    );
    assert_eq!(full, 4);
    // Both clients' views agree with what the claims returned.
    for store in [&s.a, &s.b] {
        let snap = store.snapshot().await.unwrap();
        let mut owners: Vec<(IpNet, String)> = snap
            .blocks
            .iter()
            .map(|b| (b.block, b.node.clone()))
            .collect();
        owners.sort();
        let mut want = won.clone();
        want.sort();
        assert_eq!(owners, want, "{}", s.name);
    }
}

pub async fn adopt_and_release_respect_the_owner(s: Subject) {
    s.a.init_config(&cfg(r#"{"cidrV4":"10.244.0.0/16","blockSizeV4":24}"#))
        .await
        .unwrap();
    s.node_exists("n1");
    s.node_exists("n2");
    let lease = s.a.grant_lease(TTL).await.unwrap();
    let b = s.a.claim_block("n1", Family::V4, lease).await.unwrap();
    assert_eq!(b, net("10.244.0.0/24"));
    match s.b.adopt_block("n2", b, lease).await {
        Err(StoreError::NotOwner { owner, .. }) => assert_eq!(owner, "n1"),
        other => panic!("{}: adopt of another's block: {other:?}", s.name),
    }
    assert!(matches!(
        s.b.release_block("n2", b).await,
        Err(StoreError::NotOwner { .. })
    ));
    // The owner adopting its own block again changes nothing.
    s.a.adopt_block("n1", b, lease).await.unwrap();
    s.a.release_block("n1", b).await.unwrap();
    // Released twice is still released.
    s.a.release_block("n1", b).await.unwrap();
    s.b.adopt_block("n2", b, lease).await.unwrap();
    let snap = s.a.snapshot().await.unwrap();
    let owners: Vec<(IpNet, &str)> = snap
        .blocks
        .iter()
        .map(|o| (o.block, o.node.as_str()))
        .collect();
    assert_eq!(owners, vec![(b, "n2")], "{}", s.name);
    for bad in ["10.244.0.0/25", "10.245.0.0/24", "10.244.0.1/24"] {
        let bad: IpNet = bad.parse().unwrap();
        assert!(
            matches!(
                s.a.adopt_block("n1", bad, lease).await,
                Err(StoreError::InvalidBlock { .. })
            ),
            "{}: {bad}",
            s.name
        );
    }
    assert!(matches!(
        s.a.claim_block("Bad_Name", Family::V4, lease).await,
        Err(StoreError::InvalidConfig(_))
    ));
    assert!(matches!(
        s.a.claim_block("n1", Family::V6, lease).await,
        Err(StoreError::FamilyDisabled(Family::V6))
    ));
}

pub async fn the_watch_reports_nodes_and_blocks_in_order(s: Subject) {
    s.a.init_config(&cfg(r#"{"cidrV4":"10.244.0.0/16","blockSizeV4":24}"#))
        .await
        .unwrap();
    s.node_exists("n1");
    let lease = s.a.grant_lease(TTL).await.unwrap();
    let snap = s.b.snapshot().await.unwrap();
    assert!(
        snap.nodes.is_empty() && snap.blocks.is_empty(),
        "{}",
        s.name
    );
    let mut rx = s.b.watch(snap.revision).await.unwrap();
    let b = s.a.claim_block("n1", Family::V4, lease).await.unwrap();
    let rec = record("n1", vec![b]);
    s.a.put_node(&rec, lease).await.unwrap();
    let ev = next(&mut rx, "BlockPut").await;
    assert!(
        matches!(&ev, WatchEvent::BlockPut(o) if o.block == b && o.node == "n1"),
        "{}: {ev:?}",
        s.name
    );
    let ev = next_matching(&mut rx, "NodePut", |e| matches!(e, WatchEvent::NodePut(_))).await;
    assert_eq!(ev, WatchEvent::NodePut(rec.clone()), "{}", s.name);
    s.a.release_block("n1", b).await.unwrap();
    let ev = next(&mut rx, "BlockDeleted").await;
    assert_eq!(ev, WatchEvent::BlockDeleted(b), "{}", s.name);
    // A watch from the old revision replays all of it, or (a store without history) says
    // Resync first: either way nothing is silently skipped.
    let mut again = s.b.watch(snap.revision).await.unwrap();
    let first = next(&mut again, "replayed BlockPut").await;
    assert!(
        matches!(first, WatchEvent::BlockPut(_) | WatchEvent::Resync),
        "{}: {first:?}",
        s.name
    );
    let now = s.b.snapshot().await.unwrap();
    assert_eq!(now.nodes, vec![rec], "{}", s.name);
    assert!(now.blocks.is_empty());
    assert!(now.revision > snap.revision);
}

fn policy(ns: &str, name: &str, port: u16) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"ports": [{"protocol": "TCP", "port": port}]}],
        },
    })
}

fn namespace(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"team": "a", "kubernetes.io/metadata.name": name}},
    })
}

/// What every store keeps of an object: its names and spec (or labels).
fn essence(v: &Value) -> Value {
    json!({
        "name": v.pointer("/metadata/name"),
        "namespace": v.pointer("/metadata/namespace"),
        "labels": v.pointer("/metadata/labels"),
        "spec": v.pointer("/spec"),
    })
}

pub async fn policy_objects_round_trip_and_are_watched(s: Subject) {
    s.a.put_object(ObjectKind::Namespace, "", "shop", &namespace("shop"))
        .await
        .unwrap();
    let (rev, before) = s.b.list_objects(ObjectKind::NetworkPolicy).await.unwrap();
    assert!(before.is_empty(), "{}", s.name);
    let mut rx = s.b.watch_objects(rev).await.unwrap();
    s.a.put_object(
        ObjectKind::NetworkPolicy,
        "shop",
        "web",
        &policy("shop", "web", 80),
    )
    .await
    .unwrap();
    let ev = next_matching(
        &mut rx,
        "policy Put",
        |e| matches!(e, ObjectEvent::Put(o) if o.kind == ObjectKind::NetworkPolicy),
    )
    .await;
    let ObjectEvent::Put(o) = ev else {
        unreachable!()
    };
    assert_eq!((o.namespace.as_str(), o.name.as_str()), ("shop", "web"));
    assert_eq!(
        essence(&o.value),
        essence(&policy("shop", "web", 80)),
        "{}",
        s.name
    );
    // Replaced, then deleted: each is one event, in order.
    s.a.put_object(
        ObjectKind::NetworkPolicy,
        "shop",
        "web",
        &policy("shop", "web", 8080),
    )
    .await
    .unwrap();
    let ev = next_matching(
        &mut rx,
        "policy replaced",
        |e| matches!(e, ObjectEvent::Put(o) if o.kind == ObjectKind::NetworkPolicy),
    )
    .await;
    let ObjectEvent::Put(o) = ev else {
        unreachable!()
    };
    assert_eq!(
        essence(&o.value),
        essence(&policy("shop", "web", 8080)),
        "{}",
        s.name
    );
    let (_, list) = s.b.list_objects(ObjectKind::NetworkPolicy).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        essence(&list[0].value),
        essence(&policy("shop", "web", 8080))
    );
    let (_, nss) = s.b.list_objects(ObjectKind::Namespace).await.unwrap();
    let shop = nss
        .iter()
        .find(|o| o.name == "shop")
        .expect("namespace listed");
    assert_eq!(
        essence(&shop.value),
        essence(&namespace("shop")),
        "{}",
        s.name
    );
    assert!(
        s.a.delete_object(ObjectKind::NetworkPolicy, "shop", "web")
            .await
            .unwrap()
    );
    let ev = next_matching(&mut rx, "policy Deleted", |e| {
        matches!(
            e,
            ObjectEvent::Deleted {
                kind: ObjectKind::NetworkPolicy,
                ..
            }
        )
    })
    .await;
    assert!(matches!(ev, ObjectEvent::Deleted { name, .. } if name == "web"));
    assert!(
        !s.a.delete_object(ObjectKind::NetworkPolicy, "shop", "web")
            .await
            .unwrap()
    );
    assert!(matches!(
        s.a.put_object(
            ObjectKind::NetworkPolicy,
            "shop",
            "a/b",
            &policy("shop", "a/b", 1)
        )
        .await,
        Err(StoreError::InvalidObjectName { .. })
    ));
}

pub async fn endpoints_round_trip_and_are_watched(s: Subject) {
    s.a.init_config(&cfg(r#"{"cidrV4":"10.244.0.0/16","blockSizeV4":24}"#))
        .await
        .unwrap();
    s.node_exists("n1");
    let lease = s.a.grant_lease(TTL).await.unwrap();
    let rec = EndpointRecord {
        node: "n1".into(),
        namespace: "shop".into(),
        name: "web-0".into(),
        container_id: "c1".into(),
        ifname: "eth0".into(),
        addresses: vec!["10.244.0.2".parse().unwrap()],
    };
    let (rev, none) = s.a.list_endpoints().await.unwrap();
    assert!(none.is_empty());
    let mut rx = s.a.watch_objects(rev).await.unwrap();
    s.a.put_endpoint(&rec, lease).await.unwrap();
    let ev = next(&mut rx, "EndpointPut").await;
    assert_eq!(ev, ObjectEvent::EndpointPut(rec.clone()), "{}", s.name);
    assert_eq!(s.a.list_endpoints().await.unwrap().1, vec![rec.clone()]);
    assert!(s.a.delete_endpoint("n1", "shop", "web-0").await.unwrap());
    let ev = next(&mut rx, "EndpointDeleted").await;
    assert!(
        matches!(&ev, ObjectEvent::EndpointDeleted { node, name, .. } if node == "n1" && name == "web-0"),
        "{}: {ev:?}",
        s.name
    );
    assert!(!s.a.delete_endpoint("n1", "shop", "web-0").await.unwrap());
    assert!(s.a.list_endpoints().await.unwrap().1.is_empty());
    let bad = EndpointRecord {
        namespace: "a/b".into(),
        ..rec
    };
    assert!(matches!(
        s.a.put_endpoint(&bad, lease).await,
        Err(StoreError::InvalidObjectName { .. })
    ));
}

pub async fn a_policy_view_is_one_consistent_state(s: Subject) {
    s.a.init_config(&cfg(r#"{"cidrV4":"10.244.0.0/16","blockSizeV4":24}"#))
        .await
        .unwrap();
    s.node_exists("n1");
    let lease = s.a.grant_lease(TTL).await.unwrap();
    let b = s.a.claim_block("n1", Family::V4, lease).await.unwrap();
    s.a.put_node(&record("n1", vec![b]), lease).await.unwrap();
    s.a.put_object(ObjectKind::Namespace, "", "shop", &namespace("shop"))
        .await
        .unwrap();
    s.a.put_object(
        ObjectKind::NetworkPolicy,
        "shop",
        "web",
        &policy("shop", "web", 80),
    )
    .await
    .unwrap();
    let view = s.a.policy_view().await.unwrap();
    assert_eq!(
        view.snapshot.nodes,
        vec![record("n1", vec![b])],
        "{}",
        s.name
    );
    assert_eq!(view.snapshot.blocks.len(), 1);
    assert!(view.snapshot.config.is_some());
    let kinds: BTreeSet<(ObjectKind, String)> = view
        .objects
        .iter()
        .map(|o| (o.kind, o.name.clone()))
        .collect();
    assert!(
        kinds.contains(&(ObjectKind::NetworkPolicy, "web".into())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&(ObjectKind::Namespace, "shop".into())),
        "{kinds:?}"
    );
    // The same view with its objects handed over one at a time, in any order.
    let mut each = Vec::new();
    let streamed = s.a.policy_view_each(|o| each.push(o)).await.unwrap();
    each.sort_by(|a, b| (a.kind, &a.namespace, &a.name).cmp(&(b.kind, &b.namespace, &b.name)));
    assert!(streamed.objects.is_empty(), "{}", s.name);
    assert_eq!(
        (&streamed.snapshot, &each, &streamed.endpoints),
        (&view.snapshot, &view.objects, &view.endpoints),
        "{}",
        s.name
    );
    // Nothing happened since: a watch from the view's revision is quiet.
    let mut rx = s.a.watch_objects(view.snapshot.revision).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), rx.recv())
            .await
            .is_err(),
        "{}: an event after a consistent view",
        s.name
    );
}
