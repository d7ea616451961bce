//! The kernel's own floor for a pod's network teardown: create a bare veth pair (host end in
//! the node namespace, peer straight into the pod namespace) and delete it, timing each,
//! in-process over one netlink socket — no exec, no IPAM, no bridge. A CNI DEL cannot be
//! faster than the delete; the target says how close weft's DEL must come to it.

use std::path::Path;
use std::time::{Duration, Instant};

use weft_net::{Handle, NetNs, VethSpec};

use super::error::{BenchError, Result};
use super::runner::Pod;
use super::signal;

/// Per-pair wall times of the create and of the delete, for bare pairs (both ends down,
/// the target's floor) and for pairs brought up first (as every pod's veth is: closing a
/// running device costs the kernel more, so this row shows how much of a DEL is that).
#[derive(Debug, Default)]
pub struct Floor {
    pub create: Vec<Duration>,
    pub delete: Vec<Duration>,
    pub delete_up: Vec<Duration>,
}

/// Creates and deletes two veth pairs per pod (one bare, one up), in `node_ns`.
pub fn measure(node_ns: &Path, pods: &[Pod]) -> Result<Floor> {
    let node = NetNs::open(node_ns).map_err(floor_err("open netns", node_ns.display()))?;
    let mut host = Handle::new_in(&node).map_err(floor_err("netlink socket", "node"))?;
    let mut floor = Floor::default();
    for pod in pods {
        signal::check()?;
        // Opened per pod, outside the timings: that is the runtime's business, and holding
        // thousands of namespace fds at once could hit the fd limit.
        let pod_ns =
            NetNs::open(&pod.netns).map_err(floor_err("open netns", pod.netns.display()))?;
        // `wtbf<i>` stays within the 15-byte limit for any pod count we accept.
        let host_name = format!("wtbf{}", pod.index);
        let spec = VethSpec {
            host_name: &host_name,
            host_alias: None,
            peer_name: "eth0",
            peer_ns: &pod_ns,
            mtu: None,
            peer_mac: None,
        };

        let start = Instant::now();
        host.create_veth(&spec)
            .map_err(floor_err("create veth", &host_name))?;
        floor.create.push(start.elapsed());
        floor.delete.push(timed_delete(&mut host, &host_name)?);

        host.create_veth(&spec)
            .map_err(floor_err("create veth", &host_name))?;
        set_up(&mut host, &host_name)?;
        let mut in_pod =
            Handle::new_in(&pod_ns).map_err(floor_err("netlink socket", pod.netns.display()))?;
        set_up(&mut in_pod, "eth0")?;
        floor.delete_up.push(timed_delete(&mut host, &host_name)?);
    }
    Ok(floor)
}

fn timed_delete(handle: &mut Handle, name: &str) -> Result<Duration> {
    let start = Instant::now();
    let existed = handle
        .delete_link_by_name(name)
        .map_err(floor_err("delete veth", name))?;
    let elapsed = start.elapsed();
    if existed {
        Ok(elapsed)
    } else {
        Err(BenchError::Floor {
            op: "delete veth",
            ifname: name.to_owned(),
            message: "the link vanished between create and delete".to_owned(),
        })
    }
}

fn set_up(handle: &mut Handle, name: &str) -> Result<()> {
    let link = handle
        .link_by_name(name)
        .map_err(floor_err("look up", name))?
        .ok_or_else(|| BenchError::Floor {
            op: "look up",
            ifname: name.to_owned(),
            message: "not found right after creating it".to_owned(),
        })?;
    handle.set_up(link.index).map_err(floor_err("set up", name))
}

fn floor_err<E: std::fmt::Display>(
    op: &'static str,
    ifname: impl std::fmt::Display,
) -> impl FnOnce(E) -> BenchError {
    let ifname = ifname.to_string();
    move |err| BenchError::Floor {
        op,
        ifname,
        message: err.to_string(),
    }
}
