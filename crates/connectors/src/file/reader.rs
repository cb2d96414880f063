//! Record framing for byte streams (files, stdin): reads large chunks,
//! cuts them at the last complete line, and hands whole lines to the
//! batch decoder — on this thread, or for a file read with several
//! decoding threads to a [`DecodePool`] — tracking line numbers for error
//! reports.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use velostream_engine::connector::Position;
use velostream_engine::dead_letter::DeadLetter;
use velostream_engine::{EngineError, JobMetrics, Result, Source, SourceEvent};

use super::decode_pool::{Chunk, DecodePool, Step};
use super::json_array::ArrayLines;
use crate::format::decode::{too_long, BatchDecoder, Origin};
use crate::format::infer::starts_with_array;
use crate::format::RecordFormat;

/// Bytes read per call; a chunk holds many batches of records.
pub const CHUNK_BYTES: usize = 1 << 20;

/// A [`Source`] over any byte stream of newline-separated records.
pub struct LineSource {
    origin: String,
    reader: Box<dyn Read + Send>,
    decoder: BatchDecoder,
    buf: Vec<u8>,
    /// Line number of `buf[0]`.
    next_line: u64,
    /// Byte offset in the stream of `buf[0]`.
    buf_offset: u64,
    skip_header: bool,
    pending: VecDeque<RecordBatch>,
    /// `buf[pos..ready]` holds whole lines not decoded yet.
    pos: usize,
    ready: usize,
    eof: bool,
    /// A file can be read again from an offset; stdin cannot.
    replayable: bool,
    metrics: Arc<JobMetrics>,
    /// The longest record accepted (`max.record.bytes`).
    max_record_bytes: usize,
    /// Dropping the rest of a record longer than that.
    skipping: bool,
    /// Bytes read at a time: a chunk of whole lines is about this long.
    chunk_bytes: usize,
    /// Decoding threads, when a file is decoded on several.
    pool: Option<DecodePool>,
    /// Decoded steps not handed on yet (with a pool).
    steps: VecDeque<Step>,
    /// The byte offset after the last batch handed on (with a pool).
    returned: u64,
    /// Nothing is left to read (with a pool).
    framed_all: bool,
    /// Records framing refused (longer than `max.record.bytes`), to be
    /// reported in input order.
    framing_rejects: Vec<DeadLetter>,
}

/// What reading on gave.
enum Framed {
    /// Whole lines are ready in `buf[pos..ready]`.
    Lines,
    /// The input is at its end and everything ready was taken.
    End,
    /// Nothing to hand on now (the rest of an oversized record was dropped).
    Idle,
}

/// `max.record.bytes` unless set: a record longer is one bad record.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 16 << 20;

impl LineSource {
    pub fn new(
        origin: String,
        reader: Box<dyn Read + Send>,
        format: RecordFormat,
        decoder: BatchDecoder,
        metrics: Arc<JobMetrics>,
    ) -> Self {
        Self {
            origin,
            reader,
            decoder,
            buf: Vec::with_capacity(CHUNK_BYTES * 2),
            next_line: 1,
            buf_offset: 0,
            skip_header: matches!(format, RecordFormat::Csv { header: true, .. }),
            pending: VecDeque::new(),
            pos: 0,
            ready: 0,
            eof: false,
            replayable: false,
            metrics,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            skipping: false,
            chunk_bytes: CHUNK_BYTES,
            pool: None,
            steps: VecDeque::new(),
            returned: 0,
            framed_all: false,
            framing_rejects: Vec::new(),
        }
    }

    /// Decodes a file's chunks on `threads` threads (one: on the job's),
    /// reading `chunk_bytes` at a time. Batches, their order and every
    /// report are the same however many threads decode.
    pub fn with_decode_threads(mut self, threads: usize, chunk_bytes: usize) -> Result<Self> {
        self.chunk_bytes = chunk_bytes.max(1);
        if threads > 1 && self.replayable {
            self.pool = Some(DecodePool::new(threads, &self.decoder, &self.origin)?);
        }
        Ok(self)
    }

    /// Records longer than `bytes` are bad records (`max.record.bytes`).
    pub fn with_max_record_bytes(mut self, bytes: usize) -> Self {
        self.max_record_bytes = bytes.max(1);
        self.decoder.set_max_record_bytes(self.max_record_bytes);
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
        source.replayable = true;
        Ok(source)
    }

    /// Makes `buf[..end]` (whole lines) the region to decode, skipping a
    /// CSV header line the first time.
    fn set_ready(&mut self, end: usize) {
        self.pos = 0;
        self.ready = end;
        if self.skip_header {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[..end]) {
                self.pos = i + 1;
                self.next_line += 1;
                self.skip_header = false;
            }
        }
    }

    /// Decodes the next batch of the ready region.
    fn decode_next(&mut self) -> Result<()> {
        let region = &self.buf[self.pos..self.ready];
        let consumed = self
            .decoder
            .decode_next(
                region,
                Origin::Lines {
                    name: &self.origin,
                    first_line: self.next_line,
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
        self.next_line += memchr::memchr_iter(b'\n', &region[..consumed]).count() as u64;
        self.metrics
            .bytes_in
            .fetch_add(consumed as u64, Ordering::Relaxed);
        self.pos += consumed;
        Ok(())
    }

    /// Reads on until whole lines are ready in `buf[pos..ready]`, the
    /// input ends, or the start of an oversized record was dropped.
    fn frame(&mut self) -> Result<Framed> {
        loop {
            // everything ready was taken: drop it and read on
            self.buf.drain(..self.ready);
            self.buf_offset += self.ready as u64;
            self.pos = 0;
            self.ready = 0;
            if self.eof {
                return Ok(Framed::End);
            }
            let old = self.buf.len();
            self.buf.resize(old + self.chunk_bytes, 0);
            let n = match self.reader.read(&mut self.buf[old..]) {
                Ok(n) => n,
                // a signal interrupted the read: nothing was read, and the input goes on
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                    self.buf.truncate(old);
                    continue;
                }
                Err(e) => {
                    return Err(EngineError::connector(
                        &self.origin,
                        format!("read failed: {e}"),
                    ))
                }
            };
            self.buf.truncate(old + n);
            if self.skipping {
                // the rest of an oversized record: dropped up to its line break
                match memchr::memchr(b'\n', &self.buf) {
                    Some(i) => {
                        self.buf_offset += i as u64 + 1;
                        self.buf.drain(..=i);
                        self.next_line += 1;
                        self.skipping = false;
                    }
                    None => {
                        self.buf_offset += self.buf.len() as u64;
                        self.buf.clear();
                        if n == 0 {
                            self.eof = true;
                        }
                        // the job may stop between chunks of an endless record
                        return Ok(Framed::Idle);
                    }
                }
            }
            if n == 0 {
                self.eof = true;
                if !self.buf.is_empty() && !self.buf.ends_with(b"\n") {
                    self.buf.push(b'\n');
                }
                self.set_ready(self.buf.len());
            } else {
                // where this read's bytes start (skipping may have dropped some)
                let fresh = old.min(self.buf.len());
                if let Some(last) = memchr::memrchr(b'\n', &self.buf[fresh..]) {
                    self.set_ready(fresh + last + 1);
                } else if self.buf.len() > self.max_record_bytes {
                    // one record larger than allowed: it is a bad record, and
                    // memory stays bounded however long it goes on
                    let position = format!("{}:{}", self.origin, self.next_line);
                    let reason = too_long(self.max_record_bytes);
                    let preview = String::from_utf8_lossy(&self.buf[..self.buf.len().min(200)]);
                    self.framing_rejects.push(DeadLetter {
                        source: self.origin.clone(),
                        position,
                        reason,
                        record: format!("{preview}…"),
                        event_time_ms: None,
                    });
                    self.buf_offset += self.buf.len() as u64;
                    self.buf.clear();
                    self.skipping = true;
                    return Ok(Framed::Idle);
                }
            }
            if self.pos < self.ready {
                return Ok(Framed::Lines);
            }
        }
    }

    /// `poll_batch` with decoding threads: keeps every thread supplied with
    /// chunks, and hands on the decoded steps in input order, reporting
    /// each step's malformed records just before its rows.
    fn poll_decoded(&mut self) -> Result<SourceEvent> {
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
            while !self.framed_all && self.pool()?.has_room() {
                if self.pos < self.ready {
                    let chunk = self.take_ready();
                    self.pool()?.submit(chunk)?;
                    continue;
                }
                match self.frame()? {
                    Framed::Lines => {}
                    Framed::End => {
                        self.framed_all = true;
                        if !self.framing_rejects.is_empty() {
                            let chunk = self.take_ready();
                            self.pool()?.submit(chunk)?;
                        }
                    }
                    Framed::Idle if self.pool()?.in_flight() == 0 => {
                        let chunk = self.take_ready();
                        self.pool()?.submit(chunk)?;
                    }
                    Framed::Idle => break,
                }
            }
            if self.pool()?.in_flight() == 0 {
                return Ok(SourceEvent::End);
            }
            let steps = self.pool()?.oldest()?;
            self.steps.extend(steps);
        }
    }

    fn pool(&mut self) -> Result<&mut DecodePool> {
        self.pool
            .as_mut()
            .ok_or_else(|| EngineError::connector(&self.origin, "no decoding threads"))
    }

    /// The ready lines as a chunk for the decoding threads, with the
    /// oversized records framing refused before them.
    fn take_ready(&mut self) -> Chunk {
        let bytes = self.buf[self.pos..self.ready].to_vec();
        let chunk = Chunk {
            first_line: self.next_line,
            offset: self.buf_offset + self.pos as u64,
            rejected_before: std::mem::take(&mut self.framing_rejects),
            bytes,
        };
        self.next_line += memchr::memchr_iter(b'\n', &chunk.bytes).count() as u64;
        self.pos = self.ready;
        chunk
    }
}

impl Source for LineSource {
    fn schema(&self) -> SchemaRef {
        self.decoder.schema()
    }

    fn poll_batch(&mut self) -> Result<SourceEvent> {
        if self.pool.is_some() {
            return self.poll_decoded();
        }
        loop {
            if let Some(batch) = self.pending.pop_front() {
                return Ok(SourceEvent::Batch(batch));
            }
            if self.pos < self.ready {
                self.decode_next()?;
                continue;
            }
            let framed = self.frame()?;
            for letter in self.framing_rejects.drain(..) {
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
    /// decoded byte belongs to a returned batch.
    fn position(&self) -> Option<Position> {
        if !self.replayable || !self.pending.is_empty() {
            return None; // stdin, or not at a batch boundary of the stream
        }
        let offset = match self.pool {
            // decoded ahead: the position is after the last batch handed on
            Some(_) => self.returned,
            None => self.buf_offset + self.pos as u64,
        };
        Some(serde_json::json!({ "offset": offset }))
    }

    /// Skips to a byte offset [`position`](Source::position) returned
    /// (reading past the bytes before it, counting their lines).
    fn seek(&mut self, position: &Position) -> Result<()> {
        let offset = position
            .get("offset")
            .and_then(|o| o.as_u64())
            .ok_or_else(|| {
                EngineError::State(format!(
                    "{}: unusable file position {position}",
                    self.origin
                ))
            })?;
        if self.buf_offset != 0 || self.pos != 0 || !self.buf.is_empty() {
            return Err(EngineError::State(format!(
                "{}: seek after reading started",
                self.origin
            )));
        }
        let mut left = offset;
        let mut chunk = vec![0u8; CHUNK_BYTES];
        while left > 0 {
            let want = left.min(CHUNK_BYTES as u64) as usize;
            let n = self
                .reader
                .read(&mut chunk[..want])
                .map_err(|e| EngineError::connector(&self.origin, format!("read failed: {e}")))?;
            if n == 0 {
                return Err(EngineError::State(format!(
                    "{}: the checkpoint is at byte {offset}, but the file is shorter; was it replaced?",
                    self.origin
                )));
            }
            self.next_line += memchr::memchr_iter(b'\n', &chunk[..n]).count() as u64;
            left -= n as u64;
        }
        self.buf_offset = offset;
        self.returned = offset;
        if offset > 0 {
            self.skip_header = false;
        }
        Ok(())
    }
}
