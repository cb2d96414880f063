//! Dead letters: records a job could not use — malformed input, late
//! records under `'late.data.strategy' = 'dead_letter'` — written to the
//! job's dead-letter sink with the reason, instead of only being counted.
//!
//! Sources and operators queue them on the job's metrics (cheaply, from any
//! point of the pipeline); the job writes the queue to the sink after each
//! batch.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{ArrayRef, StringArray, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;

use crate::error::Result;

/// One rejected record.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Where it came from: a file, stdin, a source name.
    pub source: String,
    /// Where in the source: `file:line`, or empty.
    pub position: String,
    pub reason: String,
    /// The record: its raw text, or the decoded row as JSON.
    pub record: String,
    pub event_time_ms: Option<i64>,
}

/// The columns a dead-letter sink receives.
pub static DEAD_LETTER_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("position", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("record", DataType::Utf8, false),
        Field::new(
            "event_time",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        ),
    ]))
});

/// Dead letters as a batch of [`DEAD_LETTER_SCHEMA`].
pub fn to_batch(letters: &[DeadLetter]) -> Result<RecordBatch> {
    let text = |f: fn(&DeadLetter) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(letters.iter().map(f)))
    };
    Ok(RecordBatch::try_new(
        DEAD_LETTER_SCHEMA.clone(),
        vec![
            text(|l| &l.source),
            text(|l| &l.position),
            text(|l| &l.reason),
            text(|l| &l.record),
            Arc::new(TimestampMillisecondArray::from(
                letters.iter().map(|l| l.event_time_ms).collect::<Vec<_>>(),
            )),
        ],
    )?)
}

/// One row of `batch` as a JSON object, for a dead letter's `record`.
pub fn row_as_json(batch: &RecordBatch, row: usize) -> String {
    let mut out = Vec::new();
    let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(&mut out);
    if writer
        .write(&batch.slice(row, 1))
        .and_then(|_| writer.finish())
        .is_err()
    {
        return String::new();
    }
    String::from_utf8_lossy(&out).trim_end().to_string()
}
