//! Helpers shared by the engine's integration tests: plan SQL against a
//! fixed source schema and run batches through the resulting pipeline.

use std::collections::BTreeMap;

use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use velostream_engine::operators::Pipeline;
use velostream_engine::state::OperatorSnapshot;
use velostream_engine::PipelineBuilder;
use velostream_sql::{
    parse_application, ApplicationPlanner, InferError, SourceResolver, StreamingPlan,
};

struct FixedSchema(SchemaRef);

impl SourceResolver for FixedSchema {
    fn infer_schema(
        &self,
        _name: &str,
        _props: &BTreeMap<String, String>,
    ) -> Result<SchemaRef, InferError> {
        Ok(self.0.clone())
    }
}

/// Plans the first query of `sql`, whose sources all have `schema`.
pub fn plan(sql: &str, schema: SchemaRef) -> StreamingPlan {
    let statements = parse_application(sql).unwrap();
    ApplicationPlanner::new(&FixedSchema(schema))
        .plan(&statements)
        .unwrap()
        .remove(0)
}

/// Pushes `batches` through `pipeline`, then finishes it when `finish`.
pub fn run(pipeline: &mut Pipeline, batches: Vec<RecordBatch>, finish: bool) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    for b in batches {
        pipeline.process(b, &mut out).unwrap();
    }
    if finish {
        pipeline.finish(&mut out).unwrap();
    }
    out
}

/// Batches as a table with sorted rows, for order-insensitive comparison.
#[allow(dead_code)]
pub fn text(batches: &[RecordBatch]) -> String {
    let mut lines: Vec<String> = pretty_format_batches(batches)
        .unwrap()
        .to_string()
        .lines()
        .map(String::from)
        .collect();
    let header = lines.drain(..3.min(lines.len())).collect::<Vec<_>>();
    lines.sort();
    format!("{}\n{}", header.join("\n"), lines.join("\n"))
}

/// Snapshots every stateful operator of `pipeline`, serialized as a
/// checkpoint would keep them (by operator index).
#[allow(dead_code)]
pub fn snapshot_all(pipeline: &mut Pipeline) -> BTreeMap<usize, Vec<u8>> {
    let mut saved = BTreeMap::new();
    for (i, op) in pipeline.operators_mut().iter_mut().enumerate() {
        if let Some(state) = op.state() {
            saved.insert(i, state.snapshot().unwrap().to_bytes().unwrap());
        }
    }
    saved
}

/// Restores what [`snapshot_all`] saved into a fresh pipeline of the same plan;
/// returns how many operators were restored.
#[allow(dead_code)]
pub fn restore_all(pipeline: &mut Pipeline, saved: &BTreeMap<usize, Vec<u8>>) -> usize {
    let mut restored = 0;
    for (i, op) in pipeline.operators_mut().iter_mut().enumerate() {
        if let Some(state) = op.state() {
            let bytes = saved.get(&i).expect("saved");
            state
                .restore(OperatorSnapshot::from_bytes(bytes).unwrap())
                .unwrap();
            restored += 1;
        }
    }
    restored
}

/// Runs `batches` through `plan` once uninterrupted, and once with a
/// snapshot after `split` batches restored into a fresh pipeline that runs
/// the rest; asserts both give the same rows. Returns the rows and how many
/// operators were restored.
#[allow(dead_code)]
pub fn assert_resumes_identically(
    plan: &StreamingPlan,
    batches: Vec<RecordBatch>,
    split: usize,
) -> (Vec<RecordBatch>, usize) {
    let builder = PipelineBuilder::new();
    let mut whole = builder.build(plan, true, Default::default()).unwrap();
    let expected = run(&mut whole, batches.clone(), true);

    let mut before = builder.build(plan, true, Default::default()).unwrap();
    let mut actual = run(&mut before, batches[..split].to_vec(), false);
    let backend = snapshot_all(&mut before);
    // taking a snapshot does not disturb the running pipeline
    let continued = run(&mut before, batches[split..].to_vec(), true);
    let mut after = builder.build(plan, true, Default::default()).unwrap();
    let restored = restore_all(&mut after, &backend);
    let resumed = run(&mut after, batches[split..].to_vec(), true);
    assert_eq!(text(&resumed), text(&continued));
    actual.extend(resumed);
    assert_eq!(text(&actual), text(&expected));
    (expected, restored)
}

/// `k VARCHAR, at BIGINT` (event time in epoch milliseconds).
#[allow(dead_code)]
pub fn timed_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, true),
        Field::new("at", DataType::Int64, true),
    ]))
}

/// 100 records of [`timed_schema`] over 10 keys, at times `start..start + 100` ms.
#[allow(dead_code)]
pub fn timed_batch(start: i64) -> RecordBatch {
    let keys: Vec<String> = (0..100).map(|i| format!("k{}", i % 10)).collect();
    let times: Vec<i64> = (0..100).map(|i| start + i).collect();
    RecordBatch::try_new(
        timed_schema(),
        vec![
            Arc::new(StringArray::from(keys)),
            Arc::new(Int64Array::from(times)),
        ],
    )
    .unwrap()
}
