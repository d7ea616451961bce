//! Leases: keep-alive keeps a node's keys, expiry removes them, and only then are its
//! blocks claimable by others (the ownership fence).

use std::time::{Duration, Instant};

use weft_store::{Datastore, Family, StoreError};

use crate::{cfg, connect, eventually, node, server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_holds_and_expiry_frees_only_after_the_ttl() {
    let srv = server();
    let a = connect(&srv).await;
    let b = connect(&srv).await;
    // Two blocks in the whole cluster.
    a.init_config(&cfg(r#"{"cidrV4":"10.1.0.0/29","blockSizeV4":30}"#))
        .await
        .unwrap();
    let la = a.grant_lease(Duration::from_secs(2)).await.unwrap();
    a.put_node(&node("a"), la).await.unwrap();
    let a1 = a.claim_block("a", Family::V4, la).await.unwrap();
    let a2 = a.claim_block("a", Family::V4, la).await.unwrap();
    let lb = b.grant_lease(Duration::from_secs(30)).await.unwrap();
    b.put_node(&node("b"), lb).await.unwrap();

    // Kept alive well past the TTL: everything stays.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        let ttl = a.keep_alive(la).await.unwrap();
        assert!(
            ttl >= Duration::from_secs(1) && ttl <= Duration::from_secs(3),
            "{ttl:?}"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let snap = b.snapshot().await.unwrap();
    assert_eq!(snap.nodes.len(), 2);
    assert_eq!(snap.blocks.len(), 2);
    assert!(matches!(
        b.claim_block("b", Family::V4, lb).await,
        Err(StoreError::NoFreeBlock { .. })
    ));

    // a goes silent. Within the TTL its blocks are still fenced.
    let silent = Instant::now();
    a.keep_alive(la).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(matches!(
        b.claim_block("b", Family::V4, lb).await,
        Err(StoreError::NoFreeBlock { .. })
    ));
    assert!(
        b.snapshot()
            .await
            .unwrap()
            .nodes
            .iter()
            .any(|n| n.name == "a")
    );

    // After expiry: a's record and both blocks are gone, and b gets the first one.
    let got = eventually(Duration::from_secs(10), "a's lease to expire", || async {
        match b.claim_block("b", Family::V4, lb).await {
            Ok(block) => Some(block),
            Err(StoreError::NoFreeBlock { .. }) => None,
            Err(e) => panic!("{e}"),
        }
    })
    .await;
    let waited = silent.elapsed();
    assert!(
        waited >= Duration::from_millis(1900),
        "freed after {waited:?}, before the TTL"
    );
    assert_eq!(got, a1);
    let snap = b.snapshot().await.unwrap();
    let names: Vec<&str> = snap.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["b"]);
    let owners: Vec<(String, String)> = snap
        .blocks
        .iter()
        .map(|o| (o.block.to_string(), o.node.clone()))
        .collect();
    assert_eq!(owners, [(a1.to_string(), "b".to_string())]);
    assert_eq!(b.claim_block("b", Family::V4, lb).await.unwrap(), a2);

    // The dead lease is reported as such, and writes on it are refused.
    assert!(matches!(a.keep_alive(la).await, Err(StoreError::LeaseNotFound(l)) if l == la));
    assert!(matches!(
        a.put_node(&node("a"), la).await,
        Err(StoreError::LeaseNotFound(l)) if l == la
    ));
    assert!(matches!(
        a.claim_block("a", Family::V4, la).await,
        Err(StoreError::NoFreeBlock { .. })
    ));
    a.revoke_lease(la).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_removes_node_and_blocks_at_once() {
    let srv = server();
    let s = connect(&srv).await;
    s.init_config(&cfg(r#"{"cidrV4":"10.2.0.0/16","cidrV6":"fd00:2::/64"}"#))
        .await
        .unwrap();
    let lease = s.grant_lease(Duration::from_secs(60)).await.unwrap();
    s.put_node(&node("n"), lease).await.unwrap();
    s.claim_block("n", Family::V4, lease).await.unwrap();
    s.claim_block("n", Family::V6, lease).await.unwrap();
    assert_eq!(s.snapshot().await.unwrap().blocks.len(), 2);
    s.revoke_lease(lease).await.unwrap();
    let snap = s.snapshot().await.unwrap();
    assert!(snap.nodes.is_empty() && snap.blocks.is_empty(), "{snap:?}");
    assert!(matches!(
        s.keep_alive(lease).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    // Revoking twice is fine.
    s.revoke_lease(lease).await.unwrap();
    // A claim on a dead lease writes nothing.
    assert!(matches!(
        s.claim_block("n", Family::V4, lease).await,
        Err(StoreError::LeaseNotFound(_))
    ));
    assert!(s.snapshot().await.unwrap().blocks.is_empty());
}

/// A block freed by an expired lease goes back into circulation last: every never-used
/// block is handed out first (its old owner may only be partitioned away).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freed_blocks_are_reused_only_after_fresh_ones() {
    let srv = server();
    let a = connect(&srv).await;
    let b = connect(&srv).await;
    // Four blocks.
    a.init_config(&cfg(r#"{"cidrV4":"10.3.0.0/28","blockSizeV4":30}"#))
        .await
        .unwrap();
    let la = a.grant_lease(Duration::from_secs(1)).await.unwrap();
    let first = a.claim_block("a", Family::V4, la).await.unwrap();
    assert_eq!(first.to_string(), "10.3.0.0/30");
    let lb = b.grant_lease(Duration::from_secs(60)).await.unwrap();
    eventually(Duration::from_secs(10), "a's lease to expire", || async {
        b.snapshot().await.unwrap().blocks.is_empty().then_some(())
    })
    .await;
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(
            b.claim_block("b", Family::V4, lb)
                .await
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(
        got,
        ["10.3.0.4/30", "10.3.0.8/30", "10.3.0.12/30", "10.3.0.0/30"],
        "the freed block must come last"
    );
}
