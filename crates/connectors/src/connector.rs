//! What a connector is: the [`Connector`] trait every connector type
//! implements, its [`Role`], and the `'type'` names of the built-in ones.
//! The registry ([`crate::registry`]) lists them; every method has the
//! shared context ([`Connectors`]) as its first argument.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, SchemaRef};
use velostream_engine::connector::KeyLookup;
use velostream_engine::{EngineError, JobMetrics, Result, Sink, Source};
use velostream_sql::{SinkBinding, SourceBinding};

use crate::context::{Connectors, Guarantee};
use crate::error::{ConnectorError, ConnectorResult};
use crate::keys::{check_key_list, Key};

/// What a connector does in a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Read from: a stream source, also the table side of a join.
    Source,
    /// Written to.
    Sink,
}

impl Role {
    /// "source" or "sink".
    pub fn noun(self) -> &'static str {
        match self {
            Role::Source => "source",
            Role::Sink => "sink",
        }
    }
}

/// A connector type. Every method has the registry's shared context,
/// [`Connectors`] (base directory, batch size, Kafka and database
/// defaults, sandbox), as its first argument.
pub trait Connector: Send + Sync {
    /// The `'type'` value naming it.
    fn name(&self) -> &'static str;

    /// Other `'type'` values accepted for it.
    fn aliases(&self) -> &'static [&'static str] {
        &[]
    }

    /// Whether it is read from or written to.
    fn role(&self) -> Role;

    /// One line on what it is.
    fn summary(&self) -> &'static str;

    /// How it behaves, in a sentence or two: whether a source's input
    /// ends, what a sink guarantees (`velostream connectors`).
    fn behaviour(&self) -> &'static str;

    /// Its property keys; any other key is an error unless
    /// [`other_keys`](Self::other_keys) says where it goes.
    fn keys(&self) -> &'static [Key];

    /// Where keys outside [`keys`](Self::keys) go, if they are accepted.
    fn other_keys(&self) -> Option<&'static str> {
        None
    }

    /// Columns it adds to every record besides the payload.
    fn system_columns(&self) -> Vec<Field> {
        Vec::new()
    }

    /// The column holding its records' event time when the source names
    /// none (records that carry their time, like generated ones).
    fn event_time_field(&self) -> Option<&'static str> {
        None
    }

    /// The properties of source `name` to check when its columns cannot
    /// be read, e.g. `'trades.path' and 'trades.format'`.
    fn essential_settings(&self, name: &str) -> String {
        format!("'{name}.type'")
    }

    /// Whether a join looks its rows up by key rather than reading it whole.
    fn looked_up(&self) -> bool {
        false
    }

    /// Whether its input does not end by itself.
    fn unbounded(&self) -> bool {
        false
    }

    /// Whether only one job may read it (standard input is consumed once).
    fn single_reader(&self) -> bool {
        false
    }

    /// Source `binding` as the statement `job` reads it when `readers`
    /// statements of the application read it (a consumer group of its own,
    /// say); by default unchanged.
    fn for_reader(&self, binding: &SourceBinding, _job: &str, _readers: usize) -> SourceBinding {
        binding.clone()
    }

    /// The columns of an undeclared source, from a sample or a catalog.
    fn infer_schema(
        &self,
        _cx: &Connectors,
        _name: &str,
        _props: &BTreeMap<String, String>,
    ) -> ConnectorResult<SchemaRef> {
        Err(ConnectorError::InvalidValue(format!(
            "{} cannot tell its columns; declare them with CREATE STREAM name (col TYPE, ...)",
            self.name()
        )))
    }

    /// Opens it as a stream source decoding the columns of `projected`.
    fn open_source(
        &self,
        _cx: &Connectors,
        binding: &SourceBinding,
        _projected: SchemaRef,
        _metrics: Arc<JobMetrics>,
    ) -> Result<Box<dyn Source>> {
        Err(EngineError::misconfigured(
            &binding.name,
            format!("{} is not a source", self.name()),
        ))
    }

    /// Opens it as the table side of a join; by default as a stream
    /// source read to its end.
    fn open_table(
        &self,
        cx: &Connectors,
        binding: &SourceBinding,
        projected: SchemaRef,
        metrics: Arc<JobMetrics>,
    ) -> Result<Box<dyn Source>> {
        self.open_source(cx, binding, projected, metrics)
    }

    /// Opens it for key lookups, when a table is better looked up by key
    /// than read whole; `None` for connectors that are read whole.
    fn open_lookup(
        &self,
        _cx: &Connectors,
        _binding: &SourceBinding,
        _projected: SchemaRef,
        _metrics: Arc<JobMetrics>,
    ) -> Result<Option<Box<dyn KeyLookup>>> {
        Ok(None)
    }

    /// Opens it as a sink of results keyed by `key`, with `guarantee`.
    fn open_sink(
        &self,
        _cx: &Connectors,
        binding: &SinkBinding,
        _key: &[String],
        _guarantee: Guarantee,
    ) -> Result<Box<dyn Sink>> {
        Err(EngineError::misconfigured(
            &binding.name,
            format!("{} is not a sink", self.name()),
        ))
    }

    /// Checks its properties without opening it (for `validate` and a
    /// deployment's check).
    fn check(
        &self,
        cx: &Connectors,
        name: &str,
        props: &BTreeMap<String, String>,
    ) -> ConnectorResult<()>;
}

pub use crate::types;

/// Unknown keys of `connector` are errors, unless it passes them on.
pub fn check_keys(
    props: &BTreeMap<String, String>,
    connector: &dyn Connector,
) -> ConnectorResult<()> {
    if connector.other_keys().is_some() {
        return Ok(());
    }
    check_key_list(props, connector.keys(), connector.name())
}
