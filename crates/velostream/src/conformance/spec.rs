//! The conformance spec format (YAML): an application's SQL, input records
//! per source, and the expected rows per sink (or an expected error).
//!
//! ```yaml
//! cases:
//!   - name: filter_keeps_large_trades
//!     sql: |
//!       CREATE STREAM big AS SELECT id FROM trades WHERE qty > 10;
//!     inputs:
//!       trades: |                # JSON Lines, or {format: csv, data: ...}
//!         {"id": 1, "qty": 5}
//!         {"id": 2, "qty": 50}
//!     expected:
//!       big: |                   # JSON Lines, any order; or {ordered: true, rows: ...}
//!         {"id": 2}
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// A spec file: one or more cases. Top-level keys starting with `x-` hold
/// YAML anchors (shared inputs) and are otherwise ignored.
#[derive(Debug, Deserialize)]
pub struct SpecFile {
    #[serde(default)]
    pub description: Option<String>,
    pub cases: Vec<Case>,
    #[serde(flatten)]
    pub shared: BTreeMap<String, serde_yaml_ng::Value>,
}

/// One application run and what it must produce.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub sql: String,
    /// Records per source name.
    #[serde(default)]
    pub inputs: BTreeMap<String, Input>,
    /// Rows per sink name (`CREATE STREAM` target, or the job name of a bare SELECT).
    #[serde(default)]
    pub expected: BTreeMap<String, Expected>,
    /// The run must fail with an error containing this text.
    #[serde(default)]
    pub expect_error: Option<String>,
    /// How many malformed input records the run must report.
    #[serde(default)]
    pub expect_bad_records: Option<u64>,
    /// How many late records the run must drop.
    #[serde(default)]
    pub expect_late_records: Option<u64>,
    /// Records per batch (1 shows every intermediate EMIT CHANGES update).
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// The same query in DuckDB's dialect, for independent verification of
    /// the expected rows (`tests/conformance/verify_with_duckdb.py`).
    /// Text for a single expected sink, or a map of sink name to query.
    #[serde(default)]
    pub reference_sql: Option<serde_yaml_ng::Value>,
    /// Delimiter DuckDB uses for CSV inputs of `reference_sql` (default `,`).
    #[serde(default)]
    pub reference_delimiter: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Input {
    JsonLines(String),
    Formatted { format: String, data: String },
}

impl Input {
    pub fn format(&self) -> &str {
        match self {
            Input::JsonLines(_) => "jsonl",
            Input::Formatted { format, .. } => format,
        }
    }

    pub fn data(&self) -> &str {
        match self {
            Input::JsonLines(d) | Input::Formatted { data: d, .. } => d,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Expected {
    Unordered(String),
    Rows {
        #[serde(default)]
        ordered: bool,
        rows: String,
    },
}

impl Expected {
    pub fn ordered(&self) -> bool {
        matches!(self, Expected::Rows { ordered: true, .. })
    }

    pub fn rows(&self) -> &str {
        match self {
            Expected::Unordered(r) | Expected::Rows { rows: r, .. } => r,
        }
    }
}

pub fn load(path: &Path) -> Result<SpecFile, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let spec: SpecFile = serde_yaml_ng::from_str(&text)
        .map_err(|e| format!("{}: invalid spec: {e}", path.display()))?;
    match spec.shared.keys().find(|k| !k.starts_with("x-")) {
        Some(key) => Err(format!(
            "{}: unknown key '{key}' (shared data goes under keys starting with x-)",
            path.display()
        )),
        None => Ok(spec),
    }
}
