//! The interfaces between the engine and connectors: a [`Source`] yields
//! record batches, a [`Sink`] consumes them.

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::metrics::JobMetrics;
use crate::state::{PartitionMoves, PartitionState, StatefulOperator};

/// What a source has for the job right now.
#[derive(Debug)]
pub enum SourceEvent {
    /// Decoded records (schema = the source's projected schema).
    Batch(RecordBatch),
    /// Keys removed from a table (a compacted topic's tombstones): rows in
    /// the source's schema whose key columns are set. Only table sources
    /// produce them; a stream reader skips them.
    Deletes(RecordBatch),
    /// Nothing available yet; poll again.
    Idle,
    /// A bounded source is exhausted.
    End,
    /// From a source that [divides state](Source::divides_state): the
    /// partitions of state that moved to or from this process, then
    /// decoded records by their partition of state. Moves and records come
    /// together, so no checkpoint falls between a partition's assignment
    /// and its first records.
    Partitioned {
        moves: PartitionMoves,
        batches: Vec<(usize, RecordBatch)>,
    },
}

/// The error for a [`SourceEvent::Partitioned`] read where only whole
/// batches can be used: a repartitioned read feeds only its statement's
/// pipeline, never a join's table or other stream.
pub fn unexpected_partitioned(reader: &str) -> crate::EngineError {
    crate::EngineError::Plan(format!(
        "{reader} read records divided into partitions of state; only a statement's own stream can be a repartitioned read"
    ))
}

/// A producer of record batches. Malformed input is reported to the job's
/// metrics and skipped by the source itself; an `Err` stops the job.
pub trait Source: Send {
    /// The schema of the batches this source yields.
    fn schema(&self) -> SchemaRef;
    /// The next batch, blocking at most briefly.
    fn poll_batch(&mut self) -> Result<SourceEvent>;
    /// The next batch if one is ready now, without waiting (for readers
    /// that must not stall, such as a join applying a changing table's updates).
    fn poll_now(&mut self) -> Result<SourceEvent> {
        self.poll_batch()
    }
    /// True when the source ends by itself (files, stdin), so blocking
    /// operators such as ORDER BY can run on it.
    fn is_bounded(&self) -> bool;
    /// How many partitions the source reads (numbered in its `_partition`
    /// column), when it knows; windows wait for each one's first record.
    fn partition_count(&self) -> Option<usize> {
        None
    }
    /// The partitions this reader owns, when that changed since it was
    /// last asked: a consumer group's member owns some of the topic's
    /// partitions, and windows then wait only for those.
    fn owned_partitions_changed(&mut self) -> Option<Vec<usize>> {
        None
    }
    /// The results of every record returned so far have been flushed to
    /// the sinks: the source may record them as consumed (Kafka commits
    /// its offsets). Never called before that point.
    fn commit(&mut self) -> Result<()> {
        Ok(())
    }
    /// Like [`commit`](Self::commit), for the records up to `position` (an
    /// earlier [`position`](Self::position)) only: the results of those
    /// have been delivered, those of later records may not be yet. A
    /// source that commits implements both.
    fn commit_position(&mut self, _position: &Position) -> Result<()> {
        Ok(())
    }
    /// A sink committed the position of every record returned so far
    /// together with its output (a Kafka transaction's offsets), in place
    /// of [`commit`](Self::commit): the source must not commit it again,
    /// only note that the external system now holds it.
    fn position_committed(&mut self) -> Result<()> {
        Ok(())
    }
    /// The oldest source timestamp (ms since the Unix epoch) among the
    /// records of the batch last returned, when the source has one (a
    /// Kafka message's time): where end-to-end latency starts.
    fn origin_time_ms(&self) -> Option<i64> {
        None
    }
    /// Where the source stands after the records returned so far, for a
    /// checkpoint (Kafka: the next offset per partition; a file: the byte
    /// offset of its next record). `None`: the source cannot be replayed
    /// (stdin, another statement's output), so it cannot be checkpointed.
    fn position(&self) -> Option<Position> {
        None
    }
    /// The position the external system holds as committed for this
    /// source (Kafka: the group's committed offsets), for a transactional
    /// sink to tell which checkpoint its last committed transaction
    /// matches. `None` when the source has no such notion.
    fn committed_position(&self) -> Result<Option<Position>> {
        Ok(None)
    }
    /// The concrete source, for a sink that commits the source's progress
    /// together with its output (a Kafka transaction).
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
    /// Whether the source divides the job's state into partitions that
    /// move between the processes sharing its input (a repartitioned
    /// read), given the job's stateful operators. If it does, the job
    /// keeps one pipeline per partition it owns: the source returns
    /// [`SourceEvent::Partitioned`] and keeps the partitions' state at
    /// checkpoints ([`keep_state`](Self::keep_state)).
    fn divides_state(&mut self, _operators: &[StatefulOperator]) -> Result<bool> {
        Ok(false)
    }
    /// Keeps the state of the partitions this process owns, taken at a
    /// checkpoint of everything returned so far, where the partition's
    /// next owner restores it. Done before the source commits.
    fn keep_state(&mut self, _states: &[PartitionState]) -> Result<()> {
        Err(crate::EngineError::NotSupported(
            "this source does not keep partitioned state".into(),
        ))
    }
    /// Continues from a position [`position`](Self::position) returned
    /// earlier; called before the first poll of a recovering job.
    fn seek(&mut self, _position: &Position) -> Result<()> {
        Err(crate::EngineError::NotSupported(
            "this source cannot resume from a checkpoint".into(),
        ))
    }
}

/// A source's or sink's part of a checkpoint, in the connector's own
/// terms (kept readable in the checkpoint manifest).
pub type Position = serde_json::Value;

/// A point in a sink's output ([`Sink::mark`]); what it counts is the sink's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryMark(pub u64);

/// A consumer of result batches.
pub trait Sink: Send {
    fn write(&mut self, batch: &RecordBatch) -> Result<()>;
    /// Makes everything written so far durable/visible.
    fn flush(&mut self) -> Result<()>;
    /// Notes the point reached by everything written so far, to ask
    /// [`delivered`](Self::delivered) about it later without waiting (a
    /// Kafka sink: the messages sent so far, whose acknowledgements come
    /// back while later ones are sent). The job's periodic commit uses
    /// it, so a record arriving meanwhile is not held up by
    /// acknowledgements in flight. The default flushes, for sinks whose
    /// flush does not wait on another system: the point is delivered at once.
    fn mark(&mut self) -> Result<DeliveryMark> {
        self.flush()?;
        Ok(DeliveryMark(0))
    }
    /// Whether everything written before `mark` was taken is durable or
    /// visible (acknowledgements served, never waited for).
    fn delivered(&mut self, _mark: DeliveryMark) -> Result<bool> {
        Ok(true)
    }
    /// Flushes and releases the destination; called once at the end.
    fn close(&mut self) -> Result<()> {
        self.flush()
    }
    /// First phase of a checkpoint: make everything written so far durable
    /// (or staged) and return what recovery needs to find this point again.
    fn pre_commit(&mut self) -> Result<Option<Position>> {
        self.flush()?;
        Ok(None)
    }
    /// Second phase, once the checkpoint holding [`pre_commit`]'s state is
    /// durable: publish what was staged. `source` is the job's input, whose
    /// position the checkpoint holds; a transactional sink commits that
    /// position with its output.
    fn commit_checkpoint(&mut self, _source: &dyn Source) -> Result<()> {
        Ok(())
    }
    /// True when the sink commits its output together with the source's
    /// position (so a checkpoint counts only once that commit happened).
    fn commits_source_position(&self) -> bool {
        false
    }
    /// A job restored a checkpoint whose `pre_commit` returned `state`:
    /// finish its commit if it was cut short and drop anything written
    /// after it. Called before the first write.
    fn recover(&mut self, _state: Option<&Position>) -> Result<()> {
        Ok(())
    }
}

/// Looks rows of an external table up by key: a database table joined to
/// a stream is asked for the keys a batch needs instead of being read whole.
pub trait KeyLookup: Send {
    /// The rows, in the source's decoded schema, whose `columns` equal one
    /// of the key tuples in `keys` (one array per column, equal lengths,
    /// no NULLs). Rows of one key may come in any order.
    fn fetch(&mut self, columns: &[String], keys: &[ArrayRef]) -> Result<RecordBatch>;
}

/// How many looked-up keys a join keeps and how long it trusts them
/// (`performance.cache.table_cache_size` and `ttl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupCache {
    /// Keys kept with their rows; the least recently used go first.
    pub max_keys: usize,
    /// Keys kept that the table has no row for (a lookup that found
    /// nothing); `0`: such keys are asked again by every batch needing them.
    pub max_missing: usize,
    /// How long a cached key is used before it is looked up again.
    pub ttl: Duration,
}

impl Default for LookupCache {
    fn default() -> Self {
        Self {
            max_keys: 10_000,
            max_missing: 1_000,
            ttl: Duration::from_secs(300),
        }
    }
}

/// The rows of a join's table side.
pub enum TableData {
    /// Read already (a file).
    Rows(Vec<RecordBatch>),
    /// Another statement's output (`CREATE TABLE ... AS SELECT`): read to its
    /// end when the join sees its first record, keeping the latest row per key.
    Stream(Box<dyn Source>),
    /// Too large or too remote to read whole (a PostgreSQL table): rows are
    /// fetched for the keys each batch needs and cached.
    Lookup {
        lookup: Box<dyn KeyLookup>,
        cache: LookupCache,
    },
}

/// Provides the second input of joins: tables and the other stream of interval joins.
pub trait TableLoader: Send + Sync {
    /// The records of source `name`, decoded with `schema`.
    fn load(&self, name: &str, schema: SchemaRef, metrics: Arc<JobMetrics>) -> Result<TableData>;

    /// Source `name` as a stream, for the other side of an interval join.
    fn open(
        &self,
        name: &str,
        schema: SchemaRef,
        metrics: Arc<JobMetrics>,
    ) -> Result<Box<dyn Source>>;
}
