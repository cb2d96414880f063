//! Group state for results that are read once: DataFusion
//! [`GroupsAccumulator`]s update every group of a batch in one call per
//! aggregate (no per-group dispatch, no reordering of rows), and give all
//! groups' values at once when the state is emitted. Windows with
//! `EMIT FINAL` use this; results that are read repeatedly (`EMIT CHANGES`)
//! use [`super::grouped::GroupedAggregates`].

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray};
use datafusion::arrow::datatypes::FieldRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::{GroupsAccumulatorAdapter, PhysicalExpr};

use super::group_keys::GroupKeys;
use super::grouped::{snapshot_batch, snapshot_parts, AggregateCall, AggregateInputs};
use crate::error::{EngineError, Result};
use crate::state::OperatorSnapshot;

pub struct VectorizedAggregates {
    group_exprs: Arc<[Arc<dyn PhysicalExpr>]>,
    calls: Arc<[AggregateCall]>,
    keys: GroupKeys,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    group_of_row: Vec<usize>,
}

impl VectorizedAggregates {
    pub fn new(
        group_exprs: Arc<[Arc<dyn PhysicalExpr>]>,
        calls: Arc<[AggregateCall]>,
        key_fields: &[FieldRef],
    ) -> Result<Self> {
        let accumulators = calls
            .iter()
            .map(groups_accumulator)
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            keys: GroupKeys::new(key_fields)?,
            group_exprs,
            calls,
            accumulators,
            group_of_row: Vec::new(),
        })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Adds a batch to every group it touches.
    pub fn update(&mut self, batch: &RecordBatch) -> Result<()> {
        let inputs = AggregateInputs::evaluate(&self.group_exprs, &self.calls, batch)?;
        self.update_inputs(inputs)
    }

    /// Adds evaluated inputs to every group they touch.
    pub fn update_inputs(&mut self, inputs: AggregateInputs) -> Result<()> {
        self.keys
            .intern(&inputs.keys, inputs.rows, &mut self.group_of_row)?;
        let total = self.keys.len();
        for (acc, (args, mask)) in self.accumulators.iter_mut().zip(inputs.calls) {
            let mask = mask.as_ref().map(|m| m.as_boolean());
            acc.update_batch(&args, &self.group_of_row, mask, total)?;
        }
        Ok(())
    }

    /// The snapshot layout of [`snapshot_batch`]. Reading a GroupsAccumulator's
    /// state consumes it, so the state is merged straight back.
    pub fn snapshot(&mut self) -> Result<OperatorSnapshot> {
        let n = self.keys.len();
        let groups: Vec<usize> = (0..n).collect();
        let mut states = Vec::with_capacity(self.accumulators.len());
        for (acc, call) in self.accumulators.iter_mut().zip(self.calls.iter()) {
            let state = acc.state(EmitTo::All)?;
            *acc = groups_accumulator(call)?;
            acc.merge_batch(&state, &groups, n)?;
            states.push(state);
        }
        snapshot_batch(&self.keys, &self.calls, states)
    }

    /// Loads a snapshot into this (empty) state.
    pub fn restore(&mut self, snapshot: OperatorSnapshot) -> Result<()> {
        for batch in &snapshot.batches {
            let (keys, states) = snapshot_parts(batch, &self.calls)?;
            let groups: Vec<usize> = (0..batch.num_rows())
                .map(|row| self.keys.intern_row_bytes(keys.value(row)))
                .collect();
            let total = self.keys.len();
            for (acc, state) in self.accumulators.iter_mut().zip(&states) {
                acc.merge_batch(state, &groups, total)?;
            }
        }
        Ok(())
    }

    /// Key columns, then every aggregate's value, for all groups in
    /// creation order. The state is consumed.
    pub fn emit_all(&mut self) -> Result<Vec<ArrayRef>> {
        let groups: Vec<usize> = (0..self.keys.len()).collect();
        let mut columns = self.keys.key_columns(&groups)?;
        for acc in &mut self.accumulators {
            let values = acc.evaluate(EmitTo::All)?;
            if values.len() != groups.len() {
                return Err(EngineError::Plan(format!(
                    "an aggregate gave {} values for {} groups",
                    values.len(),
                    groups.len()
                )));
            }
            columns.push(values);
        }
        Ok(columns)
    }
}

/// A GroupsAccumulator for `call`, adapting row accumulators where the
/// function has no vectorized implementation.
fn groups_accumulator(call: &AggregateCall) -> Result<Box<dyn GroupsAccumulator>> {
    if call.function.groups_accumulator_supported() {
        Ok(call.function.create_groups_accumulator()?)
    } else {
        let function = call.function.clone();
        Ok(Box::new(GroupsAccumulatorAdapter::new(move || {
            function.create_accumulator()
        })))
    }
}
