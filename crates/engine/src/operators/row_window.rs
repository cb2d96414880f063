//! Row functions over partitions — `ROW_NUMBER`, `RANK`, `DENSE_RANK`,
//! `LAG`, and aggregates over `ROWS BETWEEN n PRECEDING AND CURRENT ROW`
//! or from the partition's first row — computed as each row arrives, in
//! arrival order within its partition. State per partition is bounded: a
//! counter, the previous ORDER BY key, and at most n (or the LAG offset)
//! previous values.

use std::collections::VecDeque;
use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{FieldRef, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::PhysicalExpr;

use super::group_keys::GroupKeys;
use super::{evaluate_all, Operator, StateSize};
use crate::error::Result;

/// What one `f(...) OVER (...)` computes.
pub enum RowFunction {
    RowNumber,
    Rank {
        dense: bool,
    },
    /// `LAG(value, offset, default)`.
    Lag {
        offset: usize,
        default: ScalarValue,
    },
    /// An aggregate over the last `rows` rows (`None`: every row so far).
    Aggregate {
        function: Arc<AggregateFunctionExpr>,
        rows: Option<usize>,
    },
}

/// One window expression with its partitioning.
pub struct RowWindowExpr {
    pub function: RowFunction,
    pub args: Vec<Arc<dyn PhysicalExpr>>,
    pub partition_by: Vec<Arc<dyn PhysicalExpr>>,
    pub partition_fields: Vec<FieldRef>,
    pub order_by: Vec<Arc<dyn PhysicalExpr>>,
}

/// Per-partition state of one expression.
#[derive(Default)]
struct Partition {
    rows: u64,
    rank: u64,
    dense_rank: u64,
    last_order_key: Option<Vec<ScalarValue>>,
    /// Previous argument values (LAG, bounded frames), newest last.
    recent: VecDeque<Vec<ScalarValue>>,
    /// Running accumulator for frames from the first row.
    running: Option<Box<dyn Accumulator>>,
}

struct ExprState {
    expr: RowWindowExpr,
    keys: GroupKeys,
    partitions: Vec<Partition>,
    group_of_row: Vec<usize>,
}

pub struct RowWindowOperator {
    exprs: Vec<ExprState>,
    schema: SchemaRef,
}

impl RowWindowOperator {
    pub fn new(exprs: Vec<RowWindowExpr>, schema: SchemaRef) -> Result<Self> {
        let exprs = exprs
            .into_iter()
            .map(|expr| {
                Ok(ExprState {
                    keys: GroupKeys::new(&expr.partition_fields)?,
                    expr,
                    partitions: Vec::new(),
                    group_of_row: Vec::new(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { exprs, schema })
    }
}

fn row_values(columns: &[ArrayRef], row: usize) -> Result<Vec<ScalarValue>> {
    Ok(columns
        .iter()
        .map(|c| ScalarValue::try_from_array(c, row))
        .collect::<datafusion::common::Result<_>>()?)
}

impl ExprState {
    fn column(&mut self, batch: &RecordBatch) -> Result<ArrayRef> {
        let rows = batch.num_rows();
        let keys = evaluate_all(&self.expr.partition_by, batch)?;
        let mut group_of_row = std::mem::take(&mut self.group_of_row);
        self.keys.intern(&keys, rows, &mut group_of_row)?;
        self.partitions
            .resize_with(self.keys.len(), Partition::default);
        let args = evaluate_all(&self.expr.args, batch)?;
        let order = evaluate_all(&self.expr.order_by, batch)?;
        let mut out = Vec::with_capacity(rows);
        for (row, &g) in group_of_row.iter().enumerate() {
            let p = &mut self.partitions[g];
            p.rows += 1;
            let value = match &self.expr.function {
                RowFunction::RowNumber => ScalarValue::UInt64(Some(p.rows)),
                RowFunction::Rank { dense } => {
                    let key = row_values(&order, row)?;
                    if p.last_order_key.as_ref() != Some(&key) {
                        p.rank = p.rows;
                        p.dense_rank += 1;
                        p.last_order_key = Some(key);
                    }
                    ScalarValue::UInt64(Some(if *dense { p.dense_rank } else { p.rank }))
                }
                RowFunction::Lag { offset, default } => {
                    let value = if *offset == 0 {
                        row_values(&args[..1], row)?.remove(0)
                    } else if p.recent.len() >= *offset {
                        p.recent[p.recent.len() - offset][0].clone()
                    } else {
                        default.clone()
                    };
                    if *offset > 0 {
                        p.recent.push_back(row_values(&args[..1], row)?);
                        if p.recent.len() > *offset {
                            p.recent.pop_front();
                        }
                    }
                    value
                }
                RowFunction::Aggregate {
                    function,
                    rows: None,
                } => {
                    if p.running.is_none() {
                        p.running = Some(function.create_accumulator()?);
                    }
                    let acc = p.running.as_mut().expect("created above");
                    let slices: Vec<ArrayRef> = args.iter().map(|a| a.slice(row, 1)).collect();
                    acc.update_batch(&slices)?;
                    acc.evaluate()?
                }
                RowFunction::Aggregate {
                    function,
                    rows: Some(n),
                } => {
                    p.recent.push_back(row_values(&args, row)?);
                    if p.recent.len() > *n {
                        p.recent.pop_front();
                    }
                    let mut acc = function.create_accumulator()?;
                    let columns = (0..args.len())
                        .map(|i| ScalarValue::iter_to_array(p.recent.iter().map(|v| v[i].clone())))
                        .collect::<datafusion::common::Result<Vec<_>>>()?;
                    acc.update_batch(&columns)?;
                    acc.evaluate()?
                }
            };
            out.push(value);
        }
        self.group_of_row = group_of_row;
        Ok(ScalarValue::iter_to_array(out)?)
    }
}

impl Operator for RowWindowOperator {
    fn name(&self) -> &'static str {
        "row_window"
    }

    fn state_size(&self) -> StateSize {
        StateSize {
            windows: 0,
            keys: self.exprs.iter().map(|e| e.partitions.len()).sum(),
        }
    }

    fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        for state in &mut self.exprs {
            columns.push(state.column(&batch)?);
        }
        out.push(super::grouped::conform(&self.schema, columns)?);
        Ok(())
    }
}
