//! `kafka_source`: a consumer-group member reading a topic in batches.
//!
//! Messages are taken from librdkafka's queue synchronously (no await per
//! message) until a batch is full or the queue is empty; their payloads are
//! framed one per line and decoded together by the shared record decoder,
//! and the system columns are appended. Offsets are committed only through
//! [`Source::commit`], which the job calls after the results of every
//! record returned so far have been flushed to the sinks (and, when the
//! job checkpoints, once a checkpoint holding them is durable) — a record
//! is never marked consumed before its results are out. Partitions revoked
//! in a rebalance are set aside, so their progress is never committed over
//! the new owner's, and resume where they were if they come back; a job
//! restoring a checkpoint starts each partition at the checkpoint's offset
//! (see `group.rs`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError as ClientError;
use rdkafka::{Offset, TopicPartitionList};
use velostream_engine::connector::Position;
use velostream_engine::{EngineError, JobMetrics, Result, Source, SourceEvent};

use super::columns::{bytes_column, tombstone, MessageColumns};
use super::error::KafkaError;
use super::group::{Assignment, GroupContext, Progress};
use super::message_queue::{MessageBatch, MessageQueue, RoutedQueue};

mod read;
use super::{admin, KafkaFormat};
use crate::format::decode::{BatchDecoder, Origin};

/// How the source reads its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// As a member of its consumer group, committing offsets.
    Group,
    /// Every partition from its start, outside any group, as a table that
    /// keeps changing: tombstones (messages without a value) delete their key.
    Table,
}

/// Everything a Kafka source is made of.
pub struct SourceSpec {
    pub name: String,
    pub topic: String,
    pub config: rdkafka::ClientConfig,
    pub format: KafkaFormat,
    /// For json and csv payloads.
    pub decoder: Option<BatchDecoder>,
    /// The projected schema (payload and system columns).
    pub schema: SchemaRef,
    pub batch_size: usize,
    /// The column filled from the message key (`key.field`).
    pub key_field: Option<String>,
    pub mode: ReadMode,
    /// How long a poll waits for the first message of a batch.
    pub batch_timeout: Duration,
}

pub struct KafkaSource {
    name: String,
    topic: String,
    /// Shared only so that a message borrowed from it can be read into
    /// the source's own fields.
    consumer: Arc<BaseConsumer<GroupContext>>,
    format: KafkaFormat,
    decoder: Option<BatchDecoder>,
    schema: SchemaRef,
    batch_size: usize,
    metrics: Arc<JobMetrics>,
    progress: Progress,
    /// Payloads of the batch being read, one per line.
    chunk: Vec<u8>,
    /// Raw payloads (for the `string` and `bytes` formats).
    raw: Vec<Option<Vec<u8>>>,
    /// The projected `value` column of the `string` and `bytes` formats.
    raw_schema: SchemaRef,
    columns: MessageColumns,
    pending: VecDeque<RecordBatch>,
    /// Partitions of the topic (from its metadata at start).
    partition_count: Option<usize>,
    key_field: Option<String>,
    mode: ReadMode,
    batch_timeout: Duration,
    /// A tombstone read after the rows of the current batch: its key is
    /// deleted once those rows are out.
    held_tombstone: Option<Vec<u8>>,
    /// For a bounded read (`ends`) or a table's first load: the partitions
    /// to read to their end, and those at their end now.
    end: Option<(BTreeSet<i32>, BTreeSet<i32>)>,
    /// The source ends when every partition is at its end.
    ends: bool,
    /// When a bounded read last asked the broker where its idle
    /// partitions end (see [`KafkaSource::check_idle_ends`]).
    ends_checked: Option<Instant>,
    /// When a bounded read last confirmed the ends of partitions it read
    /// nothing from (see [`KafkaSource::confirm_unread_ends`]).
    ends_confirmed: Option<Instant>,
    /// When a bounded read by a member owning nothing last asked whether
    /// the group has read the whole topic.
    group_checked: Option<Instant>,
    /// Since when this group member has owned no partition.
    unowned_since: Option<Instant>,
    /// The partition and next offset of a tombstone just read (a table's
    /// delete), noted as read once the batch's rows are.
    tombstone_at: Option<(i32, i64)>,
    /// The oldest message time of the batch being read.
    oldest_ms: Option<i64>,
    /// A table still loading: no `Idle` before every partition reached its
    /// end (the stream meets the whole table), until this deadline.
    loading_until: Option<Instant>,
    /// The source's own queue, which assigned partitions' messages are
    /// routed to and read from a batch at a time (`message_queue.rs`);
    /// `None` if librdkafka could not create one (then every message
    /// comes through the consumer's queue).
    queue: Option<Arc<MessageQueue>>,
    routed: RoutedQueue,
    /// Messages taken from `queue` and not yet read, from `next_taken`
    /// on. A read takes at most what its batch has room for and reads it
    /// all, except that a table's tombstone ends a batch early (tables are
    /// read outside any group, so no rebalance comes before the rest is
    /// read), or the read of a bounded source reaching its end.
    taken: MessageBatch,
    next_taken: usize,
    /// When the assigned partitions were last routed again (a partition
    /// given back while its earlier fetch was still stopping).
    routes_checked: Instant,
    /// The partitions this group member owns (`ReadMode::Group`).
    assignment: Arc<Mutex<Assignment>>,
    /// The assignment generation the windows were last told of.
    declared_generation: u64,
}

impl Drop for KafkaSource {
    /// The taken messages and the queue refer to the client: they go
    /// before the consumer does (fields drop after this).
    fn drop(&mut self) {
        self.taken.clear();
        self.routed.close();
        self.queue = None;
    }
}

/// How long a group member of a bounded read must have owned nothing
/// before it ends because the group read the whole topic (see
/// `group_read_to_end`).
const UNASSIGNED_GRACE: Duration = Duration::from_secs(10);

impl KafkaSource {
    /// Creates the consumer: a group member subscribed to the topic, or a
    /// reader of every partition from its start (a table).
    pub fn open(spec: SourceSpec, metrics: Arc<JobMetrics>) -> Result<Self> {
        let SourceSpec {
            name,
            topic,
            config,
            format,
            decoder,
            schema,
            batch_size,
            key_field,
            mode,
            batch_timeout,
        } = spec;
        let progress: Progress = Arc::default();
        let routed = RoutedQueue::default();
        let assignment = Arc::<Mutex<Assignment>>::default();
        let consumer: BaseConsumer<GroupContext> = config
            .create_with_context(GroupContext {
                progress: progress.clone(),
                metrics: metrics.clone(),
                start_at: Progress::default(),
                held: Progress::default(),
                routed: routed.clone(),
                assignment: assignment.clone(),
                topic: topic.clone(),
                forget_revoked: Default::default(),
            })
            .map_err(|source| {
                KafkaError::Client {
                    client: "consumer",
                    source,
                }
                .at(&name)
            })?;
        // partitions are routed to the queue as they are assigned, so it
        // must exist before the consumer joins its group
        let queue = MessageQueue::new(&consumer).map(Arc::new);
        if let Some(queue) = &queue {
            routed.set(queue.clone());
        }
        match mode {
            ReadMode::Group => consumer.subscribe(&[&topic]).map_err(|e| {
                KafkaError::request(format!("cannot subscribe to '{topic}'"), e).at(&name)
            })?,
            ReadMode::Table => {
                let timeout = Duration::from_secs(10);
                let partitions =
                    admin::partitions(&consumer, &topic, timeout).map_err(|e| e.at(&name))?;
                routed.route(&consumer, &topic, partitions);
                admin::assign_from_start(&consumer, &topic, timeout).map_err(|e| e.at(&name))?;
            }
        }
        let raw_schema = Arc::new(datafusion::arrow::datatypes::Schema::new(
            schema
                .fields()
                .iter()
                .filter(|f| f.name() == "value")
                .cloned()
                .collect::<Vec<_>>(),
        ));
        Ok(Self {
            columns: MessageColumns::for_schema(&schema, key_field.as_deref()),
            name,
            topic,
            consumer: Arc::new(consumer),
            format,
            decoder,
            schema,
            batch_size,
            metrics,
            progress,
            chunk: Vec::new(),
            raw: Vec::new(),
            raw_schema,
            pending: VecDeque::new(),
            end: None,
            ends: false,
            ends_checked: None,
            ends_confirmed: None,
            group_checked: None,
            unowned_since: None,
            tombstone_at: None,
            loading_until: None,
            partition_count: None,
            key_field,
            mode,
            batch_timeout,
            held_tombstone: None,
            oldest_ms: None,
            queue,
            routed,
            taken: MessageBatch::default(),
            next_taken: 0,
            routes_checked: Instant::now(),
            assignment,
            declared_generation: 0,
        })
    }

    /// The offsets of the records handed out so far and the consumer's
    /// group metadata: what a transactional producer commits with its
    /// output (`send_offsets_to_transaction`).
    pub fn transaction_offsets(
        &self,
    ) -> Result<(TopicPartitionList, rdkafka::consumer::ConsumerGroupMetadata)> {
        let metadata = self.consumer.group_metadata().ok_or_else(|| {
            EngineError::connector(&self.name, "the consumer has no group metadata")
        })?;
        let mut offsets = TopicPartitionList::new();
        for (&partition, &next) in self.progress.lock().map_err(|_| poisoned())?.iter() {
            offsets
                .add_partition_offset(&self.topic, partition, Offset::Offset(next))
                .map_err(|e| EngineError::connector(&self.name, e))?;
        }
        Ok((offsets, metadata))
    }

    pub fn consumer(&self) -> &BaseConsumer<GroupContext> {
        &self.consumer
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partitions this group member owns now (a revoked one leaves
    /// at once, before the rebalance settles).
    pub fn owned_now(&self) -> BTreeSet<i32> {
        self.assignment
            .lock()
            .map(|a| a.current().clone())
            .unwrap_or_default()
    }

    /// The job's state moves with this source's partitions: a partition
    /// taken away and given back starts at the group's committed offset,
    /// not where this member had read to (see `GroupContext::forget_revoked`).
    pub fn forget_revoked_partitions(&self) {
        self.consumer
            .context()
            .forget_revoked
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The topic has `count` partitions.
    pub fn set_partition_count(&mut self, count: usize) {
        self.partition_count = Some(count);
    }

    /// Ends the source once each of `partitions` has been read to its end.
    pub fn set_end(&mut self, partitions: BTreeSet<i32>) {
        self.end = Some((partitions, BTreeSet::new()));
        self.ends = true;
    }

    /// Makes the first reads of a table return only once every partition
    /// has been read to its end, failing after `timeout`.
    pub fn load_first(&mut self, partitions: BTreeSet<i32>, timeout: Duration) {
        self.end = Some((partitions, BTreeSet::new()));
        self.loading_until = Some(Instant::now() + timeout);
    }

    /// For a bounded read with nothing arriving: marks as at its end each
    /// partition whose next offset has reached the broker's high
    /// watermark, at most once a second. End-of-partition events alone do
    /// not suffice: a job restored at the end of a partition may never get
    /// one. The broker is asked only while the partitions are idle, so a
    /// watermark reported low for records still arriving cannot end the
    /// read early.
    fn check_idle_ends(&mut self) -> Result<()> {
        if self
            .ends_checked
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return Ok(());
        }
        self.ends_checked = Some(Instant::now());
        let (Some((_, at_end)), Some(scope)) = (&self.end, self.end_scope()) else {
            return Ok(());
        };
        let pending: Vec<i32> = scope.difference(at_end).copied().collect();
        let progress = self.progress.lock().map_err(|_| poisoned())?.clone();
        let positions = if pending.iter().any(|p| !progress.contains_key(p)) {
            self.consumer.position().ok()
        } else {
            None
        };
        let mut reached = Vec::new();
        for partition in pending {
            let (low, high) =
                match self
                    .consumer
                    .fetch_watermarks(&self.topic, partition, Duration::from_secs(5))
                {
                    Ok(marks) => marks,
                    Err(e) => {
                        tracing::debug!(
                            component = "kafka",
                            "{}: watermarks of partition {partition}: {e}",
                            self.name
                        );
                        continue;
                    }
                };
            // a partition this member has read nothing from may have been
            // read to its end by its previous owner
            let done = match progress
                .get(&partition)
                .copied()
                .or_else(|| self.read_from(positions.as_ref(), partition))
            {
                Some(next) => next >= high,
                None => high <= low, // nothing to read in it
            };
            if done {
                reached.push(partition);
            }
        }
        if let Some((_, at_end)) = &mut self.end {
            at_end.extend(reached);
        }
        Ok(())
    }

    /// Before a bounded read that read nothing at all ends: each partition
    /// must be empty from where this member reads it, by the broker's
    /// watermarks and librdkafka's position (else the group's committed
    /// offset). Otherwise an early end-of-partition event would end a
    /// backfill with nothing read: seen once, right after a group join, and
    /// not reproduced since; the partition is read on, with a warning.
    /// Asked of the broker at most once a second (until then the read does
    /// not end). A read that has records trusts the end events, as before:
    /// the watermark queries take the broker a while.
    fn confirm_unread_ends(&mut self) -> Result<bool> {
        if !self.progress.lock().map_err(|_| poisoned())?.is_empty() {
            return Ok(true);
        }
        let unread: Vec<i32> = match &self.end {
            Some((_, at_end)) => at_end.iter().copied().collect(),
            None => return Ok(true),
        };
        if unread.is_empty() {
            return Ok(true);
        }
        if self
            .ends_confirmed
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return Ok(false);
        }
        self.ends_confirmed = Some(Instant::now());
        let positions = self.consumer.position().ok();
        let mut reopened = Vec::new();
        for partition in unread {
            let Ok((low, high)) =
                self.consumer
                    .fetch_watermarks(&self.topic, partition, Duration::from_secs(5))
            else {
                reopened.push(partition); // unconfirmed: not ended yet
                continue;
            };
            let position = self.read_from(positions.as_ref(), partition);
            if high <= low || position.is_some_and(|at| at >= high) {
                continue;
            }
            tracing::warn!(
                component = "kafka",
                source = %self.name,
                "{}: partition {partition} reported its end at offset {} with nothing read, but the broker holds offsets {low}..{high}; reading on",
                self.name,
                position.map_or("unknown".to_string(), |p| p.to_string())
            );
            reopened.push(partition);
        }
        if let Some((_, at_end)) = &mut self.end {
            for partition in &reopened {
                at_end.remove(partition);
            }
        }
        Ok(reopened.is_empty())
    }

    /// Where this member reads `partition` from: librdkafka's position
    /// (from `positions`), else the group's committed offset.
    fn read_from(&self, positions: Option<&TopicPartitionList>, partition: i32) -> Option<i64> {
        positions
            .and_then(|l| l.find_partition(&self.topic, partition))
            .and_then(|e| match e.offset() {
                Offset::Offset(at) => Some(at),
                _ => None,
            })
            .or_else(|| self.committed_offset(partition))
    }

    /// The group's committed offset of `partition`, if it has one.
    fn committed_offset(&self, partition: i32) -> Option<i64> {
        let mut wanted = TopicPartitionList::new();
        wanted.add_partition(&self.topic, partition);
        admin::committed_offsets(&self.consumer, wanted, Duration::from_secs(5))
            .ok()?
            .into_iter()
            .find(|(_, p, _)| *p == partition)
            .map(|(_, _, offset)| offset)
    }

    /// The partitions a bounded read or a table load must read to their
    /// end: in a group, those this member owns now (`None` while a
    /// rebalance is under way), else every partition of the topic.
    fn end_scope(&self) -> Option<BTreeSet<i32>> {
        let (all, _) = self.end.as_ref()?;
        if self.mode != ReadMode::Group {
            return Some(all.clone());
        }
        self.assignment.lock().ok()?.owned().cloned()
    }

    /// For a bounded read in a group by a member that has owned no
    /// partition for [`UNASSIGNED_GRACE`]: true once the group has
    /// committed every partition of the topic to its end. Every record was
    /// then read and answered by some member, so this one has nothing left
    /// even if the group never gives it a partition (seen on a loaded
    /// machine: a member that joined last got no assignment, and waited for
    /// one, after the others had read everything). The grace lets a member
    /// that is joining get its partitions and end as usual: closing a
    /// consumer in the middle of its join has hung librdkafka's close.
    /// Asked at most once a second.
    fn group_read_to_end(&mut self) -> bool {
        if self.mode != ReadMode::Group {
            return false;
        }
        let owns = self
            .assignment
            .lock()
            .map(|a| !a.current().is_empty())
            .unwrap_or(true);
        if owns {
            self.unowned_since = None;
            return false;
        }
        let since = *self.unowned_since.get_or_insert_with(Instant::now);
        if since.elapsed() < UNASSIGNED_GRACE
            || self
                .group_checked
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return false;
        }
        self.group_checked = Some(Instant::now());
        let Some(partitions) = self.partition_count else {
            return false;
        };
        admin::not_committed_to_end(&self.consumer, &self.topic, partitions).is_empty()
    }

    /// Takes in what rebalances changed: a partition assigned again must
    /// be read to its end again (records may have come meanwhile).
    fn follow_assignment(&mut self) {
        let Ok(mut assignment) = self.assignment.lock() else {
            return;
        };
        let fresh = assignment.take_fresh();
        if let Some((_, at_end)) = &mut self.end {
            at_end.retain(|p| !fresh.contains(p));
        }
    }

    /// True when every partition in [`end_scope`](Self::end_scope) has
    /// been read to its end.
    fn reached_end(&self) -> bool {
        match (&self.end, self.end_scope()) {
            (Some((_, at_end)), Some(scope)) => scope.is_subset(at_end),
            _ => false,
        }
    }

    /// The payload columns of the messages just read, and which messages they are.
    fn decode(&mut self) -> Result<Option<(RecordBatch, Option<Vec<u32>>)>> {
        match self.format {
            KafkaFormat::String | KafkaFormat::Bytes => {
                let values: ArrayRef = match self.format {
                    KafkaFormat::String => Arc::new(
                        self.raw
                            .iter()
                            .map(|v| v.as_ref().map(|v| String::from_utf8_lossy(v)))
                            .collect::<StringArray>(),
                    ),
                    _ => bytes_column(&self.raw),
                };
                let columns = match self.raw_schema.index_of("value") {
                    Ok(_) => vec![values],
                    Err(_) => vec![],
                };
                let batch = RecordBatch::try_new_with_options(
                    self.raw_schema.clone(),
                    columns,
                    &datafusion::arrow::array::RecordBatchOptions::new()
                        .with_row_count(Some(self.raw.len())),
                )?;
                Ok(Some((batch, None)))
            }
            KafkaFormat::Json | KafkaFormat::Csv(_) => {
                let decoder = self.decoder.as_mut().expect("text formats have a decoder");
                let origin = Origin::Messages {
                    topic: &self.topic,
                    partitions: &self.columns.partitions,
                    offsets: &self.columns.offsets,
                };
                let mut out = VecDeque::new();
                decoder
                    .decode_next(&self.chunk, origin, &mut &*self.metrics, &mut out)
                    .map_err(|e| EngineError::connector(&self.name, e))?;
                let kept = decoder.kept().map(<[u32]>::to_vec);
                let batch = concat_batches(&decoder.schema(), out.iter())?;
                Ok(Some((batch, kept)))
            }
        }
    }
}

impl KafkaSource {
    /// A table's tombstone as a delete of its key.
    fn tombstone(&mut self, key: &[u8]) -> Result<SourceEvent> {
        let Some(field) = &self.key_field else {
            self.metrics.bad_record(
                &self.topic,
                "a tombstone (no value) cannot delete anything without 'key.field' naming the key column",
            );
            return Ok(SourceEvent::Idle);
        };
        Ok(SourceEvent::Deletes(tombstone(&self.schema, field, key)?))
    }
}

impl Source for KafkaSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn poll_batch(&mut self) -> Result<SourceEvent> {
        if let Some(batch) = self.pending.pop_front() {
            return Ok(SourceEvent::Batch(batch));
        }
        if self.ends && self.reached_end() && self.confirm_unread_ends()? {
            return Ok(SourceEvent::End);
        }
        // a tombstone that ended the previous batch goes after its rows
        if let Some(key) = self.held_tombstone.take() {
            return self.tombstone(&key);
        }
        self.read_messages()?;
        // rebalances are served inside that read, and only there
        self.follow_assignment();
        if self.ends && self.columns.is_empty() && self.held_tombstone.is_none() {
            self.check_idle_ends()?;
            if self.reached_end() && self.confirm_unread_ends()? {
                return Ok(SourceEvent::End);
            }
            if self.group_read_to_end() {
                tracing::info!(
                    component = "kafka",
                    source = %self.name,
                    "{}: the group has read '{}' to its end and this member owns none of it; nothing left here",
                    self.name,
                    self.topic
                );
                return Ok(SourceEvent::End);
            }
        }
        while self.columns.is_empty() && self.held_tombstone.is_none() {
            match self.loading_until {
                Some(_) if self.reached_end() => self.loading_until = None,
                Some(deadline) if Instant::now() > deadline => {
                    return Err(EngineError::connector(
                        &self.name,
                        format!(
                            "table '{}' did not load within the table load timeout",
                            self.topic
                        ),
                    ))
                }
                Some(_) => {
                    self.read_messages()?;
                    // a broker that never reports a partition's end (seen
                    // with a Kafka-compatible one) ends the load too: the
                    // watermarks say where the end is
                    if self.columns.is_empty() && self.held_tombstone.is_none() {
                        self.check_idle_ends()?;
                    }
                    continue;
                }
                None => {}
            }
            return Ok(SourceEvent::Idle);
        }
        if self.columns.is_empty() {
            return Ok(SourceEvent::Idle);
        }
        let Some((decoded, kept)) = self.decode()? else {
            return Ok(SourceEvent::Idle);
        };
        let batch = self
            .columns
            .complete(&decoded, kept.as_deref(), &self.topic, &self.schema)?;
        if batch.num_rows() == 0 {
            return Ok(SourceEvent::Idle);
        }
        Ok(SourceEvent::Batch(batch))
    }

    fn is_bounded(&self) -> bool {
        self.ends
    }

    fn origin_time_ms(&self) -> Option<i64> {
        self.oldest_ms
    }

    fn partition_count(&self) -> Option<usize> {
        self.partition_count
    }

    /// A group member's partitions, after each rebalance that settled.
    fn owned_partitions_changed(&mut self) -> Option<Vec<usize>> {
        if self.mode != ReadMode::Group {
            return None;
        }
        let assignment = self.assignment.lock().ok()?;
        if assignment.generation() == self.declared_generation {
            return None;
        }
        let owned = assignment.owned()?.iter().map(|&p| p as usize).collect();
        self.declared_generation = assignment.generation();
        Some(owned)
    }

    /// The next offset of each partition this member has read from:
    /// `{"topic": …, "partitions": {"0": 1200, …}}`.
    fn position(&self) -> Option<Position> {
        if self.mode == ReadMode::Table {
            return None; // a table is read whole on every start
        }
        let progress = self.progress.lock().ok()?;
        let partitions: serde_json::Map<String, Position> = progress
            .iter()
            .map(|(p, o)| (p.to_string(), Position::from(*o)))
            .collect();
        Some(serde_json::json!({ "topic": self.topic, "partitions": partitions }))
    }

    /// The group's committed offsets on the topic, in the form of
    /// [`position`](Source::position).
    fn committed_position(&self) -> Result<Option<Position>> {
        if self.mode == ReadMode::Table {
            return Ok(None);
        }
        let timeout = Duration::from_secs(10);
        let partitions = admin::partitions(&self.consumer, &self.topic, timeout)
            .map_err(|e| e.at(&self.name))?;
        let mut wanted = TopicPartitionList::new();
        for p in partitions {
            wanted.add_partition(&self.topic, p);
        }
        let partitions: serde_json::Map<String, Position> =
            admin::committed_offsets(&self.consumer, wanted, timeout)
                .map_err(|e| {
                    KafkaError::request("cannot read committed offsets", e).at(&self.name)
                })?
                .into_iter()
                .map(|(_, partition, offset)| (partition.to_string(), Position::from(offset)))
                .collect();
        Ok(Some(
            serde_json::json!({ "topic": self.topic, "partitions": partitions }),
        ))
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    /// Starts each partition at the checkpoint's offset when the group
    /// assigns it (partitions the checkpoint does not know start at the
    /// group's committed offset).
    fn seek(&mut self, position: &Position) -> Result<()> {
        let unusable =
            || EngineError::State(format!("{}: unusable Kafka position {position}", self.name));
        if position.get("topic").and_then(|t| t.as_str()) != Some(self.topic.as_str()) {
            return Err(EngineError::State(format!(
                "{}: the checkpoint was taken reading topic {}, the job now reads '{}'",
                self.name,
                position.get("topic").unwrap_or(&Position::Null),
                self.topic
            )));
        }
        let partitions = position
            .get("partitions")
            .and_then(|p| p.as_object())
            .ok_or_else(unusable)?;
        let mut offsets = BTreeMap::new();
        for (partition, offset) in partitions {
            let partition: i32 = partition.parse().map_err(|_| unusable())?;
            offsets.insert(partition, offset.as_i64().ok_or_else(unusable)?);
        }
        self.progress
            .lock()
            .map_err(|_| poisoned())?
            .extend(offsets.clone());
        *self
            .consumer
            .context()
            .start_at
            .lock()
            .map_err(|_| poisoned())? = offsets;
        Ok(())
    }

    /// The group now holds checkpoint-consistent offsets: partitions
    /// assigned from here on start at them, not at the restored checkpoint.
    fn position_committed(&mut self) -> Result<()> {
        self.consumer
            .context()
            .start_at
            .lock()
            .map_err(|_| poisoned())?
            .clear();
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        if self.mode == ReadMode::Table {
            return Ok(()); // a table is read whole on every start
        }
        let progress = self.progress.lock().map_err(|_| poisoned())?.clone();
        self.commit_offsets(progress, CommitMode::Sync)
    }

    /// Commits the offsets of an earlier [`position`](Source::position),
    /// without waiting for the broker: this is the job's periodic commit,
    /// and a synchronous round trip on the job's thread holds up every
    /// record behind it (a commit that fails is logged, and the next
    /// periodic or final commit covers its offsets).
    fn commit_position(&mut self, position: &Position) -> Result<()> {
        if self.mode == ReadMode::Table {
            return Ok(());
        }
        let offsets = position
            .get("partitions")
            .and_then(Position::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(p, o)| Some((p.parse::<i32>().ok()?, o.as_i64()?)))
            .collect();
        self.commit_offsets(offsets, CommitMode::Async)
    }
}

impl KafkaSource {
    /// Commits `progress` (partition → next offset) for the group; a
    /// synchronous commit that succeeds also ends the restored
    /// checkpoint's say over where partitions start.
    fn commit_offsets(&mut self, progress: BTreeMap<i32, i64>, mode: CommitMode) -> Result<()> {
        if progress.is_empty() {
            return Ok(());
        }
        let mut offsets = TopicPartitionList::new();
        for (partition, next) in progress {
            offsets
                .add_partition_offset(&self.topic, partition, Offset::Offset(next))
                .map_err(|e| EngineError::connector(&self.name, e))?;
        }
        match self.consumer.commit(&offsets, mode) {
            Ok(()) if matches!(mode, CommitMode::Sync) => self.position_committed(),
            Ok(()) => Ok(()),
            // a rebalance took the partitions away: their new owner goes on
            Err(ClientError::ConsumerCommit(code))
                if matches!(
                    code,
                    rdkafka::types::RDKafkaErrorCode::RebalanceInProgress
                        | rdkafka::types::RDKafkaErrorCode::IllegalGeneration
                        | rdkafka::types::RDKafkaErrorCode::UnknownMemberId
                ) =>
            {
                tracing::warn!(
                    component = "kafka",
                    error_type = "commit",
                    "{}: offsets not committed ({code}); the partitions moved to another member",
                    self.name
                );
                Ok(())
            }
            Err(e) => Err(EngineError::connector(
                &self.name,
                format!("cannot commit offsets: {e}"),
            )),
        }
    }
}

fn poisoned() -> EngineError {
    EngineError::connector("kafka", "offset progress lock poisoned")
}

/// The type the `_timestamp` column has.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Millisecond, None)
}
