//! librdkafka client settings of one Kafka source or sink, from its
//! properties, the application's Kafka defaults and the environment.
//!
//! Precedence, highest first: the statement's properties, then the
//! defaults the application was given (the config file's
//! `velostream.kafka` section), then the environment (`KAFKA_BROKERS`,
//! `KAFKA_USERNAME`, `KAFKA_PASSWORD`). Velostream's own keys are taken
//! out; every other key is handed to librdkafka unchanged, so any
//! consumer or producer property can be set. Secrets never appear in
//! errors or logs: [`KafkaSettings`]'s `Debug` masks them.

use std::collections::BTreeMap;
use std::fmt;

use rdkafka::ClientConfig;

/// Keys that name the same librdkafka property under another spelling
/// (the deployment guide's YAML uses underscores).
const ALIASES: &[(&str, &str)] = &[
    ("bootstrap_servers", "bootstrap.servers"),
    ("security_protocol", "security.protocol"),
    ("sasl_mechanism", "sasl.mechanisms"),
    ("sasl.mechanism", "sasl.mechanisms"),
    ("sasl_username", "sasl.username"),
    ("sasl_password", "sasl.password"),
    ("group_id", "group.id"),
    ("auto_offset_reset", "auto.offset.reset"),
    ("compression_type", "compression.type"),
    ("linger_ms", "linger.ms"),
    ("batch_size", "batch.size"),
    ("enable_idempotence", "enable.idempotence"),
];

/// Property keys whose values are secret.
const SECRET_KEYS: &[&str] = &["sasl.password", "ssl.key.password", "ssl.keystore.password"];

const PROTOCOLS: &[&str] = &["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"];
const MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// The librdkafka properties of one client.
#[derive(Clone, Default)]
pub struct KafkaSettings {
    properties: BTreeMap<String, String>,
}

impl fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| {
                let v = if SECRET_KEYS.contains(&k.as_str()) {
                    "***"
                } else {
                    v.as_str()
                };
                (k.as_str(), v)
            })
            .collect();
        f.debug_map().entries(shown).finish()
    }
}

impl KafkaSettings {
    /// Builds the settings from `own` (the statement's properties minus
    /// Velostream's keys), `defaults` and the environment.
    pub fn resolve(
        own: &BTreeMap<String, String>,
        defaults: &BTreeMap<String, String>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let mut properties = BTreeMap::new();
        if let Some(brokers) = env("KAFKA_BROKERS").filter(|b| !b.is_empty()) {
            properties.insert("bootstrap.servers".to_string(), brokers);
        }
        for (k, v) in defaults.iter().chain(own.iter()) {
            properties.insert(canonical(k).to_string(), v.clone());
        }
        if !properties.contains_key("bootstrap.servers") {
            return Err(
                "no 'bootstrap.servers': set it on the source or sink, in the config file's velostream.kafka.bootstrap_servers, or in KAFKA_BROKERS"
                    .into(),
            );
        }
        let sasl = match properties.get("security.protocol") {
            Some(p) => {
                let upper = p.to_ascii_uppercase();
                if !PROTOCOLS.contains(&upper.as_str()) {
                    return Err(format!(
                        "security_protocol '{p}' is not one of {}",
                        PROTOCOLS.join(", ")
                    ));
                }
                properties.insert("security.protocol".into(), upper.clone());
                upper.starts_with("SASL")
            }
            None => false,
        };
        if let Some(m) = properties.get("sasl.mechanisms") {
            let upper = m.to_ascii_uppercase();
            if !MECHANISMS.contains(&upper.as_str()) {
                return Err(format!(
                    "sasl_mechanism '{m}' is not one of {}",
                    MECHANISMS.join(", ")
                ));
            }
            properties.insert("sasl.mechanisms".into(), upper);
        }
        if sasl {
            for (key, var) in [
                ("sasl.username", "KAFKA_USERNAME"),
                ("sasl.password", "KAFKA_PASSWORD"),
            ] {
                if !properties.contains_key(key) {
                    match env(var) {
                        Some(v) => {
                            properties.insert(key.into(), v);
                        }
                        None => {
                            return Err(format!("SASL needs '{key}': set {var} or the property"))
                        }
                    }
                }
            }
            properties
                .entry("sasl.mechanisms".into())
                .or_insert_with(|| "PLAIN".into());
        }
        Ok(Self { properties })
    }

    /// The value of a librdkafka property.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.properties.get(key).map(String::as_str)
    }

    /// Sets a property unless it was given.
    pub fn default(&mut self, key: &str, value: &str) -> &mut Self {
        self.properties
            .entry(key.to_string())
            .or_insert_with(|| value.to_string());
        self
    }

    /// Sets a property, replacing what was given.
    pub fn force(&mut self, key: &str, value: &str) -> &mut Self {
        self.properties.insert(key.to_string(), value.to_string());
        self
    }

    pub fn bootstrap_servers(&self) -> &str {
        self.get("bootstrap.servers").unwrap_or_default()
    }

    /// The librdkafka configuration.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (k, v) in &self.properties {
            config.set(k, v);
        }
        config
    }
}

fn canonical(key: &str) -> &str {
    ALIASES
        .iter()
        .find(|(alias, _)| *alias == key)
        .map(|(_, k)| *k)
        .unwrap_or(key)
}

/// The process environment.
pub fn process_env(var: &str) -> Option<String> {
    std::env::var(var).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn precedence_and_aliases() {
        let env = |v: &str| (v == "KAFKA_BROKERS").then(|| "env:9092".to_string());
        let s = KafkaSettings::resolve(&props(&[]), &props(&[]), &env).unwrap();
        assert_eq!(s.bootstrap_servers(), "env:9092");
        let defaults = props(&[("bootstrap_servers", "cfg:9092"), ("linger_ms", "5")]);
        let s = KafkaSettings::resolve(&props(&[]), &defaults, &env).unwrap();
        assert_eq!(s.bootstrap_servers(), "cfg:9092");
        assert_eq!(s.get("linger.ms"), Some("5"));
        let own = props(&[("bootstrap.servers", "own:9092"), ("linger.ms", "0")]);
        let s = KafkaSettings::resolve(&own, &defaults, &env).unwrap();
        assert_eq!(s.bootstrap_servers(), "own:9092");
        assert_eq!(s.get("linger.ms"), Some("0"));
        let none = |_: &str| None;
        assert!(KafkaSettings::resolve(&props(&[]), &props(&[]), &none)
            .unwrap_err()
            .contains("KAFKA_BROKERS"));
    }

    #[test]
    fn sasl_credentials_come_from_the_environment_and_are_never_shown() {
        let env = |v: &str| match v {
            "KAFKA_USERNAME" => Some("svc".to_string()),
            "KAFKA_PASSWORD" => Some("hunter2".to_string()),
            _ => None,
        };
        let own = props(&[
            ("bootstrap.servers", "b:9092"),
            ("security_protocol", "sasl_ssl"),
            ("sasl_mechanism", "scram-sha-512"),
        ]);
        let s = KafkaSettings::resolve(&own, &props(&[]), &env).unwrap();
        assert_eq!(s.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(s.get("sasl.mechanisms"), Some("SCRAM-SHA-512"));
        assert_eq!(s.get("sasl.username"), Some("svc"));
        assert_eq!(s.get("sasl.password"), Some("hunter2"));
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("***"),
            "{shown}"
        );

        let bad = props(&[("bootstrap.servers", "b"), ("sasl_mechanism", "GSSAPI")]);
        assert!(KafkaSettings::resolve(&bad, &props(&[]), &env)
            .unwrap_err()
            .contains("SCRAM-SHA-256"));
        let missing = props(&[
            ("bootstrap.servers", "b"),
            ("security_protocol", "SASL_PLAINTEXT"),
        ]);
        assert!(KafkaSettings::resolve(&missing, &props(&[]), &|_| None)
            .unwrap_err()
            .contains("KAFKA_USERNAME"));
    }
}
