//! Recognising stream–stream interval joins written in standard SQL: `ON
//! a.k = b.k AND b.ts BETWEEN a.ts + lower AND a.ts + upper` (or the same
//! bounds as `>=` / `<=` comparisons). The bounds become an
//! [`IntervalBounds`]; the rest of the condition stays a filter. A `WITHIN`
//! clause needs no recognising: it arrives as a marker
//! ([`crate::within_marker`]).

use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{lit, Between, BinaryExpr, Expr, Operator};

use crate::epoch_time::epoch_unit;

/// `right_time BETWEEN left_time + lower_ms AND left_time + upper_ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct IntervalBounds {
    pub left_time: Expr,
    pub right_time: Expr,
    pub lower_ms: i64,
    pub upper_ms: i64,
}

/// Splits a join filter into interval bounds and the remaining condition;
/// `None` when the filter has no complete pair of bounds.
pub fn extract(
    filter: &Expr,
    left: &DFSchema,
    right: &DFSchema,
) -> Option<(IntervalBounds, Option<Expr>)> {
    let mut lower: Option<(Expr, Expr, i64)> = None;
    let mut upper: Option<(Expr, Expr, i64)> = None;
    let mut rest = Vec::new();
    for term in split_conjunction(filter) {
        let found = match term {
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) => {
                match (
                    side_bound(expr, low, left, right),
                    side_bound(expr, high, left, right),
                ) {
                    (Some(l), Some(h)) => {
                        lower = Some(l);
                        upper = Some(h);
                        true
                    }
                    _ => false,
                }
            }
            Expr::BinaryExpr(BinaryExpr {
                left: a,
                op,
                right: b,
            }) => {
                // normalise to `right_time OP left_time + offset`
                let (r, x, op) = match op {
                    Operator::GtEq | Operator::Gt | Operator::LtEq | Operator::Lt
                        if is_side(a, right) =>
                    {
                        (a, b, *op)
                    }
                    Operator::GtEq | Operator::Gt | Operator::LtEq | Operator::Lt
                        if is_side(b, right) =>
                    {
                        (b, a, flip(*op))
                    }
                    _ => (a, b, Operator::Eq),
                };
                match (op, side_bound(r, x, left, right)) {
                    (Operator::GtEq | Operator::Gt, Some(bound)) => {
                        lower = Some(bound);
                        true
                    }
                    (Operator::LtEq | Operator::Lt, Some(bound)) => {
                        upper = Some(bound);
                        true
                    }
                    _ => false,
                }
            }
            _ => false,
        };
        if !found {
            rest.push(term.clone());
        }
    }
    let ((right_time, left_time, lower_ms), (right_time2, left_time2, upper_ms)) = (lower?, upper?);
    if right_time != right_time2 || left_time != left_time2 || lower_ms > upper_ms {
        return None;
    }
    Some((
        IntervalBounds {
            left_time,
            right_time,
            lower_ms,
            upper_ms,
        },
        conjunction(rest),
    ))
}

/// `(right column, left column, offset ms)` when `r` is a column of the
/// right side and `x` is a left column plus or minus a constant interval.
fn side_bound(r: &Expr, x: &Expr, left: &DFSchema, right: &DFSchema) -> Option<(Expr, Expr, i64)> {
    if !is_side(r, right) {
        return None;
    }
    let (column, offset) = match strip_cast(x) {
        Expr::BinaryExpr(BinaryExpr {
            left: c,
            op: Operator::Plus,
            right: i,
        }) => (c.as_ref(), interval_ms(i, unit_of(c, left))?),
        Expr::BinaryExpr(BinaryExpr {
            left: c,
            op: Operator::Minus,
            right: i,
        }) => (c.as_ref(), -interval_ms(i, unit_of(c, left))?),
        other => (other, 0),
    };
    is_side(column, left).then(|| {
        (
            in_millis(strip_cast(r), right),
            in_millis(strip_cast(column), left),
            offset,
        )
    })
}

/// Nanoseconds per unit of an epoch-number time column (`None` for a timestamp).
fn unit_of(e: &Expr, schema: &DFSchema) -> Option<i64> {
    epoch_unit(strip_cast(e), schema)
}

/// A time column as the join reads it: a timestamp as it is, an epoch
/// number converted to epoch milliseconds.
pub(crate) fn in_millis(column: &Expr, schema: &DFSchema) -> Expr {
    match unit_of(column, schema) {
        Some(n) if n > 1_000_000 => column.clone() * lit(n / 1_000_000),
        Some(n) if n < 1_000_000 => column.clone() / lit(1_000_000 / n),
        _ => column.clone(),
    }
}

fn strip_cast(e: &Expr) -> &Expr {
    match e {
        Expr::Cast(c) => strip_cast(&c.expr),
        Expr::TryCast(c) => strip_cast(&c.expr),
        other => other,
    }
}

/// True when `e` is (a cast of) a column of `schema`.
pub(crate) fn is_side(e: &Expr, schema: &DFSchema) -> bool {
    matches!(strip_cast(e), Expr::Column(c) if schema.has_column(c))
}

/// A constant offset in milliseconds; a plain number is in the epoch unit
/// of the column it is added to (`unit_nanos`), milliseconds without one.
fn interval_ms(e: &Expr, unit_nanos: Option<i64>) -> Option<i64> {
    match strip_cast(e) {
        Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(v)), _) if v.months == 0 => {
            Some(v.days as i64 * 86_400_000 + v.nanoseconds / 1_000_000)
        }
        Expr::Literal(ScalarValue::IntervalDayTime(Some(v)), _) => {
            Some(v.days as i64 * 86_400_000 + v.milliseconds as i64)
        }
        // a plain number is in the unit of the epoch column it offsets
        Expr::Literal(v, _) if v.data_type().is_integer() => {
            match v
                .cast_to(&datafusion::arrow::datatypes::DataType::Int64)
                .ok()?
            {
                ScalarValue::Int64(n) => {
                    let per_unit = i128::from(unit_nanos.unwrap_or(1_000_000));
                    n.and_then(|n| i64::try_from(i128::from(n) * per_unit / 1_000_000).ok())
                }
                _ => None,
            }
        }
        _ => None,
    }
}

fn flip(op: Operator) -> Operator {
    match op {
        Operator::Gt => Operator::Lt,
        Operator::GtEq => Operator::LtEq,
        Operator::Lt => Operator::Gt,
        Operator::LtEq => Operator::GtEq,
        other => other,
    }
}
