//! The long-running service: starts the configured applications under the
//! supervisor, serves the health and metrics ports, and on SIGTERM/SIGINT
//! drains (intake stops, in-flight batches finish, sinks flush, offsets
//! commit) within `timeouts.operation_timeout`, then returns.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::auth::Peer;
use crate::config::ServiceConfig;
use crate::http::{health_routes, metrics_routes, probe_routes, ServiceState};
use crate::metrics::ServiceMetrics;
use crate::supervisor::{Launcher, Supervisor};
use crate::tls::TlsListener;

/// Where job state lives unless `velostream.state_dir` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/velostream/state";

/// Runs the service until a termination signal; `base_dir` resolves
/// relative application paths (the first config file's directory).
pub fn run(
    config: &ServiceConfig,
    base_dir: &Path,
    launcher: Arc<dyn Launcher>,
) -> Result<(), String> {
    let tls = match config.security.as_ref().and_then(|s| s.tls.as_ref()) {
        Some(t) if t.enabled => Some(crate::tls::server_config(t)?),
        _ => None,
    };
    let v = &config.velostream;
    let operation_timeout = v
        .timeouts
        .operation_timeout
        .map(|d| d.0)
        .unwrap_or(Duration::from_secs(30));
    let state_dir = v
        .state_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    let security = config.security.as_ref();
    let auth = Arc::new(crate::auth::Authenticator::from_config(security)?);
    tracing::info!(component = "service", "{}", auth.describe());
    let metrics = Arc::new(ServiceMetrics::new().map_err(|e| e.to_string())?);
    let launcher_probe = launcher.clone();
    // ends the background threads (dependency probe, progress) at shutdown
    let stop_probing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let state = Arc::new(ServiceState {
        supervisor: Supervisor::new(launcher, metrics.clone(), v.circuit_breaker.clone()),
        metrics,
        operation_timeout,
        deploy_dir: state_dir.join("applications"),
        dependencies: Default::default(),
        environment: v.environment.clone(),
        auth,
        limits: security.map(|s| s.limits.clone()).unwrap_or_default(),
        deploying: Default::default(),
    });
    if v.monitoring.progress_tracking {
        track_progress(state.clone(), stop_probing.clone());
    }
    crate::dependencies::watch(
        state.clone(),
        launcher_probe.clone(),
        crate::dependencies::FailoverPlan::of(config),
        stop_probing.clone(),
    );
    for app in &v.applications {
        let path = base_dir.join(app.path());
        let name = match app {
            crate::config::schema::ApplicationEntry::Named { name: Some(n), .. } => n.clone(),
            _ => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "app".into()),
        };
        velostream_sql::names::check_path_name("application", &name)
            .map_err(|e| format!("velostream.applications: {e}"))?;
        state.supervisor.deploy(&name, &path)?;
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.performance.io_threads.unwrap_or(2).max(1) as usize)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the HTTP runtime: {e}"))?;
    let bind = v.monitoring.bind_address.clone();
    let (health_port, metrics_port) = (v.monitoring.health_check_port, v.monitoring.metrics_port);
    let served = runtime.block_on(async {
        let health = tokio::net::TcpListener::bind((bind.as_str(), health_port))
            .await
            .map_err(|e| format!("cannot listen on {bind}:{health_port} (monitoring.health_check_port): {e}"))?;
        let metrics = tokio::net::TcpListener::bind((bind.as_str(), metrics_port))
            .await
            .map_err(|e| format!("cannot listen on {bind}:{metrics_port} (monitoring.metrics_port): {e}"))?;
        let probe = match v.monitoring.probe_port {
            Some(port) => Some(
                tokio::net::TcpListener::bind((bind.as_str(), port))
                    .await
                    .map_err(|e| format!("cannot listen on {bind}:{port} (monitoring.probe_port): {e}"))?,
            ),
            None => None,
        };
        tracing::info!(
            component = "service",
            "velostream service: health and API on {bind}:{health_port}, metrics on {bind}:{metrics_port} ({}){}, {} application(s)",
            if tls.is_some() { "TLS" } else { "plain HTTP" },
            match v.monitoring.probe_port {
                Some(port) => format!(", probes and metrics on {bind}:{port} (plain HTTP)"),
                None => String::new(),
            },
            v.applications.len()
        );
        // the probe port is plain HTTP whatever the other two use
        let probes = async {
            match probe {
                Some(listener) => axum::serve(
                    listener,
                    probe_routes(state.clone()).into_make_service_with_connect_info::<Peer>(),
                )
                .await
                .map_err(|e| e.to_string()),
                None => std::future::pending().await,
            }
        };
        // handlers and the access guard see who is on the other end (`Peer`)
        let health_app = health_routes(state.clone()).into_make_service_with_connect_info::<Peer>();
        let metrics_app = metrics_routes(state.clone()).into_make_service_with_connect_info::<Peer>();
        match tls {
            Some(tls) => {
                let health = axum::serve(TlsListener::new(health, tls.clone()), health_app);
                let metrics = axum::serve(TlsListener::new(metrics, tls), metrics_app);
                tokio::select! {
                    r = health => r.map_err(|e| e.to_string()),
                    r = metrics => r.map_err(|e| e.to_string()),
                    r = probes => r,
                    signal = termination() => drain_notice(signal),
                }
            }
            None => {
                let health = axum::serve(health, health_app);
                let metrics = axum::serve(metrics, metrics_app);
                tokio::select! {
                    r = health => r.map_err(|e| e.to_string()),
                    r = metrics => r.map_err(|e| e.to_string()),
                    r = probes => r,
                    signal = termination() => drain_notice(signal),
                }
            }
        }
    });
    stop_probing.store(true, std::sync::atomic::Ordering::Relaxed);
    let drained = state.supervisor.drain(operation_timeout);
    runtime.shutdown_timeout(Duration::from_secs(1));
    served?;
    drained?;
    tracing::info!(component = "service", "velostream service: stopped cleanly");
    Ok(())
}

/// How often `monitoring.progress_tracking` logs each job's progress.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(30);

/// Logs every job's records in/out and rate every [`PROGRESS_INTERVAL`] until `stop`.
fn track_progress(state: Arc<ServiceState>, stop: Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::Ordering;
    let _ = std::thread::Builder::new()
        .name("progress".into())
        .spawn(move || {
            let mut last: std::collections::HashMap<String, u64> = Default::default();
            let mut since = std::time::Instant::now();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if since.elapsed() < PROGRESS_INTERVAL {
                    continue;
                }
                let secs = since.elapsed().as_secs_f64();
                since = std::time::Instant::now();
                for job in state.supervisor.jobs() {
                    let records_in = job.metrics.records_in.load(Ordering::Relaxed);
                    let before = last.insert(job.name.clone(), records_in).unwrap_or(0);
                    tracing::info!(
                        component = "progress",
                        job = %job.name,
                        "job {}: {} records in, {} out, {:.0} records/s",
                        job.name,
                        records_in,
                        job.metrics.records_out.load(Ordering::Relaxed),
                        records_in.saturating_sub(before) as f64 / secs
                    );
                }
            }
        });
}

fn drain_notice(signal: &str) -> Result<(), String> {
    tracing::info!(
        component = "service",
        "velostream service: {signal}; draining"
    );
    Ok(())
}

/// Waits for SIGTERM or SIGINT.
async fn termination() -> &'static str {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}
