//! The configuration documents of the deployment guide, as types. Every
//! struct rejects unknown keys, so a misspelt key fails at start-up instead
//! of being ignored; `docs/configuration.md` describes each key.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::values::{ByteSize, ConfigDuration};

/// All documents merged: `config/production.yaml` (`velostream`),
/// `optimized-config.yaml` (`performance`), `logging-config.yaml`
/// (`logging`), `tls-config.yaml` (`security`), `multi-region-config.yaml`
/// (`regions`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    #[serde(default)]
    pub velostream: Velostream,
    #[serde(default)]
    pub performance: Performance,
    pub logging: Option<Logging>,
    pub security: Option<Security>,
    pub regions: Option<Regions>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Velostream {
    pub environment: Option<String>,
    /// librdkafka settings for every Kafka source and sink.
    #[serde(default)]
    pub kafka: BTreeMap<String, Scalar>,
    #[serde(default)]
    pub processing: Processing,
    #[serde(default)]
    pub timeouts: Timeouts,
    pub circuit_breaker: Option<CircuitBreaker>,
    #[serde(default)]
    pub monitoring: Monitoring,
    /// The SQL applications the service runs.
    #[serde(default)]
    pub applications: Vec<ApplicationEntry>,
    /// Where job state and checkpoints live.
    pub state_dir: Option<PathBuf>,
    pub database: Option<Database>,
}

/// A scalar YAML value (string, number or boolean), kept as text.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl Scalar {
    pub fn as_text(&self) -> String {
        match self {
            Scalar::Bool(b) => b.to_string(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Text(s) => s.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Processing {
    pub parallelism: Option<u32>,
    /// Milliseconds (or a duration) between checkpoints.
    pub checkpoint_interval: Option<ConfigDuration>,
    #[serde(default)]
    pub state_backend: StateBackend,
    /// Complete checkpoints kept per job (default 3).
    pub checkpoint_retention: Option<u32>,
    /// What sinks promise across crashes (default at_least_once).
    #[serde(default)]
    pub guarantee: Guarantee,
    /// What happens to a row whose expression fails, for statements
    /// without `'error.policy'` (default: dead_letter with a dead-letter
    /// sink, else skip).
    pub error_policy: Option<ErrorPolicySetting>,
    /// Standby copies per partition of a repartitioned statement's state
    /// that other processes of the application keep (default 0).
    pub standby_replicas: Option<u32>,
}

/// `processing.error_policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorPolicySetting {
    DeadLetter,
    Skip,
    Fail,
}

impl Default for Processing {
    fn default() -> Self {
        Self {
            parallelism: None,
            checkpoint_interval: None,
            state_backend: StateBackend::Memory,
            checkpoint_retention: None,
            guarantee: Guarantee::AtLeastOnce,
            error_policy: None,
            standby_replicas: None,
        }
    }
}

/// `processing.guarantee`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Guarantee {
    #[default]
    AtLeastOnce,
    ExactlyOnce,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateBackend {
    #[default]
    Memory,
    Rocksdb,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    pub operation_timeout: Option<ConfigDuration>,
    pub connection_timeout: Option<ConfigDuration>,
    pub query_timeout: Option<ConfigDuration>,
    pub table_load_timeout: Option<ConfigDuration>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreaker {
    pub failure_threshold: u32,
    pub recovery_timeout: ConfigDuration,
    pub failure_rate_threshold: f64,
    pub min_calls_in_window: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Monitoring {
    #[serde(default = "default_metrics_port")]
    pub metrics_port: u16,
    #[serde(default = "default_health_port")]
    pub health_check_port: u16,
    /// A plain-HTTP listener serving only `/health`, `/ready` and
    /// `/metrics`: for Kubernetes probes and Prometheus, which cannot
    /// present client certificates, while TLS with `client_auth: required`
    /// guards the other two ports. None by default.
    pub probe_port: Option<u16>,
    /// The address the ports listen on.
    #[serde(default = "default_bind")]
    pub bind_address: String,
    #[serde(default = "default_true")]
    pub progress_tracking: bool,
    pub log_level: Option<LogLevel>,
}

impl Default for Monitoring {
    fn default() -> Self {
        Self {
            metrics_port: default_metrics_port(),
            health_check_port: default_health_port(),
            probe_port: None,
            bind_address: default_bind(),
            progress_tracking: true,
            log_level: None,
        }
    }
}

fn default_metrics_port() -> u16 {
    9090
}
fn default_health_port() -> u16 {
    8080
}
fn default_bind() -> String {
    "0.0.0.0".into()
}
fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum LogLevel {
    #[serde(alias = "trace")]
    TRACE,
    #[serde(alias = "debug")]
    DEBUG,
    #[serde(alias = "info")]
    INFO,
    #[serde(alias = "warn", alias = "WARNING")]
    WARN,
    #[serde(alias = "error")]
    ERROR,
}

/// One SQL application: a path, or a path with a name.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ApplicationEntry {
    Path(PathBuf),
    Named { name: Option<String>, path: PathBuf },
}

impl ApplicationEntry {
    pub fn path(&self) -> &PathBuf {
        match self {
            ApplicationEntry::Path(p) | ApplicationEntry::Named { path: p, .. } => p,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub name: Option<String>,
    /// libpq's `sslmode`: whether sessions use TLS.
    pub sslmode: Option<DatabaseSslMode>,
    /// libpq's `sslrootcert`: a CA certificate (PEM) to trust besides the
    /// system's, for a server certificate from a private CA.
    pub sslrootcert: Option<std::path::PathBuf>,
}

/// `velostream.database.sslmode`, with libpq's names. The TLS modes all
/// verify the server's certificate chain and its name (libpq's
/// `verify-full`): a session that could be intercepted is never opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatabaseSslMode {
    /// No TLS.
    Disable,
    /// No TLS either (the default): a server certificate that cannot be
    /// verified must not turn a working setup into a failure.
    Prefer,
    /// TLS, certificate and name verified.
    Require,
    /// The same as `require`.
    VerifyCa,
    /// The same as `require`.
    VerifyFull,
}

impl DatabaseSslMode {
    /// True for the modes that connect over TLS.
    pub fn uses_tls(self) -> bool {
        matches!(self, Self::Require | Self::VerifyCa | Self::VerifyFull)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Performance {
    pub batch_size: Option<usize>,
    pub batch_timeout: Option<ConfigDuration>,
    pub buffer_size: Option<ByteSize>,
    pub max_in_flight_requests: Option<u32>,
    pub compression: Option<Compression>,
    pub worker_threads: Option<u32>,
    pub io_threads: Option<u32>,
    pub cache: Option<Cache>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compression {
    #[serde(rename = "type")]
    pub codec: Codec,
    pub level: Option<i32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cache {
    pub table_cache_size: Option<u64>,
    pub query_cache_size: Option<u64>,
    pub ttl: Option<ConfigDuration>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logging {
    pub level: Option<LogLevel>,
    #[serde(default)]
    pub format: LogFormat,
    #[serde(default)]
    pub outputs: Vec<LogOutput>,
    #[serde(default)]
    pub structured_fields: Vec<LogField>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum LogOutput {
    Console {
        level: Option<LogLevel>,
    },
    File {
        path: PathBuf,
        level: Option<LogLevel>,
        rotation: Option<Rotation>,
    },
    Syslog {
        host: String,
        #[serde(default = "default_syslog_port")]
        port: u16,
        level: Option<LogLevel>,
    },
}

fn default_syslog_port() -> u16 {
    514
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rotation {
    pub max_size: Option<ByteSize>,
    pub max_age: Option<ConfigDuration>,
    pub max_backups: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogField {
    Timestamp,
    Level,
    Message,
    TraceId,
    SpanId,
    Component,
    ErrorType,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Security {
    pub tls: Option<Tls>,
    /// Who may call the API (`docs/security.md`).
    pub auth: Option<Auth>,
    /// What the applications the service runs may touch.
    pub sandbox: Option<SandboxConfig>,
    #[serde(default)]
    pub limits: Limits,
}

/// `security.auth`: how callers of the API are identified.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    pub mode: AuthMode,
    /// `mode: token`: a YAML list of `{name, role, sha256}`.
    pub tokens_file: Option<PathBuf>,
    /// `mode: mtls`: certificate identity (subject CN, else first DNS SAN) → role.
    #[serde(default)]
    pub identities: BTreeMap<String, Role>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// `Authorization: Bearer <token>`.
    Token,
    /// The verified client certificate.
    Mtls,
    /// No credentials: loopback callers act as operator, others as viewer.
    None,
}

/// What a caller of the API may do; each role may do what the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read the jobs API.
    Viewer,
    /// Also hold, resume and stop applications.
    Operator,
    /// Also deploy applications.
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// `security.sandbox`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    /// Directories files may be opened in (default: each configured
    /// application's directory and `<state_dir>/data`).
    #[serde(default)]
    pub allowed_paths: Vec<PathBuf>,
}

/// `security.limits`: bounds on what callers may send.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest request body (default 2 MiB).
    pub max_request_bytes: Option<ByteSize>,
    /// Largest SQL text of a deployed application (default 1 MiB).
    pub max_sql_bytes: Option<ByteSize>,
    /// Most applications the service runs at once (default 100).
    pub max_applications: Option<u32>,
}

impl Limits {
    pub fn request_bytes(&self) -> usize {
        self.max_request_bytes.map_or(2 << 20, |b| b.0 as usize)
    }
    pub fn sql_bytes(&self) -> usize {
        self.max_sql_bytes.map_or(1 << 20, |b| b.0 as usize)
    }
    pub fn applications(&self) -> usize {
        self.max_applications.map_or(100, |n| n as usize)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    #[serde(default)]
    pub enabled: bool,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub client_auth: ClientAuth,
    pub min_version: Option<TlsVersion>,
    #[serde(default)]
    pub ciphers: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    #[default]
    None,
    Optional,
    Required,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TlsVersion {
    #[serde(rename = "TLS1.2", alias = "1.2")]
    Tls12,
    #[serde(rename = "TLS1.3", alias = "1.3")]
    Tls13,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Regions {
    pub primary: Region,
    pub secondary: Option<Region>,
    pub failover: Option<Failover>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    pub name: String,
    pub endpoints: Endpoints,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoints {
    pub kafka: Option<String>,
    pub database: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failover {
    pub strategy: FailoverStrategy,
    pub health_check_interval: Option<ConfigDuration>,
    pub failover_threshold: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailoverStrategy {
    ActivePassive,
    ActiveActive,
}
