//! How the service starts an SQL application: load, check and build its
//! jobs with the settings of the configuration.

use std::path::Path;
use std::time::Duration;

use velostream_connectors::kafka::KafkaDefaults;
use velostream_engine::Job;
use velostream_server::config::ServiceConfig;
use velostream_server::supervisor::Launcher;
use velostream_sql::PropertyOverrides;

use crate::app::{Application, RunOptions};

/// Builds applications' jobs with the service's batch size and Kafka settings.
pub struct AppLauncher {
    batch_size: usize,
    kafka: KafkaDefaults,
    connection_timeout: Duration,
}

/// What running an application takes from a configuration: records per
/// batch (`performance.batch_size`, default 1000) and the Kafka settings.
pub fn run_settings(config: &ServiceConfig) -> (usize, KafkaDefaults) {
    let launcher = AppLauncher::new(config);
    (launcher.batch_size, launcher.kafka)
}

impl AppLauncher {
    pub fn new(config: &ServiceConfig) -> Self {
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
        let mut kafka = KafkaDefaults {
            client,
            ..KafkaDefaults::default()
        };
        if let Some(t) = config.velostream.timeouts.table_load_timeout {
            kafka.table_load_timeout = t.0;
        }
        if let Some(t) = p.batch_timeout {
            kafka.batch_timeout = t.0;
        }
        Self {
            batch_size: p.batch_size.unwrap_or(1000).max(1),
            kafka,
            connection_timeout: config
                .velostream
                .timeouts
                .connection_timeout
                .map(|d| d.0)
                .unwrap_or(Duration::from_secs(10)),
        }
    }
}

impl Launcher for AppLauncher {
    fn launch(&self, path: &Path) -> Result<Vec<Job>, String> {
        let options = RunOptions {
            batch_size: self.batch_size,
            overrides: PropertyOverrides::new(),
            kafka: self.kafka.clone(),
        };
        let app = Application::load(path, &options).map_err(|e| e.to_string())?;
        app.check().map_err(|e| e.to_string())?;
        app.build_jobs().map_err(|e| e.to_string())
    }

    /// The configured Kafka cluster answers a metadata request.
    fn probe(&self) -> Vec<(String, Result<(), String>)> {
        let servers = self
            .kafka
            .client
            .get("bootstrap_servers")
            .or_else(|| self.kafka.client.get("bootstrap.servers"))
            .cloned()
            .or_else(|| std::env::var("KAFKA_BROKERS").ok());
        let Some(servers) = servers else {
            return Vec::new();
        };
        let outcome = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &servers)
            .create::<rdkafka::consumer::BaseConsumer>()
            .and_then(|c| {
                rdkafka::consumer::Consumer::fetch_metadata(&c, None, self.connection_timeout)
            })
            .map(|_| ())
            .map_err(|e| format!("{servers} not reachable: {e}"));
        vec![("kafka".to_string(), outcome)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn the_guide_tuning_reaches_the_kafka_clients() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config/guide");
        let config = velostream_server::config::load(
            &[
                dir.join("production.yaml"),
                dir.join("optimized-config.yaml"),
            ],
            &velostream_server::config::Environment::default(),
        )
        .unwrap();
        let launcher = AppLauncher::new(&config);
        let client = &launcher.kafka.client;
        assert_eq!(client["compression_type"], "snappy");
        assert_eq!(client["compression.level"], "6");
        assert_eq!(client["max.in.flight.requests.per.connection"], "5");
        assert_eq!(client["queue.buffering.max.kbytes"], "1024");
        assert_eq!(client["linger_ms"], "100");
        assert_eq!(launcher.kafka.batch_timeout, Duration::from_millis(200));
        assert_eq!(launcher.batch_size, 100_000);
        assert_eq!(launcher.kafka.table_load_timeout, Duration::from_secs(120));
    }
}
