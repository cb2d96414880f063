//! The service's HTTP endpoints. On `monitoring.health_check_port`:
//! `GET /health`, `GET /ready`, `POST /checkpoint`, `POST /resume` and the
//! jobs API (`GET /jobs`, `GET /jobs/{name}`, `POST /jobs`,
//! `DELETE /jobs/{name}`). On `monitoring.metrics_port`: `GET /metrics`.
//! Every response is JSON except `/metrics` (Prometheus text format).
//!
//! Each route of the health port needs a role (`auth::access::ROUTES`);
//! `/health`, `/ready` and `/metrics` are open and show no SQL, paths or
//! credentials. A deployment is planned and checked in the sandbox before
//! it is accepted, and deployments are serialised, so a running
//! application's SQL is never overwritten.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use velostream_sql::secrets;

use crate::auth::access::{guard, AuditedApplication};
use crate::auth::Authenticator;
use crate::config::schema::Limits;
use crate::metrics::ServiceMetrics;
use crate::supervisor::{AppStatus, JobView, Supervisor};

/// What the handlers share.
pub struct ServiceState {
    pub supervisor: Supervisor,
    pub metrics: Arc<ServiceMetrics>,
    /// `timeouts.operation_timeout`: how long a hold or a stop may take.
    pub operation_timeout: Duration,
    /// Where applications deployed through the API are written.
    pub deploy_dir: PathBuf,
    /// `velostream.environment`, shown by `/health` and in the logs.
    pub environment: Option<String>,
    /// The last outcome of probing each external dependency.
    pub dependencies: std::sync::Mutex<Vec<(String, Result<(), String>)>>,
    /// Who may call which route (`security.auth`).
    pub auth: Arc<Authenticator>,
    /// `security.limits`.
    pub limits: Limits,
    /// Held while a deployment is checked, stored and started: one at a time.
    pub deploying: tokio::sync::Mutex<()>,
}

type Shared = Arc<ServiceState>;

/// The routes of the health port.
pub fn health_routes(state: Shared) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/checkpoint", post(checkpoint))
        .route("/resume", post(resume))
        .route("/jobs", get(list_jobs).post(deploy))
        .route("/jobs/{name}", get(job_status).delete(stop_job))
        .route_layer(axum::middleware::from_fn_with_state(
            state.auth.clone(),
            guard,
        ))
        .layer(DefaultBodyLimit::max(state.limits.request_bytes()))
        .with_state(state)
}

/// The routes of `monitoring.probe_port`: what probes and scrapers need,
/// all of it open (no SQL, paths or errors are shown there).
pub fn probe_routes(state: Shared) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// The routes of the metrics port.
pub fn metrics_routes(state: Shared) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn health(State(s): State<Shared>) -> Json<Value> {
    match &s.environment {
        Some(env) => Json(json!({"status": "ok", "environment": env})),
        None => Json(json!({"status": "ok"})),
    }
}

async fn ready(State(s): State<Shared>) -> Response {
    match readiness(&s) {
        Ok(applications) => {
            Json(json!({"ready": true, "applications": applications})).into_response()
        }
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reason": reason})),
        )
            .into_response(),
    }
}

/// How many applications run when the service is ready, else why it is
/// not: `/ready` and the `velostream_ready` gauge answer from this.
fn readiness(s: &Shared) -> Result<usize, String> {
    let apps = s.supervisor.applications();
    let reason = if s.supervisor.is_held() {
        Some("processing is held by POST /checkpoint; POST /resume to continue".to_string())
    } else if apps.is_empty() {
        Some("no application is running".to_string())
    } else if let Some(reason) = s.dependencies.lock().ok().and_then(|d| {
        d.iter()
            .find_map(|(name, r)| r.as_ref().err().map(|e| format!("{name}: {e}")))
    }) {
        Some(reason)
    } else {
        // an open endpoint: the reason names the application, not its error
        // (which may quote SQL or paths; GET /jobs/{name} shows it to viewers)
        apps.iter().find_map(|(name, _, status, _)| match status {
            AppStatus::Running | AppStatus::Finished | AppStatus::Stopped => None,
            AppStatus::Failed { .. } => Some(format!(
                "application {name} failed (GET /jobs/{name} shows why)"
            )),
            AppStatus::BreakerOpen { .. } => Some(format!(
                "application {name} keeps failing (circuit breaker open; GET /jobs/{name} shows why)"
            )),
            other => Some(format!("application {name} is {}", state_name(other))),
        })
    };
    match reason {
        None => Ok(apps.len()),
        Some(reason) => Err(reason),
    }
}

async fn checkpoint(State(s): State<Shared>) -> Response {
    let state = s.clone();
    match tokio::task::spawn_blocking(move || state.supervisor.hold(state.operation_timeout)).await
    {
        Ok(Ok(jobs)) => Json(json!({
            "status": "held",
            "jobs": jobs,
            "detail": "every job has flushed its results, taken a checkpoint (when checkpoints are configured) and committed its positions, and is holding; copy the state directory, then POST /resume"
        }))
        .into_response(),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, &e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn resume(State(s): State<Shared>) -> Json<Value> {
    let jobs = s.supervisor.resume();
    Json(json!({"status": "running", "jobs": jobs}))
}

async fn list_jobs(State(s): State<Shared>) -> Json<Value> {
    let apps: Vec<Value> = s
        .supervisor
        .applications()
        .into_iter()
        .map(|(name, path, status, jobs)| app_json(&name, &path, &status, &jobs))
        .collect();
    Json(json!({ "applications": apps }))
}

async fn job_status(State(s): State<Shared>, Path(name): Path<String>) -> Response {
    let found = s
        .supervisor
        .applications()
        .into_iter()
        .find(|(app, _, _, jobs)| *app == name || jobs.iter().any(|j| j.name == name));
    match found {
        Some((app, path, status, jobs)) => {
            Json(app_json(&app, &path, &status, &jobs)).into_response()
        }
        None => error(
            StatusCode::NOT_FOUND,
            &format!("no application or job named '{name}'"),
        ),
    }
}

/// `POST /jobs`: `{"name": "...", "sql": "..."}` deploys an application.
#[derive(Deserialize)]
struct Deploy {
    name: String,
    sql: String,
}

async fn deploy(State(s): State<Shared>, body: Result<Json<Deploy>, JsonRejection>) -> Response {
    let body = match body {
        Ok(Json(body)) => body,
        Err(rejection) => return error(rejection.status(), &rejection.body_text()),
    };
    let audited = AuditedApplication(body.name.clone());
    let mut response = deploy_checked(&s, body).await;
    response.extensions_mut().insert(audited);
    response
}

/// Checks a deployment's name and size, plans it in the sandbox, then
/// stores and starts it; one deployment at a time.
async fn deploy_checked(s: &Shared, body: Deploy) -> Response {
    if let Err(e) = velostream_sql::names::check_path_name("application", &body.name) {
        return error(StatusCode::BAD_REQUEST, &e);
    }
    if body.sql.len() > s.limits.sql_bytes() {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "the SQL text has {} bytes; at most {} are accepted (security.limits.max_sql_bytes)",
                body.sql.len(),
                s.limits.sql_bytes()
            ),
        );
    }
    let _one_at_a_time = s.deploying.lock().await;
    let state = s.clone();
    let name = body.name.clone();
    // the application's lifecycle lock: no DELETE or restart of it meanwhile
    let outcome = tokio::task::spawn_blocking(move || {
        state
            .supervisor
            .one_at_a_time(&name, || deploy_locked(&state, &body))
    })
    .await;
    match outcome {
        Ok(response) => response,
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// [`deploy_checked`] under the application's lifecycle lock.
fn deploy_locked(s: &ServiceState, body: &Deploy) -> Response {
    if s.supervisor.is_running(&body.name) {
        return error(
            StatusCode::CONFLICT,
            &format!("an application named '{}' is running", body.name),
        );
    }
    if !s.supervisor.contains(&body.name) && s.supervisor.count() >= s.limits.applications() {
        return error(
            StatusCode::CONFLICT,
            &format!(
                "the service holds {} applications, its limit (security.limits.max_applications); DELETE one first",
                s.supervisor.count()
            ),
        );
    }
    let path = match store_checked(s, &body.name, &body.sql) {
        Ok(path) => path,
        Err((code, e)) => return error(code, &e),
    };
    match s.supervisor.deploy(&body.name, &path) {
        Ok(()) => (
            StatusCode::CREATED,
            Json(json!({"name": body.name, "path": path, "status": "starting"})),
        )
            .into_response(),
        Err(e) => error(StatusCode::CONFLICT, &e),
    }
}

/// Writes the SQL next to the deployed applications under a staging name,
/// validates it there (relative paths resolve as they will), and moves it
/// into place only when it passes; a refused application leaves nothing.
fn store_checked(
    s: &ServiceState,
    name: &str,
    sql: &str,
) -> Result<std::path::PathBuf, (StatusCode, String)> {
    let internal = |e: std::io::Error| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot store the application: {e}"),
        )
    };
    std::fs::create_dir_all(&s.deploy_dir).map_err(internal)?;
    let staged = s.deploy_dir.join(format!(".{name}.sql.new"));
    std::fs::write(&staged, sql).map_err(internal)?;
    if let Err(e) = s.supervisor.validate(name, &staged) {
        let _ = std::fs::remove_file(&staged);
        return Err((StatusCode::UNPROCESSABLE_ENTITY, e));
    }
    let path = s.deploy_dir.join(format!("{name}.sql"));
    std::fs::rename(&staged, &path).map_err(internal)?;
    Ok(path)
}

async fn stop_job(State(s): State<Shared>, Path(name): Path<String>) -> Response {
    let state = s.clone();
    let target = name.clone();
    match tokio::task::spawn_blocking(move || {
        state.supervisor.one_at_a_time(&target, || {
            state.supervisor.stop(&target, state.operation_timeout)
        })
    })
    .await
    {
        Ok(Ok(())) => Json(json!({"name": name, "status": "stopped"})).into_response(),
        Ok(Err(e)) if e.starts_with("no application") => error(StatusCode::NOT_FOUND, &e),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, &e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn metrics(State(s): State<Shared>) -> Response {
    let jobs: Vec<(String, Arc<velostream_engine::JobMetrics>)> = s
        .supervisor
        .jobs()
        .into_iter()
        .map(|j| (j.name, j.metrics))
        .collect();
    s.metrics.ready.set(i64::from(readiness(&s).is_ok()));
    (
        [("content-type", "text/plain; version=0.0.4")],
        s.metrics.render(&jobs),
    )
        .into_response()
}

/// An application with its status and jobs, as `/jobs` shows it.
fn app_json(name: &str, path: &std::path::Path, status: &AppStatus, jobs: &[JobView]) -> Value {
    let mut status = serde_json::to_value(status).unwrap_or(Value::Null);
    if let Some(Value::String(e)) = status.get_mut("error") {
        *e = secrets::mask(e);
    }
    json!({
        "name": name,
        "path": path,
        "status": status,
        "jobs": jobs.iter().map(job_json).collect::<Vec<_>>(),
    })
}

fn job_json(j: &JobView) -> Value {
    let m = &j.metrics;
    json!({
        "name": j.name,
        "records_in": m.records_in.load(Ordering::Relaxed),
        "records_out": m.records_out.load(Ordering::Relaxed),
        "malformed_records": m.bad_records.load(Ordering::Relaxed),
        "late_records": m.late_records.load(Ordering::Relaxed),
        "open_windows": m.open_windows.load(Ordering::Relaxed),
        "state_keys": m.state_keys.load(Ordering::Relaxed),
        "latency_p50_ms": m.processing_latency.quantile_ms(0.5),
        "latency_p99_ms": m.processing_latency.quantile_ms(0.99),
        "e2e_latency_p50_ms": m.e2e_latency.quantile_ms(0.5),
        "e2e_latency_p99_ms": m.e2e_latency.quantile_ms(0.99),
        "source_partitions": m.owned_partitions.lock().map(|owned| owned.iter().map(|(topic, partitions)| json!({"topic": topic, "owned": partitions})).collect::<Vec<_>>()).unwrap_or_default(),
        "state_partitions": m.state_partitions.lock().map(|parts| parts.iter().map(|(partition, p)| json!({
            "partition": partition,
            "state": if p.restoring { "restoring" } else { "active" },
            "restored_checkpoint": p.restored_checkpoint,
            "restored_bytes": p.restored_bytes,
            "restored_rows": p.restored_rows,
            "restore_ms": p.restore_ms,
            "from_standby": p.from_standby,
        })).collect::<Vec<_>>()).unwrap_or_default(),
        "standby_partitions": m.standby_partitions.lock().map(|copies| copies.iter().map(|(partition, c)| json!({
            "partition": partition,
            "checkpoint": c.checkpoint,
            "bytes": c.bytes,
        })).collect::<Vec<_>>()).unwrap_or_default(),
        "consumer_lag": m.source_lag().into_iter().map(|((topic, partition), lag)| json!({"topic": topic, "partition": partition, "lag": lag})).collect::<Vec<_>>(),
        "last_checkpoint": m.last_checkpoint.lock().ok().and_then(|c| *c).map(|c| json!({
            "id": c.id,
            "at_ms": c.at_ms,
            "duration_ms": c.duration_ms,
            "bytes": c.bytes,
            "restored": c.restored,
        })),
    })
}

fn state_name(status: &AppStatus) -> &'static str {
    match status {
        AppStatus::Starting => "starting",
        AppStatus::Running => "running",
        AppStatus::Finished => "finished",
        AppStatus::Failed { .. } => "failed",
        AppStatus::BreakerOpen { .. } => "breaker_open",
        AppStatus::Stopped => "stopped",
    }
}

fn error(code: StatusCode, message: &str) -> Response {
    (code, Json(json!({"error": secrets::mask(message)}))).into_response()
}
