//! A throw-away single-member etcd on loopback ports ([`EtcdServer`]) and a throw-away PKI
//! made with `openssl` ([`TestPki`]). Both live in their own temporary directory, removed on
//! drop; the etcd process is killed on drop.
//!
//! etcd runs with a 10 ms heartbeat and a 100 ms election timeout so that it is ready in
//! well under a second (a single member elects itself after one election timeout). Its
//! data directory is on `/dev/shm` when available: etcd fsyncs every commit.
//!
//! Plain endpoints and paths only: weft-store's own tests use this harness, so it must not
//! depend on weft-store (a dev-dependency cycle). Callers build `EtcdOptions`/`TlsFiles`
//! from [`EtcdServer::endpoint`] and [`ClientTls`].

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use weft_kubeplane::openssl;

use crate::temp_dir;

const READY: &str = "ready to serve client requests";
const START_TIMEOUT: Duration = Duration::from_secs(30);

fn free_ports() -> io::Result<(u16, u16)> {
    // Both bound at once so they differ.
    let a = TcpListener::bind("127.0.0.1:0")?;
    let b = TcpListener::bind("127.0.0.1:0")?;
    Ok((a.local_addr()?.port(), b.local_addr()?.port()))
}

/// A single-member etcd for one test.
pub struct EtcdServer {
    root: PathBuf,
    data_dir: PathBuf,
    log: PathBuf,
    client_port: u16,
    peer_port: u16,
    tls: Option<TestPki>,
    child: Option<Child>,
}

impl EtcdServer {
    /// Starts a plain-HTTP etcd on free loopback ports and waits until it serves.
    pub fn start() -> io::Result<EtcdServer> {
        EtcdServer::start_inner(None)
    }

    /// Starts an etcd that requires client certificates signed by `pki`'s CA.
    pub fn start_tls(pki: &TestPki) -> io::Result<EtcdServer> {
        EtcdServer::start_inner(Some(pki.clone()))
    }

    fn start_inner(tls: Option<TestPki>) -> io::Result<EtcdServer> {
        let root = temp_dir("etcd")?;
        let mut server = EtcdServer {
            data_dir: root.join("data"),
            log: root.join("etcd.log"),
            root,
            client_port: 0,
            peer_port: 0,
            tls,
            child: None,
        };
        let mut last = io::Error::other("etcd did not start");
        // A port picked as free can be taken by a parallel test before etcd binds it.
        for _ in 0..5 {
            (server.client_port, server.peer_port) = free_ports()?;
            match server.spawn_and_wait() {
                Ok(()) => return Ok(server),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn spawn_and_wait(&mut self) -> io::Result<()> {
        let offset = std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let log = File::options().create(true).append(true).open(&self.log)?;
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client_url = format!("{scheme}://127.0.0.1:{}", self.client_port);
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new("etcd");
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCD_") {
                cmd.env_remove(k);
            }
        }
        cmd.arg("--name")
            .arg("t")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(format!("t={peer_url}"))
            .args(["--heartbeat-interval", "10", "--election-timeout", "100"]);
        if let Some(pki) = &self.tls {
            cmd.arg("--client-cert-auth")
                .arg("--trusted-ca-file")
                .arg(&pki.ca)
                .arg("--cert-file")
                .arg(&pki.server_cert)
                .arg("--key-file")
                .arg(&pki.server_key);
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd.spawn().map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("starting etcd (is etcd-server installed?): {e}"),
            )
        })?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.log_since(offset).contains(READY) {
                return Ok(());
            }
            let exited = match &mut self.child {
                Some(c) => c.try_wait()?.is_some(),
                None => true,
            };
            if exited || Instant::now() > deadline {
                self.kill();
                return Err(io::Error::other(format!(
                    "etcd on port {} did not become ready; its log:\n{}",
                    self.client_port,
                    self.log_since(offset)
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn log_since(&self, offset: u64) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log)
            && f.seek(SeekFrom::Start(offset)).is_ok()
        {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `http://127.0.0.1:<port>` (or https with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The PKI's client identity, when this server requires one.
    pub fn client_tls(&self) -> Option<ClientTls> {
        self.tls.as_ref().map(TestPki::client_files)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills etcd (SIGKILL, like a crash) and waits for it to exit. The data stays.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Starts etcd again on the same ports and data directory (stopping it first if it is
    /// running) and waits until it serves.
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return Ok(()),
                // The old process's ports can linger for a moment.
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The etcd log so far, for failure messages.
    pub fn log(&self) -> String {
        self.log_since(0)
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// What a client presents to a TLS etcd: the CA to trust, its certificate and key.
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A CA with one server certificate (for 127.0.0.1/localhost) and one client certificate,
/// made with the `openssl` command. Clones share the directory; it is removed when the
/// [`TestPki`] that generated it is dropped (clones do not remove it).
#[derive(Debug)]
pub struct TestPki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub ca_key: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    owner: bool,
}

impl Clone for TestPki {
    fn clone(&self) -> TestPki {
        TestPki {
            dir: self.dir.clone(),
            ca: self.ca.clone(),
            ca_key: self.ca_key.clone(),
            server_cert: self.server_cert.clone(),
            server_key: self.server_key.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
            owner: false,
        }
    }
}

impl TestPki {
    /// A fresh CA, server and client certificate (EC P-256, valid for 2 days).
    pub fn generate() -> io::Result<TestPki> {
        TestPki::generate_for(&[])
    }

    /// As [`TestPki::generate`], with the server certificate also valid for `ips` (a server
    /// listening inside a test's network namespace).
    pub fn generate_for(ips: &[std::net::IpAddr]) -> io::Result<TestPki> {
        let dir = temp_dir("pki")?;
        let pki = TestPki {
            ca: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
            dir,
            owner: true,
        };
        openssl(
            &pki.dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=weft-test-ca",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        )?;
        let mut sans = String::from("IP:127.0.0.1,DNS:localhost");
        for ip in ips {
            sans.push_str(&format!(",IP:{ip}"));
        }
        pki.issue(
            "server",
            &format!("subjectAltName={sans}\nextendedKeyUsage=serverAuth,clientAuth\n"),
        )?;
        pki.issue("client", "extendedKeyUsage=clientAuth\n")?;
        Ok(pki)
    }

    /// Issues `<name>.crt`/`<name>.key` signed by this CA with the given x509v3 extensions.
    fn issue(&self, name: &str, ext: &str) -> io::Result<()> {
        let ext_file = format!("{name}.ext");
        std::fs::write(
            self.dir.join(&ext_file),
            format!(
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n{ext}"
            ),
        )?;
        let (key, csr, crt) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
        );
        let subj = format!("/CN=weft-test-{name}");
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &subj,
            ],
        )?;
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &ext_file,
            ],
        )
    }

    /// CA, client certificate and key: weft-store's `TlsFiles`, field for field.
    pub fn client_files(&self) -> ClientTls {
        ClientTls {
            ca: self.ca.clone(),
            cert: self.client_cert.clone(),
            key: self.client_key.clone(),
        }
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        if self.owner {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
