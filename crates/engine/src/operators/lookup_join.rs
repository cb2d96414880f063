//! Stream–table join: the table is loaded before the stream starts and
//! indexed by its join key; every stream record looks its key up. INNER
//! keeps matches only, LEFT keeps unmatched stream records with NULL table
//! columns. NULL keys never match. An extra condition (`ON a.k = b.k AND
//! a.x > b.y`) is checked on each candidate pair.

// foldhash: much cheaper than SipHash for the per-record key lookups
use hashbrown::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;

use super::{evaluate_all, Operator, StateSize};
use crate::error::Result;

pub struct LookupJoinOperator {
    stream_keys: Vec<Arc<dyn PhysicalExpr>>,
    table: RecordBatch,
    converter: RowConverter,
    /// Table rows by key (row format).
    index: HashMap<Box<[u8]>, Vec<u32>>,
    key_types: Vec<datafusion::arrow::datatypes::DataType>,
    filter: Option<Arc<dyn PhysicalExpr>>,
    keep_unmatched: bool,
    schema: SchemaRef,
}

impl LookupJoinOperator {
    /// `table` holds the table side's rows; `table_keys` are evaluated on it once.
    pub fn new(
        stream_keys: Vec<Arc<dyn PhysicalExpr>>,
        table: RecordBatch,
        table_keys: &[Arc<dyn PhysicalExpr>],
        filter: Option<Arc<dyn PhysicalExpr>>,
        keep_unmatched: bool,
        schema: SchemaRef,
    ) -> Result<Self> {
        let key_columns = evaluate_all(table_keys, &table)?;
        let key_types: Vec<_> = key_columns.iter().map(|c| c.data_type().clone()).collect();
        let converter = RowConverter::new(
            key_types
                .iter()
                .map(|t| SortField::new(t.clone()))
                .collect(),
        )?;
        let rows = converter.convert_columns(&key_columns)?;
        let mut index: HashMap<Box<[u8]>, Vec<u32>> = HashMap::new();
        for (i, row) in rows.iter().enumerate() {
            if key_columns.iter().all(|c| c.is_valid(i)) {
                index.entry(row.as_ref().into()).or_default().push(i as u32);
            }
        }
        Ok(Self {
            stream_keys,
            table,
            converter,
            index,
            key_types,
            filter,
            keep_unmatched,
            schema,
        })
    }

    fn joined(
        &self,
        batch: &RecordBatch,
        left: &UInt32Array,
        right: &UInt32Array,
    ) -> Result<RecordBatch> {
        let mut columns: Vec<ArrayRef> = batch
            .columns()
            .iter()
            .map(|c| take(c, left, None))
            .collect::<std::result::Result<_, _>>()?;
        for c in self.table.columns() {
            columns.push(take(c, right, None)?);
        }
        super::grouped::conform(&self.schema, columns)
    }
}

impl Operator for LookupJoinOperator {
    fn name(&self) -> &'static str {
        "lookup_join"
    }

    fn process(&mut self, batch: RecordBatch, out: &mut Vec<RecordBatch>) -> Result<()> {
        let keys = evaluate_all(&self.stream_keys, &batch)?
            .into_iter()
            .zip(&self.key_types)
            .map(|(k, t)| {
                if k.data_type() == t {
                    Ok(k)
                } else {
                    cast(&k, t)
                }
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let rows = self.converter.convert_columns(&keys)?;
        let (mut left, mut right): (Vec<u32>, Vec<Option<u32>>) = (Vec::new(), Vec::new());
        for (i, row) in rows.iter().enumerate() {
            let matches = match keys.iter().all(|k| k.is_valid(i)) {
                true => self.index.get(row.as_ref()),
                false => None,
            };
            for &j in matches.into_iter().flatten() {
                left.push(i as u32);
                right.push(Some(j));
            }
        }
        let (left, right) = (UInt32Array::from(left), UInt32Array::from(right));
        let mut matched = self.joined(&batch, &left, &right)?;
        let mut kept: Vec<bool> = vec![true; left.len()];
        if let Some(filter) = &self.filter {
            let mask = filter.evaluate(&matched)?.into_array(matched.num_rows())?;
            let mask = mask.as_boolean();
            kept = (0..mask.len())
                .map(|i| mask.is_valid(i) && mask.value(i))
                .collect();
            matched = datafusion::arrow::compute::filter_record_batch(&matched, mask)?;
        }
        if !self.keep_unmatched {
            out.push(matched);
            return Ok(());
        }
        // LEFT: stream records without a (passing) match, with NULL table columns.
        let mut has_match = vec![false; batch.num_rows()];
        for (k, &keep) in kept.iter().enumerate() {
            if keep {
                has_match[left.value(k) as usize] = true;
            }
        }
        let unmatched: Vec<u32> = (0..batch.num_rows() as u32)
            .filter(|&i| !has_match[i as usize])
            .collect();
        out.push(matched);
        if !unmatched.is_empty() {
            let nulls = UInt32Array::from(vec![None; unmatched.len()]);
            out.push(self.joined(&batch, &UInt32Array::from(unmatched), &nulls)?);
        }
        Ok(())
    }

    fn state_size(&self) -> StateSize {
        StateSize {
            windows: 0,
            keys: self.index.len(),
        }
    }
}
