//! Running `nft`: one script as one atomic transaction (the table's first build and whole
//! replaces), and reading the table's counters back (over netlink). The agent may spawn
//! `nft` (the plugins may not); both run on a blocking thread so the control loop is not
//! held by a slow commit.

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use weft_nft::counters;
use weft_policy::Direction;
use weft_policy::plan::{self, Plan, SetName};

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
    run_nft(std::iter::once(Ok(script.as_bytes())))
}

/// Bytes of script handed to the writer at a time by [`replace_table`].
const PIECE_BYTES: usize = 256 << 10;

/// Replaces table `inet <plan.table>` with `plan` in one `nft -f` transaction (`add` first
/// so `delete` cannot fail on a missing table), the script streamed to `nft` as
/// [`plan::render_pieces`] makes it: the first build of a large plan is tens of MB of text
/// (760k elements in `weftctl bench scale`), which weftd never holds whole — only a piece
/// in flight to the blocking thread that writes `nft`'s stdin.
pub async fn replace_table(p: &Plan) -> Result<(), Error> {
    // `None` ends the script. A channel closed before it (this future dropped half way)
    // must not end nft's input: a prefix of the script is a valid script too, and nft
    // would commit a table missing what came after it.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Option<String>>(2);
    let writer = tokio::task::spawn_blocking(move || {
        let mut ended = false;
        run_nft(std::iter::from_fn(|| {
            if ended {
                return None;
            }
            match rx.blocking_recv() {
                Some(Some(text)) => Some(Ok(text.into_bytes())),
                Some(None) => None,
                None => {
                    ended = true;
                    Some(Err(Error::NftCommand {
                        step: "writing to",
                        source: std::io::Error::other("the script stopped before its end"),
                    }))
                }
            }
        }))
    });
    let t = &p.table;
    let mut piece = format!("add table inet {t}\ndelete table inet {t}\n");
    let mut sent = true;
    for text in plan::render_pieces(p) {
        piece.push_str(&text);
        if piece.len() >= PIECE_BYTES {
            // Refused: the writer stopped (nft failed), and its result says why.
            sent = tx.send(Some(std::mem::take(&mut piece))).await.is_ok();
            if !sent {
                break;
            }
        }
    }
    if sent && tx.send(Some(piece)).await.is_ok() {
        let _ = tx.send(None).await;
    }
    drop(tx);
    writer.await.map_err(|source| Error::Thread {
        what: "nft",
        source,
    })?
}

/// Runs `nft -f -` with the script `pieces` make, in order; a piece that is an error kills
/// nft before its input ends, so nothing of the script is committed.
fn run_nft<B: AsRef<[u8]>>(pieces: impl Iterator<Item = Result<B, Error>>) -> Result<(), Error> {
    let failed = |step| move |source| Error::NftCommand { step, source };
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(failed("cannot run"))?;
    if let Some(mut stdin) = child.stdin.take() {
        for piece in pieces {
            let piece = match piece {
                Ok(p) => p,
                Err(e) => {
                    // Killed with its input still open: it has parsed, not committed.
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(e);
                }
            };
            stdin
                .write_all(piece.as_ref())
                .map_err(failed("writing to"))?;
        }
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
