//! Programs N synthetic peers into a throwaway network namespace and prints how long each
//! phase takes. Needs root; touches nothing outside the namespace it creates (an anonymous
//! one, gone when the process exits).
//!
//! ```text
//! cargo run --release -p weft-backend --example program_peers -- [N] [vxlan|host-gw|auto] [--v6]
//! ```

use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, unshare};
use weft_backend::{Dataplane, Drift, Kind, Local, Path, synthetic_peers};
use weft_net::{Handle, IpNet, NetNs, VethSpec};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("program_peers: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut n = 5000usize;
    let mut kind = Kind::Vxlan;
    let mut v6 = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "vxlan" => kind = Kind::Vxlan,
            "host-gw" => kind = Kind::HostGw,
            "auto" => kind = Kind::Auto,
            "--v6" => v6 = true,
            other => n = other.parse()?,
        }
    }
    // A fresh network namespace for this (single-threaded) process.
    unshare(CloneFlags::CLONE_NEWNET)?;
    let ns = NetNs::current()?;
    let mut h = Handle::new()?;
    h.create_veth(&VethSpec {
        host_name: "under0",
        host_alias: None,
        peer_name: "under1",
        peer_ns: &ns,
        mtu: Some(1500),
        peer_mac: None,
    })?;
    for name in ["lo", "under1", "under0"] {
        let link = h.link_by_name(name)?.ok_or("link vanished")?;
        h.set_up(link.index)?;
    }
    let under0 = h.link_by_name("under0")?.ok_or("link vanished")?.index;
    h.addr_add(under0, "192.168.0.1/16".parse()?, false)?;
    if v6 {
        h.addr_add(under0, "fd00::1/64".parse()?, true)?;
    }

    let mut blocks: Vec<IpNet> = vec!["10.0.0.0/24".parse()?];
    if v6 {
        blocks.push("fd57::/80".parse()?);
    }
    let local = Local {
        underlay_v4: Ipv4Addr::new(192, 168, 0, 1),
        underlay_v6: if v6 { Some("fd00::1".parse()?) } else { None },
        vtep_mac: [0x02, 0x57, 0xff, 0, 0, 1],
        blocks,
        vni: 1,
        port: 4789,
    };
    let peers = synthetic_peers(
        n + 1,
        "192.168.0.0/16".parse()?,
        if v6 { Some("fd00::/64".parse()?) } else { None },
        "10.0.0.0/8".parse()?,
        if v6 { Some("fd57::/48".parse()?) } else { None },
    )?;
    let (peers, joiner) = peers.split_at(n);

    let t = Instant::now();
    let mut dp = Dataplane::open(kind, local.clone())?;
    let open = t.elapsed();

    let t = Instant::now();
    for p in peers {
        dp.upsert_peer(p)?;
    }
    let upsert = t.elapsed();

    let t = Instant::now();
    for p in peers {
        dp.upsert_peer(p)?;
    }
    let again = t.elapsed();

    let t = Instant::now();
    let join_path = dp.upsert_peer(&joiner[0])?;
    let join = t.elapsed();

    let t = Instant::now();
    let drift = dp.resync(peers)?;
    let resync = t.elapsed();
    // The joiner is not in the list: resync removes its entries.
    let want_removed = if join_path == Path::HostGw {
        joiner[0].blocks.len()
    } else {
        joiner[0].blocks.len() * 2 + 1
    };
    if drift
        != (Drift {
            added: 0,
            removed: want_removed,
        })
    {
        return Err(format!("unexpected drift {drift:?}").into());
    }

    drop(dp);
    let t = Instant::now();
    let mut dp = Dataplane::open(kind, local)?;
    let drift = dp.resync(peers)?;
    let restart = t.elapsed();
    if drift != Drift::default() {
        return Err(format!("unexpected drift after restart {drift:?}").into());
    }

    let routes = [false, true]
        .into_iter()
        .map(|v6| {
            h.routes_by_protocol(v6, weft_backend::RTPROT_WEFT)
                .map(|r| r.len())
        })
        .sum::<Result<usize, _>>()?;

    let t = Instant::now();
    for p in peers {
        dp.remove_peer(&p.name)?;
    }
    let remove = t.elapsed();

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("{n} peers, {kind:?}, IPv6 {v6}: {routes} weft routes in the kernel");
    println!("  open (create weft.vx, dumps)     {:8.1} ms", ms(open));
    println!("  upsert all (first time)          {:8.1} ms", ms(upsert));
    println!("  upsert all again (no change)     {:8.1} ms", ms(again));
    println!("  one join                         {:8.3} ms", ms(join));
    println!("  resync (dumps, drop the joiner)  {:8.1} ms", ms(resync));
    println!("  restart: open + resync, no drift {:8.1} ms", ms(restart));
    println!("  remove all                       {:8.1} ms", ms(remove));
    Ok(())
}
