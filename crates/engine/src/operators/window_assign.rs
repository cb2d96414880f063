//! Event time, watermarks and window assignment, right after decoding.
//!
//! For every record: read its event time, find the windows it belongs to
//! (one for TUMBLING, size/advance for SLIDING), and emit one row per open
//! window with `_window_start` / `_window_end`. A record whose windows have
//! all closed (window end at or before the watermark) is late: it is counted,
//! reported and dropped. The watermark is the largest event time seen minus
//! the allowed out-of-orderness (the minimum over source partitions), and
//! each record is judged against the watermark as the records before it
//! advanced it — never against one computed at a batch boundary — so which
//! records are late is a function of the input order alone, whatever the
//! batch size. Downstream operators receive the watermark after the batch;
//! they close windows then, and a window's accepted records are all in it
//! by then. Session windows decide lateness after merging, downstream: each
//! of their rows carries the watermark it saw (see [`crate::row_watermark`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, TimestampMillisecondArray, UInt32Array,
};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{
    DataType, Field, Float64Type, Int64Type, Schema, SchemaRef, TimeUnit, UInt64Type,
};
use datafusion::arrow::record_batch::RecordBatch;
use velostream_sql::plan::columns::window_role;
use velostream_sql::time_format::nanos_in_pattern;
use velostream_sql::{EventTime, LateDataStrategy, TimeFormat, WatermarkStrategy, WindowKind};

use super::Operator;
use crate::dead_letter::{row_as_json, DeadLetter};
use crate::error::{EngineError, Result};
use crate::metrics::JobMetrics;
use crate::row_watermark;
use crate::state::{Checkpointable, OperatorSnapshot};
use crate::watermark::{wall_clock_ms, WatermarkTracker};

/// The column that numbers a record's source partition (Kafka sources
/// provide it); without it a source is one partition.
const PARTITION_COLUMN: &str = "_partition";

/// Where an output column comes from.
enum Column {
    Input(usize),
    WindowStart,
    WindowEnd,
    EventTime,
}

pub struct WindowAssignOperator {
    /// Input column holding event time; `None` = arrival time.
    time: Option<(usize, String)>,
    format: TimeFormat,
    /// `None`: every record passes once, with its event time.
    window: Option<WindowKind>,
    /// Input column numbering the source partition a record came from.
    partition: Option<usize>,
    watermarks: WatermarkTracker,
    emitted: Option<i64>,
    late_data: LateDataStrategy,
    columns: Vec<Column>,
    schema: SchemaRef,
    /// Session windows: rows carry the watermark each record saw.
    row_watermarks: bool,
    metrics: Arc<JobMetrics>,
}

impl WindowAssignOperator {
    pub fn new(
        input: SchemaRef,
        time_column: Option<&str>,
        event_time: &EventTime,
        window: Option<WindowKind>,
        schema: SchemaRef,
        metrics: Arc<JobMetrics>,
    ) -> Result<Self> {
        let time = match time_column {
            Some(name) => Some((input.index_of(name)?, name.to_string())),
            None => None,
        };
        // processing time is one clock, whatever the partition
        let partition = time
            .is_some()
            .then(|| input.index_of(PARTITION_COLUMN).ok())
            .flatten();
        let columns = schema
            .fields()
            .iter()
            .map(|f| match window_role(f) {
                Some("start") => Ok(Column::WindowStart),
                Some("end") => Ok(Column::WindowEnd),
                Some(_) => Ok(Column::EventTime),
                None => Ok(Column::Input(input.index_of(f.name())?)),
            })
            .collect::<Result<Vec<_>>>()?;
        let lag = match event_time.watermark {
            WatermarkStrategy::BoundedOutOfOrderness(d) => d,
            WatermarkStrategy::Ascending => Duration::ZERO,
        };
        let row_watermarks = matches!(window, Some(WindowKind::Session { .. }));
        let schema = if row_watermarks {
            row_watermark::with_column(&schema)
        } else {
            schema
        };
        Ok(Self {
            time,
            format: event_time.format.clone(),
            window,
            partition,
            watermarks: WatermarkTracker::new(lag, event_time.idle_timeout),
            emitted: None,
            late_data: event_time.late_data,
            columns,
            schema,
            row_watermarks,
            metrics,
        })
    }

    /// Windows containing `t`, earliest first.
    fn windows_of(&self, t: i64, out: &mut Vec<(i64, i64)>) {
        out.clear();
        match self.window {
            None => out.push((t, t)),
            Some(WindowKind::Tumbling { size }) => {
                let size = size.as_millis() as i64;
                let start = t.div_euclid(size) * size;
                out.push((start, start + size));
            }
            Some(WindowKind::Sliding { size, advance }) => {
                let (size, advance) = (size.as_millis() as i64, advance.as_millis() as i64);
                let mut start = t.div_euclid(advance) * advance;
                while start > t - size {
                    out.push((start, start + size));
                    start -= advance;
                }
                out.reverse();
            }
            // The record's own proto-session; the session operator merges.
            Some(WindowKind::Session { gap }) => out.push((t, t + gap.as_millis() as i64)),
        }
    }

    fn event_times(&self, batch: &RecordBatch) -> Result<Int64Array> {
        match &self.time {
            Some((index, _)) => event_millis(batch.column(*index), &self.format),
            None => Ok(Int64Array::from(vec![wall_clock_ms(); batch.num_rows()])),
        }
    }
}

impl Operator for WindowAssignOperator {
    fn name(&self) -> &'static str {
        "window_assign"
    }

    fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        let times = self.event_times(&batch)?;
        let now = Instant::now();
        let partitions = match self.partition {
            Some(i) => Some(cast(batch.column(i), &DataType::UInt64)?),
            None => None,
        };
        let mut rows: Vec<u32> = Vec::with_capacity(batch.num_rows());
        let mut starts: Vec<i64> = Vec::with_capacity(batch.num_rows());
        let mut ends: Vec<i64> = Vec::with_capacity(batch.num_rows());
        let mut windows = Vec::new();
        let wants_times = self.columns.iter().any(|c| matches!(c, Column::EventTime));
        let mut times_out: Vec<i64> =
            Vec::with_capacity(if wants_times { batch.num_rows() } else { 0 });
        let mut row_watermarks: Vec<Option<i64>> = Vec::new();
        let partitions = partitions
            .as_ref()
            .and_then(|p| p.as_primitive_opt::<UInt64Type>());
        // sessions decide lateness after merging
        let merging = !matches!(
            self.window,
            Some(WindowKind::Tumbling { .. } | WindowKind::Sliding { .. })
        );
        for row in 0..batch.num_rows() {
            if times.is_null(row) {
                let column = self.time.as_ref().map(|(_, n)| n.as_str()).unwrap_or("?");
                let reason = format!("column '{column}' is null or not a time");
                self.metrics.bad_record("event time", &reason);
                self.metrics.dead_letter(|| DeadLetter {
                    source: "event time".into(),
                    position: String::new(),
                    reason,
                    record: row_as_json(&batch, row),
                    event_time_ms: None,
                });
                continue;
            }
            let t = times.value(row);
            let partition = partitions.map(|p| p.value(row) as usize).unwrap_or(0);
            // the watermark as the records before this one left it
            let closed_up_to = self.watermarks.current();
            self.windows_of(t, &mut windows);
            let before = rows.len();
            for &(start, end) in &windows {
                if !merging && closed_up_to.is_some_and(|wm| end <= wm) {
                    continue;
                }
                rows.push(row as u32);
                if wants_times {
                    times_out.push(t);
                }
                if self.row_watermarks {
                    row_watermarks.push(closed_up_to);
                }
                starts.push(start);
                ends.push(end);
            }
            if rows.len() == before && !windows.is_empty() {
                let watermark = closed_up_to.unwrap_or(i64::MIN);
                self.metrics.late_record(t, watermark);
                if self.late_data == LateDataStrategy::DeadLetter {
                    self.metrics.dead_letter(|| DeadLetter {
                        source: "window".into(),
                        position: String::new(),
                        reason: format!("late: every window of the record had closed (watermark {watermark} ms)"),
                        record: row_as_json(&batch, row),
                        event_time_ms: Some(t),
                    });
                }
            }
            if let Some(advanced) = self.watermarks.observe_record(partition, t, now) {
                self.emitted = Some(advanced);
            }
        }
        // idle partitions may release the watermark without a record
        if let Some(advanced) = self.watermarks.advance(now) {
            self.emitted = Some(advanced);
        }
        if rows.is_empty() {
            return Ok(());
        }
        let indices = UInt32Array::from(rows);
        let starts: ArrayRef = Arc::new(TimestampMillisecondArray::from(starts));
        let ends: ArrayRef = Arc::new(TimestampMillisecondArray::from(ends));
        let mut columns = self
            .columns
            .iter()
            .map(|c| match c {
                Column::Input(i) => Ok(take(batch.column(*i), &indices, None)?),
                Column::WindowStart => Ok(starts.clone()),
                Column::WindowEnd => Ok(ends.clone()),
                Column::EventTime => {
                    Ok(Arc::new(TimestampMillisecondArray::from(times_out.clone())) as ArrayRef)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        if self.row_watermarks {
            columns.push(row_watermark::column(row_watermarks));
        }
        out.push(RecordBatch::try_new(self.schema.clone(), columns)?);
        Ok(())
    }

    fn state(&mut self) -> Option<&mut dyn Checkpointable> {
        Some(self)
    }

    fn on_source_partitions(&mut self, partitions: &[usize]) {
        if self.partition.is_some() {
            self.watermarks
                .expect_partitions(partitions, Instant::now());
        }
    }

    fn take_watermark(&mut self) -> Option<i64> {
        self.emitted.take()
    }

    /// Processing time passes without input too: the watermark follows
    /// the clock, so windows close when their end has passed.
    /// With event time, the watermark is recomputed: a partition awaited
    /// for its first record, or one gone idle, may stop holding it back
    /// while nothing arrives.
    fn on_idle(&mut self) {
        if self.time.is_none() {
            self.watermarks.observe(0, wall_clock_ms(), Instant::now());
        }
        if let Some(advanced) = self.watermarks.advance(Instant::now()) {
            self.emitted = Some(advanced);
        }
    }
}

/// Event time in milliseconds since the epoch; null where a value is
/// missing or cannot be read as a time.
pub fn event_millis(column: &ArrayRef, format: &TimeFormat) -> Result<Int64Array> {
    let millis = DataType::Timestamp(TimeUnit::Millisecond, None);
    let as_i64 = |a: &ArrayRef| -> Result<Int64Array> {
        Ok(cast(a, &DataType::Int64)?
            .as_primitive::<Int64Type>()
            .clone())
    };
    let data_type = column.data_type();
    Ok(match (data_type, format) {
        (DataType::Timestamp(..) | DataType::Date32 | DataType::Date64, _) => {
            as_i64(&cast(column, &millis)?)?
        }
        // numbers are in the format's epoch unit (milliseconds by default)
        (t, f) if t.is_integer() => {
            let per_unit = f.nanos_per_unit();
            let values = as_i64(column)?;
            if per_unit > 1_000_000 {
                values.unary(|v: i64| v.saturating_mul(per_unit / 1_000_000))
            } else if per_unit < 1_000_000 {
                values.unary(|v: i64| v.div_euclid(1_000_000 / per_unit))
            } else {
                values
            }
        }
        (t, f) if t.is_floating() => {
            let scale = f.nanos_per_unit() as f64 / 1_000_000.0;
            cast(column, &DataType::Float64)?
                .as_primitive::<Float64Type>()
                .unary(|v| (v * scale) as i64)
        }
        (
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View,
            TimeFormat::Pattern(pattern),
        ) => {
            let text = cast(column, &DataType::Utf8)?;
            text.as_string::<i32>()
                .iter()
                .map(|v| {
                    let nanos = nanos_in_pattern(v?, pattern)?;
                    i64::try_from(nanos.div_euclid(1_000_000)).ok()
                })
                .collect()
        }
        (DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View, _) => {
            as_i64(&cast(column, &millis)?)?
        }
        (other, _) => {
            return Err(EngineError::Plan(format!(
                "an event-time column must be a timestamp, a number or text, not {other}"
            )))
        }
    })
}

impl Checkpointable for WindowAssignOperator {
    /// One row per partition (`partition`, largest event time), plus the
    /// watermark itself as partition -1.
    fn snapshot(&mut self) -> Result<OperatorSnapshot> {
        let (current, partitions) = self.watermarks.positions();
        let mut ids: Vec<i64> = partitions.iter().map(|(p, _)| *p as i64).collect();
        let mut values: Vec<Option<i64>> = partitions.iter().map(|(_, v)| Some(*v)).collect();
        ids.push(-1);
        values.push(current);
        let schema = Arc::new(Schema::new(vec![
            Field::new("partition", DataType::Int64, false),
            Field::new("event_time_ms", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(Int64Array::from(values)),
            ],
        )?;
        Ok(OperatorSnapshot {
            schema,
            batches: vec![batch],
        })
    }

    fn restore(&mut self, snapshot: OperatorSnapshot) -> Result<()> {
        let mut current = None;
        let mut partitions = Vec::new();
        for batch in &snapshot.batches {
            let ids = batch.column(0).as_primitive::<Int64Type>();
            let values = batch.column(1).as_primitive::<Int64Type>();
            for row in 0..batch.num_rows() {
                match (ids.value(row), values.is_valid(row)) {
                    (-1, valid) => current = valid.then(|| values.value(row)),
                    (p, true) if p >= 0 => partitions.push((p as usize, values.value(row))),
                    _ => return Err(EngineError::State("malformed watermark snapshot".into())),
                }
            }
        }
        self.watermarks
            .restore(current, &partitions, Instant::now());
        Ok(())
    }
}
