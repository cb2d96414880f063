//! `SELECT` expressions: computes the output columns of every row.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::physical_expr::PhysicalExpr;

use super::grouped::conform_columns;
use super::{evaluate_all, Operator, RowIsolation};
use crate::error::Result;

pub struct ProjectOperator {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
}

impl ProjectOperator {
    pub fn new(exprs: Vec<Arc<dyn PhysicalExpr>>, schema: SchemaRef) -> Self {
        Self { exprs, schema }
    }
}

impl Operator for ProjectOperator {
    fn name(&self) -> &'static str {
        "project"
    }

    fn isolation(&self) -> RowIsolation {
        RowIsolation::Expressions(self.exprs.clone())
    }

    fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        let rows = batch.num_rows();
        let columns = conform_columns(&self.schema, evaluate_all(&self.exprs, &batch)?)?;
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        let projected = RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?;
        out.push(crate::row_watermark::carry(&batch, projected)?);
        Ok(())
    }
}
