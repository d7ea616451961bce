//! `weftctl install-cni`, the DaemonSet's init container: files arrive whole and executable,
//! a plugin that is running is replaced (where writing over it fails), and a failure leaves
//! no temporary file and no half-written plugin.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

use weft_testkit::{TempDir, text};

fn weftctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weftctl"))
        .arg("install-cni")
        .args(args)
        .output()
        .expect("run weftctl")
}

fn path_arg(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}

/// The names in `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).expect("stat").permissions().mode() & 0o7777
}

/// Kills the child when the test ends, failed or not.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn installs_whole_executable_files_into_a_new_dir() {
    let tmp = TempDir::new("install-cni");
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    // Big enough to take more than one write, with bytes that differ along the file.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(src.join("weft"), &big).unwrap();
    fs::write(src.join("weft-ipam"), b"ipam").unwrap();
    fs::set_permissions(src.join("weft-ipam"), fs::Permissions::from_mode(0o600)).unwrap();
    let dst = tmp.path().join("host/opt/cni/bin");

    let out = weftctl(&[
        "--from",
        path_arg(&src),
        "--to",
        path_arg(&dst),
        "weft",
        "weft-ipam",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(fs::read(dst.join("weft")).unwrap(), big);
    assert_eq!(fs::read(dst.join("weft-ipam")).unwrap(), b"ipam");
    assert_eq!(mode(&dst.join("weft")), 0o755);
    assert_eq!(
        mode(&dst.join("weft-ipam")),
        0o755,
        "the source's mode is not kept"
    );
    assert_eq!(
        entries(&dst),
        ["weft", "weft-ipam"],
        "no temporary file left"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("weft-ipam (4 bytes)"), "{stdout}");
}

#[test]
fn replaces_a_plugin_that_is_running() {
    let tmp = TempDir::new("install-cni-busy");
    let src = tmp.path().join("src");
    let dst = tmp.path().join("bin");
    fs::create_dir(&src).unwrap();
    fs::create_dir(&dst).unwrap();
    let old: PathBuf = dst.join("weft");
    fs::copy("/bin/sleep", &old).unwrap();
    // Another test thread forking while fs::copy still held `old` open for writing keeps a
    // copy of that descriptor until its child execs: the exec here then fails with ETXTBSY
    // for a moment. Retry, as the test is not about that race.
    let mut spawned = Command::new(&old).arg("60").spawn();
    for _ in 0..100 {
        match &spawned {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(std::time::Duration::from_millis(10));
                spawned = Command::new(&old).arg("60").spawn();
            }
            _ => break,
        }
    }
    let mut running = Running(spawned.expect("run the old plugin"));
    // Wait until the kernel has the file as the running program's text: the exec is done
    // once /proc/<pid>/exe names it.
    let exe = format!("/proc/{}/exe", running.0.id());
    for _ in 0..200 {
        if fs::read_link(&exe).is_ok_and(|p| p == old) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(fs::read_link(&exe).unwrap(), old);
    // What a plain copy would do, and why install-cni renames instead.
    let err = fs::write(&old, b"new").expect_err("writing over a running program");
    assert_eq!(err.raw_os_error(), Some(libc::ETXTBSY), "{err}");

    fs::copy("/bin/true", src.join("weft")).unwrap();
    let out = weftctl(&["--from", path_arg(&src), "--to", path_arg(&dst), "weft"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(fs::read(&old).unwrap(), fs::read("/bin/true").unwrap());
    // The new file is the one executed from now on; the old program runs on, untouched.
    let run = Command::new(&old).status().expect("run the new plugin");
    assert!(run.success());
    assert!(
        running.0.try_wait().unwrap().is_none(),
        "the old plugin kept running"
    );
    assert_eq!(entries(&dst), ["weft"]);
}

#[test]
fn a_missing_source_stops_the_install_and_leaves_no_temporary_file() {
    let tmp = TempDir::new("install-cni-missing");
    let src = tmp.path().join("src");
    let dst = tmp.path().join("bin");
    fs::create_dir(&src).unwrap();
    fs::create_dir(&dst).unwrap();
    fs::write(src.join("weft"), b"new weft").unwrap();
    fs::write(dst.join("weft-ipam"), b"old ipam").unwrap();

    let out = weftctl(&[
        "--from",
        path_arg(&src),
        "--to",
        path_arg(&dst),
        "weft",
        "weft-ipam",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("weftctl: opening ") && err.contains(&format!("{}", src.display())),
        "{err}"
    );
    // The names before the failure are installed; the failed one is as it was.
    assert_eq!(fs::read(dst.join("weft")).unwrap(), b"new weft");
    assert_eq!(fs::read(dst.join("weft-ipam")).unwrap(), b"old ipam");
    assert_eq!(entries(&dst), ["weft", "weft-ipam"]);
}

#[test]
fn a_name_with_a_directory_is_refused_before_anything_is_written() {
    let tmp = TempDir::new("install-cni-name");
    let src = tmp.path().join("src");
    let dst = tmp.path().join("bin");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("weft"), b"weft").unwrap();
    for bad in ["../weft", "..", ""] {
        let out = weftctl(&[
            "--from",
            path_arg(&src),
            "--to",
            path_arg(&dst),
            "weft",
            bad,
        ]);
        assert_eq!(out.status.code(), Some(1), "{bad:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("is not a file name"), "{bad:?}: {err}");
        assert!(!dst.exists(), "{bad:?}: the target dir was made");
    }
}
