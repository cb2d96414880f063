//! What both joins do once they know which record pairs share a key: cast
//! probe keys to the indexed key types, build the joined rows, apply the
//! extra ON condition, and (LEFT/FULL) emit the driving records that met
//! nothing with NULL columns for the other side.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{cast, filter_record_batch, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;

use crate::error::Result;
use velostream_sql::TimeFormat;

use super::window_assign::event_millis;

/// The event time `expr` gives for every row of `batch`, in milliseconds.
pub fn millis_of(expr: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<Int64Array> {
    event_millis(
        &expr.evaluate(batch)?.into_array(batch.num_rows())?,
        &TimeFormat::Auto,
    )
}

/// The key types of `key_columns` and a row converter for them: how both
/// joins index the other side's keys.
pub fn key_converter(key_columns: &[ArrayRef]) -> Result<(Vec<DataType>, RowConverter)> {
    let types: Vec<DataType> = key_columns.iter().map(|c| c.data_type().clone()).collect();
    let converter = RowConverter::new(types.iter().map(|t| SortField::new(t.clone())).collect())?;
    Ok((types, converter))
}

/// Casts probe keys to the types the other side's keys were indexed with.
pub fn cast_keys(keys: Vec<ArrayRef>, types: &[DataType]) -> Result<Vec<ArrayRef>> {
    Ok(keys
        .into_iter()
        .zip(types)
        .map(|(k, t)| {
            if k.data_type() == t {
                Ok(k)
            } else {
                cast(&k, t)
            }
        })
        .collect::<std::result::Result<Vec<_>, _>>()?)
}

/// Rows `left[i]` of `driving` beside rows `right[i]` of `other` (a null
/// index gives NULL columns), in the join's output `schema`.
pub fn join_rows(
    driving: &RecordBatch,
    other: &RecordBatch,
    left: &UInt32Array,
    right: &UInt32Array,
    schema: &SchemaRef,
) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = driving
        .columns()
        .iter()
        .map(|c| take(c, left, None))
        .collect::<std::result::Result<_, _>>()?;
    for c in other.columns() {
        columns.push(take(c, right, None)?);
    }
    super::grouped::conform(schema, columns)
}

/// Emits the pairs (`left`, `right` index the two sides) that pass
/// `filter`, then — when `keep_unmatched` — the driving records without a
/// passing pair. Returns which pairs passed.
#[allow(clippy::too_many_arguments)]
pub fn emit_pairs(
    driving: &RecordBatch,
    other: &RecordBatch,
    left: Vec<u32>,
    right: Vec<u32>,
    filter: Option<&Arc<dyn PhysicalExpr>>,
    keep_unmatched: bool,
    schema: &SchemaRef,
    out: &mut Vec<RecordBatch>,
) -> Result<Vec<bool>> {
    let (left, right) = (UInt32Array::from(left), UInt32Array::from(right));
    let mut matched = join_rows(driving, other, &left, &right, schema)?;
    let mut passed = vec![true; left.len()];
    if let Some(filter) = filter {
        let mask = filter.evaluate(&matched)?.into_array(matched.num_rows())?;
        let mask = mask.as_boolean();
        passed = (0..mask.len())
            .map(|i| mask.is_valid(i) && mask.value(i))
            .collect();
        matched = filter_record_batch(&matched, mask)?;
    }
    out.push(matched);
    if keep_unmatched {
        let mut has_match = vec![false; driving.num_rows()];
        for (k, &ok) in passed.iter().enumerate() {
            if ok {
                has_match[left.value(k) as usize] = true;
            }
        }
        let unmatched: Vec<u32> = (0..driving.num_rows() as u32)
            .filter(|&i| !has_match[i as usize])
            .collect();
        if !unmatched.is_empty() {
            let nulls = UInt32Array::from(vec![None; unmatched.len()]);
            out.push(join_rows(
                driving,
                other,
                &UInt32Array::from(unmatched),
                &nulls,
                schema,
            )?);
        }
    }
    Ok(passed)
}
