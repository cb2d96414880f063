//! Time arithmetic on epoch-number columns.
//!
//! Event time often arrives as an epoch number (`ts BIGINT` holding epoch
//! milliseconds). Such a column keeps its numbers — `SELECT ts` prints what
//! the source sent — but it is a time: the source says its unit (the
//! event-time field's `'event.time.format'`, or `'time.format.<column>'`),
//! and the planner marks the column with that unit ([`with_epoch_units`]).
//! Then, while DataFusion plans an expression ([`EpochArithmetic`]):
//!
//! - `ts + INTERVAL '1' HOUR` and `ts - INTERVAL ...` are `ts + 3600000`:
//!   a number in the column's unit, which compares with the column itself
//!   (`s.ts BETWEEN o.ts AND o.ts + INTERVAL '10' SECOND`, in joins, WHERE
//!   and SELECT alike);
//! - `ts >= TIMESTAMP '2026-01-01 00:00:00'` compares `ts` read in its unit
//!   as a timestamp with the timestamp.
//!
//! An interval on a number column with no unit is an error that says how
//! to give it one.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::{plan_err, DFSchema, Result, ScalarValue};
use datafusion::logical_expr::expr::Cast;
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult, RawBinaryExpr};
use datafusion::logical_expr::{lit, BinaryExpr, Expr, ExprSchemable, Operator};
use datafusion::sql::sqlparser::ast::BinaryOperator;

use crate::event_time::EventTime;
use crate::time_format::TimeFormats;

/// Field metadata marking a number column as an epoch time: how many
/// nanoseconds one unit of it is (`1000000` for epoch milliseconds).
pub const EPOCH_UNIT: &str = "velostream.epoch_unit_nanos";

/// `schema` with the integer time columns marked with their epoch unit:
/// the event-time field, and columns with a `'time.format.<column>'`.
pub fn with_epoch_units(
    schema: &SchemaRef,
    event_time: &EventTime,
    formats: &TimeFormats,
) -> SchemaRef {
    let unit_of = |field: &Field| -> Option<i64> {
        if !field.data_type().is_integer() {
            return None;
        }
        let format = if event_time.field.as_deref() == Some(field.name()) {
            formats.of(field.name())
        } else {
            formats.columns.get(field.name())?
        };
        Some(format.nanos_per_unit())
    };
    if !schema.fields().iter().any(|f| unit_of(f).is_some()) {
        return schema.clone();
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match unit_of(f) {
            Some(unit) => {
                let mut metadata = f.metadata().clone();
                metadata.insert(EPOCH_UNIT.to_string(), unit.to_string());
                f.as_ref().clone().with_metadata(metadata)
            }
            None => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The Arrow unit of timestamps counted in units of `unit_nanos`.
fn time_unit(unit_nanos: i64) -> TimeUnit {
    match unit_nanos {
        1_000_000_000 => TimeUnit::Second,
        1_000 => TimeUnit::Microsecond,
        1 => TimeUnit::Nanosecond,
        _ => TimeUnit::Millisecond,
    }
}

/// The epoch unit of `expr` in nanoseconds, when it is a marked column of `schema`.
pub fn epoch_unit(expr: &Expr, schema: &DFSchema) -> Option<i64> {
    let Expr::Column(column) = expr else {
        return None;
    };
    let (_, field) = schema.qualified_field_from_column(column).ok()?;
    field.metadata().get(EPOCH_UNIT)?.parse().ok()
}

/// A constant interval's length in nanoseconds; `Err` for one counted in
/// months, which have no fixed length.
fn interval_nanos(expr: &Expr) -> Option<Result<i128>> {
    let Expr::Literal(value, _) = expr else {
        return None;
    };
    Some(match value {
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => {
            Ok(i128::from(v.days) * 86_400_000_000_000 + i128::from(v.nanoseconds))
        }
        ScalarValue::IntervalDayTime(Some(v)) => {
            Ok((i128::from(v.days) * 86_400_000 + i128::from(v.milliseconds)) * 1_000_000)
        }
        ScalarValue::IntervalMonthDayNano(Some(_)) | ScalarValue::IntervalYearMonth(Some(_)) => {
            plan_err!("an interval in months or years has no fixed length in an epoch number; write it in days, hours, minutes or seconds")
        }
        _ => return None,
    })
}

/// Plans interval and timestamp arithmetic on epoch-number columns (see
/// the module documentation).
#[derive(Debug, Default)]
pub struct EpochArithmetic;

impl ExprPlanner for EpochArithmetic {
    fn plan_binary_op(
        &self,
        expr: RawBinaryExpr,
        schema: &DFSchema,
    ) -> Result<PlannerResult<RawBinaryExpr>> {
        let op = match &expr.op {
            BinaryOperator::Plus => Operator::Plus,
            BinaryOperator::Minus => Operator::Minus,
            BinaryOperator::Eq => Operator::Eq,
            BinaryOperator::NotEq => Operator::NotEq,
            BinaryOperator::Lt => Operator::Lt,
            BinaryOperator::LtEq => Operator::LtEq,
            BinaryOperator::Gt => Operator::Gt,
            BinaryOperator::GtEq => Operator::GtEq,
            _ => return Ok(PlannerResult::Original(expr)),
        };
        if matches!(op, Operator::Plus | Operator::Minus) {
            return offset(expr, op, schema);
        }
        compare_with_timestamp(expr, op, schema)
    }
}

/// `epoch ± interval` (and `interval + epoch`) as a number in the column's unit.
fn offset(
    expr: RawBinaryExpr,
    op: Operator,
    schema: &DFSchema,
) -> Result<PlannerResult<RawBinaryExpr>> {
    let (number, interval, interval_first) = match (
        interval_nanos(&expr.left).is_some(),
        interval_nanos(&expr.right).is_some(),
    ) {
        (false, true) => (&expr.left, &expr.right, false),
        (true, false) if op == Operator::Plus => (&expr.right, &expr.left, true),
        _ => return Ok(PlannerResult::Original(expr)),
    };
    let Some(number_type) = number.get_type(schema).ok().filter(DataType::is_numeric) else {
        return Ok(PlannerResult::Original(expr));
    };
    let unit = epoch_unit(number, schema).filter(|_| number_type.is_integer());
    let Some(unit) = unit else {
        return plan_err!(
            "cannot add an INTERVAL to {number} ({number_type}): it is not a time. Declare the column TIMESTAMP, or make it the event-time field ('event.time.field', with 'event.time.format' = 'epoch_millis' or 'epoch_seconds') or give it a unit with 'time.format.<column>' = 'epoch_millis', and an interval added to it is a number in that unit"
        );
    };
    let nanos = interval_nanos(interval).expect("checked above")?;
    let per_unit = i128::from(unit);
    if nanos % per_unit != 0 {
        return plan_err!(
            "the interval is not a whole number of {} (the epoch unit of {number}); use a coarser interval or a finer unit",
            unit_name(unit)
        );
    }
    let Ok(units) = i64::try_from(nanos / per_unit) else {
        return plan_err!("the interval is too long for an epoch number");
    };
    let units = lit(ScalarValue::Int64(Some(units)));
    let number = Expr::Cast(Cast::new(Box::new(number.clone()), DataType::Int64));
    let (left, right) = if interval_first {
        (units, number)
    } else {
        (number, units)
    };
    Ok(PlannerResult::Planned(Expr::BinaryExpr(BinaryExpr::new(
        Box::new(left),
        op,
        Box::new(right),
    ))))
}

fn unit_name(unit_nanos: i64) -> &'static str {
    match time_unit(unit_nanos) {
        TimeUnit::Second => "seconds",
        TimeUnit::Microsecond => "microseconds",
        TimeUnit::Nanosecond => "nanoseconds",
        TimeUnit::Millisecond => "milliseconds",
    }
}

/// `epoch OP timestamp` (either way round) compares the column read in its
/// unit as a timestamp.
fn compare_with_timestamp(
    expr: RawBinaryExpr,
    op: Operator,
    schema: &DFSchema,
) -> Result<PlannerResult<RawBinaryExpr>> {
    let is_timestamp = |e: &Expr| {
        e.get_type(schema)
            .is_ok_and(|t| matches!(t, DataType::Timestamp(..)))
    };
    let as_timestamp = |e: &Expr, unit: i64| {
        Expr::Cast(Cast::new(
            Box::new(Expr::Cast(Cast::new(Box::new(e.clone()), DataType::Int64))),
            DataType::Timestamp(time_unit(unit), None),
        ))
    };
    let (left, right) = match (
        epoch_unit(&expr.left, schema),
        epoch_unit(&expr.right, schema),
    ) {
        (Some(unit), None) if is_timestamp(&expr.right) => {
            (as_timestamp(&expr.left, unit), expr.right.clone())
        }
        (None, Some(unit)) if is_timestamp(&expr.left) => {
            (expr.left.clone(), as_timestamp(&expr.right, unit))
        }
        _ => return Ok(PlannerResult::Original(expr)),
    };
    Ok(PlannerResult::Planned(Expr::BinaryExpr(BinaryExpr::new(
        Box::new(left),
        op,
        Box::new(right),
    ))))
}
