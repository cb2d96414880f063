//! librdkafka client settings of one Kafka source or sink, from its
//! properties, the application's Kafka defaults and the environment.
//!
//! Precedence, highest first: the statement's properties, then the
//! defaults the application was given ([`KafkaDefaults`](super::KafkaDefaults):
//! the configuration's `velostream.kafka` section with the environment's
//! `KAFKA_BROKERS`, `KAFKA_USERNAME` and `KAFKA_PASSWORD` applied over
//! it, resolved once by the binary's settings). Connectors never read the
//! environment themselves. Velostream's own keys are taken out; every
//! other key is handed to librdkafka unchanged, so any consumer or
//! producer property can be set. Secrets never appear in
//! errors or logs: [`KafkaSettings`]'s `Debug` masks them.
//!
//! Configured credentials (`sasl.*`, client keys and certificates) are
//! attached only to the clusters the configuration names: a statement
//! that names another cluster gets none of them. Applications the service
//! runs are confined ([`ClientRules::confined`]): they may only name the
//! configured clusters and set the client properties of [`ALLOWED`];
//! properties that load code or read local files are refused by name.

use std::collections::BTreeMap;
use std::fmt;

use rdkafka::ClientConfig;

use crate::error::{ConnectorError, ConnectorResult};

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

/// The librdkafka properties an application the service runs may set;
/// everything else stays the operator's (`velostream.kafka`).
pub const ALLOWED: &[&str] = &[
    "bootstrap.servers",
    "security.protocol",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "group.id",
    "group.instance.id",
    "client.id",
    "client.rack",
    "auto.offset.reset",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "max.poll.interval.ms",
    "partition.assignment.strategy",
    "isolation.level",
    "fetch.min.bytes",
    "fetch.wait.max.ms",
    "fetch.max.bytes",
    "max.partition.fetch.bytes",
    "fetch.message.max.bytes",
    "queued.min.messages",
    "queued.max.messages.kbytes",
    "check.crcs",
    "acks",
    "linger.ms",
    "batch.size",
    "batch.num.messages",
    "compression.type",
    "compression.codec",
    "compression.level",
    "enable.idempotence",
    "retries",
    "retry.backoff.ms",
    "message.timeout.ms",
    "request.timeout.ms",
    "delivery.timeout.ms",
    "message.max.bytes",
    "max.in.flight.requests.per.connection",
    "queue.buffering.max.messages",
    "queue.buffering.max.kbytes",
    "queue.buffering.max.ms",
    "transaction.timeout.ms",
    "transactional.id",
    "statistics.interval.ms",
    "socket.timeout.ms",
    "socket.keepalive.enable",
    "reconnect.backoff.ms",
    "reconnect.backoff.max.ms",
    "topic.metadata.refresh.interval.ms",
    "metadata.max.age.ms",
    "allow.auto.create.topics",
    "partitioner",
];

/// Which clusters and client properties a connector may use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientRules {
    /// Bootstrap lists of the clusters the configuration names
    /// (`velostream.kafka`, the `regions` endpoints), besides the default one.
    pub clusters: Vec<String>,
    /// An application the service runs: only those clusters, only
    /// [`ALLOWED`] properties.
    pub confined: bool,
}

/// Keys whose values identify or authenticate the client to a cluster.
fn is_credential(key: &str) -> bool {
    (key.starts_with("sasl.") && key != "sasl.mechanisms")
        || key.starts_with("ssl.key")
        || key.starts_with("ssl.certificate")
        || key.starts_with("ssl.keystore")
}

/// Keys that make librdkafka load code, run commands or read local files.
fn reaches_the_host(key: &str) -> bool {
    key == "plugin.library.paths"
        || key.ends_with(".location")
        || key.starts_with("ssl.engine")
        || key.starts_with("ssl_engine")
        || key.starts_with("sasl.kerberos.")
        || key.starts_with("sasl.oauthbearer.")
        || key.starts_with("ssl.")
}

/// The client properties of an application the service runs, checked.
fn check_confined(own: &BTreeMap<String, String>) -> ConnectorResult<()> {
    for key in own.keys() {
        let key = canonical(key);
        if ALLOWED.contains(&key) {
            continue;
        }
        if reaches_the_host(key) {
            return Err(ConnectorError::Refused(format!(
                "'{key}' is refused: it makes the Kafka client load code, run a command or read local files, which applications the service runs may not do (the operator sets it in velostream.kafka)"
            )));
        }
        return Err(ConnectorError::Refused(format!(
            "'{key}' is not a Kafka client property applications the service runs may set (the operator sets it in velostream.kafka); allowed: {}",
            ALLOWED.join(", ")
        )));
    }
    Ok(())
}

/// The brokers of a bootstrap list, normalised for comparison.
fn brokers(list: &str) -> Vec<String> {
    let mut b: Vec<String> = list
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    b.sort();
    b.dedup();
    b
}

/// Whether every broker of `named` belongs to cluster `known`.
fn within(named: &str, known: &str) -> bool {
    let known = brokers(known);
    let named = brokers(named);
    !named.is_empty() && named.iter().all(|b| known.contains(b))
}

const PROTOCOLS: &[&str] = &["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"];
const MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// The librdkafka properties of one client.
#[derive(Clone, Default)]
pub struct KafkaSettings {
    properties: BTreeMap<String, String>,
}

impl fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(shown(&self.properties)).finish()
    }
}

/// Client properties as they may be shown: secret values as `***`.
pub(crate) fn shown(
    properties: &BTreeMap<String, String>,
) -> BTreeMap<&str, std::borrow::Cow<'_, str>> {
    properties
        .iter()
        .map(|(k, v)| (k.as_str(), velostream_sql::secrets::shown_value(k, v)))
        .collect()
}

impl KafkaSettings {
    /// Builds the settings from `own` (the statement's properties minus
    /// Velostream's keys) over `defaults`, under `rules`.
    pub fn resolve(
        own: &BTreeMap<String, String>,
        defaults: &BTreeMap<String, String>,
        rules: &ClientRules,
    ) -> ConnectorResult<Self> {
        if rules.confined {
            check_confined(own)?;
        }
        let configured = configured_cluster(defaults);
        let known: Vec<&str> = configured
            .iter()
            .chain(&rules.clusters)
            .map(String::as_str)
            .collect();
        let named = own
            .iter()
            .find(|(k, _)| canonical(k) == "bootstrap.servers")
            .map(|(_, v)| v.as_str());
        let unknown = named.filter(|n| !known.iter().any(|k| within(n, k)));
        if let (Some(cluster), true) = (unknown, rules.confined) {
            return Err(ConnectorError::Refused(format!(
                "'bootstrap.servers' = '{cluster}' is refused: applications the service runs may only use the Kafka clusters the configuration names ({}; velostream.kafka.bootstrap_servers, regions.*.endpoints.kafka)",
                if known.is_empty() { "none".to_string() } else { known.join("; ") }
            )));
        }
        // configured credentials never travel to a cluster the configuration does not name
        let foreign = unknown.is_some() && !known.is_empty();
        let mut properties = BTreeMap::new();
        for (k, v) in defaults.iter() {
            let key = canonical(k);
            if !(foreign && is_credential(key)) {
                properties.insert(key.to_string(), v.clone());
            }
        }
        for (k, v) in own.iter() {
            properties.insert(canonical(k).to_string(), v.clone());
        }
        if !properties.contains_key("bootstrap.servers") {
            return Err(ConnectorError::MissingSetting(
                "no 'bootstrap.servers': set it on the source or sink, in the config file's velostream.kafka.bootstrap_servers, or in KAFKA_BROKERS"
                    .into(),
            ));
        }
        let sasl = match properties.get("security.protocol") {
            Some(p) => {
                let upper = p.to_ascii_uppercase();
                if !PROTOCOLS.contains(&upper.as_str()) {
                    return Err(ConnectorError::InvalidValue(format!(
                        "security_protocol '{p}' is not one of {}",
                        PROTOCOLS.join(", ")
                    )));
                }
                properties.insert("security.protocol".into(), upper.clone());
                upper.starts_with("SASL")
            }
            None => false,
        };
        if let Some(m) = properties.get("sasl.mechanisms") {
            let upper = m.to_ascii_uppercase();
            if !MECHANISMS.contains(&upper.as_str()) {
                return Err(ConnectorError::InvalidValue(format!(
                    "sasl_mechanism '{m}' is not one of {}",
                    MECHANISMS.join(", ")
                )));
            }
            properties.insert("sasl.mechanisms".into(), upper);
        }
        if sasl {
            for (key, var) in [
                ("sasl.username", "KAFKA_USERNAME"),
                ("sasl.password", "KAFKA_PASSWORD"),
            ] {
                if properties.contains_key(key) {
                    continue;
                }
                return Err(ConnectorError::MissingSetting(if foreign {
                    format!("SASL needs '{key}': the configured credentials go only to the configured clusters, so set the property for {}", named.unwrap_or_default())
                } else {
                    format!(
                        "SASL needs '{key}': set {var}, velostream.kafka.{}, or the property",
                        key.replace('.', "_")
                    )
                }));
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

    /// Leaves a property out.
    pub fn remove(&mut self, key: &str) -> &mut Self {
        self.properties.remove(key);
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

/// The bootstrap servers client properties `defaults` name (under either
/// spelling), if any.
pub(crate) fn configured_cluster(defaults: &BTreeMap<String, String>) -> Option<String> {
    defaults
        .iter()
        .find(|(k, _)| canonical(k) == "bootstrap.servers")
        .map(|(_, v)| v.clone())
        .filter(|b| !b.is_empty())
}

fn canonical(key: &str) -> &str {
    ALIASES
        .iter()
        .find(|(alias, _)| *alias == key)
        .map(|(_, k)| *k)
        .unwrap_or(key)
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
        let defaults = props(&[("bootstrap_servers", "cfg:9092"), ("linger_ms", "5")]);
        let s = KafkaSettings::resolve(&props(&[]), &defaults, &ClientRules::default()).unwrap();
        assert_eq!(s.bootstrap_servers(), "cfg:9092");
        assert_eq!(s.get("linger.ms"), Some("5"));
        let own = props(&[("bootstrap.servers", "own:9092"), ("linger.ms", "0")]);
        let s = KafkaSettings::resolve(&own, &defaults, &ClientRules::default()).unwrap();
        assert_eq!(s.bootstrap_servers(), "own:9092");
        assert_eq!(s.get("linger.ms"), Some("0"));
        assert!(
            KafkaSettings::resolve(&props(&[]), &props(&[]), &ClientRules::default())
                .unwrap_err()
                .to_string()
                .contains("KAFKA_BROKERS")
        );
    }

    #[test]
    fn sasl_credentials_come_from_the_defaults_and_are_never_shown() {
        // where KAFKA_USERNAME and KAFKA_PASSWORD arrive (the settings)
        let defaults = props(&[("sasl_username", "svc"), ("sasl_password", "hunter2")]);
        let own = props(&[
            ("bootstrap.servers", "b:9092"),
            ("security_protocol", "sasl_ssl"),
            ("sasl_mechanism", "scram-sha-512"),
        ]);
        let s = KafkaSettings::resolve(&own, &defaults, &ClientRules::default()).unwrap();
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
        assert!(
            KafkaSettings::resolve(&bad, &defaults, &ClientRules::default())
                .unwrap_err()
                .to_string()
                .contains("SCRAM-SHA-256")
        );
        let missing = props(&[
            ("bootstrap.servers", "b"),
            ("security_protocol", "SASL_PLAINTEXT"),
        ]);
        assert!(
            KafkaSettings::resolve(&missing, &props(&[]), &ClientRules::default())
                .unwrap_err()
                .to_string()
                .contains("KAFKA_USERNAME")
        );
    }

    #[test]
    fn configured_credentials_go_only_to_configured_clusters() {
        let defaults = props(&[
            ("bootstrap_servers", "kafka-1:9092,kafka-2:9092"),
            ("security_protocol", "SASL_PLAINTEXT"),
            ("sasl_username", "svc"),
            ("sasl_password", "hunter2"),
        ]);
        let rules = ClientRules::default();
        // one broker of the configured cluster: the credentials apply
        let own = props(&[("bootstrap.servers", "KAFKA-2:9092")]);
        let s = KafkaSettings::resolve(&own, &defaults, &rules).unwrap();
        assert_eq!(s.get("sasl.password"), Some("hunter2"));
        // another cluster: not the configured credentials (whether from a file or the environment)
        let own = props(&[("bootstrap.servers", "evil:9092")]);
        let e = KafkaSettings::resolve(&own, &defaults, &rules)
            .unwrap_err()
            .to_string();
        assert!(e.contains("go only to the configured clusters"), "{e}");
        let own = props(&[
            ("bootstrap.servers", "evil:9092"),
            ("security.protocol", "PLAINTEXT"),
        ]);
        let s = KafkaSettings::resolve(&own, &defaults, &rules).unwrap();
        assert_eq!(
            (s.get("sasl.username"), s.get("sasl.password")),
            (None, None)
        );
    }

    #[test]
    fn confined_applications_use_configured_clusters_and_allowed_properties() {
        let defaults = props(&[("bootstrap_servers", "kafka-1:9092")]);
        let rules = ClientRules {
            clusters: vec!["kafka-west:9092".into()],
            confined: true,
        };
        for ok in [
            props(&[]),
            props(&[("bootstrap.servers", "kafka-west:9092"), ("linger.ms", "0")]),
            props(&[("group.id", "g"), ("auto_offset_reset", "latest")]),
        ] {
            KafkaSettings::resolve(&ok, &defaults, &rules).unwrap();
        }
        let refused = |own: &[(&str, &str)]| {
            KafkaSettings::resolve(&props(own), &defaults, &rules)
                .unwrap_err()
                .to_string()
        };
        let e = refused(&[("bootstrap.servers", "attacker:9092")]);
        assert!(
            e.contains("'bootstrap.servers' = 'attacker:9092' is refused")
                && e.contains("kafka-1:9092; kafka-west:9092"),
            "{e}"
        );
        for key in [
            "plugin.library.paths",
            "ssl.ca.location",
            "ssl.engine.location",
            "sasl.kerberos.kinit.cmd",
            "sasl.oauthbearer.config",
        ] {
            let e = refused(&[(key, "/tmp/x")]);
            assert!(
                e.starts_with(&format!("'{key}' is refused")) && e.contains("load code"),
                "{e}"
            );
        }
        let e = refused(&[("enable.ssl.certificate.verification", "false")]);
        assert!(e.contains("allowed: bootstrap.servers"), "{e}");
    }
}
