//! Loading the service configuration: one or several YAML files (the
//! deployment guide's documents), merged in order (later files win, key by
//! key), with `${VAR}` / `${VAR:-default}` substituted from the environment
//! and environment overrides applied last:
//!
//! - `KAFKA_BROKERS` → `velostream.kafka.bootstrap_servers`
//! - `KAFKA_USERNAME`, `KAFKA_PASSWORD` → `velostream.kafka.sasl_username`, `sasl_password`
//! - `DB_HOST`, `DB_USER`, `DB_PASSWORD` → `velostream.database.host`, `user`, `password`
//!   (and `DB_PORT`, `DB_NAME` → `port`, `name`)
//! - `VELOSTREAM__<KEY>__<KEY>...=value` → that key, from the document root
//!   (`VELOSTREAM__VELOSTREAM__MONITORING__METRICS_PORT=9191`)
//!
//! Each file is checked on its own first, so an error names the file, the
//! key and the expected form.

pub mod schema;
pub mod values;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_yaml_ng::{Mapping, Value};

pub use schema::ServiceConfig;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {file}: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
}

/// The environment variables the loader reads (tests pass their own).
#[derive(Debug, Clone, Default)]
pub struct Environment(pub BTreeMap<String, String>);

impl Environment {
    pub fn from_process() -> Self {
        Self(std::env::vars().collect())
    }

    pub fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

type Env<'a> = &'a Environment;

/// Loads and merges `files`.
pub fn load(files: &[PathBuf], env: &Environment) -> Result<ServiceConfig, ConfigError> {
    let mut merged = Value::Mapping(Mapping::new());
    let mut documents = Vec::new();
    for file in files {
        let value = read_document(file, env)?;
        merge(&mut merged, value.clone());
        documents.push((file, value));
    }
    apply_overrides(&mut merged, env);
    let origin = match files {
        [one] => one.display().to_string(),
        _ => "the merged configuration".to_string(),
    };
    check(&merged, &origin).map_err(|merged_error| {
        // name the file that holds the mistake when one does on its own
        // (a file may leave out keys another file provides)
        let ConfigError::Invalid { message, .. } = &merged_error else {
            return merged_error;
        };
        let key = message.split(": ").next().unwrap_or_default();
        documents
            .iter()
            .filter_map(|(file, value)| check(value, &file.display().to_string()).err())
            .find(|e| matches!(e, ConfigError::Invalid { message, .. } if message.starts_with(key)))
            .unwrap_or(merged_error)
    })
}

/// One file: `${VAR}` substituted, parsed.
fn read_document(file: &Path, env: Env<'_>) -> Result<Value, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        file: file.to_path_buf(),
        source,
    })?;
    let invalid = |message: String| ConfigError::Invalid {
        file: file.display().to_string(),
        message,
    };
    let text = substitute(&text, env).map_err(invalid)?;
    let value: Value = serde_yaml_ng::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    Ok(match value {
        Value::Null => Value::Mapping(Mapping::new()),
        other => other,
    })
}

/// Deserializes `value`, naming the key of the first error, then checks
/// the rules that span keys.
fn check(value: &Value, origin: &str) -> Result<ServiceConfig, ConfigError> {
    let config: ServiceConfig = deserialize(value, origin)?;
    let processing = &config.velostream.processing;
    if processing.guarantee == schema::Guarantee::ExactlyOnce
        && processing.checkpoint_interval.is_none()
    {
        return Err(ConfigError::Invalid {
            file: origin.to_string(),
            message: "velostream.processing.guarantee: exactly_once publishes results with checkpoints; set velostream.processing.checkpoint_interval too".into(),
        });
    }
    if let Some(db) = &config.velostream.database {
        if db.sslrootcert.is_some() && !db.sslmode.is_some_and(|m| m.uses_tls()) {
            return Err(ConfigError::Invalid {
                file: origin.to_string(),
                message: "velostream.database.sslrootcert: a CA is used only over TLS; set velostream.database.sslmode to require, verify-ca or verify-full".into(),
            });
        }
    }
    Ok(config)
}

fn deserialize(value: &Value, origin: &str) -> Result<ServiceConfig, ConfigError> {
    serde_path_to_error::deserialize(value.clone()).map_err(|e| {
        let path = e.path().to_string();
        ConfigError::Invalid {
            file: origin.to_string(),
            message: if path == "." {
                e.inner().to_string()
            } else {
                format!("{path}: {}", e.inner())
            },
        }
    })
}

/// Replaces `${VAR}` and `${VAR:-default}`; an unset variable without a
/// default is an error.
fn substitute(text: &str, env: Env<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "an unclosed ${ in the file".to_string())?;
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        match (env.get(name).filter(|v| !v.is_empty() || default.is_none()), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(format!(
                    "${{{name}}} is not set in the environment (write ${{{name}:-default}} for a fallback)"
                ))
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Deep merge: mappings merge key by key, anything else is replaced.
fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Mapping(a), Value::Mapping(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (slot, other) => *slot = other,
    }
}

const NAMED_OVERRIDES: &[(&str, &[&str])] = &[
    (
        "KAFKA_BROKERS",
        &["velostream", "kafka", "bootstrap_servers"],
    ),
    ("KAFKA_USERNAME", &["velostream", "kafka", "sasl_username"]),
    ("KAFKA_PASSWORD", &["velostream", "kafka", "sasl_password"]),
    ("DB_HOST", &["velostream", "database", "host"]),
    ("DB_USER", &["velostream", "database", "user"]),
    ("DB_PASSWORD", &["velostream", "database", "password"]),
    ("DB_NAME", &["velostream", "database", "name"]),
];

/// The general override prefix: `VELOSTREAM__SECTION__KEY=value`.
pub const OVERRIDE_PREFIX: &str = "VELOSTREAM__";

fn apply_overrides(doc: &mut Value, env: Env<'_>) {
    for (var, path) in NAMED_OVERRIDES {
        if let Some(v) = env.get(var) {
            set_path(doc, path, Value::String(v));
        }
    }
    if let Some(port) = env.get("DB_PORT") {
        // a number when it is one; otherwise validation names the bad value
        let value = port
            .trim()
            .parse::<u64>()
            .map(|n| Value::Number(n.into()))
            .unwrap_or(Value::String(port));
        set_path(doc, &["velostream", "database", "port"], value);
    }
    for (var, raw) in env.0.iter().filter(|(k, _)| k.starts_with(OVERRIDE_PREFIX)) {
        let path: Vec<String> = var[OVERRIDE_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        // a value is read as YAML so numbers and booleans keep their type
        let value = serde_yaml_ng::from_str(raw).unwrap_or_else(|_| Value::String(raw.clone()));
        set_path(doc, &path, value);
    }
}

fn set_path(doc: &mut Value, path: &[&str], value: Value) {
    let mut node = doc;
    for (i, key) in path.iter().enumerate() {
        if !node.is_mapping() {
            *node = Value::Mapping(Mapping::new());
        }
        let map = node.as_mapping_mut().expect("made a mapping above");
        let key = Value::String(key.to_string());
        if i + 1 == path.len() {
            map.insert(key, value);
            return;
        }
        node = map
            .entry(key)
            .or_insert_with(|| Value::Mapping(Mapping::new()));
    }
}
