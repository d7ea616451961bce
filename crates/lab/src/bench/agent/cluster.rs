//! The simulated cluster in etcd, written through weft-store exactly as real agents write
//! it: the cluster config, then per synthetic peer its block keys (compare-and-swap) and its
//! node record, all on one lease that this run keeps alive.
//!
//! etcd listens on the loopback of the agent's namespace, so every request runs with the
//! calling thread inside that namespace: the async runtime is single-threaded and only ever
//! driven from [`Writer::block_on`], which enters the namespace first. A socket keeps the
//! namespace it was made in, and tonic's reconnects happen inside `block_on` too.

use std::future::Future;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tokio::runtime::Runtime;
use tokio::task::JoinSet;
use weft_backend::Peer;
use weft_net::NetNs;
use weft_store::{
    ClusterConfig, Datastore, EtcdOptions, EtcdStore, LeaseId, NodeRecord, StoreError,
};

use crate::bench::error::{BenchError, Result};

/// Requests in flight while loading the peers (etcd batches concurrent commits).
const IN_FLIGHT: usize = 64;
/// The peers' lease. Long, so a slow phase never lets it lapse; renewed between phases.
const LEASE_TTL: Duration = Duration::from_secs(300);

/// A connection to the run's etcd, and the lease the synthetic peers hang on.
pub struct Writer {
    rt: Runtime,
    ns: NetNs,
    store: EtcdStore,
    lease: LeaseId,
}

impl Writer {
    /// Connects to etcd at `endpoint` from inside `ns`, stores `cfg` and takes a lease.
    pub fn connect(ns: NetNs, endpoint: String, cfg: &ClusterConfig) -> Result<Writer> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(BenchError::io("starting the async runtime"))?;
        let opts = EtcdOptions::new(vec![endpoint.clone()]);
        let store = run_in(&ns, &rt, EtcdStore::connect(opts))?.map_err(BenchError::store(
            format!("connecting to etcd at {endpoint}"),
        ))?;
        run_in(&ns, &rt, store.init_config(cfg))?
            .map_err(BenchError::store("storing the cluster config"))?;
        let lease = run_in(&ns, &rt, store.grant_lease(LEASE_TTL))?
            .map_err(BenchError::store("granting the peers' lease"))?;
        Ok(Writer {
            rt,
            ns,
            store,
            lease,
        })
    }

    /// Runs `f` to completion with this thread inside the agent's namespace.
    pub fn block_on<F: Future>(&self, f: F) -> Result<F::Output> {
        run_in(&self.ns, &self.rt, f)
    }

    /// Writes every peer's blocks and record, [`IN_FLIGHT`] peers at a time; returns how
    /// long it took.
    pub fn load(&self, peers: &[Peer]) -> Result<Duration> {
        let t = Instant::now();
        let (store, lease) = (self.store.clone(), self.lease);
        let peers = peers.to_vec();
        self.block_on(async move {
            let mut tasks = JoinSet::new();
            let mut first_error = None;
            for p in peers {
                while tasks.len() >= IN_FLIGHT {
                    note(&mut first_error, tasks.join_next().await);
                }
                let store = store.clone();
                tasks.spawn(async move {
                    adopt_blocks(&store, &p, lease).await?;
                    store
                        .put_node(&record(&p), lease)
                        .await
                        .map_err(|e| (p.name, e))
                });
            }
            while let Some(done) = tasks.join_next().await {
                note(&mut first_error, Some(done));
            }
            first_error.map_or(Ok(()), Err)
        })??;
        Ok(t.elapsed())
    }

    /// Writes `peer`'s block keys: the half of a join that programs nothing yet (weftd, like
    /// every agent, claims its blocks before it publishes its record).
    pub fn claim(&self, peer: &Peer) -> Result<()> {
        let (store, lease) = (self.store.clone(), self.lease);
        let p = peer.clone();
        self.block_on(async move { adopt_blocks(&store, &p, lease).await })?
            .map_err(to_error)
    }

    /// Writes `peer`'s node record, the write that completes a join; returns when etcd
    /// acknowledged it.
    pub fn publish(&self, peer: &Peer) -> Result<()> {
        let rec = record(peer);
        self.block_on(self.store.put_node(&rec, self.lease))?
            .map_err(BenchError::store(format!(
                "writing node record {}",
                peer.name
            )))
    }

    /// The store, for writes beyond the peers' (objects, endpoints).
    pub fn store(&self) -> &EtcdStore {
        &self.store
    }

    /// The lease the peers (and whatever else this run writes) hang on.
    pub fn lease(&self) -> LeaseId {
        self.lease
    }

    /// Renews the peers' lease.
    pub fn keep_alive(&self) -> Result<()> {
        self.block_on(self.store.keep_alive(self.lease))?
            .map(|_| ())
            .map_err(BenchError::store("renewing the peers' lease"))
    }
}

fn run_in<F: Future>(ns: &NetNs, rt: &Runtime, f: F) -> Result<F::Output> {
    ns.run(|| rt.block_on(f))
        .map_err(BenchError::net("entering the agent's namespace"))
}

type PeerError = (String, StoreError);

async fn adopt_blocks(
    store: &EtcdStore,
    p: &Peer,
    lease: LeaseId,
) -> std::result::Result<(), PeerError> {
    for b in &p.blocks {
        store
            .adopt_block(&p.name, *b, lease)
            .await
            .map_err(|e| (p.name.clone(), e))?;
    }
    Ok(())
}

fn note(
    first: &mut Option<BenchError>,
    done: Option<std::result::Result<std::result::Result<(), PeerError>, tokio::task::JoinError>>,
) {
    let err = match done {
        Some(Ok(Ok(()))) | None => return,
        Some(Ok(Err(e))) => to_error(e),
        Some(Err(_)) => BenchError::WorkerPanicked,
    };
    first.get_or_insert(err);
}

fn to_error((name, e): PeerError) -> BenchError {
    BenchError::Store {
        what: format!("writing synthetic peer {name}"),
        source: e,
    }
}

/// The node record a real agent would publish for this peer.
pub fn record(p: &Peer) -> NodeRecord {
    NodeRecord {
        name: p.name.clone(),
        underlay_v4: Some(p.underlay_v4),
        underlay_v6: p.underlay_v6,
        vtep_mac: weft_net::format_mac(p.vtep_mac),
        mtu: 1500,
        blocks: p.blocks.iter().map(IpNet::trunc).collect(),
    }
}
