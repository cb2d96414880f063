//! Building an application's jobs: each statement's connectors opened,
//! statements that read each other's output wired through in-process
//! channels, and the parallelism decision (which plans run in several
//! pipelines, divided how).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};

use velostream_connectors::in_process::{stream_channel, ChannelSource, LatestPerKeySource};
use velostream_engine::execution::Execution;
use velostream_engine::parallel::{self, ParallelPipeline, Partitioning};
use velostream_engine::partitioned::PartitionedPipeline;
use velostream_engine::{EngineError, Job, JobMetrics, Sink, Source};
use velostream_sql::{SourceBinding, SourceOrigin, StatementKind, StreamNode, StreamingPlan};

use velostream_connectors::fanout::FanoutSink;

use velostream_connectors::kafka::repartition;

use super::{AppError, Application};

/// A statement's repartition step: the key columns hashed and the topic.
#[derive(Debug, Clone)]
pub struct Repartition {
    pub keys: Vec<String>,
    pub topic: String,
}

impl Application {
    /// Opens all connectors and builds the jobs, in statement order.
    pub fn build_jobs(&self) -> Result<Vec<Job>, AppError> {
        self.check_single_stdin_reader()?;
        self.check_aggregated_tables()?;
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
                    let table = LatestPerKeySource::new(
                        Box::new(source),
                        key,
                        scan_schema_of(&self.plans[*c], name),
                    )
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
            let repartitioned = self.repartition(plan).map_err(job_err)?;
            let pipeline: Execution = match self.partitioning(plan, in_process) {
                _ if repartitioned.is_some() => {
                    if self.parallelism > 1 {
                        tracing::info!(
                            component = "job",
                            "job {} runs one pipeline per repartition partition it owns, on one thread ({} asked for)",
                            plan.name,
                            self.parallelism
                        );
                    }
                    let builder = self.builder(plan, None);
                    let (plan, bounded, metrics) = (plan.clone(), bounded[i], metrics.clone());
                    PartitionedPipeline::new(
                        &plan.name.clone(),
                        Box::new(move || builder.build(&plan, bounded, metrics.clone())),
                    )
                    .map_err(job_err)?
                    .into()
                }
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
                    if !binding.table_key.is_empty() && (bounded[i] || binding.ends()) {
                        self.declared_table(&binding, scan_schema(plan), &metrics)
                            .map_err(job_err)?
                    } else if let Some(step) = &repartitioned {
                        self.connectors
                            .open_repartitioned_source(
                                &binding,
                                scan_schema(plan),
                                metrics.clone(),
                                &step.keys,
                                &plan.name,
                            )
                            .map_err(job_err)?
                    } else {
                        self.connectors
                            .open_source(&binding, scan_schema(plan), metrics.clone())
                            .map_err(job_err)?
                    }
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

    /// How `plan` divides its input among the processes sharing its source
    /// (`'scale_out' = 'true'`): `None` when it need not (the source is not
    /// shared, or the statement keeps no keyed state).
    pub fn repartition(&self, plan: &StreamingPlan) -> Result<Option<Repartition>, EngineError> {
        let Some(binding) = plan.sources.first() else {
            return Ok(None);
        };
        if binding.origin != SourceOrigin::External || !repartition::is_scaled_out(binding) {
            return Ok(None);
        }
        match parallel::partitioning(plan) {
            Ok(Partitioning::Rows) => Ok(None),
            Ok(Partitioning::Keys(keys)) => {
                let binding = self.as_read_by(binding, plan);
                Ok(Some(Repartition {
                    topic: repartition::topic_name(&binding, &plan.name, &self.connectors.kafka)?,
                    keys,
                }))
            }
            Err(why) => Err(EngineError::NotSupported(format!(
                "source '{}' is shared by several processes ('scale_out'), but this statement cannot be divided among them: {why}",
                binding.name
            ))),
        }
    }

    /// Source `binding` as `plan` reads it: a source several statements
    /// read may be read differently by each (a Kafka consumer group each).
    /// A bounded source declared as a table, read by a query as its latest
    /// row per key: its key columns are decoded too, then left out.
    fn declared_table(
        &self,
        binding: &SourceBinding,
        scan: SchemaRef,
        metrics: &Arc<JobMetrics>,
    ) -> Result<Box<dyn Source>, EngineError> {
        let mut fields: Vec<_> = scan.fields().iter().cloned().collect();
        for k in &binding.table_key {
            if scan.field_with_name(k).is_err() {
                fields.push(Arc::new(binding.schema.field_with_name(k)?.clone()));
            }
        }
        let decoded = Arc::new(Schema::new(fields));
        let source = self
            .connectors
            .open_source(binding, decoded.clone(), metrics.clone())?;
        let key = binding
            .table_key
            .iter()
            .map(|k| decoded.index_of(k))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Box::new(LatestPerKeySource::new(source, key, scan)?))
    }

    fn as_read_by(&self, binding: &SourceBinding, plan: &StreamingPlan) -> SourceBinding {
        let readers = self
            .plans
            .iter()
            .filter(|p| p.sources.iter().any(|b| b.name == binding.name))
            .count();
        velostream_connectors::factory::for_reader(binding, &plan.name, readers)
    }
}
