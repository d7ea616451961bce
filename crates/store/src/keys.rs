//! The etcd key layout under a prefix (default `/weft/v1`):
//!
//! | key | value | lease |
//! |---|---|---|
//! | `<prefix>/config` | [`crate::ClusterConfig`] JSON | none |
//! | `<prefix>/nodes/<name>` | [`crate::NodeRecord`] JSON | the node's |
//! | `<prefix>/blocks/<v4\|v6>/<cidr with '/' as '_'>` | the owner's node name, nothing else | the node's |
//! | `<prefix>/used/<v4\|v6>/<cidr with '/' as '_'>` | the first owner's name | none: marks a block ever claimed, so claims take never-used blocks before ones freed by an expired lease; deleted by an explicit release |
//!
//! | `<prefix>/policy/namespaces/<name>` | a Namespace object's JSON | none |
//! | `<prefix>/policy/networkpolicies/<ns>/<name>` | a NetworkPolicy object's JSON | none |
//! | `<prefix>/policy/podlabels/<ns>/<name>` | a PodLabels object's JSON | none |
//! | `<prefix>/policy/endpoints/<node>/<ns>/<pod>` | [`crate::EndpointRecord`] JSON | the node's |
//!
//! A block key's value is only the owner's name so that compare-and-swap can compare it.

use ipnet::IpNet;

use crate::config::Family;
use crate::objects::ObjectKind;

pub const DEFAULT_PREFIX: &str = "/weft/v1";

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Keys {
    /// Ends without '/'.
    prefix: String,
}

/// What a key under the prefix stands for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Config,
    Node(String),
    Block(IpNet),
    /// A policy object: kind, namespace ("" when cluster-scoped), name.
    Object(ObjectKind, String, String),
    /// A pod's endpoint: node, namespace, name.
    Endpoint(String, String, String),
    /// Under the prefix but not ours to interpret (including unparsable block names).
    Other,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    /// Everything we own, with the trailing '/' (so `/weft/v1` does not match `/weft/v10`).
    pub fn root(&self) -> String {
        format!("{}/", self.prefix)
    }

    pub fn config(&self) -> String {
        format!("{}/config", self.prefix)
    }

    pub fn node(&self, name: &str) -> String {
        format!("{}/nodes/{name}", self.prefix)
    }

    pub fn blocks(&self, family: Family) -> String {
        format!("{}/blocks/{}/", self.prefix, family.key())
    }

    pub fn block(&self, block: &IpNet) -> String {
        format!(
            "{}{}",
            self.blocks(Family::of(block)),
            block.to_string().replace('/', "_")
        )
    }

    /// Markers of blocks that were ever claimed (no lease: they outlive their owner), so a
    /// claim prefers blocks nobody has used over blocks freed by an expired lease.
    pub fn used(&self, family: Family) -> String {
        format!("{}/used/{}/", self.prefix, family.key())
    }

    pub fn used_block(&self, block: &IpNet) -> String {
        format!(
            "{}{}",
            self.used(Family::of(block)),
            block.to_string().replace('/', "_")
        )
    }

    /// All policy objects, with the trailing '/'.
    pub fn objects_root(&self) -> String {
        format!("{}/policy/", self.prefix)
    }

    /// All endpoints, with the trailing '/'.
    pub fn endpoints(&self) -> String {
        format!("{}endpoints/", self.objects_root())
    }

    /// Segments are checked by the caller (`objects::check_endpoint_names`).
    pub fn endpoint(&self, node: &str, namespace: &str, name: &str) -> String {
        format!("{}{node}/{namespace}/{name}", self.endpoints())
    }

    /// All objects of `kind`, with the trailing '/'.
    pub fn objects(&self, kind: ObjectKind) -> String {
        format!("{}{}/", self.objects_root(), kind.folder())
    }

    /// Names are checked by the caller (`objects::check_names`): no '/', non-empty.
    pub fn object(&self, kind: ObjectKind, namespace: &str, name: &str) -> String {
        if kind.namespaced() {
            format!("{}{namespace}/{name}", self.objects(kind))
        } else {
            format!("{}{name}", self.objects(kind))
        }
    }

    /// The block a `used/` marker names.
    pub fn used_of(&self, key: &[u8], family: Family) -> Option<IpNet> {
        let key = std::str::from_utf8(key).ok()?;
        let net = parse_block_name(key.strip_prefix(&self.used(family))?)?;
        (Family::of(&net) == family).then_some(net)
    }

    pub fn classify(&self, key: &[u8]) -> KeyKind {
        let Ok(key) = std::str::from_utf8(key) else {
            return KeyKind::Other;
        };
        let Some(rest) = key.strip_prefix(&self.root()) else {
            return KeyKind::Other;
        };
        if rest == "config" {
            return KeyKind::Config;
        }
        if let Some(obj) = rest.strip_prefix("policy/") {
            return classify_object(obj);
        }
        if let Some(name) = rest.strip_prefix("nodes/") {
            return if name.is_empty() {
                KeyKind::Other
            } else {
                KeyKind::Node(name.to_string())
            };
        }
        for family in Family::ALL {
            let Some(name) = rest
                .strip_prefix("blocks/")
                .and_then(|r| r.strip_prefix(family.key()))
                .and_then(|r| r.strip_prefix('/'))
            else {
                continue;
            };
            return match parse_block_name(name) {
                Some(net) if Family::of(&net) == family => KeyKind::Block(net),
                _ => KeyKind::Other,
            };
        }
        KeyKind::Other
    }
}

fn classify_object(rest: &str) -> KeyKind {
    if let Some(path) = rest.strip_prefix("endpoints/") {
        let parts: Vec<&str> = path.split('/').collect();
        return match parts.as_slice() {
            [node, ns, name] if !node.is_empty() && !ns.is_empty() && !name.is_empty() => {
                KeyKind::Endpoint(node.to_string(), ns.to_string(), name.to_string())
            }
            _ => KeyKind::Other,
        };
    }
    for kind in ObjectKind::ALL {
        let Some(path) = rest
            .strip_prefix(kind.folder())
            .and_then(|r| r.strip_prefix('/'))
        else {
            continue;
        };
        let (ns, name) = if kind.namespaced() {
            match path.split_once('/') {
                Some((ns, name)) => (ns, name),
                None => return KeyKind::Other,
            }
        } else {
            ("", path)
        };
        if name.is_empty() || name.contains('/') || (kind.namespaced() && ns.is_empty()) {
            return KeyKind::Other;
        }
        return KeyKind::Object(kind, ns.to_string(), name.to_string());
    }
    KeyKind::Other
}

fn parse_block_name(name: &str) -> Option<IpNet> {
    let (addr, len) = name.rsplit_once('_')?;
    let net: IpNet = format!("{addr}/{len}").parse().ok()?;
    (net.trunc() == net).then_some(net)
}

/// The smallest key greater than every key starting with `prefix` (etcd's range end).
pub(crate) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff: range to the end of the keyspace.
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_classification_round_trip() {
        let k = Keys::new("/weft/v1/");
        assert_eq!(k.config(), "/weft/v1/config");
        assert_eq!(k.node("n1"), "/weft/v1/nodes/n1");
        let b4: IpNet = "10.244.1.0/26".parse().unwrap();
        let b6: IpNet = "fd00:10:244::40/122".parse().unwrap();
        assert_eq!(k.block(&b4), "/weft/v1/blocks/v4/10.244.1.0_26");
        assert_eq!(k.block(&b6), "/weft/v1/blocks/v6/fd00:10:244::40_122");
        assert_eq!(k.classify(k.config().as_bytes()), KeyKind::Config);
        assert_eq!(k.classify(b"/weft/v1/nodes/n1"), KeyKind::Node("n1".into()));
        assert_eq!(k.classify(k.block(&b4).as_bytes()), KeyKind::Block(b4));
        assert_eq!(k.classify(k.block(&b6).as_bytes()), KeyKind::Block(b6));
        let np = k.object(ObjectKind::NetworkPolicy, "shop", "deny");
        assert_eq!(np, "/weft/v1/policy/networkpolicies/shop/deny");
        assert_eq!(
            k.classify(np.as_bytes()),
            KeyKind::Object(ObjectKind::NetworkPolicy, "shop".into(), "deny".into())
        );
        let ns = k.object(ObjectKind::Namespace, "", "shop");
        assert_eq!(ns, "/weft/v1/policy/namespaces/shop");
        assert_eq!(
            k.classify(ns.as_bytes()),
            KeyKind::Object(ObjectKind::Namespace, "".into(), "shop".into())
        );
        let ep = k.endpoint("n1", "shop", "web-0");
        assert_eq!(ep, "/weft/v1/policy/endpoints/n1/shop/web-0");
        assert_eq!(
            k.classify(ep.as_bytes()),
            KeyKind::Endpoint("n1".into(), "shop".into(), "web-0".into())
        );
        for other in [
            &b"/weft/v1/policy/endpoints/n1/shop"[..],
            b"/weft/v1/policy/endpoints/n1/shop/a/b",
            b"/weft/v1/policy/podlabels/shop",
            b"/weft/v1/policy/podlabels/shop/a/b",
            b"/weft/v1/policy/namespaces/a/b",
            b"/weft/v1/policy/what/a",
        ] {
            assert_eq!(k.classify(other), KeyKind::Other, "{other:?}");
        }
        for other in [
            &b"/weft/v10/config"[..],
            b"/weft/v1/blocks/v6/10.244.1.0_26",
            b"/weft/v1/blocks/v4/10.244.1.1_26",
            b"/weft/v1/blocks/v4/garbage",
            b"/weft/v1/nodes/",
            b"/weft/v1/what",
            b"\xff",
        ] {
            assert_eq!(k.classify(other), KeyKind::Other, "{other:?}");
        }
    }

    #[test]
    fn range_end() {
        assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }
}
