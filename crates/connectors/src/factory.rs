//! Creates sources and sinks from a statement's properties
//! (`'<name>.type'` and the keys of that connector), and infers the schema
//! of undeclared sources: each request is one lookup in the
//! [`registry`](crate::registry), with [`Connectors`] as the context every
//! connector shares. Relative paths resolve against the directory of the
//! application's `.sql` file.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::SchemaRef;
use velostream_engine::connector::{KeyLookup, LookupCache};
use velostream_engine::{EngineError, JobMetrics, Result, Sink, Source};
use velostream_sql::{SinkBinding, SourceBinding, SourceResolver, SourceTraits};

use crate::format::infer::SAMPLE_RECORDS;
use crate::kafka::KafkaDefaults;
use crate::postgres::connection::DatabaseDefaults;
use crate::registry::{self, Connector, Role};
use crate::sandbox::Sandbox;

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
    pub(crate) fn sample_stdin(&self) -> std::result::Result<Vec<u8>, String> {
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

    /// What schema inference read from stdin, for the stdin source to
    /// replay (once).
    pub(crate) fn take_stdin_sample(&self) -> Vec<u8> {
        self.stdin_sample
            .lock()
            .ok()
            .and_then(|mut s| s.take())
            .unwrap_or_default()
    }

    /// The file `'path'` names, resolved against the application's
    /// directory and checked against the sandbox.
    pub(crate) fn path(
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
        source_connector(binding)?.open_source(self, binding, projected, metrics)
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
        source_connector(binding)?.open_table(self, binding, projected, metrics)
    }

    /// Opens source `binding` for key lookups when it is a table too large
    /// or remote to read whole (PostgreSQL); `None` for other sources.
    pub fn open_lookup(
        &self,
        binding: &SourceBinding,
        projected: SchemaRef,
        metrics: Arc<JobMetrics>,
    ) -> Result<Option<Box<dyn KeyLookup>>> {
        match source_connector(binding) {
            Ok(connector) => connector.open_lookup(self, binding, projected, metrics),
            // opening it as a table says what is wrong
            Err(_) => Ok(None),
        }
    }

    /// Opens the sink of a statement (`key`: the result's key columns);
    /// without a `type` the results go to stdout.
    pub fn open_sink(&self, binding: &SinkBinding, key: &[String]) -> Result<Box<dyn Sink>> {
        sink_connector(binding)?.open_sink(self, binding, key, self.guarantee)
    }

    /// Opens a dead-letter sink: rejected records are delivered at least
    /// once whatever the results' guarantee.
    pub fn open_dead_letter_sink(&self, binding: &SinkBinding) -> Result<Box<dyn Sink>> {
        sink_connector(binding)?.open_sink(self, binding, &[], Guarantee::AtLeastOnce)
    }

    /// Checks an external source's properties without opening it (for
    /// `validate` and a deployment's check): its keys, a file's place in
    /// the sandbox, a Kafka client's settings, a PostgreSQL query.
    pub fn check_source(&self, binding: &SourceBinding) -> Result<()> {
        source_connector(binding)?
            .check(self, &binding.name, &binding.properties)
            .map_err(|e| EngineError::connector(&binding.name, e))
    }

    /// Checks a sink's properties without opening it (for `validate`).
    pub fn check_sink(&self, binding: &SinkBinding) -> Result<()> {
        sink_connector(binding)?
            .check(self, &binding.name, &binding.properties)
            .map_err(|e| EngineError::connector(&binding.name, e))
    }
}

/// The connector of source `binding`.
fn source_connector(binding: &SourceBinding) -> Result<&'static dyn Connector> {
    registry::of(&binding.properties, Role::Source, None)
        .map_err(|e| EngineError::connector(&binding.name, e))
}

/// The connector of sink `binding`: stdout without a `'type'`.
fn sink_connector(binding: &SinkBinding) -> Result<&'static dyn Connector> {
    registry::of(&binding.properties, Role::Sink, Some("stdout"))
        .map_err(|e| EngineError::connector(&binding.name, e))
}

impl SourceResolver for Connectors {
    fn infer_schema(
        &self,
        name: &str,
        props: &BTreeMap<String, String>,
    ) -> std::result::Result<SchemaRef, String> {
        registry::of(props, Role::Source, None)?.infer_schema(self, name, props)
    }

    fn traits(&self, name: &str, props: &BTreeMap<String, String>) -> SourceTraits {
        let Ok(connector) = registry::of(props, Role::Source, None) else {
            return SourceTraits::default();
        };
        SourceTraits {
            system_columns: connector.system_columns(),
            event_time_field: connector.event_time_field().map(str::to_string),
            essential_settings: connector.essential_settings(name),
            looked_up: connector.looked_up(),
            unbounded: connector.unbounded(),
            single_reader: connector.single_reader(),
        }
    }
}

/// Source `binding` as statement `job` reads it, when `readers` statements
/// of the application read it.
pub fn for_reader(binding: &SourceBinding, job: &str, readers: usize) -> SourceBinding {
    match registry::of(&binding.properties, Role::Source, None) {
        Ok(connector) => connector.for_reader(binding, job, readers),
        Err(_) => binding.clone(),
    }
}
