//! Durations as users write them: `30s`, `5m`, `500ms`, `1h`, `1d`, and the
//! SQL interval forms `INTERVAL '5' MINUTE` / `INTERVAL '5 minutes'`.

use std::time::Duration;

/// Parses the shorthand form (`500ms`, `30s`, `5m`, `1h`, `1d`; a bare
/// number is milliseconds). Returns `None` when the text is not a duration.
pub fn parse_shorthand(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let millis = value * unit_millis(unit.trim())?;
    (millis.is_finite() && millis >= 0.0)
        .then(|| Duration::from_micros((millis * 1000.0).round() as u64))
}

/// Parses `'<n>' <UNIT>` or `'<n> <unit>'`, the body of an SQL `INTERVAL`.
pub fn parse_interval(quantity: &str, unit: Option<&str>) -> Option<Duration> {
    match unit {
        Some(unit) => {
            let value: f64 = quantity.trim().parse().ok()?;
            Some(Duration::from_micros(
                (value * unit_millis(unit)? * 1000.0).round() as u64,
            ))
        }
        None => {
            let mut parts = quantity.split_whitespace();
            let value = parts.next()?;
            match parts.next() {
                Some(unit) if parts.next().is_none() => parse_interval(value, Some(unit)),
                None => parse_shorthand(value),
                _ => None,
            }
        }
    }
}

fn unit_millis(unit: &str) -> Option<f64> {
    Some(match unit.to_ascii_lowercase().as_str() {
        "" | "ms" | "millisecond" | "milliseconds" => 1.0,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000.0,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000.0,
        "h" | "hr" | "hour" | "hours" => 3_600_000.0,
        "d" | "day" | "days" => 86_400_000.0,
        _ => return None,
    })
}

/// Formats a duration in the shortest shorthand that is exact.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorthand_units() {
        assert_eq!(parse_shorthand("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_shorthand("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_shorthand("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_shorthand("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_shorthand("1d"), Some(Duration::from_secs(86400)));
        assert_eq!(parse_shorthand("200"), Some(Duration::from_millis(200)));
        assert_eq!(parse_shorthand("5 parsecs"), None);
        assert_eq!(parse_shorthand("m"), None);
    }

    #[test]
    fn interval_forms() {
        assert_eq!(
            parse_interval("5", Some("MINUTE")),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            parse_interval("10 seconds", None),
            Some(Duration::from_secs(10))
        );
        assert_eq!(parse_interval("1", Some("fortnight")), None);
    }

    #[test]
    fn formatting_round_trips() {
        for text in ["500ms", "30s", "5m", "1h", "2d", "90s"] {
            assert_eq!(format_duration(parse_shorthand(text).unwrap()), text);
        }
    }
}
