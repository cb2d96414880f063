//! One log record: the event's message and fields with the structured
//! fields of the configuration, formatted as JSON or text.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level};

use crate::config::schema::LogField;

/// The trace and span a record was logged in: a span gets a new span id and
/// inherits its parent's trace id (a root span starts a trace).
#[derive(Debug, Clone)]
pub struct SpanIds {
    pub trace_id: String,
    pub span_id: String,
}

impl SpanIds {
    pub fn new(trace_id: Option<String>) -> Self {
        Self {
            trace_id: trace_id.unwrap_or_else(|| format!("{:016x}{:016x}", next_id(), next_id())),
            span_id: format!("{:016x}", next_id()),
        }
    }
}

/// Process-unique pseudo-random ids (splitmix64 over a time-seeded counter).
fn next_id() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let _ = STATE.compare_exchange(
        0,
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            | 1,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    let mut z = STATE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub struct Record {
    pub timestamp: String,
    pub level: Level,
    pub message: String,
    pub component: String,
    pub error_type: Option<String>,
    pub ids: Option<SpanIds>,
    /// Other fields of the event, in order.
    pub extra: Vec<(String, String)>,
}

impl Record {
    pub fn of(event: &Event<'_>, ids: Option<SpanIds>) -> Self {
        let mut visitor = Fields::default();
        event.record(&mut visitor);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        let timestamp = chrono::DateTime::from_timestamp_micros(now)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
            .unwrap_or_default();
        // the component is the field, else the module: `velostream_server::supervisor` → `server::supervisor`
        let target = event.metadata().target();
        Record {
            timestamp,
            level: *event.metadata().level(),
            message: visitor.message,
            component: visitor.component.unwrap_or_else(|| {
                target
                    .strip_prefix("velostream_")
                    .unwrap_or(target)
                    .to_string()
            }),
            error_type: visitor.error_type,
            ids,
            extra: visitor.extra,
        }
    }

    /// The JSON object of the configured `fields` (all of them when none
    /// are listed), plus the event's other fields.
    pub fn json(&self, fields: &[LogField]) -> String {
        let all = [
            LogField::Timestamp,
            LogField::Level,
            LogField::Message,
            LogField::TraceId,
            LogField::SpanId,
            LogField::Component,
            LogField::ErrorType,
        ];
        let fields = if fields.is_empty() { &all[..] } else { fields };
        let mut map = Map::new();
        for f in fields {
            let (key, value) = match f {
                LogField::Timestamp => ("timestamp", Some(self.timestamp.clone())),
                LogField::Level => ("level", Some(self.level.to_string())),
                LogField::Message => ("message", Some(self.message.clone())),
                LogField::TraceId => ("trace_id", self.ids.as_ref().map(|i| i.trace_id.clone())),
                LogField::SpanId => ("span_id", self.ids.as_ref().map(|i| i.span_id.clone())),
                LogField::Component => ("component", Some(self.component.clone())),
                LogField::ErrorType => ("error_type", self.error_type.clone()),
            };
            map.insert(key.into(), value.map_or(Value::Null, Value::String));
        }
        for (k, v) in &self.extra {
            map.insert(k.clone(), Value::String(v.clone()));
        }
        Value::Object(map).to_string()
    }

    /// `timestamp LEVEL component: message key=value ...`
    pub fn text(&self) -> String {
        let mut line = format!(
            "{} {:<5} {}: {}",
            self.timestamp, self.level, self.component, self.message
        );
        self.append_details(&mut line);
        line
    }

    /// `warning: message`, as the command line prints.
    pub fn console(&self) -> String {
        let word = match self.level {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        format!("{word}: {}", self.message)
    }

    /// The syslog MSG part: the record as formatted for the output.
    pub fn message_for_syslog(&self, formatted: &str) -> String {
        formatted.to_string()
    }

    fn append_details(&self, line: &mut String) {
        if let Some(e) = &self.error_type {
            let _ = write!(line, " error_type={e}");
        }
        if let Some(ids) = &self.ids {
            let _ = write!(line, " trace_id={} span_id={}", ids.trace_id, ids.span_id);
        }
        for (k, v) in &self.extra {
            let _ = write!(line, " {k}={v}");
        }
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    component: Option<String>,
    error_type: Option<String>,
    extra: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field.name(), value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field.name(), format!("{value:?}"));
    }
}

impl Fields {
    fn put(&mut self, name: &str, value: String) {
        match name {
            "message" => self.message = value,
            "component" => self.component = Some(value),
            "error_type" => self.error_type = Some(value),
            // fields whose names look secret are never written
            other if velostream_sql::secrets::is_secret_key(other) => {
                self.extra.push((other.to_string(), "***".into()))
            }
            other => self.extra.push((other.to_string(), value)),
        }
    }
}
