//! Which datastore the policy commands talk to, and running a datastore session: etcd by
//! endpoints, a lab's etcd or API server (reached from inside the lab's underlay namespace,
//! where they listen), the local store file, or a Kubernetes cluster (kubeconfig found as kubectl
//! finds it).

use std::path::PathBuf;

use clap::Args;
use weft_net::NetNs;
use weft_store::kube::{KubeOptions, KubeStore};
use weft_store::{AnyStore, DEFAULT_PREFIX, EtcdOptions, EtcdStore, LocalStore};

use super::PolicyError;
use crate::lab::names::{self, Names};
use crate::lab::state::{Datastore, State};
use crate::lab::{ETCD_ADDRESS, ETCD_PORT};

#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// etcd endpoints, comma-separated (`http://127.0.0.1:2379`).
    #[arg(long, global = true, value_delimiter = ',', value_name = "URL[,URL…]")]
    pub etcd_endpoints: Vec<String>,
    /// Key prefix in etcd.
    #[arg(long, global = true, default_value = DEFAULT_PREFIX)]
    pub etcd_prefix: String,
    /// Use this lab's etcd, and its pods and nodes as endpoints.
    #[arg(long, global = true, value_name = "NAME")]
    pub lab: Option<String>,
    /// The local (single-node) store file instead of etcd.
    #[arg(long, global = true, value_name = "FILE")]
    pub store_path: Option<PathBuf>,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// A Kubernetes cluster as kubectl finds it: `--kubeconfig`, else `$KUBECONFIG`, else
/// `~/.kube/config`, else the pod's ServiceAccount.
#[derive(Debug, Clone, Args)]
pub struct KubeArgs {
    /// Use the Kubernetes API (with the kubeconfig kubectl would use).
    #[arg(long, global = true)]
    pub kubernetes: bool,
    /// kubeconfig file (implies --kubernetes).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The namespace of weft's ConfigMap.
    #[arg(long, global = true, default_value = "weft-system", value_name = "NS")]
    pub kube_namespace: String,
}

impl Default for KubeArgs {
    /// Not chosen (another datastore is).
    fn default() -> KubeArgs {
        KubeArgs {
            kubernetes: false,
            kubeconfig: None,
            kube_namespace: "weft-system".into(),
        }
    }
}

impl KubeArgs {
    pub fn chosen(&self) -> bool {
        self.kubernetes || self.kubeconfig.is_some()
    }

    pub async fn connect(&self) -> Result<KubeStore, weft_store::StoreError> {
        KubeStore::connect(KubeOptions {
            kubeconfig: self.kubeconfig.clone(),
            namespace: self.kube_namespace.clone(),
            ..KubeOptions::default()
        })
        .await
    }
}

/// The lab, when `--lab` was given: its record.
pub struct Lab {
    pub state: State,
}

impl StoreArgs {
    pub fn lab(&self) -> Result<Option<Lab>, PolicyError> {
        let Some(lab) = &self.lab else {
            return Ok(None);
        };
        let names = Names::new(lab)?;
        let state = State::load_existing(&names)?;
        Ok(Some(Lab { state }))
    }

    /// Connects to the chosen store and runs `f` on it to completion. For a lab, the whole
    /// session (runtime, sockets) lives on this thread while it is inside the lab's
    /// underlay namespace: sockets stay in the namespace they were made in.
    pub fn session<T>(
        &self,
        f: impl AsyncFnOnce(AnyStore) -> Result<T, PolicyError>,
    ) -> Result<T, PolicyError> {
        let chosen = usize::from(!self.etcd_endpoints.is_empty())
            + usize::from(self.lab.is_some())
            + usize::from(self.store_path.is_some())
            + usize::from(self.kube.chosen());
        if chosen != 1 {
            return Err(PolicyError::Usage(
                "choose exactly one datastore: --etcd-endpoints, --lab, --store-path or \
                 --kubernetes/--kubeconfig"
                    .into(),
            ));
        }
        let run = || -> Result<T, PolicyError> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| PolicyError::Io {
                    what: "starting the async runtime".into(),
                    source,
                })?;
            rt.block_on(async {
                let store = self.connect().await?;
                f(store).await
            })
        };
        match &self.lab {
            Some(lab) => {
                let names = Names::new(lab)?;
                let ns = NetNs::open(&names::netns_path(&names.underlay())).map_err(|e| {
                    PolicyError::Usage(format!(
                        "lab {lab}: cannot open its underlay namespace (is the lab up?): {e}"
                    ))
                })?;
                ns.run(run).map_err(|e| {
                    PolicyError::Usage(format!("lab {lab}: entering its underlay namespace: {e}"))
                })?
            }
            None => run(),
        }
    }

    async fn connect(&self) -> Result<AnyStore, PolicyError> {
        if let Some(path) = &self.store_path {
            return Ok(AnyStore::Local(LocalStore::open(path)?));
        }
        if self.kube.chosen() {
            return Ok(AnyStore::Kube(self.kube.connect().await?));
        }
        // A lab on the Kubernetes API keeps its objects in its API server, reached (from
        // the lab's underlay namespace, where this runs) as the lab's admin.
        if let Some(lab) = &self.lab {
            let names = Names::new(lab)?;
            if State::load_existing(&names)?.options.datastore == Datastore::Kubernetes {
                let kube = KubeArgs {
                    kubeconfig: Some(names.kube_admin_kubeconfig()),
                    ..KubeArgs::default()
                };
                return Ok(AnyStore::Kube(kube.connect().await?));
            }
        }
        let endpoints = if self.lab.is_some() {
            vec![format!("http://{ETCD_ADDRESS}:{ETCD_PORT}")]
        } else {
            self.etcd_endpoints.clone()
        };
        let mut opts = EtcdOptions::new(endpoints);
        opts.prefix = self.etcd_prefix.clone();
        Ok(AnyStore::Etcd(EtcdStore::connect(opts).await?))
    }
}
