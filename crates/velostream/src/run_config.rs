//! The parts of a configuration file that `velostream run` uses:
//! `performance.batch_size` and the Kafka client defaults of
//! `velostream.kafka`. The service reads the whole file.

use std::collections::BTreeMap;
use std::path::Path;

use serde_yaml_ng::Value;

/// What `run` takes from a configuration file.
#[derive(Debug, Default)]
pub struct RunConfig {
    /// Records per batch (`performance.batch_size`).
    pub batch_size: Option<usize>,
    /// librdkafka settings for every Kafka source and sink (`velostream.kafka`).
    pub kafka: BTreeMap<String, String>,
}

/// Reads `path`.
pub fn load(path: &Path) -> Result<RunConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let doc: Value = serde_yaml_ng::from_str(&text)
        .map_err(|e| format!("{}: invalid YAML: {e}", path.display()))?;
    let batch_size = match doc.get("performance").and_then(|p| p.get("batch_size")) {
        None => None,
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 => Some(n as usize),
            _ => {
                return Err(format!(
                    "{}: performance.batch_size must be a positive integer",
                    path.display()
                ))
            }
        },
    };
    let mut kafka = BTreeMap::new();
    if let Some(section) = doc.get("velostream").and_then(|v| v.get("kafka")) {
        let Some(map) = section.as_mapping() else {
            return Err(format!(
                "{}: velostream.kafka must be a mapping",
                path.display()
            ));
        };
        for (k, v) in map {
            let key = k.as_str().unwrap_or_default().to_string();
            let value = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => {
                    return Err(format!(
                        "{}: velostream.kafka.{key} must be a string, number or boolean",
                        path.display()
                    ))
                }
            };
            kafka.insert(key, value);
        }
    }
    Ok(RunConfig { batch_size, kafka })
}
