//! Running `nft`: one script as one atomic transaction (the table's first build and whole
//! replaces), and reading the table's counters back (over netlink). The agent may spawn
//! `nft` (the plugins may not); both run on a blocking thread so the control loop is not
//! held by a slow commit.

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use weft_nft::counters;
use weft_policy::Direction;
use weft_policy::plan::SetName;

use super::Error;

/// Give `script` to `nft -f -`; Err carries nft's complaint.
pub async fn apply(script: String) -> Result<(), Error> {
    tokio::task::spawn_blocking(move || apply_blocking(&script))
        .await
        .map_err(|source| Error::Thread {
            what: "nft",
            source,
        })?
}

/// [`apply`] on the calling thread (and so in its network namespace).
pub fn apply_blocking(script: &str) -> Result<(), Error> {
    let failed = |step| move |source| Error::NftCommand { step, source };
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(failed("cannot run"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(failed("writing to"))?;
    }
    let out = child.wait_with_output().map_err(failed("waiting for"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::NftRefused {
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// What the kernel counted as denied in `inet <table>`.
#[derive(Debug, Default, PartialEq)]
pub struct Denied {
    /// Packets dropped by each chain's `counter drop` rule: chain → packets.
    pub chains: Vec<(String, u64)>,
    /// Per-pod counters: (direction of the set, pod address, packets, bytes) for every
    /// element of the `denied_*` sets ([`SetName::Denied`]).
    pub pods: Vec<(Direction, IpAddr, u64, u64)>,
}

/// Reads the table's drop counters over netlink (`weft_nft::counters`): one dump of the
/// rules, one of the set names and one per `denied_*` set. `nft -j list table` did the same
/// in seconds of CPU at 10,000 rules, printing every set and rule only to be parsed here.
pub async fn drop_counters(table: String) -> Result<Denied, Error> {
    tokio::task::spawn_blocking(move || {
        let read = || -> Result<Denied, weft_nft::Error> {
            let chains = counters::drop_counters(&table)?;
            let mut pods = Vec::new();
            for set in counters::set_names(&table)? {
                let Ok(SetName::Denied(dir, _)) = set.parse() else {
                    continue;
                };
                for (addr, packets, bytes) in counters::element_counters(&table, &set)? {
                    pods.push((dir, addr, packets, bytes));
                }
            }
            Ok(Denied { chains, pods })
        };
        read().map_err(|source| Error::Counters { table, source })
    })
    .await
    .map_err(|source| Error::Thread {
        what: "counter",
        source,
    })?
}
