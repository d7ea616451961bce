//! Integration tests of the etcd store against real etcd servers (one per test, on loopback,
//! from weft-testkit).

mod blocks;
mod config;
mod leases;
mod objects;
mod outage;
mod tls;
mod watch;

use std::time::Duration;

use etcd_client::GetOptions;
use weft_store::{ClusterConfig, EtcdOptions, EtcdStore, NodeRecord, TlsFiles};
use weft_testkit::etcd::{ClientTls, EtcdServer};

pub fn server() -> EtcdServer {
    EtcdServer::start().unwrap_or_else(|e| panic!("starting etcd: {e}"))
}

/// How the store reaches `srv`: default prefix, the PKI's client identity when TLS is on,
/// and a 2 s request timeout.
pub fn options(srv: &EtcdServer) -> EtcdOptions {
    EtcdOptions {
        tls: srv.client_tls().map(tls_files),
        timeout: Duration::from_secs(2),
        ..EtcdOptions::new(vec![srv.endpoint()])
    }
}

pub fn tls_files(c: ClientTls) -> TlsFiles {
    TlsFiles {
        ca: c.ca,
        cert: c.cert,
        key: c.key,
    }
}

pub async fn connect(srv: &EtcdServer) -> EtcdStore {
    EtcdStore::connect(options(srv))
        .await
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", srv.endpoint()))
}

pub fn cfg(json: &str) -> ClusterConfig {
    ClusterConfig::from_json(json).unwrap_or_else(|e| panic!("{json}: {e}"))
}

pub fn node(name: &str) -> NodeRecord {
    NodeRecord {
        name: name.to_string(),
        underlay_v4: Some("192.0.2.10".parse().unwrap()),
        underlay_v6: None,
        vtep_mac: "02:00:00:00:00:01".to_string(),
        mtu: 1500,
        blocks: Vec::new(),
    }
}

/// A plain etcd client, to look at the raw keys behind the store's back.
pub async fn raw(srv: &EtcdServer) -> etcd_client::Client {
    etcd_client::Client::connect([srv.endpoint()], None)
        .await
        .unwrap()
}

/// Every key under the store's prefix, with its value.
pub async fn raw_keys(srv: &EtcdServer) -> Vec<(String, String)> {
    let mut c = raw(srv).await;
    let resp = c
        .get("/weft/v1/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    resp.kvs()
        .iter()
        .map(|kv| {
            (
                kv.key_str().unwrap().to_string(),
                kv.value_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Polls `f` every 50 ms until it returns `Some`, or panics after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
