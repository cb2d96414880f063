//! Several `velostream run` processes of one application in one consumer
//! group, against the real broker: each member reads the partitions the
//! group assigns it, ends a bounded read once those are read, and closes
//! windows on the event time of those alone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use velostream_connectors::kafka::admin;

mod kafka_support;
mod run_support;
use kafka_support::{brokers, produce, unique};
use run_support::{spawn_run, stop};

/// Records per test, 100 per 10-second window.
const RECORDS: i64 = 600;
const BASE_MS: i64 = 1_700_000_000_000;

/// `RECORDS` records keyed `k<i>` over the topic's partitions, event time
/// 100 ms apart from `BASE_MS`: windows of 10 s hold 100 each.
fn records() -> Vec<(String, String, i64)> {
    (0..RECORDS)
        .map(|i| {
            let ts = BASE_MS + i * 100;
            (
                format!("k{i}"),
                format!(r#"{{"id": {i}, "grp": "all", "ts": {ts}}}"#),
                ts,
            )
        })
        .collect()
}

/// A member process, killed if the test fails before it ends.
struct Member(Option<Child>);

impl Member {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("running")
    }

    fn stop(mut self) {
        stop(self.0.take().expect("running"));
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts a member of `group` reading `topic` into its own output file.
fn member(dir: &Path, name: &str, topic: &str, group: &str, bounded: bool) -> (Member, PathBuf) {
    let out = dir.join(format!("{name}.jsonl"));
    let app = dir.join(format!("{name}.sql"));
    std::fs::write(
        &app,
        format!(
            "CREATE STREAM events (id BIGINT, grp VARCHAR, ts BIGINT)
               WITH ('events.type' = 'kafka_source', 'events.topic' = '{topic}',
                     'events.group.id' = '{group}', 'events.bounded' = '{bounded}');
             CREATE STREAM per_window AS
               SELECT grp, _window_start AS w, COUNT(*) AS n FROM events
               GROUP BY grp WINDOW TUMBLING(ts, 10s)
               WITH ('per_window.type' = 'file_sink', 'per_window.path' = '{}');",
            out.display()
        ),
    )
    .unwrap();
    let child = spawn_run(&app, &[("KAFKA_BROKERS", &brokers())]);
    (Member(Some(child)), out)
}

/// Records counted per window, summed over the members' outputs.
fn window_counts(outputs: &[PathBuf]) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    for path in outputs {
        for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            *counts.entry(v["w"].to_string()).or_insert(0) += v["n"].as_i64().unwrap();
        }
    }
    counts
}

/// Every window of [`records`] holds at least its 100 records (a
/// partition moved by a rebalance before its offsets were committed is
/// read again: at least once).
fn complete(counts: &BTreeMap<String, i64>) -> bool {
    counts.len() == (RECORDS / 100) as usize && counts.values().all(|&n| n >= 100)
}

/// Three members start together on a 6-partition topic with a bounded
/// read: each ends once the partitions it owns are read (a member reading
/// every partition of the topic never ended while others owned some), and
/// together they count every record.
#[test]
fn members_of_one_group_each_end_a_bounded_read_of_the_partitions_they_own() {
    let topic = unique("split-bounded");
    let group = unique("group");
    admin::create_topic(&admin::plain_client(&brokers()), &topic, 6).unwrap();
    produce(&topic, &records());
    let dir = tempfile::tempdir().unwrap();
    let members: Vec<(Member, PathBuf)> = ["a", "b", "c"]
        .iter()
        .map(|name| member(dir.path(), name, &topic, &group, true))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut outputs = Vec::new();
    for (mut member, out) in members {
        let status = loop {
            if let Some(status) = member.child().try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let mut child = member.0.take().expect("running");
                let _ = child.kill();
                let stderr = child.wait_with_output().unwrap().stderr;
                panic!(
                    "a member's bounded read never ended:\n{}",
                    String::from_utf8_lossy(&stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(status.success(), "a member failed: {status}");
        outputs.push(out);
    }
    let counts = window_counts(&outputs);
    assert!(complete(&counts), "windows and their counts: {counts:?}");
}

/// Two members each own some of a 6-partition topic's partitions: windows
/// close on the event time of the partitions a member owns, while the job
/// runs (they once waited for partitions the other member read, and never
/// closed once records stopped arriving).
#[test]
fn windows_close_on_members_that_own_some_of_the_partitions() {
    let topic = unique("split-windows");
    let group = unique("group");
    admin::create_topic(&admin::plain_client(&brokers()), &topic, 6).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (a, a_out) = member(dir.path(), "a", &topic, &group, false);
    let (b, b_out) = member(dir.path(), "b", &topic, &group, false);
    let mut input = records();
    // far ahead in event time, on every partition: the last windows close
    input.extend((0..60).map(|i| {
        let ts = BASE_MS + 1_000_000;
        (
            format!("k{i}"),
            format!(r#"{{"id": -1, "grp": "all", "ts": {ts}}}"#),
            ts,
        )
    }));
    produce(&topic, &input);
    let outputs = [a_out, b_out];
    let deadline = Instant::now() + Duration::from_secs(60);
    while !complete(&window_counts(&outputs)) {
        assert!(
            Instant::now() < deadline,
            "windows not closed while running: {:?}",
            window_counts(&outputs)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    a.stop();
    b.stop();
}
