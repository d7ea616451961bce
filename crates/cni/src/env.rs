//! The `CNI_*` environment: which variables each verb needs and what a valid value looks like.

use crate::error::{CniError, Code};

/// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`: container IDs and network names.
pub fn is_valid_id(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
}

pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(CniError::new(
            Code::InvalidEnvironment,
            format!("invalid characters in CNI_CONTAINERID \"{id}\""),
        )
        .with_details("must match ^[a-zA-Z0-9][a-zA-Z0-9_.\\-]*$"))
    }
}

/// Linux interface names: 1–15 bytes, not `.`/`..`, no `/`, `:` or whitespace.
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    let bad = |why: &str| {
        Err(CniError::new(
            Code::InvalidEnvironment,
            format!("invalid CNI_IFNAME \"{name}\": {why}"),
        ))
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > 15 {
        return bad("longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return bad("not a valid name");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return bad("contains '/', ':' or whitespace");
    }
    Ok(())
}

/// Raw values, `None` for unset or empty (the spec treats them alike).
#[derive(Debug, Clone, Default)]
pub struct RawEnv {
    pub command: Option<String>,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub args: Option<String>,
    pub path: Option<String>,
}

impl RawEnv {
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> RawEnv {
        let g = |k: &str| get(k).filter(|v| !v.is_empty());
        RawEnv {
            command: g("CNI_COMMAND"),
            container_id: g("CNI_CONTAINERID"),
            netns: g("CNI_NETNS"),
            ifname: g("CNI_IFNAME"),
            args: g("CNI_ARGS"),
            path: g("CNI_PATH"),
        }
    }

    /// Checks presence and format in the reference order: a present, required value with a bad
    /// format fails at once; all missing required names are then reported together.
    pub fn validate(&self) -> Result<(), CniError> {
        let cmd = self.command.as_deref().unwrap_or("");
        let attach = matches!(cmd, "ADD" | "DEL" | "CHECK");
        let known = attach || matches!(cmd, "GC" | "STATUS");
        let mut missing = Vec::new();
        if self.command.is_none() {
            missing.push("CNI_COMMAND");
        }
        match &self.container_id {
            None if attach => missing.push("CNI_CONTAINERID"),
            Some(id) if attach => validate_container_id(id)?,
            _ => {}
        }
        if self.netns.is_none() && matches!(cmd, "ADD" | "CHECK") {
            missing.push("CNI_NETNS");
        }
        match &self.ifname {
            None if attach => missing.push("CNI_IFNAME"),
            Some(n) if attach => validate_ifname(n)?,
            _ => {}
        }
        if self.path.is_none() && known {
            missing.push("CNI_PATH");
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(CniError::new(
                Code::InvalidEnvironment,
                format!("required env variables [{}] missing", missing.join(",")),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> RawEnv {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        RawEnv::from_lookup(&move |k| owned.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    #[test]
    fn missing_variables_are_listed_in_order() {
        let e = env(&[("CNI_COMMAND", "ADD")]).validate().unwrap_err();
        assert_eq!(e.code, 4);
        assert_eq!(
            e.msg,
            "required env variables [CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH] missing"
        );
    }

    #[test]
    fn bad_values_fail_before_missing_ones() {
        let e = env(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "a/b")])
            .validate()
            .unwrap_err();
        assert!(e.msg.contains("CNI_CONTAINERID"), "{}", e.msg);
        for bad in ["abcdefghijklmnop", "eth/0", "eth:0", "eth 0", ".", ".."] {
            assert_eq!(validate_ifname(bad).unwrap_err().code, 4, "{bad}");
        }
        assert!(validate_ifname("abcdefghijklmno").is_ok());
        for bad in ["-abc", "a/b", "a b", "x%y", ""] {
            assert!(!is_valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn gc_and_status_ignore_attachment_variables() {
        assert!(
            env(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/x")])
                .validate()
                .is_ok()
        );
        assert!(
            env(&[
                ("CNI_COMMAND", "STATUS"),
                ("CNI_PATH", "/x"),
                ("CNI_IFNAME", "bad/name")
            ])
            .validate()
            .is_ok()
        );
        assert!(
            env(&[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "c"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/x")
            ])
            .validate()
            .is_ok()
        );
    }
}
