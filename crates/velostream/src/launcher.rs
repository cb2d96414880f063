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
        let mut kafka = KafkaDefaults {
            client: config
                .velostream
                .kafka
                .iter()
                .map(|(k, v)| (k.clone(), v.as_text()))
                .collect(),
            ..KafkaDefaults::default()
        };
        if let Some(t) = config.velostream.timeouts.table_load_timeout {
            kafka.table_load_timeout = t.0;
        }
        Self {
            batch_size: config.performance.batch_size.unwrap_or(1000).max(1),
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
