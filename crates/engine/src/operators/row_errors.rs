//! Row-level error isolation: a batch whose expression fails for some rows
//! (a division by zero, a failing CAST) loses only those rows; the rest
//! goes on with exactly the results it would have had without them.
//!
//! Nothing is paid on the happy path: an operator processes its batch as
//! usual. Only when it fails does the pipeline look for the failing rows,
//! by bisection — halves of the batch are tried until single rows remain,
//! so `k` bad rows in `n` cost about `k · log2(n)` small evaluations — then
//! hands them to the [`ErrorPolicy`] and processes the batch without them.
//!
//! Trying parts of a batch must not change what the operator holds, which
//! is what [`RowIsolation`] states per operator: stateless operators may
//! simply be run again on a part; stateful ones evaluate every expression
//! of a batch before they change any state, so trying their expressions on
//! a part is enough. An error that no single row reproduces is not a row's
//! fault and stops the job as before.

use std::sync::Arc;

use datafusion::arrow::array::BooleanArray;
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_expr::PhysicalExpr;
use velostream_sql::{ErrorPolicy, Location};

use super::Operator;
use crate::dead_letter::{row_as_json, DeadLetter};
use crate::error::Result;
use crate::metrics::JobMetrics;

/// How the rows that make an operator fail can be found.
pub enum RowIsolation {
    /// Errors stop the job (the operator evaluates nothing a row can break).
    None,
    /// The operator changes no state from its input: it may be run on any
    /// part of a batch and its output discarded.
    Rerun,
    /// Evaluating these expressions over the input is everything in the
    /// operator that can fail for a row, and it happens before any state
    /// changes.
    Expressions(Vec<Arc<dyn PhysicalExpr>>),
}

/// A row that failed, and why.
struct FailedRow {
    row: usize,
    reason: String,
}

/// What a pipeline does with failing rows.
#[derive(Clone)]
pub struct RowErrors {
    pub policy: ErrorPolicy,
    pub metrics: Arc<JobMetrics>,
    /// The statement's position, for the dead letter and the log.
    pub location: Location,
}

impl RowErrors {
    /// Processes `batch` with `op` after `error` made it fail: the failing
    /// rows are found, handled by the policy, and the rest is processed.
    /// Returns `error` itself when the policy is `fail` or no row is to blame.
    pub fn recover(
        &self,
        op: &mut dyn Operator,
        batch: RecordBatch,
        error: crate::EngineError,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        if self.policy == ErrorPolicy::Fail {
            return Err(error);
        }
        let isolation = op.isolation();
        if matches!(isolation, RowIsolation::None) {
            return Err(error);
        }
        let mut failed = Vec::new();
        let mut probe = |part: &RecordBatch| -> std::result::Result<(), String> {
            match &isolation {
                RowIsolation::None => unreachable!("returned above"),
                RowIsolation::Rerun => op
                    .process(part.clone(), &mut Vec::new())
                    .map_err(|e| e.to_string()),
                RowIsolation::Expressions(exprs) => exprs.iter().try_for_each(|e| {
                    e.evaluate(part)
                        .and_then(|v| v.into_array(part.num_rows()))
                        .map(drop)
                        .map_err(|err| format!("{} in `{e}`", err.strip_backtrace()))
                }),
            }
        };
        bisect(&batch, 0, batch.num_rows(), &mut probe, &mut failed);
        if failed.is_empty() {
            return Err(error);
        }
        let mut keep = vec![true; batch.num_rows()];
        for f in &failed {
            keep[f.row] = false;
            self.handle(op.name(), &batch, f);
        }
        let clean = filter_record_batch(&batch, &BooleanArray::from(keep))?;
        if clean.num_rows() > 0 {
            op.process(clean, out)?;
        }
        Ok(())
    }

    /// Counts, logs and (per the policy) dead-letters one failed row.
    fn handle(&self, operator: &str, batch: &RecordBatch, failed: &FailedRow) {
        let position = format!(
            "line {}:{} ({operator})",
            self.location.line, self.location.column
        );
        self.metrics.row_error(&position, &failed.reason);
        if self.policy == ErrorPolicy::DeadLetter {
            self.metrics.dead_letter(|| DeadLetter {
                source: "expression".into(),
                position,
                reason: failed.reason.clone(),
                record: row_as_json(batch, failed.row),
                event_time_ms: None,
            });
        }
    }
}

/// Finds the rows of `batch[start..start + len]` that fail `probe` alone.
fn bisect(
    batch: &RecordBatch,
    start: usize,
    len: usize,
    probe: &mut dyn FnMut(&RecordBatch) -> std::result::Result<(), String>,
    failed: &mut Vec<FailedRow>,
) {
    if len == 0 {
        return;
    }
    let Err(reason) = probe(&batch.slice(start, len)) else {
        return;
    };
    if len == 1 {
        failed.push(FailedRow { row: start, reason });
        return;
    }
    let half = len / 2;
    bisect(batch, start, half, probe, failed);
    bisect(batch, start + half, len - half, probe, failed);
}
