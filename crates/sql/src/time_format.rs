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

#[cfg(test)]
mod tests {
    use super::*;

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
