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
