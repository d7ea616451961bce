//! The two network configs under test, kept as alike as the plugins allow: same CNI version,
//! same network name, bridge with the gateway on it, one IPv4 /16, IPAM state in a private
//! `dataDir`, and `ipMasq` on both or neither.

use std::path::Path;

use serde_json::{Value, json};

/// CNI version for both sides: the reference plugins v1.1.1 stop at 1.0.0.
pub const CNI_VERSION: &str = "1.0.0";
/// Network name for both sides (each runs in its own node namespace, so they don't meet).
pub const NETWORK: &str = "wtbbench";

/// `type: weft`, bridge mode, gateway on the bridge, in-process `weft-ipam`.
pub fn weft(subnet: &str, ipmasq: bool, data_dir: &Path, log_file: &Path) -> Value {
    json!({
        "cniVersion": CNI_VERSION,
        "name": NETWORK,
        "type": "weft",
        "mode": "bridge",
        "bridge": "weft0",
        "isGateway": true,
        "ipMasq": ipmasq,
        "logFile": log_file,
        "ipam": {
            "type": "weft-ipam",
            "subnet": subnet,
            "dataDir": data_dir,
        },
    })
}

/// The reference `bridge` + `host-local`, the pair Debian's containernetworking-plugins ship.
pub fn reference(subnet: &str, ipmasq: bool, data_dir: &Path) -> Value {
    json!({
        "cniVersion": CNI_VERSION,
        "name": NETWORK,
        "type": "bridge",
        "bridge": "cni0",
        "isGateway": true,
        "ipMasq": ipmasq,
        "ipam": {
            "type": "host-local",
            "subnet": subnet,
            "dataDir": data_dir,
        },
    })
}

/// The config a runtime sends on DEL: the network config plus the ADD's result as
/// `prevResult` (what libcni does from its cache since CNI 0.4.0).
pub fn with_prev_result(conf: &Value, prev_result: Option<&Value>) -> Value {
    let mut conf = conf.clone();
    if let (Some(prev), Some(obj)) = (prev_result, conf.as_object_mut()) {
        obj.insert("prevResult".to_owned(), prev.clone());
    }
    conf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_share_the_essentials() {
        let w = weft("10.99.0.0/16", true, Path::new("/d"), Path::new("/l"));
        let r = reference("10.99.0.0/16", true, Path::new("/r"));
        for key in ["cniVersion", "name", "isGateway", "ipMasq"] {
            assert_eq!(w[key], r[key], "{key}");
        }
        assert_eq!(w["ipam"]["subnet"], r["ipam"]["subnet"]);
        assert_eq!(w["ipam"]["type"], "weft-ipam");
        assert_eq!(r["ipam"]["type"], "host-local");
    }

    #[test]
    fn del_carries_prev_result() {
        let conf = reference("10.99.0.0/16", false, Path::new("/r"));
        let prev = json!({"ips": [{"address": "10.99.0.2/16"}]});
        let del = with_prev_result(&conf, Some(&prev));
        assert_eq!(del["prevResult"], prev);
        assert_eq!(with_prev_result(&conf, None), conf);
    }
}
