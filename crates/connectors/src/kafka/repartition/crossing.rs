//! How records cross a repartition topic: one Arrow IPC stream per
//! message, the ordered streams they travel on, and which of them the job
//! was already handed.

use std::collections::BTreeMap;
use std::io::Cursor;

use datafusion::arrow::array::{Int32Array, Int64Array};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use velostream_engine::connector::Position;
use velostream_engine::Result;

/// Column `i` of `batch`, if it holds 32-bit integers.
pub(super) fn int32(batch: &RecordBatch, i: usize) -> Option<Int32Array> {
    batch
        .column(i)
        .as_any()
        .downcast_ref::<Int32Array>()
        .cloned()
}

/// The number of the ordered stream a record crossed the topic on:
/// records of one input partition keep their order within each
/// repartition partition (one process reads an input partition at a
/// time, and delivers to each repartition partition in order), but not
/// across two of them, so watermarks are kept per pair.
pub(super) fn stream_of(repartition: i32, input: i32, input_partitions: usize) -> i32 {
    repartition * input_partitions as i32 + input
}

/// A batch as one Arrow IPC stream.
pub(super) fn encode(batch: &RecordBatch) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut writer = StreamWriter::try_new(&mut out, &batch.schema())?;
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    Ok(out)
}

/// The batches of one Arrow IPC stream.
pub(super) fn decode(bytes: &[u8]) -> Result<Vec<RecordBatch>> {
    let reader = StreamReader::try_new(Cursor::new(bytes), None)?;
    Ok(reader.collect::<std::result::Result<Vec<_>, _>>()?)
}

/// Per ordered stream (repartition partition, input partition): the last
/// input offset handed to the job. A record at or before it was written
/// again by the input partition's next reader after a failure (or a
/// rebalance that moved the input partition before its offsets were
/// committed), and is dropped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct HandedOver {
    last: BTreeMap<(i32, i32), i64>,
}

impl HandedOver {
    /// The rows of a message read from repartition partition `partition`
    /// (their input partitions and offsets) not handed over yet, in order;
    /// notes them as handed over.
    pub(super) fn fresh(
        &mut self,
        partition: i32,
        inputs: &Int32Array,
        offsets: &Int64Array,
    ) -> Vec<u32> {
        let mut fresh = Vec::with_capacity(inputs.len());
        for row in 0..inputs.len() {
            let last = self
                .last
                .entry((partition, inputs.value(row)))
                .or_insert(-1);
            if offsets.value(row) > *last {
                *last = offsets.value(row);
                fresh.push(row as u32);
            }
        }
        fresh
    }

    /// The last input offset handed over per input partition, of the
    /// streams of repartition partition `partition`.
    pub(super) fn of_partition(&self, partition: i32) -> BTreeMap<i32, i64> {
        self.last
            .range((partition, i32::MIN)..=(partition, i32::MAX))
            .map(|(&(_, p), &o)| (p, o))
            .collect()
    }

    /// Replaces what is known of repartition partition `partition`'s
    /// streams with `seen` (its kept state's).
    pub(super) fn set_partition(&mut self, partition: i32, seen: &BTreeMap<i32, i64>) {
        self.forget_partition(partition);
        for (&p, &o) in seen {
            self.last.insert((partition, p), o);
        }
    }

    /// Forgets repartition partition `partition`'s streams (its state left
    /// this process).
    pub(super) fn forget_partition(&mut self, partition: i32) {
        self.last.retain(|&(r, _), _| r != partition);
    }

    /// As kept in a checkpoint: `{"<repartition>/<input>": offset}`.
    pub(super) fn to_position(&self) -> Position {
        Position::Object(
            self.last
                .iter()
                .map(|((r, p), o)| (format!("{r}/{p}"), Position::from(*o)))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Decimal128Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    #[test]
    fn a_batch_crosses_the_topic_unchanged() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Decimal128(18, 4), true),
            Field::new("n", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec![Some("a"), None])),
                Arc::new(
                    Decimal128Array::from(vec![Some(12_345), None])
                        .with_precision_and_scale(18, 4)
                        .unwrap(),
                ),
                Arc::new(Int64Array::from(vec![1, 2])),
            ],
        )
        .unwrap();
        let back = decode(&encode(&batch).unwrap()).unwrap();
        assert_eq!(back, vec![batch]);
    }

    #[test]
    fn records_written_again_after_a_failure_are_handed_over_once() {
        let mut handed = HandedOver::default();
        // input partition 0, offsets 10..13, and partition 1, offset 5
        let first = handed.fresh(
            2,
            &Int32Array::from(vec![0, 0, 1, 0]),
            &Int64Array::from(vec![10, 11, 5, 12]),
        );
        assert_eq!(first, vec![0, 1, 2, 3]);
        // the next reader of input partition 0 starts again at offset 11
        let again = handed.fresh(
            2,
            &Int32Array::from(vec![0, 0, 0, 1]),
            &Int64Array::from(vec![11, 12, 13, 6]),
        );
        assert_eq!(again, vec![2, 3], "offsets 11 and 12 were handed over");
        // another repartition partition is another stream
        assert_eq!(
            handed.fresh(3, &Int32Array::from(vec![0]), &Int64Array::from(vec![11])),
            vec![0]
        );
        assert_eq!(
            handed.to_position(),
            serde_json::json!({"2/0": 13, "2/1": 6, "3/0": 11})
        );
        // a partition's part moves with its state
        let of_2 = handed.of_partition(2);
        assert_eq!(of_2, BTreeMap::from([(0, 13), (1, 6)]));
        let mut next_owner = HandedOver::default();
        next_owner.set_partition(2, &of_2);
        assert_eq!(
            next_owner.fresh(
                2,
                &Int32Array::from(vec![0, 0]),
                &Int64Array::from(vec![13, 14])
            ),
            vec![1]
        );
        handed.forget_partition(2);
        assert_eq!(handed.of_partition(2), BTreeMap::new());
        assert_eq!(handed.of_partition(3), BTreeMap::from([(0, 11)]));
    }
}
