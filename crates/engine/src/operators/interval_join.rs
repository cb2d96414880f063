//! Stream–stream interval join: each record of the driving stream meets the
//! records of the other stream with equal keys whose time lies in
//! `[t + lower, t + upper]`. The other stream is read ahead of the driving
//! one just as far as the upper bound needs; its buffered records expire
//! once no later driving record can reach them (driving watermark + lower),
//! so state is bounded by the interval, not by the stream. INNER keeps
//! matches; LEFT also keeps driving records that met nothing; RIGHT/FULL
//! emit other-stream records that met nothing when they expire.
//!
//! Lateness is decided per record on both sides, against the watermark the
//! records before it (on its own side) left: a record earlier than that is
//! late, counted and dropped. The other stream is read until its watermark
//! has passed the last time the batch can reach, so every record that is
//! not late and could match is buffered by then; together these make the
//! pairs a function of each stream's order, whatever the batch sizes.

use std::sync::Arc;

use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, UInt32Array,
};
use datafusion::arrow::compute::{concat_batches, filter, filter_record_batch, take};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::arrow::row::RowConverter;
use datafusion::physical_expr::PhysicalExpr;
use hashbrown::HashMap;

use super::join_output::{cast_keys, emit_pairs, key_converter, millis_of};
use super::{evaluate_all, Operator, Pipeline, RowIsolation, StateSize};
use crate::connector::{Source, SourceEvent};
use crate::error::{EngineError, Result};
use crate::metrics::JobMetrics;
use crate::state::{Checkpointable, OperatorSnapshot};

/// The join's fixed parts, as the pipeline builder finds them.
pub struct IntervalJoinSpec {
    pub left_keys: Vec<Arc<dyn PhysicalExpr>>,
    pub right_keys: Vec<Arc<dyn PhysicalExpr>>,
    pub left_time: Arc<dyn PhysicalExpr>,
    pub right_time: Arc<dyn PhysicalExpr>,
    pub lower_ms: i64,
    pub upper_ms: i64,
    pub left_lag_ms: i64,
    pub right_lag_ms: i64,
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    pub keep_unmatched: bool,
    /// RIGHT/FULL: other-stream records that met nothing leave (with NULL
    /// driving columns) when they expire, or at the end of input.
    pub keep_other_unmatched: bool,
    pub schema: SchemaRef,
}

pub struct IntervalJoinOperator {
    spec: IntervalJoinSpec,
    other: Box<dyn Source>,
    other_pipeline: Pipeline,
    other_schema: SchemaRef,
    other_done: bool,
    other_max: Option<i64>,
    /// Buffered records of the other stream, their times and keys.
    buffer: RecordBatch,
    times: Vec<i64>,
    /// Whether each buffered record has met a driving record.
    matched: Vec<bool>,
    index: HashMap<Box<[u8]>, Vec<u32>>,
    converter: Option<RowConverter>,
    key_types: Vec<DataType>,
    left_max: Option<i64>,
    metrics: Arc<JobMetrics>,
}

impl IntervalJoinOperator {
    pub fn new(
        spec: IntervalJoinSpec,
        other: Box<dyn Source>,
        other_pipeline: Pipeline,
        other_schema: SchemaRef,
        metrics: Arc<JobMetrics>,
    ) -> Self {
        Self {
            metrics,
            buffer: RecordBatch::new_empty(other_schema.clone()),
            spec,
            other,
            other_pipeline,
            other_schema,
            other_done: false,
            other_max: None,
            times: Vec::new(),
            matched: Vec::new(),
            index: HashMap::new(),
            converter: None,
            key_types: Vec::new(),
            left_max: None,
        }
    }

    /// Reads the other stream until its watermark passes `until` (or it
    /// ends), dropping its late records.
    fn read_ahead(&mut self, until: i64) -> Result<()> {
        let mut fresh = Vec::new();
        let mut fresh_times: Vec<i64> = Vec::new();
        while !self.other_done
            && self
                .other_max
                .is_none_or(|m| m - self.spec.right_lag_ms <= until)
        {
            let mut out = Vec::new();
            match self.other.poll_batch()? {
                SourceEvent::Batch(b) => self.other_pipeline.process(b, &mut out)?,
                SourceEvent::Idle | SourceEvent::Deletes(_) => {}
                SourceEvent::Partitioned { .. } => {
                    return Err(crate::connector::unexpected_partitioned(
                        "an interval join's other stream",
                    ))
                }
                SourceEvent::End => {
                    self.other_pipeline.finish(&mut out)?;
                    self.other_done = true;
                }
            }
            for b in out {
                let times = millis_of(&self.spec.right_time, &b)?;
                let (on_time, times) = drop_late(
                    &times,
                    &mut self.other_max,
                    self.spec.right_lag_ms,
                    &self.metrics,
                );
                // a record without a time can never be within an interval
                fresh_times.extend(times.iter().map(|t| t.unwrap_or(i64::MIN)));
                fresh.push(match on_time {
                    Some(mask) => filter_record_batch(&b, &mask)?,
                    None => b,
                });
            }
        }
        if !fresh.is_empty() {
            fresh.insert(0, self.buffer.clone());
            let all = concat_batches(&self.other_schema, &fresh)?;
            let mut times = std::mem::take(&mut self.times);
            times.extend(fresh_times);
            let mut matched = std::mem::take(&mut self.matched);
            matched.resize(all.num_rows(), false);
            self.rebuild(all, times, matched)?;
        }
        Ok(())
    }

    /// Replaces the buffer and re-indexes it by key.
    /// `times` and `matched` run parallel to the buffer's rows.
    fn rebuild(&mut self, buffer: RecordBatch, times: Vec<i64>, matched: Vec<bool>) -> Result<()> {
        self.matched = matched;
        self.times = times;
        let keys = evaluate_all(&self.spec.right_keys, &buffer)?;
        if self.converter.is_none() {
            let (types, converter) = key_converter(&keys)?;
            self.key_types = types;
            self.converter = Some(converter);
        }
        let rows = self
            .converter
            .as_ref()
            .expect("created above")
            .convert_columns(&keys)?;
        self.index.clear();
        for (i, row) in rows.iter().enumerate() {
            if keys.iter().all(|k| k.is_valid(i)) && self.times[i] != i64::MIN {
                self.index
                    .entry(row.as_ref().into())
                    .or_default()
                    .push(i as u32);
            }
        }
        self.buffer = buffer;
        Ok(())
    }

    /// Drops buffered records before `cutoff` (no later driving record can
    /// reach them), emitting the unmatched ones for RIGHT/FULL joins.
    fn expire(&mut self, cutoff: i64, out: &mut Vec<RecordBatch>) -> Result<()> {
        if self.times.iter().all(|&t| t >= cutoff) {
            return Ok(());
        }
        if self.spec.keep_other_unmatched {
            let lonely: Vec<u32> = (0..self.times.len())
                .filter(|&j| self.times[j] < cutoff && !self.matched[j])
                .map(|j| j as u32)
                .collect();
            if !lonely.is_empty() {
                out.push(self.unmatched_other(&UInt32Array::from(lonely))?);
            }
        }
        let keep: Vec<bool> = self.times.iter().map(|&t| t >= cutoff).collect();
        let matched = self
            .matched
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(m, _)| *m)
            .collect();
        let times = self
            .times
            .iter()
            .zip(&keep)
            .filter(|(_, k)| **k)
            .map(|(t, _)| *t)
            .collect();
        let kept = filter_record_batch(&self.buffer, &BooleanArray::from(keep))?;
        self.rebuild(kept, times, matched)
    }

    /// Other-stream records with NULL driving columns.
    fn unmatched_other(&self, rows: &UInt32Array) -> Result<RecordBatch> {
        let driving = self.spec.schema.fields().len() - self.buffer.num_columns();
        let mut columns: Vec<ArrayRef> = self
            .spec
            .schema
            .fields()
            .iter()
            .take(driving)
            .map(|f| new_null_array(f.data_type(), rows.len()))
            .collect();
        for c in self.buffer.columns() {
            columns.push(take(c, rows, None)?);
        }
        super::grouped::conform(&self.spec.schema, columns)
    }
}

impl Operator for IntervalJoinOperator {
    fn name(&self) -> &'static str {
        "interval_join"
    }

    fn isolation(&self) -> RowIsolation {
        let mut exprs = self.spec.left_keys.clone();
        exprs.push(self.spec.left_time.clone());
        RowIsolation::Expressions(exprs)
    }

    fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        // what can fail for a row is evaluated before the other stream is read on
        let times = millis_of(&self.spec.left_time, &batch)?;
        let keys = evaluate_all(&self.spec.left_keys, &batch)?;
        let (batch, times, keys) = match drop_late(
            &times,
            &mut self.left_max,
            self.spec.left_lag_ms,
            &self.metrics,
        ) {
            (Some(mask), times) => (
                filter_record_batch(&batch, &mask)?,
                times,
                keys.iter()
                    .map(|k| filter(k, &mask))
                    .collect::<std::result::Result<Vec<_>, _>>()?,
            ),
            (None, times) => (batch, times, keys),
        };
        if let Some(max) = times.iter().flatten().max() {
            self.read_ahead(max + self.spec.upper_ms)?;
        }
        // the key types are known once the other stream has been read
        let keys = cast_keys(keys, &self.key_types)?;
        let (mut left, mut right): (Vec<u32>, Vec<u32>) = (Vec::new(), Vec::new());
        if let Some(converter) = &self.converter {
            let rows = converter.convert_columns(&keys)?;
            for (i, row) in rows.iter().enumerate() {
                if !times.is_valid(i) || !keys.iter().all(|k| k.is_valid(i)) {
                    continue;
                }
                let t = times.value(i);
                let (lo, hi) = (t + self.spec.lower_ms, t + self.spec.upper_ms);
                for &j in self.index.get(row.as_ref()).into_iter().flatten() {
                    let rt = self.times[j as usize];
                    if rt >= lo && rt <= hi {
                        left.push(i as u32);
                        right.push(j);
                    }
                }
            }
        }
        let passed = emit_pairs(
            &batch,
            &self.buffer,
            left,
            right.clone(),
            self.spec.filter.as_ref(),
            self.spec.keep_unmatched,
            &self.spec.schema,
            out,
        )?;
        for (j, ok) in right.into_iter().zip(passed) {
            if ok {
                self.matched[j as usize] = true;
            }
        }
        match self.left_max {
            Some(left_max) => {
                self.expire(left_max - self.spec.left_lag_ms + self.spec.lower_ms, out)
            }
            None => Ok(()),
        }
    }

    fn finish(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        if self.spec.keep_other_unmatched {
            // whatever the other stream still holds met nothing
            self.read_ahead(i64::MAX)?;
            self.expire(i64::MAX, out)?;
        }
        Ok(())
    }

    fn state(&mut self) -> Option<&mut dyn Checkpointable> {
        Some(self)
    }

    fn state_size(&self) -> StateSize {
        StateSize {
            windows: 0,
            keys: self.index.len(),
            rows: self.buffer.num_rows(),
        }
    }
}

/// Judges each time of one side against the watermark the records before
/// it left (`max` is that side's largest time so far, `lag` its allowed
/// out-of-orderness) and advances `max`. Returns the mask of records that
/// are not late (`None` when none is) and their times.
fn drop_late(
    times: &Int64Array,
    max: &mut Option<i64>,
    lag: i64,
    metrics: &JobMetrics,
) -> (Option<BooleanArray>, Int64Array) {
    let mut keep = Vec::with_capacity(times.len());
    for t in times.iter() {
        let late = match (t, *max) {
            (Some(t), Some(m)) if t < m - lag => {
                metrics.late_record(t, m - lag);
                true
            }
            _ => false,
        };
        if let Some(t) = t {
            *max = Some(max.map_or(t, |m| m.max(t)));
        }
        keep.push(!late);
    }
    if keep.iter().all(|k| *k) {
        return (None, times.clone());
    }
    let mask = BooleanArray::from(keep);
    let kept = filter(times, &mask)
        .map(|a| a.as_primitive::<Int64Type>().clone())
        .unwrap_or_else(|_| times.clone());
    (Some(mask), kept)
}

/// Schema metadata keys of an interval join's snapshot.
const OTHER_POSITION: &str = "other_position";
const OTHER_MAX: &str = "other_max";
const LEFT_MAX: &str = "left_max";
const OTHER_DONE: &str = "other_done";
const OTHER_OPERATOR: &str = "other_operator_";

/// The buffered records of the other stream with their times and whether
/// each met a driving record (two extra columns), and — in the schema's
/// metadata — where the other stream stands, how far both streams got, and
/// the state of the other stream's own operators (its event time), so a
/// restored join reads the other stream on from exactly there.
impl Checkpointable for IntervalJoinOperator {
    fn snapshot(&mut self) -> Result<OperatorSnapshot> {
        let position = self.other.position().ok_or_else(|| {
            EngineError::State(
                "the interval join's other stream cannot be replayed from a position".into(),
            )
        })?;
        let mut metadata = std::collections::HashMap::new();
        metadata.insert(OTHER_POSITION.to_string(), position.to_string());
        metadata.insert(OTHER_DONE.to_string(), self.other_done.to_string());
        for (key, value) in [(OTHER_MAX, self.other_max), (LEFT_MAX, self.left_max)] {
            if let Some(v) = value {
                metadata.insert(key.to_string(), v.to_string());
            }
        }
        for (i, op) in self.other_pipeline.operators_mut().iter_mut().enumerate() {
            if let Some(state) = op.state() {
                let bytes = state.snapshot()?.to_bytes()?;
                metadata.insert(format!("{OTHER_OPERATOR}{i}"), to_hex(&bytes));
            }
        }
        let mut fields: Vec<Field> = self
            .other_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new("__other_time", DataType::Int64, false));
        fields.push(Field::new("__other_matched", DataType::Boolean, false));
        let schema = Arc::new(Schema::new_with_metadata(fields, metadata));
        let mut columns = self.buffer.columns().to_vec();
        columns.push(Arc::new(Int64Array::from(self.times.clone())));
        columns.push(Arc::new(BooleanArray::from(self.matched.clone())));
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        Ok(OperatorSnapshot {
            schema,
            batches: vec![batch],
        })
    }

    fn restore(&mut self, snapshot: OperatorSnapshot) -> Result<()> {
        let meta = snapshot.schema.metadata();
        let bad = |what: &str| EngineError::State(format!("interval join snapshot: {what}"));
        let number = |key: &str| -> Result<Option<i64>> {
            meta.get(key)
                .map(|v| v.parse().map_err(|_| bad(key)))
                .transpose()
        };
        let position: crate::connector::Position = meta
            .get(OTHER_POSITION)
            .and_then(|p| serde_json::from_str(p).ok())
            .ok_or_else(|| bad("no position of the other stream"))?;
        self.other.seek(&position)?;
        self.other_done = meta.get(OTHER_DONE).is_some_and(|d| d == "true");
        self.other_max = number(OTHER_MAX)?;
        self.left_max = number(LEFT_MAX)?;
        for (i, op) in self.other_pipeline.operators_mut().iter_mut().enumerate() {
            if let Some(state) = op.state() {
                let bytes = meta
                    .get(&format!("{OTHER_OPERATOR}{i}"))
                    .and_then(|h| from_hex(h))
                    .ok_or_else(|| bad("no state for the other stream's operators"))?;
                state.restore(OperatorSnapshot::from_bytes(&bytes)?)?;
            }
        }
        let n = self.other_schema.fields().len();
        let mut buffers = vec![RecordBatch::new_empty(self.other_schema.clone())];
        let mut times = Vec::new();
        let mut matched = Vec::new();
        for batch in &snapshot.batches {
            buffers.push(RecordBatch::try_new(
                self.other_schema.clone(),
                batch.columns()[..n].to_vec(),
            )?);
            times.extend(batch.column(n).as_primitive::<Int64Type>().values().iter());
            matched.extend(
                batch
                    .column(n + 1)
                    .as_boolean()
                    .iter()
                    .map(|m| m == Some(true)),
            );
        }
        let buffer = concat_batches(&self.other_schema, &buffers)?;
        self.rebuild(buffer, times, matched)
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect()
}
