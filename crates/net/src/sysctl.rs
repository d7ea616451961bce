//! Reads and writes under /proc/sys.
//!
//! /proc/sys/net resolves to the network namespace of the thread that *opens* the file,
//! so a per-pod setting is written from inside `NetNs::run`. Keys use the slash form
//! ("net/ipv4/conf/eth0/forwarding"): the dotted form is ambiguous for interface names
//! that contain dots (VLANs such as "eth0.100").

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;

use crate::error::{Error, Result};

fn path_of(key: &str) -> Result<PathBuf> {
    let valid = !key.is_empty()
        && !key.contains('\0')
        && key
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if !valid {
        return Err(Error::Invalid(format!("sysctl key {key:?}")));
    }
    Ok(PathBuf::from("/proc/sys").join(key))
}

fn map_err(key: &str, action: &str, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::NotFound {
        Error::NotFound {
            what: format!("sysctl {key}"),
        }
    } else {
        Error::io(format!("{action} sysctl {key}"), e)
    }
}

pub fn set(key: &str, value: &str) -> Result<()> {
    let path = path_of(key)?;
    let mut file = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| map_err(key, "open", e))?;
    // One write: proc handlers parse each write() call as a complete value.
    file.write_all(value.as_bytes())
        .map_err(|e| map_err(key, &format!("write {value:?} to"), e))
}

pub fn get(key: &str) -> Result<String> {
    let path = path_of(key)?;
    let value = fs::read_to_string(&path).map_err(|e| map_err(key, "read", e))?;
    Ok(value.trim_end_matches('\n').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_escaping_keys() {
        for k in [
            "",
            "../etc/passwd",
            "net/../../etc",
            "net//ipv4",
            "/net/ipv4",
            "net/ipv4/",
        ] {
            assert!(matches!(path_of(k), Err(Error::Invalid(_))), "{k}");
        }
        assert_eq!(
            path_of("net/ipv4/ip_forward").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
    }
}
