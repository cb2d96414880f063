//! The `nexmark` connector: the Nexmark benchmark's generator as a source.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use velostream_engine::{JobMetrics, Result, Source};
use velostream_sql::SourceBinding;

use super::{schema, NexmarkConfig, NexmarkSource, KEYS};
use crate::connector::{types, Connector, Role};
use crate::context::Connectors;
use crate::error::ConnectorResult;
use crate::keys::Key;

/// `nexmark`.
pub struct NexmarkConnector;

impl Connector for NexmarkConnector {
    fn name(&self) -> &'static str {
        types::NEXMARK
    }

    fn role(&self) -> Role {
        Role::Source
    }

    fn summary(&self) -> &'static str {
        "generated Nexmark persons, auctions or bids (deterministic for a seed)"
    }

    fn behaviour(&self) -> &'static str {
        "Bounded with `events`, unbounded without. The records carry their event time in `datetime`, the default event-time field."
    }

    fn keys(&self) -> &'static [Key] {
        KEYS
    }

    fn event_time_field(&self) -> Option<&'static str> {
        Some("datetime")
    }

    fn essential_settings(&self, name: &str) -> String {
        format!("'{name}.kind'")
    }

    fn infer_schema(
        &self,
        _cx: &Connectors,
        name: &str,
        props: &BTreeMap<String, String>,
    ) -> ConnectorResult<SchemaRef> {
        Ok(schema(NexmarkConfig::from_properties(name, props)?.kind))
    }

    fn open_source(
        &self,
        cx: &Connectors,
        binding: &SourceBinding,
        projected: SchemaRef,
        _metrics: Arc<JobMetrics>,
    ) -> Result<Box<dyn Source>> {
        let config = NexmarkConfig::from_properties(&binding.name, &binding.properties)
            .map_err(|e| e.at(&binding.name))?;
        Ok(Box::new(NexmarkSource::new(
            config,
            projected,
            cx.batch_size,
        )))
    }

    fn check(
        &self,
        _cx: &Connectors,
        name: &str,
        props: &BTreeMap<String, String>,
    ) -> ConnectorResult<()> {
        NexmarkConfig::from_properties(name, props).map(|_| ())
    }
}
