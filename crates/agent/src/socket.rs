//! The agent's local socket (`<run-dir>/weftd.sock`): one JSON request line in, one reply
//! line out (wire types in `weft_proto`, shared with the plugin). Requests are handed
//! to the control loop, which owns the node's state.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use weft_proto::{Reply, Request};

use crate::error::Error;
use crate::log;

pub type Incoming = (Request, oneshot::Sender<Reply>);

/// Bind the socket (replacing a stale one from a previous run) and serve it until the
/// control loop goes away.
pub fn serve(path: &Path, to_loop: mpsc::Sender<Incoming>) -> Result<(), Error> {
    let err = |source| Error::Socket {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    log::warn(
                        "local socket accept failed",
                        &[("error", e.to_string().into())],
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let to_loop = to_loop.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut line = String::new();
                let reply = match tokio::time::timeout(
                    Duration::from_secs(5),
                    BufReader::new(read).read_line(&mut line),
                )
                .await
                {
                    Ok(Ok(_)) => match serde_json::from_str::<Request>(line.trim()) {
                        Ok(req) => {
                            let (tx, rx) = oneshot::channel();
                            if to_loop.send((req, tx)).await.is_err() {
                                refuse("weftd is shutting down")
                            } else {
                                rx.await.unwrap_or_else(|_| refuse("request dropped"))
                            }
                        }
                        Err(e) => refuse(&format!("malformed request: {e}")),
                    },
                    Ok(Err(e)) => refuse(&format!("read failed: {e}")),
                    Err(_) => refuse("no request within 5 s"),
                };
                let mut out = serde_json::to_string(&reply).unwrap_or_else(|_| "{}".into());
                out.push('\n');
                let _ = write.write_all(out.as_bytes()).await;
            });
        }
    });
    Ok(())
}

pub fn refuse(why: &str) -> Reply {
    Reply::refused(why)
}
