//! Where connector settings come from. One precedence, highest first:
//!
//! 1. a statement's own properties (`'<name>.bootstrap.servers'`,
//!    `'<name>.url'`, any librdkafka key), applied by its connector;
//! 2. the environment: `KAFKA_BROKERS`, `KAFKA_USERNAME`, `KAFKA_PASSWORD`,
//!    `DB_HOST`, `DB_PORT`, `DB_USER`, `DB_PASSWORD`, `DB_NAME` and
//!    `VELOSTREAM__<SECTION>__<KEY>`;
//! 3. the configuration files (`--config`, later files over earlier ones);
//! 4. built-in defaults.
//!
//! The configuration loader merges 2–4, also when no file is given, so
//! `velostream run app.sql` reads the same variables as the service; this
//! module turns the result into the defaults every connector, probe,
//! `check` and tool starts from. Nothing else reads these variables.

use std::path::PathBuf;

use rdkafka::ClientConfig;
use velostream_connectors::kafka::{self, KafkaDefaults};
use velostream_connectors::postgres::connection::DatabaseDefaults;
use velostream_server::config::{self, ConfigError, Environment, ServiceConfig};

/// The broker tools use when neither `--brokers` nor the settings name one.
pub const LOCAL_BROKERS: &str = "localhost:9092";

/// The configuration of `files` (none: the environment and the defaults
/// alone) with the process environment applied over it.
pub fn load(files: &[PathBuf]) -> Result<ServiceConfig, ConfigError> {
    config::load(files, &Environment::from_process())
}

/// `velostream.kafka.transactional_id_prefix`: what exactly-once sinks'
/// transactional ids start with (see [`KafkaDefaults::transactional_id`]).
pub const TRANSACTIONAL_ID_PREFIX: &str = "transactional_id_prefix";

/// The Kafka settings of a configuration: `velostream.kafka` (with the
/// environment's `KAFKA_*` applied), the `performance` tuning as producer
/// defaults, the table-load and batch timeouts, and the primary region's
/// cluster when `regions` names one.
pub fn kafka_defaults(config: &ServiceConfig) -> KafkaDefaults {
    let mut client: std::collections::BTreeMap<String, String> = config
        .velostream
        .kafka
        .iter()
        .map(|(k, v)| (k.clone(), v.as_text()))
        .collect();
    // performance tuning becomes producer defaults (velostream.kafka wins)
    let p = &config.performance;
    let mut tuned = |key: &str, value: Option<String>| {
        if let Some(v) = value {
            client.entry(key.to_string()).or_insert(v);
        }
    };
    tuned(
        "compression.type",
        p.compression
            .as_ref()
            .map(|c| format!("{:?}", c.codec).to_lowercase()),
    );
    tuned(
        "compression.level",
        p.compression
            .as_ref()
            .and_then(|c| c.level)
            .map(|l| l.to_string()),
    );
    tuned(
        "max.in.flight.requests.per.connection",
        p.max_in_flight_requests.map(|n| n.to_string()),
    );
    tuned(
        "queue.buffering.max.kbytes",
        p.buffer_size.map(|b| (b.0 / 1024).max(1).to_string()),
    );
    // Velostream's own key, not a librdkafka property
    let transactional_id_prefix = client.remove(TRANSACTIONAL_ID_PREFIX);
    let mut kafka = KafkaDefaults {
        client,
        transactional_id_prefix,
        ..KafkaDefaults::default()
    };
    if let Some(t) = config.velostream.timeouts.table_load_timeout {
        kafka.table_load_timeout = t.0;
    }
    if let Some(t) = p.batch_timeout {
        kafka.batch_timeout = t.0;
    }
    // with regions, the primary region's cluster is used until a failover
    if let Some(servers) = config
        .regions
        .as_ref()
        .and_then(|r| r.primary.endpoints.kafka.clone())
    {
        kafka.client.remove("bootstrap_servers");
        kafka.client.insert("bootstrap.servers".into(), servers);
    }
    kafka
}

/// The PostgreSQL settings of a configuration: `velostream.database`, the
/// primary region's database endpoint (`host:port`) when `regions` names
/// one, and `timeouts.connection_timeout` for connecting.
pub fn database_defaults(config: &ServiceConfig) -> DatabaseDefaults {
    let mut d = DatabaseDefaults::default();
    if let Some(db) = &config.velostream.database {
        d.host = db.host.clone();
        d.port = db.port;
        d.user = db.user.clone();
        d.password = db.password.clone();
        d.name = db.name.clone();
        d.tls = db.sslmode.is_some_and(|m| m.uses_tls());
        d.root_cert = db.sslrootcert.clone();
    }
    if let Some(endpoint) = config
        .regions
        .as_ref()
        .and_then(|r| r.primary.endpoints.database.as_deref())
    {
        use_endpoint(&mut d, endpoint);
    }
    d.connect_timeout = config.velostream.timeouts.connection_timeout.map(|t| t.0);
    d
}

/// Points `d` at a region's `host:port` (the port stays when absent).
pub(crate) fn use_endpoint(d: &mut DatabaseDefaults, endpoint: &str) {
    match endpoint.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => {
            d.host = Some(host.to_string());
            d.port = port.parse().ok();
        }
        _ => d.host = Some(endpoint.to_string()),
    }
}

/// The Kafka client a tool or probe connects with: `brokers` (a
/// `--brokers` flag) or the configured cluster, with the configured
/// security settings (`security.protocol`, SASL credentials, TLS); the
/// local broker when nothing names one.
pub fn kafka_client(config: &ServiceConfig, brokers: Option<&str>) -> Result<ClientConfig, String> {
    let defaults = kafka_defaults(config);
    let configured = kafka::bootstrap_servers(&defaults).is_some();
    let brokers = brokers.or((!configured).then_some(LOCAL_BROKERS));
    kafka::client_settings(&defaults, brokers)
        .map(|s| s.client_config())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Environment {
        Environment(
            vars.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn the_environment_reaches_connectors_without_a_configuration_file() {
        let config = config::load(
            &[],
            &env(&[
                ("KAFKA_BROKERS", "env:9092"),
                ("KAFKA_USERNAME", "svc"),
                ("KAFKA_PASSWORD", "hunter2"),
                ("DB_HOST", "db.local"),
                ("DB_PORT", "6432"),
            ]),
        )
        .unwrap();
        let kafka = kafka_defaults(&config);
        assert_eq!(
            kafka::bootstrap_servers(&kafka).as_deref(),
            Some("env:9092")
        );
        let database = database_defaults(&config);
        assert_eq!(database.host.as_deref(), Some("db.local"));
        assert_eq!(database.port, Some(6432));
        // a secured cluster: the probe's client carries the credentials
        let secured = config::load(
            &[],
            &env(&[
                ("KAFKA_BROKERS", "env:9092"),
                ("KAFKA_USERNAME", "svc"),
                ("KAFKA_PASSWORD", "hunter2"),
                (
                    "VELOSTREAM__VELOSTREAM__KAFKA__SECURITY_PROTOCOL",
                    "SASL_SSL",
                ),
            ]),
        )
        .unwrap();
        let client = kafka_client(&secured, None).unwrap();
        assert_eq!(client.get("bootstrap.servers"), Some("env:9092"));
        assert_eq!(client.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(client.get("sasl.username"), Some("svc"));
        assert_eq!(client.get("sasl.password"), Some("hunter2"));
    }

    #[test]
    fn the_environment_wins_over_files_and_a_flag_over_both() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.yaml");
        std::fs::write(
            &file,
            "velostream:\n  kafka:\n    bootstrap_servers: file:9092\n",
        )
        .unwrap();
        let from_file = config::load(std::slice::from_ref(&file), &env(&[])).unwrap();
        assert_eq!(
            kafka::bootstrap_servers(&kafka_defaults(&from_file)).as_deref(),
            Some("file:9092")
        );
        let config = config::load(
            std::slice::from_ref(&file),
            &env(&[("KAFKA_BROKERS", "env:9092")]),
        )
        .unwrap();
        assert_eq!(
            kafka::bootstrap_servers(&kafka_defaults(&config)).as_deref(),
            Some("env:9092")
        );
        let flagged = kafka_client(&config, Some("flag:9092")).unwrap();
        assert_eq!(flagged.get("bootstrap.servers"), Some("flag:9092"));
        let local = kafka_client(&config::load(&[], &env(&[])).unwrap(), None).unwrap();
        assert_eq!(local.get("bootstrap.servers"), Some(LOCAL_BROKERS));
    }

    #[test]
    fn the_transactional_id_prefix_names_exactly_once_sinks_and_stays_out_of_librdkafka() {
        let unset = config::load(&[], &env(&[])).unwrap();
        assert_eq!(
            kafka_defaults(&unset).transactional_id("totals"),
            "velostream-totals"
        );
        let green = config::load(
            &[],
            &env(&[
                ("KAFKA_BROKERS", "env:9092"),
                (
                    "VELOSTREAM__VELOSTREAM__KAFKA__TRANSACTIONAL_ID_PREFIX",
                    "velostream-green-",
                ),
            ]),
        )
        .unwrap();
        let kafka = kafka_defaults(&green);
        assert_eq!(kafka.transactional_id("totals"), "velostream-green-totals");
        assert!(!kafka.client.contains_key(TRANSACTIONAL_ID_PREFIX));
        let client = kafka_client(&green, None).unwrap();
        assert_eq!(client.get(TRANSACTIONAL_ID_PREFIX), None);
    }
}
