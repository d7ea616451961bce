//! The measuring tools, run inside the namespaces with `ip netns exec`: iperf3 for TCP
//! throughput, sockperf ping-pong for the request/response rate. Servers run for the whole
//! benchmark (one per path, each in its own namespace); clients run once per measurement.
//!
//! CPU placement, the one thing pinned, and why: on the 2-vCPU VM the scheduler's choice
//! decided the figures more than the path did. Unpinned, a raw veth ping-pong ran at 15k or
//! 140k round trips/s depending on whether both ends shared a CPU (a cross-CPU wakeup is a
//! virtual IPI). So:
//! - iperf3 runs twice per path. **2 CPUs**: client on the first allowed CPU, server on the
//!   second (`-A a,b`); veth hands a packet on in the sender's softirq, so the sending CPU
//!   carries every hop of the path and the receiving one copies the data out. This is what an
//!   unpinned iperf3 mostly does too, and it is the judged figure; the sender overruns the
//!   per-CPU backlog now and then (the retransmissions column), so it moves more between
//!   runs. **1 CPU**: both ends on the second CPU; no drops at all and steady to ±1 %, the
//!   inverse of the whole path's CPU cost per byte (both ends' copies included, which dilute
//!   the per-hop cost, so its ratios are kinder).
//! - sockperf: both ends on the second CPU (`taskset`). One CPU does the whole round trip,
//!   so the rate is the inverse of the path's CPU cost per request and response.
//!
//! With a single allowed CPU, everything runs on it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::bench::child::{Daemon, die_with_parent};
use crate::bench::error::{BenchError, Result};
use crate::bench::signal;
use weft_ctl::exe;

pub const IPERF_PORT: u16 = 5201;
pub const SOCKPERF_PORT: u16 = 11111;
/// iperf3's first second (slow start, the window opening) is left out of its figure.
const IPERF_OMIT_SECS: u32 = 1;
/// How long a client keeps retrying a server that is not listening yet.
const CONNECT_PATIENCE: Duration = Duration::from_secs(10);

/// Where iperf3's two ends run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    TwoCpus,
    OneCpu,
}

/// The tools' paths and the CPUs they run on.
#[derive(Debug, Clone)]
pub struct Tools {
    pub iperf3: PathBuf,
    pub sockperf: PathBuf,
    pub taskset: PathBuf,
    /// iperf3's client and server CPU; sockperf runs both ends on `cpus.1`.
    pub cpus: (usize, usize),
}

impl Tools {
    pub fn find() -> Result<Tools> {
        let find = |tool: &'static str, hint: &'static str| {
            exe::which(tool).ok_or(BenchError::MissingTool { tool, hint })
        };
        find("ip", "Debian: apt-get install iproute2")?;
        Ok(Tools {
            iperf3: find("iperf3", "Debian: apt-get install iperf3")?,
            sockperf: find("sockperf", "Debian: apt-get install sockperf")?,
            taskset: find("taskset", "Debian: apt-get install util-linux")?,
            cpus: two_cpus(),
        })
    }

    /// `taskset -c <cpu> sockperf args…`.
    fn sockperf_pinned(&self, args: &[String]) -> Vec<String> {
        let mut v = vec![
            "-c".to_owned(),
            self.cpus.1.to_string(),
            self.sockperf.display().to_string(),
        ];
        v.extend_from_slice(args);
        v
    }

    /// Both servers, listening on `addr` inside `netns`; logs go to `dir`.
    pub fn servers(&self, netns: &str, addr: &str, dir: &Path, tag: &str) -> Result<Vec<Daemon>> {
        let iperf = Daemon::spawn(
            format!("iperf3 server in {netns}"),
            netns,
            &self.iperf3,
            &[
                "-s".to_owned(),
                "-B".to_owned(),
                addr.to_owned(),
                "-p".to_owned(),
                IPERF_PORT.to_string(),
            ],
            &dir.join(format!("iperf3-{tag}.log")),
        )?;
        let sockperf = Daemon::spawn(
            format!("sockperf server in {netns}"),
            netns,
            &self.taskset,
            &self.sockperf_pinned(&[
                "sr".to_owned(),
                "--tcp".to_owned(),
                "-i".to_owned(),
                addr.to_owned(),
                "-p".to_owned(),
                SOCKPERF_PORT.to_string(),
            ]),
            &dir.join(format!("sockperf-{tag}.log")),
        )?;
        Ok(vec![iperf, sockperf])
    }

    /// One iperf3 run of `seconds` from `netns` to `addr`, client and server on two CPUs or
    /// both on one: received bits per second and the sender's retransmissions.
    pub fn throughput(
        &self,
        netns: &str,
        addr: &str,
        seconds: u32,
        placement: Placement,
    ) -> Result<Throughput> {
        let (client_cpu, server_cpu) = match placement {
            Placement::TwoCpus => self.cpus,
            Placement::OneCpu => (self.cpus.1, self.cpus.1),
        };
        let args = [
            "-c".to_owned(),
            addr.to_owned(),
            "-p".to_owned(),
            IPERF_PORT.to_string(),
            "-t".to_owned(),
            seconds.to_string(),
            "-O".to_owned(),
            IPERF_OMIT_SECS.to_string(),
            "-A".to_owned(),
            format!("{client_cpu},{server_cpu}"),
            "-J".to_owned(),
        ];
        let out = client(&format!("iperf3 to {addr}"), netns, &self.iperf3, &args)?;
        parse_iperf(&String::from_utf8_lossy(&out.stdout)).map_err(|detail| {
            BenchError::Unexpected {
                what: format!("iperf3 to {addr} from {netns}"),
                detail,
            }
        })
    }

    /// One sockperf TCP ping-pong run of `seconds` from `netns` to `addr`.
    pub fn request_response(&self, netns: &str, addr: &str, seconds: u32) -> Result<PingPong> {
        let args = self.sockperf_pinned(&[
            "pp".to_owned(),
            "--tcp".to_owned(),
            "-i".to_owned(),
            addr.to_owned(),
            "-p".to_owned(),
            SOCKPERF_PORT.to_string(),
            "-t".to_owned(),
            seconds.to_string(),
            "--mps=max".to_owned(),
            "--full-rtt".to_owned(),
        ]);
        // A run with no summary (on a starved machine sockperf can end its short run before
        // its warm-up is over) is run again, once; the second failure is reported with what
        // sockperf said.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let out = client(&format!("sockperf to {addr}"), netns, &self.taskset, &args)?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            match parse_sockperf(&text) {
                Ok(pp) => return Ok(pp),
                Err(_) if attempt < 2 => continue,
                Err(detail) => {
                    let tail: Vec<&str> = text.lines().rev().take(12).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    return Err(BenchError::Unexpected {
                        what: format!("sockperf to {addr} from {netns}"),
                        detail: format!("{detail}; it printed:\n{}", tail.join("\n")),
                    });
                }
            }
        }
    }
}

/// The first two CPUs this process may run on (the same one twice when there is only one).
fn two_cpus() -> (usize, usize) {
    let allowed: Vec<usize> = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .map(|set| {
            (0..nix::sched::CpuSet::count())
                .filter(|&c| set.is_set(c).unwrap_or(false))
                .take(2)
                .collect()
        })
        .unwrap_or_default();
    match allowed[..] {
        [a, b, ..] => (a, b),
        [a] => (a, a),
        [] => (0, 0),
    }
}

/// Runs a client to completion; retries while the server is not listening yet.
fn client(what: &str, netns: &str, program: &Path, args: &[String]) -> Result<Output> {
    let start = Instant::now();
    loop {
        signal::check()?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns]).arg(program).args(args);
        die_with_parent(&mut cmd);
        let out = cmd
            .output()
            .map_err(BenchError::io(format!("running {what} in {netns}")))?;
        if out.status.success() {
            return Ok(out);
        }
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let refused = text.contains("Connection refused") || text.contains("connection refused");
        if !refused || start.elapsed() > CONNECT_PATIENCE {
            signal::check()?;
            return Err(BenchError::Command {
                what: format!("{what} (in netns {netns})"),
                status: out.status.to_string(),
                output: text.chars().take(2000).collect(),
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// iperf3's verdict on one run.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    pub bits_per_second: f64,
    pub retransmits: u64,
}

fn parse_iperf(json: &str) -> std::result::Result<Throughput, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("output is not JSON: {e}"))?;
    if let Some(err) = v["error"].as_str() {
        return Err(err.to_owned());
    }
    let bits_per_second = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or("no end.sum_received.bits_per_second")?;
    Ok(Throughput {
        bits_per_second,
        retransmits: v["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
    })
}

/// sockperf's verdict on one ping-pong run.
#[derive(Debug, Clone, Copy)]
pub struct PingPong {
    /// Round trips completed per second over the valid (post-warm-up) duration.
    pub per_second: f64,
    /// Median round-trip time, microseconds.
    pub rtt_p50_us: f64,
}

fn parse_sockperf(text: &str) -> std::result::Result<PingPong, String> {
    // "[Valid Duration] RunTime=2.549 sec; SentMessages=49597; ReceivedMessages=49597"
    let line = text
        .lines()
        .find(|l| l.contains("[Valid Duration]"))
        .ok_or("no [Valid Duration] line")?;
    let field = |name: &str| -> Option<f64> {
        let rest = &line[line.find(name)? + name.len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    };
    let runtime = field("RunTime=").ok_or("no RunTime")?;
    let received = field("ReceivedMessages=").ok_or("no ReceivedMessages")?;
    if runtime <= 0.0 {
        return Err(format!("RunTime {runtime}"));
    }
    // "---> percentile 50.000 =   16.930"
    let rtt_p50_us = text
        .lines()
        .find(|l| l.contains("percentile 50.000"))
        .and_then(|l| l.rsplit('=').next())
        .and_then(|v| v.trim().parse().ok())
        .ok_or("no 50th percentile")?;
    Ok(PingPong {
        per_second: received / runtime,
        rtt_p50_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockperf_summary() {
        let text = "sockperf: [Total Run] RunTime=3.002 sec; Warm up time=400 msec; SentMessages=60228; ReceivedMessages=60227\n\
            sockperf: ========= Printing statistics for Server No: 0\n\
            sockperf: [Valid Duration] RunTime=2.549 sec; SentMessages=49597; ReceivedMessages=49597\n\
            sockperf: ---> percentile 75.000 =   18.427\n\
            sockperf: ---> percentile 50.000 =   16.930\n";
        let pp = parse_sockperf(text).unwrap();
        assert!((pp.per_second - 49597.0 / 2.549).abs() < 1e-6);
        assert!((pp.rtt_p50_us - 16.93).abs() < 1e-9);
        assert!(parse_sockperf("sockperf: nothing").is_err());
    }

    #[test]
    fn iperf_summary() {
        let json =
            r#"{"end":{"sum_sent":{"retransmits":3},"sum_received":{"bits_per_second":1.5e10}}}"#;
        let t = parse_iperf(json).unwrap();
        assert_eq!((t.bits_per_second, t.retransmits), (1.5e10, 3));
        assert!(parse_iperf(r#"{"error":"unable to connect"}"#).is_err());
        assert!(parse_iperf("garbage").is_err());
    }
}
