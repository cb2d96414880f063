//! The interval join keeps only the other stream's records that a later
//! driving record can still reach: its state is bounded by the interval,
//! and it survives a snapshot (buffer, other stream's position and event
//! time) with the results of an uninterrupted run.

mod common;

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use velostream_engine::connector::{Position, Source, SourceEvent, TableData, TableLoader};
use velostream_engine::{JobMetrics, PipelineBuilder, Result};

use common::{timed_batch as batch, timed_schema as schema};

/// The other stream: batches handed out one poll at a time; its position
/// is the number handed out.
struct Batches(Vec<RecordBatch>, usize);

impl Source for Batches {
    fn schema(&self) -> SchemaRef {
        schema()
    }

    fn poll_batch(&mut self) -> Result<SourceEvent> {
        Ok(match self.0.get(self.1) {
            Some(b) => {
                self.1 += 1;
                SourceEvent::Batch(b.clone())
            }
            None => SourceEvent::End,
        })
    }

    fn is_bounded(&self) -> bool {
        true
    }

    fn position(&self) -> Option<Position> {
        Some(Position::from(self.1))
    }

    fn seek(&mut self, position: &Position) -> Result<()> {
        self.1 = position.as_u64().unwrap_or_default() as usize;
        Ok(())
    }
}

struct OtherStream;

impl TableLoader for OtherStream {
    fn load(
        &self,
        _name: &str,
        _schema: SchemaRef,
        _metrics: Arc<JobMetrics>,
    ) -> Result<TableData> {
        unreachable!("interval joins open a stream")
    }

    fn open(
        &self,
        _name: &str,
        _schema: SchemaRef,
        _metrics: Arc<JobMetrics>,
    ) -> Result<Box<dyn Source>> {
        Ok(Box::new(Batches(
            (0..100).map(|i| batch(i * 100)).collect(),
            0,
        )))
    }
}

#[test]
fn buffered_records_expire_with_the_driving_stream() {
    let plan = common::plan(
        "SELECT a.k, a.at, b.at AS other_at FROM a JOIN b ON a.k = b.k AND b.at BETWEEN a.at AND a.at + 50 \
         WITH ('a.type' = 'test', 'b.type' = 'test')",
        schema(),
    );
    let mut pipeline = PipelineBuilder::new()
        .with_table_loader(Arc::new(OtherStream))
        .build(&plan, true, Default::default())
        .unwrap();
    let mut rows = 0;
    for i in 0..100 {
        let out = common::run(&mut pipeline, vec![batch(i * 100)], false);
        rows += out.iter().map(|b| b.num_rows()).sum::<usize>();
        // the other stream is read ahead one batch at most, and expired behind
        let state = pipeline.state_size();
        assert!(state.keys <= 10, "{state:?}");
        // at most the batch read ahead plus the 50 ms still reachable
        assert!(state.rows <= 200, "after batch {i}: {state:?}");
    }
    // each driving record meets the 5 or 6 same-key records in [t, t + 50]
    // (ids 10 apart); the last batch's records near the end meet fewer
    assert!(
        rows > 100 * 100 * 5 - 1000 && rows <= 100 * 100 * 6,
        "{rows} rows"
    );
}

#[test]
fn an_interval_join_resumes_from_a_snapshot_with_the_same_results() {
    for join in ["JOIN", "FULL JOIN"] {
        let plan = common::plan(
            &format!(
                "SELECT a.k, a.at, b.at AS other_at FROM a {join} b ON a.k = b.k AND b.at BETWEEN a.at AND a.at + 50 \
                 WITH ('a.type' = 'test', 'b.type' = 'test')"
            ),
            schema(),
        );
        let build = || {
            PipelineBuilder::new()
                .with_table_loader(Arc::new(OtherStream))
                .build(&plan, true, Default::default())
                .unwrap()
        };
        let input: Vec<RecordBatch> = (0..60).map(|i| batch(i * 100)).collect();
        let expected = common::run(&mut build(), input.clone(), true);

        let mut before = build();
        let mut actual = common::run(&mut before, input[..25].to_vec(), false);
        let saved = common::snapshot_all(&mut before);
        drop(before);
        let mut after = build();
        assert_eq!(common::restore_all(&mut after, &saved), 1, "{join}");
        actual.extend(common::run(&mut after, input[25..].to_vec(), true));
        assert_eq!(common::text(&actual), common::text(&expected), "{join}");
    }
}
