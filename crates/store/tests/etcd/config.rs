//! Cluster config: init, idempotence, conflict, bad input (nothing written), corruption.

use std::sync::Arc;

use weft_store::{ClusterConfig, ConfigError, Datastore, EtcdStore, Family, StoreError};

use crate::{cfg, connect, node, raw, raw_keys, server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_is_idempotent_and_conflicts_are_refused() {
    let srv = server();
    let store = connect(&srv).await;
    assert_eq!(store.config().await.unwrap(), None);
    let snap = store.snapshot().await.unwrap();
    assert_eq!(
        (snap.config, snap.nodes.len(), snap.blocks.len()),
        (None, 0, 0)
    );

    let want = cfg(r#"{"cidrV4":"10.244.0.0/16","cidrV6":"fd00:10:244::/56"}"#);
    assert_eq!(store.init_config(&want).await.unwrap(), want);
    assert_eq!(store.config().await.unwrap(), Some(want.clone()));
    let keys = raw_keys(&srv).await;
    assert_eq!(keys, vec![("/weft/v1/config".to_string(), want.to_json())]);

    // Equal again (also from another client): Ok(existing), nothing rewritten.
    let other = connect(&srv).await;
    assert_eq!(other.init_config(&want).await.unwrap(), want);
    let mut c = raw(&srv).await;
    let before = c.get("/weft/v1/config", None).await.unwrap().kvs()[0].mod_revision();

    let mut different = want.clone();
    different.block_size_v4 = 24;
    match other.init_config(&different).await {
        Err(StoreError::ConfigConflict {
            existing,
            requested,
        }) => {
            assert_eq!(*existing, want);
            assert_eq!(*requested, different);
        }
        other => panic!("expected ConfigConflict, got {other:?}"),
    }
    let after = c.get("/weft/v1/config", None).await.unwrap().kvs()[0].mod_revision();
    assert_eq!(before, after, "a refused init rewrote the config");
    assert_eq!(store.snapshot().await.unwrap().config, Some(want));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_inits_of_different_configs_have_one_winner() {
    let srv = server();
    let mut tasks = Vec::new();
    let barrier = Arc::new(tokio::sync::Barrier::new(6));
    for i in 0..6u8 {
        let store = connect(&srv).await;
        let barrier = barrier.clone();
        let c = cfg(&format!(r#"{{"cidrV4":"10.{i}.0.0/16"}}"#));
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            (c.clone(), store.init_config(&c).await)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (c, Ok(got)) => {
                assert_eq!(got, c);
                winners.push(c);
            }
            (_, Err(StoreError::ConfigConflict { .. })) => {}
            (_, Err(e)) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let stored = connect(&srv).await.config().await.unwrap();
    assert_eq!(stored.as_ref(), winners.first());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_nothing_is_written() {
    let srv = server();
    let store = connect(&srv).await;
    let good = cfg(r#"{"cidrV4":"10.244.0.0/16"}"#);
    let with = |f: &dyn Fn(&mut ClusterConfig)| {
        let mut c = good.clone();
        f(&mut c);
        c
    };
    let bad: Vec<(ClusterConfig, &str)> = vec![
        (with(&|c| c.cidr_v4 = None), "no pod CIDR"),
        (
            with(&|c| c.cidr_v4 = Some("10.244.0.1/16".parse().unwrap())),
            "did you mean 10.244.0.0/16",
        ),
        (
            with(&|c| c.cidr_v4 = Some("127.0.0.0/16".parse().unwrap())),
            "overlaps 127.0.0.0/8",
        ),
        (
            with(&|c| c.cidr_v6 = Some("::ffff:0:0/104".parse().unwrap())),
            "IPv4-mapped",
        ),
        (with(&|c| c.block_size_v4 = 8), "do not fit"),
        (with(&|c| c.block_size_v4 = 31), "too small"),
        (
            with(&|c| {
                c.cidr_v4 = Some("10.0.0.0/8".parse().unwrap());
                c.block_size_v4 = 30;
            }),
            "2^22 blocks",
        ),
        (with(&|c| c.vxlan_vni = 0), "vxlanVni"),
        (with(&|c| c.vxlan_vni = 1 << 24), "vxlanVni"),
        (with(&|c| c.vxlan_port = 0), "vxlanPort"),
    ];
    for (c, why) in bad {
        match store.init_config(&c).await {
            Err(StoreError::InvalidConfig(e)) => {
                assert!(e.to_string().contains(why), "{c:?}: {e} lacks {why:?}")
            }
            other => panic!("{c:?} gave {other:?}"),
        }
        assert_eq!(raw_keys(&srv).await, vec![], "{c:?} wrote something");
    }

    // Invalid node names and records: refused before anything reaches etcd.
    store.init_config(&good).await.unwrap();
    let lease = store
        .grant_lease(std::time::Duration::from_secs(30))
        .await
        .unwrap();
    for name in ["", "Node", "a_b", "a/b", "-a", &"a".repeat(254)] {
        let r = store.claim_block(name, Family::V4, lease).await;
        assert!(
            matches!(
                r,
                Err(StoreError::InvalidConfig(ConfigError::NodeName { .. }))
            ),
            "claim by {name:?}: {r:?}"
        );
        let mut rec = node("x");
        rec.name = name.to_string();
        let r = store.put_node(&rec, lease).await;
        assert!(matches!(r, Err(StoreError::InvalidConfig(_))), "{r:?}");
    }
    let mut rec = node("n1");
    rec.vtep_mac = "nope".into();
    assert!(matches!(
        store.put_node(&rec, lease).await,
        Err(StoreError::InvalidConfig(ConfigError::NodeRecord { .. }))
    ));
    let keys: Vec<String> = raw_keys(&srv).await.into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, vec!["/weft/v1/config".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_values_are_reported_or_skipped() {
    let srv = server();
    let mut c = raw(&srv).await;
    c.put("/weft/v1/config", "{not json", None).await.unwrap();
    let store: EtcdStore = connect(&srv).await;
    match store.config().await {
        Err(StoreError::Corrupt { key, detail }) => {
            assert_eq!(key, "/weft/v1/config");
            assert!(!detail.is_empty());
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(matches!(
        store.snapshot().await,
        Err(StoreError::Corrupt { .. })
    ));

    // A garbled node record is left out of the listing instead of failing it.
    let good = cfg(r#"{"cidrV4":"10.244.0.0/16"}"#);
    c.put("/weft/v1/config", good.to_json(), None)
        .await
        .unwrap();
    let store = connect(&srv).await;
    let lease = store
        .grant_lease(std::time::Duration::from_secs(30))
        .await
        .unwrap();
    store.put_node(&node("ok"), lease).await.unwrap();
    c.put("/weft/v1/nodes/bad", "garbage", None).await.unwrap();
    c.put("/weft/v1/blocks/v4/garbage", "x", None)
        .await
        .unwrap();
    let snap = store.snapshot().await.unwrap();
    assert_eq!(snap.config, Some(good));
    let names: Vec<&str> = snap.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["ok"]);
    assert!(snap.blocks.is_empty());
}
