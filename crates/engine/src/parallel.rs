//! One job's pipeline on several threads (`processing.parallelism`).
//!
//! The job thread keeps reading and decoding its source and runs the
//! operators up to event-time assignment, so lateness and the watermark are
//! decided once over all records, exactly as with one thread. The rest of
//! the pipeline runs in N copies, each on its own thread: a pipeline
//! without keyed state gets contiguous row ranges of each batch; a keyed
//! aggregation gets rows by a hash of key columns that every group key
//! includes, so a group lives in exactly one copy. Every copy receives the
//! watermark. Results are collected in worker order, one batch behind, so
//! decoding the next batch overlaps processing the last.
//!
//! Checkpoints hold the job thread's operator state (numbered as in one
//! pipeline) and each copy's (from `(worker + 1) * WORKER_STRIDE`), so they
//! restore only into the same number of copies.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use datafusion::arrow::array::UInt32Array;
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::record_batch::RecordBatch;
use velostream_sql::{StreamNode, StreamingPlan};

use crate::checkpoint::{self, Recovered};
use crate::error::{EngineError, Result};
use crate::key_hash::{KeyHasher, KeySpread};
use crate::operators::{Pipeline, StateSize};
use crate::state::OperatorSnapshot;

/// Operator numbers of worker `w` start at `w * WORKER_STRIDE` in checkpoints.
pub const WORKER_STRIDE: usize = 1000;

/// How a batch's rows are divided among the workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Partitioning {
    /// Contiguous row ranges (no keyed state).
    Rows,
    /// By a hash of these source columns (every group key includes them).
    Keys(Vec<String>),
}

/// Whether `plan` can run on several pipelines, and how its rows are
/// divided; `Err` says why it cannot.
pub fn partitioning(plan: &StreamingPlan) -> std::result::Result<Partitioning, String> {
    let flow = plan.root.flow();
    let Some(StreamNode::Scan { schema: scan, .. }) = flow.first() else {
        return Err("the query does not start with a scan".into());
    };
    // columns of the scan still carried unchanged by name
    let mut carried: Vec<String> = scan.fields().iter().map(|f| f.name().clone()).collect();
    let mut keys = None;
    for node in &flow[1..] {
        match node {
            StreamNode::WindowAssign { .. } | StreamNode::Filter { .. } => {}
            StreamNode::Project { exprs, .. } => carried.retain(|name| {
                exprs.iter().any(
                    |e| matches!(e, datafusion::logical_expr::Expr::Column(c) if &c.name == name),
                )
            }),
            StreamNode::LookupJoin { table_schema, .. } => {
                // a table column of the same name would make the key ambiguous
                carried.retain(|name| table_schema.fields().iter().all(|f| f.name() != name));
            }
            StreamNode::Aggregate { group_exprs, .. } => {
                let columns: Vec<String> = group_exprs
                    .iter()
                    .filter_map(|e| match e {
                        datafusion::logical_expr::Expr::Column(c) if carried.contains(&c.name) => {
                            Some(c.name.clone())
                        }
                        _ => None,
                    })
                    .collect();
                if columns.is_empty() {
                    return Err("no group key is a column of the source, so groups cannot be divided among threads".into());
                }
                keys = Some(columns);
            }
            StreamNode::RowWindow { .. } => {
                return Err("row functions keep per-partition order".into())
            }
            StreamNode::IntervalJoin { .. } => {
                return Err("an interval join reads a second stream".into())
            }
            _ => return Err("LIMIT and ORDER BY need every record in one place".into()),
        }
    }
    Ok(keys.map_or(Partitioning::Rows, Partitioning::Keys))
}

enum Command {
    /// Rows from the job's stage, then the watermark it passed on.
    Accept(Vec<RecordBatch>, Option<i64>),
    Finish,
    Idle,
    Capture,
    Restore(Box<Recovered>),
}

#[derive(Default)]
struct Reply {
    out: Vec<RecordBatch>,
    size: StateSize,
    snapshots: Vec<(usize, &'static str, OperatorSnapshot)>,
}

struct Worker {
    commands: SyncSender<Command>,
    replies: Receiver<Result<Reply>>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    fn start(name: String, mut pipeline: Pipeline) -> Result<Self> {
        let (commands, inbox) = sync_channel::<Command>(1);
        let (outbox, replies) = sync_channel::<Result<Reply>>(1);
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                for command in inbox {
                    let mut reply = Reply::default();
                    let done = match command {
                        Command::Accept(batches, watermark) => {
                            pipeline.accept(batches, watermark, &mut reply.out)
                        }
                        Command::Finish => pipeline.finish(&mut reply.out),
                        Command::Idle => pipeline.idle(&mut reply.out),
                        Command::Capture => checkpoint::capture_operators(&mut pipeline)
                            .map(|s| reply.snapshots = s),
                        Command::Restore(recovered) => {
                            checkpoint::restore_operators(&mut pipeline, *recovered)
                        }
                    };
                    reply.size = pipeline.state_size();
                    if outbox.send(done.map(|()| reply)).is_err() {
                        break;
                    }
                }
            })
            .map_err(EngineError::Io)?;
        Ok(Self {
            commands,
            replies,
            thread: Some(thread),
        })
    }

    fn send(&self, command: Command) -> Result<()> {
        self.commands
            .send(command)
            .map_err(|_| EngineError::State("a pipeline worker stopped".into()))
    }

    fn reply(&self) -> Result<Reply> {
        self.replies
            .recv()
            .map_err(|_| EngineError::State("a pipeline worker stopped".into()))?
    }
}

/// N pipelines of one plan behind the interface of one: the operators up
/// to event-time assignment run on the job's thread (so lateness and the
/// watermark are decided once, over all records), the rest on N workers.
pub struct ParallelPipeline {
    /// Event time, watermark and window assignment, on the job's thread.
    stage: Pipeline,
    workers: Vec<Worker>,
    /// Chooses a row's worker by its key (`Keys`).
    keys: Option<KeyHasher>,
    /// Workers holding rows whose results were not collected yet.
    busy: Vec<usize>,
    /// Each worker's state as of its last reply.
    sizes: Vec<StateSize>,
}

/// Where the job's stage ends: after the event-time operator, if any.
fn stage_end(pipeline: &Pipeline) -> usize {
    pipeline
        .operators()
        .iter()
        .position(|op| op.name() == "window_assign")
        .map_or(0, |i| i + 1)
}

impl ParallelPipeline {
    /// Runs `pipelines` (built from one plan): the first one's leading
    /// stage on the job's thread, the rest of each on its own thread.
    pub fn new(job: &str, pipelines: Vec<Pipeline>, partitioning: &Partitioning) -> Result<Self> {
        let n = pipelines.len();
        let mut stage = None;
        let mut workers = Vec::with_capacity(n);
        for (i, mut pipeline) in pipelines.into_iter().enumerate() {
            let rest = pipeline.split_off(stage_end(&pipeline));
            if stage.is_none() {
                stage = Some(pipeline);
            }
            workers.push(Worker::start(format!("job-{job}-{i}"), rest)?);
        }
        Ok(Self {
            stage: stage.ok_or_else(|| EngineError::Plan("no pipeline to run".into()))?,
            workers,
            keys: match partitioning {
                Partitioning::Rows => None,
                Partitioning::Keys(names) => {
                    Some(KeyHasher::new(names.clone(), KeySpread::Workers))
                }
            },
            busy: Vec::new(),
            sizes: vec![StateSize::default(); n],
        })
    }

    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Collects the results of the rows in flight, in worker order.
    fn collect(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        let mut first_error = None;
        for w in std::mem::take(&mut self.busy) {
            match self.workers[w].reply() {
                Ok(reply) => {
                    out.extend(reply.out);
                    self.sizes[w] = reply.size;
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Sends `command` to every worker and gathers the replies (after
    /// collecting whatever was in flight into `out`).
    fn broadcast(
        &mut self,
        command: impl Fn() -> Command,
        out: &mut Vec<RecordBatch>,
    ) -> Result<Vec<Reply>> {
        self.collect(out)?;
        for w in &self.workers {
            w.send(command())?;
        }
        let replies = self
            .workers
            .iter()
            .map(Worker::reply)
            .collect::<Result<Vec<_>>>()?;
        for (w, reply) in replies.iter().enumerate() {
            self.sizes[w] = reply.size;
        }
        Ok(replies)
    }

    /// Which worker each row goes to.
    fn assign(&mut self, batch: &RecordBatch) -> Result<Vec<Vec<u32>>> {
        let n = self.workers.len();
        if let Some(hasher) = &mut self.keys {
            return hasher.split(batch, n);
        }
        let mut parts = vec![Vec::new(); n];
        let per = batch.num_rows().div_ceil(n).max(1);
        for row in 0..batch.num_rows() {
            parts[row / per].push(row as u32);
        }
        Ok(parts)
    }

    /// Hands the stage's output rows and watermark to the workers: each
    /// its rows, and the watermark to all.
    fn dispatch(&mut self, staged: Vec<RecordBatch>, watermark: Option<i64>) -> Result<()> {
        let n = self.workers.len();
        let mut per_worker: Vec<Vec<RecordBatch>> = vec![Vec::new(); n];
        for batch in staged {
            for (w, rows) in self.assign(&batch)?.into_iter().enumerate() {
                if rows.is_empty() {
                    continue;
                }
                per_worker[w].push(if rows.len() == batch.num_rows() {
                    batch.clone()
                } else {
                    take_record_batch(&batch, &UInt32Array::from(rows))?
                });
            }
        }
        for (w, batches) in per_worker.into_iter().enumerate() {
            if batches.is_empty() && watermark.is_none() {
                continue;
            }
            self.workers[w].send(Command::Accept(batches, watermark))?;
            self.busy.push(w);
        }
        Ok(())
    }

    pub fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        let mut staged = Vec::new();
        let watermark = self.stage.process_staged(batch, &mut staged)?;
        self.collect(out)?;
        self.dispatch(staged, watermark)
    }

    pub fn finish(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        let mut staged = Vec::new();
        self.stage.finish(&mut staged)?;
        self.collect(out)?;
        self.dispatch(staged, None)?;
        for reply in self.broadcast(|| Command::Finish, out)? {
            out.extend(reply.out);
        }
        Ok(())
    }

    pub fn idle(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        let mut staged = Vec::new();
        let watermark = self.stage.idle_staged(&mut staged)?;
        self.collect(out)?;
        self.dispatch(staged, watermark)?;
        for reply in self.broadcast(|| Command::Idle, out)? {
            out.extend(reply.out);
        }
        Ok(())
    }

    /// Collects what is in flight (before a checkpoint or a hold).
    pub fn drain(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        self.collect(out)
    }

    /// Event time is assigned on the job's thread, so only its stage
    /// tracks the source's partitions.
    pub fn declare_source_partitions(&mut self, partitions: &[usize]) {
        self.stage.declare_source_partitions(partitions);
    }

    /// State held by the stage and all workers, as of their last reply.
    pub fn state_size(&self) -> StateSize {
        std::iter::once(self.stage.state_size())
            .chain(self.sizes.iter().copied())
            .sum()
    }

    /// The stage's operator state (numbered as in a single pipeline) and
    /// every worker's (from `(worker + 1) * WORKER_STRIDE`). In-flight
    /// results must have been drained.
    pub fn capture(&mut self) -> Result<Vec<(usize, &'static str, OperatorSnapshot)>> {
        let mut in_flight = Vec::new();
        let replies = self.broadcast(|| Command::Capture, &mut in_flight)?;
        if !in_flight.is_empty() {
            return Err(EngineError::State(
                "results in flight were not delivered before a checkpoint".into(),
            ));
        }
        let mut all = checkpoint::capture_operators(&mut self.stage)?;
        for (w, reply) in replies.into_iter().enumerate() {
            all.extend(
                reply
                    .snapshots
                    .into_iter()
                    .map(|(i, name, s)| ((w + 1) * WORKER_STRIDE + i, name, s)),
            );
        }
        Ok(all)
    }

    /// Gives the stage and each worker their part of a checkpoint.
    pub fn restore(&mut self, recovered: Recovered) -> Result<()> {
        let n = self.workers.len();
        let workers_in_checkpoint = recovered
            .manifest
            .operators
            .iter()
            .map(|o| o.index / WORKER_STRIDE)
            .max()
            .unwrap_or(0);
        if workers_in_checkpoint != n {
            return Err(EngineError::State(format!(
                "job {}: checkpoint {} was taken with processing.parallelism {} and the job now runs {n} pipelines; run it with the same parallelism, or start fresh with --fresh-state",
                recovered.manifest.job,
                recovered.manifest.id,
                workers_in_checkpoint.max(1)
            )));
        }
        let Recovered {
            manifest,
            mut operators,
        } = recovered;
        let mut part = |group: usize| {
            let mut m = manifest.clone();
            m.operators = manifest
                .operators
                .iter()
                .filter(|o| o.index / WORKER_STRIDE == group)
                .map(|o| checkpoint::manifest::OperatorEntry {
                    index: o.index % WORKER_STRIDE,
                    ..o.clone()
                })
                .collect();
            let mine = m
                .operators
                .iter()
                .filter_map(|o| {
                    operators
                        .remove(&(group * WORKER_STRIDE + o.index))
                        .map(|s| (o.index, s))
                })
                .collect();
            Recovered {
                manifest: m,
                operators: mine,
            }
        };
        checkpoint::restore_operators(&mut self.stage, part(0))?;
        for (w, worker) in self.workers.iter().enumerate() {
            worker.send(Command::Restore(Box::new(part(w + 1))))?;
        }
        for worker in &self.workers {
            worker.reply()?;
        }
        Ok(())
    }
}

impl Drop for ParallelPipeline {
    fn drop(&mut self) {
        for mut w in std::mem::take(&mut self.workers) {
            drop(w.commands);
            while w.replies.recv().is_ok() {}
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}
