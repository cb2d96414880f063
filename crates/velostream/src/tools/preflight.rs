//! `velostream check`: the deployment guide's pre-production checks, one
//! PASS/FAIL line each (SKIP when the configuration does not use the
//! dependency, WARN for what works but wastes: replicas beyond a topic's
//! partitions), and `velostream health`: the guide's health-check script
//! against a running service.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rdkafka::consumer::BaseConsumer;
use velostream_connectors::kafka::{self, KafkaDefaults};
use velostream_server::config::schema::{Guarantee, LogOutput};
use velostream_server::config::ServiceConfig;
use velostream_server::service::DEFAULT_STATE_DIR;
use velostream_sql::{SourceBinding, SourceOrigin};

use crate::app::Application;
use crate::tools::api_client::{ApiAuth, ApiClient};

/// The outcome of one check.
pub enum Outcome {
    Pass(String),
    Fail(String),
    Skip(String),
    /// Works, but not as the operator likely intends; does not fail the run.
    Warn(String),
}

/// Runs every check; prints one line each; true when none failed.
/// `replicas`: how many processes will run the configured applications.
pub fn check(files: &[PathBuf], replicas: Option<usize>) -> bool {
    let mut outcomes = Vec::new();
    let config = match crate::settings::load(files) {
        Ok(c) => {
            outcomes.push(Outcome::Pass(format!(
                "configuration: {} file(s) valid",
                files.len()
            )));
            Some(c)
        }
        Err(e) => {
            outcomes.push(Outcome::Fail(format!("configuration: {e}")));
            None
        }
    };
    if let Some(c) = &config {
        outcomes.push(kafka(c));
        outcomes.push(database(c));
        outcomes.push(writable_dir(
            "state directory",
            &c.velostream
                .state_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
        ));
        let log_dirs: Vec<PathBuf> = c
            .logging
            .iter()
            .flat_map(|l| &l.outputs)
            .filter_map(|o| match o {
                LogOutput::File { path, .. } => path.parent().map(Path::to_path_buf),
                _ => None,
            })
            .collect();
        if log_dirs.is_empty() {
            outcomes.push(Outcome::Skip(
                "log directory: no file output configured".into(),
            ));
        }
        for dir in log_dirs {
            outcomes.push(writable_dir("log directory", &dir));
        }
    }
    if let (Some(c), Some(n)) = (&config, replicas) {
        let base = files
            .first()
            .and_then(|f| f.parent())
            .map(Path::to_path_buf)
            .unwrap_or_default();
        outcomes.extend(scale_out(c, &base, n));
    }
    outcomes.push(limit("file descriptors", "Max open files", 65_536));
    outcomes.push(limit("processes", "Max processes", 32_768));
    let mut ok = true;
    for o in &outcomes {
        match o {
            Outcome::Pass(m) => println!("PASS {m}"),
            Outcome::Skip(m) => println!("SKIP {m}"),
            Outcome::Warn(m) => println!("WARN {m}"),
            Outcome::Fail(m) => {
                ok = false;
                println!("FAIL {m}")
            }
        }
    }
    println!(
        "{}",
        if ok {
            "all pre-production checks passed"
        } else {
            "pre-production checks failed"
        }
    );
    ok
}

/// `--replicas N`: for each configured application, each statement reading
/// a Kafka topic as a consumer group member: the group can keep at most
/// one process busy per partition, so replicas beyond the topic's
/// partition count idle (WARN).
fn scale_out(c: &ServiceConfig, base: &Path, replicas: usize) -> Vec<Outcome> {
    let options = crate::launcher::run_settings(c);
    let mut outcomes = Vec::new();
    for entry in &c.velostream.applications {
        let path = base.join(entry.path());
        let application = match Application::load(&path, &options) {
            Ok(a) => a,
            Err(e) => {
                outcomes.push(Outcome::Fail(format!("scale-out: {}: {e}", path.display())));
                continue;
            }
        };
        for plan in &application.plans {
            let Some(binding) = plan.sources.first() else {
                continue;
            };
            if binding.origin != SourceOrigin::External
                || binding.properties.get("type").map(String::as_str)
                    != Some(velostream_connectors::types::KAFKA_SOURCE)
                || !binding.table_key.is_empty()
            {
                continue;
            }
            let what = format!("scale-out: {} job {}", path.display(), plan.name);
            outcomes.push(match topic_partitions(&options.kafka, binding) {
                Ok((topic, n)) if replicas > n => Outcome::Warn(format!(
                    "{what}: {replicas} replicas, but topic '{topic}' has {n} partitions: {} replica(s) would own none and idle (parallelism is at most the partition count)",
                    replicas - n
                )),
                Ok((topic, n)) => Outcome::Pass(format!(
                    "{what}: topic '{topic}' has {n} partitions for {replicas} replicas"
                )),
                Err(e) => Outcome::Fail(format!("{what}: {e}")),
            });
        }
    }
    if outcomes.is_empty() {
        outcomes.push(Outcome::Skip(
            "scale-out: no configured application reads a Kafka topic as a consumer group".into(),
        ));
    }
    outcomes
}

/// The topic source `binding` reads and its partition count.
fn topic_partitions(
    defaults: &KafkaDefaults,
    binding: &SourceBinding,
) -> Result<(String, usize), String> {
    let topic = kafka::topic(
        &binding.properties,
        velostream_connectors::types::KAFKA_SOURCE,
    )
    .map_err(|e| e.to_string())?;
    let settings = kafka::client_settings(
        defaults,
        binding
            .properties
            .get("bootstrap.servers")
            .map(String::as_str),
    )
    .map_err(|e| e.to_string())?;
    let consumer: BaseConsumer = settings
        .client_config()
        .create()
        .map_err(|e| e.to_string())?;
    let partitions = kafka::admin::partitions(&consumer, &topic, Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    Ok((topic, partitions.len()))
}

fn connection_timeout(c: &ServiceConfig) -> Duration {
    c.velostream
        .timeouts
        .connection_timeout
        .map(|d| d.0)
        .unwrap_or(Duration::from_secs(10))
}

fn kafka(c: &ServiceConfig) -> Outcome {
    let defaults = crate::settings::kafka_defaults(c);
    if kafka::bootstrap_servers(&defaults).is_none() {
        return Outcome::Skip(
            "kafka: no velostream.kafka.bootstrap_servers (or KAFKA_BROKERS)".into(),
        );
    }
    // with the configured security settings and credentials, as connectors connect
    match kafka::probe(&defaults, connection_timeout(c)) {
        Ok(p) => Outcome::Pass(format!(
            "kafka: {} reachable ({} broker(s), {} topic(s))",
            p.servers, p.brokers, p.topics
        )),
        Err(e) => Outcome::Fail(format!("kafka: {e}")),
    }
}

/// Logs in to the configured PostgreSQL database and runs a query, as the
/// guide's `psql -c "SELECT 1"` does.
fn database(c: &ServiceConfig) -> Outcome {
    let defaults = crate::settings::database_defaults(c);
    if !defaults.is_configured() {
        return Outcome::Skip(
            "database: none configured (velostream.database.host, DB_HOST, or a region's database endpoint)".into(),
        );
    }
    let exactly_once = c.velostream.processing.guarantee == Guarantee::ExactlyOnce;
    match velostream_connectors::postgres::probe(&defaults) {
        Ok(p) if exactly_once && p.max_prepared_transactions == 0 => Outcome::Fail(format!(
            "database: {}, but its max_prepared_transactions is 0 and processing.guarantee is exactly_once: PostgreSQL sinks prepare a transaction per checkpoint; set it above 0 (for example 16) and restart the server",
            p.summary
        )),
        Ok(p) if exactly_once => Outcome::Pass(format!(
            "database: {} (max_prepared_transactions {}: exactly-once sinks can prepare)",
            p.summary, p.max_prepared_transactions
        )),
        Ok(p) => Outcome::Pass(format!("database: {}", p.summary)),
        Err(e) => Outcome::Fail(format!("database: {e}")),
    }
}

fn writable_dir(what: &str, dir: &Path) -> Outcome {
    let probe = dir.join(".velostream-write-check");
    match std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::write(&probe, b"ok"))
        .and_then(|_| std::fs::remove_file(&probe))
    {
        Ok(()) => Outcome::Pass(format!("{what}: {} writable", dir.display())),
        Err(e) => Outcome::Fail(format!("{what}: {} not writable: {e}", dir.display())),
    }
}

/// The soft limit `name` of `/proc/self/limits` against `needed`.
fn limit(what: &str, name: &str, needed: u64) -> Outcome {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits.lines().find(|l| l.starts_with(name)).and_then(|l| {
        l[name.len()..]
            .split_whitespace()
            .next()
            .map(str::to_string)
    });
    match soft.as_deref() {
        Some("unlimited") => Outcome::Pass(format!("{what}: unlimited")),
        Some(n) => match n.parse::<u64>() {
            Ok(v) if v >= needed => Outcome::Pass(format!("{what}: limit {v} (>= {needed})")),
            Ok(v) => Outcome::Fail(format!(
                "{what}: limit {v}, needs {needed} (raise it with ulimit or the service manager)"
            )),
            Err(_) => Outcome::Fail(format!("{what}: unreadable limit '{n}'")),
        },
        None => Outcome::Skip(format!("{what}: limit unknown on this system")),
    }
}

/// `velostream health`: GET `/health` and `/metrics` (with `auth`'s token
/// and TLS settings), print a line each and memory use; true when both
/// answered 200.
pub fn health(auth: &ApiAuth, health_url: &str, metrics_url: &str) -> bool {
    let client = match ApiClient::new(auth.clone()) {
        Ok(c) => c,
        Err(e) => {
            println!("FAIL {e}");
            println!("health check failed with 1 error(s)");
            return false;
        }
    };
    let mut errors = 0;
    for (what, url) in [("Velostream", health_url), ("Metrics", metrics_url)] {
        match client.get(url).map(|r| r.status) {
            Ok(200) => println!("PASS {what} is healthy ({url})"),
            Ok(code) => {
                errors += 1;
                println!("FAIL {what} is unhealthy (HTTP {code}, {url})")
            }
            Err(e) => {
                errors += 1;
                println!("FAIL {what} is unreachable ({url}): {e}")
            }
        }
    }
    if let Some(used) = memory_used_percent() {
        println!("memory in use: {used:.1}%");
    }
    if errors > 0 {
        println!("health check failed with {errors} error(s)");
    }
    errors == 0
}

fn memory_used_percent() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<f64> {
        info.lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let (total, available) = (field("MemTotal:")?, field("MemAvailable:")?);
    Some(100.0 * (total - available) / total)
}
