//! Streaming operators. Each consumes Arrow record batches and produces
//! record batches; the [`Pipeline`] chains them in data-flow order.

pub mod aggregate;
pub mod cached_lookup_join;
pub mod filter;
pub mod group_keys;
pub mod grouped;
pub mod interval_join;
pub mod join_output;
pub mod limit;
pub mod lookup_join;
pub mod project;
pub mod read_once_groups;
pub mod row_window;
pub mod session_aggregate;
pub mod sort;
pub mod window_aggregate;
pub mod window_assign;

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_expr::PhysicalExpr;

use crate::error::Result;
pub mod row_errors;

use self::row_errors::RowErrors;
pub use self::row_errors::RowIsolation;
use crate::state::Checkpointable;

/// One step of a streaming pipeline.
pub trait Operator: Send {
    /// Short name for plans, logs and metrics.
    fn name(&self) -> &'static str;

    /// Processes one input batch, appending any output to `out`.
    fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()>;

    /// Called once when every input is exhausted (bounded sources only):
    /// emit whatever is still held.
    fn finish(&mut self, _out: &mut Vec<RecordBatch>) -> Result<()> {
        Ok(())
    }

    /// Event time has advanced to `watermark` (milliseconds): no record
    /// with an earlier event time will count any more. Windowed operators
    /// close their windows here.
    fn on_watermark(&mut self, _watermark: i64, _out: &mut Vec<RecordBatch>) -> Result<()> {
        Ok(())
    }

    /// The source has nothing right now; time may still pass (a
    /// processing-time window closes on the clock). A watermark produced
    /// here is taken with [`take_watermark`](Self::take_watermark).
    fn on_idle(&mut self) {}

    /// The job's source reads these partitions (numbered by `_partition`);
    /// told again whenever they change (a consumer group's rebalance).
    fn on_source_partitions(&mut self, _partitions: &[usize]) {}

    /// A watermark this operator produced since it was last asked (only
    /// the operator that assigns event time produces them).
    fn take_watermark(&mut self) -> Option<i64> {
        None
    }

    /// True once the operator will produce nothing more (a reached LIMIT);
    /// the job then stops reading its sources.
    fn is_done(&self) -> bool {
        false
    }

    /// How much state the operator holds (reported as metrics).
    fn state_size(&self) -> StateSize {
        StateSize::default()
    }

    /// The operator's state, for checkpoints; `None` for stateless operators.
    fn state(&mut self) -> Option<&mut dyn Checkpointable> {
        None
    }

    /// Why the operator's state cannot be checkpointed yet, when it cannot
    /// (a job configured for checkpoints then refuses to start).
    fn checkpoint_blocker(&self) -> Option<&'static str> {
        None
    }

    /// How the rows that make [`process`](Self::process) fail can be
    /// found without changing the operator's state (see [`row_errors`]).
    fn isolation(&self) -> RowIsolation {
        RowIsolation::None
    }
}

/// Open windows (or sessions), keys (groups, partitions) and whole records an operator holds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StateSize {
    pub windows: usize,
    pub keys: usize,
    /// Records held whole (join buffers and tables).
    pub rows: usize,
}

impl std::iter::Sum for StateSize {
    fn sum<I: Iterator<Item = Self>>(sizes: I) -> Self {
        sizes.fold(Self::default(), |a, s| Self {
            windows: a.windows + s.windows,
            keys: a.keys + s.keys,
            rows: a.rows + s.rows,
        })
    }
}

/// A chain of operators in data-flow order.
pub struct Pipeline {
    operators: Vec<Box<dyn Operator>>,
    /// What happens to rows whose expression fails (`None`: the job fails).
    row_errors: Option<RowErrors>,
}

impl Pipeline {
    pub fn new(operators: Vec<Box<dyn Operator>>) -> Self {
        Self {
            operators,
            row_errors: None,
        }
    }

    /// Rows whose expressions fail are isolated per `errors` instead of
    /// failing the job.
    pub fn with_row_errors(mut self, errors: RowErrors) -> Self {
        self.row_errors = Some(errors);
        self
    }

    pub fn operators(&self) -> &[Box<dyn Operator>] {
        &self.operators
    }

    pub fn operators_mut(&mut self) -> &mut [Box<dyn Operator>] {
        &mut self.operators
    }

    /// Pushes one batch through every operator.
    pub fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        self.run_from(0, vec![batch], out)
    }

    /// Finishes operators in order, feeding each one's final output through
    /// the operators after it.
    pub fn finish(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        for i in 0..self.operators.len() {
            let mut flushed = Vec::new();
            self.operators[i].finish(&mut flushed)?;
            self.run_from(i + 1, flushed, out)?;
        }
        Ok(())
    }

    /// State held by all operators together.
    pub fn state_size(&self) -> StateSize {
        self.operators.iter().map(|op| op.state_size()).sum()
    }

    /// Lets time pass while the source is idle: watermarks operators
    /// produce from the clock flow downstream (closed windows emit).
    pub fn idle(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        for op in &mut self.operators {
            op.on_idle();
        }
        self.run_from(0, Vec::new(), out)
    }

    /// Tells every operator which partitions the source reads.
    pub fn declare_source_partitions(&mut self, partitions: &[usize]) {
        for op in &mut self.operators {
            op.on_source_partitions(partitions);
        }
    }

    /// The first reason an operator gives for not being checkpointable.
    pub fn checkpoint_blocker(&self) -> Option<String> {
        self.operators.iter().find_map(|op| {
            op.checkpoint_blocker()
                .map(|why| format!("{}: {why}", op.name()))
        })
    }

    /// True when some operator wants no more input.
    pub fn is_done(&self) -> bool {
        self.operators.iter().any(|op| op.is_done())
    }

    /// Runs `batches` through the operators from `start` on. A watermark
    /// produced by an operator follows its output batches downstream.
    fn run_from(
        &mut self,
        start: usize,
        batches: Vec<RecordBatch>,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        self.run_with(start, batches, None, out).map(|_| ())
    }

    /// [`run_from`](Self::run_from) with a watermark produced upstream of
    /// these operators applied after `batches`; returns the watermark that
    /// leaves the last operator.
    fn run_with(
        &mut self,
        start: usize,
        mut batches: Vec<RecordBatch>,
        mut watermark: Option<i64>,
        out: &mut Vec<RecordBatch>,
    ) -> Result<Option<i64>> {
        for op in &mut self.operators[start..] {
            let mut next = Vec::with_capacity(batches.len());
            for batch in batches {
                if batch.num_rows() == 0 {
                    continue;
                }
                match &self.row_errors {
                    None => op.process(batch, &mut next)?,
                    Some(errors) => {
                        // what a failed attempt emitted is dropped with it
                        let before = next.len();
                        if let Err(e) = op.process(batch.clone(), &mut next) {
                            next.truncate(before);
                            errors.recover(op.as_mut(), batch, e, &mut next)?;
                        }
                    }
                }
            }
            if let Some(w) = watermark {
                op.on_watermark(w, &mut next)?;
            }
            if let Some(w) = op.take_watermark() {
                watermark = Some(w);
            }
            batches = next;
        }
        out.extend(batches.into_iter().filter(|b| b.num_rows() > 0));
        Ok(watermark)
    }

    /// Splits off the operators from `at` on into a pipeline of their own
    /// (the keyed part of a parallel job).
    pub fn split_off(&mut self, at: usize) -> Pipeline {
        Pipeline {
            operators: self.operators.split_off(at.min(self.operators.len())),
            row_errors: self.row_errors.clone(),
        }
    }

    /// Like [`process`](Self::process), returning the watermark the batch
    /// moved past the last operator (for stages that continue elsewhere).
    pub fn process_staged(
        &mut self,
        batch: RecordBatch,
        out: &mut Vec<RecordBatch>,
    ) -> Result<Option<i64>> {
        self.run_with(0, vec![batch], None, out)
    }

    /// Like [`idle`](Self::idle), returning the watermark that came of it.
    pub fn idle_staged(&mut self, out: &mut Vec<RecordBatch>) -> Result<Option<i64>> {
        for op in &mut self.operators {
            op.on_idle();
        }
        self.run_with(0, Vec::new(), None, out)
    }

    /// Batches from an earlier stage, then the watermark that stage passed on.
    pub fn accept(
        &mut self,
        batches: Vec<RecordBatch>,
        watermark: Option<i64>,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        self.run_with(0, batches, watermark, out).map(|_| ())
    }
}

/// Evaluates expressions over a batch into one full-length array each
/// (scalar results are broadcast).
pub fn evaluate_all(exprs: &[Arc<dyn PhysicalExpr>], batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
    let rows = batch.num_rows();
    Ok(exprs
        .iter()
        .map(|e| e.evaluate(batch).and_then(|v| v.into_array(rows)))
        .collect::<datafusion::common::Result<Vec<_>>>()?)
}
