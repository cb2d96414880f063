//! Window state is bounded: closed windows free their state, and the
//! number of open windows and keys is reported.

mod common;

use velostream_engine::PipelineBuilder;

use common::{timed_batch as batch, timed_schema as schema};

#[test]
fn closed_windows_free_their_state() {
    for emit in ["EMIT FINAL", "EMIT CHANGES"] {
        let sql = format!("SELECT k, COUNT(*) AS n FROM t GROUP BY k WINDOW TUMBLING(at, 100ms) {emit} WITH ('t.type' = 'test')");
        let plan = common::plan(&sql, schema());
        let mut pipeline = PipelineBuilder::new()
            .build(&plan, true, Default::default())
            .unwrap();
        let mut peak = 0;
        for i in 0..50 {
            common::run(&mut pipeline, vec![batch(i * 100)], false);
            let size = pipeline.state_size();
            peak = peak.max(size.windows);
            // the batch's own window stays open until the next batch moves the watermark
            assert!(size.windows <= 1, "{emit}: {size:?} after batch {i}");
            assert!(size.keys <= 10, "{emit}: {size:?} after batch {i}");
        }
        assert_eq!(peak, 1, "{emit}");
        let out = common::run(&mut pipeline, vec![], true);
        assert_eq!(
            pipeline.state_size().windows,
            0,
            "{emit}: everything closes at the end"
        );
        if emit == "EMIT FINAL" {
            assert_eq!(
                out.iter().map(|b| b.num_rows()).sum::<usize>(),
                10,
                "the last window's 10 keys"
            );
        }
    }
}

#[test]
fn sessions_are_freed_when_they_close() {
    let plan = common::plan("SELECT k, COUNT(*) AS n FROM t GROUP BY k WINDOW SESSION(at, 10ms) WITH ('t.type' = 'test')", schema());
    let mut pipeline = PipelineBuilder::new()
        .build(&plan, true, Default::default())
        .unwrap();
    for i in 0..20 {
        // each batch is 100 ms of dense records: one session per key, closed by the next batch
        common::run(&mut pipeline, vec![batch(i * 1000)], false);
        assert!(
            pipeline.state_size().windows <= 10,
            "{:?}",
            pipeline.state_size()
        );
    }
    let out = common::run(&mut pipeline, vec![], true);
    assert_eq!(out.iter().map(|b| b.num_rows()).sum::<usize>(), 10);
    assert_eq!(pipeline.state_size(), Default::default());
}

#[test]
fn window_state_and_watermark_survive_a_snapshot() {
    for emit in ["EMIT FINAL", "EMIT CHANGES"] {
        let sql = format!(
            "SELECT k, _window_start, COUNT(*) AS n, SUM(at) AS s, COUNT(DISTINCT at % 7) AS d FROM t \
             GROUP BY k WINDOW TUMBLING(at, 150ms) {emit} WITH ('t.type' = 'test')"
        );
        let plan = common::plan(&sql, schema());
        let batches = vec![batch(0), batch(100), batch(200), batch(300)];
        let (_, restored) = common::assert_resumes_identically(&plan, batches, 2);
        assert_eq!(restored, 2, "{emit}: window assignment and aggregate");
    }
}

#[test]
fn sessions_survive_a_snapshot() {
    let plan = common::plan(
        "SELECT k, _window_start, _window_end, COUNT(*) AS n, SUM(at) AS s FROM t GROUP BY k \
         WINDOW SESSION(at, 30ms) WITH ('t.type' = 'test', 't.watermark.max_out_of_orderness' = '50ms')",
        schema(),
    );
    // gaps between batches: 0..100, 100..200 touch; 400.. starts new sessions
    let batches = vec![batch(0), batch(100), batch(400), batch(500)];
    let (expected, restored) = common::assert_resumes_identically(&plan, batches, 2);
    assert_eq!(restored, 2, "window assignment and sessions");
    assert_eq!(
        expected.iter().map(|b| b.num_rows()).sum::<usize>(),
        20,
        "10 keys x 2 sessions"
    );
}

#[test]
fn processing_time_windows_close_on_the_clock_without_input() {
    let plan = common::plan(
        "SELECT k, COUNT(*) AS n FROM t GROUP BY k WINDOW TUMBLING(PROCTIME(), 100ms) WITH ('t.type' = 'test')",
        schema(),
    );
    let mut pipeline = PipelineBuilder::new()
        .build(&plan, false, Default::default())
        .unwrap();
    let out = common::run(&mut pipeline, vec![batch(0)], false);
    assert!(out.is_empty(), "the window is still open");
    let mut emitted = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while emitted.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the window never closed"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        pipeline.idle(&mut emitted).unwrap();
    }
    // the event times in `at` (0..100) play no part: all 100 records were
    // processed at one moment, so each key has its 10 in one window
    assert_eq!(emitted.iter().map(|b| b.num_rows()).sum::<usize>(), 10);
    assert_eq!(pipeline.state_size().windows, 0);
}
