//! Encoding result batches as JSON Lines or CSV. Keys (JSON) and header
//! names (CSV) are the SELECT output names; decimals are written with
//! their exact digits.

use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;

use super::RecordFormat;

/// Turns batches into bytes in one output format.
pub struct BatchEncoder {
    format: RecordFormat,
    header_written: bool,
}

impl BatchEncoder {
    pub fn new(format: RecordFormat) -> Self {
        Self {
            format,
            header_written: false,
        }
    }

    /// Output that continues an existing file: a CSV header is already
    /// there and is not written again.
    pub fn continuing(mut self, continuing: bool) -> Self {
        self.header_written |= continuing;
        self
    }

    /// Appends the encoding of `batch` to `out`.
    pub fn encode(&mut self, batch: &RecordBatch, out: &mut Vec<u8>) -> Result<(), ArrowError> {
        match self.format {
            RecordFormat::JsonLines | RecordFormat::Json => {
                let mut writer = arrow_json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, arrow_json::writer::LineDelimited>(out);
                writer.write(batch)?;
                writer.finish()?;
            }
            RecordFormat::Csv { header, delimiter } => {
                let with_header = header && !self.header_written;
                self.header_written = true;
                let mut writer = arrow_csv::WriterBuilder::new()
                    .with_header(with_header)
                    .with_delimiter(delimiter)
                    .build(out);
                writer.write(batch)?;
            }
        }
        Ok(())
    }
}

/// `(start, end)` of each encoded record in `buf`, without its line break.
/// A CSV value may hold a line break inside quotes (arrow-csv doubles the
/// quotes inside a quoted value, so a quote toggles the state); JSON
/// escapes its line breaks, so each line is a record.
pub fn record_spans(buf: &[u8], csv: bool) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = 0;
    if csv {
        let mut quoted = false;
        for (i, &b) in buf.iter().enumerate() {
            match b {
                b'"' => quoted = !quoted,
                b'\n' if !quoted => {
                    let end = if i > start && buf[i - 1] == b'\r' {
                        i - 1
                    } else {
                        i
                    };
                    spans.push((start, end));
                    start = i + 1;
                }
                _ => {}
            }
        }
    } else {
        for end in memchr::memchr_iter(b'\n', buf) {
            spans.push((start, end));
            start = end + 1;
        }
    }
    if start < buf.len() {
        spans.push((start, buf.len()));
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    #[test]
    fn csv_values_with_line_breaks_quotes_and_delimiters_stay_one_record() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("note", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(StringArray::from(vec![
                    "two\nlines",
                    "a \"quote\", and a comma",
                    "plain",
                ])),
            ],
        )
        .unwrap();
        let mut out = Vec::new();
        BatchEncoder::new(RecordFormat::Csv {
            header: false,
            delimiter: b',',
        })
        .encode(&batch, &mut out)
        .unwrap();
        let spans = record_spans(&out, true);
        let records: Vec<&str> = spans
            .iter()
            .map(|&(s, e)| std::str::from_utf8(&out[s..e]).unwrap())
            .collect();
        assert_eq!(
            records,
            [
                "1,\"two\nlines\"",
                "2,\"a \"\"quote\"\", and a comma\"",
                "3,plain"
            ]
        );
        // read back, each is the row it came from
        let back = arrow_csv::ReaderBuilder::new(batch.schema())
            .with_header(false)
            .build(std::io::Cursor::new(out))
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(back, batch);
    }
}
