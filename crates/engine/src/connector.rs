//! The interfaces between the engine and connectors: a [`Source`] yields
//! record batches, a [`Sink`] consumes them.

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;

use std::sync::Arc;

use crate::error::Result;
use crate::metrics::JobMetrics;

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
    /// The results of every record returned so far have been flushed to
    /// the sinks: the source may record them as consumed (Kafka commits
    /// its offsets). Never called before that point.
    fn commit(&mut self) -> Result<()> {
        Ok(())
    }
}

/// A consumer of result batches.
pub trait Sink: Send {
    fn write(&mut self, batch: &RecordBatch) -> Result<()>;
    /// Makes everything written so far durable/visible.
    fn flush(&mut self) -> Result<()>;
    /// Flushes and releases the destination; called once at the end.
    fn close(&mut self) -> Result<()> {
        self.flush()
    }
}

/// The rows of a join's table side.
pub enum TableData {
    /// Read already (a file).
    Rows(Vec<RecordBatch>),
    /// Another statement's output (`CREATE TABLE ... AS SELECT`): read to its
    /// end when the join sees its first record, keeping the latest row per key.
    Stream(Box<dyn Source>),
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
