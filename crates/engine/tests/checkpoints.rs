//! Jobs checkpoint and recover: a job that fails mid-stream and is rebuilt
//! resumes from its newest checkpoint and, with a sink that drops what was
//! written after it, produces exactly the rows of an uninterrupted run —
//! under both state backends. Damaged checkpoints are skipped; a changed
//! query is refused with a clear error.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use velostream_engine::checkpoint::{BackendKind, CheckpointSettings};
use velostream_engine::connector::Position;
use velostream_engine::execution::Execution;
use velostream_engine::parallel::{self, ParallelPipeline};
use velostream_engine::{EngineError, Job, PipelineBuilder, Result, Sink, Source, SourceEvent};

use common::{text, timed_batch, timed_schema};

const SQL: &str = "SELECT k, _window_start, COUNT(*) AS n, SUM(at) AS s FROM t \
                   GROUP BY k WINDOW TUMBLING(at, 250ms) WITH ('t.type' = 'test')";

/// Replays fixed batches; its position is the number returned. Fails
/// (like a crash) when it reaches `fail_at`.
struct Batches {
    batches: Vec<RecordBatch>,
    next: usize,
    fail_at: Option<usize>,
}

impl Source for Batches {
    fn schema(&self) -> SchemaRef {
        timed_schema()
    }
    fn poll_batch(&mut self) -> Result<SourceEvent> {
        if Some(self.next) == self.fail_at {
            return Err(EngineError::connector("test", "simulated crash"));
        }
        match self.batches.get(self.next) {
            Some(b) => {
                self.next += 1;
                Ok(SourceEvent::Batch(b.clone()))
            }
            None => Ok(SourceEvent::End),
        }
    }
    fn is_bounded(&self) -> bool {
        true
    }
    fn position(&self) -> Option<Position> {
        Some(Position::from(self.next))
    }
    fn seek(&mut self, position: &Position) -> Result<()> {
        self.next = position.as_u64().unwrap() as usize;
        Ok(())
    }
}

/// Collects rows; like a transactional sink, rows written after the
/// restored checkpoint are dropped on recovery.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<RecordBatch>>>);

impl Sink for Collect {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.0.lock().unwrap().push(batch.clone());
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
    fn pre_commit(&mut self) -> Result<Option<Position>> {
        Ok(Some(Position::from(self.0.lock().unwrap().len())))
    }
    fn recover(&mut self, state: Option<&Position>) -> Result<()> {
        let keep = state.map_or(0, |s| s.as_u64().unwrap() as usize);
        self.0.lock().unwrap().truncate(keep);
        Ok(())
    }
}

fn input() -> Vec<RecordBatch> {
    (0..20).map(|i| timed_batch(i * 100)).collect()
}

fn job(
    sql: &str,
    fail_at: Option<usize>,
    sink: &Collect,
    settings: &CheckpointSettings,
) -> Result<Job> {
    job_with(sql, fail_at, sink, settings, 1)
}

/// The job with `parallelism` pipelines (keyed by `k`) when above 1.
fn job_with(
    sql: &str,
    fail_at: Option<usize>,
    sink: &Collect,
    settings: &CheckpointSettings,
    parallelism: usize,
) -> Result<Job> {
    let plan = common::plan(sql, timed_schema());
    let build = || PipelineBuilder::new().build(&plan, true, Default::default());
    let pipeline: Execution = if parallelism > 1 {
        let partitioning = parallel::partitioning(&plan).expect("keyed by k");
        let pipelines = (0..parallelism)
            .map(|_| build())
            .collect::<Result<Vec<_>>>()?;
        ParallelPipeline::new("totals", pipelines, &partitioning)?.into()
    } else {
        build()?.into()
    };
    let source = Batches {
        batches: input(),
        next: 0,
        fail_at,
    };
    Job::new(
        "totals".into(),
        Box::new(source),
        pipeline,
        Box::new(sink.clone()),
        Default::default(),
    )
    .with_checkpoints(settings)
}

fn uninterrupted() -> String {
    let plan = common::plan(SQL, timed_schema());
    let mut pipeline = PipelineBuilder::new()
        .build(&plan, true, Default::default())
        .unwrap();
    text(&common::run(&mut pipeline, input(), true))
}

fn settings(dir: &std::path::Path, backend: BackendKind) -> CheckpointSettings {
    let mut s = CheckpointSettings::new(dir, Duration::ZERO);
    s.backend = backend;
    s
}

#[test]
fn a_failed_job_resumes_from_its_checkpoint_with_exactly_the_same_results() {
    for backend in [BackendKind::Memory, BackendKind::RocksDb] {
        let dir = tempfile::tempdir().unwrap();
        let settings = settings(dir.path(), backend);
        let sink = Collect::default();
        for fail_at in [7, 13] {
            let err = job(SQL, Some(fail_at), &sink, &settings)
                .unwrap()
                .run()
                .unwrap_err();
            assert!(err.to_string().contains("simulated crash"), "{err}");
        }
        let summary = job(SQL, None, &sink, &settings).unwrap().run().unwrap();
        // the last run read only what came after its checkpoint
        assert!(summary.records_in < 2000, "{backend:?}: {summary:?}");
        let rows = sink.0.lock().unwrap().clone();
        assert_eq!(text(&rows), uninterrupted(), "{backend:?}");
        let kept = std::fs::read_dir(dir.path().join("totals/checkpoints"))
            .unwrap()
            .count();
        assert_eq!(kept, 3, "{backend:?}: retention keeps the newest three");
    }
}

#[test]
fn a_damaged_checkpoint_is_skipped_for_the_one_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path(), BackendKind::Memory);
    let sink = Collect::default();
    job(SQL, Some(9), &sink, &settings)
        .unwrap()
        .run()
        .unwrap_err();
    let root = dir.path().join("totals/checkpoints");
    let mut ids: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    ids.sort();
    let newest = ids.last().unwrap();
    let state = std::fs::read_dir(newest)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "arrow"))
        .unwrap();
    let mut bytes = std::fs::read(&state).unwrap();
    let last = bytes.len() - 20;
    bytes[last] ^= 0xff;
    std::fs::write(&state, bytes).unwrap();
    job(SQL, None, &sink, &settings).unwrap().run().unwrap();
    assert_eq!(text(&sink.0.lock().unwrap()), uninterrupted());
}

#[test]
fn a_changed_query_is_refused_until_started_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings(dir.path(), BackendKind::Memory);
    let sink = Collect::default();
    job(SQL, Some(5), &sink, &settings)
        .unwrap()
        .run()
        .unwrap_err();
    let changed = SQL.replace("SUM(at) AS s", "MAX(k) AS s");
    let err = job(&changed, None, &sink, &settings)
        .unwrap()
        .run()
        .unwrap_err()
        .to_string();
    assert!(err.contains("the query changed since checkpoint"), "{err}");
    assert!(err.contains("--fresh-state"), "{err}");
    settings.fresh = true;
    job(&changed, None, &sink, &settings)
        .unwrap()
        .run()
        .unwrap();
    assert!(dir.path().join("totals/discarded").exists());
}

#[test]
fn a_parallel_job_resumes_from_its_checkpoint_with_exactly_the_same_results() {
    for backend in [BackendKind::Memory, BackendKind::RocksDb] {
        let dir = tempfile::tempdir().unwrap();
        let settings = settings(dir.path(), backend);
        let sink = Collect::default();
        for fail_at in [6, 15] {
            job_with(SQL, Some(fail_at), &sink, &settings, 2)
                .unwrap()
                .run()
                .unwrap_err();
        }
        let summary = job_with(SQL, None, &sink, &settings, 2)
            .unwrap()
            .run()
            .unwrap();
        assert!(summary.records_in < 2000, "{backend:?}: {summary:?}");
        assert_eq!(
            text(&sink.0.lock().unwrap()),
            uninterrupted(),
            "{backend:?}"
        );
        // a checkpoint of two pipelines does not restore into one
        let err = job(SQL, None, &sink, &settings)
            .unwrap()
            .run()
            .unwrap_err()
            .to_string();
        assert!(err.contains("query changed"), "{err}");
    }
}
