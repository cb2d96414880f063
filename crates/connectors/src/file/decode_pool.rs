//! Decoding a file on several threads. A framing thread reads the file and
//! cuts it into chunks of whole lines ([`Framer`]), handing them to the
//! decoding threads in turn; each decodes its chunks with a decoder of its
//! own; the job's thread takes the results back in the order the chunks
//! were handed out. The job's thread so does neither reading nor decoding.
//!
//! Nothing about the records changes with the number of threads: a chunk is
//! decoded exactly as the single-threaded source decodes it (the same
//! batches, cut the same way), its malformed records are reported by the
//! job's thread just before the batch they were found in, and the job
//! receives the batches in file order. Event time, watermarks and lateness
//! are decided after the source, on the job's thread, as before.

use std::collections::VecDeque;
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::thread::JoinHandle;

use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::record_batch::RecordBatch;
use velostream_engine::dead_letter::DeadLetter;
use velostream_engine::{EngineError, Result};

use super::framing::{Chunk, Framed, Framer};
use crate::format::decode::{BatchDecoder, Origin};

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

/// What the framing thread hands a decoding thread.
enum Task {
    /// A chunk to decode; `last` after the input's end.
    Chunk { chunk: Chunk, last: bool },
    /// Reading failed here: the job fails at this point of the input.
    Failed(EngineError),
}

/// What a decoding thread hands back: a chunk's steps, its buffer (to be
/// filled again), and whether it was the last.
struct Done {
    steps: Result<Vec<Step>>,
    buffer: Vec<u8>,
    last: bool,
}

struct Worker {
    /// Taken on drop, which stops the worker.
    results: Option<Receiver<Done>>,
    thread: Option<JoinHandle<()>>,
}

/// Chunks each decoding thread may hold beyond the one it decodes.
const QUEUED_PER_WORKER: usize = 3;

/// The framing and decoding threads of one file source.
pub struct DecodePool {
    origin: String,
    workers: Vec<Worker>,
    framing: Option<JoinHandle<()>>,
    /// Buffers of decoded chunks, back to the framing thread: reading into
    /// memory already mapped is cheaper than into fresh pages.
    spares: Sender<Vec<u8>>,
    /// Chunks whose steps were taken back.
    received: usize,
    finished: bool,
}

impl DecodePool {
    /// Starts reading with `framer` on a thread of its own and decoding on
    /// `threads` threads, each with its own copy of `decoder`.
    pub fn start(framer: Framer, threads: usize, decoder: &BatchDecoder) -> Result<Self> {
        let origin = framer.origin.clone();
        let failed = |e: std::io::Error| {
            EngineError::connector(&origin, format!("cannot start a decoding thread: {e}"))
        };
        let mut workers = Vec::with_capacity(threads);
        let mut inboxes = Vec::with_capacity(threads);
        for n in 0..threads {
            let mut decoder = decoder
                .fresh()
                .map_err(|e| EngineError::connector(&origin, e))?;
            let (tasks, inbox) = sync_channel::<Task>(QUEUED_PER_WORKER);
            let (outbox, results) = sync_channel::<Done>(QUEUED_PER_WORKER + 1);
            let name = origin.clone();
            let thread = std::thread::Builder::new()
                .name(format!("decode-{n}"))
                .spawn(move || {
                    for task in inbox {
                        let done = match task {
                            Task::Chunk { mut chunk, last } => Done {
                                steps: decode_chunk(&mut decoder, &mut chunk, &name),
                                buffer: chunk.bytes,
                                last,
                            },
                            Task::Failed(e) => Done {
                                steps: Err(e),
                                buffer: Vec::new(),
                                last: true,
                            },
                        };
                        if outbox.send(done).is_err() {
                            return;
                        }
                    }
                })
                .map_err(failed)?;
            inboxes.push(tasks);
            workers.push(Worker {
                results: Some(results),
                thread: Some(thread),
            });
        }
        let (spares, returned) = channel();
        let framing = std::thread::Builder::new()
            .name("read".to_string())
            .spawn(move || frame_into(framer, &inboxes, &returned))
            .map_err(failed)?;
        Ok(Self {
            origin,
            workers,
            framing: Some(framing),
            spares,
            received: 0,
            finished: false,
        })
    }

    /// The steps of the next chunk in input order (waiting for them);
    /// `None` once the input is decoded to its end.
    pub fn next_steps(&mut self) -> Result<Option<Vec<Step>>> {
        if self.finished {
            return Ok(None);
        }
        let worker = &self.workers[self.received % self.workers.len()];
        let done = worker
            .results
            .as_ref()
            .and_then(|results| results.recv().ok())
            .ok_or_else(|| EngineError::connector(&self.origin, "a decoding thread stopped"))?;
        self.received += 1;
        self.finished = done.last;
        // the framing thread may be gone already (at the input's end)
        let _ = self.spares.send(done.buffer);
        done.steps.map(Some)
    }
}

impl Drop for DecodePool {
    /// Stops the threads: a decoding thread stops when its results cannot
    /// be handed back, the framing thread when a chunk cannot be handed on.
    fn drop(&mut self) {
        for worker in &mut self.workers {
            worker.results = None;
        }
        for worker in &mut self.workers {
            if let Some(thread) = worker.thread.take() {
                let _ = thread.join();
            }
        }
        if let Some(thread) = self.framing.take() {
            let _ = thread.join();
        }
    }
}

/// The framing thread: cuts the input into chunks and hands them to the
/// decoding threads in turn, until the input ends, reading fails, or the
/// decoding threads are gone.
fn frame_into(mut framer: Framer, inboxes: &[SyncSender<Task>], spares: &Receiver<Vec<u8>>) {
    // chunks go to the threads strictly in turn: the job's thread takes
    // the results back in that order
    for inbox in inboxes.iter().cycle() {
        let task = loop {
            let spare = spares.try_recv().unwrap_or_default();
            break match framer.frame() {
                Ok(Framed::Lines) => Task::Chunk {
                    chunk: framer.take_chunk(spare),
                    last: false,
                },
                // an oversized record refused: reported in its place
                Ok(Framed::Idle) if !framer.rejected.is_empty() => Task::Chunk {
                    chunk: framer.take_chunk(spare),
                    last: false,
                },
                Ok(Framed::Idle) => continue,
                Ok(Framed::End) => Task::Chunk {
                    chunk: framer.take_chunk(spare),
                    last: true,
                },
                Err(e) => Task::Failed(e),
            };
        };
        let stop = !matches!(task, Task::Chunk { last: false, .. });
        if inbox.send(task).is_err() || stop {
            return;
        }
    }
}

/// Decodes one chunk step by step, as the single-threaded source does.
fn decode_chunk(decoder: &mut BatchDecoder, chunk: &mut Chunk, origin: &str) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    let mut pos = 0;
    let mut line = chunk.first_line;
    let mut out = VecDeque::new();
    let mut before = std::mem::take(&mut chunk.rejected_before);
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
