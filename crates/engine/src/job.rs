//! A job: one statement running — its source feeding the operator pipeline
//! feeding its sink, on the calling thread, until the source ends, a LIMIT
//! is reached, or it is cancelled.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatch;

use crate::connector::{Sink, Source, SourceEvent};
use crate::dead_letter;
use crate::error::Result;
use crate::metrics::JobMetrics;
use crate::operators::Pipeline;

pub struct Job {
    pub name: String,
    source: Box<dyn Source>,
    pipeline: Pipeline,
    sink: Box<dyn Sink>,
    metrics: Arc<JobMetrics>,
    cancel: Arc<AtomicBool>,
    hold: Arc<Hold>,
    dead_letters: Option<Box<dyn Sink>>,
    commit_interval: Duration,
}

/// Holding a job at a consistent point: `requested` asks for it, `held`
/// says the job has flushed, committed and stopped reading.
#[derive(Debug, Default)]
pub struct Hold {
    pub requested: AtomicBool,
    pub held: AtomicBool,
}

/// What a finished job did.
#[derive(Debug, Clone)]
pub struct JobSummary {
    pub name: String,
    pub records_in: u64,
    pub records_out: u64,
    pub bad_records: u64,
    /// Records dropped because their windows had closed.
    pub late_records: u64,
    pub elapsed: Duration,
}

impl Job {
    pub fn new(
        name: String,
        source: Box<dyn Source>,
        pipeline: Pipeline,
        sink: Box<dyn Sink>,
        metrics: Arc<JobMetrics>,
    ) -> Self {
        Self {
            name,
            source,
            pipeline,
            sink,
            metrics,
            cancel: Arc::new(AtomicBool::new(false)),
            hold: Arc::new(Hold::default()),
            dead_letters: None,
            commit_interval: Duration::from_secs(1),
        }
    }

    /// Sends rejected records (malformed, or late under the dead-letter
    /// strategy) to `sink` as well as counting them.
    pub fn with_dead_letter_sink(mut self, sink: Box<dyn Sink>) -> Self {
        self.metrics
            .dead_letters_enabled
            .store(true, Ordering::Relaxed);
        self.dead_letters = Some(sink);
        self
    }

    /// A flag that stops the job at the next batch boundary when set.
    pub fn cancel_handle(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    /// Holds the job at its next batch boundary (results flushed, source
    /// positions committed) until released.
    pub fn hold_handle(&self) -> Arc<Hold> {
        self.hold.clone()
    }

    pub fn metrics(&self) -> Arc<JobMetrics> {
        self.metrics.clone()
    }

    /// Runs to completion. On a clean end the pipeline is finished (open
    /// groups emitted) and the sink flushed and closed.
    pub fn run(mut self) -> Result<JobSummary> {
        let started = Instant::now();
        let mut out: Vec<RecordBatch> = Vec::new();
        let mut last_commit = Instant::now();
        if let Some(count) = self.source.partition_count() {
            self.pipeline.declare_source_partitions(count);
        }
        while !self.cancel.load(Ordering::Relaxed) {
            if last_commit.elapsed() >= self.commit_interval {
                self.commit()?;
                last_commit = Instant::now();
            }
            if self.hold.requested.load(Ordering::Relaxed) {
                // a consistent point: everything read so far is out and committed
                self.commit()?;
                self.hold.held.store(true, Ordering::Relaxed);
                while self.hold.requested.load(Ordering::Relaxed)
                    && !self.cancel.load(Ordering::Relaxed)
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                self.hold.held.store(false, Ordering::Relaxed);
                continue;
            }
            // Latency covers reading and decoding too: a source decodes a
            // whole chunk when its first batch is asked for.
            let polled = Instant::now();
            match self.source.poll_batch()? {
                SourceEvent::Batch(batch) => {
                    self.metrics.add_input(batch.num_rows() as u64, 0);
                    self.pipeline.process(batch, &mut out)?;
                    self.deliver(&mut out)?;
                    let state = self.pipeline.state_size();
                    self.metrics
                        .open_windows
                        .store(state.windows as u64, Ordering::Relaxed);
                    self.metrics
                        .state_keys
                        .store(state.keys as u64, Ordering::Relaxed);
                    self.metrics
                        .record_latency(polled.elapsed().as_micros() as u64);
                    if self.pipeline.is_done() {
                        break;
                    }
                }
                SourceEvent::Idle | SourceEvent::Deletes(_) => {}
                SourceEvent::End => break,
            }
        }
        if self.source.is_bounded() || !self.cancel.load(Ordering::Relaxed) {
            // the input is complete: everything still held is a result now
            // (a stopped unbounded job leaves its open windows unemitted)
            self.pipeline.finish(&mut out)?;
        }
        self.deliver(&mut out)?;
        self.commit()?;
        self.sink.close()?;
        if let Some(sink) = &mut self.dead_letters {
            sink.close()?;
        }
        Ok(JobSummary {
            name: self.name,
            records_in: JobMetrics::get(&self.metrics.records_in),
            records_out: JobMetrics::get(&self.metrics.records_out),
            bad_records: JobMetrics::get(&self.metrics.bad_records),
            late_records: JobMetrics::get(&self.metrics.late_records),
            elapsed: started.elapsed(),
        })
    }

    /// Flushes the sinks, then lets the source record what has been consumed.
    fn commit(&mut self) -> Result<()> {
        self.sink.flush()?;
        if let Some(sink) = &mut self.dead_letters {
            sink.flush()?;
        }
        self.source.commit()
    }

    /// How often results are flushed and source positions committed.
    pub fn with_commit_interval(mut self, interval: Duration) -> Self {
        self.commit_interval = interval;
        self
    }

    fn deliver(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        if let Some(sink) = &mut self.dead_letters {
            let letters = self.metrics.take_dead_letters();
            if !letters.is_empty() {
                sink.write(&dead_letter::to_batch(&letters)?)?;
            }
        }
        for batch in out.drain(..) {
            self.metrics.add_output(batch.num_rows() as u64);
            self.sink.write(&batch)?;
        }
        Ok(())
    }
}
