//! The kernel side of the agent, on a thread of its own.
//!
//! Netlink calls block, and the backend keeps one socket bound to the netns the agent was
//! started in; so one plain thread owns the `weft_backend::Dataplane` and the masquerade
//! table, and the async control loop sends it commands and awaits the replies. Keeping it
//! off tokio's workers also means no worker ever changes namespace.

use std::sync::mpsc;
use std::thread;

use ipnet::IpNet;
use tokio::sync::oneshot;
use weft_backend::{Dataplane, Drift, Kind, Local, Path, Peer};

use crate::error::Error;
use crate::log;

/// The nftables table (`inet weftd`) holding the cluster-wide masquerade: pod traffic
/// leaving the cluster CIDRs. Distinct from the plugin's per-network `inet weft` table.
pub const MASQ_TABLE: &str = "weftd";

/// Where a command's result goes: the backend's own error, so the control loop can tell a
/// refused peer from a broken node.
type Answer<T, E = weft_backend::Error> = oneshot::Sender<Result<T, E>>;

enum Cmd {
    Upsert(Peer, Answer<Path>),
    Remove(String, Answer<()>),
    Resync(Vec<Peer>, Answer<Drift>),
    SetBlocks(Vec<IpNet>, Answer<()>),
    Masquerade(Vec<IpNet>, Answer<(), weft_nft::Error>),
}

/// The reply to a queued command.
pub struct Pending<T, E = weft_backend::Error>(oneshot::Receiver<Result<T, E>>);

impl<T, E: Into<Error>> Pending<T, E> {
    pub async fn wait(self) -> Result<T, Error> {
        self.0
            .await
            .map_err(|_| Error::DataplaneGone)?
            .map_err(Into::into)
    }
}

/// The handle the control loop holds. Dropping it stops the thread, leaving the kernel
/// state in place (a restarted agent adopts it).
pub struct DataplaneHandle {
    tx: mpsc::Sender<Cmd>,
    pub pod_mtu: u32,
    pub underlay_mtu: u32,
}

impl DataplaneHandle {
    /// Open (create or adopt) the dataplane on a new thread; fails if the backend cannot.
    pub fn start(kind: Kind, local: Local) -> Result<DataplaneHandle, Error> {
        let (tx, rx) = mpsc::channel::<Cmd>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(u32, u32), weft_backend::Error>>();
        thread::Builder::new()
            .name("dataplane".into())
            .spawn(move || {
                let mut dp = match Dataplane::open(kind, local) {
                    Ok(dp) => {
                        let _ = ready_tx.send(Ok((dp.pod_mtu(), dp.underlay_mtu())));
                        dp
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                serve(&mut dp, rx);
            })
            .map_err(|source| Error::Thread {
                what: "dataplane",
                source,
            })?;
        let (pod_mtu, underlay_mtu) = ready_rx.recv().map_err(|_| Error::DataplaneGone)??;
        Ok(DataplaneHandle {
            tx,
            pod_mtu,
            underlay_mtu,
        })
    }

    /// Queues a command; its reply comes through the returned [`Pending`].
    fn submit<T, E>(&self, make: impl FnOnce(Answer<T, E>) -> Cmd) -> Result<Pending<T, E>, Error> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).map_err(|_| Error::DataplaneGone)?;
        Ok(Pending(rx))
    }

    async fn call<T, E: Into<Error>>(
        &self,
        make: impl FnOnce(Answer<T, E>) -> Cmd,
    ) -> Result<T, Error> {
        self.submit(make)?.wait().await
    }

    /// Queues one peer's upsert without waiting for it. Queuing a whole batch before
    /// awaiting any lets the dataplane thread work through it back to back: one request at a
    /// time cost two cross-thread wakeups per peer (on a VM a wakeup on another CPU is an
    /// IPI), about a tenth of the time to program 5,000 peers.
    pub fn queue_upsert(&self, p: Peer) -> Result<Pending<Path>, Error> {
        self.submit(|tx| Cmd::Upsert(p, tx))
    }

    /// Queues one peer's removal without waiting for it (see [`Self::queue_upsert`]).
    pub fn queue_remove(&self, name: String) -> Result<Pending<()>, Error> {
        self.submit(|tx| Cmd::Remove(name, tx))
    }

    pub async fn resync(&self, peers: Vec<Peer>) -> Result<Drift, Error> {
        self.call(|tx| Cmd::Resync(peers, tx)).await
    }

    pub async fn set_blocks(&self, blocks: Vec<IpNet>) -> Result<(), Error> {
        self.call(|tx| Cmd::SetBlocks(blocks, tx)).await
    }

    pub async fn masquerade(&self, cidrs: Vec<IpNet>) -> Result<(), Error> {
        self.call(|tx| Cmd::Masquerade(cidrs, tx)).await
    }
}

fn serve(dp: &mut Dataplane, rx: mpsc::Receiver<Cmd>) {
    let masq = weft_nft::Masquerade::new(MASQ_TABLE);
    for cmd in rx {
        match cmd {
            Cmd::Upsert(p, tx) => {
                let _ = tx.send(dp.upsert_peer(&p));
            }
            Cmd::Remove(n, tx) => {
                let _ = tx.send(dp.remove_peer(&n));
            }
            Cmd::Resync(peers, tx) => {
                let _ = tx.send(dp.resync(&peers));
            }
            Cmd::SetBlocks(b, tx) => {
                let _ = tx.send(dp.set_local_blocks(&b));
            }
            Cmd::Masquerade(cidrs, tx) => {
                let _ = tx.send(masq.ensure(&cidrs));
            }
        }
    }
    log::info("dataplane thread stopped; kernel state left in place", &[]);
}
