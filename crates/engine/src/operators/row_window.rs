//! Row functions over partitions — `ROW_NUMBER`, `RANK`, `DENSE_RANK`,
//! `LAG`, `LEAD` (rows wait for their partition's next rows), and aggregates over `ROWS BETWEEN n PRECEDING AND CURRENT ROW`
//! or from the partition's first row — computed as each row arrives, in
//! arrival order within its partition. State per partition is bounded: a
//! counter, the previous ORDER BY key, and at most n (or the LAG offset)
//! previous values.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, BinaryArray, UInt32Array, UInt64Array};
use datafusion::arrow::datatypes::{
    DataType, Field, FieldRef, Schema, SchemaRef, UInt32Type, UInt64Type,
};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::PhysicalExpr;

use super::group_keys::GroupKeys;
use super::{evaluate_all, Operator, RowIsolation, StateSize};
use crate::error::{EngineError, Result};
use crate::state::{Checkpointable, OperatorSnapshot};

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
    /// `LEAD(value, offset, default)`: known only when the partition's
    /// `offset`-th next row arrives (or at the end of input), so rows wait.
    Lead {
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
    /// Rows still waiting for their LEAD value, oldest first.
    waiting: VecDeque<u64>,
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
    /// Arrival number of the next row.
    next_id: u64,
    /// Rows waiting for LEAD values, by arrival number.
    waiting: BTreeMap<u64, WaitingRow>,
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
        Ok(Self {
            exprs,
            schema,
            next_id: 0,
            waiting: BTreeMap::new(),
        })
    }
}

fn row_values(columns: &[ArrayRef], row: usize) -> Result<Vec<ScalarValue>> {
    Ok(columns
        .iter()
        .map(|c| ScalarValue::try_from_array(c, row))
        .collect::<datafusion::common::Result<_>>()?)
}

impl ExprState {
    /// Everything this function evaluates over `batch` (what can fail for
    /// a row), before any state changes.
    fn inputs(&self, batch: &RecordBatch) -> Result<RowInputs> {
        Ok(RowInputs {
            rows: batch.num_rows(),
            keys: evaluate_all(&self.expr.partition_by, batch)?,
            args: evaluate_all(&self.expr.args, batch)?,
            order: evaluate_all(&self.expr.order_by, batch)?,
        })
    }

    /// The expressions [`inputs`](Self::inputs) evaluates.
    fn input_expressions(&self) -> impl Iterator<Item = Arc<dyn PhysicalExpr>> + '_ {
        self.expr
            .partition_by
            .iter()
            .chain(&self.expr.args)
            .chain(&self.expr.order_by)
            .cloned()
    }

    /// The expression's value for every row of `batch` (a null placeholder
    /// for LEAD), pushing `(row id, value)` for LEAD values that became known.
    fn column(
        &mut self,
        inputs: RowInputs,
        first_id: u64,
        fills: &mut Vec<(u64, ScalarValue)>,
    ) -> Result<ArrayRef> {
        let RowInputs {
            rows,
            keys,
            args,
            order,
        } = inputs;
        let mut group_of_row = std::mem::take(&mut self.group_of_row);
        self.keys.intern(&keys, rows, &mut group_of_row)?;
        self.partitions
            .resize_with(self.keys.len(), Partition::default);
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
                RowFunction::Lead { offset, default } => {
                    let value = row_values(&args[..1], row)?.remove(0);
                    if *offset == 0 {
                        value
                    } else {
                        p.waiting.push_back(first_id + row as u64);
                        if p.waiting.len() > *offset {
                            let id = p.waiting.pop_front().expect("longer than offset");
                            fills.push((id, value));
                        }
                        ScalarValue::try_from(default.data_type())?
                    }
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

impl ExprState {
    /// At the end of input every waiting row gets the LEAD default.
    fn finish(&mut self, fills: &mut Vec<(u64, ScalarValue)>) {
        if let RowFunction::Lead { default, .. } = &self.expr.function {
            for p in &mut self.partitions {
                fills.extend(p.waiting.drain(..).map(|id| (id, default.clone())));
            }
        }
    }

    fn waits(&self) -> bool {
        matches!(self.expr.function, RowFunction::Lead { offset, .. } if offset > 0)
    }
}

/// A row held back until its LEAD values are known.
struct WaitingRow {
    values: Vec<ScalarValue>,
    missing: usize,
}

impl RowWindowOperator {
    /// Sets LEAD values (`(column, row id, value)`) and emits every row that
    /// is now complete, in arrival order among themselves.
    fn release(
        &mut self,
        fills: Vec<(usize, u64, ScalarValue)>,
        out: &mut Vec<RecordBatch>,
    ) -> Result<()> {
        for (column, id, value) in fills {
            let row = self.waiting.get_mut(&id).expect("a waiting row");
            row.values[column] = value;
            row.missing -= 1;
        }
        let ready: Vec<u64> = self
            .waiting
            .iter()
            .filter(|(_, r)| r.missing == 0)
            .map(|(id, _)| *id)
            .collect();
        if ready.is_empty() {
            return Ok(());
        }
        let rows: Vec<WaitingRow> = ready
            .iter()
            .map(|id| self.waiting.remove(id).expect("listed"))
            .collect();
        let columns = (0..self.schema.fields().len())
            .map(|c| ScalarValue::iter_to_array(rows.iter().map(|r| r.values[c].clone())))
            .collect::<datafusion::common::Result<Vec<_>>>()?;
        out.push(super::grouped::conform(&self.schema, columns)?);
        Ok(())
    }
}

/// What one row function evaluates over a batch.
struct RowInputs {
    rows: usize,
    keys: Vec<ArrayRef>,
    args: Vec<ArrayRef>,
    order: Vec<ArrayRef>,
}

impl Operator for RowWindowOperator {
    fn name(&self) -> &'static str {
        "row_window"
    }

    fn state_size(&self) -> StateSize {
        StateSize {
            rows: 0,
            windows: 0,
            keys: self.exprs.iter().map(|e| e.partitions.len()).sum(),
        }
    }

    fn state(&mut self) -> Option<&mut dyn Checkpointable> {
        Some(self)
    }

    fn isolation(&self) -> RowIsolation {
        RowIsolation::Expressions(
            self.exprs
                .iter()
                .flat_map(|e| e.input_expressions())
                .collect(),
        )
    }

    fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        // every function's inputs first: a row that fails changes nothing
        let evaluated = self
            .exprs
            .iter()
            .map(|e| e.inputs(&batch))
            .collect::<Result<Vec<_>>>()?;
        let first_id = self.next_id;
        self.next_id += batch.num_rows() as u64;
        let inputs = batch.num_columns();
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        let mut fills = Vec::new();
        for ((i, state), evaluated) in self.exprs.iter_mut().enumerate().zip(evaluated) {
            let mut found = Vec::new();
            columns.push(state.column(evaluated, first_id, &mut found)?);
            fills.extend(found.into_iter().map(|(id, v)| (inputs + i, id, v)));
        }
        let waiting_exprs = self.exprs.iter().filter(|e| e.waits()).count();
        if waiting_exprs == 0 {
            out.push(super::grouped::conform(&self.schema, columns)?);
            return Ok(());
        }
        for row in 0..batch.num_rows() {
            let values = row_values(&columns, row)?;
            self.waiting.insert(
                first_id + row as u64,
                WaitingRow {
                    values,
                    missing: waiting_exprs,
                },
            );
        }
        self.release(fills, out)
    }

    fn finish(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        let inputs = self.schema.fields().len() - self.exprs.len();
        let mut fills = Vec::new();
        for (i, state) in self.exprs.iter_mut().enumerate() {
            let mut found = Vec::new();
            state.finish(&mut found);
            fills.extend(found.into_iter().map(|(id, v)| (inputs + i, id, v)));
        }
        self.release(fills, out)
    }
}

/// Rows of scalars as Arrow IPC bytes (empty bytes for no rows).
fn encode_rows(rows: &[Vec<ScalarValue>]) -> Result<Vec<u8>> {
    let Some(first) = rows.first() else {
        return Ok(Vec::new());
    };
    let columns = (0..first.len())
        .map(|c| ScalarValue::iter_to_array(rows.iter().map(|r| r[c].clone())))
        .collect::<datafusion::common::Result<Vec<_>>>()?;
    let fields: Vec<Field> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| Field::new(format!("c{i}"), c.data_type().clone(), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    OperatorSnapshot {
        schema,
        batches: vec![batch],
    }
    .to_bytes()
}

fn decode_rows(bytes: &[u8]) -> Result<Vec<Vec<ScalarValue>>> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut rows = Vec::new();
    for batch in OperatorSnapshot::from_bytes(bytes)?.batches {
        for row in 0..batch.num_rows() {
            rows.push(row_values(batch.columns(), row)?);
        }
    }
    Ok(rows)
}

/// `expr` value of the row that carries the rows waiting for LEAD values.
const WAITING_ROWS: u32 = u32::MAX;

impl Checkpointable for RowWindowOperator {
    /// One row per (expression, partition) with its counters and, encoded as
    /// Arrow IPC, its ORDER BY key, recent values, running aggregate state
    /// and LEAD waiting list; plus one row holding the rows that wait.
    fn snapshot(&mut self) -> Result<OperatorSnapshot> {
        let mut exprs = Vec::new();
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let (mut counts, mut ranks, mut dense) = (Vec::new(), Vec::new(), Vec::new());
        let mut blobs: [Vec<Vec<u8>>; 4] = Default::default();
        for (e, state) in self.exprs.iter_mut().enumerate() {
            for (g, p) in state.partitions.iter_mut().enumerate() {
                exprs.push(e as u32);
                keys.push(state.keys.row_bytes(g).to_vec());
                counts.push(p.rows);
                ranks.push(p.rank);
                dense.push(p.dense_rank);
                blobs[0].push(match &p.last_order_key {
                    Some(k) => encode_rows(&[k
                        .iter()
                        .cloned()
                        .chain([ScalarValue::Boolean(Some(true))])
                        .collect()])?,
                    None => Vec::new(),
                });
                blobs[1].push(encode_rows(&p.recent.iter().cloned().collect::<Vec<_>>())?);
                blobs[2].push(match &mut p.running {
                    Some(acc) => encode_rows(&[acc.state()?])?,
                    None => Vec::new(),
                });
                blobs[3].push(encode_rows(
                    &p.waiting
                        .iter()
                        .map(|id| vec![ScalarValue::UInt64(Some(*id))])
                        .collect::<Vec<_>>(),
                )?);
            }
        }
        let waiting: Vec<Vec<ScalarValue>> = self
            .waiting
            .iter()
            .map(|(id, r)| {
                let mut v = r.values.clone();
                v.push(ScalarValue::UInt64(Some(*id)));
                v.push(ScalarValue::UInt64(Some(r.missing as u64)));
                v
            })
            .collect();
        exprs.push(WAITING_ROWS);
        keys.push(Vec::new());
        counts.push(self.next_id);
        ranks.push(0);
        dense.push(0);
        blobs[0].push(Vec::new());
        blobs[1].push(encode_rows(&waiting)?);
        blobs[2].push(Vec::new());
        blobs[3].push(Vec::new());

        let binary = |name: &str| Field::new(name, DataType::Binary, false);
        let schema = Arc::new(Schema::new(vec![
            Field::new("expr", DataType::UInt32, false),
            binary("partition_key"),
            Field::new("rows", DataType::UInt64, false),
            Field::new("rank", DataType::UInt64, false),
            Field::new("dense_rank", DataType::UInt64, false),
            binary("order_key"),
            binary("recent"),
            binary("running"),
            binary("waiting"),
        ]));
        let [order, recent, running, waiting_ids] = blobs;
        let bin = |v: Vec<Vec<u8>>| -> ArrayRef { Arc::new(BinaryArray::from_iter_values(v)) };
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(UInt32Array::from(exprs)),
                bin(keys),
                Arc::new(UInt64Array::from(counts)),
                Arc::new(UInt64Array::from(ranks)),
                Arc::new(UInt64Array::from(dense)),
                bin(order),
                bin(recent),
                bin(running),
                bin(waiting_ids),
            ],
        )?;
        Ok(OperatorSnapshot {
            schema,
            batches: vec![batch],
        })
    }

    fn restore(&mut self, snapshot: OperatorSnapshot) -> Result<()> {
        let bad = || EngineError::State("malformed row-function snapshot".into());
        for batch in &snapshot.batches {
            let exprs = batch
                .column(0)
                .as_primitive_opt::<UInt32Type>()
                .ok_or_else(bad)?;
            let u64s = |c: usize| {
                batch
                    .column(c)
                    .as_primitive_opt::<UInt64Type>()
                    .ok_or_else(bad)
            };
            let (counts, ranks, dense) = (u64s(2)?, u64s(3)?, u64s(4)?);
            let bins = |c: usize| batch.column(c).as_binary_opt::<i32>().ok_or_else(bad);
            let (keys, order, recent, running, waiting) =
                (bins(1)?, bins(5)?, bins(6)?, bins(7)?, bins(8)?);
            for row in 0..batch.num_rows() {
                let e = exprs.value(row);
                if e == WAITING_ROWS {
                    self.next_id = counts.value(row);
                    for mut values in decode_rows(recent.value(row))? {
                        let missing = values.pop().ok_or_else(bad)?;
                        let id = values.pop().ok_or_else(bad)?;
                        let (ScalarValue::UInt64(Some(id)), ScalarValue::UInt64(Some(missing))) =
                            (id, missing)
                        else {
                            return Err(bad());
                        };
                        self.waiting.insert(
                            id,
                            WaitingRow {
                                values,
                                missing: missing as usize,
                            },
                        );
                    }
                    continue;
                }
                let state = self.exprs.get_mut(e as usize).ok_or_else(bad)?;
                let g = state.keys.intern_row_bytes(keys.value(row));
                state
                    .partitions
                    .resize_with(state.keys.len(), Partition::default);
                let p = &mut state.partitions[g];
                p.rows = counts.value(row);
                p.rank = ranks.value(row);
                p.dense_rank = dense.value(row);
                p.last_order_key = decode_rows(order.value(row))?.pop().map(|mut k| {
                    k.pop(); // the marker that tells an empty key from none
                    k
                });
                p.recent = decode_rows(recent.value(row))?.into();
                p.waiting = decode_rows(waiting.value(row))?
                    .into_iter()
                    .map(|v| match v.first() {
                        Some(ScalarValue::UInt64(Some(id))) => Ok(*id),
                        _ => Err(bad()),
                    })
                    .collect::<Result<_>>()?;
                if let (Some(state_values), RowFunction::Aggregate { function, .. }) =
                    (decode_rows(running.value(row))?.pop(), &state.expr.function)
                {
                    let mut acc = function.create_accumulator()?;
                    let arrays = state_values
                        .iter()
                        .map(|v| v.to_array())
                        .collect::<datafusion::common::Result<Vec<_>>>()?;
                    acc.merge_batch(&arrays)?;
                    p.running = Some(acc);
                }
            }
        }
        Ok(())
    }
}
