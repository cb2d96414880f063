//! Stream–table join: every stream record looks its key up in the table,
//! indexed by its join key. INNER keeps matches only, LEFT keeps unmatched
//! stream records with NULL table columns. NULL keys never match. An extra
//! condition (`ON a.k = b.k AND a.x > b.y`) is checked on each candidate pair.
//!
//! Where the table comes from decides when it changes:
//! - a file is loaded whole before the stream starts;
//! - another statement's bounded result (`CREATE TABLE ... AS SELECT` over
//!   files) is read to its end when the first record arrives, keeping the
//!   latest row per key;
//! - an unbounded table source is read as it changes: before each stream
//!   batch the join applies every update available, so a record sees the
//!   version current when it is processed.
//!
//! A table joined `FOR SYSTEM_TIME AS OF stream.time` keeps every version
//! of each key (ordered by the table's event time) and a record meets only
//! the latest version at or before its own time, so the result does not
//! depend on how the two inputs interleave.

// foldhash: much cheaper than SipHash for the per-record key lookups
use hashbrown::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::row::{RowConverter, Rows};
use datafusion::physical_expr::PhysicalExpr;

use super::join_output::{cast_keys, emit_pairs, key_converter, millis_of};
use super::{evaluate_all, Operator, Pipeline, RowIsolation, StateSize};
use crate::connector::{Source, SourceEvent};
use crate::error::Result;

/// Where the table's rows come from.
pub enum JoinTable {
    /// All rows, loaded; every row with a key counts (duplicates match twice).
    Loaded(RecordBatch),
    /// Rows read from `source` through `pipeline` (producing `schema`),
    /// keeping the latest row per key: to its end on first use when the
    /// source is bounded, else as updates become available.
    Feed {
        source: Box<dyn Source>,
        pipeline: Pipeline,
        schema: SchemaRef,
    },
    /// Rows fetched by key and cached (a database table); joined by
    /// [`CachedLookupJoinOperator`](super::cached_lookup_join::CachedLookupJoinOperator).
    Lookup(super::cached_lookup_join::LookupTable),
}

/// One change read from a changing table, in arrival order.
enum Change {
    Upsert(RecordBatch),
    Delete(RecordBatch),
}

/// `FOR SYSTEM_TIME AS OF`: the two times that pick a version.
pub struct VersionTimes {
    pub stream_time: Arc<dyn PhysicalExpr>,
    pub table_time: Arc<dyn PhysicalExpr>,
}

/// Which rows of one key a lookup can meet.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyRows {
    /// Every row (a loaded file: duplicate keys match once each).
    All,
    /// The last row applied.
    Latest,
    /// Every version, ordered by table time; the lookup picks one.
    Versions,
}

pub struct LookupJoinOperator {
    stream_keys: Vec<Arc<dyn PhysicalExpr>>,
    table_keys: Vec<Arc<dyn PhysicalExpr>>,
    /// Every table row applied so far (superseded rows included until compaction).
    table: RecordBatch,
    converter: Option<RowConverter>,
    /// Table rows by key (row format); for `Versions` ordered by `times`.
    index: HashMap<Box<[u8]>, Vec<u32>>,
    key_types: Vec<DataType>,
    key_rows: KeyRows,
    versions: Option<VersionTimes>,
    /// Table time of each row of `table` (versioned joins only).
    times: Vec<i64>,
    filter: Option<Arc<dyn PhysicalExpr>>,
    keep_unmatched: bool,
    schema: SchemaRef,
    /// A table still being read: its source, the operators above its scan,
    /// and the schema they produce.
    feed: Option<(Box<dyn Source>, Pipeline, SchemaRef)>,
    /// Stream batches waiting for a bounded table to be read to its end.
    held: Vec<RecordBatch>,
}

impl LookupJoinOperator {
    pub fn new(
        stream_keys: Vec<Arc<dyn PhysicalExpr>>,
        table: JoinTable,
        table_keys: Vec<Arc<dyn PhysicalExpr>>,
        filter: Option<Arc<dyn PhysicalExpr>>,
        versions: Option<VersionTimes>,
        keep_unmatched: bool,
        schema: SchemaRef,
    ) -> Result<Self> {
        let (rows, feed, key_rows) = match table {
            JoinTable::Loaded(rows) => (rows, None, KeyRows::All),
            JoinTable::Feed {
                source,
                pipeline,
                schema,
            } => (
                RecordBatch::new_empty(schema.clone()),
                Some((source, pipeline, schema)),
                KeyRows::Latest,
            ),
            JoinTable::Lookup(_) => {
                return Err(crate::EngineError::Plan(
                    "a looked-up table is joined by the cached lookup join".into(),
                ))
            }
        };
        let mut op = Self {
            stream_keys,
            table_keys,
            table: RecordBatch::new_empty(rows.schema()),
            converter: None,
            index: HashMap::new(),
            key_types: Vec::new(),
            key_rows: match versions {
                Some(_) => KeyRows::Versions,
                None => key_rows,
            },
            versions,
            times: Vec::new(),
            filter,
            keep_unmatched,
            schema,
            feed,
            held: Vec::new(),
        };
        op.apply(rows)?;
        Ok(op)
    }

    /// Adds table rows (updates, for a changing table) to the table and its index.
    fn apply(&mut self, rows: RecordBatch) -> Result<()> {
        if rows.num_rows() == 0 {
            return Ok(());
        }
        let key_columns = evaluate_all(&self.table_keys, &rows)?;
        let key_rows = self.key_rows(&key_columns)?;
        let fresh_times = match &self.versions {
            Some(v) => Some(millis_of(&v.table_time, &rows)?),
            None => None,
        };
        let offset = self.table.num_rows() as u32;
        self.table = match offset {
            0 => rows,
            _ => concat_batches(&self.table.schema(), [&self.table, &rows])?,
        };
        if let Some(t) = &fresh_times {
            // a version without a time is never current
            self.times
                .extend((0..t.len()).map(|i| if t.is_valid(i) { t.value(i) } else { i64::MAX }));
        }
        for (i, key) in key_rows.iter().enumerate() {
            if !key_columns.iter().all(|c| c.is_valid(i)) {
                continue;
            }
            let row = offset + i as u32;
            let matches = self.index.entry(key.as_ref().into()).or_default();
            match self.key_rows {
                KeyRows::All => matches.push(row),
                KeyRows::Latest => {
                    matches.clear();
                    matches.push(row);
                }
                KeyRows::Versions => {
                    // after the versions with an earlier or equal time: the
                    // later arrival wins among equal times
                    let t = self.times[row as usize];
                    let at = matches.partition_point(|&r| self.times[r as usize] <= t);
                    matches.insert(at, row);
                }
            }
        }
        self.compact()
    }

    /// Row-format keys of the table's key columns (the converter is set up on first use).
    fn key_rows(&mut self, key_columns: &[ArrayRef]) -> Result<Rows> {
        if self.converter.is_none() {
            let (types, converter) = key_converter(key_columns)?;
            self.key_types = types;
            self.converter = Some(converter);
        }
        let converter = self.converter.as_ref().expect("set above");
        Ok(converter.convert_columns(&cast_keys(key_columns.to_vec(), &self.key_types)?)?)
    }

    /// Drops superseded rows of a latest-per-key table once they outnumber the live ones.
    fn compact(&mut self) -> Result<()> {
        if self.key_rows != KeyRows::Latest || self.table.num_rows() <= 2 * self.index.len() + 1024
        {
            return Ok(());
        }
        let mut live: Vec<u32> = self.index.values().flatten().copied().collect();
        live.sort_unstable();
        let kept = take_record_batch(&self.table, &UInt32Array::from(live.clone()))?;
        let mut renumber = vec![0u32; self.table.num_rows()];
        for (new, &old) in live.iter().enumerate() {
            renumber[old as usize] = new as u32;
        }
        for rows in self.index.values_mut() {
            for r in rows.iter_mut() {
                *r = renumber[*r as usize];
            }
        }
        self.table = kept;
        Ok(())
    }

    /// Applies what the table's source has: all of it when the source is
    /// bounded (it is then done), else every update available now.
    fn pull_table(&mut self, wait_for_end: bool) -> Result<()> {
        let Some((source, pipeline, schema)) = self.feed.as_mut() else {
            return Ok(());
        };
        let bounded = source.is_bounded() && wait_for_end;
        let schema = schema.clone();
        let mut rows = Vec::new();
        let mut changes = Vec::new();
        let mut ended = false;
        loop {
            let event = match bounded {
                true => source.poll_batch()?,
                false => source.poll_now()?,
            };
            match event {
                SourceEvent::Batch(b) => pipeline.process(b, &mut rows)?,
                SourceEvent::Deletes(keys) => {
                    // updates before a delete apply before it
                    if !rows.is_empty() {
                        let applied = concat_batches(&schema, &rows)?;
                        rows.clear();
                        changes.push(Change::Upsert(applied));
                    }
                    changes.push(Change::Delete(keys));
                }
                SourceEvent::Partitioned { .. } => {
                    return Err(crate::connector::unexpected_partitioned("a join's table"))
                }
                SourceEvent::Idle if bounded => {}
                SourceEvent::Idle => break,
                SourceEvent::End => {
                    pipeline.finish(&mut rows)?;
                    ended = true;
                    break;
                }
            }
        }
        if ended {
            self.feed = None;
        }
        if !rows.is_empty() {
            changes.push(Change::Upsert(concat_batches(&schema, &rows)?));
        }
        for change in changes {
            match change {
                Change::Upsert(rows) => self.apply(rows)?,
                Change::Delete(keys) => self.delete(&keys)?,
            }
        }
        Ok(())
    }

    /// Removes the keys of `keys` (rows in the table's source schema) from the index.
    fn delete(&mut self, keys: &RecordBatch) -> Result<()> {
        if self.converter.is_none() || keys.num_rows() == 0 {
            return Ok(());
        }
        let key_columns = evaluate_all(&self.table_keys, keys).map_err(|e| {
            crate::EngineError::Plan(format!(
                "a table with deletes needs its key columns unchanged by the table's query: {e}"
            ))
        })?;
        let rows = self.key_rows(&key_columns)?;
        for (i, key) in rows.iter().enumerate() {
            if key_columns.iter().all(|c| c.is_valid(i)) {
                self.index.remove(key.as_ref());
            }
        }
        self.compact()
    }
}

impl Operator for LookupJoinOperator {
    fn name(&self) -> &'static str {
        "lookup_join"
    }

    fn isolation(&self) -> RowIsolation {
        // stream rows change nothing the join holds (the table comes from its own source)
        RowIsolation::Rerun
    }

    fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        self.pull_table(false)?;
        if self.waits_for_table() {
            // the table is still being read: records wait for the whole of it
            // (reading it to its end here could deadlock with the stream
            // when both come from the same upstream statement)
            self.held.push(batch);
            return Ok(());
        }
        for held in std::mem::take(&mut self.held) {
            self.probe(held, out)?;
        }
        self.probe(batch, out)
    }

    fn finish(&mut self, out: &mut Vec<RecordBatch>) -> Result<()> {
        // the stream has ended: read a bounded table to its end, then
        // join the records that waited for it
        if self.waits_for_table() {
            self.pull_table(true)?;
        }
        for held in std::mem::take(&mut self.held) {
            self.probe(held, out)?;
        }
        Ok(())
    }

    fn state_size(&self) -> StateSize {
        StateSize {
            windows: 0,
            keys: self.index.len(),
            rows: self.table.num_rows() + self.held.iter().map(|b| b.num_rows()).sum::<usize>(),
        }
    }
}

impl LookupJoinOperator {
    /// True while a bounded table is still being read.
    fn waits_for_table(&self) -> bool {
        self.feed.as_ref().is_some_and(|(s, _, _)| s.is_bounded())
    }

    /// Joins `batch` with the table as it is now.
    fn probe(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        let (mut left, mut right): (Vec<u32>, Vec<u32>) = (Vec::new(), Vec::new());
        if let Some(converter) = &self.converter {
            let keys = cast_keys(evaluate_all(&self.stream_keys, &batch)?, &self.key_types)?;
            let rows = converter.convert_columns(&keys)?;
            let stream_times = match &self.versions {
                Some(v) => Some(millis_of(&v.stream_time, &batch)?),
                None => None,
            };
            for (i, row) in rows.iter().enumerate() {
                if !keys.iter().all(|k| k.is_valid(i)) {
                    continue;
                }
                let Some(matches) = self.index.get(row.as_ref()) else {
                    continue;
                };
                match &stream_times {
                    None => {
                        for &j in matches {
                            left.push(i as u32);
                            right.push(j);
                        }
                    }
                    Some(t) if t.is_valid(i) => {
                        let t = t.value(i);
                        let n = matches.partition_point(|&r| self.times[r as usize] <= t);
                        if n > 0 {
                            left.push(i as u32);
                            right.push(matches[n - 1]);
                        }
                    }
                    Some(_) => {}
                }
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
}
