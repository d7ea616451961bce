//! weftd against an etcd that requires TLS client certificates: with the right CA, client
//! certificate and key it registers the node, leases blocks and writes the conflist; with a
//! client certificate the server does not trust it stops with a message that says so instead
//! of retrying forever. Everything (etcd included) runs inside a network namespace the test
//! makes and removes.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::{TestNs, Weftd, weftd_command};
use weft_store::{Datastore, EtcdOptions, EtcdStore, TlsFiles};
use weft_testkit::TempDir;
use weft_testkit::etcd::{EtcdServer, TestPki};

fn weftd(dir: &Path, endpoint: &str, ca: &Path, cert: &Path, key: &Path) -> Weftd {
    let config = dir.join("cluster.json");
    std::fs::write(
        &config,
        r#"{"cidrV4":"10.96.0.0/16","cidrV6":"fd00:96::/56","backend":"vxlan"}"#,
    )
    .unwrap();
    let child = weftd_command(dir, "n1")
        .args(["--etcd-endpoints", endpoint])
        .arg("--etcd-cacert")
        .arg(ca)
        .arg("--etcd-cert")
        .arg(cert)
        .arg("--etcd-key")
        .arg(key)
        .args(["--lease-ttl", "5"])
        .spawn()
        .expect("start weftd");
    Weftd(child)
}

#[test]
fn weftd_registers_over_tls_with_client_certificates() {
    let ns = TestNs::new();
    ns.open()
        .run(|| {
            let pki = TestPki::generate().unwrap();
            let etcd = EtcdServer::start_tls(&pki).unwrap();
            let dir = TempDir::new("agent-tls");
            let mut agent = weftd(
                dir.path(),
                &etcd.endpoint(),
                &pki.ca,
                &pki.client_cert,
                &pki.client_key,
            );
            let conflist = dir.path().join("net.d/10-weft.conflist");
            let start = Instant::now();
            while !conflist.exists() {
                if let Ok(Some(status)) = agent.0.try_wait() {
                    panic!("weftd exited ({status}): {}", agent.stderr());
                }
                assert!(start.elapsed() < Duration::from_secs(15), "no conflist");
                std::thread::sleep(Duration::from_millis(50));
            }
            let conf: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&conflist).unwrap()).unwrap();
            let v4 = conf["plugins"][0]["ipam"]["ranges"][0][0]["subnet"]
                .as_str()
                .unwrap()
                .to_owned();
            assert!(v4.starts_with("10.96."), "{conf:#}");

            // The datastore, read over TLS by another client, has the node and its blocks.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let snap = rt.block_on(async {
                let mut opts = EtcdOptions::new(vec![etcd.endpoint()]);
                let c = pki.client_files();
                opts.tls = Some(TlsFiles {
                    ca: c.ca,
                    cert: c.cert,
                    key: c.key,
                });
                let store = EtcdStore::connect(opts).await.unwrap();
                store.snapshot().await.unwrap()
            });
            assert_eq!(snap.nodes.len(), 1);
            assert_eq!(snap.nodes[0].name, "n1");
            let owned: Vec<String> = snap
                .blocks
                .iter()
                .filter(|b| b.node == "n1")
                .map(|b| b.block.to_string())
                .collect();
            assert_eq!(owned.len(), 2, "{owned:?}");
            assert!(owned.contains(&v4));
        })
        .unwrap();
}

#[test]
fn weftd_with_an_untrusted_client_certificate_stops_and_says_why() {
    let ns = TestNs::new();
    ns.open()
        .run(|| {
            let pki = TestPki::generate().unwrap();
            let stranger = TestPki::generate().unwrap();
            let etcd = EtcdServer::start_tls(&pki).unwrap();
            let dir = TempDir::new("agent-tls");
            // The server's CA is right, but the client certificate comes from another CA.
            let mut agent = weftd(
                dir.path(),
                &etcd.endpoint(),
                &pki.ca,
                &stranger.client_cert,
                &stranger.client_key,
            );
            let start = Instant::now();
            let status = loop {
                if let Some(s) = agent.0.try_wait().unwrap() {
                    break s;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(15),
                    "weftd kept running with an untrusted certificate"
                );
                std::thread::sleep(Duration::from_millis(50));
            };
            assert!(!status.success());
            let err = agent.stderr();
            eprintln!("weftd said: {err}");
            let lower = err.to_lowercase();
            assert!(
                lower.contains("tls") || lower.contains("certificate"),
                "{err}"
            );
            assert!(!dir.path().join("net.d/10-weft.conflist").exists());
        })
        .unwrap();
}
