//! One bad value never stops a job: a row whose expression fails is taken
//! out of its batch by the error policy (dead-lettered, skipped, or the
//! job fails when asked to), and every other row's result is exactly what
//! it would have been; queries that could never run well are SQL errors.

use std::path::Path;
use std::process::{Command, Output};

fn velostream(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_velostream"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// 1,000 records `{id, d, s, g}`; `d` is 0 at id 500 and `s` is not a
/// number at id 300.
fn records(dir: &Path) {
    let lines: String = (0..1000)
        .map(|i| {
            let d = if i == 500 { 0 } else { i % 7 + 1 };
            let s = if i == 300 {
                "x".to_string()
            } else {
                i.to_string()
            };
            format!(
                "{{\"id\": {i}, \"d\": {d}, \"s\": \"{s}\", \"g\": \"k{}\"}}\n",
                i % 4
            )
        })
        .collect();
    std::fs::write(dir.join("t.jsonl"), lines).unwrap();
}

const SOURCE: &str = "CREATE STREAM t (id BIGINT, d BIGINT, s VARCHAR, g VARCHAR) WITH ('type' = 'file_source', 'path' = 't.jsonl');\n";

fn rows(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_division_by_zero_and_a_failing_cast_are_dead_lettered_and_the_rest_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    records(dir.path());
    std::fs::write(
        dir.path().join("app.sql"),
        format!(
            "{SOURCE}CREATE STREAM q AS SELECT id, 10 / d AS q, CAST(s AS BIGINT) AS n FROM t
             WITH ('q.type' = 'file_sink', 'q.path' = 'out.jsonl',
                   'dead_letter.type' = 'file_sink', 'dead_letter.path' = 'dead.jsonl');"
        ),
    )
    .unwrap();
    let out = velostream(&["run", "app.sql"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("2 failing rows isolated"), "{stderr}");
    let results = rows(&dir.path().join("out.jsonl"));
    assert_eq!(results.len(), 998);
    for r in &results {
        let id = r["id"].as_i64().unwrap();
        assert!(id != 300 && id != 500, "{r}");
        assert_eq!(r["q"].as_i64().unwrap(), 10 / (id % 7 + 1), "{r}");
        assert_eq!(r["n"].as_i64().unwrap(), id, "{r}");
    }
    let dead = rows(&dir.path().join("dead.jsonl"));
    assert_eq!(dead.len(), 2, "{dead:?}");
    let reason = |id: i64| {
        dead.iter()
            .find(|d| {
                d["record"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("\"id\":{id},"))
            })
            .map(|d| {
                (
                    d["reason"].as_str().unwrap().to_string(),
                    d["position"].as_str().unwrap().to_string(),
                )
            })
            .unwrap()
    };
    let (zero, at) = reason(500);
    assert!(
        zero.contains("Divide by zero") && zero.contains("10 / d"),
        "{zero}"
    );
    assert_eq!(at, "line 2:1 (project)");
    let (cast, _) = reason(300);
    assert!(
        cast.contains("Cannot cast string 'x'") && cast.contains("CAST(s"),
        "{cast}"
    );
}

#[test]
fn skip_counts_fail_stops_and_aggregates_leave_out_only_the_failing_rows() {
    let dir = tempfile::tempdir().unwrap();
    records(dir.path());
    // skip (the default without a dead-letter sink): a windowless and a
    // windowed aggregate whose argument fails for one row
    std::fs::write(
        dir.path().join("totals.sql"),
        format!(
            "{SOURCE}CREATE STREAM totals AS SELECT g, COUNT(*) AS n, SUM(100 / d) AS s FROM t GROUP BY g EMIT FINAL
             WITH ('totals.type' = 'file_sink', 'totals.path' = 'totals.jsonl');
             CREATE STREAM windows AS SELECT g, COUNT(*) AS n, SUM(CAST(s AS BIGINT)) AS s FROM t GROUP BY g
             WINDOW TUMBLING(id, 100ms)
             WITH ('windows.type' = 'file_sink', 'windows.path' = 'windows.jsonl');"
        ),
    )
    .unwrap();
    let out = velostream(&["run", "totals.sql"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let mut expected = std::collections::BTreeMap::new();
    for i in (0..1000i64).filter(|&i| i != 500) {
        let e = expected
            .entry(format!("k{}", i % 4))
            .or_insert((0i64, 0i64));
        e.0 += 1;
        e.1 += 100 / (i % 7 + 1);
    }
    let totals = rows(&dir.path().join("totals.jsonl"));
    assert_eq!(totals.len(), 4);
    for r in totals {
        let (n, s) = expected[r["g"].as_str().unwrap()];
        assert_eq!(
            (r["n"].as_i64().unwrap(), r["s"].as_i64().unwrap()),
            (n, s),
            "{r}"
        );
    }
    // the window holding id 300 counts 24 of its 25 rows of k0; the others all 25
    let windows = rows(&dir.path().join("windows.jsonl"));
    assert_eq!(windows.len(), 40);
    let short: Vec<_> = windows.iter().filter(|w| w["n"] != 25).collect();
    assert_eq!(short.len(), 1, "{short:?}");
    assert_eq!(short[0]["n"], 24);
    assert_eq!(short[0]["g"], "k0");
    assert!(stderr.contains("isolated a row that failed"), "{stderr}");

    // a row function over a failing argument leaves out only that row
    std::fs::write(
        dir.path().join("rows.sql"),
        format!("{SOURCE}CREATE STREAM r AS SELECT id, SUM(100 / d) OVER (PARTITION BY g ORDER BY id ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) AS s FROM t
         WITH ('r.type' = 'file_sink', 'r.path' = 'rows.jsonl');"),
    )
    .unwrap();
    let out = velostream(&["run", "-q", "rows.sql"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ranked = rows(&dir.path().join("rows.jsonl"));
    assert_eq!(ranked.len(), 999);
    // id 504 (group k0) follows id 496 in its partition: 500 was taken out
    let at = |id: i64| {
        ranked.iter().find(|r| r["id"] == id).unwrap()["s"]
            .as_i64()
            .unwrap()
    };
    let d = |id: i64| id % 7 + 1;
    assert_eq!(at(504), 100 / d(504) + 100 / d(496));

    // 'error.policy' = 'fail': the job stops on the first failing row, as before
    std::fs::write(
        dir.path().join("strict.sql"),
        format!("{SOURCE}SELECT id, 10 / d AS q FROM t WITH ('error.policy' = 'fail');"),
    )
    .unwrap();
    let out = velostream(&["run", "-q", "strict.sql"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Divide by zero"), "{stderr}");

    std::fs::write(
        dir.path().join("bad.sql"),
        format!("{SOURCE}SELECT id FROM t WITH ('error.policy' = 'ignore');"),
    )
    .unwrap();
    let out = velostream(&["run", "-q", "bad.sql"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("unknown error policy 'ignore'") && stderr.contains("bad.sql:2:"),
        "{stderr}"
    );
}

#[test]
fn windows_that_could_never_run_well_are_sql_errors() {
    let dir = tempfile::tempdir().unwrap();
    records(dir.path());
    for (window, said) in [
        ("TUMBLING(id, 0.5ms)", "not a whole number of milliseconds"),
        (
            "SLIDING(id, 1d, 1ms)",
            "puts every record into 86400000 windows",
        ),
        (
            "SLIDING(id, 1m, 2m)",
            "advance (2m) is larger than its size (1m)",
        ),
        ("SESSION(id, 0s)", "must be greater than zero"),
    ] {
        std::fs::write(
            dir.path().join("w.sql"),
            format!("{SOURCE}SELECT g, COUNT(*) AS n FROM t GROUP BY g WINDOW {window};"),
        )
        .unwrap();
        let out = velostream(&["run", "-q", "w.sql"], dir.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{window}: {stderr}");
        assert!(
            stderr.contains(said) && stderr.contains("w.sql:2:"),
            "{window}: {stderr}"
        );
        assert!(
            stderr.contains("hint") || window.starts_with("SESSION"),
            "{stderr}"
        );
    }
    std::fs::write(
        dir.path().join("w.sql"),
        format!("{SOURCE}SELECT g, COUNT(*) AS n FROM t GROUP BY g WINDOW TUMBLING(id, 100ms) WITH ('t.watermark.idle_timeout' = '0s');"),
    )
    .unwrap();
    let out = velostream(&["run", "-q", "w.sql"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("every partition idle at once"), "{stderr}");
    // a frame too large to hold is refused, not a crash
    std::fs::write(
        dir.path().join("r.sql"),
        format!("{SOURCE}SELECT id, SUM(d) OVER (PARTITION BY g ORDER BY id ROWS BETWEEN 18446744073709551615 PRECEDING AND CURRENT ROW) AS x FROM t;"),
    )
    .unwrap();
    let out = velostream(&["run", "-q", "r.sql"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("at most 999999") && stderr.contains("r.sql:2:"),
        "{stderr}"
    );
}

#[test]
fn a_line_of_two_values_an_oversized_and_a_too_deep_record_are_one_bad_record_each() {
    let dir = tempfile::tempdir().unwrap();
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let lines = [
        r#"{"a": 1}"#.to_string(),
        r#"{"a": 2} {"a": 3}"#.to_string(),
        String::new(),
        format!(r#"{{"a": 4, "pad": "{}"}}"#, "x".repeat(30000)),
        format!(r#"{{"a": 5, "x": {deep}}}"#),
        r#"{"a": 6}"#.to_string(),
    ];
    std::fs::write(dir.path().join("m.jsonl"), lines.join("\n") + "\n").unwrap();
    std::fs::write(
        dir.path().join("m.sql"),
        "CREATE STREAM m (a BIGINT, x VARCHAR) WITH ('type' = 'file_source', 'path' = 'm.jsonl', 'max.record.bytes' = '20000');
         CREATE STREAM o AS SELECT a FROM m
         WITH ('o.type' = 'file_sink', 'o.path' = 'o.jsonl', 'dead_letter.type' = 'file_sink', 'dead_letter.path' = 'dead.jsonl');",
    )
    .unwrap();
    let out = velostream(&["run", "m.sql"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let a: Vec<i64> = rows(&dir.path().join("o.jsonl"))
        .iter()
        .map(|r| r["a"].as_i64().unwrap())
        .collect();
    assert_eq!(a, [1, 6]);
    let dead = rows(&dir.path().join("dead.jsonl"));
    let reasons: Vec<(String, String)> = dead
        .iter()
        .map(|d| {
            (
                d["position"].as_str().unwrap().to_string(),
                d["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons[0].0.ends_with("m.jsonl:2") && reasons[0].1.contains("more than one record"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].0.ends_with("m.jsonl:4") && reasons[1].1.contains("longer than 20000 bytes"),
        "{reasons:?}"
    );
    assert!(
        reasons[2].0.ends_with("m.jsonl:5") && reasons[2].1.contains("deeper than 1000 levels"),
        "{reasons:?}"
    );
}

#[test]
fn appending_to_a_csv_file_writes_its_header_once() {
    let dir = tempfile::tempdir().unwrap();
    records(dir.path());
    std::fs::write(
        dir.path().join("csv.sql"),
        format!("{SOURCE}CREATE STREAM c AS SELECT id, g FROM t WHERE id < 3
         WITH ('c.type' = 'file_sink', 'c.path' = 'c.csv', 'c.format' = 'csv', 'c.append' = 'true');"),
    )
    .unwrap();
    for _ in 0..2 {
        let out = velostream(&["run", "-q", "csv.sql"], dir.path());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = std::fs::read_to_string(dir.path().join("c.csv")).unwrap();
    assert_eq!(text, "id,g\n0,k0\n1,k1\n2,k2\n0,k0\n1,k1\n2,k2\n");
}
