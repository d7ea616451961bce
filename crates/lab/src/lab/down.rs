//! `lab down`: remove everything the lab made, whatever state it is in.
//!
//! Nothing here trusts the record to be complete (a crash can stop `up` anywhere): the
//! processes are those the pidfiles name plus those a /proc scan attributes to the lab
//! (`procs::Owner`), the namespaces are all those with the lab's prefix, and the state dir
//! goes last. Processes go first, so no weftd reacts to its node vanishing. Running it again
//! finds nothing and says so.

use std::path::PathBuf;
use std::time::Duration;

use super::error::{LabError, Result};
use super::names::Names;
use super::procs;
use super::state::Lock;
use super::{controlplane, etcd, kubelet, node, nodeview, owner};
use crate::netns;

/// How long daemons get to exit on SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(5);

pub fn run(names: &Names) -> Result<()> {
    let dir = names.state_dir();
    // Wait for a command that is changing the lab, but a crashed one holds no lock (flock
    // dies with its process) and a hung one must not keep the lab alive: so no lock at all
    // when there is no state dir.
    let _lock = if dir.is_dir() {
        Some(Lock::acquire(names)?)
    } else {
        None
    };

    let owner = owner(names)?;
    let mut pids: Vec<u32> = pidfiles(names)
        .iter()
        .filter_map(|p| procs::read_pidfile(p))
        .filter(|pid| owner.owns(*pid))
        .collect();
    for pid in owner.scan() {
        if !pids.contains(&pid) {
            pids.push(pid);
        }
    }
    let survivors = procs::stop(&pids, libc::SIGTERM, STOP_GRACE);

    let prefix = names.prefix();
    let namespaces: Vec<String> = netns::list()?
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    netns::remove(&namespaces)?;
    // `--datapath ebpf`: bpffs is not per namespace; the pins outlive the nodes.
    node::remove_pins(names)?;

    // The namespaces' inodes are still in `owner`: anything that got into one meanwhile.
    let late = owner.scan();
    let late_survivors = procs::stop(&late, libc::SIGKILL, Duration::from_secs(2));

    // A kubelet node's view: its mount namespace ends with its last process once unpinned,
    // and with it every mount containerd and kubelet made. Then the pods' cgroups.
    let views = nodeview::remove_all(names)?;
    let cgroups_left = kubelet::remove_cgroups(names, None);
    if !cgroups_left.is_empty() {
        return Err(LabError::invalid(
            "lab down",
            names.lab(),
            format!("cgroups {cgroups_left:?} would not go (processes left in them?)"),
        ));
    }

    let had_dir = dir.exists();
    if had_dir {
        std::fs::remove_dir_all(&dir)
            .map_err(LabError::io(format!("removing {}", dir.display())))?;
    }
    let left: Vec<u32> = survivors.into_iter().chain(late_survivors).collect();
    if !left.is_empty() {
        return Err(LabError::invalid(
            "lab down",
            names.lab(),
            format!("processes {left:?} did not exit on SIGKILL"),
        ));
    }
    if pids.is_empty() && namespaces.is_empty() && !had_dir && views == 0 {
        eprintln!("lab {}: nothing to remove", names.lab());
    } else {
        eprintln!(
            "lab {}: removed {} namespace(s), stopped {} process(es), removed {}",
            names.lab(),
            namespaces.len(),
            pids.len() + late.len(),
            dir.display()
        );
    }
    Ok(())
}

/// Every pidfile the lab may have written.
fn pidfiles(names: &Names) -> Vec<PathBuf> {
    let kube = controlplane::paths(names);
    let mut files = vec![
        etcd::paths(names).pidfile,
        kube.apiserver_pidfile,
        kube.controller_pidfile,
        kube.scheduler_pidfile,
    ];
    let nodes_dir = names.state_dir().join("nodes");
    if let Ok(entries) = std::fs::read_dir(&nodes_dir) {
        for entry in entries.flatten() {
            if let Some(node) = entry.file_name().to_str() {
                files.push(node::paths(names, node).pidfile);
                files.extend(kubelet::pidfiles(names, node));
            }
        }
    }
    files
}
