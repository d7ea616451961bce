//! The node's CNI network config, written by the agent so the plugin needs no datastore on
//! the hot path: mode, MTU and the node's blocks as `weft-ipam` ranges, plus the agent socket
//! the IPAM asks when those blocks run full.

use std::path::Path;

use ipnet::IpNet;
use serde_json::{Value, json};

use crate::config::{Mode, Settings};
use crate::error::Error;

/// The network name: also the IPAM store's directory under `<state-dir>/ipam/`.
pub const NETWORK: &str = "weft";

pub fn render(s: &Settings, blocks: &[IpNet], pod_mtu: u32) -> Value {
    let v4: Vec<Value> = blocks
        .iter()
        .filter(|b| matches!(b, IpNet::V4(_)))
        .map(|b| json!({ "subnet": b.to_string() }))
        .collect();
    let v6: Vec<Value> = blocks
        .iter()
        .filter(|b| matches!(b, IpNet::V6(_)))
        .map(|b| json!({ "subnet": b.to_string() }))
        .collect();
    let mut ranges = Vec::new();
    let mut routes = Vec::new();
    if !v4.is_empty() {
        ranges.push(Value::Array(v4));
        routes.push(json!({ "dst": "0.0.0.0/0" }));
    }
    if !v6.is_empty() {
        ranges.push(Value::Array(v6));
        routes.push(json!({ "dst": "::/0" }));
    }
    let mut plugin = json!({
        "type": "weft",
        "mode": s.mode.as_str(),
        "mtu": pod_mtu,
        // Masquerade for the whole cluster CIDR is the agent's (table `inet weftd`): a
        // per-node rule would also rewrite traffic to other nodes' pods.
        "ipMasq": false,
        // Every pod is registered with the agent for NetworkPolicy (see weft_proto).
        "agentSocket": s.socket_path(),
        "ipam": {
            "type": "weft-ipam",
            "ranges": ranges,
            "routes": routes,
            "dataDir": s.ipam_dir(),
            "agentSocket": s.socket_path(),
        }
    });
    if s.mode == Mode::Bridge {
        plugin["bridge"] = json!(s.bridge);
        plugin["isGateway"] = json!(true);
        // A pod reaches itself through its own Service (Kubernetes requires it): the
        // DNATed packet goes back out the port it came in on, which the bridge drops
        // unless the port is in hairpin mode (with bridge-nf-call-iptables, as
        // kube-proxy needs, br_netfilter bridges it back instead of routing it).
        plugin["hairpinMode"] = json!(true);
    }
    if let Some(log) = &s.cni_log_file {
        plugin["logFile"] = json!(log);
    }
    json!({
        "cniVersion": s.cni_version,
        "name": NETWORK,
        "plugins": [plugin],
    })
}

/// Write `contents` to `path` atomically (temp file, fsync, rename), and only if it changed:
/// runtimes watch this directory and reload on every write.
pub fn write_if_changed(path: &Path, contents: &str) -> Result<bool, Error> {
    let err = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    if std::fs::read_to_string(path).is_ok_and(|old| old == contents) {
        return Ok(false);
    }
    crate::files::write_atomically(path, contents).map_err(err)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Args, Settings};
    use clap::Parser;

    fn settings() -> Settings {
        let args = Args::parse_from([
            "weftd",
            "--node-name",
            "n1",
            "--run-dir",
            "/run/x",
            "--state-dir",
            "/var/lib/x",
        ]);
        Settings::from_args(args).unwrap()
    }

    #[test]
    fn conflist_carries_blocks_per_family_and_mtu() {
        let blocks: Vec<IpNet> = vec![
            "10.244.0.0/26".parse().unwrap(),
            "fd00:10:244::/122".parse().unwrap(),
            "10.244.0.64/26".parse().unwrap(),
        ];
        let v = render(&settings(), &blocks, 1450);
        let p = &v["plugins"][0];
        assert_eq!(p["mtu"], 1450);
        assert_eq!(p["ipam"]["ranges"][0].as_array().unwrap().len(), 2);
        assert_eq!(p["ipam"]["ranges"][1][0]["subnet"], "fd00:10:244::/122");
        assert_eq!(p["ipam"]["dataDir"], "/var/lib/x/ipam");
        assert_eq!(p["ipam"]["agentSocket"], "/run/x/weftd.sock");
        assert_eq!(p["agentSocket"], "/run/x/weftd.sock");
        assert_eq!(p["bridge"], "weft0");
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(p["hairpinMode"], true);
    }

    #[test]
    fn the_conflist_declares_the_version_asked_for() {
        let args = Args::parse_from(["weftd", "--node-name", "n1", "--cni-version", "1.0.0"]);
        let s = Settings::from_args(args).unwrap();
        let v = render(&s, &["10.244.0.0/26".parse().unwrap()], 1450);
        assert_eq!(v["cniVersion"], "1.0.0");
        let err = Args::try_parse_from(["weftd", "--node-name", "n1", "--cni-version", "0.3.1"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("0.3.1") && err.contains("1.0.0"), "{err}");
    }

    #[test]
    fn write_is_atomic_and_skips_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("10-weft.conflist");
        assert!(write_if_changed(&path, "{}").unwrap());
        assert!(!write_if_changed(&path, "{}").unwrap());
        assert!(write_if_changed(&path, "{\"a\":1}").unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":1}");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1);
    }
}
