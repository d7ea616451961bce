//! `exec-guard run [--packages "A B …"] [--ours DIR]… -- COMMAND ARGS…`: runs COMMAND, records
//! every program it and its descendants execute, and fails when one of them comes from a
//! Debian package that the install list (with what it pulls in, and what every Debian system
//! has) does not provide, or from no package at all. The test script runs the test suite
//! under it, so a program installed by hand on a developer's machine is caught there, not
//! on a fresh one.
//!
//! Exit status: COMMAND's own when it failed; else 1 when the guard found a program the
//! set-up scripts do not install, or could not record; else 0.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use weft_testkit::execwatch::Watch;
use weft_testkit::installs::{Packages, Places, Verdict, report};

fn usage() -> ExitCode {
    eprintln!("usage: exec-guard run [--packages \"A B …\"] [--ours DIR]… -- COMMAND ARGS…");
    ExitCode::from(2)
}

fn home_dir(var: &str, default: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(default)))
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some("run") {
        return usage();
    }
    let mut list: Vec<String> = Vec::new();
    let mut places = Places {
        ours: vec![
            std::env::temp_dir(),
            PathBuf::from("/dev/shm"),
            PathBuf::from("/var/tmp"),
            // A process that re-executes itself through its own fd or /proc entry.
            PathBuf::from("/proc"),
            PathBuf::from("/dev/fd"),
        ],
        toolchain: ["CARGO_HOME", "RUSTUP_HOME"]
            .iter()
            .zip([".cargo", ".rustup"])
            .filter_map(|(v, d)| home_dir(v, d))
            .collect(),
    };
    let mut command: Vec<String> = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--packages" => match args.next() {
                Some(v) => list.extend(v.split_whitespace().map(str::to_owned)),
                None => return usage(),
            },
            "--ours" => match args.next() {
                Some(v) => places.ours.push(PathBuf::from(v)),
                None => return usage(),
            },
            "--" => {
                command.extend(args.by_ref());
                break;
            }
            _ => return usage(),
        }
    }
    let Some((program, rest)) = command.split_first() else {
        return usage();
    };

    let watch = match Watch::start("weft-exec-guard") {
        Ok(w) => w,
        Err(e) => {
            eprintln!("exec-guard: cannot record execs (root and tracefs needed): {e}");
            return ExitCode::from(1);
        }
    };
    let status = Command::new(program).args(rest).status();
    let recording = watch.finish();
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            eprintln!("exec-guard: cannot run {program}: {e}");
            return ExitCode::from(1);
        }
    };
    let code = |ok_code: u8| match status.code() {
        Some(0) => ExitCode::from(ok_code),
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::from(1),
    };
    let recording = match recording {
        Ok(r) => r,
        Err(e) => {
            eprintln!("exec-guard: recording failed: {e}");
            return code(1);
        }
    };
    let packages = match Packages::load() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("exec-guard: reading dpkg's database: {e}");
            return code(1);
        }
    };
    let (verdicts, problems) = report(&recording.programs, &places, &packages, &list);
    let from_packages: BTreeSet<&str> = verdicts
        .values()
        .filter_map(|v| match v {
            Verdict::Installed { package } => Some(package.as_str()),
            _ => None,
        })
        .collect();
    eprintln!(
        "exec-guard: {} distinct programs run; from Debian packages: {}",
        verdicts.len(),
        from_packages.into_iter().collect::<Vec<_>>().join(" ")
    );
    if recording.lost > 0 {
        eprintln!(
            "exec-guard: the trace lost {} events: the list above may be incomplete",
            recording.lost
        );
    }
    for p in &problems {
        eprintln!("exec-guard: {p}");
    }
    code(u8::from(!problems.is_empty() || recording.lost > 0))
}
