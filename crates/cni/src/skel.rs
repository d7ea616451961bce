//! Verb dispatch: turns one process invocation (environment + stdin) into a typed `Request`,
//! calls the plugin, and prints exactly one JSON document on stdout. The validation order
//! mirrors the reference library's `pkg/skel` so that error codes are deterministic.

use crate::args::CniArgs;
use crate::env::RawEnv;
use crate::error::{CniError, Code};
use crate::result::CniResult;
use crate::version::{self, Semver};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }
}

/// One invocation, validated.
#[derive(Debug, Clone)]
pub struct Request {
    pub command: Command,
    /// Empty for STATUS and GC.
    pub container_id: String,
    pub netns: Option<String>,
    /// Empty for STATUS and GC.
    pub ifname: String,
    pub args: CniArgs,
    pub path: Vec<PathBuf>,
    /// The exact bytes received, for delegation (IPAM gets the same stdin).
    pub stdin: Vec<u8>,
    /// The request configuration, known to be a JSON object.
    pub config: Value,
    pub name: String,
    pub version: String,
}

impl Request {
    /// `prevResult`, read in the request's version. `None` when absent.
    pub fn prev_result(&self) -> Result<Option<CniResult>, CniError> {
        match self.config.get("prevResult") {
            None | Some(Value::Null) => Ok(None),
            Some(v) => CniResult::from_json(v, &self.version).map(Some),
        }
    }

    /// GC's list of attachments still in use: `cni.dev/valid-attachments`, else the legacy
    /// `cni.dev/attachments`; absent means none are valid.
    pub fn valid_attachments(&self) -> Result<Vec<(String, String)>, CniError> {
        let list = self
            .config
            .get("cni.dev/valid-attachments")
            .or_else(|| self.config.get("cni.dev/attachments"));
        let Some(list) = list.filter(|l| !l.is_null()) else {
            return Ok(Vec::new());
        };
        let items = list
            .as_array()
            .ok_or_else(|| CniError::invalid_config("cni.dev/valid-attachments must be a list"))?;
        items
            .iter()
            .map(|a| {
                let id = a.get("containerID").and_then(Value::as_str);
                let ifname = a.get("ifname").and_then(Value::as_str);
                match (id, ifname) {
                    (Some(id), Some(ifname)) => Ok((id.to_string(), ifname.to_string())),
                    _ => Err(CniError::invalid_config(
                        "cni.dev/valid-attachments entries need containerID and ifname",
                    )),
                }
            })
            .collect()
    }
}

/// A CNI plugin. Verbs it does not implement succeed doing nothing, as in the reference skel.
pub trait Plugin {
    fn add(&self, req: &Request) -> Result<CniResult, CniError>;
    fn del(&self, req: &Request) -> Result<(), CniError>;
    fn check(&self, req: &Request) -> Result<(), CniError>;
    fn status(&self, _req: &Request) -> Result<(), CniError> {
        Ok(())
    }
    fn gc(&self, _req: &Request) -> Result<(), CniError> {
        Ok(())
    }
}

/// What happened, for the caller's log.
#[derive(Debug)]
pub struct Outcome {
    pub command: Option<String>,
    pub container_id: Option<String>,
    pub ifname: Option<String>,
    pub config: Option<Value>,
    pub duration: Duration,
    pub error: Option<CniError>,
    pub exit_code: i32,
}

/// Runs one invocation. `about` is printed to stderr when `CNI_COMMAND` is unset.
pub fn dispatch(
    plugin: &dyn Plugin,
    about: &str,
    get_env: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> Outcome {
    let started = Instant::now();
    let env = RawEnv::from_lookup(get_env);
    let mut outcome = Outcome {
        command: env.command.clone(),
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
        config: None,
        duration: Duration::ZERO,
        error: None,
        exit_code: 0,
    };
    let mut version_for_errors = version::CURRENT.to_string();
    let res = run(
        plugin,
        &env,
        stdin,
        stdout,
        &mut outcome,
        &mut version_for_errors,
    );
    match res {
        Ok(()) => {}
        Err(e) if env.command.is_none() && e.code == Code::InvalidEnvironment as u32 => {
            // The reference prints its about text instead of an error when run by hand.
            let _ = writeln!(stderr, "{about}");
            let _ = writeln!(
                stderr,
                "CNI protocol versions supported: {}",
                version::SUPPORTED.join(", ")
            );
        }
        Err(e) => {
            let doc = e.to_json(&version_for_errors);
            let _ = writeln!(stdout, "{doc}");
            let _ = writeln!(stderr, "{e}");
            outcome.exit_code = 1;
            outcome.error = Some(e);
        }
    }
    let _ = stdout.flush();
    outcome.duration = started.elapsed();
    outcome
}

fn run(
    plugin: &dyn Plugin,
    env: &RawEnv,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    outcome: &mut Outcome,
    version_for_errors: &mut String,
) -> Result<(), CniError> {
    env.validate()?;
    let cmd_str = env.command.clone().unwrap_or_default();
    if cmd_str == "VERSION" {
        // Stdin is deliberately not read: runtimes may send nothing or garbage.
        let doc =
            json!({ "cniVersion": version::CURRENT, "supportedVersions": version::SUPPORTED });
        return write_doc(stdout, &doc);
    }
    let mut data = Vec::new();
    stdin
        .read_to_end(&mut data)
        .map_err(|e| CniError::new(Code::Io, format!("error reading from stdin: {e}")))?;
    let config: Value = serde_json::from_slice(&data).map_err(|e| {
        CniError::new(
            Code::Decoding,
            format!("error unmarshalling network config: {e}"),
        )
    })?;
    let Value::Object(obj) = &config else {
        return Err(CniError::new(
            Code::Decoding,
            "error unmarshalling network config: expected a JSON object",
        ));
    };
    let name = match obj.get("name") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return Err(CniError::new(
                Code::Decoding,
                "error unmarshalling network config: name must be a string",
            ));
        }
    };
    if name.is_empty() {
        return Err(CniError::invalid_config("missing network name"));
    }
    if !crate::env::is_valid_id(&name) {
        return Err(CniError::invalid_config(format!(
            "invalid characters in network name \"{name}\""
        ))
        .with_details("must match ^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$"));
    }
    let version = match obj.get("cniVersion") {
        None | Some(Value::Null) => "0.1.0".to_string(),
        Some(Value::String(s)) if s.is_empty() => "0.1.0".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return Err(CniError::new(
                Code::Decoding,
                "error decoding cniVersion: must be a string",
            ));
        }
    };
    outcome.config = Some(config.clone());
    let command = Command::parse(&cmd_str).ok_or_else(|| {
        CniError::new(
            Code::InvalidEnvironment,
            format!("unknown CNI_COMMAND: {cmd_str}"),
        )
    })?;
    let min = match command {
        Command::Check => Some((Semver(0, 4, 0), "CHECK")),
        Command::Status => Some((Semver(1, 1, 0), "STATUS")),
        Command::Gc => Some((Semver(1, 1, 0), "GC")),
        _ => None,
    };
    if let Some((min, verb)) = min
        && !Semver::at_least(&version, min)?
    {
        return Err(CniError::new(
            Code::IncompatibleVersion,
            format!("config version does not allow {verb}"),
        ));
    }
    if !version::is_supported(&version) {
        return Err(
            CniError::new(Code::IncompatibleVersion, "incompatible CNI versions").with_details(
                format!(
                    "config is \"{version}\", plugin supports [{}]",
                    version::SUPPORTED.join(" ")
                ),
            ),
        );
    }
    *version_for_errors = version.clone();
    let args = CniArgs::parse(env.args.as_deref().unwrap_or(""))?;
    let path = env
        .path
        .as_deref()
        .unwrap_or("")
        .split(':')
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect();
    let req = Request {
        command,
        container_id: env.container_id.clone().unwrap_or_default(),
        netns: env.netns.clone(),
        ifname: env.ifname.clone().unwrap_or_default(),
        args,
        path,
        stdin: data,
        config,
        name,
        version,
    };
    match command {
        Command::Add => {
            let result = plugin.add(&req)?;
            let doc = result.to_json(&req.version)?;
            write_doc(stdout, &doc)
        }
        Command::Del => plugin.del(&req),
        Command::Check => plugin.check(&req),
        Command::Status => plugin.status(&req),
        Command::Gc => plugin.gc(&req),
        Command::Version => Ok(()),
    }
}

fn write_doc(out: &mut dyn Write, doc: &Value) -> Result<(), CniError> {
    writeln!(out, "{doc}")
        .map_err(|e| CniError::new(Code::Io, format!("error writing the result: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::IpConfig;

    struct Fake;
    impl Plugin for Fake {
        fn add(&self, req: &Request) -> Result<CniResult, CniError> {
            Ok(CniResult {
                ips: vec![IpConfig {
                    address: "10.0.0.2/24".parse().unwrap(),
                    gateway: None,
                    interface: None,
                }],
                interfaces: vec![],
                routes: vec![],
                dns: crate::result::Dns {
                    domain: Some(req.name.clone()),
                    ..Default::default()
                },
            })
        }
        fn del(&self, _: &Request) -> Result<(), CniError> {
            Ok(())
        }
        fn check(&self, _: &Request) -> Result<(), CniError> {
            Err(CniError::new(Code::InvalidConfig, "checked"))
        }
    }

    fn call(env: &[(&str, &str)], stdin: &str) -> (i32, String, String) {
        let owned: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let get = move |k: &str| owned.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let mut out = Vec::new();
        let mut err = Vec::new();
        let o = dispatch(
            &Fake,
            "CNI fake",
            &get,
            &mut stdin.as_bytes(),
            &mut out,
            &mut err,
        );
        (
            o.exit_code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    const ADD: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ];

    fn code(out: &str) -> u64 {
        let v: Value = serde_json::from_str(out.trim()).unwrap();
        v["code"].as_u64().unwrap()
    }

    #[test]
    fn version_ignores_stdin() {
        let (rc, out, _) = call(&[("CNI_COMMAND", "VERSION")], "not json");
        assert_eq!(rc, 0);
        let v: Value = serde_json::from_str(out.trim()).unwrap();
        assert!(
            v["supportedVersions"]
                .as_array()
                .unwrap()
                .contains(&json!("1.1.0"))
        );
    }

    #[test]
    fn no_command_prints_about_to_stderr() {
        let (rc, out, err) = call(&[], "");
        assert_eq!((rc, out.as_str()), (0, ""));
        assert!(err.contains("CNI fake") && err.contains("1.1.0"));
    }

    #[test]
    fn decoding_and_config_errors() {
        assert_eq!(code(&call(ADD, "").1), 6);
        assert_eq!(code(&call(ADD, "{\"name\":").1), 6);
        assert_eq!(code(&call(ADD, "[]").1), 6);
        assert_eq!(code(&call(ADD, "{\"cniVersion\":\"1.1.0\"}").1), 7);
        assert_eq!(
            code(&call(ADD, "{\"cniVersion\":\"1.1.0\",\"name\":\"bad name\"}").1),
            7
        );
        assert_eq!(code(&call(ADD, "{\"cniVersion\":1.1,\"name\":\"n\"}").1), 6);
        let (_, out, _) = call(ADD, "{\"cniVersion\":\"9.9.9\",\"name\":\"n\"}");
        assert_eq!(code(&out), 1);
        assert!(out.contains("9.9.9") && out.contains("1.1.0"));
        assert_eq!(code(&call(ADD, "{\"name\":\"n\"}").1), 1);
    }

    #[test]
    fn version_gates_per_verb() {
        let mut check = ADD.to_vec();
        check[0] = ("CNI_COMMAND", "CHECK");
        assert_eq!(
            code(&call(&check, "{\"cniVersion\":\"0.3.1\",\"name\":\"n\"}").1),
            1
        );
        assert_eq!(
            code(&call(&check, "{\"cniVersion\":\"1.0.0\",\"name\":\"n\"}").1),
            7
        );
        let status = [("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/x")];
        assert_eq!(
            code(&call(&status, "{\"cniVersion\":\"1.0.0\",\"name\":\"n\"}").1),
            1
        );
        assert_eq!(
            call(&status, "{\"cniVersion\":\"1.1.0\",\"name\":\"n\"}").0,
            0
        );
    }

    #[test]
    fn add_prints_result_in_request_version() {
        let (rc, out, _) = call(ADD, "{\"cniVersion\":\"0.4.0\",\"name\":\"n\"}");
        assert_eq!(rc, 0);
        let v: Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["ips"][0]["version"], "4");
        let mut bad = ADD.to_vec();
        bad[0] = ("CNI_COMMAND", "add");
        let (_, out, _) = call(&bad, "{\"cniVersion\":\"1.1.0\",\"name\":\"n\"}");
        assert_eq!(code(&out), 4);
        assert!(out.contains("add"));
    }
}
