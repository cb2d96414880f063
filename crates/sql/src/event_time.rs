//! Event time and watermarks of a source, from its properties:
//! `event.time.field`, `event.time.format`, `watermark.strategy`,
//! `watermark.max_out_of_orderness` and `late.data.strategy`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::duration::parse_shorthand;
use crate::time_format::TimeFormat;

/// The property keys this module reads; they are not connector keys.
pub const EVENT_TIME_KEYS: &[&str] = &[
    "event.time.field",
    "event.time.format",
    "watermark.strategy",
    "watermark.max_out_of_orderness",
    "late.data.strategy",
    "watermark.idle_timeout",
];

/// How far behind the largest event time seen the watermark stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatermarkStrategy {
    BoundedOutOfOrderness(Duration),
    Ascending,
}

/// What happens to a record whose windows have all closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LateDataStrategy {
    Drop,
    DeadLetter,
}

/// Event-time settings of one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTime {
    /// The column holding event time; `None` means arrival time.
    pub field: Option<String>,
    pub format: TimeFormat,
    pub watermark: WatermarkStrategy,
    pub late_data: LateDataStrategy,
    /// A partition silent for this long stops holding the watermark back.
    pub idle_timeout: Option<Duration>,
}

impl Default for EventTime {
    fn default() -> Self {
        Self {
            field: None,
            format: TimeFormat::Auto,
            watermark: WatermarkStrategy::BoundedOutOfOrderness(Duration::ZERO),
            late_data: LateDataStrategy::Drop,
            idle_timeout: None,
        }
    }
}

impl EventTime {
    /// Reads the event-time keys; the error names the key and the accepted values.
    pub fn from_properties(props: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut spec = EventTime {
            field: props.get("event.time.field").cloned(),
            ..Default::default()
        };
        if let Some(format) = props.get("event.time.format") {
            spec.format =
                TimeFormat::parse(format).map_err(|e| format!("'event.time.format' = {e}"))?;
        }
        let bound = match props.get("watermark.max_out_of_orderness") {
            Some(text) => Some(parse_shorthand(text).ok_or_else(|| {
                format!("'watermark.max_out_of_orderness' = '{text}' is not a duration; write e.g. 30s, 500ms, 5m")
            })?),
            None => None,
        };
        spec.watermark = match props.get("watermark.strategy").map(String::as_str) {
            None | Some("bounded_out_of_orderness") => WatermarkStrategy::BoundedOutOfOrderness(bound.unwrap_or_default()),
            Some("ascending") => WatermarkStrategy::Ascending,
            Some(other) => {
                return Err(format!(
                    "'watermark.strategy' = '{other}' is unknown; use bounded_out_of_orderness or ascending"
                ))
            }
        };
        if let Some(text) = props.get("watermark.idle_timeout") {
            let timeout = parse_shorthand(text).ok_or_else(|| {
                format!("'watermark.idle_timeout' = '{text}' is not a duration; write e.g. 30s, 1m")
            })?;
            if timeout.is_zero() {
                return Err(format!("'watermark.idle_timeout' = '{text}' would declare every partition idle at once; write a positive duration such as 30s, or leave the key out"));
            }
            spec.idle_timeout = Some(timeout);
        }
        spec.late_data = match props.get("late.data.strategy").map(String::as_str) {
            None | Some("drop") => LateDataStrategy::Drop,
            Some("dead_letter") => LateDataStrategy::DeadLetter,
            Some(other) => {
                return Err(format!(
                    "'late.data.strategy' = '{other}' is unknown; use drop or dead_letter"
                ))
            }
        };
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_and_explicit_values() {
        let d = EventTime::from_properties(&props(&[])).unwrap();
        assert_eq!(d, EventTime::default());
        let e = EventTime::from_properties(&props(&[
            ("event.time.field", "ts"),
            ("event.time.format", "epoch_seconds"),
            ("watermark.max_out_of_orderness", "10s"),
            ("late.data.strategy", "dead_letter"),
        ]))
        .unwrap();
        assert_eq!(e.field.as_deref(), Some("ts"));
        assert_eq!(e.format, TimeFormat::EpochSeconds);
        assert_eq!(
            e.watermark,
            WatermarkStrategy::BoundedOutOfOrderness(Duration::from_secs(10))
        );
        assert_eq!(e.late_data, LateDataStrategy::DeadLetter);
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = EventTime::from_properties(&props(&[("watermark.strategy", "eventually")]))
            .unwrap_err();
        assert!(err.contains("'watermark.strategy'"), "{err}");
        let err = EventTime::from_properties(&props(&[("watermark.max_out_of_orderness", "soon")]))
            .unwrap_err();
        assert!(err.contains("not a duration"), "{err}");
    }
}
