//! The context every connector shares for one application: where relative
//! paths resolve and which paths the sandbox allows, the batch size, the
//! Kafka and database defaults from the configuration, the sinks'
//! guarantee, and what schema inference read from standard input.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use velostream_engine::connector::LookupCache;

use crate::error::{ConnectorError, ConnectorResult};
use crate::format::infer::SAMPLE_RECORDS;
use crate::kafka::KafkaDefaults;
use crate::postgres::connection::DatabaseDefaults;
use crate::sandbox::Sandbox;

/// Opens connectors for one application: the shared context.
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
    /// Threads decoding each file source (1: the job's own thread).
    pub decode_threads: usize,
    /// Bytes a file source reads at a time, a chunk of whole lines each.
    pub decode_chunk_bytes: usize,
    /// Standby copies per partition of a repartitioned statement's state
    /// (`processing.standby_replicas`).
    pub standby_replicas: usize,
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
    type Err = ConnectorError;
    fn from_str(s: &str) -> ConnectorResult<Self> {
        match s {
            "at_least_once" => Ok(Self::AtLeastOnce),
            "exactly_once" => Ok(Self::ExactlyOnce),
            other => Err(ConnectorError::InvalidValue(format!(
                "unknown guarantee '{other}': expected at_least_once or exactly_once"
            ))),
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
            database: DatabaseDefaults::default(),
            lookup_cache: LookupCache::default(),
            sandbox: None,
            append_by_default: false,
            decode_threads: 1,
            decode_chunk_bytes: crate::file::reader::CHUNK_BYTES,
            standby_replicas: 0,
        }
    }

    /// Reads the first records of stdin (once) for schema inference.
    pub(crate) fn sample_stdin(&self) -> ConnectorResult<Vec<u8>> {
        // a panic while sampling left at worst a partial sample
        let mut sample = self
            .stdin_sample
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if sample.is_none() {
            let mut buf = Vec::new();
            let mut stdin = std::io::stdin().lock();
            for _ in 0..SAMPLE_RECORDS {
                let n = stdin
                    .read_until(b'\n', &mut buf)
                    .map_err(|source| ConnectorError::Io {
                        what: "cannot read stdin".into(),
                        source,
                    })?;
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
        connector: &'static str,
    ) -> ConnectorResult<PathBuf> {
        let raw = props.get("path").ok_or(ConnectorError::MissingKey {
            connector,
            key: "path",
        })?;
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
}
