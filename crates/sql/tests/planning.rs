//! The front end on its own: statements, planning, lowering, windows, join
//! time and event time, against sources whose connector the test plays
//! (this crate links no connector, no Kafka client and no RocksDB).

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use velostream_sql::{
    parse_application, ApplicationPlanner, InferError, SourceResolver, SourceTraits, StatementKind,
    StreamNode, StreamingPlan,
};

/// Every source has the columns `symbol`, `price` and `ts` (epoch
/// milliseconds); a source of type `log` adds a `_partition` column and
/// is unbounded, as a message log's connector would say.
struct Trades;

impl SourceResolver for Trades {
    fn infer_schema(
        &self,
        _name: &str,
        _props: &BTreeMap<String, String>,
    ) -> Result<SchemaRef, InferError> {
        Ok(Arc::new(Schema::new(vec![
            Field::new("symbol", DataType::Utf8, true),
            Field::new("price", DataType::Float64, true),
            Field::new("ts", DataType::Int64, true),
        ])))
    }

    fn traits(&self, _name: &str, props: &BTreeMap<String, String>) -> SourceTraits {
        if props.get("type").map(String::as_str) != Some("log") {
            return SourceTraits::default();
        }
        SourceTraits {
            system_columns: vec![Field::new("_partition", DataType::Int32, false)],
            unbounded: true,
            ..Default::default()
        }
    }
}

fn plan(sql: &str) -> Vec<StreamingPlan> {
    let statements = parse_application(sql).unwrap_or_else(|e| panic!("{e}"));
    ApplicationPlanner::new(&Trades)
        .plan(&statements)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn plan_error(sql: &str) -> String {
    let statements = match parse_application(sql) {
        Ok(s) => s,
        Err(e) => return e.to_string(),
    };
    match ApplicationPlanner::new(&Trades).plan(&statements) {
        Ok(_) => panic!("planned: {sql}"),
        Err(e) => e.to_string(),
    }
}

fn nodes(plan: &StreamingPlan) -> Vec<&'static str> {
    plan.root
        .flow()
        .iter()
        .map(|n| match n {
            StreamNode::Scan { .. } => "scan",
            StreamNode::WindowAssign { .. } => "window_assign",
            StreamNode::Filter { .. } => "filter",
            StreamNode::Project { .. } => "project",
            StreamNode::Aggregate { .. } => "aggregate",
            StreamNode::RowWindow { .. } => "row_window",
            StreamNode::LookupJoin { .. } => "lookup_join",
            StreamNode::IntervalJoin { .. } => "interval_join",
            StreamNode::Limit { .. } => "limit",
            StreamNode::Sort { .. } => "sort",
        })
        .collect()
}

#[test]
fn statements_have_their_kinds_and_names() {
    let plans = plan(
        "CREATE STREAM big AS SELECT symbol FROM trades WHERE price > 10 WITH ('trades.type' = 'file');\n\
         SELECT symbol FROM big;",
    );
    assert_eq!(plans.len(), 2);
    assert_eq!(plans[0].kind, StatementKind::CreateStream);
    assert_eq!(plans[0].name, "big");
    assert_eq!(plans[1].kind, StatementKind::Select);
    assert_eq!(nodes(&plans[0]), ["scan", "filter", "project"]);
}

#[test]
fn a_window_plans_assignment_then_aggregation() {
    let plans = plan(
        "CREATE STREAM out AS SELECT symbol, _window_start AS ws, COUNT(*) AS n FROM trades \
         GROUP BY symbol WINDOW TUMBLING(ts, 1m) WITH ('trades.type' = 'file');",
    );
    assert_eq!(
        nodes(&plans[0]),
        ["scan", "window_assign", "aggregate", "project"]
    );
    assert_eq!(plans[0].key, ["symbol"]);
    let StreamNode::WindowAssign { time_column, .. } = plans[0].root.flow()[1] else {
        panic!("no window assignment");
    };
    assert_eq!(time_column.as_deref(), Some("ts"));
}

#[test]
fn the_connector_says_which_system_columns_a_source_has() {
    let plans = plan(
        "CREATE STREAM out AS SELECT symbol, _partition FROM trades WITH ('trades.type' = 'log');",
    );
    assert!(plans[0].sources[0].traits.unbounded);
    assert!(plans[0].output_schema.field_with_name("_partition").is_ok());
    let err = plan_error(
        "CREATE STREAM out AS SELECT symbol, _partition FROM trades WITH ('trades.type' = 'file');",
    );
    assert!(err.contains("_partition"), "{err}");
}

#[test]
fn within_becomes_an_interval_join_on_the_event_time_columns() {
    let plans = plan(
        "CREATE STREAM out AS SELECT a.symbol, b.price FROM trades a JOIN fills b WITHIN 30s \
         ON a.symbol = b.symbol WITH ('trades.type' = 'file', 'fills.type' = 'file', \
         'trades.event.time.field' = 'ts', 'fills.event.time.field' = 'ts');",
    );
    assert!(
        nodes(&plans[0]).contains(&"interval_join"),
        "{:?}",
        nodes(&plans[0])
    );
}

#[test]
fn within_gives_the_interval_join_the_bounds_as_written() {
    let plans = plan(
        "CREATE STREAM out AS SELECT a.symbol FROM trades a JOIN fills b WITHIN 30s \
         ON a.symbol = b.symbol AND b.price > a.price WITH ('trades.type' = 'file', \
         'fills.type' = 'file', 'trades.event.time.field' = 'ts', 'fills.event.time.field' = 'ts');",
    );
    let join = plans[0]
        .root
        .flow()
        .into_iter()
        .find_map(|n| match n {
            StreamNode::IntervalJoin { bounds, filter, .. } => {
                Some((bounds.clone(), filter.clone()))
            }
            _ => None,
        })
        .expect("an interval join");
    let (bounds, filter) = join;
    assert_eq!((bounds.lower_ms, bounds.upper_ms), (-30_000, 30_000));
    assert_eq!(bounds.left_time.to_string(), "a.ts");
    assert_eq!(bounds.right_time.to_string(), "b.ts");
    // the marker is taken out; the rest of ON stays the join's filter
    let filter = filter.expect("the price condition").to_string();
    assert!(
        filter.contains("price") && !filter.contains("within"),
        "{filter}"
    );
}

#[test]
fn an_interval_on_an_epoch_event_time_is_a_number_in_its_unit() {
    let plans = plan(
        "CREATE STREAM out AS SELECT ts + INTERVAL '1' SECOND AS later FROM trades \
         WITH ('trades.type' = 'file', 'trades.event.time.field' = 'ts', \
         'trades.event.time.format' = 'epoch_seconds');",
    );
    let later = plans[0].output_schema.field_with_name("later").unwrap();
    assert_eq!(later.data_type(), &DataType::Int64);
    let err = plan_error(
        "CREATE STREAM out AS SELECT price + INTERVAL '1' SECOND AS x FROM trades WITH ('trades.type' = 'file');",
    );
    assert!(err.contains("cannot add an INTERVAL"), "{err}");
}

#[test]
fn errors_carry_a_position_and_a_hint() {
    let err =
        plan_error("CREATE STREAM out AS SELECT symbl FROM trades WITH ('trades.type' = 'file');");
    assert!(err.contains("symbl"), "{err}");
    assert!(err.contains("line 1, column 29"), "no position: {err}");
    assert!(
        err.contains("did you mean 'trades.symbol'"),
        "no hint: {err}"
    );
    let err = plan_error("CREATE STREAM out AS SELECT symbol FROM trades WHERE;");
    assert!(err.contains("syntax error"), "{err}");
}
