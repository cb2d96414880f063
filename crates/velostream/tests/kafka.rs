//! End-to-end tests against a real Kafka-protocol broker: the one in
//! `KAFKA_BROKERS` (scripts/test.sh starts a local broker and sets it).
//! Expected results are computed here from the generated input, not by
//! the engine.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use rdkafka::ClientConfig;
use velostream_connectors::kafka::admin;

mod kafka_support;
mod run_support;
use kafka_support::{brokers, produce, read_all, unique};
use run_support::{spawn_run, stop};

/// Runs `sql` with `velostream run`; panics with its stderr on failure.
fn run_app(sql: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app.sql");
    std::fs::write(&app, sql).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_velostream"))
        .args(["run"])
        .arg(&app)
        .env("KAFKA_BROKERS", brokers())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "velostream run failed:\n{stderr}");
    stderr
}

#[test]
fn windowed_aggregate_from_a_three_partition_topic_to_an_output_topic() {
    const RECORDS: i64 = 200_000;
    const SYMBOLS: i64 = 50;
    let input = unique("trades");
    let output = unique("per-minute");
    admin::create_topic(&admin::plain_client(&brokers()), &input, 3).unwrap();
    admin::create_topic(&admin::plain_client(&brokers()), &output, 3).unwrap();

    // 200,000 trades over ~16 hours of event time; prices in cents so the
    // expected sums are exact integers
    let start = 1_767_225_600_000i64; // 2026-01-01T00:00:00Z
    let mut messages = Vec::with_capacity(RECORDS as usize);
    let mut expected: BTreeMap<(String, i64), (i64, i64, i64)> = BTreeMap::new();
    for i in 0..RECORDS {
        let symbol = format!("S{:02}", (i * 7) % SYMBOLS);
        let ts = start + i * 300;
        let qty = 1 + i % 100;
        let cents = 10_000 + (i * 37) % 5_000;
        let payload = format!(
            r#"{{"symbol": "{symbol}", "price": "{}.{:02}", "qty": {qty}, "ts": {ts}}}"#,
            cents / 100,
            cents % 100
        );
        let window = ts - ts.rem_euclid(60_000);
        let e = expected.entry((symbol.clone(), window)).or_default();
        e.0 += 1;
        e.1 += qty;
        e.2 += cents;
        messages.push((symbol, payload, ts));
    }
    produce(&input, &messages);

    let stderr = run_app(&format!(
        "CREATE STREAM trades (symbol VARCHAR, price DECIMAL(12, 2), qty BIGINT, ts BIGINT) WITH (
            'trades.type' = 'kafka_source', 'trades.topic' = '{input}',
            'trades.group.id' = '{group}', 'trades.bounded' = 'true',
            'trades.event.time.field' = 'ts');
         CREATE STREAM per_minute AS
         SELECT symbol, _window_start AS ws, COUNT(*) AS trades, SUM(qty) AS volume, SUM(price) AS turnover
         FROM trades GROUP BY symbol WINDOW TUMBLING(ts, 1m)
         WITH ('per_minute.type' = 'kafka_sink', 'per_minute.topic' = '{output}');",
        group = unique("group")
    ));
    assert!(stderr.contains("200000 records in"), "{stderr}");
    assert!(!stderr.contains("late"), "no record may be late: {stderr}");

    let rows = read_all(&output, expected.len());
    assert_eq!(
        rows.len(),
        expected.len(),
        "one message per (symbol, minute)"
    );
    let mut seen = BTreeSet::new();
    for (key, payload) in &rows {
        let v: serde_json::Value = serde_json::from_str(payload).unwrap();
        let symbol = v["symbol"].as_str().unwrap().to_string();
        assert_eq!(key, &symbol, "the message key is the GROUP BY column");
        let ws =
            chrono::NaiveDateTime::parse_from_str(v["ws"].as_str().unwrap(), "%Y-%m-%dT%H:%M:%S")
                .unwrap()
                .and_utc()
                .timestamp_millis();
        let (n, volume, cents) = expected
            .get(&(symbol.clone(), ws))
            .unwrap_or_else(|| panic!("unexpected row {payload}"));
        assert_eq!(v["trades"].as_i64().unwrap(), *n, "{payload}");
        assert_eq!(v["volume"].as_i64().unwrap(), *volume, "{payload}");
        // decimals are written with their exact digits
        let turnover = payload
            .split("\"turnover\":")
            .nth(1)
            .and_then(|rest| rest.split([',', '}']).next())
            .unwrap_or_default();
        assert_eq!(
            turnover,
            format!("{}.{:02}", cents / 100, cents % 100),
            "{payload}"
        );
        assert!(seen.insert((symbol, ws)), "duplicate row {payload}");
    }
}

#[test]
fn a_restarted_job_continues_from_its_committed_offsets() {
    let input = unique("events");
    let output = unique("copied");
    let group = unique("group");
    admin::create_topic(&admin::plain_client(&brokers()), &input, 3).unwrap();
    admin::create_topic(&admin::plain_client(&brokers()), &output, 1).unwrap();
    let batch = |ids: std::ops::Range<i64>| -> Vec<(String, String, i64)> {
        ids.map(|i| {
            (
                format!("k{}", i % 10),
                format!(r#"{{"id": {i}}}"#),
                1_000 + i,
            )
        })
        .collect()
    };
    let sql = format!(
        "CREATE STREAM events (id BIGINT) WITH ('events.type' = 'kafka_source',
            'events.topic' = '{input}', 'events.group.id' = '{group}', 'events.bounded' = 'true');
         CREATE STREAM copied AS SELECT id, _partition AS p FROM events
         WITH ('copied.type' = 'kafka_sink', 'copied.topic' = '{output}');"
    );

    produce(&input, &batch(0..1000));
    assert!(run_app(&sql).contains("1000 records in"));
    produce(&input, &batch(1000..1500));
    let second = run_app(&sql);
    assert!(
        second.contains("500 records in"),
        "only the new records: {second}"
    );
    let third = run_app(&sql);
    assert!(third.contains("0 records in"), "nothing new: {third}");

    // the group's offsets exported, imported into another group, and
    // rewound to the start (the guide's offset backup and restore)
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_velostream"))
            .args(args)
            .args(["--brokers", &brokers()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()
    };
    let exported = cli(&["offsets", "export", "--group", &group, "--topic", &input]);
    let offsets = exported["offsets"].as_array().unwrap().clone();
    assert_eq!(offsets.len(), 3, "{exported}");
    let total: i64 = offsets.iter().map(|o| o["offset"].as_i64().unwrap()).sum();
    assert_eq!(total, 1500, "{exported}");
    let file = tempfile::NamedTempFile::new().unwrap();
    let mut rewound = exported.clone();
    for o in rewound["offsets"].as_array_mut().unwrap() {
        o["offset"] = 0.into();
    }
    std::fs::write(file.path(), rewound.to_string()).unwrap();
    cli(&["offsets", "import", file.path().to_str().unwrap()]);
    let again = run_app(&sql);
    assert!(again.contains("1500 records in"), "rewound: {again}");
    std::fs::write(file.path(), exported.to_string()).unwrap();
    let copy = unique("group-copy");
    cli(&[
        "offsets",
        "import",
        file.path().to_str().unwrap(),
        "--group",
        &copy,
    ]);
    let copied = cli(&["offsets", "export", "--group", &copy, "--topic", &input]);
    assert_eq!(copied["offsets"], exported["offsets"]);

    let rows = read_all(&output, 3000);
    let ids: Vec<i64> = rows
        .iter()
        .map(|(_, p)| {
            serde_json::from_str::<serde_json::Value>(p).unwrap()["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    let distinct: BTreeSet<i64> = ids.iter().copied().collect();
    assert_eq!(
        ids.len(),
        3000,
        "each record once, then once more after the rewind"
    );
    assert_eq!(distinct, (0..1500).collect(), "no gap");
}

#[test]
fn system_columns_and_headers_are_readable_and_left_out_of_select_star() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

    let input = unique("headers");
    admin::create_topic(&admin::plain_client(&brokers()), &input, 1).unwrap();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    for i in 0..3 {
        let headers = OwnedHeaders::new().insert(Header {
            key: "trace",
            value: Some(format!("t-{i}").as_bytes()),
        });
        let payload = format!(r#"{{"id": {i}}}"#);
        let key = format!("k{i}");
        let mut record = BaseRecord::to(&input)
            .payload(payload.as_bytes())
            .key(key.as_bytes())
            .timestamp(1_000 + i);
        if i < 2 {
            record = record.headers(headers);
        }
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let star = dir.path().join("star.jsonl");
    run_app(&format!(
        "CREATE STREAM events (id BIGINT) WITH ('events.type' = 'kafka_source', 'events.topic' = '{input}',
            'events.group.id' = '{group}', 'events.bounded' = 'true');
         CREATE STREAM picked AS SELECT id, _key AS k, _partition AS p, _offset AS o, _topic AS t,
            CAST(_timestamp AS BIGINT) AS ts, HEADER('trace') AS trace FROM events
         WITH ('picked.type' = 'file_sink', 'picked.path' = '{out}');
         CREATE STREAM everything AS SELECT * FROM events
         WITH ('everything.type' = 'file_sink', 'everything.path' = '{star}');",
        group = unique("group"),
        out = out.display(),
        star = star.display()
    ));
    let picked = std::fs::read_to_string(&out).unwrap();
    let expected = (0..3)
        .map(|i| {
            let trace = if i < 2 {
                format!("\"t-{i}\"")
            } else {
                "null".into()
            };
            format!(
                r#"{{"id":{i},"k":"k{i}","p":0,"o":{i},"t":"{input}","ts":{},"trace":{trace}}}"#,
                1_000 + i
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(picked.trim(), expected);
    let everything = std::fs::read_to_string(&star).unwrap();
    assert_eq!(everything.trim(), "{\"id\":0}\n{\"id\":1}\n{\"id\":2}");
}

/// The lines of a file the test's application wrote, sorted.
fn sorted_lines(path: &std::path::Path) -> Vec<String> {
    let mut rows: Vec<String> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    rows.sort();
    rows
}

/// Writes customer changes keyed by id to `topic`: c1 is updated, c2 is
/// deleted by a tombstone, c3 stays.
fn produce_customer_changes(topic: &str) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    // c1 is updated, c2 is deleted by a tombstone, c3 stays
    let updates: [(&str, Option<&str>); 5] = [
        ("c1", Some(r#"{"tier": "gold"}"#)),
        ("c2", Some(r#"{"tier": "silver"}"#)),
        ("c3", Some(r#"{"tier": "bronze"}"#)),
        ("c1", Some(r#"{"tier": "platinum"}"#)),
        ("c2", None),
    ];
    for (key, value) in updates {
        let mut record: BaseRecord<'_, str, str> = BaseRecord::to(topic).key(key);
        if let Some(v) = value {
            record = record.payload(v);
        }
        producer.send(record).map_err(|(e, _)| e).unwrap();
        // one partition per key, in order
        producer.flush(Duration::from_secs(10)).unwrap();
    }
}

/// A topic declared as a table (`CREATE TABLE ... PRIMARY KEY (id)`): its
/// message key fills the key column, tombstones delete, and a query reading
/// it bounded sees its latest rows, as a join does.
#[test]
fn a_topic_declared_as_a_table_reads_as_its_latest_rows_without_the_deleted() {
    let customers = unique("customers");
    admin::create_topic(&admin::plain_client(&brokers()), &customers, 2).unwrap();
    produce_customer_changes(&customers);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("latest.jsonl");
    run_app(&format!(
        "CREATE TABLE customers (id VARCHAR, tier VARCHAR, PRIMARY KEY (id)) WITH ('customers.type' = 'kafka_source',
            'customers.topic' = '{customers}', 'customers.bounded' = 'true');
         CREATE STREAM latest AS SELECT id, tier FROM customers
         WITH ('latest.type' = 'file_sink', 'latest.path' = '{out}');",
        out = out.display()
    ));
    let rows = sorted_lines(&out);
    assert_eq!(
        rows,
        [
            r#"{"id":"c1","tier":"platinum"}"#,
            r#"{"id":"c3","tier":"bronze"}"#,
        ]
    );
}

#[test]
fn a_compacted_topic_is_a_table_whose_tombstones_delete() {
    let customers = unique("customers");
    let orders = unique("orders");
    admin::create_topic(&admin::plain_client(&brokers()), &customers, 2).unwrap();
    admin::create_topic(&admin::plain_client(&brokers()), &orders, 1).unwrap();
    produce_customer_changes(&customers);
    produce(
        &orders,
        &(1..=4)
            .map(|i| {
                let cid = format!("c{i}");
                (
                    cid.clone(),
                    format!(r#"{{"oid": {i}, "cid": "{cid}"}}"#),
                    1_000 + i,
                )
            })
            .collect::<Vec<_>>(),
    );

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    run_app(&format!(
        "CREATE STREAM customers (id VARCHAR, tier VARCHAR) WITH ('customers.type' = 'kafka_source',
            'customers.topic' = '{customers}', 'customers.key.field' = 'id');
         CREATE STREAM orders (oid BIGINT, cid VARCHAR) WITH ('orders.type' = 'kafka_source',
            'orders.topic' = '{orders}', 'orders.group.id' = '{group}', 'orders.bounded' = 'true');
         CREATE STREAM enriched AS SELECT o.oid, c.tier FROM orders o LEFT JOIN customers c ON o.cid = c.id
         WITH ('enriched.type' = 'file_sink', 'enriched.path' = '{out}');",
        group = unique("group"),
        out = out.display()
    ));
    let rows = sorted_lines(&out);
    assert_eq!(
        rows,
        [
            r#"{"oid":1,"tier":"platinum"}"#,
            r#"{"oid":2,"tier":null}"#,
            r#"{"oid":3,"tier":"bronze"}"#,
            r#"{"oid":4,"tier":null}"#,
        ]
    );
}

#[test]
fn nexmark_events_generated_to_kafka_are_read_back_by_a_query() {
    let prefix = unique("nexmark");
    let prefix = format!("{prefix}-");
    let out = Command::new(env!("CARGO_BIN_EXE_velostream"))
        .args([
            "nexmark",
            "generate",
            "--events",
            "1000",
            "--kafka",
            &brokers(),
        ])
        .args(["--topic-prefix", &prefix])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("produced 20 persons, 60 auctions, 920 bids"),
        "{stderr}"
    );
    let bids = read_all(&format!("{prefix}bid"), 920);
    assert_eq!(bids.len(), 920);
    // keyed by auction, as the first field of each bid
    let (key, payload) = &bids[0];
    let bid: serde_json::Value = serde_json::from_str(payload).unwrap();
    assert_eq!(key, &bid["auction"].to_string());
    // a Nexmark query over the topics
    let stderr = run_app(&format!(
        "CREATE STREAM bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, datetime TIMESTAMP, extra VARCHAR)
           WITH ('bid.type' = 'kafka_source', 'bid.topic' = '{prefix}bid', 'bid.bounded' = 'true',
                 'bid.group.id' = '{prefix}q', 'bid.event.time.field' = 'datetime');
         CREATE STREAM q2 AS SELECT auction, price FROM bid WHERE auction % 123 = 0 WITH ('q2.type' = 'null');"
    ));
    assert!(stderr.contains("920 records in"), "{stderr}");
}

/// A poison message in the middle of 100,000: its row is dead-lettered,
/// every other result arrives, and the group's offsets pass it, so a
/// restarted job does not meet it again.
#[test]
fn a_poison_message_is_dead_lettered_and_the_offsets_pass_it() {
    const RECORDS: i64 = 100_000;
    let input = unique("poison");
    let group = unique("group");
    admin::create_topic(&admin::plain_client(&brokers()), &input, 2).unwrap();
    // besides the poison row: a message of two JSON values and an empty one
    let (two_values, empty) = (70_000, 80_000);
    let messages: Vec<(String, String, i64)> = (0..RECORDS)
        .map(|i| {
            let d = if i == RECORDS / 2 { 0 } else { i % 9 + 1 };
            let value = match i {
                _ if i == two_values => format!(r#"{{"id": {i}, "d": 1}} {{"id": -1, "d": 1}}"#),
                _ if i == empty => String::new(),
                _ => format!(r#"{{"id": {i}, "d": {d}}}"#),
            };
            (format!("k{}", i % 10), value, 1_000 + i)
        })
        .collect();
    produce(&input, &messages);
    let dir = tempfile::tempdir().unwrap();
    let sql = format!(
        "CREATE STREAM events (id BIGINT, d BIGINT) WITH ('events.type' = 'kafka_source',
            'events.topic' = '{input}', 'events.group.id' = '{group}', 'events.bounded' = 'true');
         CREATE STREAM q AS SELECT id, 10 / d AS q FROM events
         WITH ('q.type' = 'file_sink', 'q.path' = '{out}', 'q.append' = 'true',
               'dead_letter.type' = 'file_sink', 'dead_letter.path' = '{dead}');",
        out = dir.path().join("out.jsonl").display(),
        dead = dir.path().join("dead.jsonl").display(),
    );
    let said = run_app(&sql);
    // the empty message and the one of two values are one bad record each
    assert!(
        said.contains(&format!("{} records in", RECORDS - 2)),
        "{said}"
    );
    assert!(
        said.contains("2 malformed skipped, 1 failing rows isolated"),
        "{said}"
    );
    let out = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    let ids: BTreeSet<i64> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(out.lines().count(), RECORDS as usize - 3);
    assert_eq!(ids.len(), RECORDS as usize - 3);
    for missing in [RECORDS / 2, two_values, empty, -1] {
        assert!(!ids.contains(&missing), "{missing}");
    }
    let dead = std::fs::read_to_string(dir.path().join("dead.jsonl")).unwrap();
    assert_eq!(dead.lines().count(), 3, "{dead}");
    assert!(
        dead.contains("Divide by zero") && dead.contains(&format!("\"id\\\":{}", RECORDS / 2)),
        "{dead}"
    );
    assert!(dead.contains("more than one record"), "{dead}");
    // the committed offsets cover every message, the poison included
    let again = run_app(&sql);
    assert!(again.contains("0 records in"), "{again}");
}

/// Without checkpoints, a windowed job commits no offset while records
/// may be only in its open windows: killed with SIGKILL, it has committed
/// nothing, and run again it counts every record.
#[test]
fn a_killed_windowed_job_without_checkpoints_loses_no_input() {
    const RECORDS: i64 = 20_000;
    let input = unique("held");
    let group = unique("group");
    admin::create_topic(&admin::plain_client(&brokers()), &input, 2).unwrap();
    // 10 one-minute windows of 2,000 records each
    let messages: Vec<(String, String, i64)> = (0..RECORDS)
        .map(|i| {
            (
                format!("k{}", i % 5),
                format!(r#"{{"id": {i}, "ts": {}}}"#, i * 30),
                1_000 + i,
            )
        })
        .collect();
    produce(&input, &messages);
    let dir = tempfile::tempdir().unwrap();
    let app = |bounded: bool| {
        format!(
            "CREATE STREAM events (id BIGINT, ts BIGINT) WITH ('events.type' = 'kafka_source',
                'events.topic' = '{input}', 'events.group.id' = '{group}', 'events.bounded' = '{bounded}');
             CREATE STREAM counts AS SELECT COUNT(*) AS n FROM events WINDOW TUMBLING(ts, 1m)
             WITH ('counts.type' = 'file_sink', 'counts.path' = '{}');",
            dir.path().join("counts.jsonl").display()
        )
    };
    let file = dir.path().join("live.sql");
    std::fs::write(&file, app(false)).unwrap();
    let mut live = spawn_run(&file, &[("KAFKA_BROKERS", &brokers())]);
    // it has read everything (9 windows closed, the last one open) and
    // had several commit intervals to commit offsets
    let counts = dir.path().join("counts.jsonl");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&counts).map_or(0, |c| c.lines().count()) < 9 {
        assert!(
            std::time::Instant::now() < deadline,
            "the live job emitted no window"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    live.kill().unwrap();
    let stderr = {
        let mut s = String::new();
        std::io::Read::read_to_string(live.stderr.as_mut().unwrap(), &mut s).unwrap();
        s
    };
    live.wait().unwrap();
    assert!(stderr.contains("takes no checkpoints"), "{stderr}");
    let exported = Command::new(env!("CARGO_BIN_EXE_velostream"))
        .args([
            "offsets",
            "export",
            "--group",
            &group,
            "--topic",
            &input,
            "--brokers",
            &brokers(),
        ])
        .output()
        .unwrap();
    let exported: serde_json::Value = serde_json::from_slice(&exported.stdout).unwrap_or_default();
    let committed: i64 = exported["offsets"]
        .as_array()
        .map(|o| {
            o.iter()
                .filter_map(|o| o["offset"].as_i64())
                .filter(|o| *o > 0)
                .sum()
        })
        .unwrap_or(0);
    assert_eq!(
        committed, 0,
        "offsets were committed while windows were open: {exported}"
    );
    // run again to the end of the topic: every record is counted
    std::fs::remove_file(&counts).unwrap();
    let said = run_app(&app(true));
    assert!(said.contains(&format!("{RECORDS} records in")), "{said}");
    let total: i64 = std::fs::read_to_string(&counts)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["n"]
                .as_i64()
                .unwrap()
        })
        .sum();
    assert_eq!(total, RECORDS);
}

/// The ids (and partitions) a member has written to `path` so far.
fn written(path: &std::path::Path) -> Vec<(i64, i64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            Some((v["id"].as_i64()?, v["p"].as_i64()?))
        })
        .collect()
}

/// Two members of one group split a topic's partitions as the group
/// assigns them; when one stops, the other takes its partitions over from
/// where it committed. Every record is written, by one member or, around a
/// rebalance, by both (a partition moved before its last records were
/// committed is read again: at least once).
#[test]
fn two_members_split_a_topic_and_one_takes_over_when_the_other_stops() {
    let input = unique("shared");
    let group = unique("group");
    admin::create_topic(&admin::plain_client(&brokers()), &input, 4).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let member = |name: &str| {
        let out = dir.path().join(format!("{name}.jsonl"));
        let app = dir.path().join(format!("{name}.sql"));
        std::fs::write(
            &app,
            format!(
                "CREATE STREAM events (id BIGINT) WITH ('events.type' = 'kafka_source',
                    'events.topic' = '{input}', 'events.group.id' = '{group}');
                 CREATE STREAM out AS SELECT id, _partition AS p FROM events
                 WITH ('out.type' = 'file_sink', 'out.path' = '{}');",
                out.display()
            ),
        )
        .unwrap();
        let child = spawn_run(&app, &[("KAFKA_BROKERS", &brokers())]);
        (child, out)
    };
    let records = |ids: std::ops::Range<i64>| -> Vec<(String, String, i64)> {
        ids.map(|i| (format!("k{i}"), format!(r#"{{"id": {i}}}"#), 1_000 + i))
            .collect()
    };
    let (a, a_out) = member("a");
    let (b, b_out) = member("b");
    // rounds of records until both members have written some: both joined
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let mut produced = 0i64;
    while written(&a_out).is_empty() || written(&b_out).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the two members never both read: a {} rows, b {} rows",
            written(&a_out).len(),
            written(&b_out).len()
        );
        produce(&input, &records(produced..produced + 200));
        produced += 200;
        std::thread::sleep(Duration::from_millis(500));
    }
    let all_written = |want: &BTreeSet<i64>| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let have: BTreeSet<i64> = written(&a_out)
                .into_iter()
                .chain(written(&b_out))
                .map(|(id, _)| id)
                .collect();
            let missing: Vec<i64> = want.difference(&have).copied().take(10).collect();
            if missing.is_empty() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "records never written, e.g. {missing:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    all_written(&(0..produced).collect());
    let b_partitions: BTreeSet<i64> = written(&b_out).into_iter().map(|(_, p)| p).collect();

    // b stops cleanly: its results flushed, its offsets committed
    stop(b);
    let a_before = written(&a_out).len();
    produce(&input, &records(10_000..12_000));
    let mut want: BTreeSet<i64> = (0..produced).collect();
    want.extend(10_000..12_000);
    all_written(&want);
    // a now reads b's partitions too, from where b committed
    let taken_over: BTreeSet<i64> = written(&a_out)[a_before..]
        .iter()
        .filter(|(id, _)| *id >= 10_000)
        .map(|&(_, p)| p)
        .collect();
    assert!(
        b_partitions.is_subset(&taken_over),
        "b read partitions {b_partitions:?}; a later read {taken_over:?}"
    );
    let a_rows = written(&a_out);
    let second: Vec<i64> = a_rows
        .iter()
        .map(|&(id, _)| id)
        .filter(|&id| id >= 10_000)
        .collect();
    assert_eq!(
        second.len(),
        2000,
        "after the rebalance settled, each new record once"
    );
    stop(a);
}
