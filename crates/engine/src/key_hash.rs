//! Which of `n` parts each row of a batch belongs to, by a hash of its key
//! columns: the same key always lands in the same part, in every run and
//! every process.
//!
//! Two divisions use it and must not line up with each other. The worker
//! threads of one process (`processing.parallelism`) take
//! [`KeySpread::Workers`]; the partitions of a repartition topic shared by
//! several processes take [`KeySpread::Partitions`], the same hash passed
//! through a 64-bit finalizer. Without the finalizer the two would share
//! their low bits (FNV-1a keeps a key's byte parity in bit 0), and a
//! process owning the even partitions of a 6-partition topic would hand
//! every row to worker 0 of 2.

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};

use crate::error::Result;

/// How a key's hash is turned into a part number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySpread {
    /// Worker threads of one pipeline: FNV-1a of the key, as checkpoints
    /// taken with several workers expect.
    Workers,
    /// Partitions of a repartition topic: FNV-1a, then mixed.
    Partitions,
}

/// Divides the rows of batches by the hash of named key columns. The
/// columns are resolved against the first batch (every batch of one
/// stream has the same schema).
#[derive(Debug)]
pub struct KeyHasher {
    names: Vec<String>,
    spread: KeySpread,
    columns: Option<Vec<usize>>,
    converter: Option<RowConverter>,
}

impl KeyHasher {
    pub fn new(names: Vec<String>, spread: KeySpread) -> Self {
        Self {
            names,
            spread,
            columns: None,
            converter: None,
        }
    }

    /// The key columns hashed.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The rows of `batch` belonging to each of `n` parts, in row order.
    pub fn split(&mut self, batch: &RecordBatch, n: usize) -> Result<Vec<Vec<u32>>> {
        let mut parts = vec![Vec::new(); n];
        if n == 0 {
            return Ok(parts);
        }
        if self.columns.is_none() {
            let schema = batch.schema();
            self.columns = Some(
                self.names
                    .iter()
                    .map(|n| schema.index_of(n))
                    .collect::<std::result::Result<Vec<_>, _>>()?,
            );
        }
        let keys: Vec<_> = self
            .columns
            .iter()
            .flatten()
            .map(|&i| batch.column(i).clone())
            .collect();
        if self.converter.is_none() {
            let fields = keys
                .iter()
                .map(|k| SortField::new(k.data_type().clone()))
                .collect();
            self.converter = Some(RowConverter::new(fields)?);
        }
        let rows = self
            .converter
            .as_ref()
            .expect("created above")
            .convert_columns(&keys)?;
        for (row, key) in rows.iter().enumerate() {
            let hash = fnv1a(key.as_ref());
            let hash = match self.spread {
                KeySpread::Workers => hash,
                KeySpread::Partitions => mix(hash),
            };
            parts[(hash % n as u64) as usize].push(row as u32);
        }
        Ok(parts)
    }
}

/// FNV-1a: a fixed, fast hash of a key's row encoding.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The 64-bit finalizer of MurmurHash3: every output bit depends on every
/// input bit, so parts taken from it are independent of parts taken from
/// the unmixed hash.
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn keys(n: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("v", DataType::Int64, false),
        ]));
        let k: Vec<String> = (0..n).map(|i| format!("key-{i}")).collect();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(k)),
                Arc::new(Int64Array::from_iter_values(0..n)),
            ],
        )
        .unwrap()
    }

    #[test]
    fn a_key_lands_in_one_part_whatever_batch_it_comes_in() {
        let all = keys(1000);
        let mut hasher = KeyHasher::new(vec!["k".into()], KeySpread::Partitions);
        let parts = hasher.split(&all, 6).unwrap();
        let part_of = |row: u32| parts.iter().position(|p| p.contains(&row)).unwrap();
        let mut again = KeyHasher::new(vec!["k".into()], KeySpread::Partitions);
        let tail = all.slice(500, 500);
        for (part, rows) in again.split(&tail, 6).unwrap().iter().enumerate() {
            for &row in rows {
                assert_eq!(part_of(row + 500), part);
            }
        }
        assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), all.num_rows());
    }

    #[test]
    fn the_workers_of_one_partition_share_its_keys_out() {
        // a process owning partitions 0, 2 and 4 of 6 and running 2 workers:
        // each worker gets a fair share of those partitions' keys
        let all = keys(6000);
        let partitions = KeyHasher::new(vec!["k".into()], KeySpread::Partitions)
            .split(&all, 6)
            .unwrap();
        let workers = KeyHasher::new(vec!["k".into()], KeySpread::Workers)
            .split(&all, 2)
            .unwrap();
        let even: Vec<u32> = [0, 2, 4]
            .iter()
            .flat_map(|&p| partitions[p].clone())
            .collect();
        let on_first = even.iter().filter(|r| workers[0].contains(r)).count();
        let share = on_first as f64 / even.len() as f64;
        assert!((0.4..0.6).contains(&share), "worker 0 got {share:.2}");
    }
}
