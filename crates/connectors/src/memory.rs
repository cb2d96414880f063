//! In-process streams: one statement's output feeding later statements of
//! the same application, and a collecting sink for tests and `velostream test`.

use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use velostream_engine::{EngineError, Result, Sink, Source, SourceEvent};

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

impl Source for ChannelSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn poll_batch(&mut self) -> Result<SourceEvent> {
        match self.receiver.recv_timeout(Duration::from_millis(100)) {
            Ok(batch) => Ok(SourceEvent::Batch(
                batch
                    .project(&self.projection)
                    .map_err(EngineError::from)?
                    .with_schema(self.schema.clone())?,
            )),
            Err(RecvTimeoutError::Timeout) => Ok(SourceEvent::Idle),
            Err(RecvTimeoutError::Disconnected) => Ok(SourceEvent::End),
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

/// Discards everything (`'type' = 'null'`): for benchmarks and dry runs.
pub struct NullSink;

impl Sink for NullSink {
    fn write(&mut self, _batch: &RecordBatch) -> Result<()> {
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}
