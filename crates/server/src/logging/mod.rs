//! Logging per `logging-config.yaml`: a level, `json` or `text` records,
//! and outputs — console (stderr), a file rotated by size, age and count,
//! and syslog over UDP (RFC 5424) — each with its own level. Records carry
//! the structured fields timestamp, level, message, trace_id, span_id,
//! component and error_type. Fields whose names look secret (password,
//! secret, token, credential) are masked, so a secret never reaches a log.
//!
//! The engine and connectors log through `tracing`; this layer decides
//! where records go. `velostream run` uses [`cli_subscriber`] instead:
//! `warning: ...` lines on stderr, as before.

mod outputs;
mod record;

use std::io::Write;
use std::sync::Mutex;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Registry;

use crate::config::schema::{LogField, LogFormat, LogLevel, LogOutput, Logging};
pub use outputs::RotatingFile;
use record::{Record, SpanIds};

/// One destination with its own level.
struct Output {
    level: Level,
    kind: OutputKind,
}

enum OutputKind {
    Console,
    File(Mutex<RotatingFile>),
    Syslog(outputs::Syslog),
}

/// The layer that formats records and writes them to the outputs.
pub struct LogLayer {
    format: LogFormat,
    fields: Vec<LogField>,
    outputs: Vec<Output>,
}

/// Builds the subscriber `logging` describes (`None`: text on stderr at
/// `fallback` level, e.g. `monitoring.log_level`).
pub fn subscriber(
    logging: Option<&Logging>,
    fallback: Option<LogLevel>,
) -> Result<impl Subscriber + Send + Sync, String> {
    Ok(Registry::default().with(layer(logging, fallback)?))
}

/// The layer of [`subscriber`].
pub fn layer(logging: Option<&Logging>, fallback: Option<LogLevel>) -> Result<LogLayer, String> {
    let Some(logging) = logging else {
        return Ok(LogLayer {
            format: LogFormat::Text,
            fields: Vec::new(),
            outputs: vec![Output {
                level: level(fallback.unwrap_or(LogLevel::INFO)),
                kind: OutputKind::Console,
            }],
        });
    };
    let default = level(logging.level.or(fallback).unwrap_or(LogLevel::INFO));
    let mut outputs = Vec::new();
    for (i, output) in logging.outputs.iter().enumerate() {
        let key = format!("logging.outputs[{i}]");
        outputs.push(match output {
            LogOutput::Console { level: l } => Output {
                level: l.map(level).unwrap_or(default),
                kind: OutputKind::Console,
            },
            LogOutput::File {
                path,
                level: l,
                rotation,
            } => Output {
                level: l.map(level).unwrap_or(default),
                kind: OutputKind::File(Mutex::new(
                    RotatingFile::open(path, rotation.as_ref())
                        .map_err(|e| format!("{key}: cannot write {}: {e}", path.display()))?,
                )),
            },
            LogOutput::Syslog {
                host,
                port,
                level: l,
            } => Output {
                level: l.map(level).unwrap_or(default),
                kind: OutputKind::Syslog(
                    outputs::Syslog::connect(host, *port)
                        .map_err(|e| format!("{key}: syslog at {host}:{port}: {e}"))?,
                ),
            },
        });
    }
    if outputs.is_empty() {
        outputs.push(Output {
            level: default,
            kind: OutputKind::Console,
        });
    }
    Ok(LogLayer {
        format: logging.format,
        fields: logging.structured_fields.clone(),
        outputs,
    })
}

/// What `velostream run` prints: warnings and errors as `warning: ...` /
/// `error: ...` lines on stderr; more with `VELOSTREAM_LOG=info` (or
/// `debug`, `trace`), such as a consumer group's rebalances.
pub fn cli_subscriber() -> impl Subscriber + Send + Sync {
    let level = match std::env::var("VELOSTREAM_LOG")
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        "trace" => Level::TRACE,
        "debug" => Level::DEBUG,
        "info" => Level::INFO,
        "error" => Level::ERROR,
        _ => Level::WARN,
    };
    Registry::default().with(LogLayer {
        format: LogFormat::Text,
        fields: Vec::new(),
        outputs: vec![Output {
            level,
            kind: OutputKind::Console,
        }],
    })
}

fn level(l: LogLevel) -> Level {
    match l {
        LogLevel::TRACE => Level::TRACE,
        LogLevel::DEBUG => Level::DEBUG,
        LogLevel::INFO => Level::INFO,
        LogLevel::WARN => Level::WARN,
        LogLevel::ERROR => Level::ERROR,
    }
}

impl<S> Layer<S> for LogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        _attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let Some(span) = ctx.span(id) else {
            return;
        };
        let trace_id = span.parent().and_then(|p| {
            p.extensions()
                .get::<SpanIds>()
                .map(|ids| ids.trace_id.clone())
        });
        span.extensions_mut().insert(SpanIds::new(trace_id));
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        // `Level` orders more verbose as greater
        if !self.outputs.iter().any(|o| level <= o.level) {
            return;
        }
        let ids = ctx
            .event_span(event)
            .and_then(|s| s.extensions().get::<SpanIds>().cloned());
        let record = Record::of(event, ids);
        let (json, text) = (
            matches!(self.format, LogFormat::Json).then(|| record.json(&self.fields)),
            matches!(self.format, LogFormat::Text).then(|| record.text()),
        );
        let line = json.or(text).unwrap_or_default();
        for output in self.outputs.iter().filter(|o| level <= o.level) {
            match &output.kind {
                OutputKind::Console => {
                    let mut err = std::io::stderr().lock();
                    let _ = writeln!(err, "{}", console_line(&self.format, &record, &line));
                }
                OutputKind::File(file) => {
                    if let Ok(mut f) = file.lock() {
                        let _ = f.write_line(&line);
                    }
                }
                OutputKind::Syslog(s) => s.send(level, &record.message_for_syslog(&line)),
            }
        }
    }
}

/// Text records on the console read as `warning: message` lines.
fn console_line(format: &LogFormat, record: &Record, line: &str) -> String {
    match format {
        LogFormat::Json => line.to_string(),
        LogFormat::Text => record.console(),
    }
}
