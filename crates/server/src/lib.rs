//! The Velostream service: what `velostream --config config.yaml` runs.
//!
//! - [`config`]: the deployment guide's YAML documents, merged and checked.
//! - [`supervisor`]: applications as supervised jobs (restart with
//!   backoff, hold/resume, drain).
//! - [`dependencies`]: probing Kafka for readiness; region failover.
//! - [`http`]: health, readiness, checkpoint hold/resume, the jobs API, metrics.
//! - [`logging`]: records to console, rotated files and syslog, as JSON or text.
//! - [`metrics`]: the guide's Prometheus metrics.
//! - [`tls`]: TLS and mutual TLS on both ports.
//! - [`auth`]: who calls the API (tokens, client certificates, address),
//!   the role each route needs, the audit trail.
//! - [`service`]: wiring it together until SIGTERM.

pub mod auth;
pub mod breaker;
pub mod config;
pub mod dependencies;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod service;
pub mod supervisor;
pub mod tls;
