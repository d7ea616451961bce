//! Pods: a network namespace each, wired by executing the plugin chain of the node's
//! conflist exactly as a container runtime does (`weft_cni::runtime`: CNI_* variables, the
//! config on stdin, `prevResult` on DEL), with the plugin process inside the node's
//! namespace as the runtime's own process would be.

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use ipnet::IpNet;
use serde_json::Value;
use weft_cni::runtime::{Attachment, Runtime};

use super::error::{LabError, RecordError, Result};
use super::names::Names;
use super::node;
use super::state::{Options, Pod};
use crate::netns;

/// Where the reference plugins are, after the lab's own bin dir on CNI_PATH.
const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

/// A runtime whose plugins run inside `node`'s namespace.
fn runtime(names: &Names, opts: &Options, node: &str) -> Result<Runtime> {
    let ns_file = Arc::new(netns::open(&names.node(node))?);
    let mut rt = Runtime::new(vec![opts.bin_dir.clone(), PathBuf::from(REFERENCE_PLUGINS)]);
    rt.customize = Some(Box::new(move |cmd: &mut Command| {
        // The Arc in this closure keeps the fd open for as long as the runtime lives.
        let fd = ns_file.as_raw_fd();
        // SAFETY: setns(2) is async-signal-safe and the only thing done between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }));
    Ok(rt)
}

/// The node's network configuration, as weftd wrote it.
fn conflist(names: &Names, node: &str) -> Result<Value> {
    let path = node::paths(names, node).conflist();
    let bytes = std::fs::read(&path).map_err(|e| LabError::NodeNotReady {
        node: node.to_owned(),
        reason: format!("reading {}: {e}", path.display()),
    })?;
    serde_json::from_slice(&bytes).map_err(|source| {
        RecordError::State {
            what: path.display().to_string(),
            source,
        }
        .into()
    })
}

fn attachment(names: &Names, pod: &Pod) -> Attachment {
    Attachment {
        container_id: pod.container_id.clone(),
        netns: netns::path(&names.pod(&pod.name)).display().to_string(),
        ifname: "eth0".to_owned(),
        // What kubelet passes, so weft sees the same as in a real cluster.
        cni_args: Some(format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={}",
            pod.namespace, pod.name, pod.container_id
        )),
        capability_args: Default::default(),
    }
}

/// Makes the pod's namespace and runs ADD; records the result in `pod`. A namespace left by
/// a crash before the result was recorded gets a DEL first (the plugin's ADD is not asked to
/// guess whether an existing attachment is its own), then is made afresh.
pub fn add(names: &Names, opts: &Options, pod: &mut Pod) -> Result<()> {
    let ns_name = names.pod(&pod.name);
    let conf = conflist(names, &pod.node)?;
    let rt = runtime(names, opts, &pod.node)?;
    let att = attachment(names, pod);
    if netns::exists(&ns_name) {
        let _ = rt.del(&conf, &att, None);
        netns::remove(std::slice::from_ref(&ns_name))?;
    }
    netns::create(std::slice::from_ref(&ns_name))?;
    match rt.add(&conf, &att) {
        Ok(result) => {
            pod.addresses = addresses(&result);
            pod.result = Some(result);
            Ok(())
        }
        Err(source) => {
            // As a runtime does after a failed ADD: DEL, then drop the sandbox.
            let _ = rt.del(&conf, &att, None);
            let _ = netns::remove(std::slice::from_ref(&ns_name));
            Err(LabError::Plugin {
                pod: pod.name.clone(),
                verb: "ADD",
                source: Box::new(source),
            })
        }
    }
}

/// Runs DEL (with the ADD's result) and removes the pod's namespace. With the node gone
/// there is nothing to run DEL in, and nothing left for it to clean: only the namespace goes.
pub fn del(names: &Names, opts: &Options, pod: &Pod) -> Result<()> {
    let ns_name = names.pod(&pod.name);
    if netns::exists(&names.node(&pod.node)) {
        let conf = conflist(names, &pod.node)?;
        let rt = runtime(names, opts, &pod.node)?;
        rt.del(&conf, &attachment(names, pod), pod.result.as_ref())
            .map_err(|source| LabError::Plugin {
                pod: pod.name.clone(),
                verb: "DEL",
                source: Box::new(source),
            })?;
    }
    netns::remove(std::slice::from_ref(&ns_name))?;
    Ok(())
}

/// Runs CHECK with the ADD's result as `prevResult`, as a runtime does for a running pod.
pub fn check(names: &Names, opts: &Options, pod: &Pod) -> Result<()> {
    let Some(prev) = pod.result.as_ref() else {
        return Err(LabError::invalid(
            "pod",
            &pod.name,
            "its ADD never finished; there is nothing to check",
        ));
    };
    let conf = conflist(names, &pod.node)?;
    let rt = runtime(names, opts, &pod.node)?;
    rt.check(&conf, &attachment(names, pod), prev)
        .map_err(|source| LabError::Plugin {
            pod: pod.name.clone(),
            verb: "CHECK",
            source: Box::new(source),
        })
}

/// The addresses of a CNI result.
fn addresses(result: &Value) -> Vec<IpNet> {
    result
        .get("ips")
        .and_then(Value::as_array)
        .map(|ips| {
            ips.iter()
                .filter_map(|ip| ip.get("address")?.as_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn addresses_come_from_ips() {
        let r = json!({"ips": [{"address": "10.244.0.2/26", "gateway": "10.244.0.1"},
                               {"address": "fd00:10:244::2/122"}, {"address": "junk"}]});
        let a: Vec<String> = addresses(&r).iter().map(ToString::to_string).collect();
        assert_eq!(a, ["10.244.0.2/26", "fd00:10:244::2/122"]);
        assert!(addresses(&json!({})).is_empty());
    }
}
