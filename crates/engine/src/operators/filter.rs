//! `WHERE` / `HAVING`: keeps the rows whose predicate is true (NULL drops).

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_expr::PhysicalExpr;

use super::{Operator, RowIsolation};
use crate::error::{EngineError, Result};

pub struct FilterOperator {
    predicate: Arc<dyn PhysicalExpr>,
}

impl FilterOperator {
    pub fn new(predicate: Arc<dyn PhysicalExpr>) -> Self {
        Self { predicate }
    }
}

impl Operator for FilterOperator {
    fn name(&self) -> &'static str {
        "filter"
    }

    fn isolation(&self) -> RowIsolation {
        RowIsolation::Expressions(vec![self.predicate.clone()])
    }

    fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        let mask = self
            .predicate
            .evaluate(&batch)?
            .into_array(batch.num_rows())?;
        if mask.data_type() != &DataType::Boolean {
            return Err(EngineError::Plan(format!(
                "filter predicate is {}, not boolean",
                mask.data_type()
            )));
        }
        let mask = mask.as_boolean();
        if mask.null_count() == 0 && mask.true_count() == batch.num_rows() {
            out.push(batch);
        } else {
            out.push(filter_record_batch(&batch, mask)?);
        }
        Ok(())
    }
}
