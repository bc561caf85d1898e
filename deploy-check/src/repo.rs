//! Paths relative to the workspace root, file reading with useful panics, and YAML loading (one document or
//! a `---`-separated stream). CloudFormation's short-form tags (`!Ref`, `!Sub`, `!GetAtt`, ...) load as
//! `serde_yaml::Value::Tagged`; [`untag`] and [`sub_text`] read through them.

use serde_yaml::Value;
use std::path::{Path, PathBuf};

/// The workspace root (the folder above this crate).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("deploy-check sits one level below the workspace root")
        .to_path_buf()
}

/// Reads a file under the workspace root.
pub fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Loads every YAML document of a file under the workspace root (empty documents are skipped).
pub fn yaml_docs(relative: &str) -> Vec<Value> {
    use serde::Deserialize;
    let text = read(relative);
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            Value::deserialize(doc).unwrap_or_else(|e| panic!("{relative} is not valid YAML: {e}"))
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// Loads a single-document YAML file.
pub fn yaml(relative: &str) -> Value {
    let mut docs = yaml_docs(relative);
    assert_eq!(docs.len(), 1, "{relative}: expected one YAML document");
    docs.remove(0)
}

/// The value under a tag (`!Sub "x"` gives `"x"`), or the value itself.
pub fn untag(v: &Value) -> &Value {
    match v {
        Value::Tagged(t) => untag(&t.value),
        other => other,
    }
}

/// The tag of a value (`"!Sub"`), if any.
pub fn tag(v: &Value) -> Option<String> {
    match v {
        Value::Tagged(t) => Some(t.tag.to_string()),
        _ => None,
    }
}

/// The text of a plain string or of a `!Sub` string.
pub fn sub_text(v: &Value) -> Option<&str> {
    untag(v).as_str()
}

/// `map[key]` for a string key, through tags.
pub fn get<'a>(map: &'a Value, key: &str) -> Option<&'a Value> {
    untag(map).as_mapping()?.get(Value::String(key.to_owned()))
}

/// `map[key]` as a string, panicking with the path when absent.
pub fn get_str<'a>(map: &'a Value, key: &str) -> &'a str {
    get(map, key)
        .and_then(sub_text)
        .unwrap_or_else(|| panic!("missing string {key:?} in {map:?}"))
}

/// The settings shared by every binary (`common::config`), which a binary's `Config` flattens in.
const SHARED_CONFIG: &str = "common/src/config.rs";

/// The clap sources a binary's configuration is made of: its own, plus the shared one when it flattens it.
fn config_sources(config_rs: &str) -> Vec<String> {
    let mut sources = vec![read(config_rs)];
    if sources[0].contains("#[command(flatten)]") && root().join(SHARED_CONFIG).exists() {
        sources.push(read(SHARED_CONFIG));
    }
    sources
}

/// Every `env = "NAME"` a binary's clap configuration declares (following `#[command(flatten)]` into the
/// shared settings): the settings the binary reads.
pub fn env_settings(config_rs: &str) -> Vec<String> {
    config_sources(config_rs)
        .iter()
        .flat_map(|text| {
            text.split("env = \"")
                .skip(1)
                .filter_map(|rest| rest.split('"').next())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The `default_value = "..."` of the argument whose `env = "NAME"` is given, from a binary's clap sources.
pub fn env_default(config_rs: &str, name: &str) -> Option<String> {
    config_sources(config_rs).iter().find_map(|text| {
        let at = text.find(&format!("env = \"{name}\""))?;
        let arg_end = text[at..].find(")]")? + at;
        let arg = &text[at..arg_end];
        let value = arg.split("default_value = \"").nth(1)?;
        value.split('"').next().map(str::to_owned)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_settings_and_defaults_from_clap_sources() {
        let ingest = env_settings("ingest/src/config.rs");
        for shared in [
            "FANOUT_REDIS_URL",
            "FANOUT_QUEUE_URL",
            "FANOUT_API_GATEWAYS",
            "FANOUT_LISTEN",
        ] {
            assert!(
                ingest.contains(&shared.to_owned()),
                "{shared} not in {ingest:?}"
            );
        }
        assert!(!ingest.contains(&"FANOUT_METRICS_LISTEN".to_owned()));
        assert_eq!(
            env_default("ingest/src/config.rs", "FANOUT_LISTEN").as_deref(),
            Some("0.0.0.0:8080")
        );
        assert_eq!(env_default("ingest/src/config.rs", "NO_SUCH_SETTING"), None);
    }

    #[test]
    fn reads_through_cloudformation_tags() {
        let v: Value = serde_yaml::from_str("a: !Sub \"x-${Y}\"\nb: plain\n").unwrap();
        assert_eq!(get_str(&v, "a"), "x-${Y}");
        assert_eq!(tag(get(&v, "a").unwrap()).as_deref(), Some("!Sub"));
        assert_eq!(get_str(&v, "b"), "plain");
        assert_eq!(tag(get(&v, "b").unwrap()), None);
    }
}
