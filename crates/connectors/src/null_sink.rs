//! `null`: a sink that discards everything, for benchmarks and dry runs.

use std::collections::BTreeMap;

use datafusion::arrow::record_batch::RecordBatch;
use velostream_engine::{Result, Sink};
use velostream_sql::SinkBinding;

use crate::connector::{check_keys, types, Connector, Role};
use crate::context::{Connectors, Guarantee};
use crate::error::ConnectorResult;
use crate::keys::Key;

/// Discards everything.
pub struct NullSink;

impl Sink for NullSink {
    fn write(&mut self, _batch: &RecordBatch) -> Result<()> {
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

/// The `null` connector.
pub struct NullConnector;

impl Connector for NullConnector {
    fn name(&self) -> &'static str {
        types::NULL
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["blackhole"]
    }

    fn role(&self) -> Role {
        Role::Sink
    }

    fn summary(&self) -> &'static str {
        "results discarded (benchmarks, dry runs)"
    }

    fn behaviour(&self) -> &'static str {
        "Keeps nothing, under either guarantee."
    }

    fn keys(&self) -> &'static [Key] {
        const KEYS: [Key; 1] = [Key::new("type", "the connector")];
        &KEYS
    }

    fn open_sink(
        &self,
        _cx: &Connectors,
        binding: &SinkBinding,
        _key: &[String],
        _guarantee: Guarantee,
    ) -> Result<Box<dyn Sink>> {
        check_keys(&binding.properties, self).map_err(|e| e.at(&binding.name))?;
        Ok(Box::new(NullSink))
    }

    fn check(
        &self,
        _cx: &Connectors,
        _name: &str,
        props: &BTreeMap<String, String>,
    ) -> ConnectorResult<()> {
        check_keys(props, self)
    }
}
