//! The connector registry: every connector type a statement can name in
//! `'type'`, what it reads or writes, its property keys (with defaults and
//! one-line docs) and its system columns, and how it is opened.
//!
//! Adding a connector is one [`Connector`] implementation listed in
//! [`all`]: [`crate::factory::Connectors`] dispatches on it, unknown-type
//! errors list it, and `velostream connectors` (and `docs/connectors.md`,
//! generated from [`markdown`]) describe it.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, SchemaRef};
use velostream_engine::connector::KeyLookup;
use velostream_engine::{EngineError, JobMetrics, Result, Sink, Source};
use velostream_sql::{SinkBinding, SourceBinding};

use crate::factory::{Connectors, Guarantee};

/// What a connector does in a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Read from: a stream source, also the table side of a join.
    Source,
    /// Written to.
    Sink,
}

impl Role {
    fn noun(self) -> &'static str {
        match self {
            Role::Source => "source",
            Role::Sink => "sink",
        }
    }
}

/// One property key of a connector.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub name: &'static str,
    /// The value used when the key is absent, if there is one.
    pub default: Option<&'static str>,
    pub doc: &'static str,
}

impl Key {
    /// A key without a default.
    pub const fn new(name: &'static str, doc: &'static str) -> Self {
        Self {
            name,
            default: None,
            doc,
        }
    }

    /// A key with a default.
    pub const fn with_default(
        name: &'static str,
        default: &'static str,
        doc: &'static str,
    ) -> Self {
        Self {
            name,
            default: Some(default),
            doc,
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
    ) -> std::result::Result<SchemaRef, String> {
        Err(format!(
            "{} cannot tell its columns; declare them with CREATE STREAM name (col TYPE, ...)",
            self.name()
        ))
    }

    /// Opens it as a stream source decoding the columns of `projected`.
    fn open_source(
        &self,
        _cx: &Connectors,
        binding: &SourceBinding,
        _projected: SchemaRef,
        _metrics: Arc<JobMetrics>,
    ) -> Result<Box<dyn Source>> {
        Err(EngineError::connector(
            &binding.name,
            unavailable(self.name(), Role::Source),
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
        Err(EngineError::connector(
            &binding.name,
            unavailable(self.name(), Role::Sink),
        ))
    }

    /// Checks its properties without opening it (for `validate` and a
    /// deployment's check).
    fn check(
        &self,
        cx: &Connectors,
        name: &str,
        props: &BTreeMap<String, String>,
    ) -> std::result::Result<(), String>;
}

/// The `'type'` values of the connectors, for code that configures one
/// (tools, benchmarks, the conformance harness).
pub mod types {
    pub const FILE_SOURCE: &str = "file_source";
    pub const STDIN: &str = "stdin";
    pub const KAFKA_SOURCE: &str = "kafka_source";
    pub const POSTGRES_SOURCE: &str = "postgres_source";
    pub const NEXMARK: &str = "nexmark";
    pub const FILE_SINK: &str = "file_sink";
    pub const STDOUT: &str = "stdout";
    pub const NULL: &str = "null";
    pub const KAFKA_SINK: &str = "kafka_sink";
    pub const POSTGRES_SINK: &str = "postgres_sink";
}

/// Every connector, sources first.
pub fn all() -> &'static [&'static dyn Connector] {
    use crate::file::connector::{FileSinkConnector, FileSourceConnector, Stdin, Stdout};
    use crate::kafka::connector::{KafkaSinkConnector, KafkaSourceConnector};
    use crate::nexmark::connector::NexmarkConnector;
    use crate::null_sink::NullConnector;
    use crate::postgres::connector::{PostgresSinkConnector, PostgresSourceConnector};
    &[
        &FileSourceConnector,
        &Stdin,
        &KafkaSourceConnector,
        &PostgresSourceConnector,
        &NexmarkConnector,
        &FileSinkConnector,
        &Stdout,
        &NullConnector,
        &KafkaSinkConnector,
        &PostgresSinkConnector,
    ]
}

/// The connector a `'type'` value names, in `role`.
pub fn find(kind: &str, role: Role) -> Option<&'static dyn Connector> {
    all()
        .iter()
        .copied()
        .find(|c| c.role() == role && (c.name() == kind || c.aliases().contains(&kind)))
}

/// The connector named by `props`' `'type'` in `role`, or an error that
/// lists the connectors of that role. `default` is the type of a
/// statement without one (stdout for sinks).
pub fn of(
    props: &BTreeMap<String, String>,
    role: Role,
    default: Option<&str>,
) -> std::result::Result<&'static dyn Connector, String> {
    let kind = match (props.get("type"), default) {
        (Some(kind), _) => kind.as_str(),
        (None, Some(default)) => default,
        (None, None) => return Err("no 'type' property".into()),
    };
    find(kind, role).ok_or_else(|| unavailable(kind, role))
}

/// The error for a `'type'` that names no connector of `role`.
pub fn unavailable(kind: &str, role: Role) -> String {
    let known: Vec<&str> = all()
        .iter()
        .filter(|c| c.role() == role)
        .map(|c| c.name())
        .collect();
    format!(
        "unknown {} type '{kind}'; expected one of: {}",
        role.noun(),
        known.join(", ")
    )
}

/// Unknown keys are errors: a misspelt key would otherwise be ignored.
pub fn check_keys(
    props: &BTreeMap<String, String>,
    connector: &dyn Connector,
) -> std::result::Result<(), String> {
    if connector.other_keys().is_some() {
        return Ok(());
    }
    check_key_list(props, connector.keys(), connector.name())
}

/// [`check_keys`] against a list of keys, for code that has the list but
/// not the connector.
pub fn check_key_list(
    props: &BTreeMap<String, String>,
    keys: &[Key],
    connector: &str,
) -> std::result::Result<(), String> {
    match props
        .keys()
        .find(|k| !keys.iter().any(|key| key.name == k.as_str()))
    {
        Some(key) => Err(format!(
            "unknown property '{key}' for {connector}; valid keys: {}",
            keys.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
        )),
        None => Ok(()),
    }
}

/// Every connector (or the one named `only`) as Markdown: what
/// `velostream connectors` prints and `docs/connectors.md` holds.
pub fn markdown(only: Option<&str>) -> std::result::Result<String, String> {
    let chosen: Vec<&dyn Connector> = all()
        .iter()
        .copied()
        .filter(|c| only.is_none_or(|n| c.name() == n || c.aliases().contains(&n)))
        .collect();
    if chosen.is_empty() {
        let names: Vec<&str> = all().iter().map(|c| c.name()).collect();
        return Err(format!(
            "no connector '{}'; the connectors are: {}",
            only.unwrap_or_default(),
            names.join(", ")
        ));
    }
    let mut out = String::new();
    if only.is_none() {
        out.push_str("# Connectors\n\n");
        out.push_str(
            "Generated by `velostream connectors > docs/connectors.md`; do not edit by hand.\n\n",
        );
        out.push_str("A statement names a connector with `'<name>.type'` and sets its keys as `'<name>.<key>'`.\n");
        out.push_str("Every source also takes the event-time keys (`event.time.field`, `event.time.format`, `watermark.*`, `late.data.strategy`) and the time-format keys (`time.format`, `time.format.<column>`), which the engine reads; see the README.\n\n");
        out.push_str("| type | role | what |\n|---|---|---|\n");
        for c in &chosen {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} |",
                c.name(),
                c.role().noun(),
                c.summary()
            );
        }
        out.push('\n');
    }
    for c in chosen {
        let _ = writeln!(out, "## `{}` ({})\n", c.name(), c.role().noun());
        let _ = writeln!(out, "{}.\n", sentence(c.summary()));
        if !c.aliases().is_empty() {
            let names: Vec<String> = c.aliases().iter().map(|a| format!("`{a}`")).collect();
            let _ = writeln!(out, "Also named: {}.\n", names.join(", "));
        }
        let _ = writeln!(out, "{}\n", c.behaviour());
        out.push_str("| key | default | what |\n|---|---|---|\n");
        for key in c.keys() {
            let default = key.default.map(|d| format!("`{d}`")).unwrap_or_default();
            let _ = writeln!(out, "| `{}` | {default} | {} |", key.name, key.doc);
        }
        if let Some(other) = c.other_keys() {
            let _ = writeln!(out, "\nOther keys: {other}.");
        }
        let columns = c.system_columns();
        if !columns.is_empty() {
            let names: Vec<String> = columns
                .iter()
                .map(|f| format!("`{}` ({})", f.name(), f.data_type()))
                .collect();
            let _ = writeln!(
                out,
                "\nSystem columns (selectable by name, left out of `SELECT *`): {}.",
                names.join(", ")
            );
        }
        out.push('\n');
    }
    Ok(out)
}

/// `text` with a capital first letter.
fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_name_is_unique_within_its_role() {
        for role in [Role::Source, Role::Sink] {
            let mut names: Vec<&str> = all()
                .iter()
                .filter(|c| c.role() == role)
                .flat_map(|c| std::iter::once(c.name()).chain(c.aliases().iter().copied()))
                .collect();
            let count = names.len();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), count, "a {} type is named twice", role.noun());
        }
    }

    #[test]
    fn unknown_types_list_the_connectors_of_their_role() {
        let err = unavailable("carrier_pigeon", Role::Sink);
        assert!(err.contains("unknown sink type 'carrier_pigeon'"), "{err}");
        assert!(
            err.contains("kafka_sink") && !err.contains("kafka_source"),
            "{err}"
        );
        assert!(find("file", Role::Source).is_some_and(|c| c.name() == "file_source"));
        assert!(find("file", Role::Sink).is_some_and(|c| c.name() == "file_sink"));
        assert!(find("kafka_sink", Role::Source).is_none());
    }

    #[test]
    fn every_connector_documents_its_keys() {
        for c in all() {
            assert!(c.keys().iter().any(|k| k.name == "type"), "{}", c.name());
            for key in c.keys() {
                assert!(!key.doc.is_empty(), "{}.{} has no doc", c.name(), key.name);
            }
        }
    }

    /// docs/connectors.md is what `velostream connectors` prints.
    #[test]
    fn the_connector_reference_is_current() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/connectors.md");
        let written = std::fs::read_to_string(&path).unwrap_or_default();
        let generated = markdown(None).unwrap();
        assert!(
            written == generated,
            "docs/connectors.md is stale: regenerate it with `velostream connectors > docs/connectors.md`"
        );
    }
}
