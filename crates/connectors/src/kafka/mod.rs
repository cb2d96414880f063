//! Kafka: `kafka_source` (a consumer-group member decoding messages in
//! batches) and `kafka_sink` (one message per result row), on librdkafka.
//!
//! - [`config`]: client settings from properties, config defaults and the
//!   environment (bootstrap servers, security, credentials).
//! - [`source`]: consumption, decoding, offsets committed after the sinks flushed.
//! - [`columns`]: the system columns of each message.
//! - [`sink`]: encoding, message keys and timestamps, delivery accounting.
//! - [`admin`]: topic creation and plain produce/consume for tools and tests.

pub mod admin;
pub mod columns;
pub mod config;
pub mod connector;
pub mod delivery;
pub mod error;
mod group;
pub mod message_queue;
mod probe;
mod produce_batch;
pub mod repartition;
pub mod sink;
pub mod source;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use rdkafka::consumer::BaseConsumer;
use velostream_engine::{JobMetrics, Result, Sink};
use velostream_sql::{system_columns, TimeFormats};

use self::config::KafkaSettings;
use self::error::KafkaError;
pub use self::probe::{probe, KafkaProbe};
pub use self::source::ReadMode;
use crate::error::{ConnectorError, ConnectorResult};
use crate::format::decode::BatchDecoder;
use crate::format::infer::{infer_schema, SAMPLE_RECORDS};
use crate::format::RecordFormat;
use crate::keys::Key;
use crate::types;

/// Velostream's own keys of a Kafka source; every other key goes to librdkafka.
pub const SOURCE_KEYS: &[Key] = &[
    Key::new("type", "the connector"),
    Key::new("topic", "the topic to read"),
    Key::new("topic.name", "the same as `topic`"),
    Key::with_default(
        "format",
        "json",
        "`json`, `csv`, `string` (the payload as text in a `value` column) or `bytes`",
    ),
    Key::with_default(
        "delimiter",
        ",",
        "the CSV delimiter: one character, or `tab`",
    ),
    Key::with_default(
        "bounded",
        "false",
        "`true`: read what the topic holds now, then end (backfills, tests)",
    ),
    Key::new(
        "key.field",
        "a declared column that receives the message key",
    ),
    Key::with_default(
        "scale_out",
        "false",
        "`true`: several processes of the application share this source's partitions; statements that group its records by a column repartition them through a topic, so each key is held by one process (docs/scale-out.md)",
    ),
];
/// Velostream's own keys of a Kafka sink; every other key goes to librdkafka.
pub const SINK_KEYS: &[Key] = &[
    Key::new("type", "the connector"),
    Key::new("topic", "the topic to write"),
    Key::new("topic.name", "the same as `topic`"),
    Key::with_default("format", "json", "`json`, `csv`, `string` or `bytes`"),
    Key::with_default(
        "delimiter",
        ",",
        "the CSV delimiter: one character, or `tab`",
    ),
];

/// How a message's payload is read or written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaFormat {
    /// One JSON object per message.
    Json,
    /// One delimited line per message (columns in declaration order).
    Csv(u8),
    /// The payload as text, in a column `value`.
    String,
    /// The payload as bytes, in a column `value`.
    Bytes,
}

impl KafkaFormat {
    pub fn from_properties(props: &BTreeMap<String, String>) -> ConnectorResult<Self> {
        let invalid = ConnectorError::InvalidValue;
        let delimiter = crate::format::delimiter(props)?;
        match props
            .get("format")
            .map(|f| f.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("json") | Some("jsonl") => Ok(Self::Json),
            Some("csv") => Ok(Self::Csv(delimiter)),
            Some("string") => Ok(Self::String),
            Some("bytes") => Ok(Self::Bytes),
            Some(f @ ("avro" | "protobuf")) => Err(invalid(format!(
                "format '{f}' is not available in this build yet; use json, csv, string or bytes"
            ))),
            Some(other) => Err(invalid(format!(
                "unknown format '{other}' for Kafka; expected json, csv, string or bytes"
            ))),
        }
    }

    fn record_format(self) -> RecordFormat {
        match self {
            Self::Csv(delimiter) => RecordFormat::Csv {
                header: false,
                delimiter,
            },
            _ => RecordFormat::JsonLines,
        }
    }
}

/// What a Kafka connector needs besides its own properties.
#[derive(Clone)]
pub struct KafkaDefaults {
    /// librdkafka properties from the config file (`velostream.kafka`).
    pub client: BTreeMap<String, String>,
    /// How long a table's first load may take (`timeouts.table_load_timeout`).
    pub table_load_timeout: Duration,
    /// How long a poll waits for the first message of a batch
    /// (`performance.batch_timeout`).
    pub batch_timeout: Duration,
    /// The clusters credentials go to, and whether the application is confined.
    pub rules: config::ClientRules,
    /// What an exactly-once sink's `transactional.id` starts with when the
    /// sink sets none: `velostream.kafka.transactional_id_prefix`, else
    /// [`DEFAULT_TRANSACTIONAL_ID_PREFIX`]. Two deployments that write at
    /// once (blue and green) need different prefixes, or they fence each
    /// other's producers.
    pub transactional_id_prefix: Option<String>,
}

/// The start of a sink's default `transactional.id` (then the statement's name).
pub const DEFAULT_TRANSACTIONAL_ID_PREFIX: &str = "velostream-";

impl KafkaDefaults {
    /// The `transactional.id` of the exactly-once sink of statement `name`
    /// whose properties `props` name none.
    pub fn transactional_id(&self, name: &str) -> String {
        let prefix = self
            .transactional_id_prefix
            .as_deref()
            .unwrap_or(DEFAULT_TRANSACTIONAL_ID_PREFIX);
        format!("{prefix}{name}")
    }
}

/// Secret values (`sasl.password`, ...) shown as `***`.
impl std::fmt::Debug for KafkaDefaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaDefaults")
            .field("client", &config::shown(&self.client))
            .field("table_load_timeout", &self.table_load_timeout)
            .field("batch_timeout", &self.batch_timeout)
            .field("rules", &self.rules)
            .field("transactional_id_prefix", &self.transactional_id_prefix)
            .finish()
    }
}

impl Default for KafkaDefaults {
    fn default() -> Self {
        Self {
            client: BTreeMap::new(),
            table_load_timeout: Duration::from_secs(120),
            batch_timeout: Duration::from_millis(100),
            rules: config::ClientRules::default(),
            transactional_id_prefix: None,
        }
    }
}

/// The topic a Kafka source or sink (`connector`) names: `'topic'`, or its
/// other spelling `'topic.name'`.
pub fn topic(props: &BTreeMap<String, String>, connector: &'static str) -> ConnectorResult<String> {
    props
        .get("topic")
        .or_else(|| props.get("topic.name"))
        .cloned()
        .ok_or(ConnectorError::MissingKey {
            connector,
            key: "topic",
        })
}

/// The cluster `defaults` name, if any (`bootstrap.servers` or its
/// `bootstrap_servers` spelling).
pub fn bootstrap_servers(defaults: &KafkaDefaults) -> Option<String> {
    config::configured_cluster(&defaults.client)
}

/// The client settings a probe or tool connects with: the cluster of
/// `defaults` (or `brokers`), with its security settings and credentials,
/// outside any consumer group.
pub fn client_settings(
    defaults: &KafkaDefaults,
    brokers: Option<&str>,
) -> ConnectorResult<KafkaSettings> {
    let own: BTreeMap<String, String> = brokers
        .map(|b| ("bootstrap.servers".to_string(), b.to_string()))
        .into_iter()
        .collect();
    KafkaSettings::resolve(&own, &consumer_defaults(&defaults.client), &defaults.rules)
}

/// The librdkafka properties among `props` (Velostream's keys removed).
fn client_properties(props: &BTreeMap<String, String>, own: &[Key]) -> BTreeMap<String, String> {
    props
        .iter()
        .filter(|(k, _)| !own.iter().any(|key| key.name == k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Consumer settings of source `name`.
fn consumer_settings(
    name: &str,
    props: &BTreeMap<String, String>,
    defaults: &KafkaDefaults,
) -> ConnectorResult<KafkaSettings> {
    let mut settings = KafkaSettings::resolve(
        &client_properties(props, SOURCE_KEYS),
        &consumer_defaults(&defaults.client),
        &defaults.rules,
    )?;
    settings
        .default("group.id", &format!("velostream-{name}"))
        .default("auto.offset.reset", "earliest")
        .default("session.timeout.ms", "6000")
        // a member joining or leaving moves only the partitions that change
        // hands; the others keep reading through the rebalance
        .default("partition.assignment.strategy", "cooperative-sticky")
        // consumer lag per partition reaches the metrics through statistics
        .default("statistics.interval.ms", "5000")
        .force("enable.auto.commit", "false")
        .force("enable.partition.eof", "false");
    Ok(settings)
}

/// The config file's Kafka defaults that apply to consumers (producer
/// tuning such as `linger.ms` is not a consumer property).
fn consumer_defaults(client: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    const PRODUCER_ONLY: &[&str] = &[
        "acks",
        "linger.ms",
        "linger_ms",
        "batch.size",
        "batch_size",
        "compression.type",
        "compression_type",
        "enable.idempotence",
        "enable_idempotence",
        "retries",
        "message.timeout.ms",
        "compression.level",
        "queue.buffering.max.kbytes",
    ];
    client
        .iter()
        .filter(|(k, _)| !PRODUCER_ONLY.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Opens a `kafka_source` decoding the columns of `projected`: as a
/// consumer-group member (`ReadMode::Group`), or as a table read whole and
/// kept up to date (`ReadMode::Table`).
#[allow(clippy::too_many_arguments)]
pub fn open_source(
    name: &str,
    props: &BTreeMap<String, String>,
    full_schema: &SchemaRef,
    time_formats: &TimeFormats,
    projected: SchemaRef,
    batch_size: usize,
    defaults: &KafkaDefaults,
    mode: ReadMode,
    metrics: Arc<JobMetrics>,
) -> Result<source::KafkaSource> {
    let bad = |e: ConnectorError| e.at(name);
    let topic = topic(props, types::KAFKA_SOURCE).map_err(bad)?;
    let format = KafkaFormat::from_properties(props).map_err(bad)?;
    // bounded: read what the topic holds, then end (backfills, tests)
    let bounded = match props.get("bounded").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(bad(ConnectorError::InvalidValue(format!(
                "'bounded' must be true or false, got '{other}'"
            ))))
        }
    };
    let mut settings = consumer_settings(name, props, defaults).map_err(bad)?;
    if bounded {
        settings.force("enable.partition.eof", "true");
    }
    let key_field = props.get("key.field").cloned();
    if let Some(field) = &key_field {
        if full_schema.index_of(field).is_err() {
            return Err(bad(ConnectorError::InvalidValue(format!(
                "'key.field' names '{field}', which is not a column"
            ))));
        }
    }
    if mode == ReadMode::Table {
        settings
            .force("group.id", &format!("velostream-table-{name}"))
            .force("enable.partition.eof", "true");
    }
    // the columns decoded from the value: not the system columns, not the key's
    let payload = |schema: &SchemaRef| -> SchemaRef {
        Arc::new(Schema::new(
            schema
                .fields()
                .iter()
                .filter(|f| {
                    !system_columns::is_system_column(f.name())
                        && key_field.as_deref() != Some(f.name().as_str())
                })
                .cloned()
                .collect::<Vec<_>>(),
        ))
    };
    let decoder = match format {
        KafkaFormat::Json | KafkaFormat::Csv(_) => Some(
            BatchDecoder::new(
                format.record_format(),
                payload(full_schema),
                payload(&projected),
                batch_size,
            )?
            .with_time_formats(time_formats.clone()),
        ),
        KafkaFormat::String | KafkaFormat::Bytes => None,
    };
    let mut source = source::KafkaSource::open(
        source::SourceSpec {
            name: name.to_string(),
            topic: topic.clone(),
            config: settings.client_config(),
            format,
            decoder,
            schema: projected,
            batch_size,
            key_field,
            mode,
            batch_timeout: defaults.batch_timeout,
        },
        metrics,
    )?;
    let partitions = admin::partitions(source.consumer(), &topic, Duration::from_secs(10))
        .map_err(|e| e.at(name))?;
    source.set_partition_count(
        partitions
            .iter()
            .map(|&p| p as usize + 1)
            .max()
            .unwrap_or(0),
    );
    if bounded {
        source.set_end(partitions.into_iter().collect());
    } else if mode == ReadMode::Table {
        source.load_first(
            partitions.into_iter().collect(),
            defaults.table_load_timeout,
        );
    }
    Ok(source)
}

/// Opens a `kafka_sink`; `key` names the result's key columns.
pub fn open_sink(
    name: &str,
    props: &BTreeMap<String, String>,
    key: &[String],
    defaults: &KafkaDefaults,
    exactly_once: bool,
) -> Result<Box<dyn Sink>> {
    let bad = |e: ConnectorError| e.at(name);
    let settings = sink_settings(props, defaults).map_err(bad)?;
    let topic = topic(props, types::KAFKA_SINK).map_err(bad)?;
    let format = match KafkaFormat::from_properties(props).map_err(bad)? {
        KafkaFormat::Json => RecordFormat::JsonLines,
        KafkaFormat::Csv(delimiter) => RecordFormat::Csv {
            header: false,
            delimiter,
        },
        other => {
            return Err(bad(ConnectorError::InvalidValue(format!(
                "a kafka_sink writes json or csv, not {other:?}"
            ))))
        }
    };
    Ok(Box::new(sink::KafkaSink::open(
        name,
        &topic,
        settings.client_config(),
        format,
        key.to_vec(),
        // stable per job, so a restarted job fences its earlier incarnation
        exactly_once.then(|| {
            props
                .get("transactional.id")
                .cloned()
                .unwrap_or_else(|| defaults.transactional_id(name))
        }),
    )?))
}

/// Checks a source's properties without connecting.
pub fn check_source(
    name: &str,
    props: &BTreeMap<String, String>,
    defaults: &KafkaDefaults,
) -> ConnectorResult<()> {
    topic(props, types::KAFKA_SOURCE)?;
    KafkaFormat::from_properties(props)?;
    consumer_settings(name, props, defaults).map(|_| ())
}

/// Checks a sink's properties without connecting.
pub fn check_sink(
    props: &BTreeMap<String, String>,
    defaults: &KafkaDefaults,
) -> ConnectorResult<()> {
    topic(props, types::KAFKA_SINK)?;
    KafkaFormat::from_properties(props)?;
    sink_settings(props, defaults).map(|_| ())
}

fn sink_settings(
    props: &BTreeMap<String, String>,
    defaults: &KafkaDefaults,
) -> ConnectorResult<KafkaSettings> {
    let mut settings = KafkaSettings::resolve(
        &client_properties(props, SINK_KEYS),
        &defaults.client,
        &defaults.rules,
    )?;
    settings.default("linger.ms", &SINK_LINGER_MS.to_string());
    Ok(settings)
}

/// The sink's default `linger.ms`. A job hands its sink a batch's rows
/// together, so a short linger already puts them into one produce
/// request; at 0 librdkafka sends whatever one wake-up finds, and the
/// many small requests queue at the broker (on this project's latency
/// benchmark at 10,000 records/s: p99 58 ms at 0, 9.5 ms at 1, 13.5 ms at
/// 5). Under load batches fill by `batch.size` whatever the linger.
pub const SINK_LINGER_MS: u64 = 1;

/// Infers a source's columns from the first messages of its topic (read
/// from the beginning, outside any consumer group).
pub fn infer_source_schema(
    name: &str,
    props: &BTreeMap<String, String>,
    defaults: &KafkaDefaults,
) -> ConnectorResult<SchemaRef> {
    let topic = topic(props, types::KAFKA_SOURCE)?;
    let format = KafkaFormat::from_properties(props)?;
    match format {
        KafkaFormat::String => {
            return Ok(Arc::new(Schema::new(vec![Field::new(
                "value",
                DataType::Utf8,
                true,
            )])))
        }
        KafkaFormat::Bytes => {
            return Ok(Arc::new(Schema::new(vec![Field::new(
                "value",
                DataType::Binary,
                true,
            )])))
        }
        _ => {}
    }
    let mut settings = consumer_settings(name, props, defaults)?;
    settings
        .force("group.id", "velostream-schema-sample")
        .force("enable.partition.eof", "true");
    let consumer: BaseConsumer =
        settings
            .client_config()
            .create()
            .map_err(|source| KafkaError::Client {
                client: "consumer",
                source,
            })?;
    let sample = admin::read_from_start(&consumer, &topic, SAMPLE_RECORDS, Duration::from_secs(5))?;
    if sample.is_empty() {
        return Err(KafkaError::EmptyTopic {
            topic,
            stream: name.to_string(),
        }
        .into());
    }
    let mut chunk = Vec::new();
    for payload in sample {
        chunk.extend_from_slice(&payload);
        chunk.push(b'\n');
    }
    let schema = infer_schema(format.record_format(), std::io::Cursor::new(chunk))?;
    Ok(Arc::new(schema))
}
