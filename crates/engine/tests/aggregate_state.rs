//! Aggregation state survives a snapshot: an operator restored from a
//! snapshot taken mid-stream produces exactly what an uninterrupted one does.

mod common;

use std::sync::Arc;

use common::{run, text};
use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use velostream_engine::PipelineBuilder;
use velostream_sql::StreamingPlan;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, true),
        Field::new("v", DataType::Int64, true),
    ]))
}

fn plan(sql: &str) -> StreamingPlan {
    common::plan(sql, schema())
}

fn batch(keys: &[&str], values: &[Option<i64>]) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from(keys.to_vec())),
            Arc::new(Int64Array::from(values.to_vec())),
        ],
    )
    .unwrap()
}

const SQL: &str =
    "SELECT k, COUNT(*) AS n, SUM(v) AS s, COUNT(DISTINCT v) AS d, AVG(v) AS a, MIN(v) AS lo \
                   FROM t GROUP BY k EMIT FINAL WITH ('t.type' = 'test')";

fn first_half() -> RecordBatch {
    batch(&["a", "b", "a", "c"], &[Some(1), Some(2), Some(1), None])
}

fn second_half() -> RecordBatch {
    batch(&["b", "a", "d", "c"], &[Some(5), Some(3), Some(4), Some(7)])
}

#[test]
fn restored_aggregate_matches_uninterrupted_run() {
    let plan = plan(SQL);
    let builder = PipelineBuilder::new();

    let mut whole = builder.build(&plan, true, Default::default()).unwrap();
    let expected = run(&mut whole, vec![first_half(), second_half()], true);

    let mut before = builder.build(&plan, true, Default::default()).unwrap();
    assert!(
        run(&mut before, vec![first_half()], false).is_empty(),
        "EMIT FINAL emits nothing before the end"
    );
    let saved = common::snapshot_all(&mut before);
    drop(before);

    let mut after = builder.build(&plan, true, Default::default()).unwrap();
    let restored = common::restore_all(&mut after, &saved);
    assert_eq!(restored, 1);
    let actual = run(&mut after, vec![second_half()], true);

    assert_eq!(text(&actual), text(&expected));
    let rendered = text(&actual);
    // a: 1, 1, 3 → n 3, sum 5, distinct 2; c: NULL, 7 → n 2, sum 7, distinct 1
    assert!(
        rendered.contains("| a | 3 | 5 | 2 | 1.6666666666666667 | 1  |"),
        "{rendered}"
    );
    assert!(
        rendered.contains("| c | 2 | 7 | 1 | 7.0                | 7  |"),
        "{rendered}"
    );
}

#[test]
fn restoring_into_a_used_operator_is_refused() {
    let plan = plan(SQL);
    let builder = PipelineBuilder::new();
    let mut used = builder.build(&plan, true, Default::default()).unwrap();
    run(&mut used, vec![first_half()], false);
    let snapshot = used.operators_mut()[0].state().unwrap().snapshot().unwrap();
    let err = used.operators_mut()[0]
        .state()
        .unwrap()
        .restore(snapshot)
        .unwrap_err();
    assert!(err.to_string().contains("already holds groups"), "{err}");
}

#[test]
fn emit_changes_continues_from_restored_totals() {
    let plan =
        plan("SELECT k, SUM(v) AS s FROM t GROUP BY k EMIT CHANGES WITH ('t.type' = 'test')");
    let builder = PipelineBuilder::new();
    let mut before = builder.build(&plan, true, Default::default()).unwrap();
    run(&mut before, vec![first_half()], false);
    let bytes = before.operators_mut()[0]
        .state()
        .unwrap()
        .snapshot()
        .unwrap()
        .to_bytes()
        .unwrap();

    let mut after = builder.build(&plan, true, Default::default()).unwrap();
    let snapshot = velostream_engine::state::OperatorSnapshot::from_bytes(&bytes).unwrap();
    after.operators_mut()[0]
        .state()
        .unwrap()
        .restore(snapshot)
        .unwrap();
    let out = run(&mut after, vec![batch(&["a"], &[Some(10)])], true);
    let rendered = text(&out);
    assert!(
        rendered.contains("| a | 12 |"),
        "a was 1 + 1 before the snapshot: {rendered}"
    );
    assert_eq!(out.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
}
