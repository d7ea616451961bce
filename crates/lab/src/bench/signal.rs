//! Ctrl-C / SIGTERM handling that leaves no namespaces behind.
//!
//! The handler only stores a flag (the one thing that is async-signal-safe to do); the phases
//! check it after every plugin exec and return [`BenchError::Interrupted`], so the ordinary
//! Drop guards remove the namespaces and the temp dir on the way out. `SA_RESETHAND` puts the
//! default action back, so a second Ctrl-C kills at once if a plugin hangs.
//!
//! [`BenchError::Interrupted`]: super::error::BenchError::Interrupted

use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

use super::error::{BenchError, Result};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Installs the flag-setting handler for SIGINT, SIGTERM and SIGHUP.
pub fn install() -> Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESETHAND,
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only touches an atomic, which is async-signal-safe.
        unsafe { sigaction(signal, &action) }.map_err(|errno| BenchError::Io {
            what: format!("installing the {signal} handler"),
            source: errno.into(),
        })?;
    }
    Ok(())
}

/// Whether a termination signal arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Returns `Err(Interrupted)` once a termination signal arrived.
pub fn check() -> Result<()> {
    if interrupted() {
        Err(BenchError::Interrupted)
    } else {
        Ok(())
    }
}
