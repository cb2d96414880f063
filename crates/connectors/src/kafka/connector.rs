//! The Kafka connectors: `kafka_source` (a consumer-group member, or a
//! table read whole and kept up to date) and `kafka_sink`.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, SchemaRef};
use velostream_engine::{JobMetrics, Result, Sink, Source};
use velostream_sql::{system_columns, SinkBinding, SourceBinding};

use super::{check_sink, check_source, infer_source_schema, open_sink, open_source, ReadMode};
use super::{SINK_KEYS, SOURCE_KEYS};
use crate::connector::{types, Connector, Role};
use crate::context::{Connectors, Guarantee};
use crate::error::ConnectorResult;
use crate::keys::Key;

/// Where the keys Velostream does not read go.
const CLIENT_KEYS: &str = "any other key is a librdkafka client property (`bootstrap.servers`, `group.id`, `security.protocol`, `sasl.*`, `ssl.*`, ...), merged over the configuration's `kafka` settings";

/// `kafka_source`.
pub struct KafkaSourceConnector;

impl Connector for KafkaSourceConnector {
    fn name(&self) -> &'static str {
        types::KAFKA_SOURCE
    }

    fn role(&self) -> Role {
        Role::Source
    }

    fn summary(&self) -> &'static str {
        "a Kafka topic, read as a consumer-group member (or whole, as a join's table)"
    }

    fn behaviour(&self) -> &'static str {
        "Unbounded unless `'bounded' = 'true'`. Offsets are committed after the sinks flushed the results they cover; as a join's table the topic is read from its start and kept up to date (a tombstone deletes its key)."
    }

    fn keys(&self) -> &'static [Key] {
        SOURCE_KEYS
    }

    fn other_keys(&self) -> Option<&'static str> {
        Some(CLIENT_KEYS)
    }

    fn system_columns(&self) -> Vec<Field> {
        system_columns::message_columns()
    }

    fn essential_settings(&self, name: &str) -> String {
        format!("'{name}.topic' and '{name}.bootstrap.servers'")
    }

    fn unbounded(&self) -> bool {
        true
    }

    /// Several statements reading one topic get a consumer group each
    /// (`<group.id>-<job>`), so each sees every record instead of the
    /// statements splitting the partitions between them.
    fn for_reader(&self, binding: &SourceBinding, job: &str, readers: usize) -> SourceBinding {
        let mut binding = binding.clone();
        if readers > 1 {
            let base = binding
                .properties
                .get("group.id")
                .cloned()
                .unwrap_or_else(|| format!("velostream-{}", binding.name));
            binding
                .properties
                .insert("group.id".into(), format!("{base}-{job}"));
        }
        binding
    }

    fn infer_schema(
        &self,
        cx: &Connectors,
        name: &str,
        props: &BTreeMap<String, String>,
    ) -> ConnectorResult<SchemaRef> {
        infer_source_schema(name, props, &cx.kafka)
    }

    fn open_source(
        &self,
        cx: &Connectors,
        binding: &SourceBinding,
        projected: SchemaRef,
        metrics: Arc<JobMetrics>,
    ) -> Result<Box<dyn Source>> {
        open_kafka(cx, binding, projected, ReadMode::Group, metrics)
    }

    fn open_table(
        &self,
        cx: &Connectors,
        binding: &SourceBinding,
        projected: SchemaRef,
        metrics: Arc<JobMetrics>,
    ) -> Result<Box<dyn Source>> {
        open_kafka(cx, binding, projected, ReadMode::Table, metrics)
    }

    fn check(
        &self,
        cx: &Connectors,
        name: &str,
        props: &BTreeMap<String, String>,
    ) -> ConnectorResult<()> {
        check_source(name, props, &cx.kafka)
    }
}

fn open_kafka(
    cx: &Connectors,
    binding: &SourceBinding,
    projected: SchemaRef,
    mode: ReadMode,
    metrics: Arc<JobMetrics>,
) -> Result<Box<dyn Source>> {
    // A topic declared as a table is read as one wherever it is read: from
    // its start, its message key filling the key column, tombstones
    // deleting their key.
    let mut properties = binding.properties.clone();
    let mode = if binding.table_key.is_empty() {
        mode
    } else {
        if let [key] = binding.table_key.as_slice() {
            properties
                .entry("key.field".to_string())
                .or_insert_with(|| key.clone());
        }
        ReadMode::Table
    };
    let source = open_source(
        &binding.name,
        &properties,
        &binding.schema,
        &binding.time_formats,
        projected,
        cx.batch_size,
        &cx.kafka,
        mode,
        metrics,
    )?;
    Ok(Box::new(source))
}

/// `kafka_sink`.
pub struct KafkaSinkConnector;

impl Connector for KafkaSinkConnector {
    fn name(&self) -> &'static str {
        types::KAFKA_SINK
    }

    fn role(&self) -> Role {
        Role::Sink
    }

    fn summary(&self) -> &'static str {
        "results produced to a Kafka topic, keyed by the result's key"
    }

    fn behaviour(&self) -> &'static str {
        "At least once: librdkafka retries failed sends. Exactly once: results are produced in a transaction committed with each checkpoint."
    }

    fn keys(&self) -> &'static [Key] {
        SINK_KEYS
    }

    fn other_keys(&self) -> Option<&'static str> {
        Some(CLIENT_KEYS)
    }

    fn open_sink(
        &self,
        cx: &Connectors,
        binding: &SinkBinding,
        key: &[String],
        guarantee: Guarantee,
    ) -> Result<Box<dyn Sink>> {
        open_sink(
            &binding.name,
            &binding.properties,
            key,
            &cx.kafka,
            guarantee == Guarantee::ExactlyOnce,
        )
    }

    fn check(
        &self,
        cx: &Connectors,
        _name: &str,
        props: &BTreeMap<String, String>,
    ) -> ConnectorResult<()> {
        check_sink(props, &cx.kafka)
    }
}
