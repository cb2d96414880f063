//! How the time values of a source are encoded: the unit of epoch numbers
//! and the pattern of text, per column.
//!
//! A `TIMESTAMP` column may arrive as an epoch number, ISO-8601 text or
//! text in a chrono pattern. Text says what it is; a number does not, so
//! its unit comes from the source's properties, most specific first:
//! `'time.format.<column>'`, then `'event.time.format'` for the event-time
//! field, then `'time.format'` for every time column of the source. The
//! default reads numbers as epoch milliseconds, the most common encoding on
//! Kafka — never as nanoseconds, which is what Arrow would assume.

use std::collections::BTreeMap;

use datafusion::arrow::compute::kernels::cast_utils::string_to_timestamp_nanos;

/// The key naming the encoding of every time column of a source.
pub const SOURCE_TIME_FORMAT: &str = "time.format";

/// The prefix of the keys naming the encoding of one column: `time.format.<column>`.
pub const COLUMN_TIME_FORMAT: &str = "time.format.";

/// How the values of one time column are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeFormat {
    /// Whatever the value says: timestamps as they are, numbers as epoch
    /// milliseconds, text as ISO 8601.
    Auto,
    EpochSeconds,
    EpochMillis,
    EpochMicros,
    EpochNanos,
    /// ISO 8601 / RFC 3339 text (numbers still read as epoch milliseconds).
    Iso8601,
    /// A chrono pattern such as `%Y-%m-%d %H:%M:%S`.
    Pattern(String),
}

impl TimeFormat {
    /// Reads a format name; the error lists the accepted ones.
    pub fn parse(text: &str) -> Result<Self, String> {
        Ok(match text.to_ascii_lowercase().as_str() {
            "auto" => TimeFormat::Auto,
            "epoch_seconds" | "epoch_secs" | "epoch_s" | "epoch" => TimeFormat::EpochSeconds,
            "epoch_millis" | "epoch_ms" => TimeFormat::EpochMillis,
            "epoch_micros" | "epoch_us" => TimeFormat::EpochMicros,
            "epoch_nanos" | "epoch_ns" => TimeFormat::EpochNanos,
            "iso8601" | "iso_8601" | "rfc3339" => TimeFormat::Iso8601,
            _ if text.contains('%') => TimeFormat::Pattern(text.to_string()),
            _ => {
                return Err(format!(
                    "'{text}' is not a time format; use epoch_seconds, epoch_millis, epoch_micros, epoch_nanos, iso8601 or a chrono pattern such as %Y-%m-%d %H:%M:%S"
                ))
            }
        })
    }

    /// How many nanoseconds one unit of an epoch number is.
    pub fn nanos_per_unit(&self) -> i64 {
        match self {
            TimeFormat::EpochSeconds => 1_000_000_000,
            TimeFormat::EpochMicros => 1_000,
            TimeFormat::EpochNanos => 1,
            _ => 1_000_000,
        }
    }

    /// Nanoseconds since the epoch of `value` (text or a number as text)
    /// read in this format; `None` when it is not a time.
    pub fn nanos_of(&self, value: &str) -> Option<i128> {
        parse_nanos(value, self)
    }

    /// The chrono pattern of text values, if the format has one.
    pub fn pattern(&self) -> Option<&str> {
        match self {
            TimeFormat::Pattern(p) => Some(p),
            _ => None,
        }
    }
}

/// The encodings of a source's time columns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimeFormats {
    /// For columns without their own entry.
    pub default: Option<TimeFormat>,
    pub columns: BTreeMap<String, TimeFormat>,
}

impl TimeFormats {
    /// Reads `time.format` and `time.format.<column>`; `event_time` is the
    /// event-time field and its `event.time.format`, which applies to that
    /// column unless the column has a key of its own.
    pub fn from_properties(
        props: &BTreeMap<String, String>,
        event_time: Option<(&str, &TimeFormat)>,
    ) -> Result<Self, String> {
        let with_key =
            |key: &str, text: &str| TimeFormat::parse(text).map_err(|e| format!("'{key}' = {e}"));
        let mut formats = TimeFormats::default();
        if let Some(text) = props.get(SOURCE_TIME_FORMAT) {
            formats.default = Some(with_key(SOURCE_TIME_FORMAT, text)?);
        }
        if let Some((field, format)) = event_time {
            if *format != TimeFormat::Auto {
                formats.columns.insert(field.to_string(), format.clone());
            }
        }
        for (key, text) in props {
            if let Some(column) = key.strip_prefix(COLUMN_TIME_FORMAT) {
                formats
                    .columns
                    .insert(column.to_string(), with_key(key, text)?);
            }
        }
        Ok(formats)
    }

    /// The encoding of `column`.
    pub fn of(&self, column: &str) -> &TimeFormat {
        self.columns
            .get(column)
            .or(self.default.as_ref())
            .unwrap_or(&TimeFormat::Auto)
    }

    /// Whether `key` is one of the keys this module reads.
    pub fn is_key(key: &str) -> bool {
        key == SOURCE_TIME_FORMAT || key.starts_with(COLUMN_TIME_FORMAT)
    }
}

/// Nanoseconds since the epoch of one value in `format`: a plain integer
/// in the format's unit, text in its pattern (tried first: `%Y%m%d` reads
/// digits), another number in the unit, else ISO-8601 text.
fn parse_nanos(value: &str, format: &TimeFormat) -> Option<i128> {
    let value = value.trim();
    // the common case first: a plain integer of the unit
    if format.pattern().is_none() {
        if let Ok(n) = value.parse::<i64>() {
            return i128::from(n).checked_mul(i128::from(format.nanos_per_unit()));
        }
    }
    // a pattern may read digits (`%Y%m%d`), so it is tried first
    if let Some(nanos) = format.pattern().and_then(|p| nanos_in_pattern(value, p)) {
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
pub fn nanos_in_pattern(value: &str, pattern: &str) -> Option<i128> {
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

    #[test]
    fn the_most_specific_key_wins() {
        let props: BTreeMap<String, String> = [
            ("time.format", "epoch_seconds"),
            ("time.format.created", "%d/%m/%Y %H:%M"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let formats =
            TimeFormats::from_properties(&props, Some(("ts", &TimeFormat::EpochMillis))).unwrap();
        assert_eq!(formats.of("ts"), &TimeFormat::EpochMillis);
        assert_eq!(formats.of("other"), &TimeFormat::EpochSeconds);
        assert_eq!(formats.of("created").pattern(), Some("%d/%m/%Y %H:%M"));
        assert_eq!(TimeFormats::default().of("ts"), &TimeFormat::Auto);
    }

    #[test]
    fn a_bad_format_names_its_key() {
        let props: BTreeMap<String, String> = [("time.format.ts".to_string(), "ms".to_string())]
            .into_iter()
            .collect();
        let err = TimeFormats::from_properties(&props, None).unwrap_err();
        assert!(
            err.contains("'time.format.ts'") && err.contains("epoch_millis"),
            "{err}"
        );
    }
}
