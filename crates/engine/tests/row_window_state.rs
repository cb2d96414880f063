//! Row-function state (counters, previous values, running aggregates, rows
//! waiting for LEAD) survives a snapshot.

mod common;

use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, true),
        Field::new("v", DataType::Int64, true),
    ]))
}

fn batch(start: i64) -> RecordBatch {
    let keys: Vec<String> = (0..20).map(|i| format!("k{}", i % 3)).collect();
    let values: Vec<i64> = (0..20).map(|i| start + (i * 7) % 5).collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from(keys)),
            Arc::new(Int64Array::from(values)),
        ],
    )
    .unwrap()
}

#[test]
fn row_functions_survive_a_snapshot() {
    let plan = common::plan(
        "SELECT k, v, ROW_NUMBER() OVER (PARTITION BY k ORDER BY v) AS rn, RANK() OVER (PARTITION BY k ORDER BY v) AS rk, \
         LAG(v, 2, -1) OVER (PARTITION BY k ORDER BY v) AS lag2, LEAD(v) OVER (PARTITION BY k ORDER BY v) AS next_v, \
         SUM(v) OVER (PARTITION BY k ORDER BY v) AS running, \
         AVG(v) OVER (PARTITION BY k ORDER BY v ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS avg3 \
         FROM t WITH ('t.type' = 'test')",
        schema(),
    );
    let batches = vec![batch(0), batch(10), batch(20), batch(30)];
    let (expected, restored) = common::assert_resumes_identically(&plan, batches, 2);
    assert_eq!(restored, 1);
    assert_eq!(expected.iter().map(|b| b.num_rows()).sum::<usize>(), 80);
}
