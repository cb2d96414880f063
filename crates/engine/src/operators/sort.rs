//! `ORDER BY` over bounded input: buffers everything and sorts at the end.
//! An unbounded stream has no end to sort at, so the job builder only
//! accepts this operator when every source is bounded.

use datafusion::arrow::compute::{concat_batches, lexsort_to_indices, take_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_expr::LexOrdering;

use super::Operator;
use crate::error::Result;

pub struct SortOperator {
    ordering: LexOrdering,
    fetch: Option<usize>,
    schema: SchemaRef,
    buffered: Vec<RecordBatch>,
}

impl SortOperator {
    pub fn new(ordering: LexOrdering, fetch: Option<usize>, schema: SchemaRef) -> Self {
        Self {
            ordering,
            fetch,
            schema,
            buffered: Vec::new(),
        }
    }
}

impl Operator for SortOperator {
    fn checkpoint_blocker(&self) -> Option<&'static str> {
        Some("ORDER BY holds its whole bounded input until the end; checkpoints are for continuous queries")
    }

    fn name(&self) -> &'static str {
        "sort"
    }

    fn process(&mut self, batch: RecordBatch, _out: &mut Vec<RecordBatch>) -> Result<()> {
        self.buffered.push(batch);
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        let all = concat_batches(&self.schema, &std::mem::take(&mut self.buffered))?;
        if all.num_rows() == 0 {
            return Ok(());
        }
        let columns = self
            .ordering
            .iter()
            .map(|e| e.evaluate_to_sort_column(&all))
            .collect::<datafusion::common::Result<Vec<_>>>()?;
        let indices = lexsort_to_indices(&columns, self.fetch)?;
        out.push(take_record_batch(&all, &indices)?);
        Ok(())
    }
}
