//! `file_sink`: results appended to a file, in step with checkpoints.
//!
//! Without checkpoints the file is opened at the first write (truncated,
//! or appended to with `append`). With checkpoints the sink takes part in
//! them:
//! - at-least-once (the default): rows go straight to the file; each
//!   checkpoint fsyncs it and records its length, and a job recovering
//!   that checkpoint cuts the file back to that length, so rows written
//!   after it (which the job will compute again) are not there twice.
//! - exactly-once (`processing.guarantee: exactly_once`): rows are staged
//!   in a hidden file next to the output and appended to the output only
//!   once the checkpoint that covers them is durable, so a reader of the
//!   output never sees a row that a crash could take back.
//!
//! Exactly-once commit protocol, with `base` = output length before the
//! commit and `staged` = staging length (both recorded in the checkpoint):
//! commit appends the staging file to the output, fsyncs it, then empties
//! the staging file. Recovery finds either the output at `base + staged`
//! (the commit finished) or shorter with the staging file intact (cut
//! short: redone from `base`).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use datafusion::arrow::record_batch::RecordBatch;
use velostream_engine::connector::Position;
use velostream_engine::{EngineError, Result, Sink, Source};

use crate::format::encode::BatchEncoder;
use crate::format::RecordFormat;

pub struct FileSink {
    path: PathBuf,
    label: String,
    append: bool,
    /// Exactly-once: write to `staging_path` and publish at checkpoints.
    staged: bool,
    encoder: BatchEncoder,
    buf: Vec<u8>,
    /// Where writes go (the output, or the staging file); opened lazily,
    /// after recovery has decided what the output keeps.
    writer: Option<BufWriter<File>>,
    /// Output length before the staged rows were appended (exactly-once).
    base: u64,
}

impl FileSink {
    pub fn new(path: &Path, format: RecordFormat, append: bool, staged: bool) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                EngineError::connector("file_sink", format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        // appending to a file that has content: its CSV header is there already
        let continuing = append && std::fs::metadata(path).is_ok_and(|m| m.len() > 0);
        Ok(Self {
            path: path.to_path_buf(),
            label: path.display().to_string(),
            append,
            staged,
            encoder: BatchEncoder::new(format).continuing(continuing),
            buf: Vec::new(),
            writer: None,
            base: 0,
        })
    }

    /// The hidden file holding rows not yet published.
    pub fn staging_path(&self) -> PathBuf {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.path.with_file_name(format!(".{name}.staging"))
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> EngineError {
        EngineError::connector(&self.label, format!("{what}: {e}"))
    }

    fn open(&self, path: &Path, truncate: bool) -> Result<File> {
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .read(true)
            .truncate(truncate)
            .open(path)
            .map_err(|e| self.err(&format!("cannot open {}", path.display()), e))?;
        Ok(file)
    }

    /// Opens where writes go, positioned at its end.
    fn writer(&mut self) -> Result<&mut BufWriter<File>> {
        if self.writer.is_none() {
            let mut file = if self.staged {
                let output = self.open(&self.path, !self.append)?;
                self.base = output.metadata()?.len();
                self.open(&self.staging_path(), true)?
            } else {
                self.open(&self.path, !self.append)?
            };
            file.seek(SeekFrom::End(0))?;
            self.writer = Some(BufWriter::with_capacity(1 << 20, file));
        }
        Ok(self.writer.as_mut().expect("opened above"))
    }

    /// Flushes and fsyncs where writes go; returns its length.
    fn sync(&mut self) -> Result<u64> {
        let label = self.label.clone();
        let writer = self.writer()?;
        writer
            .flush()
            .map_err(|e| EngineError::connector(&label, format!("write failed: {e}")))?;
        let file = writer.get_ref();
        file.sync_data()
            .map_err(|e| EngineError::connector(&label, format!("fsync failed: {e}")))?;
        Ok(file.metadata()?.len())
    }

    /// Appends the staging file to the output and empties it.
    fn publish(&mut self, base: u64) -> Result<u64> {
        let staging_path = self.staging_path();
        let mut output = self.open(&self.path, false)?;
        output.set_len(base)?;
        output.seek(SeekFrom::End(0))?;
        let mut staging = File::open(&staging_path)
            .map_err(|e| self.err(&format!("cannot open {}", staging_path.display()), e))?;
        std::io::copy(&mut staging, &mut output).map_err(|e| self.err("publish failed", e))?;
        output.sync_data()?;
        let published = output.metadata()?.len();
        let staging = self.open(&staging_path, true)?;
        staging.sync_data()?;
        Ok(published)
    }
}

fn number(state: &Position, key: &str) -> Result<u64> {
    state.get(key).and_then(|v| v.as_u64()).ok_or_else(|| {
        EngineError::State(format!(
            "file sink checkpoint state without '{key}': {state}"
        ))
    })
}

impl Sink for FileSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.buf.clear();
        self.encoder.encode(batch, &mut self.buf)?;
        let label = self.label.clone();
        let buf = std::mem::take(&mut self.buf);
        let written = self.writer()?.write_all(&buf);
        self.buf = buf;
        written.map_err(|e| EngineError::connector(&label, format!("write failed: {e}")))
    }

    fn flush(&mut self) -> Result<()> {
        match &mut self.writer {
            Some(w) => w
                .flush()
                .map_err(|e| EngineError::connector(&self.label, format!("write failed: {e}"))),
            None => Ok(()),
        }
    }

    fn close(&mut self) -> Result<()> {
        if self.writer.is_none() {
            self.writer()?; // an empty result still leaves its file
        }
        self.flush()
    }

    fn pre_commit(&mut self) -> Result<Option<Position>> {
        let length = self.sync()?;
        Ok(Some(if self.staged {
            serde_json::json!({ "base": self.base, "staged": length })
        } else {
            serde_json::json!({ "length": length })
        }))
    }

    fn commit_checkpoint(&mut self, _source: &dyn Source) -> Result<()> {
        if !self.staged {
            return Ok(());
        }
        self.writer = None;
        self.base = self.publish(self.base)?;
        self.writer = Some(BufWriter::with_capacity(
            1 << 20,
            self.open(&self.staging_path(), false)?,
        ));
        Ok(())
    }

    fn recover(&mut self, state: Option<&Position>) -> Result<()> {
        let Some(state) = state else {
            if self.staged {
                let _ = std::fs::remove_file(self.staging_path());
            }
            return Ok(()); // no checkpoint: opened as configured at the first write
        };
        let output_len = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        if self.staged {
            let base = number(state, "base")?;
            let staged = number(state, "staged")?;
            let staging_len = std::fs::metadata(self.staging_path()).map_or(0, |m| m.len());
            if output_len < base + staged && staging_len == staged {
                // the checkpoint's commit was cut short: finish it
                self.base = self.publish(base)?;
            } else {
                let output = self.open(&self.path, false)?;
                output.set_len(base + staged)?;
                output.sync_data()?;
                self.base = base + staged;
            }
            let staging = self.open(&self.staging_path(), true)?;
            self.writer = Some(BufWriter::with_capacity(1 << 20, staging));
        } else {
            let length = number(state, "length")?;
            if output_len < length {
                return Err(self.err(
                    "cannot recover",
                    format!("the checkpoint expects {length} bytes but the file has {output_len}; was it replaced?"),
                ));
            }
            let mut output = self.open(&self.path, false)?;
            output.set_len(length)?;
            output.seek(SeekFrom::End(0))?;
            self.writer = Some(BufWriter::with_capacity(1 << 20, output));
        }
        Ok(())
    }
}
