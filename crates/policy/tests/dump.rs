mod common;
use common::*;
use weft_policy::plan;

#[test]
#[ignore]
fn dump() {
    let w = world(
        vec![namespace("shop", "team=a")],
        vec![
            pod("shop", "web", "a", &["10.0.1.5", "fd00:1::5"], "app=web"),
            pod("shop", "db", "a", &["10.0.1.6"], "app=db"),
            pod("shop", "x", "b", &["10.0.2.6"], "app=x"),
        ],
        policies(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: db, namespace: shop}\nspec:\n  podSelector: {matchLabels: {app: db}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {app: web}}}, {ipBlock: {cidr: 172.17.0.0/16, except: [172.17.1.0/24]}}]\n    ports: [{port: 5432}, {protocol: UDP, port: 53, endPort: 60}]\n  - from: [{ipBlock: {cidr: 'fd00::/8'}}]\n  egress:\n  - {}\n",
        ),
    );
    let mut o = plan::PlanOptions::new("a");
    o.log_per_second = Some(5);
    let p = plan::compile(&w, &o);
    std::fs::write("/tmp/weft-plan.nft", plan::render(&p)).unwrap();
    std::fs::write("/tmp/weft-linear.nft", plan::render(&plan::compile_linear(&w, &o))).unwrap();
}
