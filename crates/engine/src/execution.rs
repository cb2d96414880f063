//! What a job pushes its batches through: one pipeline on the job's
//! thread, several on their own threads ([`ParallelPipeline`]), or one
//! per partition of state this process owns ([`PartitionedPipeline`]).

use datafusion::arrow::record_batch::RecordBatch;

use crate::checkpoint::{self, Recovered};
use crate::error::Result;
use crate::operators::{Pipeline, StateSize};
use crate::parallel::ParallelPipeline;
use crate::partitioned::PartitionedPipeline;
use crate::state::{OperatorSnapshot, PartitionMoves, PartitionState, StatefulOperator};

pub enum Execution {
    Single(Pipeline),
    Parallel(ParallelPipeline),
    Partitioned(PartitionedPipeline),
}

impl From<Pipeline> for Execution {
    fn from(p: Pipeline) -> Self {
        Self::Single(p)
    }
}

impl From<ParallelPipeline> for Execution {
    fn from(p: ParallelPipeline) -> Self {
        Self::Parallel(p)
    }
}

impl From<PartitionedPipeline> for Execution {
    fn from(p: PartitionedPipeline) -> Self {
        Self::Partitioned(p)
    }
}

impl Execution {
    /// Pushes a batch through; `partition` is the partition of state it
    /// belongs to, when the source divides state.
    pub fn process(
        &mut self,
        partition: Option<usize>,
        batch: RecordBatch,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        match self {
            Self::Single(p) => p.process(batch, out),
            Self::Parallel(p) => p.process(batch, out),
            Self::Partitioned(p) => p.process(partition, batch, out),
        }
    }

    /// The stateful operators whose state is divided by partition, when it is.
    pub fn partitioned_operators(&self) -> Option<&[StatefulOperator]> {
        match self {
            Self::Partitioned(p) => Some(p.operators()),
            _ => None,
        }
    }

    /// Partitions of state moved to or from this process.
    pub fn apply_moves(&mut self, moves: PartitionMoves) -> Result<()> {
        match self {
            Self::Partitioned(p) => p.apply(moves),
            _ => Err(crate::EngineError::State(
                "the source moved partitions of state, but this job does not divide its state"
                    .into(),
            )),
        }
    }

    /// Each owned partition's state, when state is divided by partition.
    pub fn capture_partitions(&mut self) -> Result<Option<Vec<PartitionState>>> {
        match self {
            Self::Partitioned(p) => p.capture().map(Some),
            _ => Ok(None),
        }
    }

    pub fn finish(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        match self {
            Self::Single(p) => p.finish(out),
            Self::Parallel(p) => p.finish(out),
            Self::Partitioned(p) => p.finish(out),
        }
    }

    pub fn idle(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        match self {
            Self::Single(p) => p.idle(out),
            Self::Parallel(p) => p.idle(out),
            Self::Partitioned(p) => p.idle(out),
        }
    }

    /// Results of work still in flight (parallel pipelines run a batch
    /// behind); called before a checkpoint, a hold and the end.
    pub fn drain(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        match self {
            Self::Single(_) | Self::Partitioned(_) => Ok(()),
            Self::Parallel(p) => p.drain(out),
        }
    }

    pub fn state_size(&self) -> StateSize {
        match self {
            Self::Single(p) => p.state_size(),
            Self::Parallel(p) => p.state_size(),
            Self::Partitioned(p) => p.state_size(),
        }
    }

    pub fn declare_source_partitions(&mut self, partitions: &[usize]) -> Result<()> {
        match self {
            Self::Single(p) => {
                p.declare_source_partitions(partitions);
                Ok(())
            }
            Self::Parallel(p) => {
                p.declare_source_partitions(partitions);
                Ok(())
            }
            // each partition's pipeline is told its streams when assigned
            Self::Partitioned(_) => Ok(()),
        }
    }

    /// True when some operator wants no more input (parallel pipelines
    /// never hold a LIMIT).
    pub fn is_done(&self) -> bool {
        match self {
            Self::Single(p) => p.is_done(),
            Self::Parallel(_) | Self::Partitioned(_) => false,
        }
    }

    pub fn checkpoint_blocker(&self) -> Option<String> {
        match self {
            Self::Single(p) => p.checkpoint_blocker(),
            Self::Parallel(_) => None,
            Self::Partitioned(p) => p.checkpoint_blocker(),
        }
    }

    pub fn capture(&mut self) -> Result<Vec<(usize, &'static str, OperatorSnapshot)>> {
        match self {
            Self::Single(p) => checkpoint::capture_operators(p),
            Self::Parallel(p) => p.capture(),
            // its state is kept per partition by the source (see capture_partitions)
            Self::Partitioned(_) => Ok(Vec::new()),
        }
    }

    pub fn restore(&mut self, recovered: Recovered) -> Result<()> {
        match self {
            Self::Single(p) => checkpoint::restore_operators(p, recovered),
            Self::Parallel(p) => p.restore(recovered),
            // each partition's state comes with its assignment
            Self::Partitioned(_) => Ok(()),
        }
    }
}
