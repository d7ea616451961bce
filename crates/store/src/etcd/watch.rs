//! The watch task: one etcd watch over the whole prefix, decoded into [`WatchEvent`]s.
//!
//! When the watch breaks (etcd restarted, connection lost, history compacted) the task
//! re-establishes a watch starting *now* and only then sends [`WatchEvent::Resync`]: so the
//! receiver's next snapshot is at or after the new watch's start, and no change falls between
//! the two. It retries with capped exponential backoff for as long as the store exists and
//! the receiver listens.

use std::sync::{Arc, Weak};
use std::time::Duration;

use etcd_client::{Event, EventType, WatchOptions, WatchStream};
use tokio::sync::mpsc;

use crate::Revision;
use crate::error::StoreError;
use crate::keys::{KeyKind, Keys};
use crate::model::WatchEvent;
use crate::objects::{ObjectEvent, StoredObject};

use super::{Inner, block_owner, parse_endpoint, parse_node};

/// Events buffered for a slow receiver before the task waits for it.
const BUFFER: usize = 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

enum Opened {
    Stream(Box<WatchStream>),
    /// The start revision is no longer in etcd's history.
    Compacted,
}

/// What one watch delivers: which keys, how they decode, and the resync marker.
pub(super) trait Feed: Send + Sized + 'static {
    fn prefix(keys: &Keys) -> String;
    fn decode(keys: &Keys, ev: &Event) -> Option<Self>;
    fn resync() -> Self;
}

impl Feed for WatchEvent {
    fn prefix(keys: &Keys) -> String {
        keys.root()
    }
    fn decode(keys: &Keys, ev: &Event) -> Option<Self> {
        decode(keys, ev)
    }
    fn resync() -> Self {
        WatchEvent::Resync
    }
}

impl Feed for ObjectEvent {
    fn prefix(keys: &Keys) -> String {
        keys.objects_root()
    }
    fn decode(keys: &Keys, ev: &Event) -> Option<Self> {
        decode_object(keys, ev)
    }
    fn resync() -> Self {
        ObjectEvent::Resync
    }
}

pub(super) async fn start<E: Feed>(
    inner: &Arc<Inner>,
    from: Revision,
) -> Result<mpsc::Receiver<E>, StoreError> {
    let (tx, rx) = mpsc::channel(BUFFER);
    let first = match open::<E>(inner, Some(from.saturating_add(1))).await? {
        Opened::Stream(s) => Some(*s),
        // The receiver missed history it can never get: start over with a Resync.
        Opened::Compacted => None,
    };
    let task = Task::<E> {
        inner: Arc::downgrade(inner),
        keys: inner.keys.clone(),
        shutdown: inner.shutdown.subscribe(),
        tx,
    };
    tokio::spawn(task.run(first));
    Ok(rx)
}

/// Opens a watch on the whole prefix from `start` (inclusive), or from now, and waits for
/// etcd to confirm it, all within the request timeout.
async fn open<E: Feed>(inner: &Inner, start: Option<Revision>) -> Result<Opened, StoreError> {
    let conn = &inner.conn;
    let mut c = conn.client();
    let mut opts = WatchOptions::new().with_prefix();
    if let Some(rev) = start {
        opts = opts.with_start_revision(rev);
    }
    let root = E::prefix(&inner.keys);
    let fut = async move {
        let mut stream = c.watch(root, Some(opts)).await?;
        let first = stream.message().await?;
        Ok((stream, first))
    };
    let (stream, first) = conn.call("watch", None, fut).await?;
    match first {
        Some(r) if r.canceled() || r.compact_revision() > 0 => {
            if r.compact_revision() > 0 {
                Ok(Opened::Compacted)
            } else {
                Err(StoreError::Unavailable {
                    op: "watch",
                    detail: format!("etcd canceled the watch: {}", r.cancel_reason()),
                })
            }
        }
        // The "created" answer carries no events.
        Some(_) => Ok(Opened::Stream(Box::new(stream))),
        None => Err(StoreError::Unavailable {
            op: "watch",
            detail: "etcd closed the watch stream at once".into(),
        }),
    }
}

enum Stop {
    /// The store was dropped or the receiver went away: end the task.
    Done,
    /// The watch broke: reconnect and resync.
    Broken,
}

struct Task<E> {
    inner: Weak<Inner>,
    keys: Keys,
    shutdown: tokio::sync::watch::Receiver<()>,
    tx: mpsc::Sender<E>,
}

impl<E: Feed> Task<E> {
    async fn run(mut self, first: Option<WatchStream>) {
        let mut stream = first;
        let mut backoff = BACKOFF_MIN;
        loop {
            if let Some(s) = stream.take()
                && let Stop::Done = self.pump(s).await
            {
                return;
            }
            let Some(inner) = self.inner.upgrade() else {
                return;
            };
            let opened = open::<E>(&inner, None).await;
            drop(inner);
            match opened {
                Ok(Opened::Stream(s)) => {
                    if self.tx.send(E::resync()).await.is_err() {
                        return;
                    }
                    stream = Some(*s);
                    backoff = BACKOFF_MIN;
                }
                Ok(Opened::Compacted) | Err(_) => {
                    if let Stop::Done = self.sleep(backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    async fn sleep(&mut self, d: Duration) -> Stop {
        tokio::select! {
            _ = self.shutdown.changed() => Stop::Done,
            _ = self.tx.closed() => Stop::Done,
            _ = tokio::time::sleep(d) => Stop::Broken,
        }
    }

    async fn pump(&mut self, mut stream: WatchStream) -> Stop {
        loop {
            let msg = tokio::select! {
                _ = self.shutdown.changed() => return Stop::Done,
                _ = self.tx.closed() => return Stop::Done,
                msg = stream.message() => msg,
            };
            let resp = match msg {
                Ok(Some(r)) => r,
                Ok(None) | Err(_) => return Stop::Broken,
            };
            if resp.canceled() || resp.compact_revision() > 0 {
                return Stop::Broken;
            }
            for ev in resp.events() {
                if let Some(we) = E::decode(&self.keys, ev)
                    && self.tx.send(we).await.is_err()
                {
                    return Stop::Done;
                }
            }
        }
    }
}

fn decode(keys: &Keys, ev: &Event) -> Option<WatchEvent> {
    let kv = ev.kv()?;
    let put = matches!(ev.event_type(), EventType::Put);
    match keys.classify(kv.key()) {
        KeyKind::Node(name) if put => Some(match parse_node(&name, kv.value()) {
            Some(rec) => WatchEvent::NodePut(rec),
            // Unreadable records are absent in snapshots too.
            None => WatchEvent::NodeDeleted(name),
        }),
        KeyKind::Node(name) => Some(WatchEvent::NodeDeleted(name)),
        KeyKind::Block(b) if put => Some(WatchEvent::BlockPut(block_owner(b, kv))),
        KeyKind::Block(b) => Some(WatchEvent::BlockDeleted(b)),
        KeyKind::Config | KeyKind::Object(..) | KeyKind::Endpoint(..) | KeyKind::Other => None,
    }
}

fn decode_object(keys: &Keys, ev: &Event) -> Option<ObjectEvent> {
    let kv = ev.kv()?;
    let (kind, namespace, name) = match keys.classify(kv.key()) {
        KeyKind::Object(kind, namespace, name) => (kind, namespace, name),
        KeyKind::Endpoint(node, namespace, name) => {
            let put = matches!(ev.event_type(), EventType::Put);
            return Some(
                match put.then(|| parse_endpoint(keys, kv.key(), kv.value())) {
                    Some(Some(rec)) => ObjectEvent::EndpointPut(rec),
                    // Unreadable records are absent in listings too.
                    _ => ObjectEvent::EndpointDeleted {
                        node,
                        namespace,
                        name,
                    },
                },
            );
        }
        _ => return None,
    };
    let value = matches!(ev.event_type(), EventType::Put)
        .then(|| serde_json::from_slice(kv.value()).ok())
        .flatten();
    Some(match value {
        Some(value) => ObjectEvent::Put(StoredObject {
            kind,
            namespace,
            name,
            value,
        }),
        // Unreadable values are reported as absent, as in listings they are errors.
        None => ObjectEvent::Deleted {
            kind,
            namespace,
            name,
        },
    })
}
