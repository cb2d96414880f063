//! Where a byte stream (a file, stdin) is cut into whole lines: large reads,
//! cut after the last complete line, a CSV header skipped, line numbers
//! and byte offsets kept for reports and checkpoints, and a record longer
//! than `max.record.bytes` dropped as one bad record however long it goes
//! on.

use std::io::Read;

use velostream_engine::connector::Position;
use velostream_engine::dead_letter::DeadLetter;
use velostream_engine::{EngineError, Result};

use crate::format::decode::too_long;

/// Bytes read per call; a chunk holds many batches of records.
pub const CHUNK_BYTES: usize = 1 << 20;

/// `max.record.bytes` unless set: a record longer is one bad record.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 16 << 20;

/// What reading on gave.
pub enum Framed {
    /// Whole lines are ready (see [`Framer::ready`]).
    Lines,
    /// The input is at its end and everything ready was taken.
    End,
    /// Nothing to hand on now (the rest of an oversized record was dropped).
    Idle,
}

/// Whole lines of the input, where they are in it: what a decoding thread
/// is given.
pub struct Chunk {
    pub bytes: Vec<u8>,
    /// Line number of the chunk's first line.
    pub first_line: u64,
    /// Byte offset of the chunk in the input.
    pub offset: u64,
    /// Records refused before the chunk (while framing), reported first.
    pub rejected_before: Vec<DeadLetter>,
}

/// Reads a byte stream and cuts it into whole lines.
pub struct Framer {
    pub origin: String,
    reader: Box<dyn Read + Send>,
    buf: Vec<u8>,
    /// Line number of the first line of the ready region.
    pub next_line: u64,
    /// Byte offset in the stream of `buf[0]`.
    buf_offset: u64,
    skip_header: bool,
    /// `buf[pos..ready]` holds whole lines not taken yet.
    pos: usize,
    ready: usize,
    eof: bool,
    /// A file is read in whole chunks and can be read again from an
    /// offset; a stream (stdin) cannot.
    pub replayable: bool,
    /// The longest record accepted (`max.record.bytes`).
    pub max_record_bytes: usize,
    /// Dropping the rest of a record longer than that.
    skipping: bool,
    /// Bytes read at a time: a chunk of whole lines is about this long.
    pub chunk_bytes: usize,
    /// Records refused while framing (longer than `max.record.bytes`), to
    /// be reported in input order.
    pub rejected: Vec<DeadLetter>,
}

impl Framer {
    pub fn new(origin: String, reader: Box<dyn Read + Send>, skip_header: bool) -> Self {
        Self {
            origin,
            reader,
            buf: Vec::with_capacity(CHUNK_BYTES * 2),
            next_line: 1,
            buf_offset: 0,
            skip_header,
            pos: 0,
            ready: 0,
            eof: false,
            replayable: false,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            skipping: false,
            chunk_bytes: CHUNK_BYTES,
            rejected: Vec::new(),
        }
    }

    /// The whole lines ready and not taken yet.
    pub fn ready(&self) -> &[u8] {
        &self.buf[self.pos..self.ready]
    }

    /// The byte offset of the first ready byte not taken yet.
    pub fn offset(&self) -> u64 {
        self.buf_offset + self.pos as u64
    }

    /// Marks the first `bytes` ready bytes taken (`lines` lines of them).
    pub fn take(&mut self, bytes: usize, lines: u64) {
        self.pos += bytes;
        self.next_line += lines;
    }

    /// The ready lines as a chunk, with the records refused before them.
    /// The buffer itself becomes the chunk (`spare`, a buffer a decoding
    /// thread is done with, takes its place with the partial line after
    /// the ready ones), so the bytes read are never copied.
    pub fn take_chunk(&mut self, mut spare: Vec<u8>) -> Chunk {
        spare.clear();
        spare.extend_from_slice(&self.buf[self.ready..]);
        let mut bytes = std::mem::replace(&mut self.buf, spare);
        bytes.truncate(self.ready);
        bytes.drain(..self.pos);
        let chunk = Chunk {
            first_line: self.next_line,
            offset: self.offset(),
            rejected_before: std::mem::take(&mut self.rejected),
            bytes,
        };
        self.next_line += memchr::memchr_iter(b'\n', &chunk.bytes).count() as u64;
        self.buf_offset += self.ready as u64;
        self.pos = 0;
        self.ready = 0;
        chunk
    }

    /// Makes `buf[..end]` (whole lines) the ready region, skipping a CSV
    /// header line the first time.
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

    /// Appends up to a chunk of what the input has next to `buf`. A file is
    /// read straight into the buffer's spare room (nothing zeroed first); a
    /// stream takes what one read gives, so its records move as they come.
    fn read_more(&mut self) -> std::io::Result<usize> {
        if self.replayable {
            return Read::by_ref(&mut self.reader)
                .take(self.chunk_bytes as u64)
                .read_to_end(&mut self.buf);
        }
        let old = self.buf.len();
        self.buf.resize(old + self.chunk_bytes, 0);
        let read = self.reader.read(&mut self.buf[old..]);
        self.buf.truncate(old + read.as_ref().map_or(0, |n| *n));
        read
    }

    /// Reads on until whole lines are ready, the input ends, or the start
    /// of an oversized record was dropped.
    pub fn frame(&mut self) -> Result<Framed> {
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
            let n = match self.read_more() {
                Ok(n) => n,
                // a signal interrupted the read: nothing was read, and the input goes on
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(EngineError::connector(
                        &self.origin,
                        format!("read failed: {e}"),
                    ))
                }
            };
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
                    self.refuse_oversized();
                    return Ok(Framed::Idle);
                }
            }
            if self.pos < self.ready {
                return Ok(Framed::Lines);
            }
        }
    }

    /// Drops the start of a record longer than `max.record.bytes` (the rest
    /// follows while `skipping`), refusing it as one bad record.
    fn refuse_oversized(&mut self) {
        let preview = String::from_utf8_lossy(&self.buf[..self.buf.len().min(200)]);
        self.rejected.push(DeadLetter {
            source: self.origin.clone(),
            position: format!("{}:{}", self.origin, self.next_line),
            reason: too_long(self.max_record_bytes),
            record: format!("{preview}…"),
            event_time_ms: None,
        });
        self.buf_offset += self.buf.len() as u64;
        self.buf.clear();
        self.skipping = true;
    }

    /// Skips to a byte offset a checkpoint recorded (reading past the bytes
    /// before it, counting their lines). Only before reading started.
    pub fn seek(&mut self, position: &Position) -> Result<u64> {
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
        if offset > 0 {
            self.skip_header = false;
        }
        Ok(offset)
    }
}
