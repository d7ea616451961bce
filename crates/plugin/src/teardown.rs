//! Deleting a pod's veth without making the runtime wait for the kernel's deferred part.
//!
//! A link delete has two halves. The visible one runs under RTNL and takes about a
//! millisecond: the device is closed and unlisted, its addresses, routes and neighbours are
//! flushed, and its name is free again. The deferred one follows in the same system call
//! after RTNL is released: an RCU barrier and the wait for the last references, 15–20 ms on
//! this class of machine, during which nothing of the device can be seen or used. The
//! reference plugins make every pod teardown wait for both. weft forks a detached child
//! that issues the delete, and returns once the device is unlisted; the child carries the
//! deferred half and exits on its own. The child holds none of the runtime's pipes, so the
//! runtime's wait for the plugin ends when the plugin does.

use crate::errors::kernel;
use std::time::{Duration, Instant};
use weft_cni::CniError;
use weft_net::Handle;

/// How long the parent waits for the child's delete to become visible before it deletes
/// the link itself. Only a wedged kernel or a failed child gets anywhere near it.
const VISIBLE_WITHIN: Duration = Duration::from_secs(2);

/// Deletes link `name`; `Ok(false)` if there was none. `detached` forks the child described
/// above; the caller must be single-threaded then.
pub fn delete_link(host: &mut Handle, name: &str, detached: bool) -> Result<bool, CniError> {
    let Some(link) = host
        .link_by_name(name)
        .map_err(|e| kernel(&format!("looking up {name}"), e))?
    else {
        return Ok(false);
    };
    if !detached {
        return synchronous(host, link.index, name);
    }
    // SAFETY: the caller is single-threaded (DEL), so the child inherits no lock held by
    // another thread; the child only makes system calls and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        child_delete(link.index);
    }
    if pid < 0 {
        return synchronous(host, link.index, name);
    }
    let started = Instant::now();
    loop {
        match host.link_by_index(link.index) {
            Ok(None) => return Ok(true),
            Ok(Some(_)) if started.elapsed() < VISIBLE_WITHIN => {
                std::thread::sleep(Duration::from_micros(100));
            }
            // The child failed or is stuck: do it here and report what the kernel says.
            Ok(Some(_)) => return synchronous(host, link.index, name),
            Err(e) => return Err(kernel(&format!("watching {name} go"), e)),
        }
    }
}

fn synchronous(host: &mut Handle, index: u32, name: &str) -> Result<bool, CniError> {
    match host.delete_link(index) {
        Ok(()) => Ok(true),
        Err(e) if e.is_not_found() => Ok(true),
        Err(e) => Err(kernel(&format!("deleting {name}"), e)),
    }
}

/// Runs in the forked child; never returns.
fn child_delete(index: u32) -> ! {
    // SAFETY: plain system calls on file descriptors this process owns; the child must let
    // go of stdin/stdout/stderr, or a runtime reading the plugin's stdout to EOF would wait
    // for the child too.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            libc::dup2(null, 0);
            libc::dup2(null, 1);
            libc::dup2(null, 2);
            if null > 2 {
                libc::close(null);
            }
        }
        libc::setsid();
    }
    let code = match Handle::new().and_then(|mut h| h.delete_link(index)) {
        Ok(()) => 0,
        Err(e) if e.is_not_found() => 0,
        Err(_) => 1,
    };
    // SAFETY: _exit skips the parent's atexit handlers and stdio buffers, which belong to
    // the parent.
    unsafe { libc::_exit(code) }
}
