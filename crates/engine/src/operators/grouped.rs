//! The state of a grouped aggregation: group keys and one DataFusion
//! [`Accumulator`] per group and aggregate call. Used by the plain GROUP BY
//! operator (one instance) and the windowed one (one instance per open window).
//!
//! Accumulators let the current value of any group be read at any time
//! (what `EMIT CHANGES` needs) and their intermediate state be snapshotted
//! and merged back (what checkpoints need). Rows of a batch are reordered by
//! group once, then each group's accumulators see one contiguous slice.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BinaryArray, BooleanArray, UInt32Array};
use datafusion::arrow::compute::{cast_with_options, filter, take, CastOptions};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::PhysicalExpr;

use super::evaluate_all;
use super::group_keys::GroupKeys;
use crate::error::{EngineError, Result};
use crate::state::OperatorSnapshot;

/// One aggregate call of the query: the function, its argument
/// expressions and its optional `FILTER (WHERE ...)`.
pub struct AggregateCall {
    pub function: Arc<AggregateFunctionExpr>,
    pub args: Vec<Arc<dyn PhysicalExpr>>,
    pub filter: Option<Arc<dyn PhysicalExpr>>,
}

/// What a batch feeds an aggregation: its key columns and, per call, the
/// argument columns and the `FILTER` mask. Evaluating them is all that can
/// fail for a row in an aggregation, so it happens before any state
/// changes (see [`crate::row_errors`]).
pub struct AggregateInputs {
    pub rows: usize,
    pub keys: Vec<ArrayRef>,
    pub calls: Vec<(Vec<ArrayRef>, Option<ArrayRef>)>,
}

impl AggregateInputs {
    pub fn evaluate(
        group_exprs: &[Arc<dyn PhysicalExpr>],
        calls: &[AggregateCall],
        batch: &RecordBatch,
    ) -> Result<Self> {
        let rows = batch.num_rows();
        let calls = calls
            .iter()
            .map(|call| {
                let mask = match &call.filter {
                    Some(f) => Some(f.evaluate(batch)?.into_array(rows)?),
                    None => None,
                };
                Ok((evaluate_all(&call.args, batch)?, mask))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            rows,
            keys: evaluate_all(group_exprs, batch)?,
            calls,
        })
    }

    /// The rows `indices` of these inputs.
    pub fn take(&self, indices: &UInt32Array) -> Result<Self> {
        let pick = |a: &ArrayRef| take(a, indices, None);
        Ok(Self {
            rows: indices.len(),
            keys: self
                .keys
                .iter()
                .map(pick)
                .collect::<std::result::Result<_, _>>()?,
            calls: self
                .calls
                .iter()
                .map(|(args, mask)| {
                    Ok((
                        args.iter()
                            .map(pick)
                            .collect::<std::result::Result<_, _>>()?,
                        mask.as_ref().map(pick).transpose()?,
                    ))
                })
                .collect::<Result<Vec<_>>>()?,
        })
    }
}

/// Every expression an aggregation evaluates over its input (keys,
/// arguments, filters), for finding the rows that make it fail.
pub fn input_expressions(
    group_exprs: &[Arc<dyn PhysicalExpr>],
    calls: &[AggregateCall],
) -> Vec<Arc<dyn PhysicalExpr>> {
    let mut exprs = group_exprs.to_vec();
    for call in calls {
        exprs.extend(call.args.iter().cloned());
        exprs.extend(call.filter.iter().cloned());
    }
    exprs
}

/// Groups and their accumulators.
pub struct GroupedAggregates {
    group_exprs: Arc<[Arc<dyn PhysicalExpr>]>,
    calls: Arc<[AggregateCall]>,
    keys: GroupKeys,
    /// `accumulators[group][call]`.
    accumulators: Vec<Vec<Box<dyn Accumulator>>>,
    // Reused per batch, so steady-state processing does not allocate them.
    group_of_row: Vec<usize>,
    slot_of_group: Vec<u32>,
}

impl GroupedAggregates {
    /// `key_fields` are the output fields of `group_exprs`.
    pub fn new(
        group_exprs: Arc<[Arc<dyn PhysicalExpr>]>,
        calls: Arc<[AggregateCall]>,
        key_fields: &[FieldRef],
    ) -> Result<Self> {
        Ok(Self {
            keys: GroupKeys::new(key_fields)?,
            group_exprs,
            calls,
            accumulators: Vec::new(),
            group_of_row: Vec::new(),
            slot_of_group: Vec::new(),
        })
    }

    /// Number of groups held.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The expressions [`update`](Self::update) evaluates over a batch.
    pub fn input_expressions(&self) -> Vec<Arc<dyn PhysicalExpr>> {
        input_expressions(&self.group_exprs, &self.calls)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn new_accumulators(&self) -> Result<Vec<Box<dyn Accumulator>>> {
        row_accumulators(&self.calls)
    }

    fn add_groups(&mut self, created: usize) -> Result<()> {
        for _ in 0..created {
            let accs = self.new_accumulators()?;
            self.accumulators.push(accs);
        }
        self.slot_of_group.resize(self.keys.len(), u32::MAX);
        Ok(())
    }

    /// A global aggregate (no GROUP BY) has one row even over no input.
    pub fn ensure_global_group(&mut self) -> Result<()> {
        if self.keys.is_empty() && self.group_exprs.is_empty() {
            self.keys.intern_row_bytes(&[]);
            self.add_groups(1)?;
        }
        Ok(())
    }

    /// Key columns, then each aggregate's current value, for `groups`.
    pub fn evaluate(&mut self, groups: &[usize]) -> Result<Vec<ArrayRef>> {
        let mut columns = self.keys.key_columns(groups)?;
        for call in 0..self.calls.len() {
            let values = groups
                .iter()
                .map(|&g| self.accumulators[g][call].evaluate())
                .collect::<datafusion::common::Result<Vec<ScalarValue>>>()?;
            columns.push(ScalarValue::iter_to_array(values)?);
        }
        Ok(columns)
    }

    /// Adds a batch; returns the groups it touched, in order of first appearance.
    pub fn update(&mut self, batch: &RecordBatch) -> Result<Vec<usize>> {
        let inputs = AggregateInputs::evaluate(&self.group_exprs, &self.calls, batch)?;
        self.update_inputs(inputs)
    }

    /// Adds evaluated inputs; returns the groups they touched, in order of
    /// first appearance.
    pub fn update_inputs(&mut self, inputs: AggregateInputs) -> Result<Vec<usize>> {
        let rows = inputs.rows;
        let mut group_of_row = std::mem::take(&mut self.group_of_row);
        let created = self.keys.intern(&inputs.keys, rows, &mut group_of_row)?;
        self.add_groups(created)?;

        // Groups touched by this batch, in order of first appearance, and
        // the row order that makes each group's rows contiguous.
        let mut touched: Vec<usize> = Vec::new();
        let mut counts: Vec<usize> = Vec::new();
        for &g in &group_of_row {
            let slot = &mut self.slot_of_group[g];
            if *slot == u32::MAX {
                *slot = touched.len() as u32;
                touched.push(g);
                counts.push(0);
            }
            counts[*slot as usize] += 1;
        }
        let mut offsets = Vec::with_capacity(touched.len() + 1);
        let mut running = 0;
        for c in &counts {
            offsets.push(running);
            running += c;
        }
        offsets.push(running);
        let order = if touched.len() == 1 {
            None
        } else {
            let mut next = offsets.clone();
            let mut order = vec![0u32; rows];
            for (row, &g) in group_of_row.iter().enumerate() {
                let slot = self.slot_of_group[g] as usize;
                order[next[slot]] = row as u32;
                next[slot] += 1;
            }
            Some(UInt32Array::from(order))
        };
        for &g in &touched {
            self.slot_of_group[g] = u32::MAX;
        }
        self.group_of_row = group_of_row;

        let reorder = |a: ArrayRef| -> Result<ArrayRef> {
            Ok(match &order {
                Some(o) => take(&a, o, None)?,
                None => a,
            })
        };
        // Every call's arguments for the whole batch, rows grouped; a FILTER
        // clause is applied once to the whole batch, each group's rows stay
        // contiguous in the result at offsets counted from the mask.
        let mut prepared: Vec<(Vec<ArrayRef>, std::borrow::Cow<'_, [usize]>)> =
            Vec::with_capacity(self.calls.len());
        for (args, mask) in inputs.calls {
            let args = args.into_iter().map(reorder).collect::<Result<Vec<_>>>()?;
            prepared.push(match mask {
                None => (args, std::borrow::Cow::Borrowed(&offsets[..])),
                Some(mask) => {
                    let mask = reorder(mask)?;
                    let mask = mask.as_boolean();
                    let args = args
                        .iter()
                        .map(|a| filter(a, mask))
                        .collect::<std::result::Result<Vec<_>, _>>()?;
                    (
                        args,
                        std::borrow::Cow::Owned(filtered_offsets(mask, &offsets)),
                    )
                }
            });
        }
        // group by group, so each group's accumulators are visited together
        let mut slices: Vec<ArrayRef> = Vec::new();
        for (slot, &g) in touched.iter().enumerate() {
            let accumulators = &mut self.accumulators[g];
            for ((args, offsets), accumulator) in prepared.iter().zip(accumulators.iter_mut()) {
                let (start, len) = (offsets[slot], offsets[slot + 1] - offsets[slot]);
                if len == 0 {
                    continue; // every row of the group was filtered out
                }
                slices.clear();
                slices.extend(args.iter().map(|a| a.slice(start, len)));
                accumulator.update_batch(&slices)?;
            }
        }

        Ok(touched)
    }

    /// One row per group: the key in Arrow row format, then every
    /// accumulator's intermediate state columns (see [`snapshot_batch`]).
    pub fn snapshot(&mut self) -> Result<OperatorSnapshot> {
        let mut states = Vec::with_capacity(self.calls.len());
        for (i, call) in self.calls.iter().enumerate() {
            let state_fields = call.function.state_fields()?;
            let mut per_field: Vec<Vec<ScalarValue>> = vec![Vec::new(); state_fields.len()];
            for group in &mut self.accumulators {
                for (f, value) in group[i].state()?.into_iter().enumerate() {
                    per_field[f].push(value);
                }
            }
            states.push(
                per_field
                    .into_iter()
                    .zip(&state_fields)
                    .map(|(values, field)| {
                        if values.is_empty() {
                            Ok(datafusion::arrow::array::new_empty_array(field.data_type()))
                        } else {
                            ScalarValue::iter_to_array(values)
                        }
                    })
                    .collect::<datafusion::common::Result<Vec<_>>>()?,
            );
        }
        snapshot_batch(&self.keys, &self.calls, states)
    }

    /// Loads a snapshot into this (empty) state.
    pub fn restore(&mut self, snapshot: OperatorSnapshot) -> Result<()> {
        if !self.keys.is_empty() {
            return Err(EngineError::State(
                "restore into an aggregate that already holds groups".into(),
            ));
        }
        for batch in &snapshot.batches {
            let (keys, states) = snapshot_parts(batch, &self.calls)?;
            for row in 0..batch.num_rows() {
                let g = self.keys.intern_row_bytes(keys.value(row));
                if g == self.accumulators.len() {
                    self.add_groups(1)?;
                }
                for (call, columns) in states.iter().enumerate() {
                    let slices: Vec<ArrayRef> = columns.iter().map(|c| c.slice(row, 1)).collect();
                    self.accumulators[g][call].merge_batch(&slices)?;
                }
            }
        }
        Ok(())
    }
}

/// A fresh row accumulator for every call.
pub fn row_accumulators(calls: &[AggregateCall]) -> Result<Vec<Box<dyn Accumulator>>> {
    Ok(calls
        .iter()
        .map(|c| c.function.create_accumulator())
        .collect::<datafusion::common::Result<_>>()?)
}

/// The layout every aggregate snapshot shares: `group_key` (the key in
/// Arrow row format), then each call's state columns named `<call>_<field>`.
/// `states[call]` holds that call's state columns, one row per group.
pub fn snapshot_batch(
    keys: &GroupKeys,
    calls: &[AggregateCall],
    states: Vec<Vec<ArrayRef>>,
) -> Result<OperatorSnapshot> {
    let mut fields = vec![Field::new("group_key", DataType::Binary, false)];
    let mut columns: Vec<ArrayRef> = vec![Arc::new(BinaryArray::from_iter_values(
        (0..keys.len()).map(|g| keys.row_bytes(g).to_vec()),
    ))];
    for (i, (call, state)) in calls.iter().zip(states).enumerate() {
        for (field, column) in call.function.state_fields()?.iter().zip(state) {
            fields.push(Field::new(
                format!("{i}_{}", field.name()),
                field.data_type().clone(),
                true,
            ));
            columns.push(column);
        }
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = conform(&schema, columns)?;
    Ok(OperatorSnapshot {
        schema,
        batches: vec![batch],
    })
}

/// Splits a snapshot batch into key bytes and each call's state columns.
pub fn snapshot_parts<'a>(
    batch: &'a RecordBatch,
    calls: &[AggregateCall],
) -> Result<(&'a BinaryArray, Vec<Vec<ArrayRef>>)> {
    let keys = batch.column(0).as_binary_opt::<i32>().ok_or_else(|| {
        EngineError::State("aggregate snapshot has no binary group_key column".into())
    })?;
    let mut column = 1;
    let mut states = Vec::with_capacity(calls.len());
    for call in calls {
        let width = call.function.state_fields()?.len();
        if column + width > batch.num_columns() {
            return Err(EngineError::State(
                "aggregate snapshot does not match the query's aggregates".into(),
            ));
        }
        states.push(batch.columns()[column..column + width].to_vec());
        column += width;
    }
    if column != batch.num_columns() {
        return Err(EngineError::State(
            "aggregate snapshot does not match the query's aggregates".into(),
        ));
    }
    Ok((keys, states))
}

/// Builds a batch of `schema`, casting columns whose type differs only in
/// representation (accumulators may report e.g. a wider decimal precision).
pub fn conform(schema: &SchemaRef, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(
        schema.clone(),
        conform_columns(schema, columns)?,
    )?)
}

/// `columns` cast to the types `schema` plans for them where a function
/// returned another (a wider DECIMAL, say). A value the planned type
/// cannot hold is an error for its row, never a silent NULL.
pub fn conform_columns(schema: &SchemaRef, columns: Vec<ArrayRef>) -> Result<Vec<ArrayRef>> {
    let options = CastOptions {
        safe: false,
        ..Default::default()
    };
    Ok(columns
        .into_iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c)
            } else {
                cast_with_options(&c, f.data_type(), &options)
            }
        })
        .collect::<std::result::Result<Vec<_>, _>>()?)
}

/// Group boundaries after filtering with `mask`: for each boundary in
/// `offsets` (row positions), how many rows before it the mask keeps
/// (a NULL in the mask drops its row, as `filter` does).
fn filtered_offsets(mask: &BooleanArray, offsets: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(offsets.len());
    let mut kept = 0;
    let mut row = 0;
    for &boundary in offsets {
        while row < boundary {
            if mask.is_valid(row) && mask.value(row) {
                kept += 1;
            }
            row += 1;
        }
        out.push(kept);
    }
    out
}
