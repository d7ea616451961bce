//! The `weft` and `weft-ipam` CNI plugins: what the container runtime executes for every pod.
//!
//! Owns: the plugin configuration keys, the three attachment modes (bridge, ptp, macvlan),
//! IPAM delegation (in-process `weft-ipam`, or any IPAM binary from `CNI_PATH`), undo on
//! failure, and the plugin log.
//!
//! Must not: link an async runtime or anything of the agent's, spawn `ip`/`nft`/a shell, or
//! print anything on stdout but the one CNI document (`weft_cni::skel` does the printing).
//!
//! Besides the binaries' entry point the library offers one thing: [`collect`], the
//! cleanup of an attachment whose DEL never came, which weftd links to collect pods whose
//! network namespace is gone exactly as the GC verb collects attachments.

mod check;
pub mod collect;
mod config;
mod endpoint;
mod errors;
mod ipam;
mod log;
mod modes;
mod names;
mod pod;
mod teardown;
mod weft;

use std::io::Write;
use weft_cni::{CniError, Code};

/// Entry point of both binaries; returns the process exit code.
pub fn main_entry() -> i32 {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let name = std::path::Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ipam_only = name.starts_with("weft-ipam");
    std::panic::set_hook(Box::new(|info| {
        // A panic must still leave one CNI error on stdout, or the runtime sees garbage.
        let e = CniError::new(Code::Internal, format!("weft panicked: {info}"));
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", e.to_json(weft_cni::version::CURRENT));
        let _ = out.flush();
        std::process::exit(1);
    }));
    let (plugin, about): (&dyn weft_cni::Plugin, &str) = if ipam_only {
        (
            &ipam::IpamPlugin,
            concat!("CNI weft-ipam plugin ", env!("CARGO_PKG_VERSION")),
        )
    } else {
        (
            &weft::Weft,
            concat!("CNI weft plugin ", env!("CARGO_PKG_VERSION")),
        )
    };
    let get = |k: &str| std::env::var(k).ok();
    // Unlocked handles: ADD runs a second thread, and a lock held here for the whole verb
    // would hang that thread (or the panic hook) the moment it wrote anything.
    let outcome = weft_cni::skel::dispatch(
        plugin,
        about,
        &get,
        &mut std::io::stdin(),
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    );
    // Every CNI invocation is logged; a person running the binary by hand (no CNI_COMMAND)
    // is not one.
    let loggable = outcome.command.is_some();
    if loggable && let Some(path) = config::log_file(outcome.config.as_ref()) {
        log::append(
            &path,
            if ipam_only { "weft-ipam" } else { "weft" },
            &outcome,
        );
    }
    outcome.exit_code
}
