//! In-process streams: one statement's output feeding later statements of
//! the same application, and a collecting sink for tests and `velostream test`.

use std::collections::HashMap;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::arrow::array::{ArrayRef, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::row::{RowConverter, SortField};
use velostream_engine::{Result, Sink, Source, SourceEvent};

/// Batches in flight between two statements before the writer waits.
const CHANNEL_BATCHES: usize = 16;

/// Fans one statement's output out to every statement that reads it.
pub struct ChannelSink {
    senders: Vec<SyncSender<RecordBatch>>,
}

/// Reads another statement's output, keeping the columns this query uses.
pub struct ChannelSource {
    receiver: Receiver<RecordBatch>,
    projection: Vec<usize>,
    schema: SchemaRef,
    bounded: bool,
}

/// A channel from one writer to `readers` readers, each projecting the
/// writer's `schema` onto its own.
pub fn stream_channel(
    schema: &SchemaRef,
    readers: &[(SchemaRef, bool)],
) -> Result<(ChannelSink, Vec<ChannelSource>)> {
    let mut senders = Vec::new();
    let mut sources = Vec::new();
    for (projected, bounded) in readers {
        let (tx, rx) = sync_channel(CHANNEL_BATCHES);
        let projection = projected
            .fields()
            .iter()
            .map(|f| schema.index_of(f.name()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        senders.push(tx);
        sources.push(ChannelSource {
            receiver: rx,
            projection,
            schema: projected.clone(),
            bounded: *bounded,
        });
    }
    Ok((ChannelSink { senders }, sources))
}

impl Sink for ChannelSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        // A reader that stopped early (LIMIT) no longer needs the stream.
        self.senders.retain(|tx| tx.send(batch.clone()).is_ok());
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }

    fn close(&mut self) -> Result<()> {
        self.senders.clear();
        Ok(())
    }
}

impl ChannelSource {
    /// The reader's columns of an upstream batch, under the reader's schema
    /// (upstream field metadata such as window roles is not carried over).
    fn conform(&self, batch: RecordBatch) -> Result<SourceEvent> {
        let columns = batch.project(&self.projection)?.columns().to_vec();
        Ok(SourceEvent::Batch(RecordBatch::try_new(
            self.schema.clone(),
            columns,
        )?))
    }
}

impl Source for ChannelSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn poll_batch(&mut self) -> Result<SourceEvent> {
        match self.receiver.recv_timeout(Duration::from_millis(100)) {
            Ok(batch) => self.conform(batch),
            Err(RecvTimeoutError::Timeout) => Ok(SourceEvent::Idle),
            Err(RecvTimeoutError::Disconnected) => Ok(SourceEvent::End),
        }
    }

    fn poll_now(&mut self) -> Result<SourceEvent> {
        match self.receiver.try_recv() {
            Ok(batch) => self.conform(batch),
            Err(TryRecvError::Empty) => Ok(SourceEvent::Idle),
            Err(TryRecvError::Disconnected) => Ok(SourceEvent::End),
        }
    }

    fn is_bounded(&self) -> bool {
        self.bounded
    }
}

/// Keeps every batch written, for inspection after the job.
#[derive(Clone, Default)]
pub struct CollectSink {
    pub batches: Arc<Mutex<Vec<RecordBatch>>>,
}

impl Sink for CollectSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.batches
            .lock()
            .expect("collect sink lock")
            .push(batch.clone());
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Reads a table to its end and yields its latest row per key, projected
/// onto the reader's columns: another statement's `CREATE TABLE ... AS
/// SELECT` output (a stream of updates), or a bounded source declared as a
/// table (`CREATE TABLE name (..., PRIMARY KEY (k))`), whose deletes (a
/// compacted topic's tombstones) remove their keys.
pub struct LatestPerKeySource {
    inner: Box<dyn Source>,
    key: Vec<usize>,
    projection: Vec<usize>,
    schema: SchemaRef,
    done: bool,
}

impl LatestPerKeySource {
    /// `inner` yields the table's full rows; `key` indexes its key columns;
    /// `schema` is what the reader decodes (a subset of the table's columns).
    pub fn new(inner: Box<dyn Source>, key: Vec<usize>, schema: SchemaRef) -> Result<Self> {
        let full = inner.schema();
        let projection = schema
            .fields()
            .iter()
            .map(|f| full.index_of(f.name()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Self {
            inner,
            key,
            projection,
            schema,
            done: false,
        })
    }
}

impl Source for LatestPerKeySource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn poll_batch(&mut self) -> Result<SourceEvent> {
        if self.done {
            return Ok(SourceEvent::End);
        }
        let full = self.inner.schema();
        let converter = RowConverter::new(
            self.key
                .iter()
                .map(|&i| SortField::new(full.field(i).data_type().clone()))
                .collect(),
        )?;
        // the last update of each key wins and a delete removes it; keys
        // keep the order they (last) first appeared in
        let mut latest: HashMap<Vec<u8>, (usize, u32)> = HashMap::new();
        let mut updates = Vec::new();
        let (mut offset, mut arrival) = (0usize, 0usize);
        loop {
            let (batch, delete) = match self.inner.poll_batch()? {
                SourceEvent::Batch(b) => (b, false),
                SourceEvent::Deletes(d) => (d, true),
                SourceEvent::Idle => continue,
                SourceEvent::Partitioned { .. } => {
                    return Err(velostream_engine::connector::unexpected_partitioned(
                        "a table's latest rows",
                    ))
                }
                SourceEvent::End => break,
            };
            let keys: Vec<ArrayRef> = self.key.iter().map(|&i| batch.column(i).clone()).collect();
            let rows = converter.convert_columns(&keys)?;
            if delete {
                for row in rows.iter() {
                    latest.remove(row.as_ref());
                }
                continue;
            }
            for (i, row) in rows.iter().enumerate() {
                let first = latest.get(row.as_ref()).map(|(f, _)| *f).unwrap_or(arrival);
                arrival += 1;
                latest.insert(row.as_ref().to_vec(), (first, (offset + i) as u32));
            }
            offset += batch.num_rows();
            updates.push(batch);
        }
        self.done = true;
        let all = concat_batches(&full, &updates)?;
        let mut order: Vec<(usize, u32)> = latest.into_values().collect();
        order.sort_unstable();
        let indices = UInt32Array::from(order.into_iter().map(|(_, i)| i).collect::<Vec<_>>());
        let table = take_record_batch(&all, &indices)?.project(&self.projection)?;
        // a reader may use no column at all (COUNT(*)): the rows still count
        Ok(SourceEvent::Batch(RecordBatch::try_new_with_options(
            self.schema.clone(),
            table.columns().to_vec(),
            &RecordBatchOptions::new().with_row_count(Some(table.num_rows())),
        )?))
    }

    fn is_bounded(&self) -> bool {
        true
    }
}
