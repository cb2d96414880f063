//! Time columns as they are decoded.
//!
//! Arrow's JSON and CSV readers take an integer in a timestamp column as a
//! count of the column's own unit — nanoseconds for SQL `TIMESTAMP` — so
//! epoch milliseconds, the most common encoding, would land in January
//! 1970. Time columns are therefore decoded as text and converted here:
//! numbers in the unit the source's [`TimeFormats`] names (epoch
//! milliseconds by default), text in its chrono pattern or as ISO 8601.
//! Text with an offset becomes the instant it names, in UTC; text without
//! one is taken as UTC.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, PrimitiveArray, StringArray};
use datafusion::arrow::datatypes::{
    ArrowTimestampType, DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use velostream_sql::{TimeFormat, TimeFormats};

/// `schema` with every timestamp column turned into text, the form the
/// readers decode it in.
pub fn as_text(schema: &SchemaRef) -> SchemaRef {
    if !schema.fields().iter().any(|f| is_time(f.data_type())) {
        return schema.clone();
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            t if is_time(t) => f.as_ref().clone().with_data_type(DataType::Utf8),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

fn is_time(data_type: &DataType) -> bool {
    matches!(data_type, DataType::Timestamp(..))
}

/// Converts the text time columns of `batch` (decoded with
/// [`as_text`]`(schema)`) into the timestamps `schema` declares. A value
/// that is not a time fails the batch, naming the column and the value.
pub fn to_schema(
    batch: RecordBatch,
    schema: &SchemaRef,
    formats: &TimeFormats,
) -> Result<RecordBatch, ArrowError> {
    if batch.schema_ref() == schema {
        return Ok(batch);
    }
    let columns = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(field, column)| match field.data_type() {
            DataType::Timestamp(unit, zone) => {
                let format = formats.of(field.name());
                parse_column(column, format, *unit, zone.clone())
                    .map_err(|value| not_a_time(field.name(), &value, format))
            }
            _ => Ok(column.clone()),
        })
        .collect::<Result<Vec<_>, ArrowError>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}

fn not_a_time(column: &str, value: &str, format: &TimeFormat) -> ArrowError {
    let expected = match format {
        TimeFormat::Pattern(p) => format!("text in the pattern {p} or an epoch number"),
        TimeFormat::Auto | TimeFormat::Iso8601 => {
            "an epoch number (milliseconds) or ISO-8601 text".to_string()
        }
        _ => "an epoch number or ISO-8601 text".to_string(),
    };
    ArrowError::ParseError(format!(
        "column '{column}': '{value}' is not a time (expected {expected})"
    ))
}

/// The column's values as timestamps in `unit` and `zone`; `Err` holds
/// the first value that is not a time (not a message: the caller words
/// it with the column and the expected format).
fn parse_column(
    column: &ArrayRef,
    format: &TimeFormat,
    unit: TimeUnit,
    zone: Option<Arc<str>>,
) -> Result<ArrayRef, String> {
    let text = column.as_string::<i32>();
    Ok(match unit {
        TimeUnit::Second => Arc::new(
            parse_into::<TimestampSecondType>(text, format, 1_000_000_000)?.with_timezone_opt(zone),
        ),
        TimeUnit::Millisecond => Arc::new(
            parse_into::<TimestampMillisecondType>(text, format, 1_000_000)?
                .with_timezone_opt(zone),
        ),
        TimeUnit::Microsecond => Arc::new(
            parse_into::<TimestampMicrosecondType>(text, format, 1_000)?.with_timezone_opt(zone),
        ),
        TimeUnit::Nanosecond => Arc::new(
            parse_into::<TimestampNanosecondType>(text, format, 1)?.with_timezone_opt(zone),
        ),
    })
}

fn parse_into<T: ArrowTimestampType>(
    text: &StringArray,
    format: &TimeFormat,
    nanos_per_value: i128,
) -> Result<PrimitiveArray<T>, String> {
    text.iter()
        .map(|value| match value {
            None => Ok(None),
            Some(v) => format
                .nanos_of(v)
                .map(|nanos| nanos.div_euclid(nanos_per_value))
                .and_then(|n| i64::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| v.to_string()),
        })
        .collect()
}
