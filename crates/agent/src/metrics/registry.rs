//! The `weft_*` metrics (docs/metrics.md) and their OpenMetrics text. Every metric but one
//! is a `prometheus-client` handle (atomics) the control loop sets as facts change; the
//! denied packets are read from the kernel at each scrape and passed in by the caller.

use std::collections::BTreeMap;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, text};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use weft_policy::PolicyRef;

/// Every name below starts with it.
pub const PREFIX: &str = "weft";

/// Commits of one nf_tables netlink batch take 0.2–3 ms, `nft -f` of a whole table up to a
/// few hundred ms at 10,000 rules (docs/benchmarks.md).
const COMMIT_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FamilyLabel {
    family: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

/// The handles, and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    peers: Gauge,
    blocks: Family<FamilyLabel, Gauge>,
    datastore_up: Gauge,
    policy_synced: Gauge,
    commit_seconds: Histogram,
    requests: Family<OpLabel, Counter>,
    gc_collected: Counter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix(PREFIX);
        let peers = Gauge::default();
        registry.register(
            "peers",
            "Remote nodes this node routes pod traffic to",
            peers.clone(),
        );
        let blocks = Family::<FamilyLabel, Gauge>::default();
        registry.register(
            "blocks",
            "Pod address blocks this node holds, per address family",
            blocks.clone(),
        );
        let datastore_up = Gauge::default();
        registry.register(
            "datastore_up",
            "1 when the datastore answered weftd's last call, 0 while it is unreachable",
            datastore_up.clone(),
        );
        let policy_synced = Gauge::default();
        registry.register(
            "policy_synced",
            "1 when the kernel holds the NetworkPolicy plan of the latest view, nothing pending",
            policy_synced.clone(),
        );
        let commit_seconds = Histogram::new(COMMIT_BUCKETS);
        registry.register_with_unit(
            "policy_commit",
            "Time to commit one NetworkPolicy change to nf_tables",
            Unit::Seconds,
            commit_seconds.clone(),
        );
        let requests = Family::<OpLabel, Counter>::default();
        registry.register(
            "plugin_requests",
            "Requests on weftd's local socket, by op (`invalid`: unreadable or too long)",
            requests.clone(),
        );
        let gc_collected = Counter::default();
        registry.register(
            "gc_collected",
            "Pod attachments weftd cleaned up because their network namespace was gone and \
             their DEL never came",
            gc_collected.clone(),
        );
        registry.register(
            "build",
            "The weftd build",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        Metrics {
            registry,
            peers,
            blocks,
            datastore_up,
            policy_synced,
            commit_seconds,
            requests,
            gc_collected,
        }
    }

    pub fn set_peers(&self, n: usize) {
        self.peers.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn set_blocks(&self, family: &'static str, n: usize) {
        self.blocks
            .get_or_create(&FamilyLabel { family })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn set_datastore_up(&self, up: bool) {
        self.datastore_up.set(up.into());
    }

    pub fn set_policy_synced(&self, synced: bool) {
        self.policy_synced.set(synced.into());
    }

    pub fn observe_commit(&self, seconds: f64) {
        self.commit_seconds.observe(seconds);
    }

    pub fn count_request(&self, op: &'static str) {
        self.requests.get_or_create(&OpLabel { op }).inc();
    }

    pub fn count_gc_collected(&self) {
        self.gc_collected.inc();
    }

    /// The whole exposition: the registry, then the denied packets read for this scrape
    /// (the family is always described; `denied` None leaves it without samples).
    pub fn encode(
        &self,
        denied: Option<BTreeMap<PolicyRef, u64>>,
    ) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        text::encode_registry(&mut out, &self.registry)?;
        let mut scrape = Registry::with_prefix(PREFIX);
        scrape.register_collector(Box::new(DeniedPackets(denied.unwrap_or_default())));
        text::encode_registry(&mut out, &scrape)?;
        text::encode_eof(&mut out)?;
        Ok(out)
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// `weft_policy_denied_packets_total{namespace, policy}` for one scrape. A counter: it
/// only grows, except when the kernel's counters start again (a restored or replaced table,
/// a policy edit that gives its pods a new class chain), which `rate()` treats as a reset.
#[derive(Debug)]
struct DeniedPackets(BTreeMap<PolicyRef, u64>);

impl Collector for DeniedPackets {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "policy_denied_packets",
            "Packets the kernel dropped for pods isolated by this NetworkPolicy (also counted \
             under the other policies isolating the same pods).",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (p, packets) in &self.0 {
            let labels = [
                ("namespace", p.namespace.as_str()),
                ("policy", p.name.as_str()),
            ];
            ConstCounter::new(*packets).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_types_and_values_as_documented() {
        let m = Metrics::new();
        m.set_peers(4);
        m.set_blocks("v4", 1);
        m.set_blocks("v6", 2);
        m.set_datastore_up(true);
        m.set_policy_synced(false);
        m.observe_commit(0.0007);
        m.count_request("attach");
        m.count_request("attach");
        m.count_gc_collected();
        let denied = BTreeMap::from([(
            PolicyRef {
                namespace: "shop".into(),
                name: "deny-all".into(),
            },
            9,
        )]);
        let text = m.encode(Some(denied)).unwrap();
        for line in [
            "# TYPE weft_peers gauge",
            "weft_peers 4",
            "weft_blocks{family=\"v4\"} 1",
            "weft_blocks{family=\"v6\"} 2",
            "weft_datastore_up 1",
            "weft_policy_synced 0",
            "# TYPE weft_policy_commit_seconds histogram",
            "# UNIT weft_policy_commit_seconds seconds",
            "weft_policy_commit_seconds_bucket{le=\"0.001\"} 1",
            "weft_policy_commit_seconds_count 1",
            "# TYPE weft_plugin_requests counter",
            "weft_plugin_requests_total{op=\"attach\"} 2",
            "# TYPE weft_gc_collected counter",
            "weft_gc_collected_total 1",
            "# TYPE weft_build info",
            concat!(
                "weft_build_info{version=\"",
                env!("CARGO_PKG_VERSION"),
                "\"} 1"
            ),
            "# TYPE weft_policy_denied_packets counter",
            "weft_policy_denied_packets_total{namespace=\"shop\",policy=\"deny-all\"} 9",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");
    }

    #[test]
    fn unread_counters_leave_the_family_described_and_empty() {
        let text = Metrics::new().encode(None).unwrap();
        assert!(
            text.contains("# TYPE weft_policy_denied_packets counter"),
            "{text}"
        );
        assert!(!text.contains("weft_policy_denied_packets_total"), "{text}");
    }
}
