//! The world in weft's own etcd, written through weft-store as agents and `weftctl apply`
//! write it: the cluster config, every peer's block keys and node record (the agent bench's
//! writer), Namespaces, NetworkPolicies and one PodLabels object per pod as policy objects,
//! and every remote pod's endpoint record as its node's weftd publishes it. The agent's own
//! pods are not written here: they are endpoint files, and weftd publishes them itself.
//!
//! Must not: time anything but the probe writes it is asked for, or write outside the run's
//! etcd (it only ever talks to the namespace's loopback).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::task::JoinSet;
use weft_net::NetNs;
use weft_store::{ClusterConfig, Datastore, EndpointRecord, ObjectKind, Revision};

use super::world::{Pod, Policy, World, namespace_object, pod_labels_object};
use crate::bench::agent::cluster::Writer;
use crate::bench::error::{BenchError, Result};

/// Writes in flight while loading (etcd batches concurrent commits).
const IN_FLIGHT: usize = 64;

pub struct EtcdWorld {
    writer: Writer,
}

/// One write of the load: a policy object, or an endpoint record.
enum Put {
    Object(ObjectKind, String, String, Value),
    Endpoint(EndpointRecord),
}

impl EtcdWorld {
    pub fn connect(ns: NetNs, endpoint: String, cfg: &ClusterConfig) -> Result<EtcdWorld> {
        Ok(EtcdWorld {
            writer: Writer::connect(ns, endpoint, cfg)?,
        })
    }

    /// Writes the whole world; returns how long it took and etcd's revision after it.
    pub fn load(&self, world: &World) -> Result<(Duration, Revision)> {
        let t = Instant::now();
        self.writer.load(&world.peers)?;
        let mut puts: Vec<Put> = Vec::new();
        for n in &world.namespaces {
            puts.push(Put::Object(
                ObjectKind::Namespace,
                String::new(),
                n.name.clone(),
                namespace_object(n),
            ));
        }
        for p in &world.pods {
            puts.push(Put::Object(
                ObjectKind::PodLabels,
                p.namespace.clone(),
                p.name.clone(),
                pod_labels_object(p),
            ));
            if p.peer.is_some() {
                puts.push(Put::Endpoint(endpoint(world, p)));
            }
        }
        for p in &world.policies {
            puts.push(Put::Object(
                ObjectKind::NetworkPolicy,
                p.namespace.clone(),
                p.name.clone(),
                p.object.clone(),
            ));
        }
        let (store, lease) = (self.writer.store().clone(), self.writer.lease());
        self.writer.block_on(async move {
            let mut tasks = JoinSet::new();
            let mut first: Option<BenchError> = None;
            for put in puts {
                while tasks.len() >= IN_FLIGHT {
                    note(&mut first, tasks.join_next().await);
                }
                let store = store.clone();
                tasks.spawn(async move {
                    match put {
                        Put::Object(kind, ns, name, value) => store
                            .put_object(kind, &ns, &name, &value)
                            .await
                            .map(|_| ())
                            .map_err(|e| (format!("{kind:?} {ns}/{name}"), e)),
                        Put::Endpoint(rec) => store
                            .put_endpoint(&rec, lease)
                            .await
                            .map_err(|e| (format!("endpoint {}/{}", rec.namespace, rec.name), e)),
                    }
                });
            }
            while let Some(done) = tasks.join_next().await {
                note(&mut first, Some(done));
            }
            first.map_or(Ok(()), Err)
        })??;
        let revision = self
            .writer
            .block_on(self.writer.store().snapshot())?
            .map_err(BenchError::store("reading etcd's revision"))?
            .revision;
        Ok((t.elapsed(), revision))
    }

    /// The half of a pod that routes nothing yet: its labels (the API's pod before the
    /// kubelet reports an address).
    pub fn pod_labels(&self, p: &Pod) -> Result<()> {
        let v = pod_labels_object(p);
        self.writer
            .block_on(self.writer.store().put_object(
                ObjectKind::PodLabels,
                &p.namespace,
                &p.name,
                &v,
            ))?
            .map(|_| ())
            .map_err(BenchError::store(format!("writing PodLabels {}", p.name)))
    }

    /// The write that makes a remote pod a peer: its endpoint record, as its node's weftd
    /// publishes it. Returns when etcd acknowledged it.
    pub fn pod_endpoint(&self, world: &World, p: &Pod) -> Result<()> {
        let rec = endpoint(world, p);
        self.writer
            .block_on(self.writer.store().put_endpoint(&rec, self.writer.lease()))?
            .map_err(BenchError::store(format!("writing endpoint {}", p.name)))
    }

    /// A NetworkPolicy object, as `weftctl apply` writes it.
    pub fn policy(&self, p: &Policy) -> Result<()> {
        self.writer
            .block_on(self.writer.store().put_object(
                ObjectKind::NetworkPolicy,
                &p.namespace,
                &p.name,
                &p.object,
            ))?
            .map(|_| ())
            .map_err(BenchError::store(format!(
                "writing NetworkPolicy {}",
                p.name
            )))
    }

    /// Renews the lease the peers and endpoints hang on.
    pub fn keep_alive(&self) -> Result<()> {
        self.writer.keep_alive()
    }
}

fn endpoint(world: &World, p: &Pod) -> EndpointRecord {
    EndpointRecord {
        node: p.node_name(world).to_owned(),
        namespace: p.namespace.clone(),
        name: p.name.clone(),
        container_id: format!("c-{}", p.name),
        ifname: "eth0".to_owned(),
        addresses: vec![IpAddr::V4(p.address)],
    }
}

type PutError = (String, weft_store::StoreError);

fn note(
    first: &mut Option<BenchError>,
    done: Option<std::result::Result<std::result::Result<(), PutError>, tokio::task::JoinError>>,
) {
    let err = match done {
        Some(Ok(Ok(()))) | None => return,
        Some(Ok(Err((what, source)))) => BenchError::Store {
            what: format!("writing {what}"),
            source,
        },
        Some(Err(_)) => BenchError::WorkerPanicked,
    };
    first.get_or_insert(err);
}
