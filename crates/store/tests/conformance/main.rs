//! One contract, three datastores: every test here runs against the local file store, a real
//! etcd and a real kube-apiserver (the project's 1.20 build), through `AnyStore`, the way
//! weftd uses them. What differs between them by design (leases on Kubernetes are the Node
//! objects' lives; PodLabels there are the Pods' labels) is tested in each store's own suite.

mod contract;

use std::any::Any;
use std::time::Duration;

use weft_store::kube::{KubeOptions, KubeStore};
use weft_store::{AnyStore, EtcdOptions, EtcdStore, LocalStore};
use weft_testkit::etcd::EtcdServer;
use weft_testkit::kube::KubeApi;

/// A datastore under test: two clients of it (two agents' connections), and a way to make a
/// node exist where the store needs one to (Kubernetes: a Node object).
pub struct Subject {
    pub name: &'static str,
    pub a: AnyStore,
    pub b: AnyStore,
    add_node: Box<dyn Fn(&str) + Send + Sync>,
    _keep: Box<dyn Any + Send + Sync>,
}

impl Subject {
    pub fn node_exists(&self, name: &str) {
        (self.add_node)(name)
    }

    pub async fn local() -> Subject {
        let dir = weft_testkit::TempDir::new("conformance");
        let s = LocalStore::open(&dir.path().join("store.json")).expect("local store");
        Subject {
            name: "local",
            a: AnyStore::Local(s.clone()),
            // One process holds the file; a second agent on the same node shares its store.
            b: AnyStore::Local(s),
            add_node: Box::new(|_| {}),
            _keep: Box::new(dir),
        }
    }

    pub async fn etcd() -> Subject {
        let srv = EtcdServer::start().expect("etcd");
        let opts = EtcdOptions {
            timeout: Duration::from_secs(2),
            ..EtcdOptions::new(vec![srv.endpoint()])
        };
        let a = EtcdStore::connect(opts.clone()).await.expect("etcd client");
        let b = EtcdStore::connect(opts).await.expect("etcd client");
        Subject {
            name: "etcd",
            a: AnyStore::Etcd(a),
            b: AnyStore::Etcd(b),
            add_node: Box::new(|_| {}),
            _keep: Box::new(srv),
        }
    }

    pub async fn kube() -> Subject {
        let api = tokio::task::block_in_place(|| {
            let api = KubeApi::start(Default::default()).expect("kube-apiserver");
            api.apply_manifest(&manifest(), &["Namespace", "CustomResourceDefinition"]);
            api
        });
        let opts = KubeOptions {
            kubeconfig: Some(api.admin_kubeconfig()),
            request_timeout: Duration::from_secs(5),
            ..KubeOptions::default()
        };
        let a = KubeStore::connect(opts.clone()).await.expect("kube client");
        let b = KubeStore::connect(opts).await.expect("kube client");
        let api = std::sync::Arc::new(api);
        let for_nodes = api.clone();
        Subject {
            name: "kubernetes",
            a: AnyStore::Kube(a),
            b: AnyStore::Kube(b),
            add_node: Box::new(move |name| {
                for_nodes.apply(&format!(
                    "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n"
                ))
            }),
            _keep: Box::new(api),
        }
    }
}

/// What the project ships: weft's namespace and its CRD come from here.
fn manifest() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/weft.yaml")
}

/// `contract::$name` once per datastore.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod local { $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { crate::contract::$name(crate::Subject::local().await).await } )* }
        mod etcd { $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { crate::contract::$name(crate::Subject::etcd().await).await } )* }
        mod kubernetes { $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { crate::contract::$name(crate::Subject::kube().await).await } )* }
    };
}

conformance!(
    the_config_is_written_once,
    concurrent_claims_never_share_a_block,
    adopt_and_release_respect_the_owner,
    the_watch_reports_nodes_and_blocks_in_order,
    policy_objects_round_trip_and_are_watched,
    endpoints_round_trip_and_are_watched,
    a_policy_view_is_one_consistent_state,
);
