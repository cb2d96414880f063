//! Standard output as a sink (files are [`super::committed::FileSink`]).

use std::io::Write;

use datafusion::arrow::record_batch::RecordBatch;
use velostream_engine::{EngineError, Result, Sink};

use crate::format::encode::BatchEncoder;
use crate::format::RecordFormat;

/// Writes encoded batches to any `Write`.
pub struct WriterSink<W: Write + Send> {
    label: String,
    writer: W,
    encoder: BatchEncoder,
    buf: Vec<u8>,
    /// Flush after every batch (interactive output).
    eager: bool,
}

impl WriterSink<std::io::Stdout> {
    pub fn stdout(format: RecordFormat) -> Self {
        Self::new("stdout".into(), std::io::stdout(), format, true)
    }
}

impl<W: Write + Send> WriterSink<W> {
    pub fn new(label: String, writer: W, format: RecordFormat, eager: bool) -> Self {
        Self {
            label,
            writer,
            encoder: BatchEncoder::new(format),
            buf: Vec::new(),
            eager,
        }
    }

    fn io_error(&self, e: std::io::Error) -> EngineError {
        EngineError::connector(&self.label, format!("write failed: {e}"))
    }
}

impl<W: Write + Send> Sink for WriterSink<W> {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.buf.clear();
        self.encoder.encode(batch, &mut self.buf)?;
        self.writer
            .write_all(&self.buf)
            .map_err(|e| self.io_error(e))?;
        if self.eager {
            self.writer.flush().map_err(|e| self.io_error(e))?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.writer.flush().map_err(|e| self.io_error(e))
    }
}
