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

/// A stateful operator of a pipeline: its place in the chain and its name
/// (which together name where its state is kept outside the process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatefulOperator {
    pub index: usize,
    pub name: &'static str,
}

/// The state of one partition of state of a job whose state is divided
/// like its input (see [`crate::partitioned`]): each stateful operator's
/// snapshot, by its index in the pipeline.
#[derive(Debug, Clone, Default)]
pub struct PartitionState {
    pub partition: usize,
    pub operators: Vec<(usize, OperatorSnapshot)>,
}

/// A partition of state this process was given.
#[derive(Debug, Clone)]
pub struct AssignedPartition {
    pub partition: usize,
    /// The source partitions (values of `_partition`) its records come in
    /// on: the streams its watermark waits for.
    pub streams: Vec<usize>,
    /// Its state as of its last checkpoint; `None`: it starts empty.
    pub state: Option<PartitionState>,
}

/// Partitions of state that moved to or from this process: its source's
/// group gave them or took them away.
#[derive(Debug, Clone, Default)]
pub struct PartitionMoves {
    pub revoked: Vec<usize>,
    pub assigned: Vec<AssignedPartition>,
}
