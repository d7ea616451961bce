//! How weft runs a Kubernetes 1.20 control plane of its own: where the binaries are, the
//! PKI (made with `openssl`), the identities of the static token file, the kubeconfigs, and
//! the flags of kube-apiserver and kube-controller-manager.
//!
//! Three callers start control planes, each with its own process lifetime: the lab's outlive
//! `weftctl lab up` (pidfiles), the benchmarks' and the tests' die with the thread that
//! started them. What a control plane *is* lives here once, so that a flag a 1.20 server
//! needs (see ../shared/docs/kubernetes.md) is set in one place for all three.
//!
//! Owns: nothing at run time. It writes only the files it is asked to write, in the
//! directory it is given.
//!
//! Must not: spawn anything but `openssl`, or depend on any other weft crate (weft-testkit
//! uses it).

use std::io::{self, Read};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where scripts/kube-binaries.sh caches its builds, one directory per source version.
pub const CACHE: &str = "/var/cache/weft/kubernetes";

/// The Service range the API server is told about: documentation space (TEST-NET-2) that no
/// address weft's labs and tests use falls in. Only a kubelet lab's kube-proxy routes to it.
pub const SERVICE_RANGE: &str = "198.51.100.0/24";

/// The `kubernetes` Service's ClusterIP (the range's first address): in-cluster clients reach
/// the API server there, so a certificate for in-cluster use names it.
pub const API_SERVICE_IP: &str = "198.51.100.1";

/// Dual-stack is alpha in 1.20: without the gate the API server keeps only a Node's first
/// podCIDR, and the controller manager refuses two cluster CIDRs.
pub const DUAL_STACK_GATE: &str = "--feature-gates=IPv6DualStack=true";

/// `$WEFT_KUBE_BIN` when set, else the newest build in [`CACHE`] holding every one of
/// `binaries`. The error says where it looked (`in …`), for the caller's own message.
pub fn bin_dir(binaries: &[&str]) -> Result<PathBuf, String> {
    let complete = |d: &Path| binaries.iter().all(|b| d.join(b).is_file());
    if let Some(dir) = std::env::var_os("WEFT_KUBE_BIN").map(PathBuf::from) {
        return if complete(&dir) {
            Ok(dir)
        } else {
            Err(format!("in WEFT_KUBE_BIN={}", dir.display()))
        };
    }
    newest_cached(binaries)
        .ok_or_else(|| format!("in {CACHE}/*/bin/ (and WEFT_KUBE_BIN is not set)"))
}

/// The newest directory `<CACHE>/<version>/bin` holding every one of `binaries`.
pub fn newest_cached(binaries: &[&str]) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(CACHE)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .filter(|p| binaries.iter().all(|b| p.join(b).is_file()))
                .collect()
        })
        .unwrap_or_default();
    // Version directories sort by version as long as they share a major and minor: the
    // script builds one Debian source version, so that is all the cache ever holds.
    dirs.sort();
    dirs.pop()
}

/// Runs `openssl args…` in `dir`; a failure carries openssl's own words.
pub fn openssl(dir: &Path, args: &[&str]) -> io::Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("running openssl: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "`openssl {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// The files [`make_pki`] writes into its directory.
pub mod pki {
    pub const CA: &str = "ca.crt";
    pub const CA_KEY: &str = "ca.key";
    pub const SERVER_CERT: &str = "server.crt";
    pub const SERVER_KEY: &str = "server.key";
    /// The service-account token signing key pair.
    pub const SA_KEY: &str = "sa.key";
    pub const SA_PUB: &str = "sa.pub";
    /// The static token file (`--token-auth-file`).
    pub const TOKENS: &str = "tokens.csv";
}

/// What the API server's certificate is valid for, besides 127.0.0.1 and `localhost`.
#[derive(Debug, Clone, Default)]
pub struct PkiOptions {
    /// The CA's common name (tells one lab's CA from another's).
    pub ca_name: String,
    pub ips: Vec<IpAddr>,
    /// Also the in-cluster names: [`API_SERVICE_IP`] and `kubernetes.default.svc` and its
    /// shorter forms, for a client running in a pod.
    pub in_cluster: bool,
    pub days: u32,
}

/// Writes into `dir` a CA, the API server's certificate and key, and the service-account
/// key pair (file names in [`pki`]). Certificates are EC P-256; rustls wants a SAN, a v3
/// leaf that is no CA, and a CA with basicConstraints.
pub fn make_pki(dir: &Path, opts: &PkiOptions) -> io::Result<()> {
    let mut sans = vec!["IP:127.0.0.1".to_owned(), "DNS:localhost".to_owned()];
    sans.extend(opts.ips.iter().map(|ip| format!("IP:{ip}")));
    if opts.in_cluster {
        sans.push(format!("IP:{API_SERVICE_IP}"));
        sans.extend(
            ["kubernetes", "kubernetes.default", "kubernetes.default.svc"]
                .iter()
                .map(|n| format!("DNS:{n}")),
        );
    }
    std::fs::write(
        dir.join("server.ext"),
        format!(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\nsubjectAltName={}\n",
            sans.join(",")
        ),
    )?;
    let days = opts.days.max(1).to_string();
    let subject = format!("/CN={}", opts.ca_name);
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        pki::CA_KEY,
        "-out",
        pki::CA,
        "-days",
        &days,
        "-subj",
        &subject,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca)?;
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        pki::SERVER_KEY,
        "-out",
        "server.csr",
        "-subj",
        "/CN=kube-apiserver",
    ]);
    openssl(dir, &csr)?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            pki::CA,
            "-CAkey",
            pki::CA_KEY,
            "-CAcreateserial",
            "-out",
            pki::SERVER_CERT,
            "-days",
            &days,
            "-extfile",
            "server.ext",
        ],
    )?;
    openssl(dir, &["genrsa", "-out", pki::SA_KEY, "2048"])?;
    openssl(
        dir,
        &["rsa", "-in", pki::SA_KEY, "-pubout", "-out", pki::SA_PUB],
    )
}

/// An identity of the static token file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
}

impl Identity {
    /// `admin`, in `system:masters`.
    pub fn admin() -> Identity {
        Identity {
            user: "admin".to_owned(),
            groups: vec!["system:masters".to_owned()],
        }
    }

    /// A ServiceAccount as the API server authenticates its token: a static token for this
    /// user gets exactly that account's RBAC (how weftd runs with only its manifest's rules).
    pub fn service_account(namespace: &str, name: &str) -> Identity {
        Identity {
            user: format!("system:serviceaccount:{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".to_owned(),
                format!("system:serviceaccounts:{namespace}"),
            ],
        }
    }

    /// This identity's line of the token file.
    pub fn token_line(&self, token: &str) -> String {
        format!(
            "{token},{user},{user},\"{}\"\n",
            self.groups.join(","),
            user = self.user
        )
    }

    /// A file-name-safe form of the user name (`:` is not).
    pub fn file_stem(&self) -> String {
        self.user.replace(':', "_")
    }
}

/// A bearer token: 128 random bits, hex.
pub fn random_token() -> io::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// `https://<address>:<port>`.
pub fn url(address: IpAddr, port: u16) -> String {
    match address {
        IpAddr::V4(a) => format!("https://{a}:{port}"),
        IpAddr::V6(a) => format!("https://[{a}]:{port}"),
    }
}

/// A kubeconfig (kubectl's format) of one user with a bearer token.
pub fn kubeconfig(cluster: &str, url: &str, ca: &Path, user: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {cluster}\n  cluster:\n    \
         server: {url}\n    certificate-authority: {}\nusers:\n- name: {user}\n  user:\n    \
         token: {token}\ncontexts:\n- name: {cluster}\n  context:\n    cluster: {cluster}\n    \
         user: {user}\ncurrent-context: {cluster}\n",
        ca.display()
    )
}

/// How kube-apiserver runs.
#[derive(Debug, Clone)]
pub struct ApiServer<'a> {
    /// `--etcd-servers`.
    pub etcd: &'a str,
    /// Where [`make_pki`] wrote, and the token file is.
    pub pki: &'a Path,
    /// Where it may write its own self-signed material (unused with our certificate, but
    /// it refuses to start without a writable one).
    pub cert_dir: &'a Path,
    pub address: IpAddr,
    pub port: u16,
    /// `--service-cluster-ip-range`: [`SERVICE_RANGE`], and an IPv6 range for dual-stack.
    pub service_ranges: &'a str,
    pub dual_stack: bool,
}

impl ApiServer<'_> {
    pub fn args(&self) -> Vec<String> {
        let f = |name: &str| self.pki.join(name).display().to_string();
        let mut args = vec![
            format!("--etcd-servers={}", self.etcd),
            format!("--cert-dir={}", self.cert_dir.display()),
            format!("--tls-cert-file={}", f(pki::SERVER_CERT)),
            format!("--tls-private-key-file={}", f(pki::SERVER_KEY)),
            format!("--secure-port={}", self.port),
            format!("--bind-address={}", self.address),
            format!("--advertise-address={}", self.address),
            format!("--service-cluster-ip-range={}", self.service_ranges),
            "--authorization-mode=RBAC".to_owned(),
            format!("--token-auth-file={}", f(pki::TOKENS)),
            "--service-account-issuer=https://kubernetes.default.svc".to_owned(),
            format!("--service-account-key-file={}", f(pki::SA_PUB)),
            format!("--service-account-signing-key-file={}", f(pki::SA_KEY)),
            "--allow-privileged=true".to_owned(),
            "--insecure-port=0".to_owned(),
            // `kubectl exec/logs` reach a kubelet by its node's address: no name of a lab's
            // nodes resolves anywhere.
            "--kubelet-preferred-address-types=InternalIP".to_owned(),
            "--v=1".to_owned(),
        ];
        if self.dual_stack {
            args.push(DUAL_STACK_GATE.to_owned());
        }
        args
    }
}

/// Node CIDR allocation by kube-controller-manager (`ipam: kubernetes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCidrs {
    /// The cluster range and the mask of each node's share: one, or an IPv4 and an IPv6.
    pub v4: (String, u8),
    pub v6: Option<(String, u8)>,
}

/// How kube-controller-manager runs.
#[derive(Debug, Clone)]
pub struct ControllerManager<'a> {
    pub kubeconfig: &'a Path,
    pub pki: &'a Path,
    pub address: IpAddr,
    /// Its own (health) port.
    pub port: u16,
    pub service_ranges: &'a str,
    pub node_cidrs: Option<NodeCidrs>,
    /// Without kubelets no one posts a Node's status: the node lifecycle controller would
    /// taint every node unreachable and evict every pod five minutes later.
    pub without_node_lifecycle: bool,
}

impl ControllerManager<'_> {
    pub fn args(&self) -> Vec<String> {
        let f = |name: &str| self.pki.join(name).display().to_string();
        let mut args = vec![
            format!("--kubeconfig={}", self.kubeconfig.display()),
            format!("--service-account-private-key-file={}", f(pki::SA_KEY)),
            format!("--root-ca-file={}", f(pki::CA)),
            "--leader-elect=false".to_owned(),
            "--port=0".to_owned(),
            format!("--secure-port={}", self.port),
            format!("--bind-address={}", self.address),
            format!("--service-cluster-ip-range={}", self.service_ranges),
            "--v=1".to_owned(),
        ];
        if self.without_node_lifecycle {
            args.push("--controllers=*,-nodelifecycle".to_owned());
        }
        match &self.node_cidrs {
            None => {}
            Some(NodeCidrs { v4, v6: None }) => args.extend([
                "--allocate-node-cidrs=true".to_owned(),
                format!("--cluster-cidr={}", v4.0),
                format!("--node-cidr-mask-size={}", v4.1),
            ]),
            // Two families need the dual-stack gate, and a mask per family.
            Some(NodeCidrs { v4, v6: Some(v6) }) => args.extend([
                "--allocate-node-cidrs=true".to_owned(),
                DUAL_STACK_GATE.to_owned(),
                format!("--cluster-cidr={},{}", v4.0, v6.0),
                format!("--node-cidr-mask-size-ipv4={}", v4.1),
                format!("--node-cidr-mask-size-ipv6={}", v6.1),
            ]),
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_account_token_line_names_its_groups() {
        let sa = Identity::service_account("weft-system", "weft");
        assert_eq!(
            sa.token_line("t0k"),
            "t0k,system:serviceaccount:weft-system:weft,system:serviceaccount:weft-system:weft,\
             \"system:serviceaccounts,system:serviceaccounts:weft-system\"\n"
        );
        assert_eq!(sa.file_stem(), "system_serviceaccount_weft-system_weft");
    }

    #[test]
    fn dual_stack_allocation_sets_the_gate_and_both_masks() {
        let cm = ControllerManager {
            kubeconfig: Path::new("/k"),
            pki: Path::new("/p"),
            address: IpAddr::from([127, 0, 0, 1]),
            port: 10257,
            service_ranges: SERVICE_RANGE,
            node_cidrs: Some(NodeCidrs {
                v4: ("10.0.0.0/16".into(), 24),
                v6: Some(("fd00::/48".into(), 64)),
            }),
            without_node_lifecycle: false,
        };
        let args = cm.args();
        for want in [
            DUAL_STACK_GATE,
            "--cluster-cidr=10.0.0.0/16,fd00::/48",
            "--node-cidr-mask-size-ipv4=24",
            "--node-cidr-mask-size-ipv6=64",
        ] {
            assert!(args.iter().any(|a| a == want), "{want} not in {args:?}");
        }
        assert!(!args.iter().any(|a| a.starts_with("--node-cidr-mask-size=")));
    }

    #[test]
    fn the_pki_makes_a_certificate_for_the_asked_addresses() {
        let dir = std::env::temp_dir().join(format!("weft-kubeplane-pki-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let made = make_pki(
            &dir,
            &PkiOptions {
                ca_name: "weft-kubeplane-test-ca".into(),
                ips: vec![IpAddr::from([10, 99, 0, 1])],
                in_cluster: true,
                days: 1,
            },
        );
        let text = made.and_then(|()| {
            Command::new("openssl")
                .args(["x509", "-noout", "-text", "-in", pki::SERVER_CERT])
                .current_dir(&dir)
                .output()
        });
        let files: Vec<bool> = [pki::CA, pki::SA_KEY, pki::SA_PUB]
            .iter()
            .map(|f| dir.join(f).is_file())
            .collect();
        std::fs::remove_dir_all(&dir).unwrap();
        let text = String::from_utf8_lossy(&text.unwrap().stdout).into_owned();
        for want in [
            "IP Address:10.99.0.1",
            "IP Address:198.51.100.1",
            "DNS:kubernetes.default.svc",
        ] {
            assert!(
                text.contains(want),
                "{want} not in the certificate:\n{text}"
            );
        }
        assert_eq!(files, [true, true, true]);
    }
}
