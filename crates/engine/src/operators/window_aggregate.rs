//! Windowed `GROUP BY`: one [`GroupedAggregates`] per open window, so a
//! window's state is freed as a whole when it closes.
//!
//! `EMIT FINAL` emits a window's groups once, when the watermark reaches the
//! window's end (and, at the end of bounded input, every window still open).
//! `EMIT CHANGES` emits the new row of every (window, group) a batch
//! touched, and drops a window's state when the watermark passes its end.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, AsArray, Int64Array, TimestampMillisecondArray, UInt32Array,
};
use datafusion::arrow::compute::{cast, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Int64Type, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_expr::PhysicalExpr;
use velostream_sql::EmitMode;

use super::grouped::{
    conform, input_expressions, AggregateCall, AggregateInputs, GroupedAggregates,
};
use super::read_once_groups::VectorizedAggregates;
use super::{Operator, RowIsolation, StateSize};
use crate::error::{EngineError, Result};
use crate::state::{Checkpointable, OperatorSnapshot};

/// The state of one open window: read repeatedly for EMIT CHANGES, once
/// (vectorized) for EMIT FINAL.
enum WindowState {
    Changes(GroupedAggregates),
    Final(VectorizedAggregates),
}

impl WindowState {
    fn len(&self) -> usize {
        match self {
            WindowState::Changes(g) => g.len(),
            WindowState::Final(v) => v.len(),
        }
    }

    fn snapshot(&mut self) -> Result<OperatorSnapshot> {
        match self {
            WindowState::Changes(g) => g.snapshot(),
            WindowState::Final(v) => v.snapshot(),
        }
    }

    fn restore(&mut self, snapshot: OperatorSnapshot) -> Result<()> {
        match self {
            WindowState::Changes(g) => g.restore(snapshot),
            WindowState::Final(v) => v.restore(snapshot),
        }
    }
}

/// What each GROUP BY position of the output holds.
#[derive(Debug, Clone, Copy)]
pub enum GroupSlot {
    /// The n-th user group key.
    Key(usize),
    WindowStart,
    WindowEnd,
}

pub struct WindowAggregateOperator {
    key_exprs: Arc<[Arc<dyn PhysicalExpr>]>,
    key_fields: Vec<FieldRef>,
    start: Arc<dyn PhysicalExpr>,
    end: Arc<dyn PhysicalExpr>,
    layout: Vec<GroupSlot>,
    calls: Arc<[AggregateCall]>,
    /// Open windows by (end, start): closing walks them in end order.
    windows: BTreeMap<(i64, i64), WindowState>,
    emit: EmitMode,
    schema: SchemaRef,
}

/// The pieces of a windowed aggregate, as the pipeline builder finds them.
pub struct WindowAggregateParts {
    pub key_exprs: Vec<Arc<dyn PhysicalExpr>>,
    pub start: Arc<dyn PhysicalExpr>,
    pub end: Arc<dyn PhysicalExpr>,
    pub layout: Vec<GroupSlot>,
    pub calls: Vec<AggregateCall>,
}

impl WindowAggregateParts {
    /// Output fields of the user group keys (the `Key` slots of `schema`).
    pub fn key_fields(&self, schema: &SchemaRef) -> Vec<FieldRef> {
        self.layout
            .iter()
            .enumerate()
            .filter(|(_, slot)| matches!(slot, GroupSlot::Key(_)))
            .map(|(i, _)| schema.field(i).clone().into())
            .collect()
    }
}

impl WindowAggregateOperator {
    pub fn new(parts: WindowAggregateParts, emit: EmitMode, schema: SchemaRef) -> Self {
        let key_fields = parts.key_fields(&schema);
        Self {
            key_exprs: parts.key_exprs.into(),
            key_fields,
            start: parts.start,
            end: parts.end,
            layout: parts.layout,
            calls: parts.calls.into(),
            windows: BTreeMap::new(),
            emit,
            schema,
        }
    }

    /// Number of windows holding state.
    pub fn open_windows(&self) -> usize {
        self.windows.len()
    }

    fn window(&mut self, key: (i64, i64)) -> Result<&mut WindowState> {
        if !self.windows.contains_key(&key) {
            let (keys, calls, fields) =
                (self.key_exprs.clone(), self.calls.clone(), &self.key_fields);
            let state = match self.emit {
                EmitMode::Changes => {
                    WindowState::Changes(GroupedAggregates::new(keys, calls, fields)?)
                }
                EmitMode::Final => {
                    WindowState::Final(VectorizedAggregates::new(keys, calls, fields)?)
                }
            };
            self.windows.insert(key, state);
        }
        Ok(self.windows.get_mut(&key).expect("inserted above"))
    }

    /// Output rows of the window `(end, start)`: `groups` for EMIT CHANGES,
    /// all of them (consuming the state) for EMIT FINAL.
    fn rows(&mut self, key: (i64, i64), groups: &[usize]) -> Result<RecordBatch> {
        let (end, start) = key;
        let mut values = match self.windows.get_mut(&key).expect("window exists") {
            WindowState::Changes(g) => g.evaluate(groups)?,
            WindowState::Final(v) => v.emit_all()?,
        };
        let aggregates = values.split_off(self.key_fields.len());
        let n = aggregates.first().map(|a| a.len()).unwrap_or(groups.len());
        let mut columns: Vec<ArrayRef> = self
            .layout
            .iter()
            .map(|slot| match slot {
                GroupSlot::Key(k) => values[*k].clone(),
                GroupSlot::WindowStart => {
                    Arc::new(TimestampMillisecondArray::from(vec![start; n])) as ArrayRef
                }
                GroupSlot::WindowEnd => {
                    Arc::new(TimestampMillisecondArray::from(vec![end; n])) as ArrayRef
                }
            })
            .collect();
        columns.extend(aggregates);
        conform(&self.schema, columns)
    }

    /// Emits (for EMIT FINAL) and frees the windows ending at or before `limit`.
    fn close_until(&mut self, limit: i64, out: &mut Vec<RecordBatch>) -> Result<()> {
        while let Some((&key, _)) = self.windows.first_key_value() {
            if key.0 > limit {
                break;
            }
            if self.emit == EmitMode::Final {
                let all: Vec<usize> = (0..self.windows[&key].len()).collect();
                if !all.is_empty() {
                    out.push(self.rows(key, &all)?);
                }
            }
            self.windows.remove(&key);
        }
        Ok(())
    }
}

fn millis(expr: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<Vec<i64>> {
    let array = expr.evaluate(batch)?.into_array(batch.num_rows())?;
    Ok(cast(&array, &DataType::Int64)?
        .as_primitive::<Int64Type>()
        .values()
        .to_vec())
}

impl Operator for WindowAggregateOperator {
    fn name(&self) -> &'static str {
        "window_aggregate"
    }

    fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        let starts = millis(&self.start, &batch)?;
        let ends = millis(&self.end, &batch)?;
        // Rows per window, windows in order of first appearance. Most
        // batches fall in one window (or a few, in runs): checked before
        // any per-row bookkeeping, and a row is compared with the last
        // row's window before the window is looked up.
        let mut order: Vec<(i64, i64)> = Vec::new();
        let mut rows: Vec<Vec<u32>> = Vec::new();
        let first = starts.first().zip(ends.first()).map(|(&s, &e)| (e, s));
        let one_window = starts
            .iter()
            .zip(&ends)
            .all(|(&s, &e)| Some((e, s)) == first);
        if let (true, Some(key)) = (one_window, first) {
            order.push(key);
        } else {
            let mut index: hashbrown::HashMap<(i64, i64), usize> = hashbrown::HashMap::new();
            let mut last = usize::MAX;
            for (i, (&s, &e)) in starts.iter().zip(&ends).enumerate() {
                let key = (e, s);
                if last == usize::MAX || order[last] != key {
                    last = *index.entry(key).or_insert_with(|| {
                        order.push(key);
                        rows.push(Vec::new());
                        order.len() - 1
                    });
                }
                rows[last].push(i as u32);
            }
        }
        // everything that can fail for a row, before any window changes
        let inputs = AggregateInputs::evaluate(&self.key_exprs, &self.calls, &batch)?;
        let parts = match order[..] {
            // the whole batch in one window: its inputs as they are
            [key] => vec![(key, inputs)],
            _ => order
                .into_iter()
                .zip(rows)
                .map(|(key, indices)| Ok((key, inputs.take(&UInt32Array::from(indices))?)))
                .collect::<Result<Vec<_>>>()?,
        };
        for (key, part) in parts {
            match self.window(key)? {
                WindowState::Final(v) => v.update_inputs(part)?,
                WindowState::Changes(g) => {
                    let touched = g.update_inputs(part)?;
                    if !touched.is_empty() {
                        out.push(self.rows(key, &touched)?);
                    }
                }
            }
        }
        Ok(())
    }

    fn state_size(&self) -> StateSize {
        StateSize {
            rows: 0,
            windows: self.windows.len(),
            keys: self.windows.values().map(WindowState::len).sum(),
        }
    }

    fn state(&mut self) -> Option<&mut dyn Checkpointable> {
        Some(self)
    }

    fn isolation(&self) -> RowIsolation {
        RowIsolation::Expressions(input_expressions(&self.key_exprs, &self.calls))
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<RecordBatch>) -> Result<()> {
        self.close_until(watermark, out)
    }

    fn finish(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        self.close_until(i64::MAX, out)
    }
}

impl Checkpointable for WindowAggregateOperator {
    /// Every open window's group snapshot, prefixed by `window_end` and
    /// `window_start` (milliseconds).
    fn snapshot(&mut self) -> Result<OperatorSnapshot> {
        let empty =
            GroupedAggregates::new(self.key_exprs.clone(), self.calls.clone(), &self.key_fields)?
                .snapshot()?;
        let mut fields = vec![
            Field::new("window_end", DataType::Int64, false),
            Field::new("window_start", DataType::Int64, false),
        ];
        fields.extend(empty.schema.fields().iter().map(|f| f.as_ref().clone()));
        let schema = Arc::new(Schema::new(fields));
        let mut batches = Vec::new();
        for (&(end, start), state) in self.windows.iter_mut() {
            for part in state.snapshot()?.batches {
                let n = part.num_rows();
                let mut columns: Vec<ArrayRef> = vec![
                    Arc::new(Int64Array::from(vec![end; n])),
                    Arc::new(Int64Array::from(vec![start; n])),
                ];
                columns.extend(part.columns().iter().cloned());
                batches.push(RecordBatch::try_new(schema.clone(), columns)?);
            }
        }
        Ok(OperatorSnapshot { schema, batches })
    }

    fn restore(&mut self, snapshot: OperatorSnapshot) -> Result<()> {
        if !self.windows.is_empty() {
            return Err(EngineError::State(
                "restore into a window aggregate that already holds windows".into(),
            ));
        }
        let inner = Arc::new(Schema::new(snapshot.schema.fields()[2..].to_vec()));
        for batch in &snapshot.batches {
            let ends = batch.column(0).as_primitive::<Int64Type>();
            let starts = batch.column(1).as_primitive::<Int64Type>();
            let mut rows: Vec<((i64, i64), Vec<u32>)> = Vec::new();
            for row in 0..batch.num_rows() {
                let key = (ends.value(row), starts.value(row));
                match rows.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, r)) => r.push(row as u32),
                    None => rows.push((key, vec![row as u32])),
                }
            }
            for (key, indices) in rows {
                let part = take_record_batch(batch, &UInt32Array::from(indices))?;
                let part = RecordBatch::try_new(inner.clone(), part.columns()[2..].to_vec())?;
                self.window(key)?.restore(OperatorSnapshot {
                    schema: inner.clone(),
                    batches: vec![part],
                })?;
            }
        }
        Ok(())
    }
}
