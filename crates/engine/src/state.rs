//! Operator state behind an interface checkpoints can use.
//!
//! A stateful operator exposes its state as [`OperatorSnapshot`]: Arrow
//! record batches (keys plus accumulator intermediate states), so the same
//! encoding serves both checkpoint backends (Arrow IPC files, RocksDB
//! values; see [`crate::checkpoint`]).

use std::io::Cursor;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::Result;

/// The state of one operator at one point of the stream.
#[derive(Debug, Clone)]
pub struct OperatorSnapshot {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

impl OperatorSnapshot {
    /// Serializes as an Arrow IPC stream.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut writer = StreamWriter::try_new(&mut out, &self.schema)?;
        for b in &self.batches {
            writer.write(b)?;
        }
        writer.finish()?;
        drop(writer);
        Ok(out)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let reader = StreamReader::try_new(Cursor::new(bytes), None)?;
        let schema = reader.schema();
        let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Self { schema, batches })
    }
}

/// An operator whose state can be captured and restored.
pub trait Checkpointable {
    /// Captures the current state without changing what the operator emits later.
    fn snapshot(&mut self) -> Result<OperatorSnapshot>;
    /// Replaces the (empty) state with a snapshot's.
    fn restore(&mut self, snapshot: OperatorSnapshot) -> Result<()>;
}
