//! The control-plane harness itself: a real API server answers, RBAC is enforced for a
//! ServiceAccount identity, and a stop/start keeps the data.

use weft_testkit::kube::{KubeApi, KubeOptions, service_account};

#[test]
fn the_api_server_serves_enforces_rbac_and_survives_a_restart() {
    let sa = service_account("kube-system", "weft-probe");
    let mut api = KubeApi::start(KubeOptions {
        users: vec![sa.clone()],
        ..KubeOptions::default()
    })
    .expect("control plane");
    api.kubectl_ok(&["create", "namespace", "wt-kit"]);
    let denied = api.kubectl_as(&sa.0, &["get", "nodes"], None);
    assert!(
        !denied.status.success(),
        "a ServiceAccount without RBAC listed nodes"
    );
    let err = String::from_utf8_lossy(&denied.stderr);
    assert!(err.contains("forbidden"), "{err}");
    api.apply(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: wt-kit}\n\
         rules:\n- apiGroups: ['']\n  resources: [nodes]\n  verbs: [list]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: wt-kit}\n\
         roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: wt-kit}\n\
         subjects:\n- {kind: ServiceAccount, name: weft-probe, namespace: kube-system}\n",
    );
    let allowed = api.kubectl_as(&sa.0, &["get", "nodes"], None);
    assert!(allowed.status.success(), "{}", weft_testkit::text(&allowed));
    api.stop_apiserver();
    assert!(!api.kubectl(&["get", "ns", "wt-kit"]).status.success());
    api.start_apiserver_again().expect("restart");
    api.kubectl_ok(&["get", "ns", "wt-kit"]);
}
