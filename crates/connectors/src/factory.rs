//! Creates sources and sinks from a statement's properties
//! (`'<name>.type'` and the keys of that connector), and infers the schema
//! of undeclared sources: each request is one lookup in the
//! [`registry`](crate::registry), with [`Connectors`] as the context every
//! connector shares. Relative paths resolve against the directory of the
//! application's `.sql` file.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use velostream_engine::connector::KeyLookup;
use velostream_engine::{ErrorKind, JobMetrics, Result, Sink, Source};
use velostream_sql::{InferError, SinkBinding, SourceBinding, SourceResolver, SourceTraits};

use crate::connector::{Connector, Role};
pub use crate::context::{Connectors, Guarantee};
use crate::registry;

impl Connectors {
    /// Opens the external source `binding`, decoding the columns of `projected`.
    pub fn open_source(
        &self,
        binding: &SourceBinding,
        projected: SchemaRef,
        metrics: Arc<JobMetrics>,
    ) -> Result<Box<dyn Source>> {
        source_connector(binding)?.open_source(self, binding, projected, metrics)
    }

    /// Opens Kafka source `binding` for statement `statement` that several
    /// processes share (`'scale_out' = 'true'`): its records pass through
    /// the statement's repartition topic, divided by the hash of `keys`
    /// (see [`crate::kafka::repartition`]).
    pub fn open_repartitioned_source(
        &self,
        binding: &SourceBinding,
        projected: SchemaRef,
        metrics: Arc<JobMetrics>,
        keys: &[String],
        statement: &str,
    ) -> Result<Box<dyn Source>> {
        let connector = source_connector(binding)?;
        if connector.name() != crate::types::KAFKA_SOURCE || !binding.table_key.is_empty() {
            return Err(velostream_engine::EngineError::NotSupported(format!(
                "source '{}': only a kafka_source stream repartitions ('scale_out')",
                binding.name
            )));
        }
        if self.guarantee == Guarantee::ExactlyOnce {
            return Err(velostream_engine::EngineError::NotSupported(format!(
                "source '{}': a repartitioned read ('scale_out') is at least once for now; run with processing.guarantee at_least_once",
                binding.name
            )));
        }
        crate::kafka::repartition::open(crate::kafka::repartition::RepartitionRequest {
            binding,
            projected,
            keys,
            statement,
            batch_size: self.batch_size,
            defaults: &self.kafka,
            metrics,
            standby_replicas: self.standby_replicas,
        })
    }

    /// Opens source `binding` as the table side of a join: a Kafka topic is
    /// read whole from its start and then kept up to date (tombstones
    /// delete); other sources open as they do for streams.
    pub fn open_table_source(
        &self,
        binding: &SourceBinding,
        projected: SchemaRef,
        metrics: Arc<JobMetrics>,
    ) -> Result<Box<dyn Source>> {
        source_connector(binding)?.open_table(self, binding, projected, metrics)
    }

    /// Opens source `binding` for key lookups when it is a table too large
    /// or remote to read whole (PostgreSQL); `None` for other sources.
    pub fn open_lookup(
        &self,
        binding: &SourceBinding,
        projected: SchemaRef,
        metrics: Arc<JobMetrics>,
    ) -> Result<Option<Box<dyn KeyLookup>>> {
        match source_connector(binding) {
            Ok(connector) => connector.open_lookup(self, binding, projected, metrics),
            // opening it as a table says what is wrong
            Err(_) => Ok(None),
        }
    }

    /// Opens the sink of a statement (`key`: the result's key columns);
    /// without a `type` the results go to stdout.
    pub fn open_sink(&self, binding: &SinkBinding, key: &[String]) -> Result<Box<dyn Sink>> {
        sink_connector(binding)?.open_sink(self, binding, key, self.guarantee)
    }

    /// Opens a dead-letter sink: rejected records are delivered at least
    /// once whatever the results' guarantee.
    pub fn open_dead_letter_sink(&self, binding: &SinkBinding) -> Result<Box<dyn Sink>> {
        sink_connector(binding)?.open_sink(self, binding, &[], Guarantee::AtLeastOnce)
    }

    /// Checks an external source's properties without opening it (for
    /// `validate` and a deployment's check): its keys, a file's place in
    /// the sandbox, a Kafka client's settings, a PostgreSQL query.
    pub fn check_source(&self, binding: &SourceBinding) -> Result<()> {
        source_connector(binding)?
            .check(self, &binding.name, &binding.properties)
            .map_err(|e| e.at(&binding.name))
    }

    /// Checks a sink's properties without opening it (for `validate`).
    pub fn check_sink(&self, binding: &SinkBinding) -> Result<()> {
        sink_connector(binding)?
            .check(self, &binding.name, &binding.properties)
            .map_err(|e| e.at(&binding.name))
    }
}

/// The connector of source `binding`.
fn source_connector(binding: &SourceBinding) -> Result<&'static dyn Connector> {
    registry::of(&binding.properties, Role::Source, None).map_err(|e| e.at(&binding.name))
}

/// The connector of sink `binding`: stdout without a `'type'`.
fn sink_connector(binding: &SinkBinding) -> Result<&'static dyn Connector> {
    registry::of(&binding.properties, Role::Sink, Some("stdout")).map_err(|e| e.at(&binding.name))
}

impl SourceResolver for Connectors {
    fn infer_schema(
        &self,
        name: &str,
        props: &BTreeMap<String, String>,
    ) -> std::result::Result<SchemaRef, InferError> {
        registry::of(props, Role::Source, None)
            .and_then(|connector| connector.infer_schema(self, name, props))
            .map_err(|e| InferError {
                transient: e.kind() == ErrorKind::Unavailable,
                message: e.to_string(),
            })
    }

    fn traits(&self, name: &str, props: &BTreeMap<String, String>) -> SourceTraits {
        let Ok(connector) = registry::of(props, Role::Source, None) else {
            return SourceTraits::default();
        };
        SourceTraits {
            system_columns: connector.system_columns(),
            event_time_field: connector.event_time_field().map(str::to_string),
            essential_settings: connector.essential_settings(name),
            looked_up: connector.looked_up(),
            unbounded: connector.unbounded(),
            single_reader: connector.single_reader(),
        }
    }
}

/// Source `binding` as statement `job` reads it, when `readers` statements
/// of the application read it.
pub fn for_reader(binding: &SourceBinding, job: &str, readers: usize) -> SourceBinding {
    match registry::of(&binding.properties, Role::Source, None) {
        Ok(connector) => connector.for_reader(binding, job, readers),
        Err(_) => binding.clone(),
    }
}
