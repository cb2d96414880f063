//! Loading and running an application: parse and plan the `.sql` file,
//! open each statement's connectors, wire statements that read each
//! other's output through in-process channels, and run every statement as
//! a job on its own thread.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;

use datafusion::arrow::datatypes::SchemaRef;
use velostream_connectors::in_process::{stream_channel, ChannelSource, LatestPerKeySource};
use velostream_connectors::{Connectors, Guarantee, Sandbox};
use velostream_engine::checkpoint::CheckpointSettings;
use velostream_engine::connector::{LookupCache, TableData, TableLoader};
use velostream_engine::execution::Execution;
use velostream_engine::parallel::{self, ParallelPipeline, Partitioning};
use velostream_engine::{
    EngineError, ErrorKind, Job, JobMetrics, JobSummary, PipelineBuilder, Sink, Source, SourceEvent,
};
use velostream_sql::{
    parse_application, ApplicationPlanner, ErrorPolicy, PropertyOverrides, SourceBinding,
    SourceOrigin, SqlError, StatementKind, StreamNode, StreamingPlan,
};

use velostream_connectors::fanout::FanoutSink;
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
    /// own and fails the same way every time.
    pub fn kind(&self) -> ErrorKind {
        match self {
            AppError::Read { .. } => ErrorKind::Unavailable,
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
            database: DatabaseDefaults::from_env(),
            lookup_cache: LookupCache::default(),
            sandbox: None,
            error_policy: None,
            append_by_default: false,
        }
    }
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
            .with_table_loader(Arc::new(JoinTables {
                connectors: self.connectors.clone(),
                sources: plan.sources.clone(),
                streams: streams.map(Mutex::new),
            }))
    }

    /// Builds every job without running it: checks connectors, properties
    /// and that every operator can run. This is `validate`.
    pub fn check(&self) -> Result<(), AppError> {
        self.check_single_stdin_reader()?;
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

    /// Opens all connectors and builds the jobs, in statement order.
    pub fn build_jobs(&self) -> Result<Vec<Job>, AppError> {
        self.check_single_stdin_reader()?;
        let bounded = self.boundedness();
        let position: HashMap<usize, usize> = self
            .plans
            .iter()
            .enumerate()
            .map(|(i, p)| (p.statement, i))
            .collect();

        // Readers of each statement's output: (reader plan, source name as the reader calls it).
        let mut readers: HashMap<usize, Vec<(usize, String)>> = HashMap::new();
        for (i, plan) in self.plans.iter().enumerate() {
            for s in &plan.sources {
                if let SourceOrigin::Statement(upstream) = s.origin {
                    readers
                        .entry(upstream)
                        .or_default()
                        .push((i, s.name.clone()));
                }
            }
        }
        let mut channel_sources: HashMap<(usize, String), ChannelSource> = HashMap::new();
        let mut channel_sinks: HashMap<usize, Box<dyn Sink>> = HashMap::new();
        // Statements reading a bounded CREATE TABLE result as their stream read
        // its latest row per key, not its updates.
        let mut table_sources: HashMap<(usize, String), Box<dyn Source>> = HashMap::new();
        for (upstream, consumers) in &readers {
            let up = &self.plans[position[upstream]];
            let reads_table = |c: usize, name: &str| {
                up.kind == StatementKind::CreateTable
                    && !up.key.is_empty()
                    && bounded[position[upstream]]
                    && self.plans[c]
                        .sources
                        .first()
                        .is_some_and(|s| s.name == name)
            };
            let specs: Vec<_> = consumers
                .iter()
                .map(|(c, name)| {
                    let schema = if reads_table(*c, name) {
                        up.output_schema.clone()
                    } else {
                        scan_schema_of(&self.plans[*c], name)
                    };
                    (schema, bounded[*c])
                })
                .collect();
            let (sink, sources) =
                stream_channel(&up.output_schema, &specs).map_err(|source| AppError::Job {
                    job: up.name.clone(),
                    source,
                })?;
            channel_sinks.insert(*upstream, Box::new(sink));
            for ((c, name), source) in consumers.iter().zip(sources) {
                if reads_table(*c, name) {
                    let job_err = |source| AppError::Job {
                        job: self.plans[*c].name.clone(),
                        source,
                    };
                    let key = up
                        .key
                        .iter()
                        .map(|k| up.output_schema.index_of(k))
                        .collect::<std::result::Result<Vec<_>, _>>()
                        .map_err(|e| job_err(e.into()))?;
                    let table =
                        LatestPerKeySource::new(source, key, scan_schema_of(&self.plans[*c], name))
                            .map_err(job_err)?;
                    table_sources.insert((*c, name.clone()), Box::new(table));
                } else {
                    channel_sources.insert((*c, name.clone()), source);
                }
            }
        }

        let mut jobs = Vec::new();
        for (i, plan) in self.plans.iter().enumerate() {
            let job_err = |source| AppError::Job {
                job: plan.name.clone(),
                source,
            };
            let metrics = Arc::new(JobMetrics::default());
            // join tables that are other statements' outputs
            let tables: HashMap<String, ChannelSource> = plan
                .sources
                .iter()
                .skip(1)
                .filter_map(|b| {
                    channel_sources
                        .remove(&(i, b.name.clone()))
                        .map(|c| (b.name.clone(), c))
                })
                .collect();
            // statements connected in process keep one thread each: their
            // results' timing feeds the tables of the statements after them
            let in_process = !tables.is_empty()
                || readers.contains_key(&plan.statement)
                || plan
                    .sources
                    .iter()
                    .any(|s| matches!(s.origin, SourceOrigin::Statement(_)));
            let pipeline: Execution = match self.partitioning(plan, in_process) {
                Some(partitioning) => {
                    let pipelines = (0..self.parallelism)
                        .map(|_| {
                            self.builder(plan, None)
                                .build(plan, bounded[i], metrics.clone())
                        })
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(job_err)?;
                    ParallelPipeline::new(&plan.name, pipelines, &partitioning)
                        .map_err(job_err)?
                        .into()
                }
                None => self
                    .builder(plan, Some(tables))
                    .build(plan, bounded[i], metrics.clone())
                    .map_err(job_err)?
                    .into(),
            };
            let stream = plan
                .sources
                .first()
                .map(|b| b.name.clone())
                .unwrap_or_default();
            let source: Box<dyn Source> = match (
                table_sources.remove(&(i, stream.clone())),
                channel_sources.remove(&(i, stream)),
            ) {
                (Some(table), _) => table,
                (None, Some(s)) => Box::new(s),
                (None, None) => {
                    let binding = plan.sources.first().ok_or_else(|| {
                        job_err(EngineError::Plan("the query reads no source".into()))
                    })?;
                    let binding = self.as_read_by(binding, plan);
                    self.connectors
                        .open_source(&binding, scan_schema(plan), metrics.clone())
                        .map_err(job_err)?
                }
            };
            let downstream = channel_sinks.remove(&plan.statement);
            let has_sink_config = plan.sink.properties.contains_key("type");
            let sink: Box<dyn Sink> = match (downstream, has_sink_config) {
                (Some(channel), false) => channel,
                (Some(channel), true) => Box::new(FanoutSink::new(vec![
                    channel,
                    self.connectors
                        .open_sink(&plan.sink, &plan.key)
                        .map_err(job_err)?,
                ])),
                (None, _) => self
                    .connectors
                    .open_sink(&plan.sink, &plan.key)
                    .map_err(job_err)?,
            };
            let mut job = Job::new(plan.name.clone(), source, pipeline, sink, metrics);
            if let Some(dead_letter) = &plan.dead_letter {
                job = job.with_dead_letter_sink(
                    self.connectors
                        .open_dead_letter_sink(dead_letter)
                        .map_err(job_err)?,
                );
            }
            if let Some(settings) = &self.checkpoints {
                if !readers.is_empty() {
                    return Err(job_err(EngineError::NotSupported(
                        "checkpoints cover applications whose statements read external sources; here statements read each other's output in process, which a checkpoint cannot capture yet — write the intermediate result to a Kafka topic, or run without checkpoints".into(),
                    )));
                }
                job = job.with_checkpoints(settings).map_err(job_err)?;
            } else if plan.holds_records() {
                job = job.holding_records();
                if !bounded[i] {
                    tracing::warn!(
                        component = "engine",
                        job = %plan.name,
                        "job {} keeps records in windows or aggregates and takes no checkpoints: its source positions are committed only when its input ends, so a restart reads again from the last commit; set processing.checkpoint_interval (or run --checkpoint-interval) to resume where it was",
                        plan.name
                    );
                }
            }
            jobs.push(job);
        }
        Ok(jobs)
    }
}

/// The columns a plan decodes from its source `name` (the stream or a join table).
fn scan_schema_of(plan: &StreamingPlan, name: &str) -> datafusion::arrow::datatypes::SchemaRef {
    fn find(node: &StreamNode, name: &str) -> Option<datafusion::arrow::datatypes::SchemaRef> {
        node.flow().into_iter().find_map(|n| match n {
            StreamNode::Scan { source, schema } if source == name => Some(schema.clone()),
            StreamNode::LookupJoin { table, .. } => find(table, name),
            _ => None,
        })
    }
    find(&plan.root, name).unwrap_or_else(|| plan.output_schema.clone())
}

/// The columns a plan decodes from its (single) source.
fn scan_schema(plan: &StreamingPlan) -> datafusion::arrow::datatypes::SchemaRef {
    match plan.root.flow().first() {
        Some(StreamNode::Scan { schema, .. }) => schema.clone(),
        _ => plan.output_schema.clone(),
    }
}

impl Application {
    /// How `plan`'s rows are divided among `parallelism` pipelines, or
    /// `None` to run it on one (logged with the reason).
    fn partitioning(&self, plan: &StreamingPlan, in_process: bool) -> Option<Partitioning> {
        if self.parallelism <= 1 {
            return None;
        }
        let why = if in_process {
            "it reads or feeds another statement of the application in process".to_string()
        } else {
            match parallel::partitioning(plan) {
                Ok(p) => return Some(p),
                Err(why) => why,
            }
        };
        tracing::info!(
            component = "job",
            "job {} runs on one thread ({} asked for): {why}",
            plan.name,
            self.parallelism
        );
        None
    }

    /// Source `binding` as `plan` reads it: a source several statements
    /// read may be read differently by each (a Kafka consumer group each).
    fn as_read_by(&self, binding: &SourceBinding, plan: &StreamingPlan) -> SourceBinding {
        let readers = self
            .plans
            .iter()
            .filter(|p| p.sources.iter().any(|b| b.name == binding.name))
            .count();
        velostream_connectors::factory::for_reader(binding, &plan.name, readers)
    }
}

/// Runs jobs concurrently, one thread each, and waits for all of them.
/// The first error is returned after every job has stopped.
pub fn run_jobs(jobs: Vec<Job>) -> Result<Vec<JobSummary>, AppError> {
    let handles: Vec<_> = jobs
        .into_iter()
        .map(|job| {
            let name = job.name.clone();
            let handle = thread::Builder::new()
                .name(format!("job-{name}"))
                .spawn(move || job.run())
                .expect("spawn job thread");
            (name, handle)
        })
        .collect();
    let mut summaries = Vec::new();
    let mut first_error = None;
    for (name, handle) in handles {
        match handle.join() {
            Ok(Ok(summary)) => summaries.push(summary),
            Ok(Err(source)) => {
                first_error.get_or_insert(AppError::Job { job: name, source });
            }
            Err(_) => {
                first_error.get_or_insert(AppError::Job {
                    job: name,
                    source: EngineError::Plan("the job thread panicked".into()),
                });
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(summaries),
    }
}

/// Loads the table side of stream–table joins from the application's sources.
struct JoinTables {
    connectors: Arc<Connectors>,
    sources: Vec<SourceBinding>,
    /// Channels from the statements whose outputs are join tables; `None`
    /// when only validating (upstream statements do not run).
    streams: Option<Mutex<HashMap<String, ChannelSource>>>,
}

impl JoinTables {
    fn binding(&self, name: &str) -> velostream_engine::Result<&SourceBinding> {
        self.sources.iter().find(|s| s.name == name).ok_or_else(|| {
            EngineError::Plan(format!("join input '{name}' is not a source of the query"))
        })
    }

    /// The channel from the statement whose output `name` is (taken once).
    fn take_stream(
        &self,
        streams: &Mutex<HashMap<String, ChannelSource>>,
        name: &str,
    ) -> velostream_engine::Result<ChannelSource> {
        streams
            .lock()
            .ok()
            .and_then(|mut s| s.remove(name))
            .ok_or_else(|| {
                EngineError::Plan(format!("no stream connected for join input '{name}'"))
            })
    }
}

impl TableLoader for JoinTables {
    fn open(
        &self,
        name: &str,
        schema: SchemaRef,
        metrics: Arc<JobMetrics>,
    ) -> velostream_engine::Result<Box<dyn Source>> {
        let binding = self.binding(name)?;
        if binding.origin == SourceOrigin::External {
            return self.connectors.open_source(binding, schema, metrics);
        }
        match &self.streams {
            // validating: nothing runs, an empty stream will do
            None => Ok(Box::new(EmptySource(schema))),
            Some(streams) => Ok(Box::new(self.take_stream(streams, name)?)),
        }
    }

    fn load(
        &self,
        name: &str,
        schema: SchemaRef,
        metrics: Arc<JobMetrics>,
    ) -> velostream_engine::Result<TableData> {
        let binding = self.binding(name)?;
        if binding.origin != SourceOrigin::External {
            let Some(streams) = &self.streams else {
                return Ok(TableData::Rows(Vec::new())); // validating: nothing runs
            };
            return Ok(TableData::Stream(Box::new(
                self.take_stream(streams, name)?,
            )));
        }
        if let Some(lookup) =
            self.connectors
                .open_lookup(binding, schema.clone(), metrics.clone())?
        {
            // a database table: looked up by key as batches need it
            return Ok(TableData::Lookup {
                lookup,
                cache: self.connectors.lookup_cache,
            });
        }
        let mut source = self
            .connectors
            .open_table_source(binding, schema, metrics)?;
        if !source.is_bounded() {
            // a changing table: the join applies its updates as they arrive
            return Ok(TableData::Stream(source));
        }
        let mut rows = Vec::new();
        loop {
            match source.poll_batch()? {
                SourceEvent::Batch(b) => rows.push(b),
                SourceEvent::Idle | SourceEvent::Deletes(_) => {}
                SourceEvent::End => return Ok(TableData::Rows(rows)),
            }
        }
    }
}

/// A source with nothing in it (validation builds pipelines without running statements).
struct EmptySource(SchemaRef);

impl Source for EmptySource {
    fn schema(&self) -> SchemaRef {
        self.0.clone()
    }

    fn poll_batch(&mut self) -> velostream_engine::Result<SourceEvent> {
        Ok(SourceEvent::End)
    }

    fn is_bounded(&self) -> bool {
        true
    }
}
