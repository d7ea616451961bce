//! The exec guard itself, against the real kernel and this machine's dpkg database: a command
//! that executes a program the install list does not provide fails the guard, which names
//! the program and its Debian package; the same command with that package in the list
//! passes; a program from no package at all fails it too.

use std::path::PathBuf;
use std::process::{Command, Output};

use weft_testkit::{require_root, text};

/// `exec-guard run --packages LIST -- sh -c SCRIPT`.
fn guard(packages: &str, script: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_exec-guard"))
        .args(["run", "--packages", packages, "--", "sh", "-c", script])
        .output()
        .expect("run exec-guard")
}

/// The package that owns `ip` here, as dpkg has it (iproute2 on Debian).
const IP: &str = "/usr/sbin/ip";

#[test]
fn a_program_outside_the_install_list_fails_the_guard_by_name_and_package() {
    require_root!();
    // `sh` (dash) and `ip -V`; dash is Essential, iproute2 is not.
    let out = guard("", &format!("{IP} -V >/dev/null"));
    let err = text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("`ip` (/usr/sbin/ip) was run, from the Debian package `iproute2`"),
        "{err}"
    );
    assert!(
        !err.contains("`sh`"),
        "dash is on every Debian system: {err}"
    );

    // With iproute2 in the list, the same command passes, and the guard says what it saw.
    let out = guard("iproute2", &format!("{IP} -V >/dev/null"));
    let err = text(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("iproute2"), "{err}");
}

#[test]
fn a_program_from_no_package_fails_the_guard() {
    require_root!();
    // A copy of `true` where no package is, nor any of the places this guard (run with no
    // --ours) takes for the tests' own: what a program installed by hand looks like. Cargo's
    // scratch dir is one the test script's own guard, around this test, does take for ours.
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("wt-guard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let prog = dir.join("handmade");
    std::fs::copy("/usr/bin/true", &prog).unwrap();
    let out = guard("", &prog.display().to_string());
    let _ = std::fs::remove_dir_all(&dir);
    let err = text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("`handmade`") && err.contains("no Debian package provides it"),
        "{err}"
    );
}

#[test]
fn the_command_s_own_failure_is_the_guard_s_exit_status() {
    require_root!();
    let out = guard("", "exit 3");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
}
