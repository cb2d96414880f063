//! `LIMIT n OFFSET m`: passes through rows `m..m+n` of the stream, then
//! reports itself done so the job stops reading.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Int64Array};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use datafusion::arrow::record_batch::RecordBatch;

use super::Operator;
use crate::error::{EngineError, Result};
use crate::state::{Checkpointable, OperatorSnapshot};

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

    fn state(&mut self) -> Option<&mut dyn Checkpointable> {
        Some(self)
    }
}

/// The rows still to skip and to pass, so a restored LIMIT goes on counting.
impl Checkpointable for LimitOperator {
    fn snapshot(&mut self) -> Result<OperatorSnapshot> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("skip", DataType::Int64, false),
            Field::new("remaining", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![self.skip as i64])),
                Arc::new(Int64Array::from(vec![self.remaining.map(|r| r as i64)])),
            ],
        )?;
        Ok(OperatorSnapshot {
            schema,
            batches: vec![batch],
        })
    }

    fn restore(&mut self, snapshot: OperatorSnapshot) -> Result<()> {
        let batch = snapshot
            .batches
            .iter()
            .find(|b| b.num_rows() == 1)
            .ok_or_else(|| EngineError::State("a LIMIT snapshot holds one row".into()))?;
        self.skip = batch.column(0).as_primitive::<Int64Type>().value(0) as usize;
        let remaining = batch.column(1).as_primitive::<Int64Type>();
        self.remaining = remaining.is_valid(0).then(|| remaining.value(0) as usize);
        Ok(())
    }
}
