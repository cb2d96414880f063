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
use datafusion::arrow::compute::kernels::cast_utils::string_to_timestamp_nanos;
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
/// the first value that is not a time.
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
            Some(v) => parse_nanos(v, format)
                .map(|nanos| nanos.div_euclid(nanos_per_value))
                .and_then(|n| i64::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| v.to_string()),
        })
        .collect()
}

/// Nanoseconds since the epoch of one value.
pub fn parse_nanos(value: &str, format: &TimeFormat) -> Option<i128> {
    let value = value.trim();
    // the common case first: a plain integer of the unit
    if format.pattern().is_none() {
        if let Ok(n) = value.parse::<i64>() {
            return i128::from(n).checked_mul(i128::from(format.nanos_per_unit()));
        }
    }
    // a pattern may read digits (`%Y%m%d`), so it is tried first
    if let Some(nanos) = format.pattern().and_then(|p| with_pattern(value, p)) {
        return Some(nanos);
    }
    if looks_numeric(value) {
        return epoch_nanos(value, format.nanos_per_unit() as i128);
    }
    if format.pattern().is_some() {
        return None;
    }
    string_to_timestamp_nanos(value).ok().map(i128::from)
}

/// An epoch number: digits, with an optional sign, fraction and exponent.
fn looks_numeric(value: &str) -> bool {
    let unsigned = value.strip_prefix(['-', '+']).unwrap_or(value);
    unsigned.starts_with(|c: char| c.is_ascii_digit()) && value.parse::<f64>().is_ok()
}

/// An epoch number in units of `unit_nanos` nanoseconds, exact for
/// integers and decimal fractions; exponents go through `f64`.
fn epoch_nanos(value: &str, unit_nanos: i128) -> Option<i128> {
    if value.contains(['e', 'E']) {
        let v: f64 = value.parse().ok()?;
        let nanos = v * unit_nanos as f64;
        return nanos.is_finite().then_some(nanos as i128);
    }
    let (negative, digits) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value.strip_prefix('+').unwrap_or(value)),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.len() > 30 || !fraction.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mut nanos = whole.parse::<i128>().ok()?.checked_mul(unit_nanos)?;
    let mut scale = unit_nanos;
    for digit in fraction.bytes() {
        scale /= 10;
        if scale == 0 {
            break;
        }
        nanos += i128::from(digit - b'0') * scale;
    }
    Some(if negative { -nanos } else { nanos })
}

/// Text in a chrono pattern: with an offset (`%z`) it names an instant;
/// without, it is taken as UTC; a pattern without a time of day reads a date.
fn with_pattern(value: &str, pattern: &str) -> Option<i128> {
    let nanos = |t: chrono::DateTime<chrono::Utc>| t.timestamp_nanos_opt().map(i128::from);
    if let Ok(t) = chrono::DateTime::parse_from_str(value, pattern) {
        return nanos(t.to_utc());
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(value, pattern) {
        return nanos(t.and_utc());
    }
    chrono::NaiveDate::parse_from_str(value, pattern)
        .ok()
        .and_then(|d| nanos(d.and_hms_opt(0, 0, 0)?.and_utc()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOV_14: i128 = 1_700_000_000_000_000_000;

    #[test]
    fn numbers_are_read_in_the_unit_of_the_format() {
        assert_eq!(
            parse_nanos("1700000000000", &TimeFormat::Auto),
            Some(NOV_14)
        );
        assert_eq!(
            parse_nanos("1700000000000", &TimeFormat::EpochMillis),
            Some(NOV_14)
        );
        assert_eq!(
            parse_nanos("1700000000", &TimeFormat::EpochSeconds),
            Some(NOV_14)
        );
        assert_eq!(
            parse_nanos("1700000000.25", &TimeFormat::EpochSeconds),
            Some(NOV_14 + 250_000_000)
        );
        assert_eq!(
            parse_nanos("1700000000000000", &TimeFormat::EpochMicros),
            Some(NOV_14)
        );
        assert_eq!(
            parse_nanos("1700000000000000000", &TimeFormat::EpochNanos),
            Some(NOV_14)
        );
        assert_eq!(parse_nanos("1.7e12", &TimeFormat::Auto), Some(NOV_14));
        assert_eq!(
            parse_nanos("-1000", &TimeFormat::EpochMillis),
            Some(-1_000_000_000)
        );
    }

    #[test]
    fn text_is_iso_8601_or_the_pattern() {
        assert_eq!(
            parse_nanos("2023-11-14T22:13:20Z", &TimeFormat::EpochMillis),
            Some(NOV_14)
        );
        assert_eq!(
            parse_nanos("2023-11-14T23:13:20+01:00", &TimeFormat::Auto),
            Some(NOV_14)
        );
        assert_eq!(
            parse_nanos("2023-11-14 22:13:20", &TimeFormat::Auto),
            Some(NOV_14)
        );
        let pattern = TimeFormat::Pattern("%d/%m/%Y %H:%M:%S".into());
        assert_eq!(parse_nanos("14/11/2023 22:13:20", &pattern), Some(NOV_14));
        assert_eq!(parse_nanos("yesterday", &TimeFormat::Auto), None);
        assert_eq!(parse_nanos("2023-13-45", &TimeFormat::Auto), None);
    }
}
