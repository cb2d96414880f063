//! Value forms of the configuration files: durations (`30s`, `5m`,
//! `200ms`, `7d`, or integer milliseconds) and byte sizes (`100MB`, `1MiB`,
//! or integer bytes).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A duration written `30s`, `5m`, `200ms`, `1h`, `7d` or as milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ConfigDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as 30s, 5m, 200ms, 7d, or milliseconds")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ConfigDuration(Duration::from_millis(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(|v| ConfigDuration(Duration::from_millis(v)))
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                velostream_sql::duration::parse_shorthand(v.trim())
                    .map(ConfigDuration)
                    .ok_or_else(|| {
                        E::custom(format!(
                            "'{v}' is not a duration; write 30s, 5m, 200ms, 1h or 7d"
                        ))
                    })
            }
        }
        d.deserialize_any(V)
    }
}

/// A byte size written `100MB`, `64KiB`, `1GB` or as bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as 100MB, 64KiB, or bytes")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_size(v).map(ByteSize).ok_or_else(|| {
                    E::custom(format!("'{v}' is not a size; write 100MB, 64KiB or bytes"))
                })
            }
        }
        d.deserialize_any(V)
    }
}

fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: f64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "KB" | "K" => 1e3,
        "MB" | "M" => 1e6,
        "GB" | "G" => 1e9,
        "KIB" => 1024.0,
        "MIB" => 1024.0 * 1024.0,
        "GIB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((number * factor) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        let d: ConfigDuration = serde_yaml_ng::from_str("30s").unwrap();
        assert_eq!(d.0, Duration::from_secs(30));
        let d: ConfigDuration = serde_yaml_ng::from_str("200ms").unwrap();
        assert_eq!(d.0, Duration::from_millis(200));
        let d: ConfigDuration = serde_yaml_ng::from_str("60000").unwrap();
        assert_eq!(d.0, Duration::from_secs(60));
        let d: ConfigDuration = serde_yaml_ng::from_str("7d").unwrap();
        assert_eq!(d.0, Duration::from_secs(7 * 86_400));
        assert!(serde_yaml_ng::from_str::<ConfigDuration>("soon")
            .unwrap_err()
            .to_string()
            .contains("30s"));
        assert_eq!(parse_size("100MB"), Some(100_000_000));
        assert_eq!(parse_size("1MiB"), Some(1_048_576));
        assert_eq!(parse_size("12 parsecs"), None);
    }
}
