//! weftctl hands `lab …` and `bench …` to weftctl-lab: the arguments (`--help` included)
//! arrive untouched and the exit status comes back. Needs the workspace built (weftctl next
//! to weftctl-lab); no root.

mod lab_support;

use lab_support::*;

#[test]
fn help_and_usage_errors_come_from_weftctl_lab() {
    let out = weftctl(&["lab", "--help"]);
    assert!(out.status.success(), "{}", text(&out));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Usage: weftctl lab"), "{help}");
    assert!(help.contains("policy-sync"), "{help}");

    let out = weftctl(&["bench", "--help"]);
    assert!(out.status.success(), "{}", text(&out));
    let help = String::from_utf8_lossy(&out.stdout);
    for command in ["cni", "agent", "dataplane", "policy", "cleanup"] {
        assert!(help.contains(command), "{command} missing:\n{help}");
    }

    // clap's usage error status (2), from weftctl-lab.
    let out = weftctl(&["bench", "cni", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_lab_error_keeps_its_message_and_status() {
    let name = unique_name();
    let out = weftctl(&["lab", "pods", "--name", &name]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!("weftctl: no lab named {name:?} (start it with `weftctl lab up --name {name} …`)")
    );
}
