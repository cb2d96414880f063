//! Decoding a file on several threads: the reading thread cuts the file
//! into chunks of whole lines and hands them out in turn; each worker
//! decodes its chunks with a decoder of its own; the results come back in
//! the order the chunks were handed out.
//!
//! Nothing about the records changes with the number of threads: a chunk is
//! decoded exactly as the single-threaded source decodes it (the same
//! batches, cut the same way), its malformed records are reported by the
//! reading thread just before the batch they were found in, and the job
//! receives the batches in file order. Event time, watermarks and lateness
//! are decided after the source, on the job's thread, as before.

use std::collections::VecDeque;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::record_batch::RecordBatch;
use velostream_engine::dead_letter::DeadLetter;
use velostream_engine::{EngineError, Result};

use crate::format::decode::{BatchDecoder, Origin};

/// Whole lines of the input, where they are in it.
pub struct Chunk {
    pub bytes: Vec<u8>,
    /// Line number of the chunk's first line.
    pub first_line: u64,
    /// Byte offset of the chunk in the input.
    pub offset: u64,
    /// Records refused before the chunk (while framing), reported first.
    pub rejected_before: Vec<DeadLetter>,
}

/// One decode step of a chunk, as the single-threaded source takes it: the
/// records it found malformed, then the rows it decoded, and the input's
/// byte offset after them.
pub struct Step {
    pub rejected: Vec<DeadLetter>,
    pub batch: Option<RecordBatch>,
    /// Bytes of the input the step took.
    pub consumed: usize,
    pub end: u64,
}

struct Worker {
    chunks: Option<SyncSender<Chunk>>,
    steps: Receiver<Result<Vec<Step>>>,
    thread: Option<JoinHandle<()>>,
}

/// Worker threads decoding chunks in turn.
pub struct DecodePool {
    origin: String,
    workers: Vec<Worker>,
    /// Chunks handed out in all.
    sent: usize,
    /// Chunks whose steps were taken back.
    received: usize,
}

/// Chunks each worker may hold beyond the one it decodes.
const QUEUED_PER_WORKER: usize = 1;

impl DecodePool {
    /// `threads` workers, each with its own copy of `decoder`, reading the
    /// input named `origin`.
    pub fn new(threads: usize, decoder: &BatchDecoder, origin: &str) -> Result<Self> {
        let mut workers = Vec::with_capacity(threads);
        for n in 0..threads {
            let mut decoder = decoder
                .fresh()
                .map_err(|e| EngineError::connector(origin, e))?;
            let (chunks, inbox) = sync_channel::<Chunk>(QUEUED_PER_WORKER);
            let (outbox, steps) = sync_channel(QUEUED_PER_WORKER + 1);
            let name = origin.to_string();
            let thread = std::thread::Builder::new()
                .name(format!("decode-{n}"))
                .spawn(move || {
                    for chunk in inbox {
                        let decoded = decode_chunk(&mut decoder, chunk, &name);
                        if outbox.send(decoded).is_err() {
                            return;
                        }
                    }
                })
                .map_err(|e| {
                    EngineError::connector(origin, format!("cannot start a decoding thread: {e}"))
                })?;
            workers.push(Worker {
                chunks: Some(chunks),
                steps,
                thread: Some(thread),
            });
        }
        Ok(Self {
            origin: origin.to_string(),
            workers,
            sent: 0,
            received: 0,
        })
    }

    /// Chunks handed out and not taken back.
    pub fn in_flight(&self) -> usize {
        self.sent - self.received
    }

    /// Whether another chunk can be handed out without waiting for a worker.
    pub fn has_room(&self) -> bool {
        self.in_flight() < self.workers.len() * (QUEUED_PER_WORKER + 1)
    }

    /// Hands `chunk` to the next worker in turn.
    pub fn submit(&mut self, chunk: Chunk) -> Result<()> {
        let worker = &self.workers[self.sent % self.workers.len()];
        worker
            .chunks
            .as_ref()
            .and_then(|chunks| chunks.send(chunk).ok())
            .ok_or_else(|| self.stopped())?;
        self.sent += 1;
        Ok(())
    }

    /// The steps of the oldest chunk handed out (waiting for them).
    pub fn oldest(&mut self) -> Result<Vec<Step>> {
        debug_assert!(self.in_flight() > 0);
        let worker = &self.workers[self.received % self.workers.len()];
        let steps = worker.steps.recv().map_err(|_| self.stopped())??;
        self.received += 1;
        Ok(steps)
    }
}

impl DecodePool {
    fn stopped(&self) -> EngineError {
        EngineError::connector(&self.origin, "a decoding thread stopped")
    }
}

impl Drop for DecodePool {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            // closing its inbox ends the worker's loop; it drains what it holds
            worker.chunks = None;
            while worker.steps.try_recv().is_ok() {}
        }
        for worker in &mut self.workers {
            while worker.steps.recv().is_ok() {}
            if let Some(thread) = worker.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// Decodes one chunk step by step, as the single-threaded source does.
fn decode_chunk(decoder: &mut BatchDecoder, chunk: Chunk, origin: &str) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    let mut pos = 0;
    let mut line = chunk.first_line;
    let mut out = VecDeque::new();
    let mut before = chunk.rejected_before;
    if chunk.bytes.is_empty() {
        steps.push(Step {
            rejected: before,
            batch: None,
            consumed: 0,
            end: chunk.offset,
        });
        return Ok(steps);
    }
    while pos < chunk.bytes.len() {
        let region = &chunk.bytes[pos..];
        let mut rejected = std::mem::take(&mut before);
        let consumed = decoder
            .decode_next(
                region,
                Origin::Lines {
                    name: origin,
                    first_line: line,
                },
                &mut rejected,
                &mut out,
            )
            .map_err(|e| EngineError::connector(origin, e))?;
        let consumed = if consumed == 0 {
            region.len()
        } else {
            consumed
        };
        line += memchr::memchr_iter(b'\n', &region[..consumed]).count() as u64;
        pos += consumed;
        let batch = match out.len() {
            0 => None,
            1 => out.pop_front(),
            _ => {
                let batches: Vec<RecordBatch> = out.drain(..).collect();
                Some(concat_batches(&decoder.schema(), &batches)?)
            }
        };
        steps.push(Step {
            rejected,
            batch,
            consumed,
            end: chunk.offset + pos as u64,
        });
    }
    Ok(steps)
}
