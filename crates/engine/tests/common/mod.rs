//! Helpers shared by the engine's integration tests: plan SQL against a
//! fixed source schema and run batches through the resulting pipeline.

use std::collections::BTreeMap;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use velostream_engine::operators::Pipeline;
use velostream_sql::{parse_application, ApplicationPlanner, SourceResolver, StreamingPlan};

struct FixedSchema(SchemaRef);

impl SourceResolver for FixedSchema {
    fn infer_schema(
        &self,
        _name: &str,
        _props: &BTreeMap<String, String>,
    ) -> Result<SchemaRef, String> {
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
