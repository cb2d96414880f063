//! Type checks as strict as the SQL standard where DataFusion would coerce
//! silently: a number compared with a text column, and GREATEST/LEAST over
//! arguments of different kinds (DataFusion turns `GREATEST(1, 'a')` into
//! text). A text literal may still be compared with a number
//! (`price > '100'`): as in PostgreSQL it is read as a number, and one that
//! is not a number fails at planning.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, ExprSchema};
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, LogicalPlan, Operator};

/// The kinds of value the standard keeps apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Number,
    Text,
    Time,
    Boolean,
}

fn kind(t: &DataType) -> Option<Kind> {
    match t {
        t if t.is_numeric() => Some(Kind::Number),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(Kind::Text),
        DataType::Date32
        | DataType::Date64
        | DataType::Time32(_)
        | DataType::Time64(_)
        | DataType::Timestamp(..)
        | DataType::Interval(_)
        | DataType::Duration(_) => Some(Kind::Time),
        DataType::Boolean => Some(Kind::Boolean),
        _ => None,
    }
}

/// The first expression of `plan` that mixes kinds of value the standard
/// keeps apart, as a message naming it and the types.
pub(crate) fn check_plan(plan: &LogicalPlan) -> Option<(String, String)> {
    let mut problem = None;
    let _ = plan.apply(|node| {
        let inputs = node.inputs();
        let schema = match inputs.as_slice() {
            [] => node.schema().as_ref().clone(),
            [one] => one.schema().as_ref().clone(),
            [first, rest @ ..] => {
                let mut joined = first.schema().as_ref().clone();
                for other in rest {
                    joined.merge(other.schema());
                }
                joined
            }
        };
        node.apply_expressions(|e| {
            e.apply(|x| {
                problem = check_expr(x, &schema);
                Ok(if problem.is_some() {
                    TreeNodeRecursion::Stop
                } else {
                    TreeNodeRecursion::Continue
                })
            })
        })?;
        Ok(if problem.is_some() {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    problem
}

fn check_expr(expr: &Expr, schema: &DFSchema) -> Option<(String, String)> {
    let type_of = |e: &Expr| e.get_type(schema as &dyn ExprSchema).ok();
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) if is_comparison(op) => {
            let (lt, rt) = (type_of(left)?, type_of(right)?);
            let literal = |e: &Expr| matches!(e, Expr::Literal(..));
            let mixed = match (kind(&lt)?, kind(&rt)?) {
                (Kind::Number, Kind::Text) | (Kind::Text, Kind::Number) => {
                    !literal(left) && !literal(right)
                }
                (Kind::Boolean, Kind::Number | Kind::Text)
                | (Kind::Number | Kind::Text, Kind::Boolean) => true,
                _ => false,
            };
            mixed.then(|| {
                (
                    format!("cannot compare {lt} with {rt} in `{expr}`"),
                    "CAST one side to the other's type, e.g. CAST(col AS BIGINT)".to_string(),
                )
            })
        }
        Expr::ScalarFunction(f) if matches!(f.func.name(), "greatest" | "least") => {
            let types: Vec<DataType> = f
                .args
                .iter()
                .filter_map(type_of)
                .filter(|t| !t.is_null())
                .collect();
            let first = kind(types.first()?);
            let other = types.iter().find(|t| kind(t) != first)?;
            Some((
                format!(
                    "{}() takes arguments of one kind, here {} and {other}",
                    f.func.name().to_uppercase(),
                    types[0]
                ),
                "CAST the arguments to one type".to_string(),
            ))
        }
        _ => None,
    }
}

fn is_comparison(op: &Operator) -> bool {
    matches!(
        op,
        Operator::Eq
            | Operator::NotEq
            | Operator::Lt
            | Operator::LtEq
            | Operator::Gt
            | Operator::GtEq
            | Operator::IsDistinctFrom
            | Operator::IsNotDistinctFrom
    )
}
