//! A document as a plain tree, read from YAML or JSON, that refuses duplicate keys (the API
//! server's strict decoding does too) and keeps key order for error messages.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Value>),
    Map(Vec<(String, Value)>),
}

impl Value {
    /// How the value is shown in `Invalid value: …`: strings quoted, scalars as written,
    /// collections abbreviated.
    pub(crate) fn render(&self) -> String {
        match self {
            Value::Null => "null".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(x) => x.to_string(),
            Value::Str(s) => crate::validate::quote(s),
            Value::Seq(_) => "[…]".into(),
            Value::Map(_) => "{…}".into(),
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML or JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        i128::try_from(v)
            .map(Value::Int)
            .map_err(|_| E::custom("integer too large"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element::<Value>()? {
            items.push(v);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries: Vec<(String, Value)> = Vec::new();
        while let Some(key) = map.next_key::<Value>()? {
            let key = match key {
                Value::Str(s) => s,
                other => {
                    return Err(de::Error::custom(format!(
                        "mapping key {} is not a string",
                        other.render()
                    )));
                }
            };
            if entries.iter().any(|(k, _)| *k == key) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            let v = map.next_value::<Value>()?;
            entries.push((key, v));
        }
        Ok(Value::Map(entries))
    }
}

/// Splits text into documents: a JSON object stream (`{…}{…}`, what `kubectl get -o json`
/// prints), else YAML documents separated by `---`. Empty documents are dropped, as kubectl
/// drops them. Errors carry the 1-based document number.
pub(crate) fn documents(text: &str) -> Result<Vec<Value>, (usize, String)> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let mut docs = Vec::new();
        for (i, v) in serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .enumerate()
        {
            match v {
                Ok(v) => docs.push(v),
                // A YAML flow mapping (`{a: b}`) also starts with `{`: let YAML try, and
                // report the JSON error only if YAML fails as well.
                Err(e) => {
                    return yaml_documents(text).map_err(|_| (i + 1, format!("invalid JSON: {e}")));
                }
            }
        }
        return Ok(docs.into_iter().filter(|d| *d != Value::Null).collect());
    }
    yaml_documents(text)
}

fn yaml_documents(text: &str) -> Result<Vec<Value>, (usize, String)> {
    let mut docs = Vec::new();
    for (i, doc) in yaml_serde::Deserializer::from_str(text).enumerate() {
        match Value::deserialize(doc) {
            Ok(Value::Null) => {}
            Ok(v) => docs.push(v),
            Err(e) => return Err((i + 1, format!("invalid YAML: {e}"))),
        }
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_multi_document_and_empty_ones() {
        let docs = documents("---\na: 1\n---\n# only a comment\n---\nb: [x, 2]\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0], Value::Map(vec![("a".into(), Value::Int(1))]));
    }

    #[test]
    fn json_stream_and_yaml_flow() {
        assert_eq!(documents("{\"a\": 1}\n{\"b\": 2}").unwrap().len(), 2);
        assert_eq!(documents("{a: b}").unwrap().len(), 1);
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        let (doc, msg) = documents("a: 1\n---\nb: 1\nb: 2\n").unwrap_err();
        assert_eq!(doc, 2);
        assert!(msg.contains("duplicate key \"b\""), "{msg}");
        let (_, msg) = documents("{\"a\": 1, \"a\": 2}").unwrap_err();
        assert!(msg.contains("duplicate key"), "{msg}");
    }

    #[test]
    fn yaml_1_2_scalars() {
        // YAML 1.2 core schema: `yes` and `on` stay strings, quoted numbers stay strings.
        let docs = documents("a: yes\nb: on\nc: \"80\"\nd: 80\n").unwrap();
        assert_eq!(
            docs[0],
            Value::Map(vec![
                ("a".into(), Value::Str("yes".into())),
                ("b".into(), Value::Str("on".into())),
                ("c".into(), Value::Str("80".into())),
                ("d".into(), Value::Int(80)),
            ])
        );
    }
}
