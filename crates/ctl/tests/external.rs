//! `weftctl lab …` and `weftctl bench …` are run by weftctl-lab (weft-lab): weftctl lists
//! them in its help, and without weftctl-lab it says so, naming where it looked. That the
//! forwarded commands work is weft-lab's test (`crates/lab/tests/forward.rs`).

use std::path::PathBuf;
use std::process::Command;

fn weftctl_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_weftctl"))
}

#[test]
fn help_lists_lab_and_bench() {
    let out = Command::new(weftctl_bin()).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for command in ["lab", "bench", "status", "apply", "policy"] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{command} "))),
            "{command} missing:\n{help}"
        );
    }
}

#[test]
fn without_weftctl_lab_it_says_where_it_looked() {
    let dir = weft_testkit::temp_dir("weftctl-alone").unwrap();
    let copy = dir.join("weftctl");
    std::fs::copy(weftctl_bin(), &copy).unwrap();
    for command in ["lab", "bench"] {
        let out = Command::new(&copy)
            .args([command, "--help"])
            .env("PATH", &dir)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(
            err.starts_with(&format!(
                "weftctl: `weftctl {command}` is run by weftctl-lab"
            )),
            "{err}"
        );
        assert!(
            err.contains(&dir.join("weftctl-lab").display().to_string()),
            "{err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
