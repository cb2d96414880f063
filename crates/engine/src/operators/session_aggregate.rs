//! `SESSION(gap)` windows: per key, records at most `gap` apart in event time
//! belong to one session `[first, last + gap)` (touching sessions merge, as
//! in Flink). A record that bridges two
//! sessions merges them (their accumulator states are merged). A session
//! closes when the watermark reaches its end; a record whose (merged)
//! session would already be closed is late, counted and dropped.
//!
//! Both are decided against the watermark the record itself saw (carried
//! in its row, see [`crate::row_watermark`]), not the one at the start of
//! its batch: a session the watermark had passed before the record is
//! closed for it even while it waits in this batch to be emitted, so the
//! sessions are the same whatever the batch size.
//!
//! Input rows carry their own proto-session in `_window_start` (the event
//! time) and `_window_end` (event time + gap) from the window-assign step.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::array::{
    new_empty_array, Array, ArrayRef, AsArray, BinaryArray, Int64Array, TimestampMillisecondArray,
};
use datafusion::arrow::compute::{cast, filter};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Accumulator;
use velostream_sql::EmitMode;

use super::group_keys::GroupKeys;
use super::grouped::{conform, row_accumulators, AggregateCall};
use super::window_aggregate::{GroupSlot, WindowAggregateParts};
use super::{evaluate_all, Operator, RowIsolation, StateSize};
use crate::error::{EngineError, Result};
use crate::metrics::JobMetrics;
use crate::state::{Checkpointable, OperatorSnapshot};

struct Session {
    start: i64,
    end: i64,
    accumulators: Vec<Box<dyn Accumulator>>,
}

pub struct SessionAggregateOperator {
    parts: WindowAggregateParts,
    calls: Arc<[AggregateCall]>,
    keys: GroupKeys,
    /// Open sessions of each key, ordered by start, never overlapping.
    sessions: Vec<Vec<Session>>,
    /// (end, key, start) of every open session, to close them in end order.
    by_end: BTreeSet<(i64, usize, i64)>,
    watermark: Option<i64>,
    emit: EmitMode,
    schema: SchemaRef,
    metrics: Arc<JobMetrics>,
    group_of_row: Vec<usize>,
}

impl SessionAggregateOperator {
    pub fn new(
        mut parts: WindowAggregateParts,
        emit: EmitMode,
        schema: SchemaRef,
        metrics: Arc<JobMetrics>,
    ) -> Result<Self> {
        let key_fields = parts.key_fields(&schema);
        let calls: Arc<[AggregateCall]> = std::mem::take(&mut parts.calls).into();
        Ok(Self {
            keys: GroupKeys::new(&key_fields)?,
            parts,
            calls,
            sessions: Vec::new(),
            by_end: BTreeSet::new(),
            watermark: None,
            emit,
            schema,
            metrics,
            group_of_row: Vec::new(),
        })
    }

    fn new_accumulators(&self) -> Result<Vec<Box<dyn Accumulator>>> {
        row_accumulators(&self.calls)
    }

    /// Adds one record with event time `t` to key `g`, merging the open
    /// sessions it touches (those the record's watermark `seen` has not
    /// passed); returns the resulting session's start, or `None` if late.
    fn add(
        &mut self,
        g: usize,
        (t, end, seen): (i64, i64, Option<i64>),
        args: &[Vec<ArrayRef>],
        row: usize,
    ) -> Result<Option<i64>> {
        let watermark = self.watermark.max(seen);
        let overlapping: Vec<usize> = {
            let list = &self.sessions[g];
            (0..list.len())
                .filter(|&i| list[i].start <= end && t <= list[i].end)
                .filter(|&i| watermark.is_none_or(|wm| list[i].end > wm))
                .collect()
        };
        let start = overlapping
            .iter()
            .map(|&i| self.sessions[g][i].start)
            .fold(t, i64::min);
        let merged_end = overlapping
            .iter()
            .map(|&i| self.sessions[g][i].end)
            .fold(end, i64::max);
        if let Some(wm) = watermark.filter(|wm| merged_end <= *wm) {
            self.metrics.late_record(t, wm);
            return Ok(None);
        }
        // Take the overlapping sessions out (from the back, so indices stay
        // valid) and fold them into the earliest.
        let mut taken: Vec<Session> = overlapping
            .iter()
            .rev()
            .map(|&i| self.sessions[g].remove(i))
            .collect();
        let mut merged = match taken.pop() {
            Some(first) => first,
            None => Session {
                start,
                end: merged_end,
                accumulators: self.new_accumulators()?,
            },
        };
        self.by_end.remove(&(merged.end, g, merged.start));
        for other in taken {
            self.by_end.remove(&(other.end, g, other.start));
            for (acc, mut from) in merged.accumulators.iter_mut().zip(other.accumulators) {
                let state: Vec<ArrayRef> = from
                    .state()?
                    .into_iter()
                    .map(|v| v.to_array())
                    .collect::<datafusion::common::Result<_>>()?;
                acc.merge_batch(&state)?;
            }
        }
        merged.start = start;
        merged.end = merged_end;
        for ((acc, call_args), call) in merged
            .accumulators
            .iter_mut()
            .zip(args)
            .zip(self.calls.iter())
        {
            let mut slices: Vec<ArrayRef> = call_args.iter().map(|a| a.slice(row, 1)).collect();
            if call.filter.is_some() {
                // the FILTER mask travels as the call's last column
                let mask = slices.pop().expect("mask column");
                slices = slices
                    .iter()
                    .map(|s| filter(s, mask.as_boolean()))
                    .collect::<std::result::Result<_, _>>()?;
            }
            acc.update_batch(&slices)?;
        }
        self.by_end.insert((merged_end, g, start));
        let list = &mut self.sessions[g];
        let at = list.partition_point(|s| s.start < start);
        list.insert(at, merged);
        Ok(Some(start))
    }

    /// Output rows for the given (key, session start) pairs.
    fn rows(&mut self, which: &[(usize, i64)]) -> Result<Option<RecordBatch>> {
        let mut groups = Vec::new();
        let (mut starts, mut ends) = (Vec::new(), Vec::new());
        let mut values: Vec<Vec<ScalarValue>> = vec![Vec::new(); self.calls.len()];
        for &(g, start) in which {
            let Some(session) = self.sessions[g].iter_mut().find(|s| s.start == start) else {
                continue; // merged into another session later in the batch
            };
            groups.push(g);
            starts.push(session.start);
            ends.push(session.end);
            for (v, acc) in values.iter_mut().zip(session.accumulators.iter_mut()) {
                v.push(acc.evaluate()?);
            }
        }
        if groups.is_empty() {
            return Ok(None);
        }
        let keys = self.keys.key_columns(&groups)?;
        let starts: ArrayRef = Arc::new(TimestampMillisecondArray::from(starts));
        let ends: ArrayRef = Arc::new(TimestampMillisecondArray::from(ends));
        let mut columns: Vec<ArrayRef> = self
            .parts
            .layout
            .iter()
            .map(|slot| match slot {
                GroupSlot::Key(k) => keys[*k].clone(),
                GroupSlot::WindowStart => starts.clone(),
                GroupSlot::WindowEnd => ends.clone(),
            })
            .collect();
        for v in values {
            columns.push(ScalarValue::iter_to_array(v)?);
        }
        Ok(Some(conform(&self.schema, columns)?))
    }

    /// Emits (for EMIT FINAL) and frees the sessions ending at or before `limit`.
    fn close_until(&mut self, limit: i64, out: &mut Vec<RecordBatch>) -> Result<()> {
        let closing: Vec<(i64, usize, i64)> = self
            .by_end
            .iter()
            .take_while(|(end, _, _)| *end <= limit)
            .copied()
            .collect();
        if closing.is_empty() {
            return Ok(());
        }
        if self.emit == EmitMode::Final {
            let which: Vec<(usize, i64)> = closing.iter().map(|&(_, g, s)| (g, s)).collect();
            out.extend(self.rows(&which)?);
        }
        for (end, g, start) in closing {
            self.by_end.remove(&(end, g, start));
            self.sessions[g].retain(|s| s.start != start);
        }
        Ok(())
    }
}

impl Operator for SessionAggregateOperator {
    fn name(&self) -> &'static str {
        "session_aggregate"
    }

    fn isolation(&self) -> RowIsolation {
        let mut exprs = super::grouped::input_expressions(&self.parts.key_exprs, &self.calls);
        exprs.extend([self.parts.start.clone(), self.parts.end.clone()]);
        RowIsolation::Expressions(exprs)
    }

    fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        let rows = batch.num_rows();
        // everything that can fail for a row is evaluated before any state changes
        let key_columns = evaluate_all(&self.parts.key_exprs, &batch)?;
        let millis = |e: &Arc<dyn datafusion::physical_expr::PhysicalExpr>| -> Result<Vec<i64>> {
            let a = e.evaluate(&batch)?.into_array(rows)?;
            Ok(cast(&a, &DataType::Int64)?
                .as_primitive::<Int64Type>()
                .values()
                .to_vec())
        };
        let (times, ends) = (millis(&self.parts.start)?, millis(&self.parts.end)?);
        let args = self
            .calls
            .iter()
            .map(|c| {
                let mut a = evaluate_all(&c.args, &batch)?;
                if let Some(f) = &c.filter {
                    a.push(f.evaluate(&batch)?.into_array(rows)?);
                }
                Ok(a)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut group_of_row = std::mem::take(&mut self.group_of_row);
        self.keys.intern(&key_columns, rows, &mut group_of_row)?;
        self.sessions.resize_with(self.keys.len(), Vec::new);
        let seen = crate::row_watermark::of(&batch);
        let mut touched = Vec::new();
        for row in 0..rows {
            let g = group_of_row[row];
            let watermark = seen.and_then(|w| w.is_valid(row).then(|| w.value(row)));
            if let Some(start) = self.add(g, (times[row], ends[row], watermark), &args, row)? {
                touched.push((g, start));
            }
        }
        self.group_of_row = group_of_row;
        if self.emit == EmitMode::Changes {
            let mut seen = std::collections::HashSet::new();
            touched.retain(|t| seen.insert(*t));
            out.extend(self.rows(&touched)?);
        }
        Ok(())
    }

    fn state_size(&self) -> StateSize {
        StateSize {
            rows: 0,
            windows: self.by_end.len(),
            keys: self.sessions.iter().filter(|s| !s.is_empty()).count(),
        }
    }

    fn state(&mut self) -> Option<&mut dyn Checkpointable> {
        Some(self)
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Vec<RecordBatch>) -> Result<()> {
        self.watermark = Some(watermark);
        self.close_until(watermark, out)
    }

    fn finish(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        self.close_until(i64::MAX, out)
    }
}

impl Checkpointable for SessionAggregateOperator {
    /// One row per open session: key (row format), start and end, then each
    /// aggregate's state columns; the watermark in the schema metadata.
    fn snapshot(&mut self) -> Result<OperatorSnapshot> {
        let mut keys = Vec::new();
        let (mut starts, mut ends) = (Vec::new(), Vec::new());
        let mut states: Vec<Vec<Vec<ScalarValue>>> = self
            .calls
            .iter()
            .map(|c| Ok(vec![Vec::new(); c.function.state_fields()?.len()]))
            .collect::<Result<_>>()?;
        for (g, sessions) in self.sessions.iter_mut().enumerate() {
            for session in sessions {
                keys.push(self.keys.row_bytes(g).to_vec());
                starts.push(session.start);
                ends.push(session.end);
                for (call, acc) in session.accumulators.iter_mut().enumerate() {
                    for (f, value) in acc.state()?.into_iter().enumerate() {
                        states[call][f].push(value);
                    }
                }
            }
        }
        let mut fields = vec![
            Field::new("group_key", DataType::Binary, false),
            Field::new("session_start", DataType::Int64, false),
            Field::new("session_end", DataType::Int64, false),
        ];
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(BinaryArray::from_iter_values(keys)),
            Arc::new(Int64Array::from(starts)),
            Arc::new(Int64Array::from(ends)),
        ];
        for (i, (call, values)) in self.calls.iter().zip(states).enumerate() {
            for (field, values) in call.function.state_fields()?.iter().zip(values) {
                fields.push(Field::new(
                    format!("{i}_{}", field.name()),
                    field.data_type().clone(),
                    true,
                ));
                columns.push(if values.is_empty() {
                    new_empty_array(field.data_type())
                } else {
                    ScalarValue::iter_to_array(values)?
                });
            }
        }
        let metadata = self
            .watermark
            .map(|w| [("velostream.watermark".to_string(), w.to_string())].into())
            .unwrap_or_default();
        let schema = Arc::new(Schema::new_with_metadata(fields, metadata));
        let batch = conform(&schema, columns)?;
        Ok(OperatorSnapshot {
            schema,
            batches: vec![batch],
        })
    }

    fn restore(&mut self, snapshot: OperatorSnapshot) -> Result<()> {
        if !self.by_end.is_empty() {
            return Err(EngineError::State(
                "restore into a session aggregate that already holds sessions".into(),
            ));
        }
        self.watermark = snapshot
            .schema
            .metadata()
            .get("velostream.watermark")
            .and_then(|w| w.parse().ok());
        for batch in &snapshot.batches {
            let bad = || EngineError::State("malformed session snapshot".into());
            let keys = batch.column(0).as_binary_opt::<i32>().ok_or_else(bad)?;
            let starts = batch
                .column(1)
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(bad)?;
            let ends = batch
                .column(2)
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(bad)?;
            for row in 0..batch.num_rows() {
                let g = self.keys.intern_row_bytes(keys.value(row));
                self.sessions.resize_with(self.keys.len(), Vec::new);
                let mut accumulators = self.new_accumulators()?;
                let mut column = 3;
                for (acc, call) in accumulators.iter_mut().zip(self.calls.iter()) {
                    let width = call.function.state_fields()?.len();
                    let state: Vec<ArrayRef> = (column..column + width)
                        .map(|c| batch.column(c).slice(row, 1))
                        .collect();
                    acc.merge_batch(&state)?;
                    column += width;
                }
                let (start, end) = (starts.value(row), ends.value(row));
                let list = &mut self.sessions[g];
                let at = list.partition_point(|s| s.start < start);
                list.insert(
                    at,
                    Session {
                        start,
                        end,
                        accumulators,
                    },
                );
                self.by_end.insert((end, g, start));
            }
        }
        Ok(())
    }
}
