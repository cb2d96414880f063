//! Repartitioning: a statement that groups by columns other than how its
//! input topic is partitioned, run by several processes of one
//! application (`'scale_out' = 'true'` on its Kafka source), first writes
//! its input to a repartition topic partitioned by the group key, and
//! aggregates what it reads back. Every key then lives in one partition of
//! that topic, so exactly one process holds its group, and none answers
//! with part of it.
//!
//! Both halves run inside one [`RepartitionSource`] on the job's thread:
//!
//! - The **input half** reads the source topic as a member of the
//!   source's consumer group and divides each decoded batch by the hash of
//!   the key columns ([`KeySpread::Partitions`]) into one Arrow IPC message
//!   per repartition partition. It holds no state, so its progress is
//!   delivery: it commits the input offsets once the messages carrying
//!   their records are acknowledged.
//! - The **output half** reads the repartition topic as a member of its
//!   own group and hands the job the rows. The job's commits and
//!   checkpoints are those of the repartition topic. Records of one input
//!   partition cross each repartition partition in their input order, so
//!   the job keeps a watermark per such pair: `_partition` numbers it
//!   (`repartition partition × input partitions + input partition`), and a
//!   process awaits the pairs of the repartition partitions it owns.
//!
//! The topic and the output half's group are both
//! `<group.id>-<statement>-repartition` (the source's group id names the
//! application, as Kafka Streams' `application.id` does). The topic is
//! created with the input's partition count; an existing one with another
//! count is refused, since its partitions would no longer line up with the
//! key hash of earlier runs.
//!
//! At least once, made exact at the output: a process that fails after
//! delivering records but before committing their input offsets has them
//! written again by the input partition's next reader. Each record
//! crosses with its input `_partition` and `_offset`, and the output half
//! drops a record at or before the last offset it handed over for that
//! pair of repartition and input partition (kept in checkpoints with the
//! read position).
//!
//! The job keeps one pipeline per repartition partition it owns
//! ([`velostream_engine::partitioned`]): the source tells it of every
//! partition the group gives or takes before any record of it, with the
//! partition's state read back from the statement's changelog topics
//! ([`changelog`]), and writes each owned partition's state there at
//! checkpoints. A revoked partition's state is dropped, so no process
//! answers a group it no longer owns.
//!
//! A bounded read ends in two steps: the input half once this process's
//! input partitions are read and delivered; the output half once every
//! input partition's committed offset (the whole group's) has reached its
//! end — every record is then in the repartition topic — and the
//! repartition partitions this process owns are read to their end.

mod changelog;
mod crossing;
mod source;
mod standby;

pub use source::RepartitionSource;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::{BaseProducer, BaseRecord};
use velostream_engine::key_hash::{KeyHasher, KeySpread};
use velostream_engine::{EngineError, JobMetrics, Result, Source};
use velostream_sql::SourceBinding;

use super::config::KafkaSettings;
use super::delivery::{Deliveries, DeliveryContext};
use super::source::ReadMode;
use super::{admin, KafkaDefaults, SINK_LINGER_MS};
use crossing::HandedOver;

/// The source property that says several processes share the source.
pub const SCALE_OUT: &str = "scale_out";

/// The system column numbering a record's partition.
const PARTITION_COLUMN: &str = "_partition";

/// The system column numbering a record's offset in its partition.
const OFFSET_COLUMN: &str = "_offset";

/// How often the input half commits what was delivered.
const COMMIT_EVERY: Duration = Duration::from_secs(1);
/// How often a bounded read asks whether the whole group's input is in.
const END_CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long delivery of the repartitioned records may take.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// Consumer-only properties left out of the repartition producer.
const CONSUMER_ONLY: &[&str] = &[
    "group.id",
    "group.instance.id",
    "auto.offset.reset",
    "session.timeout.ms",
    "partition.assignment.strategy",
    "enable.auto.commit",
    "enable.partition.eof",
    "isolation.level",
    "max.poll.interval.ms",
    "heartbeat.interval.ms",
    "fetch.min.bytes",
    "fetch.wait.max.ms",
    "queued.min.messages",
    "queued.max.messages.kbytes",
];

/// Whether source `binding` is shared by several processes.
pub fn is_scaled_out(binding: &SourceBinding) -> bool {
    binding
        .properties
        .get(SCALE_OUT)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The repartition topic of `statement` reading source `binding`, under
/// the application's Kafka `defaults`: named after the consumer group the
/// source's settings resolve to, whatever spelling or layer set it.
pub fn topic_name(
    binding: &SourceBinding,
    statement: &str,
    defaults: &KafkaDefaults,
) -> Result<String> {
    let settings = super::consumer_settings(&binding.name, &binding.properties, defaults)
        .map_err(|e| e.at(&binding.name))?;
    Ok(repartition_topic(&settings, statement))
}

/// `<group>-<statement>-repartition`, for the consumer `settings` of the
/// source.
fn repartition_topic(settings: &KafkaSettings, statement: &str) -> String {
    format!(
        "{}-{}-repartition",
        settings.get("group.id").unwrap_or_default(),
        statement.to_lowercase()
    )
}

/// Everything [`open`] needs besides the connector context.
pub struct RepartitionRequest<'a> {
    pub binding: &'a SourceBinding,
    /// The columns the job decodes from the source.
    pub projected: SchemaRef,
    /// Source columns every group key of the statement includes.
    pub keys: &'a [String],
    pub statement: &'a str,
    pub batch_size: usize,
    pub defaults: &'a KafkaDefaults,
    pub metrics: Arc<JobMetrics>,
    /// Standby copies per partition of state (`processing.standby_replicas`).
    pub standby_replicas: usize,
}

/// Opens the two halves of a repartitioned read and creates the topic.
pub fn open(request: RepartitionRequest<'_>) -> Result<Box<dyn Source>> {
    let RepartitionRequest {
        binding,
        projected,
        keys,
        statement,
        batch_size,
        defaults,
        metrics,
        standby_replicas,
    } = request;
    let name = &binding.name;
    let mut properties: BTreeMap<String, String> = binding.properties.clone();
    properties.remove(SCALE_OUT);
    // the input half hands over whatever it has at once: the output half waits
    let quick = KafkaDefaults {
        batch_timeout: Duration::from_millis(1),
        ..defaults.clone()
    };
    // every record crosses with where it was read, so the output half can
    // tell a record written again after a failure from a new one
    let mut carried_fields: Vec<Field> = projected
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    for column in [PARTITION_COLUMN, OFFSET_COLUMN] {
        if projected.index_of(column).is_err() {
            carried_fields.push(binding.schema.field_with_name(column)?.clone());
        }
    }
    let crossing = Arc::new(Schema::new(carried_fields));
    let input = super::open_source(
        name,
        &properties,
        &binding.schema,
        &binding.time_formats,
        crossing.clone(),
        batch_size,
        &quick,
        ReadMode::Group,
        metrics.clone(),
    )?;
    let input_topic = input.topic().to_string();
    let input_partitions = input.partition_count().unwrap_or(0);
    if input_partitions == 0 {
        return Err(EngineError::connector(
            name,
            format!("topic '{input_topic}' has no partitions"),
        ));
    }
    let mut settings =
        super::consumer_settings(name, &properties, defaults).map_err(|e| e.at(name))?;
    let topic = repartition_topic(&settings, statement);
    let probe_config = settings.client_config();
    for key in CONSUMER_ONLY {
        settings.remove(key);
    }
    settings
        .remove("statistics.interval.ms")
        .default("linger.ms", &SINK_LINGER_MS.to_string());
    let producer_config = settings.client_config();
    create_topic(name, &producer_config, &topic, input_partitions, &[])?;
    let deliveries = Arc::<Deliveries>::default();
    let producer: BaseProducer<DeliveryContext> = producer_config
        .create_with_context(DeliveryContext(deliveries.clone()))
        .map_err(|e| EngineError::connector(name, format!("repartition producer: {e}")))?;
    // asks the input group's committed offsets without joining it
    let probe: BaseConsumer = probe_config
        .create()
        .map_err(|e| EngineError::connector(name, format!("repartition probe: {e}")))?;
    // reads changelog partitions back by offset, outside any group
    let mut reader_config = probe_config.clone();
    reader_config
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        // a restore waits on each fetch: answer as soon as anything is there
        .set("fetch.wait.max.ms", "10")
        .set("fetch.min.bytes", "1");
    // a bad setting fails here rather than at the first checkpoint
    let _: BaseConsumer = reader_config
        .create()
        .map_err(|e| EngineError::connector(name, format!("changelog reader: {e}")))?;

    let mut output_properties = properties;
    for key in ["bounded", "key.field", "format", "delimiter", "topic.name"] {
        output_properties.remove(key);
    }
    output_properties.insert("topic".into(), topic.clone());
    output_properties.insert("format".into(), "bytes".into());
    output_properties.insert("group.id".into(), topic.clone());
    let messages = Arc::new(Schema::new(vec![
        Field::new("value", DataType::Binary, true),
        Field::new(PARTITION_COLUMN, DataType::Int32, false),
    ]));
    let waits = KafkaDefaults {
        batch_timeout: defaults.batch_timeout.min(Duration::from_millis(20)),
        ..defaults.clone()
    };
    let output = super::open_source(
        name,
        &output_properties,
        &messages,
        &binding.time_formats,
        messages.clone(),
        batch_size,
        &waits,
        ReadMode::Group,
        metrics.clone(),
    )?;
    let bounded = input.is_bounded();
    let partition_column = projected.index_of(PARTITION_COLUMN).ok();
    let crossing_partition = crossing.index_of(PARTITION_COLUMN)?;
    let crossing_offset = crossing.index_of(OFFSET_COLUMN)?;
    Ok(Box::new(RepartitionSource {
        name: name.clone(),
        schema: projected,
        partition_column,
        crossing,
        crossing_partition,
        crossing_offset,
        handed_over: HandedOver::default(),
        input: Some(input),
        input_topic,
        input_partitions,
        hasher: KeyHasher::new(keys.to_vec(), KeySpread::Partitions),
        producer,
        deliveries,
        state_prefix: topic
            .strip_suffix("-repartition")
            .unwrap_or(&topic)
            .to_string(),
        topic,
        producer_config,
        probe,
        reader_config,
        standby_replicas,
        standby: None,
        changelog: None,
        owned: Default::default(),
        metrics,
        sent_since_commit: false,
        last_commit: Instant::now(),
        output,
        bounded,
        end_set: false,
        end_checked: None,
        waiting_for: Vec::new(),
        ended: false,
    }))
}

/// Queues one message for `partition` of `topic`, waiting while the
/// producer's queue is full.
fn send(
    producer: &BaseProducer<DeliveryContext>,
    name: &str,
    topic: &str,
    partition: i32,
    key: Option<&str>,
    payload: &[u8],
) -> Result<()> {
    let mut record: BaseRecord<'_, str, [u8], usize> = BaseRecord::with_opaque_to(topic, 0)
        .partition(partition)
        .payload(payload);
    if let Some(key) = key {
        record = record.key(key);
    }
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((e, back))
                if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) =>
            {
                record = back;
                producer.poll(Duration::from_millis(10));
            }
            Err((e, _)) => return Err(EngineError::connector(name, e)),
        }
    }
}

/// Creates the repartition topic, or checks the one there.
fn create_topic(
    name: &str,
    client: &rdkafka::ClientConfig,
    topic: &str,
    partitions: usize,
    settings: &[(&str, &str)],
) -> Result<()> {
    admin::create_topic_with(client, topic, partitions as i32, settings)
        .map_err(|e| EngineError::connector(name, e))?;
    let consumer: BaseConsumer = client
        .create()
        .map_err(|e| EngineError::connector(name, e))?;
    let found = admin::partitions(&consumer, topic, Duration::from_secs(10))
        .map_err(|e| EngineError::connector(name, e))?;
    if found.len() != partitions {
        return Err(EngineError::connector(
            name,
            format!(
                "topic '{topic}' has {} partitions, but the input has {partitions}: its keys would not line up with the input's; delete the application's repartition and changelog topics (and reset its state) to start over",
                found.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_topic_is_named_after_the_group_and_the_statement() {
        let defaults = KafkaDefaults::default();
        let settings = |own: &[(&str, &str)]| {
            let mut props: BTreeMap<String, String> = own
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            props.insert("bootstrap.servers".into(), "localhost:9092".into());
            super::super::consumer_settings("trades", &props, &defaults).unwrap()
        };
        assert_eq!(
            repartition_topic(&settings(&[("group.id", "desk")]), "Totals"),
            "desk-totals-repartition"
        );
        // the other spelling names the same group
        assert_eq!(
            repartition_topic(&settings(&[("group_id", "desk")]), "totals"),
            "desk-totals-repartition"
        );
        assert_eq!(
            repartition_topic(&settings(&[]), "totals"),
            "velostream-trades-totals-repartition"
        );
    }
}
