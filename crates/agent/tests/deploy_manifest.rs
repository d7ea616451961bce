//! deploy/weft.yaml against a real kube-apiserver 1.20 (weft-testkit's, the project's own
//! build): it applies (dry run and for real) as exactly the objects weftd's Kubernetes
//! datastore relies on, the WeftBlock resource works, the pods of the DaemonSet pass
//! admission, and the ServiceAccount weftd runs as may do what weftd does and nothing else —
//! asked as that very identity.
//!
//! Needs the Kubernetes binaries of scripts/kube-binaries.sh (weft_testkit::kube::bin_dir).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use weft_testkit::kube::{ControllerOptions, KubeApi, KubeOptions, service_account};
use weft_testkit::{TempDir, text};

const NS: &str = "weft-system";

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/weft.yaml")
}

fn manifest_arg() -> String {
    manifest().display().to_string()
}

/// A control plane and a kubectl discovery cache of the test's own (kubectl's default is
/// under $HOME), both removed when the test ends.
struct Cluster {
    api: KubeApi,
    cache: TempDir,
}

impl Cluster {
    fn start(opts: KubeOptions) -> Cluster {
        Cluster {
            api: KubeApi::start(opts).expect("control plane"),
            cache: TempDir::new("kubectl-cache"),
        }
    }

    fn kubectl_as(&self, user: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let cache = format!("--cache-dir={}", self.cache.path().display());
        let mut all = vec![cache.as_str()];
        all.extend_from_slice(args);
        self.api.kubectl_as(user, &all, stdin)
    }

    /// kubectl as admin, which must succeed; its stdout.
    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        self.ok_with(args, None)
    }

    #[track_caller]
    fn ok_with(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_as("admin", args, stdin);
        assert!(
            out.status.success(),
            "kubectl {}: {}",
            args.join(" "),
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[track_caller]
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.ok(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }

    /// Applies the manifest for real and waits until WeftBlock objects can be stored.
    fn install(&self) -> String {
        let out = self.ok(&["apply", "-f", &manifest_arg(), "-o", "name"]);
        wait_for("the WeftBlock CRD to be Established", || {
            let crd = self.json(&["get", "crd", "weftblocks.weft.dev"]);
            crd["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Established" && c["status"] == "True")
        });
        out
    }
}

#[track_caller]
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

const BLOCK: &str = "apiVersion: weft.dev/v1
kind: WeftBlock
metadata: {name: 10-244-0-64-26}
spec: {cidr: 10.244.0.64/26, node: wt-node-a, family: v4}
";

#[test]
fn the_manifest_applies_and_makes_what_weftd_relies_on() {
    // The controller manager makes the ServiceAccount's token, without which no pod of the
    // DaemonSet is admitted; it allocates nothing.
    let c = Cluster::start(KubeOptions {
        controller_manager: Some(ControllerOptions { node_cidrs: None }),
        ..KubeOptions::default()
    });

    // A server-side dry run checks every object against the API server's validation and
    // admission, and writes nothing. Namespaced objects of a namespace that a dry run
    // only pretends to create would be refused: the namespace is made first, as an
    // installer that runs `--dry-run=server` before the real apply would have it.
    c.ok(&["create", "namespace", NS]);
    let dry = c.ok(&["apply", "--dry-run=server", "-f", &manifest_arg()]);
    assert!(
        dry.contains("daemonset.apps/weft created (server dry run)"),
        "{dry}"
    );
    let nothing = c.kubectl_as("admin", &["get", "crd", "weftblocks.weft.dev"], None);
    assert!(!nothing.status.success(), "the dry run created the CRD");

    // The exact inventory: an extra binding (a cluster-admin one, say) shows up here.
    let applied: BTreeSet<String> = c.install().lines().map(str::to_owned).collect();
    let expected: BTreeSet<String> = [
        "namespace/weft-system",
        "customresourcedefinition.apiextensions.k8s.io/weftblocks.weft.dev",
        "serviceaccount/weft",
        "clusterrole.rbac.authorization.k8s.io/weft",
        "clusterrolebinding.rbac.authorization.k8s.io/weft",
        "role.rbac.authorization.k8s.io/weft",
        "rolebinding.rbac.authorization.k8s.io/weft",
        "configmap/weft-config",
        "daemonset.apps/weft",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(applied, expected);
    // Applying again changes nothing: what an upgrade with the same file does.
    let again = c.ok(&["apply", "-f", &manifest_arg()]);
    assert!(again.lines().all(|l| l.ends_with(" unchanged")), "{again}");

    // WeftBlock: cluster-scoped, stored and read back as written, listed with its columns
    // under the short name.
    c.ok_with(&["create", "-f", "-"], Some(BLOCK));
    let block = c.json(&["get", "weftblock", "10-244-0-64-26"]);
    assert_eq!(
        block["spec"],
        json!({"cidr": "10.244.0.64/26", "node": "wt-node-a", "family": "v4"})
    );
    assert!(block["metadata"].get("namespace").is_none(), "{block}");
    let table = c.ok(&["get", "wb"]);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0][..3], ["NAME", "CIDR", "NODE"], "{table}");
    assert_eq!(
        rows[1][..3],
        ["10-244-0-64-26", "10.244.0.64/26", "wt-node-a"],
        "{table}"
    );
    // The name is the lock: a second claim of the same block is refused.
    let second = c.kubectl_as(
        "admin",
        &["create", "-f", "-"],
        Some(&BLOCK.replace("wt-node-a", "wt-node-b")),
    );
    assert!(!second.status.success(), "{}", text(&second));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("AlreadyExists"),
        "{}",
        text(&second)
    );
    // The API server's schema refuses a block without an owner and an unknown family
    // (kubectl's own validation is off: it reads the schema only once the server has
    // published it, so it would answer first some of the time).
    for (bad, complaint) in [
        (
            "spec: {cidr: 10.244.1.0/26, family: v4}",
            "spec.node: Required value",
        ),
        (
            "spec: {cidr: 10.244.1.0/26, node: wt-node-a, family: v5}",
            "spec.family: Unsupported value",
        ),
    ] {
        let doc = format!(
            "apiVersion: weft.dev/v1\nkind: WeftBlock\nmetadata: {{name: 10-244-1-0-26}}\n{bad}\n"
        );
        let out = c.kubectl_as(
            "admin",
            &["create", "--validate=false", "-f", "-"],
            Some(&doc),
        );
        assert!(!out.status.success(), "{bad}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(complaint),
            "{bad}: {}",
            text(&out)
        );
    }

    // The ConfigMap holds exactly the contract's keys (the optional ones may be absent),
    // with the shipped defaults.
    let config = c.json(&["-n", NS, "get", "configmap", "weft-config"]);
    let data = config["data"].as_object().expect("data");
    let keys: BTreeSet<&str> = data.keys().map(String::as_str).collect();
    let required = BTreeSet::from([
        "cidrV4",
        "blockSizeV4",
        "blockSizeV6",
        "backend",
        "vxlanVni",
        "vxlanPort",
        "ipam",
    ]);
    let optional = BTreeSet::from(["cidrV6", "mtu"]);
    assert!(keys.is_superset(&required), "{keys:?}");
    let extra: Vec<&&str> = keys
        .difference(&required)
        .filter(|k| !optional.contains(**k))
        .collect();
    assert!(extra.is_empty(), "keys outside the contract: {extra:?}");
    for (key, value) in [
        ("cidrV4", "10.244.0.0/16"),
        ("blockSizeV4", "26"),
        ("blockSizeV6", "122"),
        ("backend", "vxlan"),
        ("vxlanVni", "1"),
        ("vxlanPort", "4789"),
        ("ipam", "weft"),
    ] {
        assert_eq!(data[key], value, "{key}");
    }

    check_daemonset(&c);
    check_pod_admission(&c);
}

/// The DaemonSet as the API server stored it (defaults filled in): the contract's settings.
fn check_daemonset(c: &Cluster) {
    let ds = c.json(&["-n", NS, "get", "daemonset", "weft"]);
    let strategy = &ds["spec"]["updateStrategy"];
    assert_eq!(strategy["type"], "RollingUpdate");
    assert_eq!(strategy["rollingUpdate"]["maxUnavailable"], 1);
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert_eq!(pod["tolerations"], json!([{"operator": "Exists"}]));
    assert_eq!(pod["serviceAccountName"], "weft");
    assert_eq!(pod["terminationGracePeriodSeconds"], 30);

    // The image is the one scripts/image.sh builds from this workspace's version.
    let image = format!("localhost/weft:{}", env!("CARGO_PKG_VERSION"));
    let init = &pod["initContainers"][0];
    assert_eq!(init["name"], "install-cni");
    assert_eq!(init["image"], image.as_str());
    assert_eq!(init["imagePullPolicy"], "IfNotPresent");
    assert_eq!(
        init["command"],
        json!([
            "/usr/local/bin/weftctl",
            "install-cni",
            "--from=/usr/local/bin",
            "--to=/host/opt/cni/bin",
            "weft",
            "weft-ipam"
        ])
    );
    let weftd = &pod["containers"][0];
    assert_eq!(pod["containers"].as_array().map(Vec::len), Some(1));
    assert_eq!(weftd["image"], image.as_str());
    assert_eq!(weftd["imagePullPolicy"], "IfNotPresent");
    assert_eq!(weftd["command"], json!(["/usr/local/bin/weftd"]));
    assert_eq!(weftd["securityContext"]["privileged"], true);
    let args: Vec<&str> = weftd["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for want in [
        "--datastore=kubernetes",
        "--kube-namespace=weft-system",
        "--metrics-address=127.0.0.1:9412",
    ] {
        assert!(args.contains(&want), "{want} missing: {args:?}");
    }
    let env = weftd["env"].as_array().expect("env");
    let var = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("env {name} missing"))
            .clone()
    };
    assert_eq!(
        var("NODE_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    for (name, key) in [
        ("KUBERNETES_SERVICE_HOST", "host"),
        ("KUBERNETES_SERVICE_PORT", "port"),
    ] {
        assert_eq!(
            var(name)["valueFrom"]["configMapKeyRef"],
            json!({"name": "weft-api-endpoint", "key": key, "optional": true}),
            "{name}"
        );
    }
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &weftd[probe]["httpGet"];
        assert_eq!(
            (&get["host"], &get["port"], &get["path"]),
            (&json!("127.0.0.1"), &json!(9412), &json!(path)),
            "{probe}"
        );
    }
    let volumes: BTreeSet<(String, String)> = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|v| {
            let host = &v["hostPath"];
            (
                host["path"].as_str().unwrap_or("not a hostPath").to_owned(),
                host["type"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = [
        ("/opt/cni/bin", "DirectoryOrCreate"),
        ("/etc/cni/net.d", "DirectoryOrCreate"),
        ("/run/weft", "DirectoryOrCreate"),
        ("/var/lib/weft", "DirectoryOrCreate"),
        ("/run/netns", "DirectoryOrCreate"),
        ("/run/xtables.lock", "FileOrCreate"),
        ("/sys/fs/bpf", "Directory"),
        ("/lib/modules", ""),
    ]
    .into_iter()
    .map(|(p, t)| (p.to_owned(), t.to_owned()))
    .collect();
    assert_eq!(volumes, want);
    let modules = weftd["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["mountPath"] == "/lib/modules")
        .expect("/lib/modules mounted");
    assert_eq!(modules["readOnly"], true);
    // weftd's GC only looks at the pods' namespace files; no propagation (see the manifest).
    let netns = weftd["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["mountPath"] == "/run/netns")
        .expect("/run/netns mounted");
    assert_eq!(netns["readOnly"], true);
    assert!(netns.get("mountPropagation").is_none(), "{netns}");
    // The eBPF datapath's pins go to the host's bpffs, where they outlive the container.
    let bpffs = weftd["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["mountPath"] == "/sys/fs/bpf")
        .expect("/sys/fs/bpf mounted");
    assert!(bpffs.get("mountPropagation").is_none(), "{bpffs}");
    let args: Vec<&str> = weftd["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    for want in ["--datapath=nft", "--bpf-pin-dir=/sys/fs/bpf/weft"] {
        assert!(args.contains(&want), "{want} not in {args:?}");
    }
}

/// A pod of the DaemonSet, as its controller would create it for a node, passes the API
/// server's admission (priority class, ServiceAccount and its token, privileged mode) in
/// a dry run: the DaemonSet's own validation does not run the pods' admission plugins.
fn check_pod_admission(c: &Cluster) {
    wait_for("the ServiceAccount's token", || {
        let sa = c.json(&["-n", NS, "get", "serviceaccount", "weft"]);
        sa["secrets"].as_array().is_some_and(|s| !s.is_empty())
    });
    let ds = c.json(&["-n", NS, "get", "daemonset", "weft"]);
    let template = &ds["spec"]["template"];
    let mut spec = template["spec"].clone();
    spec["nodeName"] = json!("wt-node-a");
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "weft-wt-admission", "namespace": NS,
                     "labels": template["metadata"]["labels"]},
        "spec": spec,
    });
    let out = c.ok_with(
        &["create", "--dry-run=server", "-o", "json", "-f", "-"],
        Some(&pod.to_string()),
    );
    let admitted: Value = serde_json::from_str(&out).expect("the admitted pod");
    // The Priority plugin resolved the class: system-node-critical's value.
    assert_eq!(admitted["spec"]["priority"], 2_000_001_000, "{out}");
    // The ServiceAccount plugin mounted the token weftd's in-cluster client reads.
    let mounts = admitted["spec"]["containers"][0]["volumeMounts"]
        .as_array()
        .expect("mounts");
    assert!(
        mounts
            .iter()
            .any(|m| m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"),
        "{out}"
    );
    let none = c.kubectl_as(
        "admin",
        &["-n", NS, "get", "pod", "weft-wt-admission"],
        None,
    );
    assert!(!none.status.success(), "the dry run created the pod");
}

/// `kubectl auth can-i` as `user`: the API server's answer (SelfSubjectAccessReview).
fn can_i(c: &Cluster, user: &str, args: &[&str]) -> bool {
    let mut all = vec!["auth", "can-i"];
    all.extend_from_slice(args);
    let out = c.kubectl_as(user, &all, None);
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    match (out.status.code(), answer.as_str()) {
        (Some(0), "yes") => true,
        (Some(1), "no") => false,
        _ => panic!("can-i {args:?} as {user}: {}", text(&out)),
    }
}

#[test]
fn weftds_service_account_may_do_what_weftd_does_and_nothing_else() {
    let sa = service_account(NS, "weft");
    let user = sa.0.clone();
    let c = Cluster::start(KubeOptions {
        users: vec![sa],
        ..KubeOptions::default()
    });
    assert!(
        !can_i(&c, &user, &["list", "nodes"]),
        "allowed before install"
    );
    c.install();
    // RBAC reaches the authorizer through its informers: wait for both bindings.
    wait_for("the ClusterRoleBinding", || {
        can_i(&c, &user, &["list", "nodes"])
    });
    wait_for("the RoleBinding", || {
        can_i(&c, &user, &["-n", NS, "get", "configmaps"])
    });

    let allowed: &[&[&str]] = &[
        &["get", "nodes"],
        &["list", "nodes"],
        &["watch", "nodes"],
        &["patch", "nodes", "--subresource=status"],
        &["get", "pods", "-A"],
        &["list", "pods", "-A"],
        &["watch", "pods", "-A"],
        &["list", "namespaces"],
        &["watch", "namespaces"],
        &["list", "networkpolicies.networking.k8s.io", "-A"],
        &["watch", "networkpolicies.networking.k8s.io", "-A"],
        &["get", "weftblocks.weft.dev"],
        &["list", "weftblocks.weft.dev"],
        &["watch", "weftblocks.weft.dev"],
        &["create", "weftblocks.weft.dev"],
        &["update", "weftblocks.weft.dev"],
        &["delete", "weftblocks.weft.dev"],
        &["-n", NS, "get", "configmaps"],
        &["-n", NS, "list", "configmaps"],
        &["-n", NS, "watch", "configmaps"],
    ];
    let denied: &[&[&str]] = &[
        &["-n", NS, "get", "secrets"],
        &["list", "secrets", "-A"],
        &["delete", "pods", "-A"],
        &["patch", "pods", "-A"],
        &["patch", "nodes"],
        &["update", "nodes", "--subresource=status"],
        &["delete", "nodes"],
        &["get", "namespaces"],
        &["create", "networkpolicies.networking.k8s.io", "-A"],
        &["-n", "kube-system", "get", "configmaps"],
        &["list", "configmaps", "-A"],
        &["-n", NS, "update", "configmaps"],
        &["patch", "weftblocks.weft.dev"],
        &["deletecollection", "weftblocks.weft.dev"],
        &["*", "weftblocks.weft.dev"],
        &["create", "leases.coordination.k8s.io", "-A"],
        &["create", "pods", "-A"],
        &["*", "*"],
    ];
    for args in allowed {
        assert!(can_i(&c, &user, args), "weftd may not {args:?}");
    }
    for args in denied {
        assert!(!can_i(&c, &user, args), "weftd may {args:?}");
    }

    // The roles hold exactly the contract's rules: no verb or resource outside the lists
    // above can hide in them.
    let rules = |args: &[&str]| -> BTreeSet<String> {
        let role = c.json(args);
        let mut set = BTreeSet::new();
        for rule in role["rules"].as_array().expect("rules") {
            assert!(rule.get("resourceNames").is_none(), "{rule}");
            assert!(rule.get("nonResourceURLs").is_none(), "{rule}");
            for group in rule["apiGroups"].as_array().expect("apiGroups") {
                for resource in rule["resources"].as_array().expect("resources") {
                    for verb in rule["verbs"].as_array().expect("verbs") {
                        set.insert(format!(
                            "{}/{} {}",
                            group.as_str().unwrap_or("?"),
                            resource.as_str().unwrap_or("?"),
                            verb.as_str().unwrap_or("?")
                        ));
                    }
                }
            }
        }
        set
    };
    let expand = |list: &[(&str, &[&str])]| -> BTreeSet<String> {
        list.iter()
            .flat_map(|(res, verbs)| verbs.iter().map(move |v| format!("{res} {v}")))
            .collect()
    };
    assert_eq!(
        rules(&["get", "clusterrole", "weft"]),
        expand(&[
            ("/nodes", &["get", "list", "watch"]),
            ("/nodes/status", &["patch"]),
            ("/pods", &["get", "list", "watch"]),
            ("/namespaces", &["list", "watch"]),
            ("networking.k8s.io/networkpolicies", &["list", "watch"]),
            (
                "weft.dev/weftblocks",
                &["get", "list", "watch", "create", "update", "delete"]
            ),
        ])
    );
    assert_eq!(
        rules(&["-n", NS, "get", "role", "weft"]),
        expand(&[("/configmaps", &["get", "list", "watch"])])
    );

    // And for real, as weftd would: claim, adopt (update) and give back a block; read the
    // config; be refused a secret and another namespace's ConfigMap.
    let as_weftd = |args: &[&str], stdin: Option<&str>| c.kubectl_as(&user, args, stdin);
    let created = as_weftd(&["create", "-f", "-"], Some(BLOCK));
    assert!(created.status.success(), "{}", text(&created));
    // An update carries the resourceVersion read (custom resources take no unconditional
    // update), as weftd's adoption does.
    let read = as_weftd(&["get", "wb", "10-244-0-64-26", "-o", "json"], None);
    assert!(read.status.success(), "{}", text(&read));
    let mut block: Value = serde_json::from_slice(&read.stdout).expect("json");
    block["spec"]["node"] = json!("wt-node-b");
    let replaced = as_weftd(&["replace", "-f", "-"], Some(&block.to_string()));
    assert!(replaced.status.success(), "{}", text(&replaced));
    let read = as_weftd(&["get", "wb", "10-244-0-64-26", "-o", "json"], None);
    assert!(read.status.success(), "{}", text(&read));
    let block: Value = serde_json::from_slice(&read.stdout).expect("json");
    assert_eq!(block["spec"]["node"], "wt-node-b");
    let deleted = as_weftd(&["delete", "wb", "10-244-0-64-26"], None);
    assert!(deleted.status.success(), "{}", text(&deleted));
    let config = as_weftd(&["-n", NS, "get", "configmap", "weft-config"], None);
    assert!(config.status.success(), "{}", text(&config));
    for args in [
        &["-n", NS, "get", "secrets"][..],
        &["-n", "kube-system", "get", "configmaps"][..],
        &["-n", NS, "delete", "configmap", "weft-config"][..],
    ] {
        let out = as_weftd(args, None);
        assert!(!out.status.success(), "{args:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("forbidden"),
            "{args:?}: {}",
            text(&out)
        );
    }
}
