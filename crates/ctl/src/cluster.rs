//! `weftctl status --kubernetes`: the cluster as its API server says it — every Node, whether
//! its weftd has published it ready, its underlay address, VTEP MAC, blocks and pods — for
//! a person (a table) or a script (`-o json`).
//!
//! Must not change anything: it only reads (nodes, weftblocks, pods, the ConfigMap).

use std::fmt::Write;

use serde_json::json;
use weft_store::kube::NodeSummary;

use crate::policy::KubeArgs;
use crate::status::Output;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("the Kubernetes API: {0}")]
    Store(#[from] weft_store::StoreError),
    #[error("starting the async runtime: {0}")]
    Runtime(std::io::Error),
}

pub fn run(kube: &KubeArgs, output: Output) -> Result<(), ClusterError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(ClusterError::Runtime)?;
    let (nodes, config) = rt.block_on(async {
        let store = kube.connect().await?;
        let config = store.kube_config().await?;
        Ok::<_, ClusterError>((store.nodes().await?, config))
    })?;
    match output {
        Output::Json => {
            let list: Vec<_> = nodes.iter().map(node_json).collect();
            let cfg = config.map(|c| {
                json!({
                    "cluster": c.cluster,
                    "ipam": c.ipam.as_str(),
                    "mtu": c.mtu,
                })
            });
            println!("{}", json!({"config": cfg, "nodes": list}));
        }
        Output::Text => print!("{}", render(&nodes, config.as_ref())),
    }
    Ok(())
}

fn node_json(n: &NodeSummary) -> serde_json::Value {
    json!({
        "name": n.name,
        "ready": n.record.is_some(),
        "record": n.record,
        "blocks": n.blocks,
        "pods": n.pods,
    })
}

pub fn render(nodes: &[NodeSummary], config: Option<&weft_store::kube::KubeConfig>) -> String {
    let mut out = String::new();
    match config {
        Some(c) => {
            let cidrs: Vec<String> = c
                .cluster
                .families()
                .into_iter()
                .filter_map(|f| c.cluster.cidr(f))
                .map(|n| n.to_string())
                .collect();
            let _ = writeln!(
                out,
                "cluster: {}; backend {}; ipam {}{}",
                cidrs.join(", "),
                c.cluster.backend,
                c.ipam.as_str(),
                c.mtu.map(|m| format!("; pod MTU {m}")).unwrap_or_default()
            );
        }
        None => {
            let _ = writeln!(out, "cluster: no ConfigMap weft-config");
        }
    }
    let ready = nodes.iter().filter(|n| n.record.is_some()).count();
    let _ = writeln!(out, "nodes: {ready} of {} ready for pods", nodes.len());
    for n in nodes {
        let state = match &n.record {
            Some(r) => format!(
                "ready   underlay {} vtep {} mtu {}",
                r.underlay_v4
                    .map(|a| a.to_string())
                    .or(r.underlay_v6.map(|a| a.to_string()))
                    .unwrap_or_else(|| "-".into()),
                r.vtep_mac,
                r.mtu
            ),
            None => "NOT READY (weftd has not published this node)".into(),
        };
        let blocks: Vec<String> = n.blocks.iter().map(|b| b.to_string()).collect();
        let _ = writeln!(
            out,
            "  {}: {state}; blocks {}; {} pods",
            n.name,
            if blocks.is_empty() {
                "none".into()
            } else {
                blocks.join(", ")
            },
            n.pods
        );
    }
    out
}
