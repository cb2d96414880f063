//! `kafka_sink`: one message per result row.
//!
//! - value: the row encoded in the sink's format (JSON by default);
//! - key: the result key (`SELECT col PRIMARY KEY`, else the GROUP BY
//!   columns) — one key column is written as its text (`AAPL`, `42`),
//!   several as a JSON object of the key columns in order
//!   (`{"symbol":"AAPL","region":"EU"}`); no key columns, no key;
//! - timestamp: the row's window end when the result has one (a window's
//!   results carry the time the window closed), else its `_event_time`
//!   when selected, else the time of sending.
//!
//! Delivery is asynchronous inside librdkafka, which retries per the
//! producer settings (`retries`, `message.timeout.ms`). A message that
//! still fails is counted and the sink returns an error at the next write
//! or flush, which stops the job: nothing is dropped silently, and since
//! source offsets are only committed after a successful flush, the records
//! behind a failed message are read again on restart.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use rdkafka::error::{KafkaError as ClientError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use velostream_engine::connector::{DeliveryMark, Position};
use velostream_engine::{EngineError, Result, Sink, Source};
use velostream_sql::plan::columns::{window_role, EVENT_TIME};

use super::delivery::{self, Deliveries, DeliveryContext, Epochs};
use super::error::KafkaError;
use super::produce_batch::{Outgoing, TopicProducer};
use crate::format::encode::{record_spans, BatchEncoder};
use crate::format::RecordFormat;

/// How long a flush waits for outstanding deliveries.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// How long transaction calls (init, commit, abort) may take.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);

pub struct KafkaSink {
    /// Exactly-once: the producer's `transactional.id`; a transaction is
    /// open between checkpoints.
    transactional_id: Option<String>,
    name: String,
    topic: String,
    /// Declared before the producer, so dropped before it: the handle
    /// refers to the producer's client.
    topic_producer: TopicProducer,
    producer: BaseProducer<DeliveryContext>,
    deliveries: Arc<Deliveries>,
    /// Which messages the marks of the job's periodic commits cover.
    epochs: Epochs,
    encoder: BatchEncoder,
    /// CSV records may span lines (a quoted line break): messages are cut
    /// at record ends, not at every line break.
    csv: bool,
    key_columns: Vec<String>,
    values: Vec<u8>,
    keys: Vec<u8>,
}

impl KafkaSink {
    pub fn open(
        name: &str,
        topic: &str,
        config: rdkafka::ClientConfig,
        format: RecordFormat,
        key_columns: Vec<String>,
        transactional_id: Option<String>,
    ) -> Result<Self> {
        let mut config = config;
        if let Some(id) = &transactional_id {
            config.set("transactional.id", id);
        }
        let deliveries = Arc::new(Deliveries::default());
        let producer: BaseProducer<DeliveryContext> = config
            .create_with_context(DeliveryContext(deliveries.clone()))
            .map_err(|source| {
                KafkaError::Client {
                    client: "producer",
                    source,
                }
                .at(name)
            })?;
        if transactional_id.is_some() {
            // fences an earlier incarnation of this job and aborts the
            // transaction it left open
            producer
                .init_transactions(TRANSACTION_TIMEOUT)
                .and_then(|()| producer.begin_transaction())
                .map_err(|e| KafkaError::request("cannot start a transaction", e).at(name))?;
        }
        let topic_producer = TopicProducer::new(&producer, topic).ok_or_else(|| {
            EngineError::connector(
                name,
                format!("cannot open the topic '{topic}' to produce to"),
            )
        })?;
        Ok(Self {
            transactional_id,
            topic_producer,
            name: name.to_string(),
            topic: topic.to_string(),
            producer,
            deliveries,
            epochs: Epochs::default(),
            encoder: BatchEncoder::new(format),
            csv: matches!(format, RecordFormat::Csv { .. }),
            key_columns,
            values: Vec::new(),
            keys: Vec::new(),
        })
    }

    /// Delivery counters (for metrics and tests).
    pub fn deliveries(&self) -> Arc<Deliveries> {
        self.deliveries.clone()
    }

    /// Fails when a message could not be delivered.
    fn check_deliveries(&self) -> Result<()> {
        if self.deliveries.failed.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        let first = self
            .deliveries
            .first_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or_default();
        Err(EngineError::connector(
            &self.name,
            format!(
                "{} message(s) could not be delivered to '{}' after retries: {first}",
                self.deliveries.failed.load(Ordering::Relaxed),
                self.topic
            ),
        ))
    }

    /// Encoded keys of every row, one per line (empty when the result has no key).
    fn encode_keys(&mut self, batch: &RecordBatch) -> Result<Vec<(usize, usize)>> {
        self.keys.clear();
        if self.key_columns.is_empty() {
            return Ok(Vec::new());
        }
        let indices = self
            .key_columns
            .iter()
            .map(|c| batch.schema().index_of(c))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        if let [single] = indices[..] {
            let text = cast(batch.column(single), &DataType::Utf8)?;
            let text = text.as_string::<i32>();
            let mut spans = Vec::with_capacity(batch.num_rows());
            for i in 0..batch.num_rows() {
                let start = self.keys.len();
                if text.is_valid(i) {
                    self.keys.extend_from_slice(text.value(i).as_bytes());
                }
                spans.push((start, self.keys.len()));
            }
            return Ok(spans);
        }
        let mut json = BatchEncoder::new(RecordFormat::JsonLines);
        json.encode(&batch.project(&indices)?, &mut self.keys)?;
        Ok(record_spans(&self.keys, false))
    }

    /// Sends the encoded rows with the time of sending, the whole batch
    /// per call ([`TopicProducer`]). When the producer's queue is full,
    /// it waits for deliveries and sends the rest: librdkafka refuses
    /// every message after the first it had no room for, so the order of
    /// the accepted ones is the rows' order.
    fn produce_batch(&mut self, values: &[(usize, usize)], keys: &[(usize, usize)]) -> Result<()> {
        let mut from = 0;
        while from < values.len() {
            let outgoing = (from..values.len()).map(|i| Outgoing {
                value: &self.values[values[i].0..values[i].1],
                key: keys.get(i).map(|&(s, e)| &self.keys[s..e]),
            });
            let refused = self.topic_producer.produce(outgoing, self.epochs.slot());
            let taken = match refused.first() {
                None => values.len() - from,
                Some(&(i, RDKafkaErrorCode::QueueFull)) => i,
                Some(&(_, e)) => return Err(self.send_failed(e)),
            };
            self.epochs.sent(taken as u64);
            from += taken;
            if from < values.len() {
                // the local queue is full: let deliveries drain it
                self.producer.poll(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// Sends the encoded rows one message per call, each with its own
    /// timestamp (a window's end or the row's event time).
    fn produce_each(
        &mut self,
        values: &[(usize, usize)],
        keys: &[(usize, usize)],
        times: &[Option<i64>],
    ) -> Result<()> {
        for (i, &(start, end)) in values.iter().enumerate() {
            let mut record: BaseRecord<'_, [u8], [u8], usize> =
                BaseRecord::with_opaque_to(&self.topic, self.epochs.slot())
                    .payload(&self.values[start..end]);
            if let Some(&(ks, ke)) = keys.get(i) {
                record = record.key(&self.keys[ks..ke]);
            }
            if let Some(t) = times[i] {
                record = record.timestamp(t);
            }
            loop {
                match self.producer.send(record) {
                    Ok(()) => {
                        self.epochs.sent(1);
                        break;
                    }
                    Err((ClientError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        // the local queue is full: let deliveries drain it
                        record = r;
                        self.producer.poll(Duration::from_millis(50));
                    }
                    Err((ClientError::MessageProduction(e), _)) => return Err(self.send_failed(e)),
                    Err((e, _)) => {
                        return Err(EngineError::connector(
                            &self.name,
                            format!("cannot send to '{}': {e}", self.topic),
                        ))
                    }
                }
            }
        }
        Ok(())
    }

    fn send_failed(&self, code: RDKafkaErrorCode) -> EngineError {
        EngineError::connector(
            &self.name,
            format!(
                "cannot send to '{}': {}",
                self.topic,
                ClientError::MessageProduction(code)
            ),
        )
    }
}

impl Sink for KafkaSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.check_deliveries()?;
        self.values.clear();
        self.encoder.encode(batch, &mut self.values)?;
        let values = record_spans(&self.values, self.csv);
        if values.len() != batch.num_rows() {
            return Err(EngineError::connector(
                &self.name,
                format!(
                    "{} rows encoded as {} records; nothing of this batch was sent",
                    batch.num_rows(),
                    values.len()
                ),
            ));
        }
        let keys = self.encode_keys(batch)?;
        match message_times(batch)? {
            None => self.produce_batch(&values, &keys)?,
            Some(times) => self.produce_each(&values, &keys, &times)?,
        }
        self.producer.poll(Duration::ZERO);
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        delivery::flush(&self.producer, FLUSH_TIMEOUT).map_err(|e| {
            EngineError::connector(&self.name, format!("flushing to '{}': {e}", self.topic))
        })?;
        self.check_deliveries()
    }

    fn mark(&mut self) -> Result<DeliveryMark> {
        self.producer.poll(Duration::ZERO);
        if let Some(mark) = self.epochs.close(&self.deliveries) {
            return Ok(DeliveryMark(mark));
        }
        // every slot holds an epoch still unacknowledged: wait for them
        self.flush()?;
        self.epochs.all_settled();
        self.epochs
            .close(&self.deliveries)
            .map(DeliveryMark)
            .ok_or_else(|| {
                EngineError::connector(&self.name, "delivery epochs unsettled after a flush")
            })
    }

    fn delivered(&mut self, mark: DeliveryMark) -> Result<bool> {
        self.producer.poll(Duration::ZERO);
        self.check_deliveries()?;
        Ok(self.epochs.settled(&self.deliveries, mark.0))
    }

    fn pre_commit(&mut self) -> Result<Option<Position>> {
        self.flush()?;
        Ok(self
            .transactional_id
            .as_ref()
            .map(|id| serde_json::json!({ "transactional_id": id })))
    }

    /// Commits the open transaction — with the Kafka source's offsets when
    /// the job reads Kafka, so output and input progress become visible
    /// together — and opens the next one.
    fn commit_checkpoint(&mut self, source: &dyn Source) -> Result<()> {
        if self.transactional_id.is_none() {
            return Ok(());
        }
        let failed = |what: &str, e: ClientError| {
            EngineError::connector(&self.name, format!("{what} the transaction: {e}"))
        };
        if let Some(kafka) = source
            .as_any()
            .and_then(|s| s.downcast_ref::<super::source::KafkaSource>())
        {
            let (offsets, group) = kafka.transaction_offsets()?;
            if offsets.count() > 0 {
                self.producer
                    .send_offsets_to_transaction(&offsets, &group, TRANSACTION_TIMEOUT)
                    .map_err(|e| failed("cannot add the consumed offsets to", e))?;
            }
        }
        self.producer
            .commit_transaction(TRANSACTION_TIMEOUT)
            .map_err(|e| failed("cannot commit", e))?;
        self.producer
            .begin_transaction()
            .map_err(|e| failed("cannot begin", e))
    }

    fn commits_source_position(&self) -> bool {
        self.transactional_id.is_some()
    }

    /// Anything written since the last checkpoint is not part of one: its
    /// transaction is aborted.
    fn close(&mut self) -> Result<()> {
        self.flush()?;
        if self.transactional_id.is_some() {
            self.producer
                .abort_transaction(TRANSACTION_TIMEOUT)
                .map_err(|e| {
                    EngineError::connector(
                        &self.name,
                        format!("cannot abort the open transaction: {e}"),
                    )
                })?;
        }
        Ok(())
    }
}

/// The message timestamp of each row: window end, else `_event_time`.
fn message_times(batch: &RecordBatch) -> Result<Option<Vec<Option<i64>>>> {
    let schema = batch.schema();
    let column = schema
        .fields()
        .iter()
        .position(|f| window_role(f) == Some("end"))
        .or_else(|| schema.index_of(EVENT_TIME).ok());
    let Some(column) = column else {
        return Ok(None);
    };
    let millis = cast(
        batch.column(column),
        &DataType::Timestamp(TimeUnit::Millisecond, None),
    )?;
    let millis = millis.as_primitive::<datafusion::arrow::datatypes::TimestampMillisecondType>();
    Ok(Some(
        (0..batch.num_rows())
            .map(|i| millis.is_valid(i).then(|| millis.value(i)))
            .collect(),
    ))
}
