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
//! A bounded read ends in two steps: the input half once this process's
//! input partitions are read and delivered; the output half once every
//! input partition's committed offset (the whole group's) has reached its
//! end — every record is then in the repartition topic — and the
//! repartition partitions this process owns are read to their end.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, ArrayRef, BinaryArray, Int32Array, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord};
use rdkafka::TopicPartitionList;
use velostream_engine::connector::Position;
use velostream_engine::key_hash::{KeyHasher, KeySpread};
use velostream_engine::{EngineError, JobMetrics, Result, Source, SourceEvent};
use velostream_sql::SourceBinding;

use super::delivery::{self, Deliveries, DeliveryContext};
use super::source::{KafkaSource, ReadMode};
use super::{admin, KafkaDefaults, SINK_LINGER_MS};

/// The source property that says several processes share the source.
pub const SCALE_OUT: &str = "scale_out";

/// The system column numbering a record's partition.
const PARTITION_COLUMN: &str = "_partition";

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
/// the application's Kafka `defaults`.
pub fn topic_name(binding: &SourceBinding, statement: &str, defaults: &KafkaDefaults) -> String {
    repartition_topic(
        &group_id(&binding.properties, &binding.name, defaults),
        statement,
    )
}

/// `<group>-<statement>-repartition`.
fn repartition_topic(group: &str, statement: &str) -> String {
    format!("{group}-{}-repartition", statement.to_lowercase())
}

/// The consumer group of source `name`: its own `group.id`, else the
/// configured one, else the per-source default.
fn group_id(properties: &BTreeMap<String, String>, name: &str, defaults: &KafkaDefaults) -> String {
    properties
        .get("group.id")
        .or_else(|| defaults.client.get("group.id"))
        .or_else(|| defaults.client.get("group_id"))
        .cloned()
        .unwrap_or_else(|| format!("velostream-{name}"))
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
    } = request;
    let name = &binding.name;
    let topic = topic_name(binding, statement, defaults);
    let mut properties: BTreeMap<String, String> = binding.properties.clone();
    properties.remove(SCALE_OUT);
    // the input half hands over whatever it has at once: the output half waits
    let quick = KafkaDefaults {
        batch_timeout: Duration::from_millis(1),
        ..defaults.clone()
    };
    let input = super::open_source(
        name,
        &properties,
        &binding.schema,
        &binding.time_formats,
        projected.clone(),
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
    let probe_config = settings.client_config();
    for key in CONSUMER_ONLY {
        settings.remove(key);
    }
    settings
        .remove("statistics.interval.ms")
        .default("linger.ms", &SINK_LINGER_MS.to_string());
    let producer_config = settings.client_config();
    create_topic(name, &producer_config, &topic, input_partitions)?;
    let deliveries = Arc::<Deliveries>::default();
    let producer: BaseProducer<DeliveryContext> = producer_config
        .create_with_context(DeliveryContext(deliveries.clone()))
        .map_err(|e| EngineError::connector(name, format!("repartition producer: {e}")))?;
    // asks the input group's committed offsets without joining it
    let probe: BaseConsumer = probe_config
        .create()
        .map_err(|e| EngineError::connector(name, format!("repartition probe: {e}")))?;

    let mut output_properties = properties;
    for key in ["bounded", "key.field", "format", "delimiter", "topic.name"] {
        output_properties.remove(key);
    }
    output_properties.insert("topic".into(), topic.clone());
    output_properties.insert("format".into(), "bytes".into());
    output_properties.insert("group.id".into(), topic.clone());
    let carried = Arc::new(Schema::new(vec![
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
        &carried,
        &binding.time_formats,
        carried.clone(),
        batch_size,
        &waits,
        ReadMode::Group,
        metrics,
    )?;
    let bounded = input.is_bounded();
    let partition_column = projected.index_of(PARTITION_COLUMN).ok();
    Ok(Box::new(RepartitionSource {
        name: name.clone(),
        schema: projected,
        partition_column,
        input: Some(input),
        input_topic,
        input_partitions,
        hasher: KeyHasher::new(keys.to_vec(), KeySpread::Partitions),
        producer,
        deliveries,
        topic,
        probe,
        sent_since_commit: false,
        last_commit: Instant::now(),
        output,
        bounded,
        end_set: false,
        end_checked: None,
    }))
}

/// Creates the repartition topic, or checks the one there.
fn create_topic(
    name: &str,
    client: &rdkafka::ClientConfig,
    topic: &str,
    partitions: usize,
) -> Result<()> {
    admin::create_topic(client, topic, partitions as i32)
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
                "repartition topic '{topic}' has {} partitions, but the input has {partitions}: its keys would not line up; delete the topic (and reset the application's state) to start over",
                found.len()
            ),
        ));
    }
    Ok(())
}

/// The two halves of a repartitioned read (see the module documentation).
pub struct RepartitionSource {
    name: String,
    /// The columns the job reads: the source's projected columns.
    schema: SchemaRef,
    /// Where `_partition` is in [`schema`](Self::schema), if the job reads it.
    partition_column: Option<usize>,
    /// The input half, until a bounded read of it ended.
    input: Option<KafkaSource>,
    input_topic: String,
    input_partitions: usize,
    hasher: KeyHasher,
    producer: BaseProducer<DeliveryContext>,
    deliveries: Arc<Deliveries>,
    topic: String,
    /// A client of the input's group that never joins it.
    probe: BaseConsumer,
    sent_since_commit: bool,
    last_commit: Instant,
    /// The output half.
    output: KafkaSource,
    bounded: bool,
    /// The output half was told to end at the repartition topic's end.
    end_set: bool,
    end_checked: Option<Instant>,
}

impl RepartitionSource {
    /// Moves what the input half has now into the repartition topic.
    fn pump_input(&mut self) -> Result<()> {
        let Some(input) = &mut self.input else {
            return Ok(());
        };
        match input.poll_now()? {
            SourceEvent::Batch(batch) => {
                self.send(&batch)?;
                self.sent_since_commit = true;
            }
            SourceEvent::Idle | SourceEvent::Deletes(_) => {}
            SourceEvent::End => {
                self.commit_input()?;
                // leaving the input's group hands its partitions on at once
                self.input = None;
                return Ok(());
            }
        }
        if self.sent_since_commit && self.last_commit.elapsed() >= COMMIT_EVERY {
            self.commit_input()?;
        }
        Ok(())
    }

    /// One message per repartition partition holding the batch's rows of
    /// that partition.
    fn send(&mut self, batch: &RecordBatch) -> Result<()> {
        let parts = self.hasher.split(batch, self.input_partitions)?;
        for (partition, rows) in parts.into_iter().enumerate() {
            if rows.is_empty() {
                continue;
            }
            let part = if rows.len() == batch.num_rows() {
                batch.clone()
            } else {
                take_record_batch(batch, &UInt32Array::from(rows))?
            };
            let payload = encode(&part)?;
            let mut record: BaseRecord<'_, (), [u8], usize> =
                BaseRecord::with_opaque_to(&self.topic, 0)
                    .partition(partition as i32)
                    .payload(&payload);
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((e, back))
                        if e.rdkafka_error_code()
                            == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) =>
                    {
                        record = back;
                        self.producer.poll(Duration::from_millis(10));
                    }
                    Err((e, _)) => return Err(EngineError::connector(&self.name, e)),
                }
            }
        }
        self.producer.poll(Duration::ZERO);
        Ok(())
    }

    /// Waits for every repartitioned record to be acknowledged, then
    /// commits the input offsets of what the input half read.
    fn commit_input(&mut self) -> Result<()> {
        delivery::flush(&self.producer, DELIVERY_TIMEOUT)
            .map_err(|e| EngineError::connector(&self.name, format!("repartition topic: {e}")))?;
        if let Some(error) = self
            .deliveries
            .first_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
        {
            return Err(EngineError::connector(
                &self.name,
                format!(
                    "a record could not be written to repartition topic '{}': {error}",
                    self.topic
                ),
            ));
        }
        if let Some(input) = &mut self.input {
            input.commit()?;
        }
        self.sent_since_commit = false;
        self.last_commit = Instant::now();
        Ok(())
    }

    /// For a bounded read whose input half ended here: once the whole
    /// group's input is committed, the output half ends at the end of the
    /// repartition partitions this process owns.
    fn check_end(&mut self) -> Result<()> {
        if !self.bounded || self.end_set || self.input.is_some() {
            return Ok(());
        }
        if self
            .end_checked
            .is_some_and(|t| t.elapsed() < END_CHECK_EVERY)
        {
            return Ok(());
        }
        self.end_checked = Some(Instant::now());
        if self.input_committed_to_end() {
            self.output
                .set_end((0..self.input_partitions as i32).collect());
            self.end_set = true;
        }
        Ok(())
    }

    /// Whether every input partition's committed offset has reached the
    /// partition's end (an empty partition counts as read).
    fn input_committed_to_end(&self) -> bool {
        let timeout = Duration::from_secs(5);
        let mut wanted = TopicPartitionList::new();
        for p in 0..self.input_partitions as i32 {
            wanted.add_partition(&self.input_topic, p);
        }
        let Ok(committed) = admin::committed_offsets(&self.probe, wanted, timeout) else {
            return false;
        };
        let committed: BTreeMap<i32, i64> = committed.into_iter().map(|(_, p, o)| (p, o)).collect();
        (0..self.input_partitions as i32).all(|p| {
            let Ok((low, high)) = self.probe.fetch_watermarks(&self.input_topic, p, timeout) else {
                return false;
            };
            match committed.get(&p) {
                Some(&at) => at >= high,
                None => high <= low,
            }
        })
    }

    /// The job's rows from one batch of repartition messages.
    fn decode(&self, carried: &RecordBatch) -> Result<Option<RecordBatch>> {
        let values = carried
            .column(0)
            .as_any()
            .downcast_ref::<BinaryArray>()
            .ok_or_else(|| EngineError::connector(&self.name, "repartition values are bytes"))?;
        let partitions = carried
            .column(1)
            .as_any()
            .downcast_ref::<Int32Array>()
            .ok_or_else(|| EngineError::connector(&self.name, "partitions are numbers"))?;
        let mut parts = Vec::with_capacity(values.len());
        for row in 0..values.len() {
            if values.is_null(row) {
                continue;
            }
            for part in decode(values.value(row))? {
                parts.push(self.as_read(part, partitions.value(row))?);
            }
        }
        if parts.is_empty() {
            return Ok(None);
        }
        Ok(Some(concat_batches(&self.schema, parts.iter())?))
    }

    /// `batch`, read from repartition partition `partition`, as the job
    /// reads it: checked to have the statement's columns (a topic left by
    /// another version of it may not), and its `_partition` numbering the
    /// stream it came in order on (see [`stream_of`]).
    fn as_read(&self, batch: RecordBatch, partition: i32) -> Result<RecordBatch> {
        if batch.schema().fields() != self.schema.fields() {
            return Err(EngineError::connector(
                &self.name,
                format!(
                    "repartition topic '{}' holds records of other columns than this statement reads: it belongs to another version of the statement; delete it to start over",
                    self.topic
                ),
            ));
        }
        let Some(at) = self.partition_column else {
            return Ok(batch.with_schema(self.schema.clone())?);
        };
        let input = batch
            .column(at)
            .as_any()
            .downcast_ref::<Int32Array>()
            .ok_or_else(|| EngineError::connector(&self.name, "_partition is a number"))?;
        let streams: Int32Array = input
            .iter()
            .map(|p| p.map(|p| stream_of(partition, p, self.input_partitions)))
            .collect();
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns[at] = Arc::new(streams);
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

/// The number of the ordered stream a record crossed the topic on:
/// records of one input partition keep their order within each
/// repartition partition (one process reads an input partition at a
/// time, and delivers to each repartition partition in order), but not
/// across two of them, so watermarks are kept per pair.
fn stream_of(repartition: i32, input: i32, input_partitions: usize) -> i32 {
    repartition * input_partitions as i32 + input
}

/// A batch as one Arrow IPC stream.
fn encode(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut writer = StreamWriter::try_new(&mut out, &batch.schema())?;
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    Ok(out)
}

/// The batches of one Arrow IPC stream.
fn decode(bytes: &[u8]) -> Result<Vec<RecordBatch>> {
    let reader = StreamReader::try_new(Cursor::new(bytes), None)?;
    Ok(reader.collect::<std::result::Result<Vec<_>, _>>()?)
}

impl Source for RepartitionSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn poll_batch(&mut self) -> Result<SourceEvent> {
        self.pump_input()?;
        self.check_end()?;
        match self.output.poll_batch()? {
            SourceEvent::Batch(carried) => Ok(match self.decode(&carried)? {
                Some(batch) => SourceEvent::Batch(batch),
                None => SourceEvent::Idle,
            }),
            SourceEvent::Deletes(_) => Ok(SourceEvent::Idle),
            other => Ok(other),
        }
    }

    fn is_bounded(&self) -> bool {
        self.bounded
    }

    /// Watermarks are kept per ordered stream ([`stream_of`]): the pairs
    /// of a repartition partition and an input partition.
    fn partition_count(&self) -> Option<usize> {
        Some(self.input_partitions * self.input_partitions)
    }

    /// The streams of the repartition partitions this process owns: each
    /// awaited like a partition of a source read directly.
    fn owned_partitions_changed(&mut self) -> Option<Vec<usize>> {
        let owned = self.output.owned_partitions_changed()?;
        let n = self.input_partitions;
        Some(
            owned
                .into_iter()
                .flat_map(|r| (0..n).map(move |p| stream_of(r as i32, p as i32, n) as usize))
                .collect(),
        )
    }

    fn commit(&mut self) -> Result<()> {
        self.output.commit()
    }

    fn commit_position(&mut self, position: &Position) -> Result<()> {
        self.output.commit_position(position)
    }

    fn position_committed(&mut self) -> Result<()> {
        self.output.position_committed()
    }

    fn origin_time_ms(&self) -> Option<i64> {
        self.output.origin_time_ms()
    }

    fn position(&self) -> Option<Position> {
        self.output.position()
    }

    fn committed_position(&self) -> Result<Option<Position>> {
        self.output.committed_position()
    }

    fn seek(&mut self, position: &Position) -> Result<()> {
        self.output.seek(position)
    }
}

impl Drop for RepartitionSource {
    /// Records read but not yet delivered are not committed: the input
    /// half's group reads them again. What was delivered is committed so a
    /// clean stop repeats nothing.
    fn drop(&mut self) {
        if self.input.is_some() && self.sent_since_commit {
            if let Err(e) = self.commit_input() {
                tracing::warn!(component = "kafka", source = %self.name, "{}: {e}", self.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};

    #[test]
    fn a_batch_crosses_the_topic_unchanged() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Decimal128(18, 4), true),
            Field::new("n", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![Some("a"), None])),
                Arc::new(
                    datafusion::arrow::array::Decimal128Array::from(vec![Some(12_345), None])
                        .with_precision_and_scale(18, 4)
                        .unwrap(),
                ),
                Arc::new(Int64Array::from(vec![1, 2])),
            ],
        )
        .unwrap();
        let back = decode(&encode(&batch).unwrap()).unwrap();
        assert_eq!(back, vec![batch]);
    }

    #[test]
    fn the_topic_is_named_after_the_group_and_the_statement() {
        let defaults = KafkaDefaults::default();
        let own: BTreeMap<String, String> = [("group.id".to_string(), "desk".to_string())].into();
        assert_eq!(
            repartition_topic(&group_id(&own, "trades", &defaults), "Totals"),
            "desk-totals-repartition"
        );
        assert_eq!(
            repartition_topic(&group_id(&BTreeMap::new(), "trades", &defaults), "totals"),
            "velostream-trades-totals-repartition"
        );
    }
}
