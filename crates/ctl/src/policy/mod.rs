//! `weftctl apply|delete|get|policy explain`: NetworkPolicy, Namespace and PodLabels
//! objects in the datastore (keys: `weft_store::ObjectKind`), validated by `weft-policy`
//! before anything is written, and the reference evaluator's verdict on a flow.
//!
//! Must not: write an object that `weft_policy::parse` has not accepted, or write anything
//! from a file that has one invalid object.

mod store;
mod world;

use std::io::Read;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use weft_policy::{Object, ParseOptions, Peer, Protocol};
use weft_store::{AnyStore, Datastore, ObjectKind, StoreError};

pub use store::{KubeArgs, StoreArgs};
use world::Catalog;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{0}")]
    Usage(String),
    /// The manifest has invalid objects; the message lists every problem.
    #[error("{file}: nothing applied:\n{problems}")]
    Invalid { file: String, problems: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Lab(#[from] crate::lab::RecordError),
    /// A stored object that no longer parses (written by hand or by another version).
    #[error("stored {kind} {name} is unreadable: {detail}")]
    Corrupt {
        kind: &'static str,
        name: String,
        detail: String,
    },
    #[error(transparent)]
    Eval(#[from] weft_policy::EvalError),
}

#[derive(Debug, Args)]
pub struct FileArgs {
    /// The manifest (YAML or JSON, many documents); `-` reads standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: PathBuf,
    /// The namespace of objects that name none.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum What {
    #[value(alias = "policy", alias = "networkpolicies", alias = "netpol")]
    Policies,
    #[value(alias = "namespace", alias = "ns")]
    Namespaces,
    #[value(alias = "endpoint", alias = "pods", alias = "ep")]
    Endpoints,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Output {
    Json,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    pub what: What,
    #[arg(short = 'o', long)]
    pub output: Option<Output>,
    #[command(flatten)]
    pub store: StoreArgs,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Whether a new connection SRC → DST PORT/PROTO is allowed, and by which policy and
    /// rule. SRC/DST: NAMESPACE/POD, POD (namespace default), node/NAME, or an address.
    Explain(ExplainArgs),
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    pub src: String,
    pub dst: String,
    /// `80/tcp`, `53/udp`, `80` (TCP).
    pub port: String,
    #[command(flatten)]
    pub store: StoreArgs,
}

fn read_manifest(args: &FileArgs) -> Result<(String, Vec<Object>), PolicyError> {
    let file = args.file.display().to_string();
    let text = if file == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|source| PolicyError::Io {
                what: "reading standard input".into(),
                source,
            })?;
        s
    } else {
        std::fs::read_to_string(&args.file).map_err(|source| PolicyError::Io {
            what: format!("reading {file}"),
            source,
        })?
    };
    let opts = ParseOptions {
        default_namespace: Some(args.namespace.clone()),
    };
    let objects = weft_policy::parse(&text, &opts).map_err(|e| PolicyError::Invalid {
        file: file.clone(),
        problems: e.to_string(),
    })?;
    Ok((file, objects))
}

/// The store address of a parsed object: kind, namespace ("" if cluster-scoped), name.
fn address(o: &Object) -> (ObjectKind, String, String) {
    match o {
        Object::NetworkPolicy(p) => (
            ObjectKind::NetworkPolicy,
            p.namespace.clone(),
            p.name.clone(),
        ),
        Object::Namespace(n) => (ObjectKind::Namespace, String::new(), n.name.clone()),
        Object::PodLabels(p) => (ObjectKind::PodLabels, p.namespace.clone(), p.name.clone()),
    }
}

fn describe(kind: ObjectKind, ns: &str, name: &str) -> String {
    let k = kind.name().to_lowercase();
    if ns.is_empty() {
        format!("{k} {name}")
    } else {
        format!("{k} {ns}/{name}")
    }
}

pub fn apply(args: &FileArgs) -> Result<(), PolicyError> {
    let (_, objects) = read_manifest(args)?;
    args.store.session(async |store: AnyStore| {
        for o in &objects {
            let (kind, ns, name) = address(o);
            store.put_object(kind, &ns, &name, &o.to_json()).await?;
            println!("{} applied", describe(kind, &ns, &name));
        }
        Ok(())
    })
}

pub fn delete(args: &FileArgs) -> Result<(), PolicyError> {
    let (_, objects) = read_manifest(args)?;
    args.store.session(async |store: AnyStore| {
        for o in &objects {
            let (kind, ns, name) = address(o);
            if store.delete_object(kind, &ns, &name).await? {
                println!("{} deleted", describe(kind, &ns, &name));
            } else {
                eprintln!("{} not found", describe(kind, &ns, &name));
            }
        }
        Ok(())
    })
}

pub fn get(args: &GetArgs) -> Result<(), PolicyError> {
    let lab = args.store.lab()?;
    let catalog = args
        .store
        .session(async |store: AnyStore| Catalog::load(&store).await)?;
    let json = matches!(args.output, Some(Output::Json));
    let out = match args.what {
        What::Policies if json => list_json(catalog.policies.iter().map(|(_, v)| v)),
        What::Namespaces if json => list_json(catalog.namespaces.iter().map(|(_, v)| v)),
        What::Endpoints if json => {
            let eps = catalog.endpoints(lab.as_ref());
            serde_json::to_string_pretty(&eps).unwrap_or_default()
        }
        What::Policies => world::policy_table(&catalog),
        What::Namespaces => world::namespace_table(&catalog),
        What::Endpoints => world::endpoint_table(&catalog.endpoints(lab.as_ref())),
    };
    println!("{}", out.trim_end());
    Ok(())
}

fn list_json<'a>(items: impl Iterator<Item = &'a serde_json::Value>) -> String {
    let list = serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": items.cloned().collect::<Vec<_>>(),
    });
    serde_json::to_string_pretty(&list).unwrap_or_default()
}

pub fn explain(args: &ExplainArgs) -> Result<(), PolicyError> {
    let src: Peer = args.src.parse().map_err(PolicyError::Usage)?;
    let dst: Peer = args.dst.parse().map_err(PolicyError::Usage)?;
    let (port, protocol) = parse_port(&args.port)?;
    let lab = args.store.lab()?;
    let catalog = args
        .store
        .session(async |store: AnyStore| Catalog::load(&store).await)?;
    let world = catalog.world(lab.as_ref());
    let verdict = weft_policy::evaluate(&world, &src, &dst, port, protocol)?;
    println!("{verdict}");
    Ok(())
}

fn parse_port(s: &str) -> Result<(u16, Protocol), PolicyError> {
    let (port, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    let bad = || PolicyError::Usage(format!("{s:?} is not PORT/PROTO (80/tcp, 53/udp, 9/sctp)"));
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 {
        return Err(bad());
    }
    let protocol = Protocol::parse(&proto.to_lowercase()).ok_or_else(bad)?;
    Ok((port, protocol))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert_eq!(parse_port("80/tcp").unwrap(), (80, Protocol::Tcp));
        assert_eq!(parse_port("53/UDP").unwrap(), (53, Protocol::Udp));
        assert_eq!(parse_port("443").unwrap(), (443, Protocol::Tcp));
        for bad in ["0/tcp", "70000/tcp", "80/icmp", "x"] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
    }
}
