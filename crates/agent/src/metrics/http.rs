//! The HTTP side: a deliberately tiny HTTP/1.1 server on a tokio `TcpListener`, for the
//! three GET endpoints and nothing else (no keep-alive, no bodies, no chunking), so it
//! needs no HTTP library: one request per connection, answered with `Connection: close`.
//!
//! Bounded in every direction, because the port may be reachable by more than its scraper:
//! the request line and headers at most [`MAX_HEAD`] bytes (431 past it), sent within
//! [`READ_TIMEOUT`] (408), at most [`MAX_CONNECTIONS`] served at once (the rest wait in the
//! listen backlog). A bad request gets its status and the connection closed; the server
//! keeps serving.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::Telemetry;
use crate::error::Error;
use crate::log;

/// The request line and headers, CRLFs included.
pub const MAX_HEAD: usize = 8 * 1024;
/// How long a client has to send its request line and headers.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a reply may take to leave.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// After the reply, how long what the client still sends is read and dropped: closing a
/// socket with unread input resets the connection, and the reset can destroy the reply
/// (a 431 to a client still sending its headers) before the client reads it.
const LINGER: Duration = Duration::from_secs(1);

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PLAIN: &str = "text/plain; charset=utf-8";

/// Bind `addr` and serve it for as long as the runtime runs. Returns the bound address
/// (port 0 picks a free one).
pub fn serve(addr: SocketAddr, t: &'static Telemetry) -> Result<SocketAddr, Error> {
    let err = |source| Error::Metrics { addr, source };
    let std_listener = std::net::TcpListener::bind(addr).map_err(err)?;
    std_listener.set_nonblocking(true).map_err(err)?;
    let listener = TcpListener::from_std(std_listener).map_err(err)?;
    let local = listener.local_addr().map_err(err)?;
    t.set_serving(true);
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            // Never closed: the semaphore lives as long as this loop.
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    log::warn(
                        "metrics listener accept failed",
                        &[("error", e.to_string().into())],
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            tokio::spawn(async move {
                connection(stream, t).await;
                drop(slot);
            });
        }
    });
    Ok(local)
}

async fn connection(mut stream: TcpStream, t: &Telemetry) {
    let reply = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(req)) => route(&req, t).await,
        // Nobody left to answer.
        Ok(Err(BadRequest::Closed)) => return,
        Ok(Err(bad)) => Reply::plain(bad.status(), format!("{bad}\n")),
        Err(_) => Reply::plain(
            408,
            format!("no complete request within {}s\n", READ_TIMEOUT.as_secs()),
        ),
    };
    let bytes = reply.to_bytes();
    if tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&bytes))
        .await
        .is_ok_and(|w| w.is_ok())
        && stream.shutdown().await.is_ok()
    {
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(LINGER, async {
            while let Ok(n) = stream.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }
}

/// A request this server can answer: its method and path (query string dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Head {
    method: String,
    path: String,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum BadRequest {
    #[error("request line and headers longer than {MAX_HEAD} bytes")]
    TooLarge,
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// The client went away (or failed) before the end of its headers.
    #[error("connection closed before the end of the headers")]
    Closed,
}

impl BadRequest {
    fn status(&self) -> u16 {
        match self {
            BadRequest::TooLarge => 431,
            BadRequest::Malformed(_) | BadRequest::Closed => 400,
        }
    }
}

/// Reads up to the blank line that ends the headers, at most [`MAX_HEAD`] bytes. Whatever
/// follows (a body nobody asked for) is left unread.
async fn read_head(r: &mut (impl AsyncRead + Unpin)) -> Result<Head, BadRequest> {
    let mut buf = vec![0u8; MAX_HEAD];
    let mut len = 0;
    loop {
        if len == MAX_HEAD {
            return Err(BadRequest::TooLarge);
        }
        let n = r
            .read(&mut buf[len..])
            .await
            .map_err(|_| BadRequest::Closed)?;
        if n == 0 {
            return Err(BadRequest::Closed);
        }
        // The end may straddle two reads.
        let from = len.saturating_sub(3);
        len += n;
        if let Some(end) = head_end(&buf[from..len]) {
            return parse_head(&buf[..from + end]);
        }
    }
}

/// Where the blank line ending the headers starts: CRLF CRLF, or bare LFs (RFC 9112 §2.2
/// lets a server accept a lone LF as a line end; `nc` users send them).
fn head_end(buf: &[u8]) -> Option<usize> {
    (0..buf.len()).find(|&i| buf[i..].starts_with(b"\n\n") || buf[i..].starts_with(b"\n\r\n"))
}

fn parse_head(head: &[u8]) -> Result<Head, BadRequest> {
    let text = std::str::from_utf8(head).map_err(|_| BadRequest::Malformed("not UTF-8"))?;
    let line = text
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BadRequest::Malformed(
            "request line is not METHOD TARGET VERSION",
        ));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(BadRequest::Malformed("method"));
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(BadRequest::Malformed("only HTTP/1.0 and HTTP/1.1"));
    }
    if !target.starts_with('/') {
        return Err(BadRequest::Malformed("target must be a path"));
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    Ok(Head {
        method: method.to_string(),
        path: path.to_string(),
    })
}

async fn route(req: &Head, t: &Telemetry) -> Reply {
    if !matches!(req.path.as_str(), "/metrics" | "/healthz" | "/readyz") {
        return Reply::plain(404, format!("no such path: {}\n", req.path));
    }
    if req.method != "GET" {
        return Reply {
            allow_get: true,
            ..Reply::plain(
                405,
                format!("{} is not served here; only GET\n", req.method),
            )
        };
    }
    match req.path.as_str() {
        "/metrics" => match t.render().await {
            Ok(text) => Reply {
                content_type: OPENMETRICS,
                ..Reply::plain(200, text)
            },
            Err(e) => Reply::plain(500, format!("encoding the metrics failed: {e}\n")),
        },
        "/healthz" => match t.liveness() {
            Ok(()) => Reply::plain(200, "ok\n".into()),
            Err(why) => Reply::plain(500, format!("{why}\n")),
        },
        _ => {
            let unmet = t.readiness();
            if unmet.is_empty() {
                Reply::plain(200, "ok\n".into())
            } else {
                let body: String = unmet.iter().map(|u| format!("{u}\n")).collect();
                Reply::plain(503, body)
            }
        }
    }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    content_type: &'static str,
    /// `Allow: GET`, which a 405 must carry.
    allow_get: bool,
    body: String,
}

impl Reply {
    fn plain(status: u16, body: String) -> Reply {
        Reply {
            status,
            content_type: PLAIN,
            allow_get: false,
            body,
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "Internal Server Error",
        };
        let allow = if self.allow_get { "Allow: GET\r\n" } else { "" };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}\
             Cache-Control: no-store\r\nConnection: close\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        out.extend_from_slice(self.body.as_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    fn head(s: &str) -> Result<Head, BadRequest> {
        let end = head_end(s.as_bytes()).expect("a complete head");
        parse_head(&s.as_bytes()[..end])
    }

    #[test]
    fn request_lines_are_parsed_strictly() {
        assert_eq!(
            head("GET /metrics?name=x HTTP/1.1\r\nHost: a\r\n\r\n"),
            Ok(Head {
                method: "GET".into(),
                path: "/metrics".into()
            })
        );
        assert_eq!(head("GET /readyz HTTP/1.0\n\n").unwrap().path, "/readyz");
        for (bad, why) in [
            ("GET /metrics\r\n\r\n", "request line"),
            ("GET  /metrics HTTP/1.1\r\n\r\n", "request line"),
            ("GET /metrics HTTP/2\r\n\r\n", "only HTTP/1.0"),
            ("GET http://x/metrics HTTP/1.1\r\n\r\n", "path"),
            ("G/T /metrics HTTP/1.1\r\n\r\n", "method"),
        ] {
            let err = head(bad).unwrap_err();
            assert!(err.to_string().contains(why), "{bad:?}: {err}");
            assert_eq!(err.status(), 400);
        }
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
    }

    /// One raw exchange with the server: the status line, and the whole reply.
    fn exchange(addr: SocketAddr, request: &[u8]) -> (String, String) {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // The server may answer (and stop reading) before the request is all sent.
        let _ = s.write_all(request);
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        let status = reply.lines().next().unwrap_or_default().to_string();
        (status, reply)
    }

    #[tokio::test]
    async fn bad_requests_get_their_status_and_the_server_keeps_serving() {
        let t: &'static Telemetry = Box::leak(Box::default());
        let addr = serve("127.0.0.1:0".parse().unwrap(), t).unwrap();
        tokio::task::spawn_blocking(move || {
            let get =
                |path: &str| exchange(addr, format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes());
            let (status, reply) = get("/healthz");
            assert_eq!(status, "HTTP/1.1 200 OK", "{reply}");
            assert!(reply.contains("Connection: close\r\n"), "{reply}");
            assert!(reply.ends_with("\r\n\r\nok\n"), "{reply}");

            let (status, reply) = exchange(
                addr,
                b"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
            );
            assert_eq!(status, "HTTP/1.1 405 Method Not Allowed", "{reply}");
            assert!(reply.contains("Allow: GET\r\n"), "{reply}");
            assert_eq!(get("/nope").0, "HTTP/1.1 404 Not Found");
            let (status, _) = exchange(addr, b"BREW /metrics HTCPCP/1.0\r\n\r\n");
            assert_eq!(status, "HTTP/1.1 400 Bad Request");

            // Exactly at the limit is read; one byte more is refused.
            let at_limit = |extra: usize| {
                let start = "GET /healthz HTTP/1.1\r\nX-Pad: ";
                let pad = "a".repeat(MAX_HEAD - start.len() - 4 + extra);
                format!("{start}{pad}\r\n\r\n")
            };
            assert_eq!(at_limit(0).len(), MAX_HEAD);
            assert_eq!(exchange(addr, at_limit(0).as_bytes()).0, "HTTP/1.1 200 OK");
            let (status, reply) = exchange(addr, at_limit(1).as_bytes());
            assert_eq!(
                status, "HTTP/1.1 431 Request Header Fields Too Large",
                "{reply}"
            );
            // Far more than the limit, still being sent when the 431 leaves.
            let huge = format!(
                "GET /healthz HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
                "a".repeat(256 * 1024)
            );
            let (status, _) = exchange(addr, huge.as_bytes());
            assert_eq!(status, "HTTP/1.1 431 Request Header Fields Too Large");

            // A fresh node: not ready, and says why.
            let (status, reply) = get("/readyz");
            assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
            assert!(
                reply.ends_with(
                    "not ready: the datastore has not answered since start\n\
                 not ready: no block held\n\
                 not ready: conflist not written\n\
                 not ready: policy not synced (no complete view committed to the kernel yet, \
                 or its last commit was refused)\n"
                ),
                "{reply}"
            );

            let (status, reply) = get("/metrics");
            assert_eq!(status, "HTTP/1.1 200 OK", "{reply}");
            assert!(
                reply.contains(&format!("Content-Type: {OPENMETRICS}\r\n")),
                "{reply}"
            );
            assert!(reply.ends_with("# EOF\n"), "{reply}");
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_silent_client_gets_408_and_others_are_served_meanwhile() {
        let t: &'static Telemetry = Box::leak(Box::default());
        let addr = serve("127.0.0.1:0".parse().unwrap(), t).unwrap();
        tokio::task::spawn_blocking(move || {
            let mut idle = std::net::TcpStream::connect(addr).unwrap();
            idle.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
            let started = std::time::Instant::now();
            assert_eq!(
                exchange(addr, b"GET /healthz HTTP/1.1\r\n\r\n").0,
                "HTTP/1.1 200 OK"
            );
            assert!(
                started.elapsed() < READ_TIMEOUT,
                "served while the other waits"
            );
            idle.set_read_timeout(Some(READ_TIMEOUT * 2)).unwrap();
            let mut reply = String::new();
            idle.read_to_string(&mut reply).unwrap();
            assert!(
                reply.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
                "{reply}"
            );
        })
        .await
        .unwrap();
    }
}
