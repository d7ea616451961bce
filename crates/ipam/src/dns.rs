//! The `resolvConf` key: a host resolv.conf parsed into the result's `dns`, as host-local does.

use std::path::Path;

/// DNS settings for the CNI result (`nameservers`, `domain`, `search`, `options`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsSpec {
    pub nameservers: Vec<String>,
    pub domain: Option<String>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

impl DnsSpec {
    /// Parse resolv.conf text with host-local's rules: skip blank lines and `#`/`;`
    /// comments and lines with fewer than two fields; `nameserver` appends its first
    /// argument, `domain` replaces, `search` and `options` append all arguments.
    pub fn parse_resolv_conf(text: &str) -> DnsSpec {
        let mut dns = DnsSpec::default();
        for line in text.lines().map(str::trim) {
            if line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [keyword, first, ..] = fields[..] else {
                continue;
            };
            let all = || fields[1..].iter().map(|s| (*s).to_owned());
            match keyword {
                "nameserver" => dns.nameservers.push(first.to_owned()),
                "domain" => dns.domain = Some(first.to_owned()),
                "search" => dns.search.extend(all()),
                "options" => dns.options.extend(all()),
                _ => {}
            }
        }
        dns
    }

    pub fn from_file(path: &Path) -> std::io::Result<DnsSpec> {
        std::fs::read_to_string(path).map(|text| DnsSpec::parse_resolv_conf(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_host_local() {
        let text = "# comment\n; other\nnameserver 10.0.0.10\nnameserver  fd00::53 extra\n\
                    domain a.example\ndomain b.example\nsearch x.example y.example\n\
                    options ndots:5 edns0\noptions rotate\nsortlist 1.2.3.4\nnameserver\n";
        let dns = DnsSpec::parse_resolv_conf(text);
        assert_eq!(dns.nameservers, ["10.0.0.10", "fd00::53"]);
        assert_eq!(dns.domain.as_deref(), Some("b.example"));
        assert_eq!(dns.search, ["x.example", "y.example"]);
        assert_eq!(dns.options, ["ndots:5", "edns0", "rotate"]);
    }
}
