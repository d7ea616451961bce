//! `lab check`: which probes a lab calls for, and the report — matrices for people, JSON for
//! scripts. The probing itself is `probe`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::Serialize;
use weft_net::NetNs;

use super::error::{LabError, Result};
use super::names::Names;
use super::probe::{self, Cell, Family, Place, Probe, Proto, Section};
use super::state::State;
use super::topology::{OUTSIDE_V4, OUTSIDE_V6};
use crate::netns;

/// The outcome of a check.
#[derive(Debug, Serialize)]
pub struct Report {
    pub lab: String,
    pub ok: bool,
    pub total: usize,
    pub failed: usize,
    pub elapsed_ms: u64,
    /// Pods the record plans but that have no ADD result (a `lab up` that did not finish).
    pub unwired_pods: Vec<String>,
    /// Nodes or pods whose namespace is missing.
    pub missing: Vec<String>,
    pub cells: Vec<Cell>,
    /// Every place in the order rows and columns are shown: nodes, pods, outside.
    #[serde(skip)]
    pub order: Vec<String>,
}

/// Probes everything the lab has, each cell retried for up to `timeout`.
pub fn run(names: &Names, state: &State, timeout: Duration) -> Result<Report> {
    let start = Instant::now();
    let mut places = Vec::new();
    let mut missing = Vec::new();
    let open = |ns_name: &str| {
        NetNs::open(&netns::path(ns_name))
            .map_err(LabError::net(format!("opening netns {ns_name}")))
    };

    // Nodes, then pods, then the outside; each remembers its index in `places`.
    let mut nodes = Vec::new();
    for node in &state.nodes {
        let ns_name = names.node(&node.name);
        if !netns::exists(&ns_name) {
            missing.push(format!("node {}", node.name));
            continue;
        }
        let mut addrs: Vec<IpAddr> = vec![node.address4.into()];
        addrs.extend(node.address6.map(IpAddr::from));
        nodes.push((places.len(), addrs));
        places.push(Place {
            name: node.name.clone(),
            ns: open(&ns_name)?,
        });
    }
    let mut pods = Vec::new();
    let mut unwired_pods = Vec::new();
    for pod in &state.pods {
        let ns_name = names.pod(&pod.name);
        if !pod.is_wired() {
            unwired_pods.push(pod.name.clone());
            continue;
        }
        if !netns::exists(&ns_name) {
            missing.push(format!("pod {}", pod.name));
            continue;
        }
        let addrs: Vec<IpAddr> = pod.addresses.iter().map(|a| a.addr()).collect();
        // The node's underlay address of each family: what masquerade must show outside.
        let node_addrs: Vec<IpAddr> = state
            .node(&pod.node)
            .map(|n| {
                let mut a = vec![IpAddr::from(n.address4)];
                a.extend(n.address6.map(IpAddr::from));
                a
            })
            .unwrap_or_default();
        pods.push((places.len(), addrs, node_addrs));
        places.push(Place {
            name: pod.name.clone(),
            ns: open(&ns_name)?,
        });
    }
    let outside = places.len();
    places.push(Place {
        name: "outside".to_owned(),
        ns: open(&names.outside())?,
    });
    let mut outside_addrs = vec![IpAddr::from(OUTSIDE_V4)];
    if state.options.ipv6 {
        outside_addrs.push(OUTSIDE_V6.into());
    }

    let of =
        |addrs: &[IpAddr], family: Family| addrs.iter().copied().find(|a| Family::of(*a) == family);
    let families = [Family::V4, Family::V6];
    let mut probes: Vec<Probe> = Vec::new();
    for &(from, ref src) in &nodes {
        for family in families {
            let Some(src_addr) = of(src, family) else {
                continue;
            };
            for &(to, ref dst) in &nodes {
                if to == from {
                    continue;
                }
                if let Some(dst) = of(dst, family) {
                    probes.push(Probe {
                        section: Section::Underlay,
                        proto: Proto::Tcp,
                        from,
                        to,
                        dst,
                        expect_seen: Some(src_addr),
                    });
                }
            }
            if let Some(dst) = of(&outside_addrs, family) {
                probes.push(Probe {
                    section: Section::Underlay,
                    proto: Proto::Tcp,
                    from,
                    to: outside,
                    dst,
                    expect_seen: Some(src_addr),
                });
            }
        }
    }
    for family in families {
        for &(from, ref src, ref node_addrs) in &pods {
            let Some(src_addr) = of(src, family) else {
                continue;
            };
            for &(to, ref dst, _) in &pods {
                if let Some(dst) = of(dst, family) {
                    probes.push(Probe {
                        section: Section::PodPod,
                        proto: Proto::Tcp,
                        from,
                        to,
                        dst,
                        expect_seen: Some(src_addr),
                    });
                }
            }
            if let Some(dst) = of(&outside_addrs, family) {
                probes.push(Probe {
                    section: Section::PodOutside,
                    proto: Proto::Tcp,
                    from,
                    to: outside,
                    dst,
                    expect_seen: of(node_addrs, family),
                });
            }
        }
        for &(from, _) in &nodes {
            for &(to, ref dst, _) in &pods {
                if let Some(dst) = of(dst, family) {
                    probes.push(Probe {
                        section: Section::NodePod,
                        proto: Proto::Tcp,
                        from,
                        to,
                        dst,
                        expect_seen: None,
                    });
                }
            }
        }
    }

    // Every path once over TCP and once over UDP.
    let udp: Vec<Probe> = probes
        .iter()
        .map(|p| Probe {
            proto: Proto::Udp,
            ..p.clone()
        })
        .collect();
    probes.extend(udp);
    let cells = probe::run(&places, &probes, timeout)?;
    let order = places.iter().map(|p| p.name.clone()).collect();
    let failed = cells.iter().filter(|c| !c.ok).count();
    Ok(Report {
        lab: names.lab().to_owned(),
        ok: failed == 0 && unwired_pods.is_empty() && missing.is_empty(),
        total: cells.len(),
        failed,
        elapsed_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
        unwired_pods,
        missing,
        cells,
        order,
    })
}

impl Report {
    /// Matrices per section and family, then every failure spelled out, then one summary.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let sections = [
            (Section::Underlay, "underlay: node → node, node → outside"),
            (Section::PodPod, "pod → pod"),
            (Section::NodePod, "node → pod"),
        ];
        for (section, title) in sections {
            for family in [Family::V4, Family::V6] {
                let cells: Vec<&Cell> = self
                    .cells
                    .iter()
                    .filter(|c| c.section == section && c.family == family)
                    .collect();
                if !cells.is_empty() {
                    let title = format!("{title} ({})", family.label());
                    matrix(&mut out, &title, &cells, &self.order);
                }
            }
        }
        let outside: Vec<&Cell> = self
            .cells
            .iter()
            .filter(|c| c.section == Section::PodOutside)
            .collect();
        if !outside.is_empty() {
            let _ = writeln!(out, "pod → outside (the source the outside sees):");
            let width = outside.iter().map(|c| c.from.len()).max().unwrap_or(0);
            let mut rows: BTreeMap<&str, Vec<&Cell>> = BTreeMap::new();
            for c in &outside {
                rows.entry(c.from.as_str()).or_default().push(c);
            }
            let pods: Vec<&str> = outside.iter().map(|c| c.from.as_str()).collect();
            for pod in in_order(&pods, &self.order) {
                let mut line = format!("  {pod:<width$}");
                let cells = rows.get(pod).map(Vec::as_slice).unwrap_or_default();
                for family in [Family::V4, Family::V6] {
                    let of_family: Vec<&&Cell> =
                        cells.iter().filter(|c| c.family == family).collect();
                    if of_family.is_empty() {
                        continue;
                    }
                    let ok = of_family.iter().all(|c| c.ok);
                    let seen = of_family
                        .iter()
                        .find_map(|c| c.seen)
                        .map_or_else(|| "-".to_owned(), |s| s.to_string());
                    let m = if ok { "✓" } else { "✗" };
                    let _ = write!(line, "  {} {m} {seen}", family.label());
                }
                let _ = writeln!(out, "{}", line.trim_end());
            }
            out.push('\n');
        }
        let failures: Vec<&Cell> = self.cells.iter().filter(|c| !c.ok).collect();
        if !failures.is_empty() {
            let _ = writeln!(out, "failures:");
            for c in failures {
                let _ = writeln!(
                    out,
                    "  ✗ {} {} {} {} → {} ({}): {} [{} attempts, {} ms]",
                    section_label(c.section),
                    c.family.label(),
                    proto_label(c.proto),
                    c.from,
                    c.to,
                    c.dst,
                    c.error.as_deref().unwrap_or("no answer"),
                    c.attempts,
                    c.ms
                );
            }
            out.push('\n');
        }
        for pod in &self.unwired_pods {
            let _ = writeln!(
                out,
                "pod {pod}: not wired (its ADD never finished; run `weftctl lab up --name {}`)",
                self.lab
            );
        }
        for what in &self.missing {
            let _ = writeln!(out, "{what}: namespace missing");
        }
        let secs = self.elapsed_ms as f64 / 1000.0;
        if self.ok {
            let _ = writeln!(out, "check: all {} ok ({secs:.1} s)", self.total);
        } else {
            let mut why = format!("{} of {} probes failed", self.failed, self.total);
            if !self.unwired_pods.is_empty() {
                let _ = write!(why, ", {} pod(s) not wired", self.unwired_pods.len());
            }
            if !self.missing.is_empty() {
                let _ = write!(why, ", {} namespace(s) missing", self.missing.len());
            }
            let _ = writeln!(out, "check: FAILED — {why} ({secs:.1} s)");
        }
        out
    }
}

fn section_label(s: Section) -> &'static str {
    match s {
        Section::Underlay => "underlay",
        Section::PodPod => "pod→pod",
        Section::NodePod => "node→pod",
        Section::PodOutside => "pod→outside",
    }
}

fn proto_label(p: Proto) -> &'static str {
    match p {
        Proto::Tcp => "TCP",
        Proto::Udp => "UDP",
    }
}

/// `names` without repeats, in the order of `order` (unknown names last).
fn in_order<'a>(names: &[&'a str], order: &[String]) -> Vec<&'a str> {
    let mut unique: Vec<&str> = Vec::new();
    for n in names {
        if !unique.contains(n) {
            unique.push(n);
        }
    }
    unique.sort_by_key(|n| order.iter().position(|o| o == n).unwrap_or(usize::MAX));
    unique
}

/// A rows × columns grid of ✓/✗, with "·" where no probe ran.
fn matrix(out: &mut String, title: &str, cells: &[&Cell], order: &[String]) {
    let rows = in_order(
        &cells.iter().map(|c| c.from.as_str()).collect::<Vec<_>>(),
        order,
    );
    let cols = in_order(
        &cells.iter().map(|c| c.to.as_str()).collect::<Vec<_>>(),
        order,
    );
    // TCP and UDP of one pair share a grid cell: ✓ only when both got through.
    let mut lookup: BTreeMap<(&str, &str), bool> = BTreeMap::new();
    for c in cells {
        *lookup
            .entry((c.from.as_str(), c.to.as_str()))
            .or_insert(true) &= c.ok;
    }
    let row_w = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let col_w = cols.iter().map(|c| c.len()).max().unwrap_or(1).max(1);
    let _ = writeln!(out, "{title}:");
    let mut header = format!("  {:row_w$}", "");
    for c in &cols {
        let _ = write!(header, "  {c:>col_w$}");
    }
    let _ = writeln!(out, "{header}");
    for r in &rows {
        let mut line = format!("  {r:<row_w$}");
        for c in &cols {
            let m = match lookup.get(&(*r, *c)) {
                None => "·",
                Some(true) => "✓",
                Some(false) => "✗",
            };
            let _ = write!(line, "  {m:>col_w$}");
        }
        let _ = writeln!(out, "{line}");
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(from: &str, to: &str, ok: bool) -> Cell {
        Cell {
            section: Section::PodPod,
            proto: Proto::Tcp,
            family: Family::V4,
            from: from.to_owned(),
            to: to.to_owned(),
            dst: "10.0.0.1".parse().unwrap(),
            ok,
            seen: None,
            expected_seen: None,
            error: (!ok).then(|| "connection timed out".to_owned()),
            attempts: 3,
            ms: 5000,
        }
    }

    #[test]
    fn text_report_shows_the_grid_and_the_failures() {
        let report = Report {
            lab: "t".to_owned(),
            ok: false,
            total: 3,
            failed: 1,
            elapsed_ms: 1500,
            unwired_pods: vec![],
            missing: vec![],
            cells: vec![
                cell("a", "a", true),
                cell("a", "bb", false),
                cell("bb", "a", true),
            ],
            order: vec!["a".to_owned(), "bb".to_owned()],
        };
        let text = report.to_text();
        assert!(text.contains("pod → pod (IPv4):"), "{text}");
        assert!(text.contains("  a    ✓   ✗"), "{text}");
        assert!(text.contains("  bb   ✓   ·"), "{text}");
        assert!(
            text.contains("✗ pod→pod IPv4 TCP a → bb (10.0.0.1): connection timed out"),
            "{text}"
        );
        assert!(
            text.contains("check: FAILED — 1 of 3 probes failed (1.5 s)"),
            "{text}"
        );
    }
}
