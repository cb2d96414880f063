//! `LIMIT n OFFSET m`: passes through rows `m..m+n` of the stream, then
//! reports itself done so the job stops reading.

use datafusion::arrow::record_batch::RecordBatch;

use super::Operator;
use crate::error::Result;

pub struct LimitOperator {
    skip: usize,
    remaining: Option<usize>,
}

impl LimitOperator {
    pub fn new(skip: usize, fetch: Option<usize>) -> Self {
        Self {
            skip,
            remaining: fetch,
        }
    }
}

impl Operator for LimitOperator {
    fn name(&self) -> &'static str {
        "limit"
    }

    fn process(&mut self, mut batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        if self.skip > 0 {
            let skipped = self.skip.min(batch.num_rows());
            self.skip -= skipped;
            batch = batch.slice(skipped, batch.num_rows() - skipped);
        }
        if let Some(remaining) = &mut self.remaining {
            let take = (*remaining).min(batch.num_rows());
            *remaining -= take;
            batch = batch.slice(0, take);
        }
        if batch.num_rows() > 0 {
            out.push(batch);
        }
        Ok(())
    }

    fn is_done(&self) -> bool {
        self.remaining == Some(0)
    }
}
