//! What the datastore holds besides the config: node records and block ownership, the
//! consistent view of both ([`Snapshot`]) and the changes to them ([`WatchEvent`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::config::ClusterConfig;
use crate::error::ConfigError;
use crate::{LeaseId, Revision};

/// A node as its peers need to see it. Unknown keys are ignored when reading, so a newer
/// agent may add fields without breaking older peers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlay_v4: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlay_v6: Option<Ipv6Addr>,
    /// `aa:bb:cc:dd:ee:ff`.
    pub vtep_mac: String,
    /// The node's underlay MTU.
    pub mtu: u32,
    /// Informational copy; the block keys are authoritative.
    #[serde(default)]
    pub blocks: Vec<IpNet>,
}

impl NodeRecord {
    /// Checks what peers rely on: a valid name and a well-formed VTEP MAC.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_node_name(&self.name)?;
        if !is_mac(&self.vtep_mac) {
            return Err(ConfigError::NodeRecord {
                node: self.name.clone(),
                field: "vtepMac",
                reason: format!(
                    "{:?} is not a MAC address of the form aa:bb:cc:dd:ee:ff",
                    self.vtep_mac
                ),
            });
        }
        Ok(())
    }
}

fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Node names are DNS-1123 subdomains, like Kubernetes node names: 1..=253 characters of
/// `[a-z0-9.-]`, each dot-separated label starting and ending with a letter or digit. They
/// are used verbatim in datastore keys and as block-key values.
pub fn validate_node_name(name: &str) -> Result<(), ConfigError> {
    let bad = |reason| {
        Err(ConfigError::NodeName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("must not be empty");
    }
    if name.len() > 253 {
        return bad("is longer than 253 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return bad("may contain only lower-case letters, digits, '.' and '-'");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return bad("has an empty label (leading, trailing or double '.')");
        }
        if label.len() > 63 {
            return bad("has a label longer than 63 characters");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("has a label that starts or ends with '-'");
        }
    }
    Ok(())
}

/// A pod running on a node, as its node's agent publishes it (key
/// `<prefix>/policy/endpoints/<node>/<namespace>/<name>`, attached to the node's lease so a
/// dead node's pods vanish with it). Labels and named ports are not here: they come from the
/// pod's `PodLabels` object. Unknown keys are ignored when reading.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointRecord {
    pub node: String,
    pub namespace: String,
    pub name: String,
    /// The runtime's container id and interface (which CNI attachment this is).
    #[serde(default)]
    pub container_id: String,
    #[serde(default)]
    pub ifname: String,
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
}

/// One block key: `block` belongs to `node` for as long as `lease` lives.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockOwner {
    pub block: IpNet,
    pub node: String,
    pub lease: LeaseId,
}

/// Everything in the datastore at one revision. Nodes are sorted by name, blocks by address.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub revision: Revision,
    pub config: Option<ClusterConfig>,
    pub nodes: Vec<NodeRecord>,
    pub blocks: Vec<BlockOwner>,
}

/// Everything NetworkPolicy needs from the datastore at one revision: the nodes and blocks,
/// every policy object and every endpoint ([`crate::Datastore::policy_view`]).
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyView {
    /// Its `revision` is the view's.
    pub snapshot: Snapshot,
    /// Sorted by kind, namespace and name; values that are not JSON are left out (the
    /// object watch reports them as deleted).
    pub objects: Vec<crate::StoredObject>,
    /// Sorted by node, namespace and name; unreadable records are left out.
    pub endpoints: Vec<EndpointRecord>,
}

/// A change after some revision, as delivered by [`crate::Datastore::watch`].
#[derive(Clone, Debug, PartialEq)]
pub enum WatchEvent {
    NodePut(NodeRecord),
    /// The node key was deleted (or overwritten with something unreadable).
    NodeDeleted(String),
    BlockPut(BlockOwner),
    BlockDeleted(IpNet),
    /// The watch broke (compaction, reconnect after an outage); the receiver must re-list
    /// with snapshot(). The events that follow a `Resync` start at a revision no later than
    /// that of any snapshot taken after receiving it, so some of them may already be
    /// reflected in that snapshot; applying them in order converges on the current state.
    Resync,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names() {
        for ok in ["a", "node-1", "n1.example.com", "0", &"a".repeat(63)] {
            validate_node_name(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let long = format!(
            "{}.{}.{}.{}",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(62)
        );
        assert_eq!(long.len(), 254);
        for (bad, why) in [
            ("", "empty"),
            ("Node1", "lower-case"),
            ("node_1", "lower-case"),
            ("a/b", "lower-case"),
            ("-a", "starts or ends"),
            ("a.", "empty label"),
            ("a..b", "empty label"),
            (&"a".repeat(64), "longer than 63"),
            (&long, "longer than 253"),
        ] {
            let e = validate_node_name(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn node_record_json_is_camel_case_and_tolerant() {
        let rec = NodeRecord {
            name: "n1".into(),
            underlay_v4: Some("192.0.2.1".parse().unwrap()),
            underlay_v6: None,
            vtep_mac: "aa:bb:cc:dd:ee:ff".into(),
            mtu: 1500,
            blocks: vec!["10.244.0.0/26".parse().unwrap()],
        };
        let s = serde_json::to_string(&rec).unwrap();
        assert_eq!(
            s,
            r#"{"name":"n1","underlayV4":"192.0.2.1","vtepMac":"aa:bb:cc:dd:ee:ff","mtu":1500,"blocks":["10.244.0.0/26"]}"#
        );
        let with_extra = s.replace("\"mtu\"", "\"health\":\"ok\",\"mtu\"");
        assert_eq!(
            serde_json::from_str::<NodeRecord>(&with_extra).unwrap(),
            rec
        );
        rec.validate().unwrap();
        let bad = NodeRecord {
            vtep_mac: "aa:bb:cc:dd:ee".into(),
            ..rec
        };
        assert!(bad.validate().unwrap_err().to_string().contains("vtepMac"));
    }
}
