//! Every name the lab puts on the machine, and the validation of the names people give it.
//!
//! A lab called `X` owns exactly: the network namespaces whose names start with `wlX-`, the
//! directory `/run/weft-lab/X/`, and the processes started from there. Lab names are
//! lowercase letters and digits only, so `wlX-` never is a prefix of another lab's names
//! (`wla-` vs `wlab-`), and `lab down` can remove everything by that prefix. No link ever
//! exists in the host namespace: veths are created with their peer directly in a lab
//! namespace, so link names inside (`seg0`, `eth0`, …) need no prefix of their own.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{RecordError, Result};

/// Where `ip netns` keeps its bind mounts: a named namespace is this directory's entry.
pub const NETNS_DIR: &str = "/run/netns";
/// Where labs keep their state (tmpfs: a lab does not survive a reboot, nor should it).
pub const STATE_ROOT: &str = "/run/weft-lab";
/// The lab `weftctl lab` talks to without `--name`.
pub const DEFAULT_LAB: &str = "weft";
const MAX_LAB_NAME: usize = 16;

/// The names of one lab.
#[derive(Debug, Clone)]
pub struct Names {
    lab: String,
}

impl Names {
    /// Validates `lab` (1–16 lowercase letters or digits).
    pub fn new(lab: &str) -> Result<Names> {
        let ok = !lab.is_empty()
            && lab.len() <= MAX_LAB_NAME
            && lab
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !ok {
            return Err(RecordError::invalid(
                "lab name",
                lab,
                format!("use 1 to {MAX_LAB_NAME} lowercase letters or digits"),
            ));
        }
        Ok(Names {
            lab: lab.to_owned(),
        })
    }

    pub fn lab(&self) -> &str {
        &self.lab
    }

    /// The prefix of every namespace of this lab.
    pub fn prefix(&self) -> String {
        format!("wl{}-", self.lab)
    }

    /// The underlay router's namespace (segment bridges, etcd).
    pub fn underlay(&self) -> String {
        format!("{}ul", self.prefix())
    }

    /// The namespace standing for the internet.
    pub fn outside(&self) -> String {
        format!("{}out", self.prefix())
    }

    /// A node's namespace (`node` is `n1`, `n2`, …).
    pub fn node(&self, node: &str) -> String {
        format!("{}{node}", self.prefix())
    }

    /// A pod's namespace; the `p-` keeps pod names from ever meeting node names.
    pub fn pod(&self, pod: &str) -> String {
        format!("{}p-{pod}", self.prefix())
    }

    /// The container id the lab's "runtime" passes for a pod: stable across runs, so a DEL
    /// after a crash names the same attachment as the ADD did.
    pub fn container_id(&self, pod: &str) -> String {
        format!("weftlab-{}-{pod}", self.lab)
    }

    pub fn state_dir(&self) -> PathBuf {
        PathBuf::from(STATE_ROOT).join(&self.lab)
    }

    /// The control plane's files of a lab on the Kubernetes API.
    pub fn kube_dir(&self) -> PathBuf {
        self.state_dir().join("kube")
    }

    /// Its admin's kubeconfig (the API server is reachable inside the lab's namespaces).
    pub fn kube_admin_kubeconfig(&self) -> PathBuf {
        self.kube_dir().join("admin.kubeconfig")
    }
}

/// The path of a named network namespace.
pub fn netns_path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(name)
}

/// The name of node number `index`.
pub fn node_name(index: u32) -> String {
    format!("n{index}")
}

/// Parses a node given as `n2` or `2`.
pub fn node_index(given: &str) -> Result<u32> {
    let digits = given.strip_prefix('n').unwrap_or(given);
    match digits.parse::<u32>() {
        Ok(i) if i >= 1 && !digits.starts_with('+') => Ok(i),
        _ => Err(RecordError::invalid(
            "node",
            given,
            "name a node as n1, n2, … (or 1, 2, …)",
        )),
    }
}

/// The name `lab up` gives the `j`-th pod of node `index`.
pub fn planned_pod_name(index: u32, j: u32) -> String {
    format!("n{index}-p{j}")
}

/// A DNS-1123 label (what Kubernetes requires of pod and namespace names).
pub fn validate_dns_label(what: &'static str, name: &str) -> Result<()> {
    if is_dns_label(name) {
        Ok(())
    } else {
        Err(RecordError::invalid(
            what,
            name,
            "must be a DNS-1123 label: at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit",
        ))
    }
}

fn is_dns_label(name: &str) -> bool {
    let b = name.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 63
        && b.first().is_some_and(alnum)
        && b.last().is_some_and(alnum)
        && b.iter().all(|c| alnum(c) || *c == b'-')
}

/// A DNS-1123 subdomain: dot-separated labels, at most 253 characters.
fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_label)
}

/// The name part of a label key, or a non-empty value: at most 63 characters, alphanumerics
/// with '-', '_' or '.' inside.
fn is_label_word(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A Kubernetes label key: `[prefix/]name`, the prefix a DNS subdomain.
pub fn validate_label_key(key: &str) -> Result<()> {
    let ok = match key.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_word(name),
        None => is_label_word(key),
    };
    if ok {
        Ok(())
    } else {
        Err(RecordError::invalid(
            "label key",
            key,
            "must be [prefix/]name: name at most 63 alphanumerics, '-', '_' or '.' (alphanumeric at both ends), prefix a DNS subdomain",
        ))
    }
}

/// A Kubernetes label value: empty, or like the name part of a key.
pub fn validate_label_value(key: &str, value: &str) -> Result<()> {
    if value.is_empty() || is_label_word(value) {
        Ok(())
    } else {
        Err(RecordError::invalid(
            "label value",
            format!("{key}={value}"),
            "must be empty or at most 63 alphanumerics, '-', '_' or '.' (alphanumeric at both ends)",
        ))
    }
}

/// One change to a pod's labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelChange {
    Set(String, String),
    Remove(String),
}

/// Parses `k=v` (set) or `k-` (remove), validated.
pub fn parse_label_change(arg: &str) -> Result<LabelChange> {
    if let Some((key, value)) = arg.split_once('=') {
        validate_label_key(key)?;
        validate_label_value(key, value)?;
        Ok(LabelChange::Set(key.to_owned(), value.to_owned()))
    } else if let Some(key) = arg.strip_suffix('-') {
        validate_label_key(key)?;
        Ok(LabelChange::Remove(key.to_owned()))
    } else {
        Err(RecordError::invalid(
            "label",
            arg,
            "write key=value to set a label, key- to remove it",
        ))
    }
}

/// Parses `k=v,k2=v2` (the `--labels` of `pod add`); an empty string is no labels.
pub fn parse_labels(list: &str) -> Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    for item in list.split(',').filter(|s| !s.is_empty()) {
        match parse_label_change(item)? {
            LabelChange::Set(k, v) => {
                labels.insert(k, v);
            }
            LabelChange::Remove(_) => {
                return Err(RecordError::invalid("label", item, "write key=value"));
            }
        }
    }
    Ok(labels)
}

/// Parses `name=port[/PROTO],…` (the `--ports` of `pod add`): named container ports as a
/// Pod spec declares them (IANA service names, 1–65535, TCP by default, UDP or SCTP).
pub fn parse_ports(list: &str) -> Result<Vec<super::state::NamedPort>> {
    let mut ports: Vec<super::state::NamedPort> = Vec::new();
    for item in list.split(',').filter(|s| !s.is_empty()) {
        let bad = |reason: &str| RecordError::invalid("port", item, reason);
        let (name, rest) = item
            .split_once('=')
            .ok_or_else(|| bad("write name=port or name=port/PROTO, e.g. http=8080/TCP"))?;
        let (number, protocol) = rest.split_once('/').unwrap_or((rest, "TCP"));
        if !is_port_name(name) {
            return Err(bad(
                "a port name is 1-15 lowercase letters, digits and '-', with a letter, no '-' at \
                 either end and no \"--\"",
            ));
        }
        let port = number
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad("the port must be 1 to 65535"))?;
        let protocol = protocol.to_ascii_uppercase();
        if !["TCP", "UDP", "SCTP"].contains(&protocol.as_str()) {
            return Err(bad("the protocol must be TCP, UDP or SCTP"));
        }
        if ports.iter().any(|p| p.name == name) {
            return Err(bad("each port name once"));
        }
        ports.push(super::state::NamedPort {
            name: name.to_owned(),
            protocol,
            port,
        });
    }
    Ok(ports)
}

/// Kubernetes' IANA_SVC_NAME.
fn is_port_name(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_names_are_prefix_free() {
        assert!(Names::new("weft").is_ok());
        assert!(Names::new("t123").is_ok());
        for bad in ["", "a-b", "A", "a_b", "abcdefghijklmnopq", "a/b", "é"] {
            assert!(Names::new(bad).is_err(), "{bad:?}");
        }
        let n = Names::new("ab").unwrap();
        assert_eq!(n.underlay(), "wlab-ul");
        assert_eq!(n.node("n3"), "wlab-n3");
        assert_eq!(n.pod("web"), "wlab-p-web");
        assert!(!n.node("n1").starts_with(&Names::new("a").unwrap().prefix()));
    }

    #[test]
    fn node_names() {
        assert_eq!(node_index("n2").unwrap(), 2);
        assert_eq!(node_index("7").unwrap(), 7);
        for bad in ["n0", "0", "x1", "n", "n-1", "n+1", ""] {
            assert!(node_index(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pod_names_are_dns_labels() {
        for good in ["a", "web-1", "n1-p2", &"a".repeat(63)] {
            assert!(validate_dns_label("pod name", good).is_ok(), "{good:?}");
        }
        for bad in ["", "-a", "a-", "Web", "a_b", "a.b", &"a".repeat(64)] {
            assert!(validate_dns_label("pod name", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn labels_follow_kubernetes() {
        assert_eq!(
            parse_labels("app=web,tier=").unwrap(),
            BTreeMap::from([
                ("app".to_owned(), "web".to_owned()),
                ("tier".to_owned(), String::new())
            ])
        );
        assert!(parse_labels("example.com/role=db").is_ok());
        assert!(parse_labels("").unwrap().is_empty());
        for bad in [
            "app",
            "=v",
            "-a=b",
            "a=-b",
            "a=b c",
            "Ex_am.com/a=b",
            "a/b/c=d",
        ] {
            assert!(parse_labels(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_label_change("app-").unwrap(),
            LabelChange::Remove("app".to_owned())
        );
        assert_eq!(
            parse_label_change("a=b=c").unwrap_err().to_string(),
            "invalid label value \"a=b=c\": must be empty or at most 63 alphanumerics, '-', '_' or '.' (alphanumeric at both ends)"
        );
    }

    #[test]
    fn ports_are_named_container_ports() {
        let p = parse_ports("http=8080,dns=53/udp,sig=80/SCTP").unwrap();
        let got: Vec<(&str, &str, u16)> = p
            .iter()
            .map(|p| (p.name.as_str(), p.protocol.as_str(), p.port))
            .collect();
        assert_eq!(
            got,
            [
                ("http", "TCP", 8080),
                ("dns", "UDP", 53),
                ("sig", "SCTP", 80)
            ]
        );
        assert!(parse_ports("").unwrap().is_empty());
        for bad in [
            "http",
            "http=0",
            "http=65536",
            "http=80/icmp",
            "Http=80",
            "80=80",
            "a--b=1",
            "-a=1",
            "abcdefghijklmnop=1",
            "a=1,a=2",
        ] {
            assert!(parse_ports(bad).is_err(), "{bad:?}");
        }
    }
}
