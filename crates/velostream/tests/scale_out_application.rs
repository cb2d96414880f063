//! One application of three statements run by three `velostream run`
//! processes sharing a 6-partition topic, against the real broker: a
//! one-minute tumbling aggregate grouped by a column that is not the
//! message key (repartitioned), a stream–table join against a compacted
//! topic, and a non-windowed GROUP BY (repartitioned). One process is
//! killed with SIGKILL in the middle and another started. The answers,
//! with identical repeats removed (at least once), equal the sums computed
//! here and those of one process reading the same input alone.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use velostream_connectors::kafka::admin;

mod kafka_support;
mod run_support;
use kafka_support::{brokers, produce, unique};
use run_support::{spawn_run_with, Member};

const BASE_MS: i64 = 1_700_000_000_000;
/// Records of the test, 500 ms apart: ten minutes of event time.
const RECORDS: i64 = 1200;
const GROUPS: i64 = 4;

/// `(key, value, time)` of record `i`: keyed by id, grouped by `g<i % 4>`.
fn record(i: i64, ts: i64) -> (String, String, i64) {
    (
        format!("k{i}"),
        format!(r#"{{"id": {i}, "grp": "g{}", "ts": {ts}}}"#, i % GROUPS),
        ts,
    )
}

/// The records, then records far ahead in event time on every partition
/// for every group, so that every window of the records closes.
fn input() -> Vec<(String, String, i64)> {
    let mut all: Vec<_> = (0..RECORDS).map(|i| record(i, BASE_MS + i * 500)).collect();
    all.extend((RECORDS..RECORDS + 240).map(|i| record(i, BASE_MS + 10_000_000)));
    all
}

/// The application, its sinks files in `dir` under `name`.
fn application(dir: &Path, name: &str, (events, regions, group): (&str, &str, &str)) -> PathBuf {
    let out = |statement: &str| {
        format!(
            "'{statement}.type' = 'file_sink', '{statement}.path' = '{}'",
            dir.join(format!("{name}-{statement}.jsonl")).display()
        )
    };
    let app = dir.join(format!("{name}.sql"));
    std::fs::write(
        &app,
        format!(
            "CREATE STREAM events (id BIGINT, grp VARCHAR, ts BIGINT)
               WITH ('events.type' = 'kafka_source', 'events.topic' = '{events}',
                     'events.group.id' = '{group}', 'events.scale_out' = 'true',
                     'events.session.timeout.ms' = '6000');
             CREATE STREAM regions (grp VARCHAR, region VARCHAR)
               WITH ('regions.type' = 'kafka_source', 'regions.topic' = '{regions}',
                     'regions.key.field' = 'grp');
             CREATE STREAM per_minute AS
               SELECT grp, _window_start AS w, COUNT(*) AS n, SUM(id) AS total FROM events
               GROUP BY grp WINDOW TUMBLING(ts, 1m)
               WITH ({});
             CREATE STREAM located AS
               SELECT e.id, r.region FROM events e JOIN regions r ON e.grp = r.grp
               WITH ({});
             CREATE STREAM totals AS
               SELECT grp, COUNT(*) AS n, SUM(id) AS total FROM events GROUP BY grp
               WITH ({});",
            out("per_minute"),
            out("located"),
            out("totals"),
        ),
    )
    .unwrap();
    app
}

/// Starts process `name` of the application, checkpointing every second
/// under `guarantee`.
fn start(dir: &Path, name: &str, app: &Path, guarantee: &str) -> Member {
    let state = dir.join(format!("{name}-state")).display().to_string();
    Member(Some(spawn_run_with(
        app,
        &[
            "--checkpoint-interval",
            "1s",
            "--state-dir",
            &state,
            "--guarantee",
            guarantee,
        ],
        &[("KAFKA_BROKERS", &brokers()), ("VELOSTREAM_LOG", "info")],
    )))
}

/// The rows every process wrote for `statement`.
fn rows(dir: &Path, statement: &str) -> Vec<serde_json::Value> {
    let mut rows = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        if file.ends_with(&format!("-{statement}.jsonl")) {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            rows.extend(text.lines().filter_map(|l| serde_json::from_str(l).ok()));
        }
    }
    rows
}

/// What the processes answered, repeats removed.
#[derive(Debug, PartialEq, Eq)]
struct Answers {
    /// Per (group, window number in time order): each distinct (count, sum).
    per_minute: BTreeMap<(String, usize), BTreeSet<(i64, i64)>>,
    /// Distinct (id, region) rows.
    located: BTreeSet<(i64, String)>,
    /// Per group: the (count, sum) of its highest count (counts only grow).
    totals: BTreeMap<String, (i64, i64)>,
}

fn answers(dir: &Path) -> Answers {
    let per_minute_rows = rows(dir, "per_minute");
    let starts: BTreeSet<String> = per_minute_rows.iter().map(|v| v["w"].to_string()).collect();
    let starts: Vec<String> = starts.into_iter().collect();
    let mut per_minute: BTreeMap<(String, usize), BTreeSet<(i64, i64)>> = BTreeMap::new();
    for v in &per_minute_rows {
        let start = v["w"].to_string();
        let window = starts.iter().position(|w| *w == start).unwrap();
        per_minute
            .entry((v["grp"].as_str().unwrap().to_string(), window))
            .or_default()
            .insert((v["n"].as_i64().unwrap(), v["total"].as_i64().unwrap()));
    }
    let located = rows(dir, "located")
        .iter()
        .map(|v| {
            (
                v["id"].as_i64().unwrap(),
                v["region"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut totals: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for v in rows(dir, "totals") {
        let answer = (v["n"].as_i64().unwrap(), v["total"].as_i64().unwrap());
        let best = totals
            .entry(v["grp"].as_str().unwrap().to_string())
            .or_default();
        *best = (*best).max(answer);
    }
    Answers {
        per_minute,
        located,
        totals,
    }
}

/// The answers computed from the input.
fn expected() -> Answers {
    let mut per_minute: BTreeMap<(String, usize), (i64, i64)> = BTreeMap::new();
    let mut totals: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut located = BTreeSet::new();
    for i in 0..RECORDS + 240 {
        let grp = format!("g{}", i % GROUPS);
        if i < RECORDS {
            // windows start on whole minutes since the epoch
            let minute = |ms: i64| ms.div_euclid(60_000);
            let number = (minute(BASE_MS + i * 500) - minute(BASE_MS)) as usize;
            let window = per_minute.entry((grp.clone(), number)).or_default();
            window.0 += 1;
            window.1 += i;
        }
        let total = totals.entry(grp.clone()).or_default();
        total.0 += 1;
        total.1 += i;
        located.insert((i, region_of(&grp)));
    }
    Answers {
        per_minute: per_minute
            .into_iter()
            .map(|(k, v)| (k, BTreeSet::from([v])))
            .collect(),
        located,
        totals,
    }
}

fn region_of(grp: &str) -> String {
    format!("region-of-{grp}")
}

/// Waits at most `within` for the answers in `dir` to cover every window,
/// id and group; returns them.
fn complete_answers(dir: &Path, within: Duration) -> Answers {
    let expected = expected();
    let deadline = Instant::now() + within;
    loop {
        let got = answers(dir);
        let complete = got.per_minute.len() >= expected.per_minute.len()
            && got.located.len() >= expected.located.len()
            && got.totals.values().map(|t| t.0).sum::<i64>() >= RECORDS + 240;
        if complete || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The topics of a run: input, table, group.
fn topics() -> (String, String, String) {
    let events = unique("app-events");
    let regions = unique("app-regions");
    let client = admin::plain_client(&brokers());
    admin::create_topic(&client, &events, 6).unwrap();
    admin::create_topic(&client, &regions, 1).unwrap();
    let table: Vec<_> = (0..GROUPS)
        .map(|g| {
            let grp = format!("g{g}");
            let row = format!(r#"{{"grp": "{grp}", "region": "{}"}}"#, region_of(&grp));
            (grp, row, BASE_MS)
        })
        .collect();
    produce(&regions, &table);
    (events, regions, unique("app"))
}

/// Three processes of the application start; once results flow and
/// checkpoints have kept the open windows and totals, one is killed with
/// SIGKILL and a fourth started, and the rest of the input is produced;
/// `finished` waits for the answers. The processes' logs.
fn run_through_a_kill(
    dir: &Path,
    topics: (&str, &str, &str),
    guarantee: &str,
    flowing: impl Fn() -> bool,
    finished: impl FnOnce(),
) -> Vec<String> {
    let members: Vec<Member> = ["a", "b", "c"]
        .iter()
        .map(|name| start(dir, name, &application(dir, name, topics), guarantee))
        .collect();
    let input = input();
    let (first, rest) = input.split_at(RECORDS as usize / 2);
    produce(topics.0, first);
    let deadline = Instant::now() + Duration::from_secs(90);
    while !flowing() {
        assert!(
            Instant::now() < deadline,
            "no window closed before the kill"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_secs(4));
    let mut members = members.into_iter();
    members.next().unwrap().kill();
    let d = start(dir, "d", &application(dir, "d", topics), guarantee);
    produce(topics.0, rest);
    finished();
    members.chain([d]).map(Member::stop).collect()
}

fn assert_restored_from_a_changelog(logs: &[String]) {
    assert!(
        logs.iter().any(|l| l.contains("(checkpoint ")),
        "no process restored a partition's state from a changelog:\n{}",
        logs.join("\n")
    );
}

#[test]
fn three_processes_answer_one_application_whole_through_a_kill() {
    let (events, regions, group) = topics();
    let topics = (events.as_str(), regions.as_str(), group.as_str());
    let shared = tempfile::tempdir().unwrap();
    let dir = shared.path();
    let mut got = None;
    let logs = run_through_a_kill(
        dir,
        topics,
        "at_least_once",
        || !answers(dir).per_minute.is_empty(),
        || got = Some(complete_answers(dir, Duration::from_secs(150))),
    );
    let got = got.unwrap();
    let want = expected();
    assert_eq!(
        got.per_minute, want.per_minute,
        "windows answered other than once and whole"
    );
    assert_eq!(got.located, want.located, "joined rows");
    assert_eq!(got.totals, want.totals, "totals");
    assert_restored_from_a_changelog(&logs);

    // one process alone, from the start of the same input, answers the same
    let alone = tempfile::tempdir().unwrap();
    let group = unique("alone");
    let app = application(alone.path(), "alone", (topics.0, topics.1, &group));
    let member = start(alone.path(), "alone", &app, "at_least_once");
    let by_one = complete_answers(alone.path(), Duration::from_secs(150));
    member.stop();
    assert_eq!(by_one, got, "one process and three answered differently");
}
