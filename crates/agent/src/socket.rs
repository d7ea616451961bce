//! The agent's local socket (`<run-dir>/weftd.sock`): one JSON request line in, one reply
//! line out (wire types in `weft_proto`, shared with the plugin). Requests are handed to the
//! control loop, which owns the node's state.
//!
//! Whoever can connect can make weftd lease blocks and re-program pods, so the socket is
//! root's alone: the run dir is made `0700` and the socket `0600`, set explicitly whatever
//! the umask. An existing run dir that only others may read (`0755`, as weftd and package
//! scripts used to create it) is tightened; one that others may *write*, or that another
//! user owns, is refused — someone else may already have planted a socket or file there,
//! and chmod-ing a shared directory (`/tmp`) would break its other users.
//!
//! A request line longer than [`MAX_REQUEST_LINE`] is answered with a refusal and the
//! connection closed; weftd keeps serving everyone else.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use weft_proto::{MAX_REQUEST_LINE, Reply, Request};

use crate::error::Error;
use crate::log;
use crate::metrics;

pub type Incoming = (Request, oneshot::Sender<Reply>);

/// The run dir's mode: root only (the socket, endpoint files, the policy plan).
pub const DIR_MODE: u32 = 0o700;
/// The socket's mode.
pub const SOCKET_MODE: u32 = 0o600;

/// How long a client has to send its request line.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Makes `dir` (the run dir, the socket's parent) exist with [`DIR_MODE`]: created so, or
/// tightened when others may only read it; refused when others may write it or it is not
/// ours. Called at start, before anything is written there, and again before binding.
pub fn secure_dir(dir: &Path) -> Result<(), Error> {
    let io = |source| Error::Socket {
        path: dir.to_path_buf(),
        source,
    };
    match std::fs::metadata(dir) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            match std::fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
                Ok(()) => {}
                // Made by someone else meanwhile: judged below like any existing one.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(e)),
            }
        }
        Err(e) => return Err(io(e)),
    }
    let md = std::fs::metadata(dir).map_err(io)?;
    let mode = md.mode() & 0o7777;
    let refuse = |reason: &'static str| Error::UnsafeRunDir {
        path: dir.to_path_buf(),
        mode,
        reason,
    };
    if !md.is_dir() {
        return Err(refuse("not a directory"));
    }
    if md.uid() != euid() {
        return Err(refuse("owned by another user"));
    }
    if mode & 0o022 != 0 {
        return Err(refuse("writable by other users"));
    }
    // Explicitly, not through the umask `create` was subject to.
    if mode != DIR_MODE {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE)).map_err(io)?;
        if mode & 0o077 != 0 {
            log::info(
                "run dir tightened to root only",
                &[
                    ("dir", dir.display().to_string().into()),
                    ("was", format!("{mode:o}").into()),
                ],
            );
        }
    }
    Ok(())
}

fn euid() -> u32 {
    // SAFETY: geteuid takes no arguments, touches no memory of ours and cannot fail.
    unsafe { libc::geteuid() }
}

/// Bind the socket (replacing a stale one from a previous run) and serve it until the
/// control loop goes away.
pub fn serve(path: &Path, to_loop: mpsc::Sender<Incoming>) -> Result<(), Error> {
    let err = |source| Error::Socket {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        secure_dir(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    // bind(2) applies the umask; the mode is set explicitly (until then only root can
    // reach the socket: its directory is root's alone).
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE)).map_err(err)?;
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
                let read = tokio::time::timeout(READ_TIMEOUT, read_request(read)).await;
                metrics::get().request(read.as_ref().ok().and_then(|r| r.as_ref().ok()));
                let reply = match read {
                    Ok(Ok(req)) => {
                        let (tx, rx) = oneshot::channel();
                        if to_loop.send((req, tx)).await.is_err() {
                            refuse("weftd is shutting down")
                        } else {
                            rx.await.unwrap_or_else(|_| refuse("request dropped"))
                        }
                    }
                    Ok(Err(bad)) => Reply::refused(bad.to_string()),
                    Err(_) => refuse("no request within 5 s"),
                };
                let mut out = serde_json::to_string(&reply).unwrap_or_else(|_| "{}".into());
                out.push('\n');
                let _ = write.write_all(out.as_bytes()).await;
                // Dropping both halves closes the connection, also after a refusal with
                // the rest of an over-long line still unread.
            });
        }
    });
    Ok(())
}

/// Why a request line is refused (the reply's `error`, for the client to log).
#[derive(Debug, thiserror::Error)]
enum BadRequest {
    #[error("read failed: {0}")]
    Read(#[source] std::io::Error),
    #[error("request line longer than {MAX_REQUEST_LINE} bytes; connection closed")]
    TooLong,
    #[error("malformed request: {0}")]
    Malformed(#[source] serde_json::Error),
}

/// One request line, at most [`MAX_REQUEST_LINE`] bytes (newline included).
async fn read_request(read: impl tokio::io::AsyncRead + Unpin) -> Result<Request, BadRequest> {
    let mut line = Vec::new();
    // One byte past the limit tells a line at the limit from a longer one.
    BufReader::new(read.take(MAX_REQUEST_LINE as u64 + 1))
        .read_until(b'\n', &mut line)
        .await
        .map_err(BadRequest::Read)?;
    if line.len() > MAX_REQUEST_LINE {
        return Err(BadRequest::TooLong);
    }
    serde_json::from_slice(line.trim_ascii()).map_err(BadRequest::Malformed)
}

pub fn refuse(why: &str) -> Reply {
    Reply::refused(why)
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    use std::path::PathBuf;

    use weft_proto::ask;

    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("weft-socket-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().mode() & 0o7777
    }

    /// Serves `sock` with a loop that answers every request `ok`.
    fn start(sock: &Path) -> Result<(), Error> {
        let (tx, mut rx) = mpsc::channel::<Incoming>(4);
        serve(sock, tx)?;
        tokio::spawn(async move {
            while let Some((_, reply)) = rx.recv().await {
                let _ = reply.send(Reply::done());
            }
        });
        Ok(())
    }

    #[tokio::test]
    async fn dir_and_socket_are_root_only_whatever_the_umask() {
        let base = scratch("modes");
        let sock = base.join("run/weftd.sock");
        // A umask that takes nothing away: the modes come from weftd, not from it. (The
        // umask is per process; the other tests here make only their own files.)
        let old = unsafe { libc::umask(0) };
        let served = start(&sock);
        unsafe { libc::umask(old) };
        served.unwrap();
        assert_eq!(mode(&base.join("run")), DIR_MODE);
        assert_eq!(mode(&sock), SOCKET_MODE);
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[tokio::test]
    async fn a_readable_run_dir_is_tightened_a_writable_one_refused() {
        let base = scratch("existing");
        let run = base.join("run");
        std::fs::create_dir(&run).unwrap();
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(run.join("node.json"), "{}").unwrap();
        start(&run.join("weftd.sock")).unwrap();
        assert_eq!(mode(&run), DIR_MODE);
        assert!(run.join("node.json").exists(), "nothing in it is touched");

        let shared = base.join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let err = start(&shared.join("weftd.sock")).unwrap_err();
        assert!(
            matches!(&err, Error::UnsafeRunDir { path, .. } if *path == shared),
            "{err}"
        );
        assert!(err.to_string().contains("writable by other users"), "{err}");
        assert_eq!(mode(&shared), 0o1777, "a refused dir is left as it was");
        assert!(!shared.join("weftd.sock").exists());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[tokio::test]
    async fn an_overlong_line_is_refused_and_the_next_request_served() {
        let base = scratch("limit");
        let sock = base.join("weftd.sock");
        start(&sock).unwrap();
        let path = sock.clone();
        let refused = tokio::task::spawn_blocking(move || {
            let mut s = UnixStream::connect(&path).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            // A status request padded past the limit, so only its length is wrong.
            let pad = " ".repeat(MAX_REQUEST_LINE);
            let line = format!("{{\"op\":\"status\"{pad}}}\n");
            // weftd may close before reading it all: a failed write is expected.
            let _ = s.write_all(line.as_bytes());
            let mut reply = String::new();
            BufReader::new(&s).read_line(&mut reply).unwrap();
            reply
        })
        .await
        .unwrap();
        let reply: Reply = serde_json::from_str(&refused).unwrap();
        assert!(!reply.ok, "{refused}");
        assert!(
            reply
                .error
                .as_deref()
                .is_some_and(|e| e.contains("longer than 65536 bytes")),
            "{refused}"
        );
        // A line exactly at the limit still goes through, and so does the next client.
        let path = sock.clone();
        tokio::task::spawn_blocking(move || {
            let pad = " ".repeat(MAX_REQUEST_LINE - r#"{"op":"status"}"#.len() - 1);
            let line = format!("{{\"op\":\"status\"{pad}}}\n");
            assert_eq!(line.len(), MAX_REQUEST_LINE);
            let mut s = UnixStream::connect(&path).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(line.as_bytes()).unwrap();
            let mut reply = String::new();
            BufReader::new(&s).read_line(&mut reply).unwrap();
            assert_eq!(reply, "{\"ok\":true}\n");
            ask(&path, &Request::Status, Duration::from_secs(5)).unwrap();
        })
        .await
        .unwrap();
        std::fs::remove_dir_all(&base).unwrap();
    }
}
