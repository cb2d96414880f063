//! Where the table side of a stream–table join comes from: a source read
//! whole, a table looked up by key, or another statement's output.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::SchemaRef;
use velostream_connectors::in_process::ChannelSource;
use velostream_connectors::Connectors;
use velostream_engine::connector::{TableData, TableLoader};
use velostream_engine::{EngineError, JobMetrics, Source, SourceEvent};
use velostream_sql::{SourceBinding, SourceOrigin};

/// Loads the table side of stream–table joins from the application's sources.
pub(super) struct JoinTables {
    pub(super) connectors: Arc<Connectors>,
    pub(super) sources: Vec<SourceBinding>,
    /// Channels from the statements whose outputs are join tables; `None`
    /// when only validating (upstream statements do not run).
    pub(super) streams: Option<Mutex<HashMap<String, ChannelSource>>>,
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
        if !source.is_bounded() || !binding.table_key.is_empty() {
            // a changing table: the join applies its updates as they arrive;
            // a declared table: its latest row per key, deletes applied
            return Ok(TableData::Stream(source));
        }
        let mut rows = Vec::new();
        loop {
            match source.poll_batch()? {
                SourceEvent::Batch(b) => rows.push(b),
                SourceEvent::Idle | SourceEvent::Deletes(_) => {}
                SourceEvent::Partitioned { .. } => {
                    return Err(velostream_engine::connector::unexpected_partitioned(
                        "a join's table",
                    ))
                }
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
