//! The weft paths come from real labs (`weftctl lab`, docs/lab.md): two nodes on one
//! underlay segment behind the lab's router, one real weftd per node, pods wired by the
//! real plugin in bridge mode. The lab is driven through this very executable, as a person
//! would, and `lab down` runs on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde::Deserialize;

use crate::bench::child::die_with_parent;
use crate::bench::error::{BenchError, Result};

/// Where labs keep their state, one directory per lab (docs/lab.md).
pub const LAB_STATE_ROOT: &str = "/run/weft-lab";

/// `weftctl lab --name NAME down`, for a lab left by a killed run.
pub fn down_by_name(name: &str) -> Result<()> {
    let exe = std::env::current_exe().map_err(BenchError::io("finding weftctl-lab itself"))?;
    Lab {
        name: name.to_owned(),
        exe,
        up: true,
    }
    .down()
}

/// A running lab; removed (`lab down`) on drop.
pub struct Lab {
    name: String,
    exe: PathBuf,
    up: bool,
}

/// A pod of the lab: its network namespace, IPv4 address and the prefix it came with (in
/// bridge mode, its node's block).
#[derive(Debug, Clone)]
pub struct LabPod {
    pub netns: String,
    pub addr: String,
    pub block: ipnet::Ipv4Net,
}

#[derive(Deserialize)]
struct PodView {
    name: String,
    addresses: Vec<String>,
}

impl Lab {
    /// `lab up` with two nodes and no pods, IPv4 only (and `extra` flags), then `pods` =
    /// (name, node) added.
    pub fn up(
        name: &str,
        backend: &str,
        bin_dir: Option<&Path>,
        pods: &[(&str, u32)],
        extra: &[&str],
    ) -> Result<Lab> {
        let exe = std::env::current_exe().map_err(BenchError::io("finding weftctl-lab itself"))?;
        // Recorded before `up`, so a half-made lab is removed too.
        let lab = Lab {
            name: name.to_owned(),
            exe,
            up: true,
        };
        let mut args = vec![
            "up",
            "--nodes",
            "2",
            "--pods-per-node",
            "0",
            "--backend",
            backend,
            "--no-ipv6",
        ];
        let bin = bin_dir.map(|d| d.display().to_string());
        if let Some(b) = &bin {
            args.extend(["--bin-dir", b.as_str()]);
        }
        args.extend(extra);
        lab.cmd(&args)?;
        for (pod, node) in pods {
            let node = node.to_string();
            lab.cmd(&["pod", "add", pod, "--node", &node])?;
        }
        Ok(lab)
    }

    /// The pods with their namespace and first IPv4 address.
    pub fn pod(&self, pod: &str) -> Result<LabPod> {
        let out = self.cmd(&["pods", "-o", "json"])?;
        let views: Vec<PodView> =
            serde_json::from_slice(&out.stdout).map_err(|e| BenchError::Unexpected {
                what: format!("`weftctl lab --name {} pods -o json`", self.name),
                detail: e.to_string(),
            })?;
        let view = views
            .iter()
            .find(|v| v.name == pod)
            .ok_or_else(|| BenchError::Unexpected {
                what: format!("lab {}", self.name),
                detail: format!("pod {pod} is not listed"),
            })?;
        let net = view
            .addresses
            .iter()
            .find_map(|a| a.parse::<ipnet::Ipv4Net>().ok())
            .ok_or_else(|| BenchError::Unexpected {
                what: format!("lab {}", self.name),
                detail: format!("pod {pod} has no IPv4 address"),
            })?;
        Ok(LabPod {
            netns: format!("wl{}-p-{pod}", self.name),
            addr: net.addr().to_string(),
            block: net.trunc(),
        })
    }

    /// Node `k`'s namespace (`wl<LAB>-nK`).
    pub fn node_ns(&self, k: u32) -> String {
        format!("wl{}-n{k}", self.name)
    }

    fn cmd(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = Command::new(&self.exe);
        cmd.args(["lab", "--name", &self.name]).args(args);
        die_with_parent(&mut cmd);
        let out = cmd.output().map_err(BenchError::io(format!(
            "running {} lab {}",
            self.exe.display(),
            args.join(" ")
        )))?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(BenchError::Command {
                what: format!("weftctl lab --name {} {}", self.name, args.join(" ")),
                status: out.status.to_string(),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            })
        }
    }

    /// `lab down` now, reporting failure (Drop does the same, silently).
    pub fn down(mut self) -> Result<()> {
        self.up = false;
        self.cmd(&["down"]).map(|_| ())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.up
            && let Err(e) = self.cmd(&["down"])
        {
            eprintln!("weftctl: cleanup: {e}");
        }
    }
}
