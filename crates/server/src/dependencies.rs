//! Watching the external dependencies: the Kafka cluster the applications
//! use is probed (a metadata request) at start and then periodically; the
//! outcome feeds `/ready` and `kafka_broker_availability`. With
//! `regions.failover.strategy: active-passive`, `failover_threshold` failed
//! probes in a row (every `health_check_interval`) switch to the secondary
//! region's cluster and restart the applications against it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::schema::FailoverStrategy;
use crate::config::ServiceConfig;
use crate::http::ServiceState;
use crate::supervisor::Launcher;

/// How often dependencies are probed without `regions.failover`.
const PROBE_INTERVAL: Duration = Duration::from_secs(10);

/// Where to go when the primary region's cluster stops answering.
#[derive(Debug, Clone)]
pub struct FailoverPlan {
    pub region: String,
    pub kafka: String,
    /// The secondary region's database (`host:port`), if it names one.
    pub database: Option<String>,
    pub interval: Duration,
    pub threshold: u32,
}

impl FailoverPlan {
    /// The plan of an active-passive `regions` section with a secondary
    /// Kafka endpoint; `None` otherwise (active-active regions each use
    /// their own primary: nothing to switch).
    pub fn of(config: &ServiceConfig) -> Option<Self> {
        let regions = config.regions.as_ref()?;
        let failover = regions.failover.as_ref()?;
        if failover.strategy != FailoverStrategy::ActivePassive {
            return None;
        }
        let secondary = regions.secondary.as_ref()?;
        Some(Self {
            region: secondary.name.clone(),
            kafka: secondary.endpoints.kafka.clone()?,
            database: secondary.endpoints.database.clone(),
            interval: failover
                .health_check_interval
                .map(|d| d.0)
                .unwrap_or(PROBE_INTERVAL),
            threshold: failover.failover_threshold.unwrap_or(3).max(1),
        })
    }
}

/// Probes now and periodically until `stop`, failing over per `plan`.
pub fn watch(
    state: Arc<ServiceState>,
    launcher: Arc<dyn Launcher>,
    plan: Option<FailoverPlan>,
    stop: Arc<AtomicBool>,
) {
    let interval = plan.as_ref().map_or(PROBE_INTERVAL, |p| p.interval);
    let mut plan = plan;
    let mut failures = 0u32;
    let _ = std::thread::Builder::new()
        .name("dependency-probe".into())
        .spawn(move || {
            let mut last: Option<Instant> = None;
            while !stop.load(Ordering::Relaxed) {
                if last.is_some_and(|l| l.elapsed() < interval) {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                last = Some(Instant::now());
                let kafka_ok = probe_once(&state, &*launcher);
                failures = if kafka_ok { 0 } else { failures + 1 };
                let due = plan.as_ref().is_some_and(|p| failures >= p.threshold);
                if let Some(p) = plan.take_if(|_| due) {
                    tracing::error!(
                        component = "failover",
                        error_type = "region_failover",
                        "the primary Kafka cluster failed {failures} probes in a row; failing over to region {} ({})",
                        p.region,
                        p.kafka
                    );
                    launcher.use_kafka(&p.kafka);
                    if let Some(database) = &p.database {
                        launcher.use_database(database);
                    }
                    if let Err(e) = state.supervisor.restart_all(state.operation_timeout) {
                        tracing::error!(component = "failover", error_type = "restart", "{e}");
                    }
                    failures = 0;
                    last = None; // probe the new cluster at once
                }
            }
        });
}

/// One round of probes; returns whether Kafka (if configured) answered.
fn probe_once(state: &ServiceState, launcher: &dyn Launcher) -> bool {
    let outcomes = launcher.probe();
    let kafka_ok = match outcomes.iter().find(|(n, _)| n == "kafka") {
        Some((_, kafka)) => {
            state
                .metrics
                .broker_availability
                .set(if kafka.is_ok() { 1.0 } else { 0.0 });
            kafka.is_ok()
        }
        None => true,
    };
    for (name, outcome) in &outcomes {
        if let Err(e) = outcome {
            tracing::warn!(
                component = "service",
                error_type = "dependency",
                "{name}: {e}"
            );
        }
    }
    if let Ok(mut d) = state.dependencies.lock() {
        *d = outcomes;
    }
    kafka_ok
}
