//! The two baselines, built by hand with `ip` and `bridge` the way a person would, with
//! nothing of weft in them:
//!
//! - **raw veth**: two namespaces joined by one veth pair (`eth0`, 10.251.0.1/.2, MTU 1500);
//! - **hand-built VXLAN**: two namespaces joined by one veth pair (the underlay,
//!   192.168.251.1/.2), each with a kernel VXLAN device `vx0` (VNI 42, port 4789, `dev eth0`,
//!   `nolearning`, MTU 1450 from the kernel) holding 10.252.0.1/.2, a permanent neighbour
//!   entry and a static FDB entry for the other end.
//!
//! The namespaces come from the caller (and go with it). For telling weft's share from the
//! lab's, a third pair ([`vxlan_on`]) puts hand-built VXLAN devices on two lab nodes, over
//! the very underlay weft's VXLAN path crosses.

use crate::bench::child::{ip, run};
use crate::bench::error::Result;

pub const RAW_CLIENT: &str = "10.251.0.1";
pub const RAW_SERVER: &str = "10.251.0.2";
pub const VX_CLIENT: &str = "10.252.0.1";
pub const VX_SERVER: &str = "10.252.0.2";
pub const LAB_VX_CLIENT: &str = "10.253.0.1";
pub const LAB_VX_SERVER: &str = "10.253.0.2";
const VX_UNDERLAY: [&str; 2] = ["192.168.251.1", "192.168.251.2"];
const VX_MACS: [&str; 2] = ["02:57:ba:5e:00:01", "02:57:ba:5e:00:02"];

/// The raw veth pair between `a` (client side) and `b`.
pub fn raw_pair(a: &str, b: &str) -> Result<()> {
    veth(a, b)?;
    ip(&[
        "-n",
        a,
        "addr",
        "add",
        &format!("{RAW_CLIENT}/24"),
        "dev",
        "eth0",
    ])?;
    ip(&[
        "-n",
        b,
        "addr",
        "add",
        &format!("{RAW_SERVER}/24"),
        "dev",
        "eth0",
    ])?;
    up(&[a, b], "eth0")
}

/// The hand-built VXLAN pair between `a` (client side) and `b`.
pub fn vxlan_pair(a: &str, b: &str) -> Result<()> {
    veth(a, b)?;
    for (ns, underlay) in [a, b].into_iter().zip(VX_UNDERLAY) {
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{underlay}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", ns, "link", "set", "eth0", "up"])?;
    }
    hand_vxlan(
        [a, b],
        &HandVxlan {
            dev: "vx0",
            vni: "42",
            port: "4789",
            macs: VX_MACS,
            underlay: VX_UNDERLAY,
            overlay: [VX_CLIENT, VX_SERVER],
        },
    )
}

/// A hand-built kernel VXLAN pair between two lab nodes, over the lab's own underlay
/// (`eth0`, at `underlay`): device `wbvx0` (VNI 4242, port 4790, so it never meets
/// `weft.vx`), 10.253.0.1/.2, static neighbour and FDB entries. It dies with the lab.
pub fn vxlan_on(nodes: [&str; 2], underlay: [&str; 2]) -> Result<()> {
    hand_vxlan(
        nodes,
        &HandVxlan {
            dev: "wbvx0",
            vni: "4242",
            port: "4790",
            macs: ["02:57:ba:5e:01:01", "02:57:ba:5e:01:02"],
            underlay,
            overlay: [LAB_VX_CLIENT, LAB_VX_SERVER],
        },
    )
}

/// One hand-built VXLAN device per end, each with the other end's MAC in a permanent
/// neighbour entry and a static FDB entry toward its underlay address.
struct HandVxlan<'a> {
    dev: &'a str,
    vni: &'a str,
    port: &'a str,
    macs: [&'a str; 2],
    underlay: [&'a str; 2],
    overlay: [&'a str; 2],
}

fn hand_vxlan(ends: [&str; 2], vx: &HandVxlan<'_>) -> Result<()> {
    let dev = vx.dev;
    for (i, ns) in ends.into_iter().enumerate() {
        let other = 1 - i;
        ip(&[
            "-n",
            ns,
            "link",
            "add",
            dev,
            "address",
            vx.macs[i],
            "type",
            "vxlan",
            "id",
            vx.vni,
            "local",
            vx.underlay[i],
            "dstport",
            vx.port,
            "dev",
            "eth0",
            "nolearning",
        ])?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{}/24", vx.overlay[i]),
            "dev",
            dev,
        ])?;
        ip(&["-n", ns, "link", "set", dev, "up"])?;
        ip(&[
            "-n",
            ns,
            "neigh",
            "add",
            vx.overlay[other],
            "lladdr",
            vx.macs[other],
            "dev",
            dev,
            "nud",
            "permanent",
        ])?;
        run(
            "bridge",
            &[
                "-n",
                ns,
                "fdb",
                "add",
                vx.macs[other],
                "dev",
                dev,
                "dst",
                vx.underlay[other],
                "self",
                "permanent",
            ],
        )?;
    }
    Ok(())
}

/// `eth0` in `a`, its peer `eth0` in `b`.
fn veth(a: &str, b: &str) -> Result<()> {
    ip(&[
        "-n", a, "link", "add", "eth0", "mtu", "1500", "type", "veth", "peer", "name", "eth0",
        "netns", b,
    ])
}

fn up(namespaces: &[&str], dev: &str) -> Result<()> {
    for ns in namespaces {
        ip(&["-n", ns, "link", "set", dev, "up"])?;
    }
    Ok(())
}
