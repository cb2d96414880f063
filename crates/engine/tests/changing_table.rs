//! A join against a table whose source never ends: each stream batch sees
//! the updates that had arrived when it was processed, the latest per key.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::physical_expr::expressions::col;
use velostream_engine::connector::{Source, SourceEvent};
use velostream_engine::operators::lookup_join::{JoinTable, LookupJoinOperator};
use velostream_engine::operators::{Operator, Pipeline};

/// An unbounded table source fed by the test.
struct Updates(SchemaRef, Receiver<RecordBatch>);

impl Source for Updates {
    fn schema(&self) -> SchemaRef {
        self.0.clone()
    }
    fn poll_batch(&mut self) -> velostream_engine::Result<SourceEvent> {
        Ok(match self.1.try_recv() {
            Ok(b) => SourceEvent::Batch(b),
            Err(_) => SourceEvent::Idle,
        })
    }
    fn is_bounded(&self) -> bool {
        false
    }
}

fn table_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, true),
        Field::new("tier", DataType::Utf8, true),
    ]))
}

fn stream_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("oid", DataType::Int64, true),
        Field::new("cid", DataType::Utf8, true),
    ]))
}

fn update(tx: &Sender<RecordBatch>, rows: &[(&str, &str)]) {
    let ids: StringArray = rows.iter().map(|r| Some(r.0)).collect();
    let tiers: StringArray = rows.iter().map(|r| Some(r.1)).collect();
    let batch = RecordBatch::try_new(table_schema(), vec![Arc::new(ids), Arc::new(tiers)]).unwrap();
    tx.send(batch).unwrap();
}

fn orders(first: i64, cids: &[&str]) -> RecordBatch {
    let oids: Int64Array = (first..first + cids.len() as i64).map(Some).collect();
    let cids: StringArray = cids.iter().map(|c| Some(*c)).collect();
    RecordBatch::try_new(stream_schema(), vec![Arc::new(oids), Arc::new(cids)]).unwrap()
}

/// `stream LEFT/INNER JOIN table ON cid = id` with the table fed by `updates`.
fn join_against(updates: Receiver<RecordBatch>, keep_unmatched: bool) -> LookupJoinOperator {
    let joined: Vec<Field> = stream_schema()
        .fields()
        .iter()
        .chain(table_schema().fields().iter())
        .map(|f| f.as_ref().clone())
        .collect();
    LookupJoinOperator::new(
        vec![col("cid", &stream_schema()).unwrap()],
        JoinTable::Feed {
            source: Box::new(Updates(table_schema(), updates)),
            pipeline: Pipeline::new(Vec::new()),
            schema: table_schema(),
        },
        vec![col("id", &table_schema()).unwrap()],
        None,
        None,
        keep_unmatched,
        Arc::new(Schema::new(joined)),
    )
    .unwrap()
}

fn text(batches: &[RecordBatch]) -> String {
    pretty_format_batches(batches).unwrap().to_string()
}

#[test]
fn each_batch_sees_the_table_as_it_was_when_processed() {
    let (tx, rx) = channel();
    let mut join = join_against(rx, true);
    let mut step = |batch: RecordBatch| {
        let mut out = Vec::new();
        join.process(batch, &mut out).unwrap();
        text(&out)
    };

    // nothing has arrived yet: LEFT keeps the order with NULL table columns
    let before = step(orders(1, &["c1"]));
    assert!(before.contains("| 1   | c1  |    |      |"), "{before}");

    update(&tx, &[("c1", "silver"), ("c2", "gold")]);
    let first = step(orders(2, &["c1", "c2"]));
    assert!(first.contains("| 2   | c1  | c1 | silver |"), "{first}");
    assert!(first.contains("| 3   | c2  | c2 | gold   |"), "{first}");

    // an update replaces the key's row; the other key is unchanged
    update(&tx, &[("c1", "gold")]);
    update(&tx, &[("c1", "platinum")]);
    let second = step(orders(4, &["c1", "c2"]));
    assert!(second.contains("| 4   | c1  | c1 | platinum |"), "{second}");
    assert!(second.contains("| 5   | c2  | c2 | gold     |"), "{second}");
    assert_eq!(join.state_size().keys, 2);
}

#[test]
fn a_changing_table_compacts_superseded_rows() {
    let (tx, rx) = channel();
    let mut join = join_against(rx, false);
    // 10 keys updated 1,000 times each: memory follows the keys, not the updates
    for round in 0..1000 {
        let tier = format!("t{round}");
        let rows: Vec<(String, String)> =
            (0..10).map(|k| (format!("c{k}"), tier.clone())).collect();
        let rows: Vec<(&str, &str)> = rows.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        update(&tx, &rows);
        if round % 100 == 99 {
            let mut out = Vec::new();
            join.process(orders(round, &["c3"]), &mut out).unwrap();
            assert!(text(&out).contains(&format!("t{round} ")));
        }
    }
    let size = join.state_size();
    assert_eq!(size.keys, 10);
    assert!(size.rows <= 2 * 10 + 1024 + 10, "rows held: {}", size.rows);
}
