//! `WITHIN <duration>` of an interval join as the planner hands it to
//! DataFusion: one marker predicate, `velostream_within(table_time,
//! stream_time, millis)`, added to the join's ON condition. It names both
//! event-time columns, so DataFusion's projection pruning keeps them for
//! the join, and lowering reads the bounds back from the marker itself —
//! its two columns and its literal — instead of recognising them in
//! arithmetic. Evaluated as a predicate (as a batch engine would), it is
//! true when the two times are at most `millis` milliseconds apart.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, TimeUnit};
use datafusion::common::{exec_err, DFSchema, Result, ScalarValue};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use crate::epoch_time::EPOCH_UNIT;
use crate::interval_join::{in_millis, is_side, IntervalBounds};

/// The marker's name in the plan.
pub const WITHIN: &str = "velostream_within";

/// The ON condition term a `WITHIN` clause adds: `table_time` and
/// `stream_time` are qualified column references.
pub fn condition(table_time: &str, stream_time: &str, millis: u128) -> String {
    format!("{WITHIN}({table_time}, {stream_time}, {millis})")
}

/// The interval bounds of a join whose filter holds a `WITHIN` marker,
/// and the rest of the filter; `None` without one.
pub fn bounds(
    filter: &Expr,
    left: &DFSchema,
    right: &DFSchema,
) -> Option<(IntervalBounds, Option<Expr>)> {
    let mut found = None;
    let mut rest = Vec::new();
    for term in split_conjunction(filter) {
        match (found.is_none(), marker(term, left, right)) {
            (true, Some(bounds)) => found = Some(bounds),
            _ => rest.push(term.clone()),
        }
    }
    found.map(|bounds| (bounds, conjunction(rest)))
}

/// The bounds a marker term states, its columns matched to the join's sides.
fn marker(term: &Expr, left: &DFSchema, right: &DFSchema) -> Option<IntervalBounds> {
    let Expr::ScalarFunction(ScalarFunction { func, args }) = term else {
        return None;
    };
    let [a, b, Expr::Literal(ScalarValue::Int64(Some(millis)), _)] = args.as_slice() else {
        return None;
    };
    if func.name() != WITHIN {
        return None;
    }
    // the table's time is on the right unless the join was planned the other way round
    let (left_time, right_time) = match (is_side(b, left), is_side(a, right)) {
        (true, true) => (b, a),
        _ if is_side(a, left) && is_side(b, right) => (a, b),
        _ => return None,
    };
    Some(IntervalBounds {
        left_time: in_millis(left_time, left),
        right_time: in_millis(right_time, right),
        lower_ms: -millis,
        upper_ms: *millis,
    })
}

/// The marker as a function DataFusion can plan (and evaluate).
pub fn within_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(Within {
        signature: Signature::any(3, Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Within {
    signature: Signature,
}

impl ScalarUDFImpl for Within {
    fn name(&self) -> &str {
        WITHIN
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let [a, b, limit] = args.args.as_slice() else {
            return exec_err!("{WITHIN} takes two times and a number of milliseconds");
        };
        let ColumnarValue::Scalar(limit) = limit else {
            return exec_err!("{WITHIN}: the limit must be a constant");
        };
        let Ok(ScalarValue::Int64(Some(limit))) = limit.cast_to(&DataType::Int64) else {
            return exec_err!("{WITHIN}: the limit must be a whole number of milliseconds");
        };
        let a = epoch_millis(&a.to_array(rows)?, &args.arg_fields[0])?;
        let b = epoch_millis(&b.to_array(rows)?, &args.arg_fields[1])?;
        let within: BooleanArray = a
            .iter()
            .zip(b.iter())
            .map(|(a, b)| Some(a?.abs_diff(b?) <= limit.unsigned_abs()))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(within)))
    }
}

/// A time column as epoch milliseconds: a timestamp of any unit, or an
/// epoch number in the unit its field names (milliseconds by default).
fn epoch_millis(values: &ArrayRef, field: &Field) -> Result<Int64Array> {
    if let DataType::Timestamp(..) = values.data_type() {
        let millis = cast(values, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
        let millis = cast(&millis, &DataType::Int64)?;
        return Ok(millis.as_primitive::<Int64Type>().clone());
    }
    let numbers = cast(values, &DataType::Int64)?;
    let unit_nanos: i64 = field
        .metadata()
        .get(EPOCH_UNIT)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    Ok(numbers
        .as_primitive::<Int64Type>()
        .iter()
        .map(|n| {
            n.and_then(|n| i64::try_from(i128::from(n) * i128::from(unit_nanos) / 1_000_000).ok())
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::TimestampSecondArray;
    use datafusion::config::ConfigOptions;

    fn invoke(a: ArrayRef, b: ArrayRef, limit: i64) -> Vec<Option<bool>> {
        let fields = [
            a.data_type().clone(),
            b.data_type().clone(),
            DataType::Int64,
        ]
        .into_iter()
        .map(|t| Arc::new(Field::new("t", t, true)))
        .collect();
        let out = within_udf()
            .invoke_with_args(ScalarFunctionArgs {
                number_rows: a.len(),
                args: vec![
                    ColumnarValue::Array(a),
                    ColumnarValue::Array(b),
                    ColumnarValue::Scalar(ScalarValue::Int64(Some(limit))),
                ],
                arg_fields: fields,
                return_field: Arc::new(Field::new("w", DataType::Boolean, true)),
                config_options: Arc::new(ConfigOptions::default()),
            })
            .unwrap();
        let ColumnarValue::Array(out) = out else {
            panic!("an array");
        };
        out.as_boolean().iter().collect()
    }

    #[test]
    fn as_a_predicate_it_keeps_times_at_most_the_limit_apart() {
        let a: ArrayRef = Arc::new(TimestampSecondArray::from(vec![Some(100), Some(100), None]));
        let b: ArrayRef = Arc::new(Int64Array::from(vec![
            Some(130_000),
            Some(131_000),
            Some(1),
        ]));
        assert_eq!(invoke(a, b, 30_000), vec![Some(true), Some(false), None]);
    }
}
