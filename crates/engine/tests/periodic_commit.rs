//! The periodic commit does not wait on the sinks: the source's position
//! of a moment is committed only once the sink reports everything written
//! before it delivered, and until then the job goes on reading. A sink
//! that never reports that is flushed (waited for) every few intervals, so
//! positions are still committed.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use velostream_engine::connector::{DeliveryMark, Position};
use velostream_engine::{Job, PipelineBuilder, Result, Sink, Source, SourceEvent};

use common::{timed_batch, timed_schema};

/// What the source and the sink of one run saw.
#[derive(Default)]
struct Seen {
    /// Batches the sink has had acknowledged (all of them after a flush).
    acknowledged: AtomicUsize,
    written: AtomicUsize,
    commits: AtomicUsize,
    /// Commits of a position whose results were not yet acknowledged.
    early_commits: AtomicUsize,
    /// Waiting flushes before the sink was closed.
    flushes: AtomicUsize,
    polls: AtomicUsize,
}

/// A batch every millisecond for `batches` polls, then the end; its
/// position is the number of batches returned.
struct Ticking {
    seen: Arc<Seen>,
    batches: usize,
}

impl Source for Ticking {
    fn schema(&self) -> SchemaRef {
        timed_schema()
    }
    fn poll_batch(&mut self) -> Result<SourceEvent> {
        let n = self.seen.polls.fetch_add(1, Ordering::SeqCst);
        if n >= self.batches {
            return Ok(SourceEvent::End);
        }
        std::thread::sleep(Duration::from_millis(1));
        Ok(SourceEvent::Batch(timed_batch(n as i64 * 100)))
    }
    fn is_bounded(&self) -> bool {
        true
    }
    fn position(&self) -> Option<Position> {
        Some(Position::from(
            self.seen.polls.load(Ordering::SeqCst).min(self.batches),
        ))
    }
    fn commit_position(&mut self, position: &Position) -> Result<()> {
        self.seen.commits.fetch_add(1, Ordering::SeqCst);
        let upto = position.as_u64().unwrap() as usize;
        if upto > self.seen.acknowledged.load(Ordering::SeqCst) {
            self.seen.early_commits.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
    fn commit(&mut self) -> Result<()> {
        self.seen.commits.fetch_add(1, Ordering::SeqCst);
        if self.seen.acknowledged.load(Ordering::SeqCst) < self.seen.written.load(Ordering::SeqCst)
        {
            self.seen.early_commits.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
}

/// A sink whose writes are acknowledged `lag` marks later (`None`: never
/// without a waiting flush). A mark is the number of batches written.
struct Acks {
    seen: Arc<Seen>,
    lag: Option<u64>,
    marks: u64,
    running: bool,
}

impl Sink for Acks {
    fn write(&mut self, _: &RecordBatch) -> Result<()> {
        self.seen.written.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        if self.running {
            self.seen.flushes.fetch_add(1, Ordering::SeqCst);
        }
        let written = self.seen.written.load(Ordering::SeqCst);
        self.seen.acknowledged.store(written, Ordering::SeqCst);
        Ok(())
    }
    fn mark(&mut self) -> Result<DeliveryMark> {
        self.marks += 1;
        Ok(DeliveryMark(self.seen.written.load(Ordering::SeqCst) as u64))
    }
    fn delivered(&mut self, mark: DeliveryMark) -> Result<bool> {
        // asked again at every batch: `lag` polls later it is acknowledged
        if let Some(lag) = self.lag {
            self.marks += 1;
            if self.marks.is_multiple_of(lag + 1) {
                self.seen
                    .acknowledged
                    .fetch_max(mark.0 as usize, Ordering::SeqCst);
            }
        }
        Ok(self.seen.acknowledged.load(Ordering::SeqCst) >= mark.0 as usize)
    }
    fn close(&mut self) -> Result<()> {
        self.running = false;
        self.flush()
    }
}

/// Runs 400 batches (about 0.4 s) committing every 10 ms.
fn run(lag: Option<u64>) -> Arc<Seen> {
    let seen = Arc::new(Seen::default());
    let plan = common::plan(
        "SELECT k, at FROM t WITH ('t.type' = 'test')",
        timed_schema(),
    );
    let pipeline = PipelineBuilder::new()
        .build(&plan, true, Default::default())
        .unwrap();
    let source = Ticking {
        seen: seen.clone(),
        batches: 400,
    };
    let sink = Acks {
        seen: seen.clone(),
        lag,
        marks: 0,
        running: true,
    };
    Job::new(
        "copy".into(),
        Box::new(source),
        pipeline,
        Box::new(sink),
        Default::default(),
    )
    .with_commit_interval(Duration::from_millis(10))
    .run()
    .unwrap();
    seen
}

#[test]
fn positions_are_committed_once_delivered_without_waiting_for_the_sink() {
    // acknowledged a few batches after each mark, as a broker does
    let seen = run(Some(3));
    assert_eq!(seen.early_commits.load(Ordering::SeqCst), 0);
    // only the final commit, at the end of the input, waits
    assert_eq!(seen.flushes.load(Ordering::SeqCst), 1);
    assert!(
        seen.commits.load(Ordering::SeqCst) >= 10,
        "{} commits",
        seen.commits.load(Ordering::SeqCst)
    );
}

#[test]
fn a_sink_that_never_reports_delivery_is_flushed_every_few_intervals() {
    let seen = run(None);
    assert_eq!(seen.early_commits.load(Ordering::SeqCst), 0);
    let (flushes, commits) = (
        seen.flushes.load(Ordering::SeqCst),
        seen.commits.load(Ordering::SeqCst),
    );
    // one waiting flush per five intervals (50 ms) of a 0.4 s run, and a
    // commit after each; the last commit comes with the end
    assert!(flushes >= 2, "{flushes} flushes");
    assert!(commits >= flushes, "{commits} commits, {flushes} flushes");
    assert!(flushes < 40, "{flushes} flushes: waited at every interval");
}
