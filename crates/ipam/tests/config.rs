//! IpamConfig::from_request: host-local's keys, defaults and every rejection.

use std::net::IpAddr;
use std::path::Path;

use serde_json::{Value, json};
use weft_ipam::{ConfigError, IpamConfig};

const DEFAULT_DIR: &str = "/var/lib/weft/ipam";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}

fn request(ipam: Value) -> Value {
    json!({"cniVersion": "1.1.0", "name": "t1", "type": "weft", "ipam": ipam})
}

fn parse(req: &Value) -> Result<IpamConfig, ConfigError> {
    IpamConfig::from_request(req, &[], Path::new(DEFAULT_DIR))
}

fn reject(req: Value, key: &str) -> ConfigError {
    let e = parse(&req).expect_err("config must be rejected");
    assert_eq!(e.key, key, "{e}");
    assert!(!e.message.is_empty());
    e
}

#[test]
fn minimal_config_gets_host_local_defaults() {
    let c = parse(&request(
        json!({"type": "weft-ipam", "ranges": [[{"subnet": "10.99.0.0/24"}]]}),
    ))
    .expect("valid");
    assert_eq!(c.network, "t1");
    assert_eq!(c.data_dir, Path::new(DEFAULT_DIR));
    assert_eq!(c.ranges.len(), 1);
    let r = &c.ranges[0].0[0];
    assert_eq!(
        (r.start, r.end, r.gateway),
        (ip("10.99.0.1"), ip("10.99.0.254"), Some(ip("10.99.0.1")))
    );
    assert!(c.routes.is_empty() && c.requested.is_empty() && c.dns.is_none());
}

#[test]
fn full_config_with_legacy_runtime_ranges_routes_and_requested_ips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 10.0.0.10\nsearch a.example\n").expect("write");
    let req = json!({
        "cniVersion": "1.0.0", "name": "net1",
        "args": {"cni": {"ips": ["10.1.0.7/24", "fd00:99::7"]}},
        "runtimeConfig": {"ips": ["10.99.0.50/24", "10.1.0.7"],
                          "ipRanges": [[{"subnet": "10.50.0.0/16", "rangeStart": "10.50.1.0"}]]},
        "ipam": {
            "type": "weft-ipam", "subnet": "10.1.0.0/24", "gateway": "10.1.0.254",
            "rangeStart": "10.1.0.5", "rangeEnd": "10.1.0.100",
            "ranges": [[{"subnet": "10.99.0.0/24"}], [{"subnet": "fd00:99::/64"}]],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "fd00::/8", "gw": "fd00:99::1"}],
            "dataDir": dir.path().join("ipam").to_str().expect("utf8"),
            "resolvConf": resolv.to_str().expect("utf8")
        }
    });
    let c =
        IpamConfig::from_request(&req, &[ip("10.99.0.9")], Path::new(DEFAULT_DIR)).expect("valid");
    assert_eq!(c.network, "net1");
    assert_eq!(c.data_dir, dir.path().join("ipam"));
    // runtimeConfig.ipRanges, then the legacy range, then `ranges`.
    let firsts: Vec<String> = c.ranges.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        firsts,
        [
            "10.50.1.0-10.50.255.254",
            "10.1.0.5-10.1.0.100",
            "10.99.0.1-10.99.0.254",
            "fd00:99::1-fd00:99::ffff:ffff:ffff:ffff"
        ]
    );
    assert_eq!(c.ranges[1].0[0].gateway, Some(ip("10.1.0.254")));
    // CNI_ARGS, args.cni.ips, runtimeConfig.ips; prefixes stripped, duplicates dropped.
    assert_eq!(
        c.requested,
        [
            ip("10.99.0.9"),
            ip("10.1.0.7"),
            ip("fd00:99::7"),
            ip("10.99.0.50")
        ]
    );
    assert_eq!(c.routes.len(), 2);
    assert_eq!(c.routes[0].dst.to_string(), "0.0.0.0/0");
    assert_eq!(c.routes[1].gw, Some(ip("fd00:99::1")));
    let dns = c.dns.expect("dns from resolvConf");
    assert_eq!(dns.nameservers, ["10.0.0.10"]);
    assert_eq!(dns.search, ["a.example"]);
}

#[test]
fn empty_data_dir_means_default_and_unknown_keys_are_ignored() {
    let c = parse(
        &json!({"cniVersion": "1.1.0", "name": "t1", "keyA": 1, "cni.dev/x": {},
        "args": "whatever", "runtimeConfig": {"portMappings": []},
        "ipam": {"ranges": [[{"subnet": "10.0.0.0/30"}]], "dataDir": "", "other": true}}),
    )
    .expect("valid");
    assert_eq!(c.data_dir, Path::new(DEFAULT_DIR));
}

#[test]
fn rejects_missing_pieces() {
    reject(
        json!({"cniVersion": "1.1.0", "ipam": {"ranges": [[{"subnet": "10.0.0.0/24"}]]}}),
        "name",
    );
    reject(
        json!({"name": "../x", "ipam": {"ranges": [[{"subnet": "10.0.0.0/24"}]]}}),
        "name",
    );
    let e = reject(json!({"name": "t1"}), "");
    assert_eq!(e.to_string(), "ipam: missing");
    reject(request(json!({"type": "weft-ipam"})), "ranges");
    reject(request(json!({"ranges": []})), "ranges");
    reject(request(json!({"ranges": [[]]})), "ranges[0]");
    reject(
        request(json!({"ranges": [[{"rangeStart": "10.0.0.1"}]]})),
        "ranges[0][0].subnet",
    );
    reject(request(json!({"rangeStart": "10.0.0.5"})), "rangeStart");
}

#[test]
fn rejects_bad_values_naming_the_key() {
    let cases = [
        (
            json!({"ranges": [[{"subnet": "10.0.0.0"}]]}),
            "ranges[0][0].subnet",
        ),
        (
            json!({"ranges": [[{"subnet": "banana/24"}]]}),
            "ranges[0][0].subnet",
        ),
        (json!({"ranges": [[{"subnet": 7}]]}), "ranges[0][0].subnet"),
        (
            json!({"ranges": [[{"subnet": "10.99.0.1/24"}]]}),
            "ranges[0][0].subnet",
        ),
        (
            json!({"ranges": [[{"subnet": "10.99.0.0/31"}]]}),
            "ranges[0][0].subnet",
        ),
        (
            json!({"ranges": [[{"subnet": "10.99.0.0/32"}]]}),
            "ranges[0][0].subnet",
        ),
        (
            json!({"ranges": [[{"subnet": "fd00::/127"}]]}),
            "ranges[0][0].subnet",
        ),
        (json!({"subnet": "10.99.0.0/31"}), "subnet"),
        (
            json!({"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.x"}]]}),
            "ranges[0][0].rangeStart",
        ),
        (
            json!({"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.1.1"}]]}),
            "ranges[0][0].rangeStart",
        ),
        (
            json!({"ranges": [[{"subnet": "10.0.0.0/24", "rangeEnd": "10.0.1.1"}]]}),
            "ranges[0][0].rangeEnd",
        ),
        (
            json!({"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.9", "rangeEnd": "10.0.0.8"}]]}),
            "ranges[0][0].rangeStart",
        ),
        (
            json!({"ranges": [[{"subnet": "10.0.0.0/24", "gateway": "10.0.1.1"}]]}),
            "ranges[0][0].gateway",
        ),
        (
            json!({"ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "fd00::/64"}]]}),
            "ranges[0][1]",
        ),
        (
            json!({"ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "10.0.0.0/25"}]]}),
            "ranges[0][1]",
        ),
        (
            json!({"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.0.0.128/25"}]]}),
            "ranges[1]",
        ),
        (
            json!({"subnet": "10.0.0.0/24", "ranges": [[{"subnet": "10.0.0.0/16"}]]}),
            "ranges[0]",
        ),
        (json!({"ranges": "10.0.0.0/24"}), "ranges"),
        (json!({"ranges": [{"subnet": "10.0.0.0/24"}]}), "ranges[0]"),
        (
            json!({"ranges": [[{"subnet": "10.0.0.0/24"}]], "routes": [{"gw": "10.0.0.1"}]}),
            "routes[0].dst",
        ),
        (
            json!({"ranges": [[{"subnet": "10.0.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0", "gw": "fd00::1"}]}),
            "routes[0].gw",
        ),
        (
            json!({"ranges": [[{"subnet": "10.0.0.0/24"}]], "dataDir": 5}),
            "dataDir",
        ),
        (
            json!({"ranges": [[{"subnet": "10.0.0.0/24"}]], "resolvConf": "/nonexistent/resolv.conf"}),
            "resolvConf",
        ),
    ];
    for (ipam, key) in cases {
        let e = reject(request(ipam.clone()), key);
        assert_eq!(
            e.to_string(),
            format!("ipam.{key}: {}", e.message),
            "{ipam}"
        );
    }
}

#[test]
fn adjacent_ranges_in_one_subnet_do_not_overlap() {
    parse(&request(json!({"ranges": [
        [{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.2", "rangeEnd": "10.0.0.100"}],
        [{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.101"}]]})))
    .expect("disjoint ranges of one subnet in two sets are fine (as host-local)");
}

#[test]
fn runtime_config_range_overlap_and_bad_requested_ips() {
    let base = |extra: Value| {
        let mut r = request(json!({"ranges": [[{"subnet": "10.0.0.0/24"}]]}));
        r.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        r
    };
    reject(
        base(json!({"runtimeConfig": {"ipRanges": [[{"subnet": "10.0.0.0/24"}]]}})),
        "ranges[0]",
    );
    let e = reject(
        base(json!({"runtimeConfig": {"ips": ["10.0.0.5", "nope"]}})),
        "runtimeConfig.ips[1]",
    );
    assert!(e.to_string().starts_with("runtimeConfig.ips[1]: "), "{e}");
    reject(
        base(json!({"runtimeConfig": {"ips": ["10.0.0.5/99"]}})),
        "runtimeConfig.ips[0]",
    );
    reject(
        base(json!({"runtimeConfig": {"ips": "10.0.0.5"}})),
        "runtimeConfig.ips",
    );
    reject(
        base(json!({"args": {"cni": {"ips": [5]}}})),
        "args.cni.ips[0]",
    );
    reject(
        base(json!({"runtimeConfig": {"ipRanges": [[{"subnet": "10.9.0.1/24"}]]}})),
        "runtimeConfig.ipRanges[0][0].subnet",
    );
}

#[test]
fn one_set_per_family_before_cni_0_3_0() {
    let ipam = json!({"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.1.0.0/24"}]]});
    for old in [json!("0.2.0"), json!("0.1.0"), Value::Null] {
        let mut r = request(ipam.clone());
        r["cniVersion"] = old;
        reject(r, "ranges");
    }
    let mut dual =
        request(json!({"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "fd00::/64"}]]}));
    dual["cniVersion"] = json!("0.2.0");
    parse(&dual).expect("one set per family is fine at 0.2.0");
    parse(&request(ipam)).expect("two v4 sets are fine at 1.1.0");
}
