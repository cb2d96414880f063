//! `'error.policy'`: what happens to a row whose expression fails (a
//! division by zero, a failing CAST). The statement's property wins over
//! the configuration's `velostream.processing.error_policy`; without
//! either, a statement with a dead-letter sink sends such rows there and
//! one without skips them.

use std::collections::BTreeMap;

use crate::error::{Location, SqlError};

/// The prefix of the statement's error properties (`'error.policy'`).
pub const ERROR: &str = "error";

/// What a failing row becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorPolicy {
    /// Written to the dead-letter sink with the reason, the expression and
    /// its statement's position; counted.
    DeadLetter,
    /// Counted (`velostream_errors_total{kind="expression"}`), the first
    /// few logged; the rest of the batch goes on.
    Skip,
    /// The job fails, as without isolation.
    Fail,
}

impl std::str::FromStr for ErrorPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "dead_letter" => Ok(Self::DeadLetter),
            "skip" => Ok(Self::Skip),
            "fail" => Ok(Self::Fail),
            other => Err(format!(
                "unknown error policy '{other}': expected dead_letter, skip or fail"
            )),
        }
    }
}

/// The policy a statement's `'error.*'` properties set, if any.
pub fn from_properties(
    props: &BTreeMap<String, String>,
    location: Location,
) -> Result<Option<ErrorPolicy>, SqlError> {
    if let Some(key) = props.keys().find(|k| k.as_str() != "policy") {
        return Err(
            SqlError::new(format!("unknown property 'error.{key}'"), location).with_hint(
                "the statement's error property is 'error.policy' (dead_letter, skip or fail)",
            ),
        );
    }
    props
        .get("policy")
        .map(|p| {
            p.parse().map_err(|e: String| {
                SqlError::new(e, location).with_hint("'error.policy' = 'skip'")
            })
        })
        .transpose()
}
