//! Creates sources and sinks from a statement's properties
//! (`'<name>.type'` and the keys of that connector), and infers the schema
//! of undeclared sources. Relative paths resolve against the directory of
//! the application's `.sql` file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, Cursor, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::SchemaRef;
use velostream_engine::{EngineError, JobMetrics, Result, Sink, Source};
use velostream_sql::{SinkBinding, SourceBinding, SourceResolver};

use crate::file::committed::FileSink;
use crate::file::reader::LineSource;
use crate::file::sink::WriterSink;
use crate::format::decode::BatchDecoder;
use crate::format::infer::{infer_schema, SAMPLE_RECORDS};
use crate::format::RecordFormat;
use crate::kafka::{self, KafkaDefaults};
use crate::memory::NullSink;
use crate::nexmark::{self, NexmarkConfig, NexmarkSource};
use crate::postgres::{self, connection::DatabaseDefaults};
use crate::sandbox::Sandbox;
use velostream_engine::connector::{KeyLookup, LookupCache};

const FILE_SOURCE_KEYS: &[&str] = &["type", "path", "format", "delimiter", "max.record.bytes"];
const STDIN_KEYS: &[&str] = &["type", "format", "delimiter", "max.record.bytes"];
const FILE_SINK_KEYS: &[&str] = &["type", "path", "format", "delimiter", "append"];
const STDOUT_KEYS: &[&str] = &["type", "format", "delimiter"];
const NULL_SINK_KEYS: &[&str] = &["type"];

/// Opens connectors for one application.
#[derive(Debug)]
pub struct Connectors {
    /// Directory that relative paths are resolved against.
    pub base_dir: PathBuf,
    /// Records per batch (`performance.batch_size`).
    pub batch_size: usize,
    /// What schema inference read from stdin; the stdin source replays it
    /// before reading on.
    stdin_sample: Mutex<Option<Vec<u8>>>,
    /// Kafka client settings from the configuration.
    pub kafka: KafkaDefaults,
    /// What sinks promise when the job checkpoints.
    pub guarantee: Guarantee,
    /// PostgreSQL connection settings from the configuration (or `DB_*`).
    pub database: DatabaseDefaults,
    /// How joins cache looked-up table rows (`performance.cache`).
    pub lookup_cache: LookupCache,
    /// Where files may be opened, for applications the service runs
    /// (`None`: anywhere, as in `velostream run`).
    pub sandbox: Option<Arc<Sandbox>>,
    /// Whether a file sink without `'append'` appends: in the service, a
    /// supervised restart must not destroy what the last run wrote.
    pub append_by_default: bool,
}

/// The delivery guarantee of sinks (`processing.guarantee`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Guarantee {
    /// Every result arrives; after a crash some may arrive twice.
    #[default]
    AtLeastOnce,
    /// Results are published only with the checkpoint that covers them:
    /// each arrives exactly once (needs checkpoints).
    ExactlyOnce,
}

impl std::str::FromStr for Guarantee {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "at_least_once" => Ok(Self::AtLeastOnce),
            "exactly_once" => Ok(Self::ExactlyOnce),
            other => Err(format!(
                "unknown guarantee '{other}': expected at_least_once or exactly_once"
            )),
        }
    }
}

impl Connectors {
    pub fn new(base_dir: impl Into<PathBuf>, batch_size: usize) -> Self {
        Self {
            base_dir: base_dir.into(),
            batch_size: batch_size.max(1),
            stdin_sample: Mutex::new(None),
            kafka: KafkaDefaults::default(),
            guarantee: Guarantee::default(),
            database: DatabaseDefaults::from_env(),
            lookup_cache: LookupCache::default(),
            sandbox: None,
            append_by_default: false,
        }
    }

    /// Reads the first records of stdin (once) for schema inference.
    fn sample_stdin(&self) -> std::result::Result<Vec<u8>, String> {
        let mut sample = self
            .stdin_sample
            .lock()
            .map_err(|_| "stdin sample lock poisoned".to_string())?;
        if sample.is_none() {
            let mut buf = Vec::new();
            let mut stdin = std::io::stdin().lock();
            for _ in 0..SAMPLE_RECORDS {
                let n = stdin
                    .read_until(b'\n', &mut buf)
                    .map_err(|e| format!("cannot read stdin: {e}"))?;
                if n == 0 {
                    break;
                }
            }
            *sample = Some(buf);
        }
        Ok(sample.clone().unwrap_or_default())
    }

    fn path(
        &self,
        props: &BTreeMap<String, String>,
        connector: &str,
    ) -> std::result::Result<PathBuf, String> {
        let raw = props
            .get("path")
            .ok_or_else(|| format!("{connector} needs a 'path' property"))?;
        let path = Path::new(raw);
        let path = if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        };
        match &self.sandbox {
            Some(sandbox) => sandbox.check_path("path", &path),
            None => Ok(path),
        }
    }

    /// Opens the external source `binding`, decoding the columns of `projected`.
    pub fn open_source(
        &self,
        binding: &SourceBinding,
        projected: SchemaRef,
        metrics: Arc<JobMetrics>,
    ) -> Result<Box<dyn Source>> {
        let props = &binding.properties;
        let kind = source_type(props).map_err(|e| EngineError::connector(&binding.name, e))?;
        let err = |e: String| EngineError::connector(&binding.name, e);
        if kind == "kafka_source" {
            return kafka::open_source(
                &binding.name,
                props,
                &binding.schema,
                &binding.time_formats,
                projected,
                self.batch_size,
                &self.kafka,
                kafka::ReadMode::Group,
                metrics,
            );
        }
        if kind == "postgres_source" {
            return postgres::open_source(
                &binding.name,
                props,
                &binding.schema,
                projected,
                self.batch_size,
                &self.database,
                metrics,
            );
        }
        if kind == "nexmark" {
            let config = NexmarkConfig::from_properties(&binding.name, props).map_err(err)?;
            return Ok(Box::new(NexmarkSource::new(
                config,
                projected,
                self.batch_size,
            )));
        }
        let format = RecordFormat::from_properties(props).map_err(err)?;
        let decoder =
            BatchDecoder::new(format, binding.schema.clone(), projected, self.batch_size)?
                .with_time_formats(binding.time_formats.clone());
        match kind {
            "file_source" => {
                check_keys(props, FILE_SOURCE_KEYS, kind).map_err(err)?;
                let path = self.path(props, kind).map_err(err)?;
                let max = max_record_bytes(props).map_err(err)?;
                Ok(Box::new(
                    LineSource::open_file(&path, format, decoder, metrics)?
                        .with_max_record_bytes(max),
                ))
            }
            "stdin" => {
                check_keys(props, STDIN_KEYS, kind).map_err(err)?;
                let sampled = self
                    .stdin_sample
                    .lock()
                    .ok()
                    .and_then(|mut s| s.take())
                    .unwrap_or_default();
                let reader = Cursor::new(sampled).chain(std::io::stdin());
                let max = max_record_bytes(props).map_err(err)?;
                Ok(Box::new(
                    LineSource::new("stdin".into(), Box::new(reader), format, decoder, metrics)
                        .with_max_record_bytes(max),
                ))
            }
            other => Err(err(unavailable(other, "source"))),
        }
    }

    /// Opens source `binding` as the table side of a join: a Kafka topic is
    /// read whole from its start and then kept up to date (tombstones
    /// delete); other sources open as they do for streams.
    pub fn open_table_source(
        &self,
        binding: &SourceBinding,
        projected: SchemaRef,
        metrics: Arc<JobMetrics>,
    ) -> Result<Box<dyn Source>> {
        if binding.properties.get("type").map(String::as_str) == Some("kafka_source") {
            return kafka::open_source(
                &binding.name,
                &binding.properties,
                &binding.schema,
                &binding.time_formats,
                projected,
                self.batch_size,
                &self.kafka,
                kafka::ReadMode::Table,
                metrics,
            );
        }
        self.open_source(binding, projected, metrics)
    }

    /// Opens source `binding` for key lookups when it is a table too large
    /// or remote to read whole (PostgreSQL); `None` for other sources.
    pub fn open_lookup(
        &self,
        binding: &SourceBinding,
        projected: SchemaRef,
        metrics: Arc<JobMetrics>,
    ) -> Result<Option<Box<dyn KeyLookup>>> {
        if binding.properties.get("type").map(String::as_str) != Some("postgres_source") {
            return Ok(None);
        }
        postgres::open_lookup(
            &binding.name,
            &binding.properties,
            &binding.schema,
            projected,
            &self.database,
            metrics,
        )
        .map(Some)
    }

    /// Opens the sink of a statement (`key`: the result's key columns);
    /// without a `type` the results go to stdout.
    pub fn open_sink(&self, binding: &SinkBinding, key: &[String]) -> Result<Box<dyn Sink>> {
        self.open_sink_as(binding, key, self.guarantee)
    }

    /// Opens a dead-letter sink: rejected records are delivered at least
    /// once whatever the results' guarantee.
    pub fn open_dead_letter_sink(&self, binding: &SinkBinding) -> Result<Box<dyn Sink>> {
        self.open_sink_as(binding, &[], Guarantee::AtLeastOnce)
    }

    fn open_sink_as(
        &self,
        binding: &SinkBinding,
        key: &[String],
        guarantee: Guarantee,
    ) -> Result<Box<dyn Sink>> {
        let props = &binding.properties;
        let err = |e: String| EngineError::connector(&binding.name, e);
        if props.get("type").map(String::as_str) == Some("kafka_sink") {
            return kafka::open_sink(
                &binding.name,
                props,
                key,
                &self.kafka,
                guarantee == Guarantee::ExactlyOnce,
            );
        }
        if props.get("type").map(String::as_str) == Some("postgres_sink") {
            return postgres::open_sink(
                &binding.name,
                props,
                key,
                &self.database,
                guarantee == Guarantee::ExactlyOnce,
            );
        }
        let format = RecordFormat::from_properties(props).map_err(err)?;
        match props.get("type").map(String::as_str).unwrap_or("stdout") {
            "file_sink" | "file" => {
                check_keys(props, FILE_SINK_KEYS, "file_sink").map_err(err)?;
                let path = self.path(props, "file_sink").map_err(err)?;
                let append = match props.get("append").map(String::as_str) {
                    None => self.append_by_default,
                    Some("false") => false,
                    Some("true") => true,
                    Some(other) => {
                        return Err(err(format!(
                            "'append' must be true or false, got '{other}'"
                        )))
                    }
                };
                Ok(Box::new(FileSink::new(
                    &path,
                    format,
                    append,
                    guarantee == Guarantee::ExactlyOnce,
                )?))
            }
            "stdout" => {
                check_keys(props, STDOUT_KEYS, "stdout").map_err(err)?;
                if guarantee == Guarantee::ExactlyOnce {
                    return Err(err(
                        "results printed to stdout cannot be taken back after a crash, so they cannot be exactly-once; write them to a file_sink or kafka_sink, or use at_least_once".into(),
                    ));
                }
                Ok(Box::new(WriterSink::stdout(format)))
            }
            "null" | "blackhole" => {
                check_keys(props, NULL_SINK_KEYS, "null").map_err(err)?;
                Ok(Box::new(NullSink))
            }
            other => Err(err(unavailable(other, "sink"))),
        }
    }

    /// Checks an external source's properties without opening it (for
    /// `validate` and a deployment's check): its keys, a file's place in
    /// the sandbox, a Kafka client's settings, a PostgreSQL query.
    pub fn check_source(&self, binding: &SourceBinding) -> Result<()> {
        let props = &binding.properties;
        let err = |e: String| EngineError::connector(&binding.name, e);
        match source_type(props).map_err(err)? {
            "kafka_source" => kafka::check_source(&binding.name, props, &self.kafka).map_err(err),
            "postgres_source" => postgres::check_source(props, &self.database).map_err(err),
            "file_source" => {
                check_keys(props, FILE_SOURCE_KEYS, "file_source").map_err(err)?;
                self.path(props, "file_source").map(|_| ()).map_err(err)
            }
            "stdin" => check_keys(props, STDIN_KEYS, "stdin").map_err(err),
            "nexmark" => NexmarkConfig::from_properties(&binding.name, props)
                .map(|_| ())
                .map_err(err),
            other => Err(err(unavailable(other, "source"))),
        }
    }

    /// Checks a sink's properties without opening it (for `validate`).
    pub fn check_sink(&self, binding: &SinkBinding) -> Result<()> {
        let props = &binding.properties;
        let err = |e: String| EngineError::connector(&binding.name, e);
        if props.get("type").map(String::as_str) == Some("kafka_sink") {
            return kafka::check_sink(props, &self.kafka).map_err(err);
        }
        if props.get("type").map(String::as_str) == Some("postgres_sink") {
            return postgres::check_sink(props).map_err(err);
        }
        RecordFormat::from_properties(props).map_err(err)?;
        match props.get("type").map(String::as_str).unwrap_or("stdout") {
            "file_sink" | "file" => {
                check_keys(props, FILE_SINK_KEYS, "file_sink").map_err(err)?;
                self.path(props, "file_sink").map(|_| ()).map_err(err)
            }
            "stdout" => check_keys(props, STDOUT_KEYS, "stdout").map_err(err),
            "null" | "blackhole" => check_keys(props, NULL_SINK_KEYS, "null").map_err(err),
            other => Err(err(unavailable(other, "sink"))),
        }
    }
}

impl SourceResolver for Connectors {
    fn infer_schema(
        &self,
        name: &str,
        props: &BTreeMap<String, String>,
    ) -> std::result::Result<SchemaRef, String> {
        let kind = source_type(props)?;
        if kind == "kafka_source" {
            return kafka::infer_source_schema(name, props, &self.kafka);
        }
        if kind == "postgres_source" {
            return postgres::infer_source_schema(props, &self.database);
        }
        if kind == "nexmark" {
            return Ok(nexmark::schema(
                NexmarkConfig::from_properties(name, props)?.kind,
            ));
        }
        let format = RecordFormat::from_properties(props)?;
        match kind {
            "file_source" => {
                check_keys(props, FILE_SOURCE_KEYS, kind)?;
                let path = self.path(props, kind)?;
                let file = File::open(&path)
                    .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
                Ok(Arc::new(infer_schema(format, file)?))
            }
            "stdin" => {
                check_keys(props, STDIN_KEYS, kind)?;
                let sample = self.sample_stdin()?;
                Ok(Arc::new(infer_schema(format, Cursor::new(sample))?))
            }
            other => Err(unavailable(other, "source")),
        }
    }
}

/// `max.record.bytes`: the longest record a line source accepts (16 MiB
/// unless set); a longer one is one bad record.
fn max_record_bytes(props: &BTreeMap<String, String>) -> std::result::Result<usize, String> {
    match props.get("max.record.bytes") {
        None => Ok(crate::file::reader::DEFAULT_MAX_RECORD_BYTES),
        Some(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("'max.record.bytes' = '{v}' is not a positive number of bytes")),
    }
}

fn source_type(props: &BTreeMap<String, String>) -> std::result::Result<&str, String> {
    match props.get("type").map(String::as_str) {
        Some("file_source") | Some("file") => Ok("file_source"),
        Some("stdin") => Ok("stdin"),
        Some(other) => Ok(other),
        None => Err("no 'type' property".into()),
    }
}

fn unavailable(kind: &str, role: &str) -> String {
    let known = if role == "source" {
        "file_source, stdin, kafka_source, postgres_source, nexmark"
    } else {
        "file_sink, stdout, null, kafka_sink, postgres_sink"
    };
    format!("unknown {role} type '{kind}'; expected one of: {known}")
}

/// Unknown keys are errors: a misspelt key would otherwise be ignored.
pub(crate) fn check_keys(
    props: &BTreeMap<String, String>,
    allowed: &[&str],
    connector: &str,
) -> std::result::Result<(), String> {
    match props.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(key) => Err(format!(
            "unknown property '{key}' for {connector}; valid keys: {}",
            allowed.join(", ")
        )),
        None => Ok(()),
    }
}
