//! Building the etcd client (endpoints, TLS, keepalive) and turning its errors into
//! [`StoreError`]s. Every request goes through [`Conn::call`], which bounds it by the
//! configured timeout: a store that cannot be reached must answer `Unavailable`, not hang.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use crate::LeaseId;
use crate::error::StoreError;

use super::{EtcdOptions, TlsFiles};

/// HTTP/2 pings on idle connections notice a dead peer that never closed the socket
/// (a partition, a frozen VM). etcd refuses pings more often than every 5 s by default
/// (`--grpc-keepalive-min-time`), so stay above that.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

pub(crate) struct Conn {
    client: Client,
    timeout: Duration,
    /// For messages: which etcd we failed to reach.
    endpoints: String,
    tls: bool,
}

impl Conn {
    pub async fn open(opts: &EtcdOptions) -> Result<Conn, StoreError> {
        if opts.endpoints.is_empty() {
            return Err(StoreError::Unavailable {
                op: "connect",
                detail: "no etcd endpoints given".into(),
            });
        }
        let mut copts = ConnectOptions::new()
            .with_connect_timeout(opts.timeout)
            .with_keep_alive(KEEPALIVE_INTERVAL, opts.timeout)
            .with_keep_alive_while_idle(true)
            // A member cut off from its leader answers no watch rather than a stale one.
            .with_require_leader(true);
        let mut endpoints = Vec::new();
        for e in &opts.endpoints {
            let e = e.trim();
            if opts.tls.is_some() && e.starts_with("http://") {
                return Err(StoreError::Tls(format!(
                    "endpoint {e} is plain http but TLS files were given; use https://"
                )));
            }
            endpoints.push(e.to_string());
        }
        if let Some(files) = &opts.tls {
            copts = copts.with_tls(load_tls(files)?);
        }
        let tls = opts.tls.is_some();
        let joined = endpoints.join(",");
        let client =
            match tokio::time::timeout(opts.timeout, Client::connect(endpoints, Some(copts))).await
            {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => return Err(classify("connect", &joined, tls, None, e)),
                Err(_) => {
                    return Err(StoreError::Unavailable {
                        op: "connect",
                        detail: format!(
                            "no answer from etcd at {joined} within {:?}",
                            opts.timeout
                        ),
                    });
                }
            };
        Ok(Conn {
            client,
            timeout: opts.timeout,
            endpoints: joined,
            tls,
        })
    }

    /// A handle for one request; clones share the underlying connection.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Runs one etcd request, bounded by the timeout. `lease` is the lease the request
    /// attaches keys to, so that "lease not found" can name it.
    pub async fn call<T>(
        &self,
        op: &'static str,
        lease: Option<LeaseId>,
        f: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(classify(op, &self.endpoints, self.tls, lease, e)),
            Err(_) => Err(self.timed_out(op)),
        }
    }

    pub fn timed_out(&self, op: &'static str) -> StoreError {
        StoreError::Unavailable {
            op,
            detail: format!(
                "no answer from etcd at {} within {:?}",
                self.endpoints, self.timeout
            ),
        }
    }
}

fn read(what: &str, path: &Path) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path)
        .map_err(|e| StoreError::Tls(format!("reading the {what} {}: {e}", path.display())))
}

fn load_tls(files: &TlsFiles) -> Result<TlsOptions, StoreError> {
    let ca = read("CA certificate", &files.ca)?;
    let cert = read("client certificate", &files.cert)?;
    let key = read("client key", &files.key)?;
    for (what, path, pem, marker) in [
        ("CA certificate", &files.ca, &ca, "CERTIFICATE"),
        ("client certificate", &files.cert, &cert, "CERTIFICATE"),
        ("client key", &files.key, &key, "PRIVATE KEY"),
    ] {
        // rustls would only say "no certificates found" much later, in the handshake.
        let text = String::from_utf8_lossy(pem);
        if !text.contains("-----BEGIN") || !text.contains(marker) {
            return Err(StoreError::Tls(format!(
                "the {what} {} is not a PEM file with a {marker}",
                path.display()
            )));
        }
    }
    Ok(TlsOptions::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(cert, key)))
}

/// The error and all its causes: tonic's top-level messages ("transport error") say
/// nothing on their own.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// What went wrong, without tonic's debug dump of the same thing: a gRPC status' message,
/// then each cause once.
fn describe(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            let mut d = s.message().to_string();
            let mut cur = std::error::Error::source(s);
            while let Some(c) = cur {
                let m = c.to_string();
                if !d.contains(&m) {
                    d = if d.is_empty() { m } else { format!("{d}: {m}") };
                }
                cur = c.source();
            }
            d
        }
        other => chain(other),
    }
}

/// Says which side refused, since rustls' words for it are terse.
fn tls_hint(detail: &str) -> &'static str {
    if detail.contains("fatal alert") {
        " (etcd refused our client certificate: is it signed by the CA etcd trusts, --trusted-ca-file?)"
    } else if detail.contains("invalid peer certificate") {
        " (etcd's server certificate does not verify against our CA file, or does not name this endpoint)"
    } else {
        ""
    }
}

fn looks_like_refusal(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    ["broken pipe", "connection reset", "connection closed"]
        .iter()
        .any(|w| d.contains(w))
}

fn looks_like_tls(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    [
        "certificate",
        "tls",
        "handshake",
        "alert",
        "invalid peer",
        "x509",
    ]
    .iter()
    .any(|w| d.contains(w))
}

pub(crate) fn classify(
    op: &'static str,
    endpoints: &str,
    tls: bool,
    lease: Option<LeaseId>,
    e: etcd_client::Error,
) -> StoreError {
    let detail = describe(&e);
    let lease_gone = match &e {
        etcd_client::Error::GRpcStatus(s) => s.message().contains("lease not found"),
        etcd_client::Error::LeaseKeepAliveError(m) => m.contains("lease not found"),
        _ => false,
    };
    if let (true, Some(id)) = (lease_gone, lease) {
        return StoreError::LeaseNotFound(id);
    }
    if tls && op == "connect" && looks_like_refusal(&detail) {
        // With TLS 1.3 the client finishes its side of the handshake before the server has
        // checked the client certificate, so etcd's refusal often arrives as a closed
        // connection rather than as an alert.
        return StoreError::Tls(format!(
            "{op} at {endpoints}: {detail} (etcd closed the connection after the TLS \
             handshake, which is how it refuses a client certificate: is it signed by the CA \
             etcd trusts, --trusted-ca-file?)"
        ));
    }
    if looks_like_tls(&detail) {
        return StoreError::Tls(format!(
            "{op} at {endpoints}: {detail}{}",
            tls_hint(&detail)
        ));
    }
    let hint = if tls || op != "connect" {
        ""
    } else {
        " (if this etcd only accepts TLS, give its CA and a client certificate and key)"
    };
    StoreError::Unavailable {
        op,
        detail: format!("etcd at {endpoints}: {detail}{hint}"),
    }
}

/// etcd answered "required revision has been compacted".
pub(crate) fn is_compacted(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable { detail, .. } if detail.contains("compacted"))
}
