//! Stream–table join against a table that is looked up rather than read
//! whole (a PostgreSQL table): each batch asks the table for the keys it
//! needs that are not cached, in one request, and keeps the answers —
//! rows, or the fact that a key has none — for the next batches.
//!
//! The cache holds at most `max_keys` keys with rows and `max_missing`
//! keys the table has no row for; beyond that the least recently used go. A key is trusted for `ttl`, then looked up again, so a change in
//! the table reaches the join within `ttl`. A record therefore meets the
//! table as it was at most `ttl` ago: processing time, not event time.
//! INNER keeps matches only; LEFT keeps unmatched records with NULL table
//! columns; NULL keys never match and are never looked up.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{
    concat_batches, interleave_record_batch, take, take_record_batch,
};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::row::{RowConverter, Rows};
use datafusion::physical_expr::PhysicalExpr;
// foldhash: much cheaper than SipHash for the per-record key lookups
use hashbrown::HashMap;

use super::join_output::{cast_keys, emit_pairs, key_converter};
use super::{evaluate_all, Operator, Pipeline, RowIsolation, StateSize};
use crate::connector::{KeyLookup, LookupCache};
use crate::error::Result;

/// When a cached answer was fetched and last used.
#[derive(Clone, Copy)]
struct Stamp {
    /// When the table was asked.
    fetched: Instant,
    /// The batch that last used it (for least-recently-used eviction).
    used: u64,
}

/// Where a key's table rows are: `len` rows from `start` of chunk `chunk`.
struct Found {
    chunk: u32,
    start: u32,
    len: u32,
    stamp: Stamp,
}

/// The table side of a looked-up join: where rows come from and how keys are named there.
pub struct LookupTable {
    pub lookup: Box<dyn KeyLookup>,
    pub cache: LookupCache,
    /// The operators above the table's scan (projection, filter).
    pub pipeline: Pipeline,
    /// The table's key columns by their name in the source, in `ON` order.
    pub key_columns: Vec<String>,
    /// The schema `pipeline` produces.
    pub schema: SchemaRef,
}

pub struct CachedLookupJoinOperator {
    stream_keys: Vec<Arc<dyn PhysicalExpr>>,
    table_keys: Vec<Arc<dyn PhysicalExpr>>,
    table: LookupTable,
    key_types: Vec<DataType>,
    converter: RowConverter,
    /// Keys with rows.
    found: HashMap<Box<[u8]>, Found>,
    /// The cached rows (table schema), one chunk per fetch, each key's rows
    /// side by side; rows of evicted or refetched keys stay until compaction.
    chunks: Vec<RecordBatch>,
    /// Rows of `chunks` that `found` still points at.
    live_rows: usize,
    /// Keys the table had no row for.
    absent: HashMap<Box<[u8]>, Stamp>,
    /// Counts batches; a cached key's `used` is the batch that last needed it.
    batch_number: u64,
    filter: Option<Arc<dyn PhysicalExpr>>,
    keep_unmatched: bool,
    schema: SchemaRef,
}

impl CachedLookupJoinOperator {
    /// `key_types`: the types of the table's key columns, which stream keys
    /// are cast to before they are looked up.
    pub fn new(
        stream_keys: Vec<Arc<dyn PhysicalExpr>>,
        table: LookupTable,
        table_keys: Vec<Arc<dyn PhysicalExpr>>,
        key_types: Vec<DataType>,
        filter: Option<Arc<dyn PhysicalExpr>>,
        keep_unmatched: bool,
        schema: SchemaRef,
    ) -> Result<Self> {
        let empty: Vec<ArrayRef> = key_types
            .iter()
            .map(|t| datafusion::arrow::array::new_empty_array(t))
            .collect();
        let (key_types, converter) = key_converter(&empty)?;
        Ok(Self {
            stream_keys,
            table_keys,
            table,
            key_types,
            converter,
            found: HashMap::new(),
            chunks: Vec::new(),
            live_rows: 0,
            absent: HashMap::new(),
            batch_number: 0,
            filter,
            keep_unmatched,
            schema,
        })
    }

    /// Asks the table for the keys at rows `missing` of `keys` and caches
    /// the answers (a key without rows is cached as such).
    /// `converted`: the row format of `keys` (already computed by the caller).
    fn fetch(
        &mut self,
        keys: &[ArrayRef],
        converted: &Rows,
        missing: &[u32],
        now: Instant,
    ) -> Result<()> {
        let indices = UInt32Array::from(missing.to_vec());
        let wanted = keys
            .iter()
            .map(|k| take(k, &indices, None))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let fetched = self.table.lookup.fetch(&self.table.key_columns, &wanted)?;
        let mut rows = Vec::new();
        if fetched.num_rows() > 0 {
            self.table.pipeline.process(fetched, &mut rows)?;
        }
        let found = concat_batches(&self.table.schema, &rows)?;
        let mut by_key: HashMap<Box<[u8]>, Vec<u32>> = HashMap::new();
        if found.num_rows() > 0 {
            let found_keys = cast_keys(evaluate_all(&self.table_keys, &found)?, &self.key_types)?;
            let converted = self.converter.convert_columns(&found_keys)?;
            for (i, key) in converted.iter().enumerate() {
                by_key
                    .entry(key.as_ref().into())
                    .or_default()
                    .push(i as u32);
            }
        }
        let stamp = Stamp {
            fetched: now,
            used: self.batch_number,
        };
        // the new chunk holds each key's rows side by side
        let chunk = self.chunks.len() as u32;
        let mut order: Vec<u32> = Vec::with_capacity(found.num_rows());
        for &i in missing {
            let key: Box<[u8]> = converted.row(i as usize).as_ref().into();
            if let Some(old) = self.found.remove(&key) {
                self.live_rows -= old.len as usize;
            }
            match by_key.get(&key) {
                Some(indices) => {
                    let start = order.len() as u32;
                    order.extend_from_slice(indices);
                    self.absent.remove(&key);
                    self.live_rows += indices.len();
                    let len = indices.len() as u32;
                    self.found.insert(
                        key,
                        Found {
                            chunk,
                            start,
                            len,
                            stamp,
                        },
                    );
                }
                None => {
                    self.absent.insert(key, stamp);
                }
            }
        }
        if !order.is_empty() {
            self.chunks
                .push(take_record_batch(&found, &UInt32Array::from(order))?);
        }
        Ok(())
    }

    /// Rewrites the chunks into one holding only live rows, once dead rows
    /// outnumber live ones (or chunks pile up), so memory follows the limits.
    fn compact(&mut self) -> Result<()> {
        let total: usize = self.chunks.iter().map(|c| c.num_rows()).sum();
        if total <= 2 * self.live_rows + 4096 && self.chunks.len() <= 256 {
            return Ok(());
        }
        let mut rows = Vec::with_capacity(self.live_rows);
        for f in self.found.values_mut() {
            let start = rows.len() as u32;
            rows.extend((f.start..f.start + f.len).map(|r| (f.chunk as usize, r as usize)));
            f.chunk = 0;
            f.start = start;
        }
        let chunks: Vec<&RecordBatch> = self.chunks.iter().collect();
        let live = match rows.is_empty() {
            true => RecordBatch::new_empty(self.table.schema.clone()),
            false => interleave_record_batch(&chunks, &rows)?,
        };
        self.chunks = vec![live];
        Ok(())
    }

    /// The cached answer for `key` when it is fresh, marked as used now:
    /// `Some(rows)` or `Some(None)` (no rows); `None` when it must be fetched.
    fn cached(&mut self, key: &[u8], now: Instant) -> Option<Option<&Found>> {
        let ttl = self.table.cache.ttl;
        let batch = self.batch_number;
        let fresh = |s: &mut Stamp| {
            let ok = now.duration_since(s.fetched) < ttl;
            if ok {
                s.used = batch;
            }
            ok
        };
        if let Some(f) = self.found.get_mut(key) {
            return fresh(&mut f.stamp).then_some(Some(&*f));
        }
        let stamp = self.absent.get_mut(key)?;
        fresh(stamp).then_some(None)
    }
}

/// Drops the least recently used entries of `map` once it holds more than
/// `max`, down to 90% of it so the sort is paid once per many batches.
/// Returns whether it dropped any.
fn evict<V>(map: &mut HashMap<Box<[u8]>, V>, max: usize, used: impl Fn(&V) -> u64) -> bool {
    if map.len() <= max {
        return false;
    }
    let keep = max - max / 10;
    let mut by_age: Vec<(u64, Box<[u8]>)> = map.iter().map(|(k, v)| (used(v), k.clone())).collect();
    by_age.sort_unstable_by_key(|(u, _)| *u);
    let excess = map.len() - keep;
    for (_, key) in by_age.into_iter().take(excess) {
        map.remove(&key);
    }
    true
}

impl Operator for CachedLookupJoinOperator {
    fn name(&self) -> &'static str {
        "cached_lookup_join"
    }

    fn isolation(&self) -> RowIsolation {
        // stream rows change nothing the join holds (the table comes from its own source)
        RowIsolation::Rerun
    }

    fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        self.batch_number += 1;
        let now = Instant::now();
        let keys = cast_keys(evaluate_all(&self.stream_keys, &batch)?, &self.key_types)?;
        let converted = self.converter.convert_columns(&keys)?;
        let valid = |i: usize| keys.iter().all(|k| k.is_valid(i));

        // the keys this batch needs that the cache cannot answer, once each
        let mut missing = Vec::new();
        let mut asked: hashbrown::HashSet<&[u8]> = hashbrown::HashSet::new();
        for (i, key) in converted.iter().enumerate() {
            if !valid(i) {
                continue;
            }
            if self.cached(key.data(), now).is_none() && asked.insert(key.data()) {
                missing.push(i as u32);
            }
        }
        drop(asked);
        if !missing.is_empty() {
            self.fetch(&keys, &converted, &missing, now)?;
        }

        // each record beside its key's cached rows, gathered in pair order
        let (mut left, mut rows) = (Vec::new(), Vec::new());
        for (i, key) in converted.iter().enumerate() {
            if !valid(i) {
                continue;
            }
            if let Some(f) = self.found.get(key.data()) {
                for r in f.start..f.start + f.len {
                    left.push(i as u32);
                    rows.push((f.chunk as usize, r as usize));
                }
            }
        }
        let table_rows = match rows.is_empty() {
            true => RecordBatch::new_empty(self.table.schema.clone()),
            false => {
                let chunks: Vec<&RecordBatch> = self.chunks.iter().collect();
                interleave_record_batch(&chunks, &rows)?
            }
        };
        let right = (0..left.len() as u32).collect();
        emit_pairs(
            &batch,
            &table_rows,
            left,
            right,
            self.filter.as_ref(),
            self.keep_unmatched,
            &self.schema,
            out,
        )?;
        let cache = self.table.cache;
        if evict(&mut self.found, cache.max_keys, |f| f.stamp.used) {
            self.live_rows = self.found.values().map(|f| f.len as usize).sum();
        }
        evict(&mut self.absent, cache.max_missing, |s| s.used);
        self.compact()
    }

    fn state_size(&self) -> StateSize {
        StateSize {
            windows: 0,
            keys: self.found.len() + self.absent.len(),
            rows: self.live_rows,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::KeyLookup;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::physical_expr::expressions::Column;
    use std::sync::Mutex;
    use std::time::Duration;

    /// A table of (k, v) rows that records the keys each fetch asked for.
    struct Table {
        rows: Vec<(i64, &'static str)>,
        asked: Arc<Mutex<Vec<Vec<i64>>>>,
    }

    impl KeyLookup for Table {
        fn fetch(&mut self, columns: &[String], keys: &[ArrayRef]) -> Result<RecordBatch> {
            assert_eq!(columns, ["k"]);
            let wanted: Vec<i64> = keys[0]
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec();
            self.asked.lock().unwrap().push(wanted.clone());
            let hits: Vec<_> = self
                .rows
                .iter()
                .filter(|(k, _)| wanted.contains(k))
                .collect();
            Ok(RecordBatch::try_new(
                table_schema(),
                vec![
                    Arc::new(Int64Array::from_iter_values(hits.iter().map(|r| r.0))),
                    Arc::new(StringArray::from_iter_values(hits.iter().map(|r| r.1))),
                ],
            )?)
        }
    }

    fn cache(max_keys: usize, max_missing: usize, ttl: Duration) -> LookupCache {
        LookupCache {
            max_keys,
            max_missing,
            ttl,
        }
    }

    fn table_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Utf8, true),
        ]))
    }

    fn join(
        cache: LookupCache,
        keep_unmatched: bool,
    ) -> (CachedLookupJoinOperator, Arc<Mutex<Vec<Vec<i64>>>>) {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let table = LookupTable {
            lookup: Box::new(Table {
                rows: vec![(1, "one"), (2, "two"), (2, "deux")],
                asked: asked.clone(),
            }),
            cache,
            pipeline: Pipeline::new(Vec::new()),
            key_columns: vec!["k".into()],
            schema: table_schema(),
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Utf8, true),
        ]));
        let op = CachedLookupJoinOperator::new(
            vec![Arc::new(Column::new("id", 0))],
            table,
            vec![Arc::new(Column::new("k", 0))],
            vec![DataType::Int64],
            None,
            keep_unmatched,
            schema,
        )
        .unwrap();
        (op, asked)
    }

    /// Runs one batch of stream keys; returns the (stream key, v) pairs out, sorted.
    fn probe(
        op: &mut CachedLookupJoinOperator,
        keys: &[Option<i64>],
    ) -> Vec<(i64, Option<String>)> {
        let stream = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
        let batch =
            RecordBatch::try_new(stream, vec![Arc::new(Int64Array::from(keys.to_vec()))]).unwrap();
        let mut out = Vec::new();
        op.process(batch, &mut out).unwrap();
        let mut pairs = Vec::new();
        for b in out {
            let id = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            let v = b.column(2).as_any().downcast_ref::<StringArray>().unwrap();
            for i in 0..b.num_rows() {
                pairs.push((id.value(i), v.is_valid(i).then(|| v.value(i).to_string())));
            }
        }
        pairs.sort();
        pairs
    }

    fn sorted(mut v: Vec<i64>) -> Vec<i64> {
        v.sort_unstable();
        v
    }

    #[test]
    fn each_batch_asks_once_for_the_keys_the_cache_cannot_answer() {
        let cache = cache(10, 10, Duration::from_secs(3600));
        let (mut op, asked) = join(cache, false);
        let out = probe(&mut op, &[Some(1), Some(1), Some(2), Some(3), None]);
        assert_eq!(
            out,
            vec![
                (1, Some("one".into())),
                (1, Some("one".into())),
                (2, Some("deux".into())),
                (2, Some("two".into())),
            ]
        );
        // NULL never asked; 1 asked once although it appears twice
        assert_eq!(asked.lock().unwrap().len(), 1);
        assert_eq!(sorted(asked.lock().unwrap()[0].clone()), vec![1, 2, 3]);
        // found and missing keys are both remembered
        probe(&mut op, &[Some(3), Some(2), Some(1)]);
        assert_eq!(asked.lock().unwrap().len(), 1);
        assert_eq!(op.state_size().keys, 3);
        assert_eq!(op.state_size().rows, 3);
    }

    #[test]
    fn the_least_recently_used_keys_go_beyond_the_limits() {
        let cache = cache(1, 1, Duration::from_secs(3600));
        let (mut op, asked) = join(cache, true);
        probe(&mut op, &[Some(1), Some(3)]); // both fetched
        assert_eq!(
            probe(&mut op, &[Some(2), Some(4)]), // fetched; 1 and 3 evicted
            vec![(2, Some("deux".into())), (2, Some("two".into())), (4, None)]
        );
        probe(&mut op, &[Some(2), Some(4)]); // cached
        probe(&mut op, &[Some(1), Some(3)]); // asked again
        let asked = asked.lock().unwrap();
        assert_eq!(asked.len(), 3, "{asked:?}");
        assert_eq!(sorted(asked[2].clone()), vec![1, 3]);
    }

    #[test]
    fn without_a_cache_for_missing_keys_they_are_asked_every_batch() {
        let cache = cache(10, 0, Duration::from_secs(3600));
        let (mut op, asked) = join(cache, true);
        assert_eq!(
            probe(&mut op, &[Some(1), Some(9)]),
            vec![(1, Some("one".into())), (9, None)]
        );
        probe(&mut op, &[Some(1), Some(9)]);
        let asked = asked.lock().unwrap();
        assert_eq!(asked.len(), 2);
        assert_eq!(asked[1], vec![9]);
    }

    #[test]
    fn refetched_rows_are_compacted_and_still_met() {
        let cache = cache(10, 10, Duration::ZERO);
        let (mut op, _) = join(cache, true);
        for _ in 0..1000 {
            assert_eq!(
                probe(&mut op, &[Some(2), Some(1), Some(5)]),
                vec![
                    (1, Some("one".into())),
                    (2, Some("deux".into())),
                    (2, Some("two".into())),
                    (5, None)
                ]
            );
        }
        assert!(op.chunks.len() <= 257, "{} chunks", op.chunks.len());
        let held: usize = op.chunks.iter().map(|c| c.num_rows()).sum();
        assert!(held <= 2 * 3 + 4096 + 3, "{held} rows held for 3 live");
        assert_eq!(op.state_size().rows, 3);
    }

    #[test]
    fn keys_older_than_the_ttl_are_asked_again() {
        let cache = cache(10, 10, Duration::ZERO);
        let (mut op, asked) = join(cache, false);
        probe(&mut op, &[Some(1)]);
        probe(&mut op, &[Some(1)]);
        assert_eq!(asked.lock().unwrap().len(), 2);
    }
}
