//! Stream–table join: the table is loaded before the stream starts and
//! indexed by its join key; every stream record looks its key up. INNER
//! keeps matches only, LEFT keeps unmatched stream records with NULL table
//! columns. NULL keys never match. An extra condition (`ON a.k = b.k AND
//! a.x > b.y`) is checked on each candidate pair. A table produced by another
//! statement (`CREATE TABLE ... AS SELECT`) is read to its end when the first
//! record arrives, keeping the latest row per key.

// foldhash: much cheaper than SipHash for the per-record key lookups
use hashbrown::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;

use super::join_output::{cast_keys, emit_pairs};
use super::{evaluate_all, Operator, Pipeline, StateSize};
use crate::connector::{Source, SourceEvent};
use crate::error::Result;

pub struct LookupJoinOperator {
    stream_keys: Vec<Arc<dyn PhysicalExpr>>,
    table_keys: Vec<Arc<dyn PhysicalExpr>>,
    table: RecordBatch,
    converter: RowConverter,
    /// Table rows by key (row format).
    index: HashMap<Box<[u8]>, Vec<u32>>,
    key_types: Vec<datafusion::arrow::datatypes::DataType>,
    filter: Option<Arc<dyn PhysicalExpr>>,
    keep_unmatched: bool,
    schema: SchemaRef,
    /// A table still to be read: its source, the operators above its scan,
    /// and the schema they produce.
    pending: Option<(Box<dyn Source>, Pipeline, SchemaRef)>,
}

/// Where the table's rows come from.
pub enum JoinTable {
    /// All rows, loaded; every row with a key counts (duplicates match twice).
    Loaded(RecordBatch),
    /// Rows to read from `source` through `pipeline` (producing `schema`) on
    /// first use, keeping the latest row per key.
    Pending {
        source: Box<dyn Source>,
        pipeline: Pipeline,
        schema: SchemaRef,
    },
}

impl LookupJoinOperator {
    pub fn new(
        stream_keys: Vec<Arc<dyn PhysicalExpr>>,
        table: JoinTable,
        table_keys: Vec<Arc<dyn PhysicalExpr>>,
        filter: Option<Arc<dyn PhysicalExpr>>,
        keep_unmatched: bool,
        schema: SchemaRef,
    ) -> Result<Self> {
        let (rows, pending) = match table {
            JoinTable::Loaded(rows) => (Some(rows), None),
            JoinTable::Pending {
                source,
                pipeline,
                schema,
            } => (None, Some((source, pipeline, schema))),
        };
        let mut op = Self {
            stream_keys,
            table_keys,
            table: RecordBatch::new_empty(Arc::new(datafusion::arrow::datatypes::Schema::empty())),
            converter: RowConverter::new(vec![])?,
            index: HashMap::new(),
            key_types: Vec::new(),
            filter,
            keep_unmatched,
            schema,
            pending,
        };
        if let Some(rows) = rows {
            op.index_table(rows, false)?;
        }
        Ok(op)
    }

    /// Indexes the table by key; `latest_per_key` keeps only the last row of each key.
    fn index_table(&mut self, table: RecordBatch, latest_per_key: bool) -> Result<()> {
        let key_columns = evaluate_all(&self.table_keys, &table)?;
        self.key_types = key_columns.iter().map(|c| c.data_type().clone()).collect();
        self.converter = RowConverter::new(
            self.key_types
                .iter()
                .map(|t| SortField::new(t.clone()))
                .collect(),
        )?;
        let rows = self.converter.convert_columns(&key_columns)?;
        self.index.clear();
        for (i, row) in rows.iter().enumerate() {
            if key_columns.iter().all(|c| c.is_valid(i)) {
                let matches = self.index.entry(row.as_ref().into()).or_default();
                if latest_per_key {
                    matches.clear();
                }
                matches.push(i as u32);
            }
        }
        self.table = table;
        Ok(())
    }

    /// Reads a pending table to its end (the statement producing it runs
    /// concurrently and ends with its bounded input).
    fn load_pending(&mut self) -> Result<()> {
        let Some((mut source, mut pipeline, schema)) = self.pending.take() else {
            return Ok(());
        };
        let mut rows = Vec::new();
        loop {
            match source.poll_batch()? {
                SourceEvent::Batch(b) => pipeline.process(b, &mut rows)?,
                SourceEvent::Idle => {}
                SourceEvent::End => break,
            }
        }
        pipeline.finish(&mut rows)?;
        let table = concat_batches(&schema, &rows)?;
        self.index_table(table, true)
    }
}

impl Operator for LookupJoinOperator {
    fn name(&self) -> &'static str {
        "lookup_join"
    }

    fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        self.load_pending()?;
        let keys = cast_keys(evaluate_all(&self.stream_keys, &batch)?, &self.key_types)?;
        let rows = self.converter.convert_columns(&keys)?;
        let (mut left, mut right): (Vec<u32>, Vec<u32>) = (Vec::new(), Vec::new());
        for (i, row) in rows.iter().enumerate() {
            let matches = match keys.iter().all(|k| k.is_valid(i)) {
                true => self.index.get(row.as_ref()),
                false => None,
            };
            for &j in matches.into_iter().flatten() {
                left.push(i as u32);
                right.push(j);
            }
        }
        emit_pairs(
            &batch,
            &self.table,
            left,
            right,
            self.filter.as_ref(),
            self.keep_unmatched,
            &self.schema,
            out,
        )?;
        Ok(())
    }

    fn finish(&mut self, _out: &mut Vec<RecordBatch>) -> Result<()> {
        // a table stream that no record looked at still runs to its end
        self.load_pending()
    }

    fn state_size(&self) -> StateSize {
        StateSize {
            windows: 0,
            keys: self.index.len(),
            rows: self.table.num_rows(),
        }
    }
}
