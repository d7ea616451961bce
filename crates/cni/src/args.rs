//! `CNI_ARGS`: `K=V;K2=V2`, with the reference library's rules (exactly one `=` per pair,
//! unknown keys refused unless `IgnoreUnknown` is true).

use crate::error::{CniError, Code};

/// Keys weft understands. Kubernetes runtimes send the `K8S_*` ones on every pod.
pub const KNOWN_KEYS: &[&str] = &[
    "IgnoreUnknown",
    "K8S_POD_NAMESPACE",
    "K8S_POD_NAME",
    "K8S_POD_INFRA_CONTAINER_ID",
    "K8S_POD_UID",
    "IP",
    "MAC",
];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    pairs: Vec<(String, String)>,
}

impl CniArgs {
    pub fn parse(raw: &str) -> Result<CniArgs, CniError> {
        let mut pairs = Vec::new();
        if raw.is_empty() {
            return Ok(CniArgs { pairs });
        }
        for pair in raw.split(';') {
            let kv: Vec<&str> = pair.split('=').collect();
            if kv.len() != 2 {
                return Err(CniError::new(
                    Code::InvalidEnvironment,
                    format!("CNI_ARGS: invalid pair \"{pair}\""),
                )
                .with_details("CNI_ARGS is a list of KEY=VALUE pairs separated by ';'"));
            }
            pairs.push((kv[0].to_string(), kv[1].to_string()));
        }
        let args = CniArgs { pairs };
        let ignore_unknown = args
            .get("IgnoreUnknown")
            .map(|v| v == "1" || v.eq_ignore_ascii_case("true"))
            .unwrap_or(false);
        if !ignore_unknown
            && let Some((k, _)) = args
                .pairs
                .iter()
                .find(|(k, _)| !KNOWN_KEYS.contains(&k.as_str()))
        {
            return Err(CniError::new(
                Code::InvalidEnvironment,
                format!("CNI_ARGS: unknown key \"{k}\""),
            )
            .with_details("set IgnoreUnknown=1 to pass keys weft does not use"));
        }
        Ok(args)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_args_parse() {
        let a = CniArgs::parse(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u1;FOO=bar",
        )
        .unwrap();
        assert_eq!(a.get("K8S_POD_NAME"), Some("web-0"));
        assert_eq!(a.get("FOO"), Some("bar"));
    }

    #[test]
    fn bad_pairs_and_unknown_keys_fail_with_code_4() {
        assert_eq!(CniArgs::parse("FOO").unwrap_err().code, 4);
        assert_eq!(CniArgs::parse("A=b=c").unwrap_err().code, 4);
        assert_eq!(CniArgs::parse("FOO=bar").unwrap_err().code, 4);
        assert_eq!(
            CniArgs::parse("IgnoreUnknown=TRUE;FOO=bar")
                .unwrap()
                .get("FOO"),
            Some("bar")
        );
        assert!(CniArgs::parse("").unwrap().pairs().is_empty());
    }
}
