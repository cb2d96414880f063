//! A job: one statement running — its source feeding the operator pipeline
//! feeding its sink, on the calling thread, until the source ends, a LIMIT
//! is reached, or it is cancelled.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatch;

use crate::checkpoint::{self, CheckpointSettings, Checkpointer};
use crate::connector::{DeliveryMark, Position, Sink, Source, SourceEvent};
use crate::dead_letter;
use crate::error::{EngineError, Result};
use crate::execution::Execution;
use crate::metrics::{CheckpointReport, JobMetrics};

/// After this many commit intervals without the sinks reporting a commit's
/// mark delivered, the job waits for them (see [`PendingCommit`]).
const FORCED_COMMIT_AFTER: u32 = 5;

/// A periodic commit waiting for the sinks to deliver what was written
/// before it: then the source's position of that moment is committed. The
/// job goes on reading meanwhile, so no record waits for
/// acknowledgements in flight.
struct PendingCommit {
    sink: DeliveryMark,
    dead_letters: Option<DeliveryMark>,
    /// What to commit: `None` when nothing may be committed yet (between
    /// checkpoints, or records still held in the operators' state), and
    /// the commit only serves the sinks' acknowledgements.
    position: Option<Position>,
    since: Instant,
}

pub struct Job {
    pub name: String,
    source: Box<dyn Source>,
    pipeline: Execution,
    sink: Box<dyn Sink>,
    metrics: Arc<JobMetrics>,
    cancel: Arc<AtomicBool>,
    hold: Arc<Hold>,
    dead_letters: Option<Box<dyn Sink>>,
    commit_interval: Duration,
    checkpoints: Option<Checkpointer>,
    /// See [`Job::holding_records`].
    holds_records: bool,
    /// The input ended and the pipeline was finished: nothing is held.
    input_complete: bool,
    pending_commit: Option<PendingCommit>,
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
    /// Rows whose expression failed, taken out by the error policy.
    pub row_errors: u64,
    pub elapsed: Duration,
}

impl Job {
    pub fn new(
        name: String,
        source: Box<dyn Source>,
        pipeline: impl Into<Execution>,
        sink: Box<dyn Sink>,
        metrics: Arc<JobMetrics>,
    ) -> Self {
        Self {
            name,
            source,
            pipeline: pipeline.into(),
            sink,
            metrics,
            cancel: Arc::new(AtomicBool::new(false)),
            hold: Arc::new(Hold::default()),
            dead_letters: None,
            commit_interval: Duration::from_secs(1),
            checkpoints: None,
            holds_records: false,
            pending_commit: None,
            input_complete: false,
        }
    }

    /// The job's operators hold records' effects (windows, aggregates):
    /// without checkpoints its source positions are committed only once
    /// its input has ended and everything held has been emitted, so a
    /// crash never loses a record that was only in memory (at the price of
    /// reading again from the last commit after a restart).
    pub fn holding_records(mut self) -> Self {
        self.holds_records = true;
        self
    }

    /// Takes consistent checkpoints as `settings` say and recovers from
    /// the newest one when the job starts. Fails when the job cannot be
    /// checkpointed: its source cannot be replayed or an operator's state
    /// cannot be captured yet.
    pub fn with_checkpoints(mut self, settings: &CheckpointSettings) -> Result<Self> {
        if self.source.position().is_none() {
            return Err(EngineError::NotSupported(format!(
                "job {}: checkpoints need a source that can be replayed from a position (Kafka, files, nexmark, PostgreSQL with 'incremental.column'); this one cannot",
                self.name
            )));
        }
        if let Some(why) = self.pipeline.checkpoint_blocker() {
            return Err(EngineError::NotSupported(format!(
                "job {}: {why}",
                self.name
            )));
        }
        self.checkpoints = Some(Checkpointer::open(&self.name, settings)?);
        Ok(self)
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
        self.recover()?;
        let mut out: Vec<RecordBatch> = Vec::new();
        let mut last_commit = Instant::now();
        if let Some(count) = self.source.partition_count() {
            self.pipeline
                .declare_source_partitions(&(0..count).collect::<Vec<_>>())?;
        }
        if let Some(operators) = self.pipeline.partitioned_operators() {
            if !self.source.divides_state(operators)? {
                return Err(EngineError::NotSupported(format!(
                    "job {}: its state is divided by partition, but its source does not divide its input",
                    self.name
                )));
            }
        }
        while !self.cancel.load(Ordering::Relaxed) {
            if self.checkpoints.as_ref().is_some_and(Checkpointer::due) {
                self.commit()?;
                last_commit = Instant::now();
            } else {
                self.advance_commit()?;
                if self.pending_commit.is_none() && last_commit.elapsed() >= self.commit_interval {
                    self.start_commit()?;
                    last_commit = Instant::now();
                }
            }
            if self.hold.requested.load(Ordering::Relaxed) {
                // a consistent point: everything read so far is out and
                // committed (and checkpointed when the job checkpoints)
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
            if let Some(owned) = self.source.owned_partitions_changed() {
                self.pipeline.declare_source_partitions(&owned)?;
            }
            // Latency covers reading and decoding too: a source decodes a
            // whole chunk when its first batch is asked for.
            let polled = Instant::now();
            match self.source.poll_batch()? {
                SourceEvent::Batch(batch) => {
                    if self.process_batch(None, batch, polled, &mut out)? {
                        break;
                    }
                }
                SourceEvent::Partitioned { moves, batches } => {
                    self.pipeline.apply_moves(moves)?;
                    let mut done = false;
                    for (partition, batch) in batches {
                        done |= self.process_batch(Some(partition), batch, polled, &mut out)?;
                    }
                    if done {
                        break;
                    }
                }
                SourceEvent::Idle => {
                    self.pipeline.idle(&mut out)?;
                    self.deliver(&mut out)?;
                }
                SourceEvent::Deletes(_) => {}
                SourceEvent::End => break,
            }
        }
        if self.source.is_bounded() || !self.cancel.load(Ordering::Relaxed) {
            // the input is complete: everything still held is a result now
            // (a stopped unbounded job leaves its open windows unemitted)
            self.pipeline.finish(&mut out)?;
            self.input_complete = true;
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
            row_errors: JobMetrics::get(&self.metrics.row_errors),
            elapsed: started.elapsed(),
        })
    }

    /// Pushes one batch of records through the pipeline (`partition`: its
    /// partition of state, when the source divides state) and delivers the
    /// results; true when the pipeline wants no more input.
    fn process_batch(
        &mut self,
        partition: Option<usize>,
        batch: RecordBatch,
        polled: Instant,
        out: &mut Vec<RecordBatch>,
    ) -> Result<bool> {
        self.metrics.add_input(batch.num_rows() as u64, 0);
        let origin = self.source.origin_time_ms();
        self.pipeline.process(partition, batch, out)?;
        let had_results = !out.is_empty();
        self.deliver(out)?;
        if let (true, Some(origin)) = (had_results, origin) {
            let micros = crate::watermark::wall_clock_us() - origin * 1000;
            self.metrics.e2e_latency.observe_us(micros.max(0) as u64);
        }
        let state = self.pipeline.state_size();
        self.metrics
            .open_windows
            .store(state.windows as u64, Ordering::Relaxed);
        self.metrics
            .state_keys
            .store(state.keys as u64, Ordering::Relaxed);
        self.metrics
            .record_latency(polled.elapsed().as_micros() as u64);
        Ok(self.pipeline.is_done())
    }

    /// Makes everything processed so far safe: with checkpoints, takes
    /// one; without, flushes the sinks and lets the source record what has
    /// been consumed.
    fn commit(&mut self) -> Result<()> {
        // its flush and commit cover what a pending commit waited for
        self.pending_commit = None;
        self.deliver_in_flight()?;
        if self.checkpoints.is_some() {
            return self.checkpoint();
        }
        self.flush_sinks()?;
        if !self.results_all_out() {
            return Ok(());
        }
        self.source.commit()
    }

    /// Hands the sinks what the pipeline still has in flight (results of
    /// records already read, in parallel pipelines).
    fn deliver_in_flight(&mut self) -> Result<()> {
        let mut in_flight = Vec::new();
        self.pipeline.drain(&mut in_flight)?;
        self.deliver(&mut in_flight)
    }

    /// Whether the results of every record read so far have been handed to
    /// the sinks: not while the operators may still hold some in their
    /// state, before the input ended.
    fn results_all_out(&self) -> bool {
        !self.holds_records || self.input_complete
    }

    /// The commit that runs every `commit_interval`: marks what the sinks
    /// have been given and notes the source's position, to commit once the
    /// marks are delivered ([`advance_commit`](Self::advance_commit)).
    fn start_commit(&mut self) -> Result<()> {
        self.deliver_in_flight()?;
        // with checkpoints a position is committed only once a checkpoint holds it
        let position = match self.checkpoints.is_none() && self.results_all_out() {
            true => self.source.position(),
            false => None,
        };
        let dead_letters = match &mut self.dead_letters {
            Some(sink) => Some(sink.mark()?),
            None => None,
        };
        self.pending_commit = Some(PendingCommit {
            sink: self.sink.mark()?,
            dead_letters,
            position,
            since: Instant::now(),
        });
        Ok(())
    }

    /// Commits the pending commit's position once the sinks delivered
    /// everything before its marks, without waiting; after
    /// [`FORCED_COMMIT_AFTER`] intervals it waits for them (under steady
    /// traffic a broker may take long to acknowledge a given message).
    fn advance_commit(&mut self) -> Result<()> {
        let Some(pending) = &self.pending_commit else {
            return Ok(());
        };
        let mut delivered = self.sink.delivered(pending.sink)?;
        if let (Some(sink), Some(mark)) = (&mut self.dead_letters, pending.dead_letters) {
            delivered &= sink.delivered(mark)?;
        }
        if !delivered {
            if pending.since.elapsed() < self.commit_interval * FORCED_COMMIT_AFTER {
                return Ok(());
            }
            self.flush_sinks()?;
        }
        if let Some(pending) = self.pending_commit.take() {
            if let Some(position) = pending.position {
                self.source.commit_position(&position)?;
            }
        }
        Ok(())
    }

    fn flush_sinks(&mut self) -> Result<()> {
        self.sink.flush()?;
        if let Some(sink) = &mut self.dead_letters {
            sink.flush()?;
        }
        Ok(())
    }

    /// Takes a checkpoint at this batch boundary: the sink pre-commits, the
    /// operator state and source position are written durably, then the
    /// sink publishes and the source commits.
    fn checkpoint(&mut self) -> Result<()> {
        let sink_state = self.sink.pre_commit()?;
        let dead_letter_state = match &mut self.dead_letters {
            Some(sink) => sink.pre_commit()?,
            None => None,
        };
        // state divided by partition is kept where each partition's next
        // owner finds it, before anything commits the positions it covers
        if let Some(states) = self.pipeline.capture_partitions()? {
            self.source.keep_state(&states)?;
        }
        let captured = checkpoint::Captured {
            operators: self.pipeline.capture()?,
            source: Some(self.source.position().ok_or_else(|| {
                EngineError::State(format!(
                    "job {}: the source could not tell its position for a checkpoint",
                    self.name
                ))
            })?),
            sink: sink_state,
            dead_letter_sink: dead_letter_state,
            records_in: JobMetrics::get(&self.metrics.records_in),
        };
        let Some(checkpoints) = &mut self.checkpoints else {
            return Ok(());
        };
        let taken = checkpoints.write(captured)?;
        self.sink.commit_checkpoint(self.source.as_ref())?;
        if let Some(sink) = &mut self.dead_letters {
            sink.commit_checkpoint(self.source.as_ref())?;
        }
        if self.sink.commits_source_position() {
            // the sink's transaction carried the position; a second,
            // plain commit of it would race that transaction's offsets
            self.source.position_committed()?;
        } else {
            self.source.commit()?;
        }
        let duration_ms = taken.duration.as_secs_f64() * 1000.0;
        if let Ok(mut d) = self.metrics.checkpoint_durations_ms.lock() {
            if d.len() < 10_000 {
                d.push(duration_ms);
            }
        }
        self.report_checkpoint(taken.id, duration_ms as u64, taken.bytes, false);
        tracing::debug!(
            component = "checkpoint",
            "job {}: checkpoint {} written ({} bytes, {duration_ms:.1} ms)",
            self.name,
            taken.id,
            taken.bytes
        );
        Ok(())
    }

    fn report_checkpoint(&self, id: u64, duration_ms: u64, bytes: u64, restored: bool) {
        let at_ms = crate::watermark::wall_clock_ms();
        if let Ok(mut last) = self.metrics.last_checkpoint.lock() {
            *last = Some(CheckpointReport {
                id,
                at_ms,
                duration_ms,
                bytes,
                restored,
            });
        }
    }

    /// Restores the newest usable checkpoint, if the job checkpoints and
    /// has one: operator state, source position, sink.
    fn recover(&mut self) -> Result<()> {
        let Some(checkpoints) = &mut self.checkpoints else {
            return Ok(());
        };
        let started = Instant::now();
        // A sink that commits the source position with its output (a Kafka
        // transaction) may have died between writing a checkpoint and that
        // commit: only the checkpoint whose position was committed matches
        // the output, so that one is restored.
        let committed = if self.sink.commits_source_position() {
            Some(self.source.committed_position()?)
        } else {
            None
        };
        let Some(recovered) = checkpoints.recover_where(|m| match &committed {
            None => true,
            Some(c) => c.as_ref() == m.source.as_ref(),
        })?
        else {
            if let Some(sink) = &mut self.dead_letters {
                sink.recover(None)?;
            }
            return self.sink.recover(None);
        };
        let id = recovered.manifest.id;
        let source = recovered.manifest.source.clone();
        let sink = recovered.manifest.sink.clone();
        let dead_letter_sink = recovered.manifest.dead_letter_sink.clone();
        let records = recovered.manifest.records_in;
        let bytes = recovered.manifest.files.iter().map(|f| f.bytes).sum();
        self.pipeline.restore(recovered)?;
        if let Some(position) = &source {
            self.source.seek(position)?;
        }
        self.sink.recover(sink.as_ref())?;
        // rejected records are cut back like results: the replay rejects them again
        if let Some(letters) = &mut self.dead_letters {
            letters.recover(dead_letter_sink.as_ref())?;
        }
        let took = started.elapsed();
        self.report_checkpoint(id, took.as_millis() as u64, bytes, true);
        tracing::info!(
            component = "checkpoint",
            "job {}: restored checkpoint {id} ({records} records read before it, {bytes} bytes of state) in {} ms",
            self.name,
            took.as_millis()
        );
        Ok(())
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
