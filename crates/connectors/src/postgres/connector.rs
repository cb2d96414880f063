//! The PostgreSQL connectors: `postgres_source` (a table or query read
//! once, polled incrementally, or looked up by key as a join's table) and
//! `postgres_sink`.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use velostream_engine::connector::KeyLookup;
use velostream_engine::{JobMetrics, Result, Sink, Source};
use velostream_sql::{SinkBinding, SourceBinding};

use super::sink::SINK_KEYS;
use super::SOURCE_KEYS;
use super::{check_sink, check_source, infer_source_schema, open_lookup, open_sink, open_source};
use crate::connector::{types, Connector, Role};
use crate::context::{Connectors, Guarantee};
use crate::error::ConnectorResult;
use crate::keys::Key;

/// `postgres_source`.
pub struct PostgresSourceConnector;

impl Connector for PostgresSourceConnector {
    fn name(&self) -> &'static str {
        types::POSTGRES_SOURCE
    }

    fn role(&self) -> Role {
        Role::Source
    }

    fn summary(&self) -> &'static str {
        "a PostgreSQL table or read-only query"
    }

    fn behaviour(&self) -> &'static str {
        "Bounded (read once) unless `incremental.column` is set, which polls for rows past the last value seen and resumes from it after a restart. As a join's table it is looked up by key, with a cache (`performance.cache`)."
    }

    fn keys(&self) -> &'static [Key] {
        SOURCE_KEYS
    }

    fn essential_settings(&self, name: &str) -> String {
        format!("'{name}.table' (or '{name}.query') and '{name}.url'")
    }

    fn looked_up(&self) -> bool {
        true
    }

    fn infer_schema(
        &self,
        cx: &Connectors,
        _name: &str,
        props: &BTreeMap<String, String>,
    ) -> ConnectorResult<SchemaRef> {
        infer_source_schema(props, &cx.database)
    }

    fn open_source(
        &self,
        cx: &Connectors,
        binding: &SourceBinding,
        projected: SchemaRef,
        metrics: Arc<JobMetrics>,
    ) -> Result<Box<dyn Source>> {
        open_source(
            &binding.name,
            &binding.properties,
            &binding.schema,
            projected,
            cx.batch_size,
            &cx.database,
            metrics,
        )
    }

    fn open_lookup(
        &self,
        cx: &Connectors,
        binding: &SourceBinding,
        projected: SchemaRef,
        metrics: Arc<JobMetrics>,
    ) -> Result<Option<Box<dyn KeyLookup>>> {
        open_lookup(
            &binding.name,
            &binding.properties,
            &binding.schema,
            projected,
            &cx.database,
            metrics,
        )
        .map(Some)
    }

    fn check(
        &self,
        cx: &Connectors,
        _name: &str,
        props: &BTreeMap<String, String>,
    ) -> ConnectorResult<()> {
        check_source(props, &cx.database)
    }
}

/// `postgres_sink`.
pub struct PostgresSinkConnector;

impl Connector for PostgresSinkConnector {
    fn name(&self) -> &'static str {
        types::POSTGRES_SINK
    }

    fn role(&self) -> Role {
        Role::Sink
    }

    fn summary(&self) -> &'static str {
        "results upserted by key (or appended) into a PostgreSQL table"
    }

    fn behaviour(&self) -> &'static str {
        "At least once: upserts repeat harmlessly. Exactly once: each checkpoint's rows are written in a prepared transaction committed with the checkpoint."
    }

    fn keys(&self) -> &'static [Key] {
        SINK_KEYS
    }

    fn open_sink(
        &self,
        cx: &Connectors,
        binding: &SinkBinding,
        key: &[String],
        guarantee: Guarantee,
    ) -> Result<Box<dyn Sink>> {
        open_sink(
            &binding.name,
            &binding.properties,
            key,
            &cx.database,
            guarantee == Guarantee::ExactlyOnce,
        )
    }

    fn check(
        &self,
        _cx: &Connectors,
        _name: &str,
        props: &BTreeMap<String, String>,
    ) -> ConnectorResult<()> {
        check_sink(props)
    }
}
