//! Watch: every change after the snapshot's revision, Resync after etcd restarts or
//! compacts, and the channel's lifetime.

use std::collections::HashSet;
use std::time::Duration;

use tokio::sync::mpsc::Receiver;
use weft_store::{BlockOwner, Datastore, Family, WatchEvent};

use crate::{cfg, connect, node, raw, server};

async fn next(rx: &mut Receiver<WatchEvent>) -> WatchEvent {
    match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
        Ok(Some(ev)) => ev,
        Ok(None) => panic!("watch channel closed"),
        Err(_) => panic!("no watch event within 10 s"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_delivers_changes_and_resyncs_after_an_etcd_restart() {
    let mut srv = server();
    let watcher = connect(&srv).await;
    let writer = connect(&srv).await;
    writer
        .init_config(&cfg(r#"{"cidrV4":"10.244.0.0/16"}"#))
        .await
        .unwrap();
    let snap = watcher.snapshot().await.unwrap();
    let lease = writer.grant_lease(Duration::from_secs(60)).await.unwrap();

    // Written after the snapshot but before the watch starts: still delivered.
    let n1 = node("n1");
    writer.put_node(&n1, lease).await.unwrap();
    let mut rx = watcher.watch(snap.revision).await.unwrap();
    assert_eq!(next(&mut rx).await, WatchEvent::NodePut(n1.clone()));

    let b = writer.claim_block("n1", Family::V4, lease).await.unwrap();
    assert_eq!(
        next(&mut rx).await,
        WatchEvent::BlockPut(BlockOwner {
            block: b,
            node: "n1".into(),
            lease
        })
    );
    writer.release_block("n1", b).await.unwrap();
    assert_eq!(next(&mut rx).await, WatchEvent::BlockDeleted(b));
    let b2 = writer.claim_block("n1", Family::V4, lease).await.unwrap();
    assert!(matches!(next(&mut rx).await, WatchEvent::BlockPut(o) if o.block == b2));
    let mut n1b = n1.clone();
    n1b.mtu = 9000;
    writer.put_node(&n1b, lease).await.unwrap();
    assert_eq!(next(&mut rx).await, WatchEvent::NodePut(n1b));

    // Lease revocation deletes both keys in one revision, in no promised order.
    writer.revoke_lease(lease).await.unwrap();
    let got: HashSet<String> = [next(&mut rx).await, next(&mut rx).await]
        .into_iter()
        .map(|e| format!("{e:?}"))
        .collect();
    let want: HashSet<String> = [
        WatchEvent::NodeDeleted("n1".into()),
        WatchEvent::BlockDeleted(b2),
    ]
    .into_iter()
    .map(|e| format!("{e:?}"))
    .collect();
    assert_eq!(got, want);

    // etcd goes away and comes back on the same port and data: the watch says Resync,
    // then carries on with new changes, on the same store objects.
    srv.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    srv.restart().unwrap();
    assert_eq!(next(&mut rx).await, WatchEvent::Resync);
    let after = watcher.snapshot().await.unwrap();
    assert!(after.nodes.is_empty() && after.config.is_some());
    let lease2 = writer.grant_lease(Duration::from_secs(60)).await.unwrap();
    writer.put_node(&node("n2"), lease2).await.unwrap();
    assert_eq!(next(&mut rx).await, WatchEvent::NodePut(node("n2")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_a_compacted_revision_starts_with_resync() {
    let srv = server();
    let s = connect(&srv).await;
    s.init_config(&cfg(r#"{"cidrV4":"10.244.0.0/16"}"#))
        .await
        .unwrap();
    let old = s.snapshot().await.unwrap().revision;
    let lease = s.grant_lease(Duration::from_secs(60)).await.unwrap();
    for i in 0..5 {
        s.put_node(&node(&format!("n{i}")), lease).await.unwrap();
    }
    let now = s.snapshot().await.unwrap().revision;
    raw(&srv).await.compact(now, None).await.unwrap();

    let mut rx = s.watch(old).await.unwrap();
    assert_eq!(next(&mut rx).await, WatchEvent::Resync);
    s.put_node(&node("late"), lease).await.unwrap();
    assert_eq!(next(&mut rx).await, WatchEvent::NodePut(node("late")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_channel_closes_when_the_store_is_dropped() {
    let srv = server();
    let s = connect(&srv).await;
    let rev = s.snapshot().await.unwrap().revision;
    let mut rx = s.watch(rev).await.unwrap();
    let clone = s.clone();
    drop(s);
    // A clone keeps it open.
    let quiet = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await;
    assert!(
        quiet.is_err(),
        "channel ended while a clone was alive: {quiet:?}"
    );
    drop(clone);
    let end = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
    assert_eq!(end, Ok(None));
}
