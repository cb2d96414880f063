//! Byte-stream sinks: a file (`file_sink`) or standard output.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;

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

impl WriterSink<BufWriter<File>> {
    /// Creates (or truncates, or appends to) the file at `path`.
    pub fn create_file(path: &Path, format: RecordFormat, append: bool) -> Result<Self> {
        let label = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                EngineError::connector("file_sink", format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(path)
            .map_err(|e| {
                EngineError::connector("file_sink", format!("cannot open {label}: {e}"))
            })?;
        Ok(Self::new(
            label,
            BufWriter::with_capacity(1 << 20, file),
            format,
            false,
        ))
    }
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
