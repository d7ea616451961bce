//! scripts/image.sh: the archive is a valid OCI image layout whose every digest is its
//! blob's, it is the same byte for byte when built twice, its binaries are static and run,
//! its `nft` runs with nothing but the image's own files, and containerd — a throw-away
//! one with its root, state and socket in a temp dir — imports and unpacks it under the
//! name the DaemonSet uses, `localhost/weft:<version>`.
//!
//! The script builds the static binaries (scripts/build.sh, in the Cargo profile
//! WEFT_BUILD_PROFILE names, else release: a few minutes the first time, about a second
//! once built); with WEFT_RELEASE_DIR set it takes them from there.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weft_testkit::{TempDir, output_with_stdin, text};

const BINARIES: [&str; 4] = ["weftd", "weftctl", "weft", "weft-ipam"];

fn image_ref() -> String {
    format!("localhost/weft:{}", env!("CARGO_PKG_VERSION"))
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// scripts/image.sh as a person runs it. Cargo gives this test the environment of the
/// package under test (CARGO_MANIFEST_DIR, CARGO_PKG_*, its LD_LIBRARY_PATH…); the release
/// build inside the script would inherit it, and build scripts that watch such a variable
/// (ring's watches CARGO_MANIFEST_DIR) would rebuild the whole release, and again at the
/// next build from a shell. What the caller configured (CARGO_TARGET_DIR, CARGO_HOME,
/// WEFT_RELEASE_DIR) stays.
fn image_sh(output: &Path) -> Command {
    const SET_BY_CARGO: [&str; 4] = [
        "CARGO_PKG_",
        "CARGO_MANIFEST_",
        "CARGO_BIN_EXE_",
        "CARGO_CRATE_",
    ];
    let mut cmd = Command::new(repo().join("scripts/image.sh"));
    cmd.arg(output);
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if SET_BY_CARGO.iter().any(|p| name.starts_with(p))
            || [
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "OUT_DIR",
                "LD_LIBRARY_PATH",
            ]
            .contains(&name)
        {
            cmd.env_remove(name);
        }
    }
    cmd
}

#[track_caller]
fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", text(&out));
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sha256(path: &Path) -> String {
    let out = run(Command::new("sha256sum").arg(path));
    stdout(&out)
        .split_whitespace()
        .next()
        .expect("sha256sum prints a digest")
        .to_owned()
}

fn read_json(path: &Path) -> Value {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The blob a descriptor names, after checking that the file's sha256 and size are the
/// descriptor's.
#[track_caller]
fn blob(layout: &Path, desc: &Value) -> PathBuf {
    let digest = desc["digest"].as_str().expect("digest");
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    let path = layout.join("blobs/sha256").join(hex);
    assert_eq!(sha256(&path), hex, "{} is not its digest", path.display());
    let size = fs::metadata(&path).expect("blob").len();
    assert_eq!(desc["size"].as_u64(), Some(size), "size of {digest}");
    path
}

/// Whether an ELF file asks for a program interpreter (PT_INTERP): a dynamically linked
/// program, which an image without a C library cannot start.
fn has_interpreter(path: &Path) -> bool {
    let elf = fs::read(path).expect("read the binary");
    assert_eq!(&elf[..4], b"\x7fELF", "{} is not ELF", path.display());
    assert_eq!(elf[4], 2, "not a 64-bit ELF");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[32..40].try_into().expect("8 bytes")) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(elf[at..at + 4].try_into().expect("4 bytes")) == 3
    })
}

fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// A containerd of the test's own: root, state, socket and the opt plugin's dir under a
/// temp dir, no CRI. Killed, with the image mount undone, when dropped.
struct Containerd {
    dir: TempDir,
    child: Child,
    mounted: Option<PathBuf>,
}

impl Containerd {
    fn start() -> Containerd {
        let dir = TempDir::new("wt-containerd");
        let d = dir.path().display();
        let config = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             # An image store is all the test needs: no CRI (it would look for CNI).\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{d}/containerd.sock\"\n\
             [ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n\
             # Its default is /opt/containerd.\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{d}/opt\"\n"
        );
        fs::write(dir.path().join("config.toml"), config).expect("write the config");
        let log = fs::File::create(dir.path().join("containerd.log")).expect("log file");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting containerd (Debian's containerd, scripts/lib/deps.sh): {e}")
            });
        let mut c = Containerd {
            dir,
            child,
            mounted: None,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !c.ctr(&["version"]).status.success() {
            let exited = c.child.try_wait().expect("containerd's status").is_some();
            assert!(
                !exited && Instant::now() < deadline,
                "containerd did not come up:\n{}",
                fs::read_to_string(c.dir.path().join("containerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    /// `ctr` on this containerd, in the namespace the CRI plugin (and so kubelet) uses.
    fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(self.dir.path().join("containerd.sock"))
            .args(["--namespace", "k8s.io"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run ctr")
    }

    #[track_caller]
    fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(out.status.success(), "ctr {args:?}: {}", text(&out));
        stdout(&out)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(m) = self.mounted.take() {
            let target = m.display().to_string();
            if !self
                .ctr(&["images", "unmount", "--rm", &target])
                .status
                .success()
            {
                // containerd is not answering: the mount must go before the temp dir does.
                let _ = Command::new("umount").arg(&m).status();
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn image_sh_writes_an_oci_archive_containerd_imports() {
    let tmp = TempDir::new("image");
    let archive = tmp.path().join("weft.oci.tar");
    let started = Instant::now();
    let out = run(&mut image_sh(&archive));
    eprintln!("scripts/image.sh took {:?}", started.elapsed());
    assert_eq!(stdout(&out).trim(), archive.display().to_string());

    // Reproducible: a second build of the same binaries is the same file.
    let again = tmp.path().join("again.oci.tar");
    run(&mut image_sh(&again));
    assert!(
        fs::read(&archive).expect("archive") == fs::read(&again).expect("second archive"),
        "two builds of the same binaries differ"
    );
    fs::remove_file(&again).expect("remove the second archive");

    // The layout: oci-layout, index.json → manifest → config and layer, every blob named
    // by its digest.
    let layout = tmp.path().join("layout");
    fs::create_dir(&layout).expect("mkdir");
    run(Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&layout));
    assert_eq!(
        read_json(&layout.join("oci-layout")),
        json!({"imageLayoutVersion": "1.0.0"})
    );
    let index = read_json(&layout.join("index.json"));
    assert_eq!(index["schemaVersion"], 2);
    let manifests = index["manifests"].as_array().expect("manifests");
    assert_eq!(manifests.len(), 1, "{index}");
    let entry = &manifests[0];
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        image_ref().as_str()
    );
    assert_eq!(
        entry["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        entry["platform"],
        json!({"architecture": oci_arch(), "os": "linux"})
    );
    let manifest = read_json(&blob(&layout, entry));
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let config = read_json(&blob(&layout, &manifest["config"]));
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "{manifest}");
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let layer_gz = blob(&layout, &layers[0]);
    assert_eq!(config["architecture"], oci_arch());
    assert_eq!(config["os"], "linux");
    assert_eq!(
        config["config"]["Entrypoint"],
        json!(["/usr/local/bin/weftd"])
    );
    // The diff_id is the digest of the uncompressed layer: what containerd checks when it
    // unpacks.
    let layer_tar = tmp.path().join("layer.tar");
    let gunzipped = run(Command::new("gzip").arg("-dc").arg(&layer_gz));
    fs::write(&layer_tar, &gunzipped.stdout).expect("write the layer");
    assert_eq!(config["rootfs"]["type"], "layers");
    assert_eq!(
        config["rootfs"]["diff_ids"],
        json!([format!("sha256:{}", sha256(&layer_tar))])
    );

    // The layer: the four binaries, root's and executable, static; nothing but files and
    // directories (no device, no link a runtime would have to resolve).
    let listing = stdout(&run(Command::new("tar")
        .args(["--numeric-owner", "-tvf"])
        .arg(&layer_tar)));
    for line in listing.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields.get(1), Some(&"0/0"), "not root's: {line}");
        assert!(
            line.starts_with('-') || line.starts_with('d'),
            "neither a file nor a directory: {line}"
        );
    }
    let rootfs = tmp.path().join("rootfs");
    fs::create_dir(&rootfs).expect("mkdir");
    run(Command::new("tar")
        .arg("-xf")
        .arg(&layer_tar)
        .arg("-C")
        .arg(&rootfs));
    for name in BINARIES {
        let path = rootfs.join("usr/local/bin").join(name);
        let mode = fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{name} is not in the layer: {e}\n{listing}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755, "{name}");
        assert!(!has_interpreter(&path), "{name} is dynamically linked");
    }
    for name in ["weftd", "weftctl"] {
        let version = stdout(&run(
            Command::new(rootfs.join("usr/local/bin").join(name)).arg("--version")
        ));
        assert_eq!(
            version.trim(),
            format!("{name} {}", env!("CARGO_PKG_VERSION"))
        );
    }
    // weftd runs `nft -f` for a policy table's first build: the image's nft must run with
    // the image's files alone. `-c` checks the script with the kernel and commits nothing.
    let mut nft = Command::new("chroot");
    nft.arg(&rootfs).args(["/usr/sbin/nft", "-c", "-f", "-"]);
    let checked = output_with_stdin(
        nft,
        "table inet wt_image {\n\
         set pods { type ipv4_addr; flags interval; elements = { 10.244.0.0/16 } }\n\
         map ports { type ipv4_addr . inet_service : verdict; }\n\
         chain wt_forward {\n\
         type filter hook forward priority 0; policy accept;\n\
         ct state established,related accept\n\
         ip saddr @pods tcp dport 80 counter drop\n\
         meta l4proto { tcp, udp, sctp } ip daddr . th dport vmap @ports\n\
         }\n}\n",
    );
    assert!(checked.status.success(), "{}", text(&checked));

    // A node's import: the name comes from the index, unpacking checks the diff_id, and the
    // unpacked image holds the very binaries of the layer.
    let mut containerd = Containerd::start();
    let archive_arg = archive.display().to_string();
    containerd.ctr_ok(&["images", "import", &archive_arg]);
    let names = containerd.ctr_ok(&["images", "ls", "-q"]);
    assert_eq!(
        names.lines().collect::<Vec<_>>(),
        [image_ref().as_str()],
        "{names}"
    );
    let check = containerd.ctr_ok(&["images", "check"]);
    let row = check
        .lines()
        .find(|l| l.starts_with(&image_ref()))
        .unwrap_or_else(|| panic!("{check}"));
    assert!(
        row.contains("complete") && row.trim_end().ends_with("true"),
        "{check}"
    );
    let mnt = containerd.dir.path().join("mnt");
    fs::create_dir(&mnt).expect("mkdir");
    let mnt_arg = mnt.display().to_string();
    containerd.ctr_ok(&["images", "mount", &image_ref(), &mnt_arg]);
    containerd.mounted = Some(mnt.clone());
    for name in BINARIES {
        let bin = Path::new("usr/local/bin").join(name);
        assert!(
            fs::read(mnt.join(&bin)).expect("unpacked binary")
                == fs::read(rootfs.join(&bin)).expect("layer binary"),
            "{name} differs once unpacked"
        );
    }
    containerd.ctr_ok(&["images", "unmount", "--rm", &mnt_arg]);
    containerd.mounted = None;
}
