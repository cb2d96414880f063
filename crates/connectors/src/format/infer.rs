//! Schema inference from a sample of records, for sources whose columns
//! are not declared. JSON numbers become BIGINT or DOUBLE, strings VARCHAR;
//! declare a schema to read exact DECIMAL or TIMESTAMP columns.

use std::io::{BufRead, BufReader, Read};

use datafusion::arrow::datatypes::Schema;

use super::RecordFormat;
use crate::error::{ConnectorError, ConnectorResult};

/// How many records are looked at.
pub const SAMPLE_RECORDS: usize = 1000;

/// The columns of the first [`SAMPLE_RECORDS`] records of `input`.
pub fn infer_schema(format: RecordFormat, input: impl Read) -> ConnectorResult<Schema> {
    let unreadable = ConnectorError::Data;
    let mut reader = BufReader::new(input);
    let schema = match format {
        RecordFormat::Csv { header: false, .. } => {
            return Err(ConnectorError::InvalidValue("format csv_no_header has no column names; declare the columns with CREATE STREAM name (col TYPE, ...)".into()))
        }
        RecordFormat::Csv { delimiter, .. } => arrow_csv::reader::Format::default()
            .with_header(true)
            .with_delimiter(delimiter)
            // a short (malformed) row must not stop inference; it is
            // reported when it is decoded
            .with_truncated_rows(true)
            .infer_schema(reader, Some(SAMPLE_RECORDS))
            .map_err(|e| unreadable(e.to_string()))?
            .0,
        RecordFormat::Json | RecordFormat::JsonLines => {
            let mut values = Vec::new();
            // an array's elements are sampled as lines, without reading it whole
            let lines: Box<dyn BufRead> = if starts_with_array(&mut reader).map_err(read_error)? {
                Box::new(BufReader::new(crate::file::json_array::ArrayLines::new(reader)))
            } else {
                Box::new(reader)
            };
            for line in lines.lines() {
                let line = line.map_err(read_error)?;
                if let Ok(v @ serde_json::Value::Object(_)) = serde_json::from_str::<serde_json::Value>(&line) {
                    values.push(v);
                }
                if values.len() >= SAMPLE_RECORDS {
                    break;
                }
            }
            if values.is_empty() {
                return Err(ConnectorError::Data("found no JSON records to infer the columns from; declare them with CREATE STREAM name (col TYPE, ...)".into()));
            }
            arrow_json::reader::infer_json_schema_from_iterator(values.into_iter().map(Ok)).map_err(|e| unreadable(e.to_string()))?
        }
    };
    if schema.fields().is_empty() {
        return Err(ConnectorError::Data("the data has no columns".into()));
    }
    Ok(schema)
}

fn read_error(source: std::io::Error) -> ConnectorError {
    ConnectorError::Io {
        what: "cannot read the sample".into(),
        source,
    }
}

/// True when the first non-whitespace byte is `[` (a JSON array document).
pub fn starts_with_array(reader: &mut impl BufRead) -> std::io::Result<bool> {
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(false);
        }
        match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) => return Ok(buf[i] == b'['),
            None => {
                let n = buf.len();
                reader.consume(n);
            }
        }
    }
}
