//! A lab on the Kubernetes datastore, read and written through its API as a person does:
//! `weftctl lab kubectl -- …` (the lab's kubectl, as its admin, inside the router namespace),
//! manifests with `kubectl apply|delete -f`, labels with `kubectl label`.

use std::process::Output;

use serde_json::Value;

use super::{Lab, TempDir, text};

impl Lab {
    /// `weftctl lab kubectl --name <lab> -- args…`, whatever its status.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        let mut a = vec!["--"];
        a.extend_from_slice(args);
        self.cmd(&["kubectl"], &a)
    }

    /// `kubectl args…`, which must succeed; its stdout.
    #[track_caller]
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl get args… -o json`, parsed.
    #[track_caller]
    pub fn kube_get(&self, args: &[&str]) -> Value {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend(["-o", "json"]);
        let out = self.kubectl_ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("kubectl {a:?}: {e}\n{out}"))
    }

    /// `kubectl <verb> -f <yaml>` (`apply` or `delete`), its output whatever the status. The
    /// server validates; kubectl's own schema (1.20's) is not asked, so a field the server
    /// does not know reaches it and is dropped there, as on a cluster of that version.
    pub fn kubectl_file(&self, verb: &str, yaml: &str) -> Output {
        let dir = TempDir::new("labtest");
        let path = dir.path().join("manifest.yaml");
        std::fs::write(&path, yaml).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let p = path.to_string_lossy();
        if verb == "apply" {
            self.kubectl(&[verb, "--validate=false", "-f", p.as_ref()])
        } else {
            self.kubectl(&[verb, "-f", p.as_ref()])
        }
    }

    /// [`Lab::kubectl_file`], which must succeed.
    #[track_caller]
    pub fn kubectl_file_ok(&self, verb: &str, yaml: &str) {
        let out = self.kubectl_file(verb, yaml);
        assert!(
            out.status.success(),
            "kubectl {verb} failed on:\n{yaml}\n{}",
            text(&out)
        );
    }

    /// Changes pod `namespace/name`'s labels from `current` to exactly `labels` with one
    /// `kubectl label` (`--overwrite` for the ones it has, `key-` for those `labels` lacks);
    /// nothing when they are the same.
    #[track_caller]
    pub fn kubectl_set_labels(
        &self,
        namespace: &str,
        name: &str,
        current: &serde_json::Map<String, Value>,
        labels: &serde_json::Map<String, Value>,
    ) {
        if current == labels {
            return;
        }
        let mut args: Vec<String> = vec![
            "label".into(),
            "pod".into(),
            "-n".into(),
            namespace.into(),
            name.into(),
            "--overwrite".into(),
        ];
        for key in current.keys() {
            if !labels.contains_key(key) {
                args.push(format!("{key}-"));
            }
        }
        for (k, v) in labels {
            args.push(format!("{k}={}", v.as_str().unwrap_or_default()));
        }
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        self.kubectl_ok(&a);
    }

    /// SIGKILLs the lab's kube-apiserver (a crash) and waits until it is gone: `lab up`
    /// keeps an API server it still finds running.
    pub fn kill_apiserver(&self) {
        let pidfile = self.state_dir().join("kube/kube-apiserver.pid");
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap_or_default()
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{}: {e}", pidfile.display()));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        super::wait_for(
            std::time::Duration::from_secs(10),
            || (!super::alive(pid as u32)).then_some(()),
            || format!("kube-apiserver {pid} still alive after SIGKILL"),
        );
    }
}

/// The kubelet lab's image archives: WEFT_LAB_IMAGES when the caller built them
/// (scripts/test.sh does, once), else scripts/lab-images.sh into the target dir (a static
/// release build the first time).
pub fn lab_images() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("WEFT_LAB_IMAGES") {
        return dir.into();
    }
    let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut cmd = std::process::Command::new(repo.join("scripts/lab-images.sh"));
    // Cargo's variables for this package would make the release build inside rebuild
    // (ring's build script watches CARGO_MANIFEST_DIR); the caller's own stay.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_BIN_EXE_",
            "CARGO_CRATE_",
        ]
        .iter()
        .any(|p| name.starts_with(p))
            || ["CARGO_PRIMARY_PACKAGE", "OUT_DIR", "LD_LIBRARY_PATH"].contains(&name.as_ref())
        {
            cmd.env_remove(name.as_ref());
        }
    }
    let out = cmd.output().expect("scripts/lab-images.sh");
    assert!(out.status.success(), "lab-images.sh: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().into()
}

/// The directory of Kubernetes' e2e files (e2e.test, agnhost.oci.tar, agnhost.ref):
/// WEFT_KUBE_E2E when the caller made sure of them (scripts/test.sh does), else
/// scripts/kube-e2e.sh (a build of about 15 minutes the first time, as root).
pub fn kube_e2e() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("WEFT_KUBE_E2E") {
        return dir.into();
    }
    let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::process::Command::new(repo.join("scripts/kube-e2e.sh"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("scripts/kube-e2e.sh");
    assert!(out.status.success(), "kube-e2e.sh: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().into()
}
