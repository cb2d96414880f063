//! Loading and running an application: parse and plan the `.sql` file,
//! open each statement's connectors, wire statements that read each
//! other's output through in-process channels, and run every statement as
//! a job on its own thread.
//!
//! - this module: the options of a run, loading and planning, `check`;
//! - [`wiring`]: building the jobs (connectors, in-process channels, the
//!   parallelism decision);
//! - [`join_tables`]: where a join's table comes from;
//! - [`run`]: one thread per job.

mod join_tables;
mod run;
mod wiring;

pub use run::run_jobs;
pub use wiring::Repartition;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use velostream_connectors::in_process::ChannelSource;
use velostream_connectors::{Connectors, Guarantee, Sandbox};
use velostream_engine::checkpoint::CheckpointSettings;
use velostream_engine::connector::LookupCache;
use velostream_engine::{EngineError, ErrorKind, JobMetrics, PipelineBuilder};
use velostream_sql::{
    parse_application, ApplicationPlanner, ErrorPolicy, PropertyOverrides, SourceOrigin, SqlError,
    StreamingPlan,
};

use velostream_connectors::kafka::KafkaDefaults;
use velostream_connectors::postgres::connection::DatabaseDefaults;

/// Why an application could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// An SQL error, already rendered with the file name and a snippet.
    #[error("{rendered}")]
    Sql { rendered: String, error: SqlError },
    #[error("job {job}: {source}")]
    Job { job: String, source: EngineError },
}

impl AppError {
    /// What kind of failure this is: an SQL error is the application's
    /// own and fails the same way every time, unless it says a source's
    /// server could not be reached to read its columns.
    pub fn kind(&self) -> ErrorKind {
        match self {
            AppError::Read { .. } => ErrorKind::Unavailable,
            AppError::Sql { error, .. } if error.transient => ErrorKind::Unavailable,
            AppError::Sql { .. } => ErrorKind::Configuration,
            AppError::Job { source, .. } => source.kind(),
        }
    }
}

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub batch_size: usize,
    pub overrides: PropertyOverrides,
    /// Kafka client settings from the configuration (`velostream.kafka`).
    pub kafka: KafkaDefaults,
    /// Checkpoint every job this way (`None`: no checkpoints).
    pub checkpoints: Option<CheckpointSettings>,
    /// What sinks promise across crashes.
    pub guarantee: Guarantee,
    /// Pipelines per job (`processing.parallelism`); jobs whose plan cannot
    /// be divided run on one.
    pub parallelism: usize,
    /// PostgreSQL connection settings (`velostream.database`, or `DB_*`).
    pub database: DatabaseDefaults,
    /// How joins cache rows looked up in PostgreSQL (`performance.cache`).
    pub lookup_cache: LookupCache,
    /// Where files may be opened (`None`: anywhere, as in `velostream run`).
    pub sandbox: Option<Arc<Sandbox>>,
    /// `processing.error_policy`: for statements without `'error.policy'`.
    pub error_policy: Option<ErrorPolicy>,
    /// File sinks without `'append'` append (the service: restarts keep output).
    pub append_by_default: bool,
    /// Threads decoding each file source (`processing.parallelism` or
    /// `--parallelism` when given; `None`: one per core of the machine).
    pub decode_threads: Option<usize>,
    /// Bytes a file source reads and decodes at a time (`None`: 1 MiB);
    /// small chunks let tests exercise many threads on small inputs.
    pub decode_chunk_bytes: Option<usize>,
    /// Standby copies per partition of a repartitioned statement's state
    /// (`processing.standby_replicas`).
    pub standby_replicas: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            batch_size: 1000,
            overrides: PropertyOverrides::new(),
            kafka: KafkaDefaults::default(),
            checkpoints: None,
            guarantee: Guarantee::AtLeastOnce,
            parallelism: 1,
            database: DatabaseDefaults::default(),
            lookup_cache: LookupCache::default(),
            sandbox: None,
            error_policy: None,
            append_by_default: false,
            decode_threads: None,
            decode_chunk_bytes: None,
            standby_replicas: 0,
        }
    }
}

/// Decoding threads of a file source when nothing says otherwise: one per
/// core, so a bounded file is read with the whole machine.
fn default_decode_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// A parsed and planned application.
pub struct Application {
    pub path: PathBuf,
    pub plans: Vec<StreamingPlan>,
    connectors: Arc<Connectors>,
    error_policy: Option<ErrorPolicy>,
    checkpoints: Option<CheckpointSettings>,
    parallelism: usize,
}

impl Application {
    /// Reads and plans `path`; relative connector paths resolve against its directory.
    pub fn load(path: &Path, options: &RunOptions) -> Result<Self, AppError> {
        let text = std::fs::read_to_string(path).map_err(|source| AppError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::from_text(&path.display().to_string(), &text, &base_dir, options)
    }

    /// Plans SQL text; `name` labels error messages.
    pub fn from_text(
        name: &str,
        text: &str,
        base_dir: &Path,
        options: &RunOptions,
    ) -> Result<Self, AppError> {
        let render = |error: SqlError| AppError::Sql {
            rendered: error.render(name, text),
            error,
        };
        let mut connectors = Connectors::new(base_dir, options.batch_size);
        connectors.kafka = options.kafka.clone();
        connectors.guarantee = options.guarantee;
        connectors.database = options.database.clone();
        connectors.lookup_cache = options.lookup_cache;
        connectors.sandbox = options.sandbox.clone();
        connectors.append_by_default = options.append_by_default;
        connectors.standby_replicas = options.standby_replicas;
        connectors.decode_threads = options
            .decode_threads
            .unwrap_or_else(default_decode_threads)
            .max(1);
        if let Some(bytes) = options.decode_chunk_bytes {
            connectors.decode_chunk_bytes = bytes.max(1);
        }
        let connectors = Arc::new(connectors);
        let statements = parse_application(text).map_err(render)?;
        let plans = ApplicationPlanner::new(connectors.as_ref())
            .with_overrides(options.overrides.clone())
            .plan(&statements)
            .map_err(render)?;
        if plans.is_empty() {
            return Err(render(
                SqlError::new("the application has no query to run", Default::default())
                    .with_hint("add CREATE STREAM name AS SELECT ... or a SELECT statement"),
            ));
        }
        Ok(Self {
            path: PathBuf::from(name),
            plans,
            connectors,
            error_policy: options.error_policy,
            checkpoints: options.checkpoints.clone(),
            parallelism: options.parallelism.max(1),
        })
    }

    /// Whether each plan's input ends by itself (files, stdin, or statements that do).
    fn boundedness(&self) -> Vec<bool> {
        let mut bounded: HashMap<usize, bool> = HashMap::new();
        for plan in &self.plans {
            let b = plan.sources.iter().all(|s| match s.origin {
                SourceOrigin::External => !s.traits.unbounded,
                SourceOrigin::Statement(i) => bounded.get(&i).copied().unwrap_or(true),
            });
            bounded.insert(plan.statement, b);
        }
        self.plans.iter().map(|p| bounded[&p.statement]).collect()
    }

    /// A pipeline builder that loads the plan's join tables through our connectors.
    fn builder(
        &self,
        plan: &StreamingPlan,
        streams: Option<HashMap<String, ChannelSource>>,
    ) -> PipelineBuilder {
        PipelineBuilder::new()
            .with_error_policy(self.error_policy)
            .with_table_loader(Arc::new(join_tables::JoinTables {
                connectors: self.connectors.clone(),
                sources: plan.sources.clone(),
                streams: streams.map(Mutex::new),
            }))
    }

    /// Builds every job without running it: checks connectors, properties
    /// and that every operator can run. This is `validate`.
    pub fn check(&self) -> Result<(), AppError> {
        self.check_single_stdin_reader()?;
        self.check_aggregated_tables()?;
        for (plan, bounded) in self.plans.iter().zip(self.boundedness()) {
            let job_err = |source| AppError::Job {
                job: plan.name.clone(),
                source,
            };
            for source in plan
                .sources
                .iter()
                .filter(|s| s.origin == SourceOrigin::External)
            {
                self.connectors.check_source(source).map_err(job_err)?;
            }
            self.builder(plan, None)
                .build(plan, bounded, Arc::new(JobMetrics::default()))
                .map_err(job_err)?;
            self.connectors.check_sink(&plan.sink).map_err(job_err)?;
            if let Some(dead_letter) = &plan.dead_letter {
                self.connectors.check_sink(dead_letter).map_err(job_err)?;
            }
        }
        Ok(())
    }

    /// An aggregation over a table read as it changes would count every
    /// version of a row: that needs changelog semantics (retracting a
    /// row's earlier version), which the aggregates do not have. A bounded
    /// table is read whole first (its latest row per key), which is exact.
    fn check_aggregated_tables(&self) -> Result<(), AppError> {
        let bounded = self.boundedness();
        for (at, plan) in self
            .plans
            .iter()
            .enumerate()
            .filter(|(_, p)| p.aggregates())
        {
            let Some(first) = plan.sources.first() else {
                continue;
            };
            if first.origin == SourceOrigin::External
                && !first.table_key.is_empty()
                && !(bounded[at] || first.ends())
            {
                return Err(AppError::Job {
                    job: plan.name.clone(),
                    source: EngineError::Plan(format!(
                        "it aggregates table {}, whose rows change as their keys update; aggregating an updating table needs changelog semantics (retracting a row's earlier version), which Velostream does not have yet — declare {} with CREATE STREAM to aggregate every record, join it as a table, or read it bounded ('bounded' = 'true')",
                        first.name, first.name
                    )),
                });
            }
            let SourceOrigin::Statement(up) = first.origin else {
                continue;
            };
            let Some(at) = self.plans.iter().position(|p| p.statement == up) else {
                continue;
            };
            let table = &self.plans[at];
            let read_whole = bounded[at] && !table.key.is_empty();
            if table.updates_rows() && !read_whole {
                return Err(AppError::Job {
                    job: plan.name.clone(),
                    source: EngineError::Plan(format!(
                        "it aggregates the rows of table {}, which change as their keys update; aggregating an updating result needs changelog semantics (retracting a row's earlier version), which Velostream does not have yet — window the inner aggregation (WINDOW TUMBLING(...) or TABLE(TUMBLE(...))) so its rows are final, or read a bounded input",
                        table.name
                    )),
                });
            }
        }
        Ok(())
    }

    /// Standard input can be consumed once: two jobs reading it would each
    /// see an arbitrary half of the records.
    fn check_single_stdin_reader(&self) -> Result<(), AppError> {
        let readers: Vec<&StreamingPlan> = self
            .plans
            .iter()
            .filter(|p| {
                p.sources
                    .iter()
                    .any(|s| s.origin == SourceOrigin::External && s.traits.single_reader)
            })
            .collect();
        match readers.as_slice() {
            [_, second, ..] => Err(AppError::Job {
                job: second.name.clone(),
                source: EngineError::Plan(format!(
                    "standard input is already read by job {}; read it in one CREATE STREAM statement and let the others read that stream",
                    readers[0].name
                )),
            }),
            _ => Ok(()),
        }
    }
}
