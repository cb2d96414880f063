//! What a job pushes its batches through: one pipeline on the job's
//! thread, or several on their own threads ([`ParallelPipeline`]).

use datafusion::arrow::record_batch::RecordBatch;

use crate::checkpoint::{self, Recovered};
use crate::error::Result;
use crate::operators::{Pipeline, StateSize};
use crate::parallel::ParallelPipeline;
use crate::state::OperatorSnapshot;

pub enum Execution {
    Single(Pipeline),
    Parallel(ParallelPipeline),
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

impl Execution {
    pub fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        match self {
            Self::Single(p) => p.process(batch, out),
            Self::Parallel(p) => p.process(batch, out),
        }
    }

    pub fn finish(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        match self {
            Self::Single(p) => p.finish(out),
            Self::Parallel(p) => p.finish(out),
        }
    }

    pub fn idle(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        match self {
            Self::Single(p) => p.idle(out),
            Self::Parallel(p) => p.idle(out),
        }
    }

    /// Results of work still in flight (parallel pipelines run a batch
    /// behind); called before a checkpoint, a hold and the end.
    pub fn drain(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        match self {
            Self::Single(_) => Ok(()),
            Self::Parallel(p) => p.drain(out),
        }
    }

    pub fn state_size(&self) -> StateSize {
        match self {
            Self::Single(p) => p.state_size(),
            Self::Parallel(p) => p.state_size(),
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
        }
    }

    /// True when some operator wants no more input (parallel pipelines
    /// never hold a LIMIT).
    pub fn is_done(&self) -> bool {
        match self {
            Self::Single(p) => p.is_done(),
            Self::Parallel(_) => false,
        }
    }

    pub fn checkpoint_blocker(&self) -> Option<String> {
        match self {
            Self::Single(p) => p.checkpoint_blocker(),
            Self::Parallel(_) => None,
        }
    }

    pub fn capture(&mut self) -> Result<Vec<(usize, &'static str, OperatorSnapshot)>> {
        match self {
            Self::Single(p) => checkpoint::capture_operators(p),
            Self::Parallel(p) => p.capture(),
        }
    }

    pub fn restore(&mut self, recovered: Recovered) -> Result<()> {
        match self {
            Self::Single(p) => checkpoint::restore_operators(p, recovered),
            Self::Parallel(p) => p.restore(recovered),
        }
    }
}
