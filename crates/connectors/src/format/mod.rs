//! Record formats: how bytes become Arrow batches (decode), how batches
//! become bytes (encode), and how a schema is guessed from sample data.

pub mod decode;
pub mod encode;
pub mod infer;
pub mod projected_json;
pub mod time;

use std::collections::BTreeMap;

use crate::error::{ConnectorError, ConnectorResult};

/// The record formats of files and standard streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordFormat {
    /// One JSON object per line.
    JsonLines,
    /// A JSON array of objects (`json`; a file that does not start with `[`
    /// is read as JSON Lines).
    Json,
    /// Delimited text; `header` says whether the first line names the columns.
    Csv { header: bool, delimiter: u8 },
}

/// The `'delimiter'` of CSV records: one character, or `tab`; `,` when unset.
pub fn delimiter(props: &BTreeMap<String, String>) -> ConnectorResult<u8> {
    match props.get("delimiter").map(String::as_str) {
        None => Ok(b','),
        Some("\\t") | Some("tab") => Ok(b'\t'),
        Some(d) if d.len() == 1 => Ok(d.as_bytes()[0]),
        Some(d) => Err(ConnectorError::InvalidValue(format!(
            "'delimiter' must be a single character, got '{d}'"
        ))),
    }
}

impl RecordFormat {
    /// Reads `format` and `delimiter`; without `format`, guesses from the
    /// path's extension and falls back to JSON Lines.
    pub fn from_properties(props: &BTreeMap<String, String>) -> ConnectorResult<Self> {
        let delimiter = delimiter(props)?;
        let format = match props.get("format") {
            Some(f) => f.to_ascii_lowercase(),
            None => match props
                .get("path")
                .and_then(|p| p.rsplit('.').next())
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                Some("csv") => "csv".to_string(),
                Some("tsv") => {
                    return Ok(RecordFormat::Csv {
                        header: true,
                        delimiter: b'\t',
                    })
                }
                Some("json") => "json".to_string(),
                _ => "jsonl".to_string(),
            },
        };
        Ok(match format.as_str() {
            "jsonl" | "ndjson" | "json_lines" => RecordFormat::JsonLines,
            "json" => RecordFormat::Json,
            "csv" => RecordFormat::Csv {
                header: true,
                delimiter,
            },
            "csv_no_header" => RecordFormat::Csv {
                header: false,
                delimiter,
            },
            other => {
                return Err(ConnectorError::InvalidValue(format!(
                    "unknown format '{other}'; expected jsonl, json, csv or csv_no_header"
                )))
            }
        })
    }
}
