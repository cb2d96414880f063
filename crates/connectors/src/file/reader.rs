//! The source of newline-separated records from a byte stream (files,
//! stdin): whole lines from the [`Framer`] decoded into batches, on the
//! job's thread, or for a file read with several decoding threads by a
//! [`DecodePool`] (which then also reads).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use velostream_engine::connector::Position;
use velostream_engine::{EngineError, JobMetrics, Result, Source, SourceEvent};

use super::decode_pool::{DecodePool, Step};
use super::framing::{Framed, Framer};
use super::json_array::ArrayLines;
use crate::format::decode::{BatchDecoder, Origin};
use crate::format::infer::starts_with_array;
use crate::format::RecordFormat;

pub use super::framing::{CHUNK_BYTES, DEFAULT_MAX_RECORD_BYTES};

/// A [`Source`] over any byte stream of newline-separated records.
pub struct LineSource {
    origin: String,
    /// Reading and cutting the input; moved to the decoding threads' pool
    /// when that starts.
    framer: Option<Framer>,
    decoder: BatchDecoder,
    pending: VecDeque<RecordBatch>,
    metrics: Arc<JobMetrics>,
    /// Threads decoding a file (1: this one).
    decode_threads: usize,
    /// The decoding threads, started at the first poll (after any seek).
    pool: Option<DecodePool>,
    /// Decoded steps not handed on yet (with a pool).
    steps: VecDeque<Step>,
    /// The byte offset after the last batch handed on (with a pool).
    returned: u64,
}

impl LineSource {
    pub fn new(
        origin: String,
        reader: Box<dyn Read + Send>,
        format: RecordFormat,
        decoder: BatchDecoder,
        metrics: Arc<JobMetrics>,
    ) -> Self {
        let skip_header = matches!(format, RecordFormat::Csv { header: true, .. });
        Self {
            framer: Some(Framer::new(origin.clone(), reader, skip_header)),
            origin,
            decoder,
            pending: VecDeque::new(),
            metrics,
            decode_threads: 1,
            pool: None,
            steps: VecDeque::new(),
            returned: 0,
        }
    }

    /// Decodes a file's chunks on `threads` threads (one: on the job's),
    /// reading `chunk_bytes` at a time. Batches, their order and every
    /// report are the same however many threads decode.
    pub fn with_decode_threads(mut self, threads: usize, chunk_bytes: usize) -> Self {
        if let Some(framer) = self.framer.as_mut() {
            framer.chunk_bytes = chunk_bytes.max(1);
            if framer.replayable {
                self.decode_threads = threads.max(1);
            }
        }
        self
    }

    /// Records longer than `bytes` are bad records (`max.record.bytes`).
    pub fn with_max_record_bytes(mut self, bytes: usize) -> Self {
        let bytes = bytes.max(1);
        if let Some(framer) = self.framer.as_mut() {
            framer.max_record_bytes = bytes;
        }
        self.decoder.set_max_record_bytes(bytes);
        self
    }

    /// Opens a file; a JSON array document is turned into one record per
    /// line first (element numbers then stand for line numbers).
    pub fn open_file(
        path: &Path,
        format: RecordFormat,
        decoder: BatchDecoder,
        metrics: Arc<JobMetrics>,
    ) -> Result<Self> {
        let origin = path.display().to_string();
        let file = File::open(path).map_err(|e| {
            EngineError::connector("file_source", format!("cannot open {origin}: {e}"))
        })?;
        let mut reader = BufReader::new(file);
        let reader: Box<dyn Read + Send> =
            if format == RecordFormat::Json && starts_with_array(&mut reader)? {
                Box::new(ArrayLines::new(reader))
            } else {
                Box::new(reader)
            };
        let mut source = Self::new(origin, reader, format, decoder, metrics);
        if let Some(framer) = source.framer.as_mut() {
            framer.replayable = true;
        }
        Ok(source)
    }

    fn framer(&mut self) -> Result<&mut Framer> {
        self.framer
            .as_mut()
            .ok_or_else(|| EngineError::connector(&self.origin, "the input is read elsewhere"))
    }

    /// Decodes the next batch of the framer's ready lines.
    fn decode_next(&mut self) -> Result<()> {
        let Some(framer) = self.framer.as_mut() else {
            return Ok(());
        };
        let region = framer.ready();
        let consumed = self
            .decoder
            .decode_next(
                region,
                Origin::Lines {
                    name: &self.origin,
                    first_line: framer.next_line,
                },
                &mut &*self.metrics,
                &mut self.pending,
            )
            .map_err(|e| EngineError::connector(&self.origin, e))?;
        let consumed = if consumed == 0 {
            region.len()
        } else {
            consumed
        };
        let lines = memchr::memchr_iter(b'\n', &region[..consumed]).count() as u64;
        framer.take(consumed, lines);
        self.metrics
            .bytes_in
            .fetch_add(consumed as u64, Ordering::Relaxed);
        Ok(())
    }

    /// `poll_batch` with decoding threads (started at the first call): hands
    /// on the decoded steps in input order, reporting each step's malformed
    /// records just before its rows.
    fn poll_decoded(&mut self) -> Result<SourceEvent> {
        if self.pool.is_none() {
            let framer = self.framer.take().ok_or_else(|| {
                EngineError::connector(&self.origin, "the input is read elsewhere")
            })?;
            self.pool = Some(DecodePool::start(
                framer,
                self.decode_threads,
                &self.decoder,
            )?);
        }
        loop {
            if let Some(step) = self.steps.pop_front() {
                for letter in step.rejected {
                    self.metrics.malformed_record(letter);
                }
                self.metrics
                    .bytes_in
                    .fetch_add(step.consumed as u64, Ordering::Relaxed);
                self.returned = step.end;
                match step.batch {
                    Some(batch) if batch.num_rows() > 0 => return Ok(SourceEvent::Batch(batch)),
                    _ => continue,
                }
            }
            let pool = self.pool.as_mut().expect("started above");
            match pool.next_steps()? {
                Some(steps) => self.steps.extend(steps),
                None => return Ok(SourceEvent::End),
            }
        }
    }
}

impl Source for LineSource {
    fn schema(&self) -> SchemaRef {
        self.decoder.schema()
    }

    fn poll_batch(&mut self) -> Result<SourceEvent> {
        if self.decode_threads > 1 {
            return self.poll_decoded();
        }
        loop {
            if let Some(batch) = self.pending.pop_front() {
                return Ok(SourceEvent::Batch(batch));
            }
            let framer = self.framer()?;
            if !framer.ready().is_empty() {
                self.decode_next()?;
                continue;
            }
            let framed = framer.frame()?;
            for letter in std::mem::take(&mut framer.rejected) {
                self.metrics.malformed_record(letter);
            }
            match framed {
                Framed::Lines => {}
                Framed::End => return Ok(SourceEvent::End),
                Framed::Idle => return Ok(SourceEvent::Idle),
            }
        }
    }

    fn is_bounded(&self) -> bool {
        true
    }

    /// The byte offset of the first record not returned yet. A decode
    /// step yields at most one batch, so once the queue is empty every
    /// decoded byte belongs to a returned batch; decoded ahead on other
    /// threads, it is the offset after the last batch handed on.
    fn position(&self) -> Option<Position> {
        if !self.pending.is_empty() {
            return None; // not at a batch boundary of the stream
        }
        let offset = match &self.framer {
            Some(framer) if !framer.replayable => return None, // stdin
            Some(framer) if self.pool.is_none() => framer.offset(),
            _ => self.returned,
        };
        Some(serde_json::json!({ "offset": offset }))
    }

    /// Skips to a byte offset [`position`](Source::position) returned
    /// (reading past the bytes before it, counting their lines).
    fn seek(&mut self, position: &Position) -> Result<()> {
        self.returned = self.framer()?.seek(position)?;
        Ok(())
    }
}
