//! The watermark each record was judged against, carried with the record.
//!
//! Event time is decided per record: a record is late when its windows have
//! closed under the watermark as the records before it (in its source
//! partition's order) advanced it. Window assignment decides that for
//! tumbling and sliding windows itself. A session's end is only known once
//! the record has been merged with its key's sessions, so for session
//! windows window assignment appends the watermark each row saw as a
//! trailing column, [`ROW_WATERMARK`]; filters keep it, projections carry
//! it ([`carry`]), and the session operator reads it ([`of`]). It never
//! reaches a sink: the aggregate's output does not include it.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, Int64Array};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::Result;

/// The name of the trailing column; no user column can start with `__velostream`.
pub const ROW_WATERMARK: &str = "__velostream_row_watermark";

/// `schema` with the row-watermark column appended.
pub fn with_column(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(ROW_WATERMARK, DataType::Int64, true));
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Each row's watermark in `batch`, if the batch carries them; null where
/// no watermark had been set yet.
pub fn of(batch: &RecordBatch) -> Option<&Int64Array> {
    let last = batch.num_columns().checked_sub(1)?;
    (batch.schema_ref().field(last).name() == ROW_WATERMARK)
        .then(|| batch.column(last).as_primitive::<Int64Type>())
}

/// `output` (computed row for row from `input`) with `input`'s row
/// watermarks appended, when it has them.
pub fn carry(input: &RecordBatch, output: RecordBatch) -> Result<RecordBatch> {
    let Some(watermarks) = of(input) else {
        return Ok(output);
    };
    let schema = with_column(output.schema_ref());
    let mut columns = output.columns().to_vec();
    columns.push(Arc::new(watermarks.clone()) as ArrayRef);
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// A row-watermark column from each row's watermark.
pub fn column(values: Vec<Option<i64>>) -> ArrayRef {
    Arc::new(values.into_iter().collect::<Int64Array>())
}
