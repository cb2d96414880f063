//! How the service starts an SQL application: load, check and build its
//! jobs with the settings of the configuration.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use velostream_connectors::kafka::config::ClientRules;
use velostream_connectors::kafka::{self, KafkaDefaults};
use velostream_connectors::postgres::{self, connection::DatabaseDefaults};
use velostream_connectors::{Guarantee, Sandbox};
use velostream_engine::checkpoint::{BackendKind, CheckpointSettings};
use velostream_engine::connector::LookupCache;
use velostream_engine::Job;
use velostream_server::config::schema::{self, StateBackend};
use velostream_server::config::ServiceConfig;
use velostream_server::service::DEFAULT_STATE_DIR;
use velostream_server::supervisor::{LaunchError, Launcher};
use velostream_sql::{PropertyOverrides, StatementKind};

use crate::app::{AppError, Application, RunOptions};
use crate::settings;

/// Builds applications' jobs with the service's batch size and Kafka settings.
pub struct AppLauncher {
    batch_size: usize,
    /// How long an ad-hoc query (a bare SELECT) may run.
    query_timeout: Option<Duration>,
    /// Behind a lock: a region failover changes the bootstrap servers.
    kafka: std::sync::Mutex<KafkaDefaults>,
    connection_timeout: Duration,
    checkpoints: Option<CheckpointSettings>,
    guarantee: Guarantee,
    /// `processing.parallelism` (at least 1), capped by `performance.worker_threads`.
    parallelism: usize,
    /// Threads decoding each file source (see [`decode_threads`]).
    decode_threads: Option<usize>,
    /// Behind a lock: a region failover changes the database endpoint.
    database: std::sync::Mutex<DatabaseDefaults>,
    lookup_cache: LookupCache,
    /// The confinement of the applications the service runs; `None` for
    /// `velostream run --config`, the user's own process.
    confinement: Option<Confinement>,
    /// `processing.error_policy`.
    error_policy: Option<velostream_sql::ErrorPolicy>,
    /// `processing.standby_replicas`.
    standby_replicas: usize,
}

/// What an application the service runs may touch (`security.sandbox`),
/// and where its state lives.
#[derive(Debug, Clone)]
struct Confinement {
    files: Arc<Sandbox>,
    /// Every Kafka cluster the configuration names.
    clusters: Vec<String>,
}

impl Confinement {
    /// `security.sandbox.allowed_paths` (relative to `base_dir`), by
    /// default the directory of each configured application and
    /// `<state_dir>/data`; the clusters of `velostream.kafka` and `regions`.
    fn of(config: &ServiceConfig, base_dir: &Path) -> Self {
        let configured = config
            .security
            .as_ref()
            .and_then(|s| s.sandbox.as_ref())
            .map(|s| s.allowed_paths.clone())
            .unwrap_or_default();
        let allowed: Vec<PathBuf> = if configured.is_empty() {
            let data = state_dir(config).join("data");
            // best effort: an existing directory canonicalises, so a symlinked state directory still matches
            let _ = std::fs::create_dir_all(&data);
            config
                .velostream
                .applications
                .iter()
                .filter_map(|a| base_dir.join(a.path()).parent().map(Path::to_path_buf))
                .chain([data])
                .collect()
        } else {
            configured.iter().map(|p| base_dir.join(p)).collect()
        };
        let mut clusters: Vec<String> = config
            .velostream
            .kafka
            .iter()
            .filter(|(k, _)| matches!(k.as_str(), "bootstrap_servers" | "bootstrap.servers"))
            .map(|(_, v)| v.as_text())
            .collect();
        if let Some(r) = &config.regions {
            clusters.extend(r.primary.endpoints.kafka.clone());
            clusters.extend(r.secondary.as_ref().and_then(|s| s.endpoints.kafka.clone()));
        }
        Self {
            files: Arc::new(Sandbox::new(allowed)),
            clusters,
        }
    }
}

/// `velostream.state_dir`, or the default.
fn state_dir(config: &ServiceConfig) -> PathBuf {
    config
        .velostream
        .state_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
}

/// How joins cache PostgreSQL lookups: `performance.cache.table_cache_size`
/// keys with rows, `query_cache_size` keys without, each trusted for `ttl`.
fn lookup_cache(config: &ServiceConfig) -> LookupCache {
    let mut cache = LookupCache::default();
    if let Some(c) = &config.performance.cache {
        if let Some(n) = c.table_cache_size {
            cache.max_keys = n as usize;
        }
        if let Some(n) = c.query_cache_size {
            cache.max_missing = n as usize;
        }
        if let Some(t) = c.ttl {
            cache.ttl = t.0;
        }
    }
    cache
}

/// `processing.parallelism`, at most `performance.worker_threads` when that is set (> 0).
fn parallelism(config: &ServiceConfig) -> usize {
    let wanted = config.velostream.processing.parallelism.unwrap_or(1).max(1) as usize;
    match config.performance.worker_threads {
        Some(n) if n > 0 && (n as usize) < wanted => {
            tracing::info!(
                component = "service",
                "processing.parallelism {wanted} is capped at performance.worker_threads {n}"
            );
            n as usize
        }
        _ => wanted,
    }
}

/// Threads decoding each file source: `processing.parallelism` when it is
/// set; else one per core (`None`), at most `performance.worker_threads`.
fn decode_threads(config: &ServiceConfig) -> Option<usize> {
    if config.velostream.processing.parallelism.is_some() {
        return Some(parallelism(config));
    }
    match config.performance.worker_threads {
        Some(n) if n > 0 => {
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            Some(cores.min(n as usize))
        }
        _ => None,
    }
}

/// What running an application takes from a configuration: records per
/// batch (`performance.batch_size`, default 1000), the Kafka settings,
/// checkpoints (`processing.*`, `state_dir`) and the delivery guarantee.
pub fn run_settings(config: &ServiceConfig) -> RunOptions {
    AppLauncher::new(config).options()
}

/// Checkpoint settings of a configuration: on when
/// `processing.checkpoint_interval` is set.
fn checkpoint_settings(config: &ServiceConfig) -> Option<CheckpointSettings> {
    let v = &config.velostream;
    let interval = v.processing.checkpoint_interval?.0;
    let mut settings = CheckpointSettings::new(state_dir(config), interval);
    settings.backend = match v.processing.state_backend {
        StateBackend::Memory => BackendKind::Memory,
        StateBackend::Rocksdb => BackendKind::RocksDb,
    };
    if let Some(keep) = v.processing.checkpoint_retention {
        settings.retain = keep.max(1) as usize;
    }
    Some(settings)
}

impl AppLauncher {
    /// The launcher of the service: every application it runs is confined
    /// per `security.sandbox` (`base_dir` resolves relative paths, as for
    /// the configured applications).
    pub fn for_service(config: &ServiceConfig, base_dir: &Path) -> Self {
        Self {
            confinement: Some(Confinement::of(config, base_dir)),
            ..Self::new(config)
        }
    }

    /// A launcher with the settings of `config` and no confinement (`velostream run --config`).
    pub fn new(config: &ServiceConfig) -> Self {
        let p = &config.performance;
        Self {
            parallelism: parallelism(config),
            decode_threads: decode_threads(config),
            standby_replicas: config.velostream.processing.standby_replicas.unwrap_or(0) as usize,
            database: std::sync::Mutex::new(settings::database_defaults(config)),
            lookup_cache: lookup_cache(config),
            checkpoints: checkpoint_settings(config),
            guarantee: match config.velostream.processing.guarantee {
                schema::Guarantee::AtLeastOnce => Guarantee::AtLeastOnce,
                schema::Guarantee::ExactlyOnce => Guarantee::ExactlyOnce,
            },
            query_timeout: config.velostream.timeouts.query_timeout.map(|d| d.0),
            batch_size: p.batch_size.unwrap_or(1000).max(1),
            kafka: std::sync::Mutex::new(settings::kafka_defaults(config)),
            confinement: None,
            error_policy: config.velostream.processing.error_policy.map(|p| match p {
                schema::ErrorPolicySetting::DeadLetter => velostream_sql::ErrorPolicy::DeadLetter,
                schema::ErrorPolicySetting::Skip => velostream_sql::ErrorPolicy::Skip,
                schema::ErrorPolicySetting::Fail => velostream_sql::ErrorPolicy::Fail,
            }),
            connection_timeout: config
                .velostream
                .timeouts
                .connection_timeout
                .map(|d| d.0)
                .unwrap_or(Duration::from_secs(10)),
        }
    }
}

/// Cancels job `name` (at its next batch boundary) once `limit` has passed.
fn stop_after(name: String, cancel: Arc<AtomicBool>, limit: Duration) {
    let _ = std::thread::Builder::new()
        .name(format!("timeout-{name}"))
        .spawn(move || {
            std::thread::sleep(limit);
            if !cancel.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    component = "service",
                    error_type = "query_timeout",
                    "query {name} stopped after {limit:?} (timeouts.query_timeout)"
                );
            }
        });
}

impl AppLauncher {
    /// The Kafka settings applications are launched with now.
    pub fn kafka_defaults(&self) -> KafkaDefaults {
        self.kafka.lock().map(|k| k.clone()).unwrap_or_default()
    }

    /// The database settings applications are launched with now.
    pub fn database_defaults(&self) -> DatabaseDefaults {
        self.database.lock().map(|d| d.clone()).unwrap_or_default()
    }

    /// The settings applications are launched with now.
    pub fn options(&self) -> RunOptions {
        RunOptions {
            batch_size: self.batch_size,
            overrides: PropertyOverrides::new(),
            kafka: self.kafka_defaults(),
            checkpoints: self.checkpoints.clone(),
            guarantee: self.guarantee,
            parallelism: self.parallelism,
            database: self.database_defaults(),
            lookup_cache: self.lookup_cache,
            sandbox: None,
            error_policy: self.error_policy,
            append_by_default: false,
            decode_threads: self.decode_threads,
            decode_chunk_bytes: None,
            standby_replicas: self.standby_replicas,
        }
    }

    /// The settings application `name` is launched with: confined when
    /// this is the service's launcher, its jobs' state under
    /// `<state_dir>/jobs/<name>/`, so two applications with a statement of
    /// the same name keep apart.
    fn options_of(&self, name: &str) -> Result<RunOptions, String> {
        velostream_sql::names::check_path_name("application", name)?;
        let mut options = self.options();
        if let Some(c) = &self.confinement {
            // a supervised restart never destroys what earlier runs wrote
            options.append_by_default = true;
            options.sandbox = Some(c.files.clone());
            options.kafka.rules = ClientRules {
                clusters: c.clusters.clone(),
                confined: true,
            };
            options.database.confined = true;
            if let Some(settings) = &mut options.checkpoints {
                settings.state_dir = settings.state_dir.join("jobs").join(name);
            }
        }
        Ok(options)
    }
}

impl Launcher for AppLauncher {
    fn launch(&self, name: &str, path: &Path) -> Result<Vec<Job>, LaunchError> {
        let failed = |e: AppError| LaunchError {
            kind: e.kind(),
            message: e.to_string(),
        };
        let app = Application::load(path, &self.options_of(name)?).map_err(failed)?;
        app.check().map_err(failed)?;
        let jobs = app.build_jobs().map_err(failed)?;
        if let Some(limit) = self.query_timeout {
            // ad-hoc queries (a bare SELECT) end after `timeouts.query_timeout`
            for (job, plan) in jobs.iter().zip(&app.plans) {
                if plan.kind == StatementKind::Select {
                    stop_after(job.name.clone(), job.cancel_handle(), limit);
                }
            }
        }
        Ok(jobs)
    }

    fn validate(&self, name: &str, path: &Path) -> Result<(), String> {
        let app = Application::load(path, &self.options_of(name)?).map_err(|e| e.to_string())?;
        app.check().map_err(|e| e.to_string())
    }

    /// The configured Kafka cluster answers a metadata request (asked
    /// with the configured security settings and credentials), and the
    /// configured database a query.
    fn probe(&self) -> Vec<(String, Result<(), String>)> {
        let kafka = self.kafka_defaults();
        let mut outcomes = Vec::new();
        if kafka::bootstrap_servers(&kafka).is_some() {
            let outcome = kafka::probe(&kafka, self.connection_timeout)
                .map(|_| ())
                .map_err(|e| e.to_string());
            outcomes.push(("kafka".to_string(), outcome));
        }
        let database = self.database_defaults();
        if database.is_configured() {
            outcomes.push((
                "database".to_string(),
                postgres::probe(&database)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            ));
        }
        outcomes
    }

    fn use_database(&self, endpoint: &str) {
        if let Ok(mut d) = self.database.lock() {
            settings::use_endpoint(&mut d, endpoint);
        }
    }

    fn use_kafka(&self, bootstrap_servers: &str) {
        if let Ok(mut kafka) = self.kafka.lock() {
            kafka.client.remove("bootstrap_servers");
            kafka
                .client
                .insert("bootstrap.servers".into(), bootstrap_servers.to_string());
        }
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
        let kafka = launcher.kafka_defaults();
        let client = &kafka.client;
        assert_eq!(client["compression_type"], "snappy");
        assert_eq!(client["compression.level"], "6");
        assert_eq!(client["max.in.flight.requests.per.connection"], "5");
        assert_eq!(client["queue.buffering.max.kbytes"], "1024");
        assert_eq!(client["linger_ms"], "100");
        assert_eq!(kafka.batch_timeout, Duration::from_millis(200));
        assert_eq!(launcher.batch_size, 100_000);
        assert_eq!(kafka.table_load_timeout, Duration::from_secs(120));
        assert_eq!(
            launcher.lookup_cache,
            LookupCache {
                max_keys: 10_000,
                max_missing: 1_000,
                ttl: Duration::from_secs(300)
            }
        );
        // processing.parallelism 16 within performance.worker_threads 16
        assert_eq!(launcher.parallelism, 16);
    }

    fn config_of(yaml: &str) -> ServiceConfig {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        std::fs::write(&file, yaml).unwrap();
        velostream_server::config::load(&[file], &velostream_server::config::Environment::default())
            .unwrap()
    }

    #[test]
    fn worker_threads_caps_the_pipelines_of_a_job() {
        let capped = config_of(
            "velostream:\n  processing:\n    parallelism: 8\nperformance:\n  worker_threads: 3\n",
        );
        assert_eq!(AppLauncher::new(&capped).parallelism, 3);
        let uncapped = config_of(
            "velostream:\n  processing:\n    parallelism: 2\nperformance:\n  worker_threads: 0\n",
        );
        assert_eq!(AppLauncher::new(&uncapped).parallelism, 2);
    }

    #[test]
    fn the_region_database_endpoint_replaces_host_and_port() {
        let config = config_of(
            "velostream:\n  database:\n    host: db.local\n    user: app\n    name: sales\nregions:\n  primary:\n    name: east\n    endpoints:\n      database: \"db-east.internal:6432\"\n",
        );
        let launcher = AppLauncher::new(&config);
        let d = launcher.database_defaults();
        assert_eq!(
            (
                d.host.as_deref(),
                d.port,
                d.user.as_deref(),
                d.name.as_deref()
            ),
            (
                Some("db-east.internal"),
                Some(6432),
                Some("app"),
                Some("sales")
            )
        );
        launcher.use_database("db-west.internal:5433");
        let d = launcher.database_defaults();
        assert_eq!(
            (d.host.as_deref(), d.port),
            (Some("db-west.internal"), Some(5433))
        );
    }
}
