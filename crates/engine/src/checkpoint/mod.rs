//! Consistent checkpoints of a job and recovery from them.
//!
//! A job is single-threaded, so a batch boundary is a consistent point: the
//! operator state holds exactly the records its source returned so far. A
//! checkpoint captures, at such a point, the sink's pre-commit state, every
//! stateful operator's snapshot (watermarks included: they live in the
//! event-time operator's state) and the source position, and writes them
//! as one immutable directory ([`store`]). Only after that directory is
//! durable does the job let the sink publish what it staged and the source
//! commit its position (Kafka offsets) — so the group's committed offsets
//! never run ahead of a checkpoint.
//!
//! On start a job restores the newest checkpoint that verifies, seeks its
//! source there and lets the sink drop anything written after it. A
//! damaged checkpoint is skipped with a log line naming the problem and the
//! one before it is used.

pub mod backend;
pub mod lock;
pub mod manifest;
pub mod store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use backend::BackendKind;
use backend::StateBackend;
use manifest::{Manifest, OperatorEntry};
use store::CheckpointStore;

use crate::connector::Position;
use crate::error::{EngineError, Result};
use crate::state::OperatorSnapshot;
use crate::watermark::wall_clock_ms;

/// How a job checkpoints (from `processing.*` or the command line).
#[derive(Debug, Clone)]
pub struct CheckpointSettings {
    /// The state directory; each job keeps its checkpoints in `<state_dir>/<job>`.
    pub state_dir: PathBuf,
    /// Time between checkpoints.
    pub interval: Duration,
    /// Complete checkpoints kept per job (at least two are kept).
    pub retain: usize,
    pub backend: BackendKind,
    /// Set aside existing checkpoints and start with empty state.
    pub fresh: bool,
    /// Restore this checkpoint instead of the newest (point-in-time
    /// restore); newer ones are set aside.
    pub restore_from: Option<u64>,
}

impl CheckpointSettings {
    pub fn new(state_dir: impl Into<PathBuf>, interval: Duration) -> Self {
        Self {
            state_dir: state_dir.into(),
            interval,
            retain: 3,
            backend: BackendKind::Memory,
            fresh: false,
            restore_from: None,
        }
    }

    /// Where job `job` keeps its state.
    pub fn job_dir(&self, job: &str) -> PathBuf {
        self.state_dir.join(job)
    }
}

/// What a job captured at a consistent point.
pub struct Captured {
    /// `(pipeline index, operator name, snapshot)` of each stateful operator.
    pub operators: Vec<(usize, &'static str, OperatorSnapshot)>,
    pub source: Option<Position>,
    pub sink: Option<Position>,
    pub dead_letter_sink: Option<Position>,
    pub records_in: u64,
}

/// A checkpoint read back for recovery.
pub struct Recovered {
    pub manifest: Manifest,
    pub operators: BTreeMap<usize, OperatorSnapshot>,
}

/// A checkpoint just written.
#[derive(Debug, Clone, Copy)]
pub struct Taken {
    pub id: u64,
    pub duration: Duration,
    pub bytes: u64,
}

/// Takes and restores the checkpoints of one job.
pub struct Checkpointer {
    job: String,
    job_dir: PathBuf,
    /// Held while the job runs: no other job of this name uses `job_dir`.
    _lock: lock::JobLock,
    store: CheckpointStore,
    backend: Box<dyn StateBackend>,
    settings: CheckpointSettings,
    next_id: u64,
    last: Instant,
}

impl Checkpointer {
    pub fn open(job: &str, settings: &CheckpointSettings) -> Result<Self> {
        // the name is a directory under the state directory: it must stay there
        velostream_sql::names::check_path_name("job", job).map_err(EngineError::State)?;
        let job_dir = settings.job_dir(job);
        std::fs::create_dir_all(&job_dir)
            .map_err(|e| EngineError::State(format!("cannot create {}: {e}", job_dir.display())))?;
        let lock = lock::JobLock::acquire(&job_dir, job)?;
        if settings.fresh {
            set_aside(
                &job_dir,
                "checkpoints",
                "starting with empty state as asked",
            )?;
        }
        let store = CheckpointStore::open(&job_dir)?;
        if let Some(id) = settings.restore_from {
            for newer in store.ids()?.into_iter().filter(|n| *n > id) {
                set_aside(
                    store.root(),
                    &format!("chk-{newer:020}"),
                    &format!("restoring the earlier checkpoint {id}"),
                )?;
            }
        }
        let next_id = store.ids()?.last().map_or(1, |id| id + 1);
        let backend = backend::open(settings.backend, &job_dir)?;
        Ok(Self {
            _lock: lock,
            job: job.to_string(),
            job_dir,
            store,
            backend,
            settings: settings.clone(),
            next_id,
            last: Instant::now(),
        })
    }

    pub fn job_dir(&self) -> &Path {
        &self.job_dir
    }

    /// True when the interval has passed since the last checkpoint.
    pub fn due(&self) -> bool {
        self.last.elapsed() >= self.settings.interval
    }

    /// The checkpoint to recover from: the one asked for, or the newest
    /// that verifies (damaged ones are reported and skipped).
    pub fn recover(&mut self) -> Result<Option<Recovered>> {
        self.recover_where(|_| true)
    }

    /// Like [`recover`](Self::recover), but only a checkpoint whose
    /// manifest satisfies `matches` is restored; newer ones that do not
    /// are reported and skipped (none matching: start empty).
    pub fn recover_where(
        &mut self,
        matches: impl Fn(&Manifest) -> bool,
    ) -> Result<Option<Recovered>> {
        let ids = self.store.ids()?;
        if let Some(id) = self.settings.restore_from {
            if !ids.contains(&id) {
                return Err(EngineError::State(format!(
                    "job {}: there is no checkpoint {id} in {} (available: {ids:?})",
                    self.job,
                    self.store.root().display()
                )));
            }
            return self.read(id).map(Some);
        }
        let mut unmatched = 0;
        for &id in ids.iter().rev() {
            match self.read(id) {
                Ok(recovered) if matches(&recovered.manifest) => return Ok(Some(recovered)),
                Ok(_) => {
                    unmatched += 1;
                    tracing::warn!(
                        component = "checkpoint",
                        "job {}: checkpoint {id} is complete but its output was never committed (the job stopped between the two); using the one before it",
                        self.job
                    );
                }
                Err(e) => tracing::error!(
                    component = "checkpoint",
                    error_type = "damaged_checkpoint",
                    "job {}: checkpoint {id} is unusable, trying the one before it: {e}",
                    self.job
                ),
            }
        }
        if unmatched > 0 {
            return Ok(None); // no committed output yet: start from the beginning
        }
        if !ids.is_empty() {
            return Err(EngineError::State(format!(
                "job {}: none of the checkpoints in {} is usable; start with empty state explicitly (--fresh-state) to discard them",
                self.job,
                self.store.root().display()
            )));
        }
        Ok(None)
    }

    fn read(&self, id: u64) -> Result<Recovered> {
        let manifest = self.store.verify(id)?;
        if manifest.backend != self.backend.kind().name() {
            return Err(EngineError::State(format!(
                "checkpoint {id} was written by the {} state backend, but the job uses {}",
                manifest.backend,
                self.backend.kind().name()
            )));
        }
        let operators = self.backend.read(&self.store.dir(id))?;
        Ok(Recovered {
            manifest,
            operators,
        })
    }

    /// Writes `captured` as the next checkpoint and prunes old ones.
    pub fn write(&mut self, captured: Captured) -> Result<Taken> {
        let started = Instant::now();
        let id = self.next_id;
        let tmp = self.store.begin(id)?;
        let operators = captured
            .operators
            .iter()
            .map(|(index, name, snapshot)| OperatorEntry {
                index: *index,
                name: name.to_string(),
                state_columns: state_columns(snapshot),
            })
            .collect();
        let snapshots: Vec<(usize, OperatorSnapshot)> = captured
            .operators
            .into_iter()
            .map(|(index, _, snapshot)| (index, snapshot))
            .collect();
        let files = self.backend.write(&tmp, &snapshots)?;
        let manifest = Manifest {
            format: manifest::FORMAT,
            id,
            job: self.job.clone(),
            created_at_ms: wall_clock_ms(),
            backend: self.backend.kind().name().to_string(),
            operators,
            source: captured.source,
            sink: captured.sink,
            dead_letter_sink: captured.dead_letter_sink,
            records_in: captured.records_in,
            files: Vec::new(),
        };
        let bytes = self.store.seal(&tmp, manifest, &files)?;
        self.next_id += 1;
        self.last = Instant::now();
        // two at least: a sink committing with the source position may
        // need the one before the newest (see `recover_where`)
        self.store.prune(self.settings.retain.max(2))?;
        Ok(Taken {
            id,
            duration: started.elapsed(),
            bytes,
        })
    }
}

/// `name: type` of each column of a snapshot, as the manifest records them.
pub fn state_columns(snapshot: &OperatorSnapshot) -> Vec<String> {
    snapshot
        .schema
        .fields()
        .iter()
        .map(|f| format!("{}: {}", f.name(), f.data_type()))
        .collect()
}

/// Moves `parent/name` into `parent/discarded/` (nothing is deleted: an
/// operator can still copy it back); returns where it went, if it existed.
pub fn set_aside(parent: &Path, name: &str, why: &str) -> Result<Option<PathBuf>> {
    let from = parent.join(name);
    if !from.exists() {
        return Ok(None);
    }
    let stamp = wall_clock_ms();
    let to_dir = parent.join("discarded");
    std::fs::create_dir_all(&to_dir)?;
    let to = to_dir.join(format!("{name}-{stamp}"));
    std::fs::rename(&from, &to)?;
    tracing::warn!(
        component = "checkpoint",
        "{}: set aside as {} ({why})",
        from.display(),
        to.display()
    );
    Ok(Some(to))
}

/// Snapshots every stateful operator of `pipeline`.
pub fn capture_operators(
    pipeline: &mut crate::operators::Pipeline,
) -> Result<Vec<(usize, &'static str, OperatorSnapshot)>> {
    let mut out = Vec::new();
    for (index, op) in pipeline.operators_mut().iter_mut().enumerate() {
        let name = op.name();
        if let Some(state) = op.state() {
            out.push((index, name, state.snapshot()?));
        }
    }
    Ok(out)
}

/// Restores a checkpoint's operator state into a freshly built `pipeline`,
/// after checking the pipeline still has the same stateful operators with
/// the same state columns (a query changed incompatibly does not).
pub fn restore_operators(
    pipeline: &mut crate::operators::Pipeline,
    recovered: Recovered,
) -> Result<()> {
    let Recovered {
        manifest,
        mut operators,
    } = recovered;
    let mut current = Vec::new();
    for (index, op) in pipeline.operators_mut().iter_mut().enumerate() {
        let name = op.name();
        if let Some(state) = op.state() {
            current.push(OperatorEntry {
                index,
                name: name.to_string(),
                state_columns: state_columns(&state.snapshot()?),
            });
        }
    }
    if current != manifest.operators {
        let describe = |ops: &[OperatorEntry]| {
            ops.iter()
                .map(|o| format!("#{} {} ({})", o.index, o.name, o.state_columns.join(", ")))
                .collect::<Vec<_>>()
                .join("; ")
        };
        return Err(EngineError::State(format!(
            "job {}: the query changed since checkpoint {} was taken and its state no longer fits.\n  checkpoint: {}\n  query now:  {}\n  hint: run with --fresh-state (or `velostream state reset`) to set the old state aside and start empty; if only processing.parallelism changed, run with the parallelism the checkpoint was taken with",
            manifest.job,
            manifest.id,
            describe(&manifest.operators),
            describe(&current)
        )));
    }
    for (index, op) in pipeline.operators_mut().iter_mut().enumerate() {
        if let Some(state) = op.state() {
            let snapshot = operators.remove(&index).ok_or_else(|| {
                EngineError::State(format!(
                    "checkpoint {} has no state for operator #{index}",
                    manifest.id
                ))
            })?;
            state.restore(snapshot)?;
        }
    }
    Ok(())
}
