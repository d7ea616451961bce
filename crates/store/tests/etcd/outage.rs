//! etcd down: every call fails with Unavailable within the timeout, none hangs; etcd back on
//! the same port and data: the same store object works again with no manual step.

use std::time::{Duration, Instant};

use weft_store::{Datastore, EtcdStore, Family, StoreError};

use crate::{cfg, eventually, node, options, server};

fn unavailable<T: std::fmt::Debug>(what: &str, r: Result<T, StoreError>, started: Instant) {
    let took = started.elapsed();
    match r {
        Err(StoreError::Unavailable { op, detail }) => {
            eprintln!("{what} after {took:?}: {op}: {detail}");
            assert!(!detail.is_empty(), "{what}: empty detail ({op})");
        }
        other => panic!("{what}: expected Unavailable, got {other:?}"),
    }
    // The timeout is 1 s; allow scheduling slack on a busy machine.
    assert!(took < Duration::from_millis(2500), "{what} took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_fail_fast_while_etcd_is_down_and_recover_after_restart() {
    let mut srv = server();
    let mut opts = options(&srv);
    opts.timeout = Duration::from_secs(1);
    let s = EtcdStore::connect(opts).await.unwrap();
    s.init_config(&cfg(r#"{"cidrV4":"10.3.0.0/16"}"#))
        .await
        .unwrap();
    let lease = s.grant_lease(Duration::from_secs(30)).await.unwrap();
    s.put_node(&node("n"), lease).await.unwrap();
    let block = s.claim_block("n", Family::V4, lease).await.unwrap();

    srv.stop();
    let t = Instant::now();
    unavailable("snapshot", s.snapshot().await, t);
    let t = Instant::now();
    unavailable("keep_alive", s.keep_alive(lease).await, t);
    let t = Instant::now();
    unavailable(
        "grant_lease",
        s.grant_lease(Duration::from_secs(5)).await,
        t,
    );
    let t = Instant::now();
    unavailable(
        "claim_block",
        s.claim_block("n", Family::V4, lease).await,
        t,
    );
    let t = Instant::now();
    unavailable("put_node", s.put_node(&node("n"), lease).await, t);
    let t = Instant::now();
    unavailable("adopt_block", s.adopt_block("n", block, lease).await, t);
    let t = Instant::now();
    unavailable("release_block", s.release_block("n", block).await, t);
    let t = Instant::now();
    unavailable("watch", s.watch(0).await, t);
    // A second round after the first failures: still fast, not stuck in a backoff.
    let t = Instant::now();
    unavailable("snapshot again", s.snapshot().await, t);

    srv.restart().unwrap();
    let snap = eventually(
        Duration::from_secs(10),
        "the store to reconnect",
        || async { s.snapshot().await.ok() },
    )
    .await;
    assert_eq!(snap.nodes.len(), 1);
    assert_eq!(snap.blocks[0].block, block);
    // The lease survived the restart (etcd persists leases) and everything works again.
    s.keep_alive(lease).await.unwrap();
    let second = s.claim_block("n", Family::V4, lease).await.unwrap();
    assert_ne!(second, block);
    s.revoke_lease(lease).await.unwrap();
    assert!(s.snapshot().await.unwrap().blocks.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_nothing_is_unavailable_within_the_timeout() {
    // A port nobody listens on: bind, note, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut opts = weft_store::EtcdOptions::new(vec![format!("http://127.0.0.1:{port}")]);
    opts.timeout = Duration::from_secs(1);
    let t = Instant::now();
    match EtcdStore::connect(opts).await {
        Err(StoreError::Unavailable { op, detail }) => {
            assert_eq!(op, "connect");
            assert!(detail.contains(&port.to_string()), "{detail}");
        }
        Err(e) => panic!("expected Unavailable, got {e}"),
        Ok(_) => panic!("connected to nothing"),
    }
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_is_unavailable_within_the_timeout() {
    // Accepts TCP connections and says nothing, like a hung etcd or a half-open path.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = std::thread::spawn(move || {
        let mut conns = Vec::new();
        // Bounded: ends once the test's few connection attempts are in.
        for c in listener.incoming().take(4) {
            match c {
                Ok(c) => conns.push(c),
                Err(_) => break,
            }
        }
        std::thread::sleep(Duration::from_secs(3));
    });
    let mut opts = weft_store::EtcdOptions::new(vec![format!("http://127.0.0.1:{port}")]);
    opts.timeout = Duration::from_millis(700);
    let t = Instant::now();
    match EtcdStore::connect(opts).await {
        Err(StoreError::Unavailable { detail, .. }) => {
            assert!(detail.contains("within"), "{detail}")
        }
        Err(e) => panic!("expected Unavailable, got {e}"),
        Ok(_) => panic!("a mute server counted as etcd"),
    }
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(2),
        "{took:?}"
    );
    drop(hold);
}
