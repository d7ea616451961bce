//! Block claiming: address order, exactly one winner for the last block, no double
//! ownership under heavy racing, adopt and release by compare-and-swap.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use weft_store::{Datastore, EtcdStore, Family, StoreError};

use crate::{cfg, connect, raw_keys, server};

const TTL: Duration = Duration::from_secs(30);

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_come_in_address_order_per_family() {
    let srv = server();
    let store = connect(&srv).await;
    store
        .init_config(&cfg(
            r#"{"cidrV4":"10.244.0.0/16","blockSizeV4":24,"cidrV6":"fd00:10:244::/56"}"#,
        ))
        .await
        .unwrap();
    let lease = store.grant_lease(TTL).await.unwrap();
    let mut v4 = Vec::new();
    // Past 10.244.9.0 so that lexical key order (10.244.10 < 10.244.2) would show.
    for _ in 0..12 {
        v4.push(store.claim_block("n1", Family::V4, lease).await.unwrap());
    }
    let want: Vec<IpNet> = (0..12).map(|i| net(&format!("10.244.{i}.0/24"))).collect();
    assert_eq!(v4, want);
    let b6 = store.claim_block("n1", Family::V6, lease).await.unwrap();
    assert_eq!(b6, net("fd00:10:244::/122"));
    assert_eq!(
        store.claim_block("n2", Family::V6, lease).await.unwrap(),
        net("fd00:10:244::40/122")
    );

    // A released block is the next one handed out.
    store.release_block("n1", want[3]).await.unwrap();
    assert_eq!(
        store.claim_block("n3", Family::V4, lease).await.unwrap(),
        want[3]
    );

    // The key's value is exactly the owner's name.
    let keys = raw_keys(&srv).await;
    assert!(keys.contains(&("/weft/v1/blocks/v4/10.244.3.0_24".into(), "n3".into())));
    assert!(keys.contains(&("/weft/v1/blocks/v6/fd00:10:244::40_122".into(), "n2".into())));

    let snap = store.snapshot().await.unwrap();
    let listed: Vec<IpNet> = snap.blocks.iter().map(|b| b.block).collect();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(listed, sorted, "snapshot blocks are in address order");
    assert!(snap.blocks.iter().all(|b| b.lease == lease));

    // A family without a CIDR, and claims before any config.
    let only_v6 = crate::server();
    let s6 = connect(&only_v6).await;
    assert!(matches!(
        s6.claim_block("n1", Family::V4, lease).await,
        Err(StoreError::NoConfig)
    ));
    s6.init_config(&cfg(r#"{"cidrV6":"fd00::/120","blockSizeV6":122}"#))
        .await
        .unwrap();
    let l6 = s6.grant_lease(TTL).await.unwrap();
    assert!(matches!(
        s6.claim_block("n1", Family::V4, l6).await,
        Err(StoreError::FamilyDisabled(Family::V4))
    ));
}

/// `n` clients, each with its own connection and lease, wait at a barrier and then claim
/// at once while exactly one block is free.
async fn race_for_last_block(n: usize) {
    let srv = server();
    let setup = connect(&srv).await;
    // 4 blocks; 3 taken up front.
    setup
        .init_config(&cfg(r#"{"cidrV4":"10.9.0.0/28","blockSizeV4":30}"#))
        .await
        .unwrap();
    let filler = setup.grant_lease(TTL).await.unwrap();
    for _ in 0..3 {
        setup
            .claim_block("filler", Family::V4, filler)
            .await
            .unwrap();
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let mut tasks = Vec::new();
    for i in 0..n {
        let store: EtcdStore = connect(&srv).await;
        let lease = store.grant_lease(TTL).await.unwrap();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let name = format!("racer-{i}");
            barrier.wait().await;
            (
                name.clone(),
                store.claim_block(&name, Family::V4, lease).await,
            )
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            (name, Ok(block)) => winners.push((name, block)),
            (_, Err(StoreError::NoFreeBlock { family, cidr })) => {
                assert_eq!((family, cidr), (Family::V4, net("10.9.0.0/28")));
            }
            (name, Err(e)) => panic!("{name}: unexpected {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "{n} racers, winners {winners:?}");
    let (name, block) = &winners[0];
    assert_eq!(*block, net("10.9.0.12/30"));
    let keys = raw_keys(&srv).await;
    assert!(keys.contains(&("/weft/v1/blocks/v4/10.9.0.12_30".into(), name.clone())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_racers_for_the_last_free_block_one_wins() {
    race_for_last_block(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_racers_for_the_last_free_block_one_wins() {
    race_for_last_block(8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_racers_filling_a_cidr_never_share_a_block() {
    let srv = server();
    let setup = connect(&srv).await;
    // 32 blocks (a /24 cut into /29s) for 8 clients claiming until full.
    setup
        .init_config(&cfg(r#"{"cidrV4":"10.7.0.0/24","blockSizeV4":29}"#))
        .await
        .unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = connect(&srv).await;
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let lease = store.grant_lease(TTL).await.unwrap();
            let name = format!("n{i}");
            barrier.wait().await;
            let mut got = Vec::new();
            loop {
                match store.claim_block(&name, Family::V4, lease).await {
                    Ok(b) => got.push(b),
                    Err(StoreError::NoFreeBlock { .. }) => return (name, got),
                    Err(e) => panic!("{name}: {e}"),
                }
            }
        }));
    }
    let mut all = BTreeSet::new();
    let mut total = 0;
    let mut owners = Vec::new();
    for t in tasks {
        let (name, got) = t.await.unwrap();
        total += got.len();
        for b in got {
            all.insert(b);
            owners.push((b, name.clone()));
        }
    }
    assert_eq!(total, 32, "every block claimed once");
    assert_eq!(all.len(), 32, "no block claimed twice");
    let snap = setup.snapshot().await.unwrap();
    assert_eq!(snap.blocks.len(), 32);
    for (b, name) in owners {
        let owner = snap.blocks.iter().find(|o| o.block == b).unwrap();
        assert_eq!(owner.node, name, "{b}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopt_keeps_ownership_across_leases_and_release_is_owner_only() {
    let srv = server();
    let a = connect(&srv).await;
    let b = connect(&srv).await;
    a.init_config(&cfg(r#"{"cidrV4":"10.244.0.0/16"}"#))
        .await
        .unwrap();
    let l1 = a.grant_lease(TTL).await.unwrap();
    let block = a.claim_block("node-a", Family::V4, l1).await.unwrap();

    // "Restart": a new lease, adopt the old block onto it, drop the old lease.
    let l2 = a.grant_lease(TTL).await.unwrap();
    a.adopt_block("node-a", block, l2).await.unwrap();
    a.revoke_lease(l1).await.unwrap();
    let snap = a.snapshot().await.unwrap();
    assert_eq!(snap.blocks.len(), 1);
    assert_eq!(
        (snap.blocks[0].node.as_str(), snap.blocks[0].lease),
        ("node-a", l2)
    );
    // Adopting again with the same lease is a no-op success.
    a.adopt_block("node-a", block, l2).await.unwrap();

    // Somebody else's block: NotOwner, for adopt and release; the key is untouched.
    let lb = b.grant_lease(TTL).await.unwrap();
    match b.adopt_block("node-b", block, lb).await {
        Err(StoreError::NotOwner { block: got, owner }) => {
            assert_eq!((got, owner.as_str()), (block, "node-a"))
        }
        other => panic!("expected NotOwner, got {other:?}"),
    }
    assert!(matches!(
        b.release_block("node-b", block).await,
        Err(StoreError::NotOwner { .. })
    ));
    assert_eq!(a.snapshot().await.unwrap().blocks[0].lease, l2);

    // An absent block (held before, lost meanwhile) can be adopted.
    let free = net("10.244.200.0/26");
    b.adopt_block("node-b", free, lb).await.unwrap();
    assert_eq!(
        b.claim_block("node-c", Family::V4, lb).await.unwrap(),
        net("10.244.0.64/26")
    );

    // Not a block of this cluster.
    for bad in [
        "10.245.0.0/26",
        "10.244.0.0/24",
        "10.244.0.1/26",
        "fd00::/122",
    ] {
        let r = b.adopt_block("node-b", net(bad), lb).await;
        assert!(
            matches!(
                r,
                Err(StoreError::InvalidBlock { .. }) | Err(StoreError::FamilyDisabled(_))
            ),
            "{bad}: {r:?}"
        );
    }

    // Adopt onto a dead lease fails and writes nothing.
    b.revoke_lease(lb).await.unwrap();
    let gone = net("10.244.201.0/26");
    assert!(matches!(
        b.adopt_block("node-b", gone, lb).await,
        Err(StoreError::LeaseNotFound(l)) if l == lb
    ));
    assert!(
        !raw_keys(&srv)
            .await
            .iter()
            .any(|(k, _)| k.ends_with("10.244.201.0_26"))
    );

    // Release by the owner; releasing an absent block is fine.
    a.release_block("node-a", block).await.unwrap();
    a.release_block("node-a", block).await.unwrap();
    assert!(a.snapshot().await.unwrap().blocks.is_empty());
}
