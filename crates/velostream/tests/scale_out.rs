//! Several `velostream run` processes of one application in one consumer
//! group, against the real broker: each member reads the partitions the
//! group assigns it, ends a bounded read once those are read, and closes
//! windows on the event time of those alone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use velostream_connectors::kafka::admin;

mod kafka_support;
mod run_support;
use kafka_support::{brokers, produce, unique};
use run_support::{spawn_run_with, Member};

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

/// How a member reads its topic.
#[derive(Clone, Copy)]
struct Reading {
    bounded: bool,
    /// `'scale_out' = 'true'`: groups repartition through a topic.
    scale_out: bool,
    /// `'watermark.idle_timeout'`, when not the default.
    idle_timeout: Option<&'static str>,
    /// Checkpoints every second, in the member's own state directory.
    checkpoints: bool,
    /// `--standby-replicas` (with checkpoints).
    standby_replicas: usize,
}

const BOUNDED: Reading = Reading {
    bounded: true,
    scale_out: false,
    idle_timeout: None,
    checkpoints: false,
    standby_replicas: 0,
};
const RUNNING: Reading = Reading {
    bounded: false,
    scale_out: false,
    idle_timeout: None,
    checkpoints: false,
    standby_replicas: 0,
};

/// Running members of an application sharing its source.
const SHARED_RUNNING: Reading = Reading {
    bounded: false,
    scale_out: true,
    idle_timeout: None,
    checkpoints: false,
    standby_replicas: 0,
};

/// The source of every member's application: `topic` read in `group`,
/// with `more` properties.
fn events(topic: &str, group: &str, bounded: bool, more: &str) -> String {
    format!(
        "CREATE STREAM events (id BIGINT, grp VARCHAR, ts BIGINT)
           WITH ('events.type' = 'kafka_source', 'events.topic' = '{topic}',
                 'events.group.id' = '{group}', 'events.bounded' = '{bounded}'{more});"
    )
}

/// Starts a member of `group` reading `topic` into its own output file:
/// per 10-second window and `grp`, the count and the sum of `id`.
fn member(dir: &Path, name: &str, topic: &str, group: &str, reading: Reading) -> (Member, PathBuf) {
    let out = dir.join(format!("{name}.jsonl"));
    let app = dir.join(format!("{name}.sql"));
    let Reading {
        bounded,
        scale_out,
        idle_timeout,
        checkpoints,
        standby_replicas,
    } = reading;
    let idle = idle_timeout
        .map(|t| format!(", 'events.watermark.idle_timeout' = '{t}'"))
        .unwrap_or_default();
    let source = events(
        topic,
        group,
        bounded,
        &format!(", 'events.scale_out' = '{scale_out}'{idle}"),
    );
    std::fs::write(
        &app,
        format!(
            "{source}
             CREATE STREAM per_window AS
               SELECT grp, _window_start AS w, COUNT(*) AS n, SUM(id) AS total FROM events
               GROUP BY grp WINDOW TUMBLING(ts, 10s)
               WITH ('per_window.type' = 'file_sink', 'per_window.path' = '{}');",
            out.display()
        ),
    )
    .unwrap();
    // rebalances are logged: a member that does not end says what it saw
    let state = dir.join(format!("{name}-state")).display().to_string();
    let standby = standby_replicas.to_string();
    let args: &[&str] = match checkpoints {
        true => &[
            "--checkpoint-interval",
            "1s",
            "--state-dir",
            &state,
            "--standby-replicas",
            &standby,
        ],
        false => &[],
    };
    let child = spawn_run_with(
        &app,
        args,
        &[("KAFKA_BROKERS", &brokers()), ("VELOSTREAM_LOG", "info")],
    );
    (Member(Some(child)), out)
}

/// A new 6-partition topic named after `name`, and a new group id.
fn six_partitions(name: &str) -> (String, String) {
    let topic = unique(name);
    admin::create_topic(&admin::plain_client(&brokers()), &topic, 6).unwrap();
    (topic, unique("group"))
}

/// Waits for every member to end by itself (a bounded read), each with
/// success; their output files.
fn ended(members: Vec<(Member, PathBuf)>, within: Duration) -> Vec<PathBuf> {
    let deadline = Instant::now() + within;
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
    outputs
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
    let (topic, group) = six_partitions("split-bounded");
    produce(&topic, &records());
    let dir = tempfile::tempdir().unwrap();
    let members: Vec<(Member, PathBuf)> = ["a", "b", "c"]
        .iter()
        .map(|name| member(dir.path(), name, &topic, &group, BOUNDED))
        .collect();
    let outputs = ended(members, Duration::from_secs(120));
    let counts = window_counts(&outputs);
    assert!(complete(&counts), "windows and their counts: {counts:?}");
}

/// A member the group never gives a partition still ends its bounded read
/// once the group has read the whole topic. Here the group's first member
/// (not bounded, reading every partition) uses the `range` assignor, so
/// the broker refuses the joins of two bounded members using
/// `cooperative-sticky` for as long as it stays: they are never assigned
/// (a loaded machine once left a member unassigned the same way, and its
/// read never ended).
#[test]
fn a_member_the_group_never_assigns_ends_once_the_group_has_read_everything() {
    let (topic, group) = six_partitions("split-unassigned");
    produce(&topic, &records());
    let dir = tempfile::tempdir().unwrap();
    let start = |name: &str, bounded: bool, strategy: &str| {
        let out = dir.path().join(format!("{name}.jsonl"));
        let app = dir.path().join(format!("{name}.sql"));
        let source = events(
            &topic,
            &group,
            bounded,
            &format!(", 'events.partition.assignment.strategy' = '{strategy}'"),
        );
        std::fs::write(
            &app,
            format!(
                "{source}
                 CREATE STREAM copied AS SELECT id FROM events
                   WITH ('copied.type' = 'file_sink', 'copied.path' = '{}');",
                out.display()
            ),
        )
        .unwrap();
        let child = spawn_run_with(&app, &[], &[("KAFKA_BROKERS", &brokers())]);
        (Member(Some(child)), out)
    };
    let (first, first_out) = start("first", false, "range");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&first_out)
        .unwrap_or_default()
        .lines()
        .count()
        < RECORDS as usize
    {
        assert!(
            Instant::now() < deadline,
            "the first member did not read the topic"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let refused: Vec<(Member, PathBuf)> = ["second", "third"]
        .iter()
        .map(|name| start(name, true, "cooperative-sticky"))
        .collect();
    // they end (with nothing: every record was the first member's)
    for out in ended(refused, Duration::from_secs(60)) {
        let lines = std::fs::read_to_string(out).unwrap_or_default();
        assert_eq!(lines.lines().count(), 0, "{lines}");
    }
    first.stop();
}

/// Two members each own some of a 6-partition topic's partitions: windows
/// close on the event time of the partitions a member owns, while the job
/// runs (they once waited for partitions the other member read, and never
/// closed once records stopped arriving).
#[test]
fn windows_close_on_members_that_own_some_of_the_partitions() {
    let (topic, group) = six_partitions("split-windows");
    let dir = tempfile::tempdir().unwrap();
    let (a, a_out) = member(dir.path(), "a", &topic, &group, RUNNING);
    let (b, b_out) = member(dir.path(), "b", &topic, &group, RUNNING);
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

/// [`RECORDS`] records keyed `k<i>`, `grp` one of four groups.
fn records_in_groups() -> Vec<(String, String, i64)> {
    (0..RECORDS)
        .map(|i| {
            let ts = BASE_MS + i * 100;
            (
                format!("k{i}"),
                format!(r#"{{"id": {i}, "grp": "g{}", "ts": {ts}}}"#, i % 4),
                ts,
            )
        })
        .collect()
}

/// Records far ahead in event time, for every group from every input
/// partition (60 keys each): every window of [`records_in_groups`] closes.
fn far_ahead_in_groups() -> Vec<(String, String, i64)> {
    let ts = BASE_MS + 1_000_000;
    (0..240)
        .map(|i| {
            (
                format!("late-k{i}"),
                format!(r#"{{"id": 0, "grp": "g{}", "ts": {ts}}}"#, i % 4),
                ts,
            )
        })
        .collect()
}

/// What each (group, window number) of [`records_in_groups`] holds: the
/// count and the sum of ids.
fn expected_in_groups() -> BTreeMap<(String, i64), (i64, i64)> {
    let mut expected: BTreeMap<(String, i64), (i64, i64)> = BTreeMap::new();
    for i in 0..RECORDS {
        let entry = expected
            .entry((format!("g{}", i % 4), i / 100))
            .or_default();
        entry.0 += 1;
        entry.1 += i;
    }
    expected
}

/// Every answer the members wrote per (group, window number), windows
/// numbered in time order (their starts sort as written).
fn answers(outputs: &[PathBuf]) -> BTreeMap<(String, i64), Vec<(i64, i64)>> {
    let rows: Vec<serde_json::Value> = outputs
        .iter()
        .flat_map(|path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            text.lines()
                .filter_map(|line| serde_json::from_str(line).ok())
                .collect::<Vec<_>>()
        })
        .collect();
    let mut starts: Vec<String> = rows.iter().map(|v| v["w"].to_string()).collect();
    starts.sort();
    starts.dedup();
    let mut answered: BTreeMap<(String, i64), Vec<(i64, i64)>> = BTreeMap::new();
    for v in &rows {
        let start = v["w"].to_string();
        let window = starts.iter().position(|w| *w == start).unwrap() as i64;
        answered
            .entry((v["grp"].as_str().unwrap().to_string(), window))
            .or_default()
            .push((v["n"].as_i64().unwrap(), v["total"].as_i64().unwrap()));
    }
    answered
}

/// The answers when each (group, window) was answered exactly once.
fn answered_once(
    answered: &BTreeMap<(String, i64), Vec<(i64, i64)>>,
) -> BTreeMap<(String, i64), (i64, i64)> {
    answered
        .iter()
        .map(|(k, answers)| {
            assert_eq!(answers.len(), 1, "{k:?} was answered {answers:?}");
            (k.clone(), answers[0])
        })
        .collect()
}

/// Waits at most `within` until the members' `outputs` answer every
/// (group, window) of [`records_in_groups`], then checks that each was
/// answered once, with its whole count and sum. With `repeats`, identical
/// answers count as one (at least once: a window answered again after a
/// partition moved).
fn assert_answered_whole(outputs: &[PathBuf], within: Duration, repeats: bool) {
    let expected = expected_in_groups();
    let deadline = Instant::now() + within;
    loop {
        let mut answered = answers(outputs);
        if repeats {
            for values in answered.values_mut() {
                values.sort();
                values.dedup();
            }
        }
        if answered.len() >= expected.len() && answered.values().all(|v| !repeats || v.len() == 1) {
            assert_eq!(answered_once(&answered), expected);
            return;
        }
        assert!(
            Instant::now() < deadline,
            "windows not answered whole within {within:?}: {answered:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Three members share a 6-partition topic keyed by record while the
/// statement groups by another column: with `'scale_out'`, the records
/// pass through a repartition topic keyed by the group, so each window of
/// each group is answered once, by one member, whole. (Without it every
/// member answered with the part of each group it happened to read.)
#[test]
fn a_group_other_than_the_message_key_is_answered_whole_by_one_member() {
    let (topic, group) = six_partitions("split-groups");
    produce(&topic, &records_in_groups());
    let dir = tempfile::tempdir().unwrap();
    // a process whose input partitions start more than the idle timeout
    // after the first records crossed makes them late (on a loaded machine
    // the group joins take that long); a bounded read closes its windows at
    // the end anyway
    let shared = Reading {
        bounded: true,
        scale_out: true,
        idle_timeout: Some("120s"),
        checkpoints: false,
        standby_replicas: 0,
    };
    let members: Vec<(Member, PathBuf)> = ["a", "b", "c"]
        .iter()
        .map(|name| member(dir.path(), name, &topic, &group, shared))
        .collect();
    let outputs = ended(members, Duration::from_secs(120));
    assert_eq!(answered_once(&answers(&outputs)), expected_in_groups());
    let partitions = admin::partitions(
        &admin::plain_client(&brokers())
            .create::<rdkafka::consumer::BaseConsumer>()
            .unwrap(),
        &format!("{group}-per_window-repartition"),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(
        partitions.len(),
        6,
        "the repartition topic has the input's partitions"
    );
}

/// The same while the members keep running: windows close on the
/// records' event time as they cross the repartition topic, each group's
/// window answered once.
#[test]
fn repartitioned_windows_close_while_the_members_run() {
    let (topic, group) = six_partitions("split-groups-running");
    let dir = tempfile::tempdir().unwrap();
    let (a, a_out) = member(dir.path(), "a", &topic, &group, SHARED_RUNNING);
    let (b, b_out) = member(dir.path(), "b", &topic, &group, SHARED_RUNNING);
    let mut input = records_in_groups();
    input.extend(far_ahead_in_groups());
    produce(&topic, &input);
    let outputs = [a_out, b_out];
    assert_answered_whole(&outputs, Duration::from_secs(60), false);
    a.stop();
    b.stop();
}

/// `velostream check --replicas N` compares N with the partitions of every
/// topic the configured applications read as a consumer group: processes
/// beyond the partition count would own nothing.
#[test]
fn check_warns_when_replicas_exceed_a_topics_partitions() {
    let topic = unique("split-check");
    admin::create_topic(&admin::plain_client(&brokers()), &topic, 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("app.sql"),
        format!(
            "CREATE STREAM events (id BIGINT, grp VARCHAR, ts BIGINT)
               WITH ('events.type' = 'kafka_source', 'events.topic' = '{topic}',
                     'events.scale_out' = 'true');
             CREATE STREAM counts AS SELECT grp, COUNT(*) AS n FROM events GROUP BY grp;"
        ),
    )
    .unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "velostream:\n  kafka:\n    bootstrap_servers: {}\n  state_dir: {}\n  applications:\n    - app.sql\n",
            brokers(),
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let check = |replicas: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_velostream"))
            .args(["check", "--replicas", replicas, "--config"])
            .arg(&config)
            .env_remove("KAFKA_BROKERS")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let said = check("3");
    assert!(
        said.contains(&format!(
            "WARN scale-out: {} job counts: 3 replicas, but topic '{topic}' has 2 partitions: 1 replica(s) would own none",
            dir.path().join("app.sql").display()
        )),
        "{said}"
    );
    let said = check("2");
    assert!(
        said.contains(&format!(
            "job counts: topic '{topic}' has 2 partitions for 2 replicas"
        )),
        "{said}"
    );
}

/// Waits until some window of `outputs` closed: the members are reading
/// and writing.
fn await_first_answer(outputs: &[PathBuf]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while answers(outputs).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no window closed before the kill"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Kills the first of `members` with SIGKILL; the others.
fn kill_first(members: Vec<(Member, PathBuf)>) -> Vec<Member> {
    let mut members = members.into_iter().map(|(m, _)| m);
    members.next().unwrap().kill();
    members.collect()
}

/// Produces the `rest` of [`records_in_groups`], then records far ahead so
/// that every window closes.
fn produce_rest(topic: &str, rest: &[(String, String, i64)]) {
    let mut rest = rest.to_vec();
    rest.extend(far_ahead_in_groups());
    produce(topic, &rest);
}

/// One of three members is killed with SIGKILL in the middle of the
/// input and another starts: its input partitions and repartition
/// partitions move to the others, which read them again from the group's
/// last commit. Every window of every group is still answered with its
/// whole count (a window answered before the kill may be answered again,
/// with the same values: at least once, deduplicated).
#[test]
fn a_member_killed_mid_input_leaves_every_group_answered_whole() {
    let (topic, group) = six_partitions("split-groups-kill");
    let dir = tempfile::tempdir().unwrap();
    let members: Vec<(Member, PathBuf)> = ["a", "b", "c"]
        .iter()
        .map(|name| member(dir.path(), name, &topic, &group, SHARED_RUNNING))
        .collect();
    let mut outputs: Vec<PathBuf> = members.iter().map(|(_, out)| out.clone()).collect();
    let input = records_in_groups();
    let (first, second) = input.split_at(input.len() / 2);
    produce(&topic, first);
    // the first windows close: the members are reading and writing
    await_first_answer(&outputs);
    let members = kill_first(members);
    let (d, d_out) = member(dir.path(), "d", &topic, &group, SHARED_RUNNING);
    outputs.push(d_out);
    produce_rest(&topic, second);
    assert_answered_whole(&outputs, Duration::from_secs(90), true);
    for member in members {
        member.stop();
    }
    d.stop();
}

/// Members that checkpoint keep each repartition partition's state in
/// the statement's changelog topics. One is killed while a window is
/// open and its partitions' groups are half counted: the group commits
/// their repartition offsets at checkpoints, so a new owner that started
/// empty would miss the records before them. It restores the state from
/// the changelog instead, and every window is answered whole.
#[test]
fn state_moves_through_the_changelog_when_a_member_is_killed() {
    let logs = kill_a_checkpointing_member("split-changelog", 0, true);
    assert!(
        logs.contains("(checkpoint "),
        "no member restored a partition's state from the changelog:\n{logs}"
    );
}

/// With a standby replica, the survivor of two members keeps a copy of
/// the other's partitions of state as it writes them; when that member
/// is killed, the survivor takes them over from its copies (reading only
/// what was kept since), and every window is answered whole.
#[test]
fn a_standby_copy_takes_over_a_killed_members_state() {
    let logs = kill_a_checkpointing_member("split-standby", 1, false);
    assert!(
        logs.contains("from the standby copy"),
        "the survivor did not take the partitions over from its standby copies:\n{logs}"
    );
}

/// Two members that checkpoint (with `standby_replicas`) answer the
/// groups; the first is killed while windows are half counted, and a
/// third member starts if `third`. Every window must be answered whole;
/// returns the members' logs.
fn kill_a_checkpointing_member(name: &str, standby_replicas: usize, third: bool) -> String {
    let (topic, group) = six_partitions(name);
    let dir = tempfile::tempdir().unwrap();
    let checkpointed = Reading {
        checkpoints: true,
        standby_replicas,
        ..SHARED_RUNNING
    };
    let members: Vec<(Member, PathBuf)> = ["a", "b"]
        .iter()
        .map(|name| member(dir.path(), name, &topic, &group, checkpointed))
        .collect();
    let mut outputs: Vec<PathBuf> = members.iter().map(|(_, out)| out.clone()).collect();
    let input = records_in_groups();
    // the first windows close; window 2 (ids 200..299) stays open, half
    // counted, its groups in the members' state
    let (first, second) = input.split_at(250);
    produce(&topic, first);
    await_first_answer(&outputs);
    // checkpoints (each second) keep the open windows' groups and commit
    // the repartition offsets past their records
    std::thread::sleep(Duration::from_secs(4));
    let mut members = kill_first(members);
    if third {
        let (c, c_out) = member(dir.path(), "c", &topic, &group, checkpointed);
        outputs.push(c_out);
        members.push(c);
    }
    produce_rest(&topic, second);
    assert_answered_whole(&outputs, Duration::from_secs(90), true);
    members.into_iter().map(Member::stop).collect()
}
