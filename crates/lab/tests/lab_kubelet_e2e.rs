//! Kubernetes' own conformance tests of pod networking, run against weft: `e2e.test` of the
//! same 1.20 source as the lab's binaries, focused on `[sig-network] Networking Granular
//! Checks: Pods` (intra-pod http and udp: every pod reaches a netserver pod on every node,
//! the same node's and the other's; node-pod http and udp: a hostNetwork pod reaches them
//! all), against a two-node kubelet lab. Its pods run agnhost, imported on every node from
//! an archive under the name e2e.test asks for (no registry). The SCTP variants of the same
//! group are left out: they are [Disruptive] and [Feature:SCTPConnectivity] (node-pod sctp
//! skips itself in 1.20). Then `lab down` leaves nothing.
//!
//! Needs the Kubernetes binaries and image archives (see lab_kubelet.rs) and the e2e files
//! (WEFT_KUBE_E2E, else scripts/kube-e2e.sh: a build of about 15 minutes the first time).

mod lab_support;

use std::path::Path;
use std::process::Command;

use lab_support::kube::{kube_e2e, lab_images};
use lab_support::*;

const FOCUS: &str = r"\[sig-network\] Networking Granular Checks: Pods";
const SKIP: &str = r"\[Feature:SCTPConnectivity\]|\[Disruptive\]";
/// What the focus selects in 1.20.2 once SCTP is skipped.
const EXPECTED: [&str; 4] = [
    "should function for intra-pod communication: http",
    "should function for intra-pod communication: udp",
    "should function for node-pod communication: http",
    "should function for node-pod communication: udp",
];
/// A bound for a hung suite: the run, lab up excluded, took 84 s here (each spec ~20 s).
const E2E_TIMEOUT_SECS: u32 = 900;

/// Ginkgo's closing line, "SUCCESS! -- 4 Passed | 0 Failed | 0 Pending | 5663 Skipped":
/// (passed, failed, pending, skipped).
fn summary(out: &str) -> Option<(u32, u32, u32, u32)> {
    let line = out.lines().rev().find(|l| l.contains(" Passed | "))?;
    let count = |word: &str| -> Option<u32> {
        let before = line.split(&format!(" {word}")).next()?;
        before
            .rsplit([' ', '|'])
            .find(|s| !s.is_empty())?
            .parse()
            .ok()
    };
    Some((
        count("Passed")?,
        count("Failed")?,
        count("Pending")?,
        count("Skipped")?,
    ))
}

/// The names of the specs that ran in the JUnit report of `dir` (the others are marked
/// skipped), each with whether it failed.
fn ran(dir: &Path) -> Vec<(String, bool)> {
    let mut specs = Vec::new();
    for entry in std::fs::read_dir(dir).expect("report dir").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("junit") && name.ends_with(".xml")) {
            continue;
        }
        let xml = std::fs::read_to_string(entry.path()).expect("junit report");
        for case in xml.split("<testcase ").skip(1) {
            let body = case.split("</testcase>").next().unwrap_or(case);
            if body.contains("<skipped") {
                continue;
            }
            let name = body
                .split("name=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .unwrap_or_default()
                .to_owned();
            specs.push((name, body.contains("<failure")));
        }
    }
    specs
}

#[test]
fn kubernetes_networking_granular_checks_pass_on_weft() {
    require_cluster_binaries();
    let e2e = kube_e2e();
    let kubectl = e2e.join("../bin/kubectl");
    // The lab imports every archive of the images directory: the required ones, linked
    // from where scripts/lab-images.sh wrote them, and agnhost.
    let images = TempDir::new("labe2e-images");
    let built = lab_images();
    for file in ["weft.oci.tar", "pause.oci.tar", "probe.oci.tar"] {
        std::os::unix::fs::symlink(built.join(file), images.path().join(file)).expect("link");
    }
    std::os::unix::fs::symlink(
        e2e.join("agnhost.oci.tar"),
        images.path().join("agnhost.oci.tar"),
    )
    .expect("link");
    let images_arg = images.path().display().to_string();

    let lab = Lab::new();
    lab.up_ok(&[
        "--datastore",
        "kubernetes",
        "--kubelet",
        "--nodes",
        "2",
        "--images",
        &images_arg,
    ]);
    let kubeconfig = lab.ok(&["kubeconfig"], &[]).trim().to_owned();

    // Where the API server is reachable: the router's namespace.
    let report = TempDir::new("labe2e-report");
    let started = std::time::Instant::now();
    let out = Command::new("timeout")
        .arg(E2E_TIMEOUT_SECS.to_string())
        .args(["ip", "netns", "exec", &lab.ns("ul")])
        .arg(e2e.join("e2e.test"))
        .arg(format!("--kubeconfig={kubeconfig}"))
        .arg(format!("--kubectl-path={}", kubectl.display()))
        .arg("--provider=local")
        .arg(format!("--ginkgo.focus={FOCUS}"))
        .arg(format!("--ginkgo.skip={SKIP}"))
        .arg("--ginkgo.noColor")
        .arg("--disable-log-dump")
        .arg(format!("--report-dir={}", report.path().display()))
        .arg(format!("--e2e-output-dir={}", report.path().display()))
        .current_dir(report.path())
        .output()
        .expect("running e2e.test");
    let took = started.elapsed();
    let log = text(&out);
    let (passed, failed, pending, _skipped) =
        summary(&log).unwrap_or_else(|| panic!("no ginkgo summary in e2e.test's output:\n{log}"));
    eprintln!(
        "e2e.test: {passed} passed, {failed} failed, {pending} pending in {}s",
        took.as_secs()
    );
    let specs = ran(report.path());
    let failures: Vec<_> = specs.iter().filter(|(_, f)| *f).map(|(n, _)| n).collect();
    assert!(
        out.status.success() && failed == 0 && failures.is_empty(),
        "e2e.test failed ({failures:?}):\n{log}"
    );
    assert_eq!(passed as usize, specs.len(), "{specs:?}\n{log}");
    for want in EXPECTED {
        assert!(
            specs.iter().any(|(n, _)| n.contains(want)),
            "{want:?} did not run: {specs:?}"
        );
    }
    assert!(passed as usize >= EXPECTED.len(), "{passed} passed:\n{log}");

    lab.ok(&["down"], &[]);
    lab.assert_gone();
}
