//! Comparing result rows with expected rows, and a readable diff.
//!
//! Numbers compare exactly as decimals (so `10.50` equals `10.5` but not
//! `10.51`), or, for floating-point results, within a relative 1e-12.

use serde_json::Value;

/// Parses JSON Lines text into rows.
pub fn parse_rows(text: &str, what: &str) -> Result<Vec<Value>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| format!("{what} line {}: {e}: {l}", i + 1))
        })
        .collect()
}

/// `None` when equal; otherwise a diff for humans.
pub fn compare(expected: &[Value], actual: &[Value], ordered: bool) -> Option<String> {
    if ordered {
        let same = expected.len() == actual.len()
            && expected.iter().zip(actual).all(|(e, a)| values_equal(e, a));
        if same {
            return None;
        }
        let mut out = String::from("rows differ (order matters):\n");
        for i in 0..expected.len().max(actual.len()) {
            match (expected.get(i), actual.get(i)) {
                (Some(e), Some(a)) if values_equal(e, a) => out.push_str(&format!("    {e}\n")),
                (Some(e), Some(a)) => out.push_str(&format!("  - {e}\n  + {a}\n")),
                (Some(e), None) => out.push_str(&format!("  - {e}\n")),
                (None, Some(a)) => out.push_str(&format!("  + {a}\n")),
                (None, None) => {}
            }
        }
        return Some(out);
    }
    let mut remaining: Vec<&Value> = actual.iter().collect();
    let mut missing = Vec::new();
    for e in expected {
        match remaining.iter().position(|a| values_equal(e, a)) {
            Some(i) => {
                remaining.swap_remove(i);
            }
            None => missing.push(e),
        }
    }
    if missing.is_empty() && remaining.is_empty() {
        return None;
    }
    let mut out = format!(
        "rows differ (any order): expected {} rows, got {}\n",
        expected.len(),
        actual.len()
    );
    for m in missing {
        out.push_str(&format!("  - {m}    (expected, missing)\n"));
    }
    for r in remaining {
        out.push_str(&format!("  + {r}    (unexpected)\n"));
    }
    Some(out)
}

pub fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => numbers_equal(&x.to_string(), &y.to_string()),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| values_equal(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| values_equal(v, w)))
        }
        _ => a == b,
    }
}

fn numbers_equal(a: &str, b: &str) -> bool {
    if normalize_decimal(a).is_some() && normalize_decimal(a) == normalize_decimal(b) {
        return true;
    }
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs()),
        _ => false,
    }
}

/// `"010.500"` → `"10.5"`; `None` for exponent notation.
fn normalize_decimal(text: &str) -> Option<String> {
    if text.contains(['e', 'E']) {
        return None;
    }
    let (neg, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    let body = match (int.is_empty(), frac.is_empty()) {
        (true, true) => return Some("0".into()),
        (_, true) => int.to_string(),
        (true, false) => format!("0.{frac}"),
        (false, false) => format!("{int}.{frac}"),
    };
    Some(if neg { format!("-{body}") } else { body })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decimals_compare_exactly() {
        assert!(numbers_equal("10.50", "10.5"));
        assert!(!numbers_equal("10.51", "10.5"));
        assert!(numbers_equal("-0.0", "0"));
        assert!(!numbers_equal("123456789.12", "123456789.13"));
    }

    #[test]
    fn floats_compare_within_tolerance() {
        assert!(numbers_equal("0.30000000000000004", "0.3"));
        assert!(!numbers_equal("0.3001", "0.3"));
    }

    #[test]
    fn unordered_diff_names_missing_and_unexpected() {
        let e = vec![json!({"a": 1}), json!({"a": 2})];
        let a = vec![json!({"a": 2}), json!({"a": 3})];
        let diff = compare(&e, &a, false).unwrap();
        assert!(diff.contains("- {\"a\":1}"), "{diff}");
        assert!(diff.contains("+ {\"a\":3}"), "{diff}");
        assert!(compare(&e, &[json!({"a": 2}), json!({"a": 1})], false).is_none());
        assert!(compare(&e, &[json!({"a": 2}), json!({"a": 1})], true).is_some());
    }
}
