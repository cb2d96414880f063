//! The [`RepartitionSource`]: both halves of a repartitioned read on the
//! job's thread (see [the module](super)).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, ArrayRef, BinaryArray, Int32Array, Int64Array, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::BaseProducer;
use velostream_engine::connector::Position;
use velostream_engine::key_hash::KeyHasher;
use velostream_engine::metrics::StatePartitionReport;
use velostream_engine::state::{
    AssignedPartition, PartitionMoves, PartitionState, StatefulOperator,
};
use velostream_engine::{EngineError, JobMetrics, Result, Source, SourceEvent};

use super::changelog::{self, Changelog, LogReader};
use super::crossing::{decode, encode, int32, stream_of, HandedOver};
use super::standby::{self, Standby, StandbySettings};
use super::{COMMIT_EVERY, DELIVERY_TIMEOUT, END_CHECK_EVERY};

use crate::kafka::admin;
use crate::kafka::delivery::{self, Deliveries, DeliveryContext};
use crate::kafka::source::KafkaSource;

/// Input batches moved into the repartition topic per poll at most.
const PUMP_BATCHES: usize = 8;

/// Whether a check last made at `last` is due again after `every`; if so,
/// notes it as made now.
fn due(last: &mut Option<Instant>, every: Duration) -> bool {
    if last.is_some_and(|t| t.elapsed() < every) {
        return false;
    }
    *last = Some(Instant::now());
    true
}

/// The two halves of a repartitioned read (see the module documentation).
pub struct RepartitionSource {
    pub(super) name: String,
    /// The columns the job reads: the source's projected columns.
    pub(super) schema: SchemaRef,
    /// Where `_partition` is in [`schema`](Self::schema), if the job reads it.
    pub(super) partition_column: Option<usize>,
    /// The columns of a record crossing the topic: the job's, then
    /// `_partition` and `_offset` unless the job reads them.
    pub(super) crossing: SchemaRef,
    pub(super) crossing_partition: usize,
    pub(super) crossing_offset: usize,
    /// What was handed to the job, to drop records written again.
    pub(super) handed_over: HandedOver,
    /// The input half, until a bounded read of it ended.
    pub(super) input: Option<KafkaSource>,
    pub(super) input_topic: String,
    pub(super) input_partitions: usize,
    pub(super) hasher: KeyHasher,
    pub(super) producer: BaseProducer<DeliveryContext>,
    pub(super) deliveries: Arc<Deliveries>,
    pub(super) topic: String,
    /// `<group.id>-<statement>`: how the changelog topics' names start.
    pub(super) state_prefix: String,
    /// The producer's settings, for creating the changelog topics.
    pub(super) producer_config: rdkafka::ClientConfig,
    /// A client of the input's group that never joins it.
    pub(super) probe: BaseConsumer,
    /// The settings of the clients reading changelogs back (outside any
    /// group, `read_committed`).
    pub(super) reader_config: rdkafka::ClientConfig,
    /// Standby copies wanted per partition (`processing.standby_replicas`).
    pub(super) standby_replicas: usize,
    /// The copies, once the changelog exists and if any are wanted.
    pub(super) standby: Option<Standby>,
    /// Where each repartition partition's state is kept (see
    /// [`changelog`]), once the job said it divides its state.
    pub(super) changelog: Option<Changelog>,
    /// The repartition partitions the job was told it owns.
    pub(super) owned: BTreeSet<i32>,
    pub(super) metrics: Arc<JobMetrics>,
    /// The output half ended while moves were still to be reported:
    /// the end comes on the next poll.
    pub(super) ended: bool,
    pub(super) sent_since_commit: bool,
    pub(super) last_commit: Instant,
    /// The output half.
    pub(super) output: KafkaSource,
    pub(super) bounded: bool,
    /// The output half was told to end at the repartition topic's end.
    pub(super) end_set: bool,
    pub(super) end_checked: Option<Instant>,
    /// The input partitions a bounded read last waited for (logged when
    /// they change).
    pub(super) waiting_for: Vec<i32>,
}

impl RepartitionSource {
    /// Moves what the input half has now into the repartition topic.
    fn pump_input(&mut self) -> Result<()> {
        // several batches while the input has them: one per poll held the
        // input to the output half's pace (a wait for its first message)
        for _ in 0..PUMP_BATCHES {
            let Some(input) = &mut self.input else {
                return Ok(());
            };
            match input.poll_now()? {
                SourceEvent::Batch(batch) => {
                    self.send(&batch)?;
                    self.sent_since_commit = true;
                }
                SourceEvent::Idle | SourceEvent::Deletes(_) | SourceEvent::Partitioned { .. } => {
                    break
                }
                SourceEvent::End => {
                    self.commit_input()?;
                    // leaving the input's group hands its partitions on at once
                    self.input = None;
                    return Ok(());
                }
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
            super::send(
                &self.producer,
                &self.name,
                &self.topic,
                partition as i32,
                None,
                &payload,
            )?;
        }
        self.producer.poll(Duration::ZERO);
        Ok(())
    }

    /// Waits for every repartitioned record to be acknowledged, then
    /// commits the input offsets of what the input half read.
    fn commit_input(&mut self) -> Result<()> {
        self.flush_deliveries()?;
        if let Some(input) = &mut self.input {
            input.commit()?;
        }
        self.sent_since_commit = false;
        self.last_commit = Instant::now();
        Ok(())
    }

    /// Waits until everything produced (repartitioned records, kept
    /// state) is acknowledged; fails if something could not be written.
    fn flush_deliveries(&mut self) -> Result<()> {
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
                    "a record could not be written to repartition topic '{}' or its changelogs: {error}",
                    self.topic
                ),
            ));
        }
        Ok(())
    }

    /// For a bounded read whose input half ended here: once the whole
    /// group's input is committed, the output half ends at the end of the
    /// repartition partitions this process owns.
    fn check_end(&mut self) -> Result<()> {
        if !self.bounded
            || self.end_set
            || self.input.is_some()
            || !due(&mut self.end_checked, END_CHECK_EVERY)
        {
            return Ok(());
        }
        let waiting =
            admin::not_committed_to_end(&self.probe, &self.input_topic, self.input_partitions);
        if waiting.is_empty() {
            tracing::info!(
                component = "kafka",
                source = %self.name,
                "{}: every input record is in '{}'; ending at the end of the partitions this process owns",
                self.name,
                self.topic
            );
            self.output
                .set_end((0..self.input_partitions as i32).collect());
            self.end_set = true;
        } else if waiting != self.waiting_for {
            tracing::info!(
                component = "kafka",
                source = %self.name,
                "{}: input read here; waiting for the group to commit partitions {waiting:?} of '{}' to their end",
                self.name,
                self.input_topic
            );
            self.waiting_for = waiting;
        }
        Ok(())
    }

    /// The job's rows from one batch of repartition messages, by
    /// repartition partition; messages of partitions the job does not own
    /// (fetched before a revocation) are left out.
    fn decode(&mut self, carried: &RecordBatch) -> Result<Vec<(usize, RecordBatch)>> {
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
        let mut parts: BTreeMap<i32, Vec<RecordBatch>> = BTreeMap::new();
        for row in 0..values.len() {
            let partition = partitions.value(row);
            if values.is_null(row) || !self.owned.contains(&partition) {
                continue;
            }
            for part in decode(values.value(row))? {
                if let Some(part) = self.as_read(part, partition)? {
                    parts.entry(partition).or_default().push(part);
                }
            }
        }
        parts
            .into_iter()
            .map(|(partition, parts)| {
                Ok((
                    partition as usize,
                    concat_batches(&self.schema, parts.iter())?,
                ))
            })
            .collect()
    }

    /// The partitions the group gave or took since the job was last told,
    /// each one given with its kept state (and what of its input was
    /// handed over) read back from the changelog.
    fn take_moves(&mut self) -> Result<PartitionMoves> {
        let now = self.output.owned_now();
        if now == self.owned {
            return Ok(PartitionMoves::default());
        }
        let revoked: Vec<i32> = self.owned.difference(&now).copied().collect();
        let assigned: Vec<i32> = now.difference(&self.owned).copied().collect();
        for &r in &revoked {
            self.handed_over.forget_partition(r);
            if let Some(changelog) = &mut self.changelog {
                changelog.forget(r);
            }
            if let Ok(mut reports) = self.metrics.state_partitions.lock() {
                reports.remove(&(r as usize));
            }
        }
        let mut moves = PartitionMoves {
            revoked: revoked.iter().map(|&r| r as usize).collect(),
            assigned: Vec::with_capacity(assigned.len()),
        };
        let mut restored_from = Vec::new();
        for &r in &assigned {
            let (state, report) = self.restore(r)?;
            if let Some(checkpoint) = report.restored_checkpoint {
                restored_from.push(format!(
                    "{r} (checkpoint {checkpoint}, {} bytes in {} ms{})",
                    report.restored_bytes,
                    report.restore_ms,
                    match report.from_standby {
                        true => ", from the standby copy",
                        false => "",
                    }
                ));
            }
            if let Ok(mut reports) = self.metrics.state_partitions.lock() {
                reports.insert(r as usize, report);
            }
            let n = self.input_partitions;
            moves.assigned.push(AssignedPartition {
                partition: r as usize,
                streams: (0..n).map(|p| stream_of(r, p as i32, n) as usize).collect(),
                state,
            });
        }
        tracing::info!(
            component = "kafka",
            source = %self.name,
            "{}: state of '{}' partitions {assigned:?} taken on (restored: {}), {revoked:?} given up",
            self.name,
            self.topic,
            match restored_from.is_empty() {
                true => "none".to_string(),
                false => restored_from.join(", "),
            }
        );
        if let Some(standby) = &self.standby {
            standby.owned(&now, standby::member_id(self.output.consumer()));
        }
        self.owned = now;
        Ok(moves)
    }

    /// Repartition partition `r`'s kept state, if the changelog has any;
    /// what of its input was handed over is set from it.
    fn restore(&mut self, r: i32) -> Result<(Option<PartitionState>, StatePartitionReport)> {
        let started = Instant::now();
        if let Ok(mut reports) = self.metrics.state_partitions.lock() {
            reports.insert(
                r as usize,
                StatePartitionReport {
                    restoring: true,
                    ..Default::default()
                },
            );
        }
        let prior = self.standby.as_ref().and_then(|s| s.take(r));
        let (restored, from_standby) = match &mut self.changelog {
            Some(changelog) => changelog.restore(r, prior)?,
            None => (None, false),
        };
        let mut report = StatePartitionReport {
            from_standby,
            ..Default::default()
        };
        let Some(restored) = restored else {
            self.handed_over.forget_partition(r);
            report.restore_ms = started.elapsed().as_millis() as u64;
            return Ok((None, report));
        };
        self.handed_over.set_partition(r, &restored.seen);
        report.restored_checkpoint = Some(restored.checkpoint);
        report.restored_bytes = restored.bytes;
        report.restored_rows = restored
            .operators
            .iter()
            .flat_map(|(_, s)| s.batches.iter())
            .map(|b| b.num_rows() as u64)
            .sum();
        report.restore_ms = started.elapsed().as_millis() as u64;
        self.metrics
            .state_restored_bytes
            .fetch_add(restored.bytes, std::sync::atomic::Ordering::Relaxed);
        Ok((
            Some(PartitionState {
                partition: r as usize,
                operators: restored.operators,
            }),
            report,
        ))
    }

    /// A new client reading changelogs back.
    fn reader(&self) -> Result<BaseConsumer> {
        self.reader_config
            .create()
            .map_err(|e| EngineError::connector(&self.name, format!("changelog reader: {e}")))
    }

    /// Starts keeping standby copies of the changelog `topics`.
    fn start_standby(&self, topics: &[(usize, String)]) -> Result<Standby> {
        Standby::start(StandbySettings {
            name: self.name.clone(),
            replicas: self.standby_replicas,
            topic: self.topic.clone(),
            partitions: self.input_partitions,
            reader: LogReader::new(&self.name, topics.to_vec(), self.reader()?),
            tail: self.reader()?,
            metrics: self.metrics.clone(),
        })
        .map_err(|e| EngineError::connector(&self.name, format!("standby thread: {e}")))
    }

    /// `batch`, read from repartition partition `partition`, as the job
    /// reads it: checked to have the crossing columns (a topic left by
    /// another version of the statement may not), without the records
    /// already handed over, its `_partition` numbering the stream it came
    /// in order on (see [`stream_of`]). `None` when nothing is left.
    fn as_read(&mut self, batch: RecordBatch, partition: i32) -> Result<Option<RecordBatch>> {
        if batch.schema().fields() != self.crossing.fields() {
            return Err(EngineError::connector(
                &self.name,
                format!(
                    "repartition topic '{}' holds records of other columns than this statement reads: it belongs to another version of the statement; delete it to start over",
                    self.topic
                ),
            ));
        }
        let inputs = int32(&batch, self.crossing_partition)
            .ok_or_else(|| EngineError::connector(&self.name, "_partition is a number"))?;
        let offsets = batch
            .column(self.crossing_offset)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| EngineError::connector(&self.name, "_offset is a number"))?;
        let fresh = self.handed_over.fresh(partition, &inputs, offsets);
        if fresh.is_empty() {
            return Ok(None);
        }
        let batch = if fresh.len() == batch.num_rows() {
            batch
        } else {
            take_record_batch(&batch, &UInt32Array::from(fresh))?
        };
        // the job's columns lead; `_partition` and `_offset` may trail
        let mut columns: Vec<ArrayRef> = batch.columns()[..self.schema.fields().len()].to_vec();
        if let Some(at) = self.partition_column {
            let streams: Int32Array = int32(&batch, at)
                .ok_or_else(|| EngineError::connector(&self.name, "_partition is a number"))?
                .iter()
                .map(|p| p.map(|p| stream_of(partition, p, self.input_partitions)))
                .collect();
            columns[at] = Arc::new(streams);
        }
        Ok(Some(RecordBatch::try_new(self.schema.clone(), columns)?))
    }
}

impl Source for RepartitionSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn poll_batch(&mut self) -> Result<SourceEvent> {
        if self.ended {
            return Ok(SourceEvent::End);
        }
        self.pump_input()?;
        self.check_end()?;
        let event = self.output.poll_batch()?;
        // rebalances happen inside the output half's poll: the job learns
        // of them before any record they concern
        let moves = self.take_moves()?;
        let batches = match event {
            SourceEvent::Batch(carried) => self.decode(&carried)?,
            SourceEvent::End => {
                self.ended = true;
                Vec::new()
            }
            // the output half ends by itself once its end is set, also
            // when the group never gives this process a partition (its
            // bounded group read ends when the group has read the topic)
            SourceEvent::Idle if moves.assigned.is_empty() && moves.revoked.is_empty() => {
                return Ok(SourceEvent::Idle);
            }
            _ => Vec::new(),
        };
        if batches.is_empty() && moves.assigned.is_empty() && moves.revoked.is_empty() {
            return Ok(match self.ended {
                true => SourceEvent::End,
                false => SourceEvent::Idle,
            });
        }
        Ok(SourceEvent::Partitioned { moves, batches })
    }

    fn is_bounded(&self) -> bool {
        self.bounded
    }

    /// Watermarks are kept per ordered stream ([`stream_of`]): the pairs
    /// of a repartition partition and an input partition.
    fn partition_count(&self) -> Option<usize> {
        Some(self.input_partitions * self.input_partitions)
    }

    /// One pipeline per owned repartition partition, its state kept in
    /// the statement's changelog topics (created here, compacted, one per
    /// stateful operator).
    fn divides_state(&mut self, operators: &[StatefulOperator]) -> Result<bool> {
        if self.changelog.is_some() {
            return Ok(true);
        }
        let mut topics = Vec::with_capacity(operators.len());
        for op in operators {
            let topic = changelog::topic_name(&self.state_prefix, op);
            super::create_topic(
                &self.name,
                &self.producer_config,
                &topic,
                self.input_partitions,
                &[("cleanup.policy", "compact")],
            )?;
            topics.push((op.index, topic));
        }
        if self.standby_replicas > 0 {
            self.standby = Some(self.start_standby(&topics)?);
        }
        let changelog = Changelog::new(LogReader::new(&self.name, topics, self.reader()?));
        tracing::info!(
            component = "kafka",
            source = %self.name,
            "{}: state kept per partition of '{}' in {:?}",
            self.name,
            self.topic,
            changelog.topics().collect::<Vec<_>>()
        );
        self.changelog = Some(changelog);
        self.output.forget_revoked_partitions();
        Ok(true)
    }

    /// Writes each owned partition's state to the changelog and waits for
    /// it to be acknowledged. A partition the group took away since the
    /// job was told is skipped: its next owner may be reading it back.
    fn keep_state(&mut self, states: &[PartitionState]) -> Result<()> {
        let Some(changelog) = &mut self.changelog else {
            return Err(EngineError::State(format!(
                "{}: no changelog to keep state in",
                self.name
            )));
        };
        let owned = self.output.owned_now();
        let mut records = Vec::new();
        for state in states {
            let r = state.partition as i32;
            if !owned.contains(&r) {
                continue;
            }
            let seen = self.handed_over.of_partition(r);
            records.extend(changelog.records(r, &state.operators, &seen)?);
        }
        for record in &records {
            record.send(&self.producer, &self.name)?;
        }
        self.producer.poll(Duration::ZERO);
        self.flush_deliveries()
    }

    fn commit(&mut self) -> Result<()> {
        self.output.commit()
    }

    fn commit_position(&mut self, position: &Position) -> Result<()> {
        match position.get("read") {
            Some(read) => self.output.commit_position(read),
            None => self.output.commit_position(position),
        }
    }

    fn position_committed(&mut self) -> Result<()> {
        self.output.position_committed()
    }

    fn origin_time_ms(&self) -> Option<i64> {
        self.output.origin_time_ms()
    }

    /// The output half's position, with the last input offset handed
    /// over per stream, so a restored job drops the same records again.
    fn position(&self) -> Option<Position> {
        let read = self.output.position()?;
        Some(serde_json::json!({ "read": read, "seen": self.handed_over.to_position() }))
    }

    fn committed_position(&self) -> Result<Option<Position>> {
        self.output.committed_position()
    }

    /// Nothing to do: each repartition partition's position and state
    /// come with its assignment, from its changelog and the group's
    /// committed offset, whichever process had it before.
    fn seek(&mut self, _position: &Position) -> Result<()> {
        Ok(())
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
