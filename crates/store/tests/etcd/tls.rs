//! etcd with client-certificate authentication.

use std::path::PathBuf;

use weft_store::{Datastore, EtcdStore, Family, StoreError, TlsFiles};
use weft_testkit::etcd::{EtcdServer, TestPki};

use crate::{cfg, node, options, tls_files};

fn start() -> (TestPki, EtcdServer) {
    let pki = TestPki::generate().unwrap_or_else(|e| panic!("making test certificates: {e}"));
    let srv = EtcdServer::start_tls(&pki).unwrap_or_else(|e| panic!("starting etcd: {e}"));
    (pki, srv)
}

fn tls_error(r: Result<EtcdStore, StoreError>) -> String {
    match r {
        Err(StoreError::Tls(m)) => {
            eprintln!("TLS error: {m}");
            m
        }
        Err(e) => panic!("expected a TLS error, got {e:?}"),
        Ok(_) => panic!("connected without a valid identity"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_work_and_their_absence_is_a_clear_error() {
    let (pki, srv) = start();
    assert!(srv.endpoint().starts_with("https://"));

    // With CA, certificate and key: everything works.
    let s = EtcdStore::connect(options(&srv)).await.unwrap();
    s.init_config(&cfg(r#"{"cidrV4":"10.4.0.0/16"}"#))
        .await
        .unwrap();
    let lease = s
        .grant_lease(std::time::Duration::from_secs(30))
        .await
        .unwrap();
    s.put_node(&node("secure"), lease).await.unwrap();
    assert_eq!(
        s.claim_block("secure", Family::V4, lease)
            .await
            .unwrap()
            .to_string(),
        "10.4.0.0/26"
    );

    // A client certificate from another CA: refused by etcd in the handshake.
    let stranger = TestPki::generate().unwrap();
    let mut opts = options(&srv);
    opts.tls = Some(TlsFiles {
        ca: pki.ca.clone(),
        cert: stranger.client_cert.clone(),
        key: stranger.client_key.clone(),
    });
    let m = tls_error(EtcdStore::connect(opts).await);
    assert!(m.contains("connect at https://127.0.0.1:"), "{m}");

    // Not trusting the server's CA: refused by us.
    let mut opts = options(&srv);
    opts.tls = Some(tls_files(stranger.client_files()));
    let m = tls_error(EtcdStore::connect(opts).await);
    assert!(m.to_lowercase().contains("certificate"), "{m}");

    // No TLS at all against a TLS-only etcd.
    let mut opts = options(&srv);
    opts.tls = None;
    opts.endpoints = vec![srv.endpoint().replace("https://", "http://")];
    match EtcdStore::connect(opts).await {
        Err(StoreError::Unavailable { detail, .. }) => {
            eprintln!("plain HTTP to TLS etcd: {detail}");
            assert!(detail.contains("TLS"), "no hint about TLS: {detail}")
        }
        Err(StoreError::Tls(_)) => {}
        Err(e) => panic!("unexpected {e:?}"),
        Ok(_) => panic!("plain HTTP reached a TLS-only etcd"),
    }

    // Files that are missing or are not PEM: named in the error.
    let mut opts = options(&srv);
    opts.tls = Some(TlsFiles {
        ca: PathBuf::from("/nonexistent/ca.crt"),
        ..tls_files(pki.client_files())
    });
    let m = tls_error(EtcdStore::connect(opts).await);
    assert!(m.contains("/nonexistent/ca.crt"), "{m}");
    let mut opts = options(&srv);
    opts.tls = Some(TlsFiles {
        key: pki.client_cert.clone(),
        ..tls_files(pki.client_files())
    });
    let m = tls_error(EtcdStore::connect(opts).await);
    assert!(m.contains("client key") && m.contains("PRIVATE KEY"), "{m}");
    // TLS files with an http:// endpoint is a contradiction, said so.
    let mut opts = options(&srv);
    opts.endpoints = vec![srv.endpoint().replace("https://", "http://")];
    let m = tls_error(EtcdStore::connect(opts).await);
    assert!(m.contains("plain http"), "{m}");
}
