//! End-to-end tests of the `velostream` binary: exit codes, output files,
//! stdin/stdout, error rendering, progress and throughput reporting.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn velostream() -> Command {
    Command::new(env!("CARGO_BIN_EXE_velostream"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(args: &[&str]) -> Output {
    velostream()
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run velostream")
}

/// A temporary directory holding one file; keep the directory alive while the file is used.
fn temp_file(name: &str, contents: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    (dir, path)
}

/// Runs `velostream run -q app` with `input` on stdin.
fn run_with_stdin(app: &Path, input: &[u8]) -> Output {
    let mut child = velostream()
        .args(["run", "-q", app.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

#[test]
fn example_application_runs_and_writes_its_sink() {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("large.jsonl");
    let set = format!("large_trades.path={}", out_file.display());
    let out = run(&["run", "examples/trades/large_trades.sql", "--set", &set]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // the bundled data has one malformed line, reported with file and line
    assert!(stderr.contains("trades.jsonl:41"), "{stderr}");
    assert!(
        stderr.contains("job large_trades: 40 records in"),
        "{stderr}"
    );

    let written = std::fs::read_to_string(&out_file).unwrap();
    assert!(!written.is_empty());
    for line in written.lines() {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        let price = row["price"].as_f64().unwrap();
        let quantity = row["quantity"].as_f64().unwrap();
        let notional = row["notional"].as_f64().unwrap();
        assert!((price * quantity - notional).abs() < 1e-6, "{line}");
        assert!(notional > 20000.0, "{line}");
    }
    // the per-symbol totals go to stdout, one row per symbol
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 4, "{stdout}");
}

#[test]
fn sql_errors_exit_2_with_position_and_caret() {
    let (_dir, app) = temp_file(
        "bad.sql",
        "CREATE STREAM t (id BIGINT) WITH ('type' = 'stdin');\nSELECT id, nme\nFROM t;\n",
    );
    let out = run(&["validate", app.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bad.sql:2:12"), "{stderr}");
    assert!(stderr.contains("2 | SELECT id, nme"), "{stderr}");
    assert!(stderr.contains("^"), "{stderr}");
    assert!(stderr.contains("the columns here are: id"), "{stderr}");
}

#[test]
fn explain_shows_operators_sources_and_emit_mode() {
    let out = run(&["explain", "examples/trades/large_trades.sql"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("job large_trades"), "{stdout}");
    assert!(
        stdout.contains("annotations: @name: large_trades"),
        "{stdout}"
    );
    assert!(
        stdout.contains("source trades <- file_source (declared schema"),
        "{stdout}"
    );
    assert!(stdout.contains("Filter "), "{stdout}");
    assert!(
        stdout.contains("Aggregate group=[trades.symbol]"),
        "{stdout}"
    );
    assert!(stdout.contains("emit: FINAL"), "{stdout}");
    // the output key of the per-symbol totals is the GROUP BY column
    assert!(stdout.contains("key: [symbol]"), "{stdout}");
    // only the columns a query uses are decoded
    assert!(
        stdout.contains("Scan trades [symbol: Utf8, price: Decimal128(12, 2), quantity: Int64]"),
        "{stdout}"
    );
}

/// The statements the planner lifts out of a query, and a source declared
/// as a table, are shown with where they come from and their key.
#[test]
fn explain_shows_derived_tables_and_declared_tables() {
    let (_dir, app) = temp_file(
        "derived.sql",
        "CREATE TABLE customers (id VARCHAR, tier VARCHAR, PRIMARY KEY (id)) WITH ('type' = 'file_source', 'path' = 'c.jsonl', 'format' = 'jsonl');\n\
         CREATE STREAM orders (cid VARCHAR, amount DOUBLE) WITH ('type' = 'file_source', 'path' = 'o.jsonl', 'format' = 'jsonl');\n\
         CREATE STREAM out AS SELECT c.tier, per_customer.total FROM (SELECT cid, SUM(amount) AS total FROM orders GROUP BY cid) AS per_customer \
         JOIN customers c ON per_customer.cid = c.id;\n",
    );
    let out = run(&["explain", app.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("job out_per_customer (statement 3, CreateTable)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("derived table per_customer of out"),
        "{stdout}"
    );
    assert!(
        stdout.contains("source out_per_customer <- output of statement 3"),
        "{stdout}"
    );
    assert!(
        stdout.contains("source customers <- file_source (table, key (id), declared schema"),
        "{stdout}"
    );
}

#[test]
fn stdin_to_stdout() {
    let (_dir, app) = temp_file("pipe.sql", "CREATE STREAM s (a BIGINT, b VARCHAR) WITH ('type' = 'stdin');\nSELECT a * 2 AS twice, upper(b) AS b FROM s WHERE a > 1;\n");
    let out = run_with_stdin(
        &app,
        b"{\"a\": 1, \"b\": \"x\"}\n{\"a\": 2, \"b\": \"y\"}\n{\"a\": 3}\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "{\"twice\":4,\"b\":\"Y\"}\n{\"twice\":6,\"b\":null}\n"
    );
    assert!(
        out.stderr.is_empty(),
        "-q prints nothing: {}",
        text(&out.stderr)
    );
}

#[test]
fn stdin_schema_is_inferred_from_the_first_records() {
    let (_dir, app) = temp_file("pipe.sql", "SELECT symbol, COUNT(*) AS n FROM s GROUP BY symbol EMIT FINAL WITH ('s.type' = 'stdin');\n");
    let mut input = String::new();
    for i in 0..2500 {
        input.push_str(&format!("{{\"symbol\": \"S{}\", \"px\": {i}}}\n", i % 2));
    }
    let out = run_with_stdin(&app, input.as_bytes());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut lines: Vec<_> = text(&out.stdout).lines().map(String::from).collect();
    lines.sort();
    // every record counts, including the ones read while inferring the schema
    assert_eq!(
        lines,
        vec![
            "{\"symbol\":\"S0\",\"n\":1250}",
            "{\"symbol\":\"S1\",\"n\":1250}"
        ]
    );
}

#[test]
fn two_statements_cannot_both_read_stdin() {
    let (_dir, app) = temp_file("twice.sql", "CREATE STREAM s (a BIGINT) WITH ('type' = 'stdin');\nSELECT a FROM s;\nSELECT a * 2 AS b FROM s;\n");
    let out = run(&["validate", app.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("standard input is already read by job select_2"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn csv_sink_writes_a_header_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("in.jsonl"),
        "{\"k\": \"a\", \"v\": 1}\n{\"k\": \"b\", \"v\": 2}\n{\"k\": \"a\", \"v\": 3}\n",
    )
    .unwrap();
    let app = dir.path().join("csv.sql");
    std::fs::write(
        &app,
        "CREATE STREAM out AS SELECT k, SUM(v) AS total FROM src GROUP BY k EMIT FINAL \
         WITH ('src.type' = 'file_source', 'src.path' = 'in.jsonl', 'out.type' = 'file_sink', 'out.path' = 'out/result.csv', 'out.format' = 'csv');",
    )
    .unwrap();
    let out = run(&["run", "-q", "--batch-size", "1", app.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let csv = std::fs::read_to_string(dir.path().join("out/result.csv")).unwrap();
    assert_eq!(csv, "k,total\na,4\nb,2\n");
}

#[test]
fn a_million_line_file_runs_and_reports_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("trades.jsonl");
    velostream::bench::generate_trades(&data, 1_000_000, 8).unwrap();
    let app = dir.path().join("filter.sql");
    std::fs::write(
        &app,
        "CREATE STREAM big AS SELECT id, symbol, price * quantity AS notional FROM trades WHERE price > 400 \
         WITH ('trades.type' = 'file_source', 'trades.path' = 'trades.jsonl', 'big.type' = 'null');",
    )
    .unwrap();
    let out = run(&["run", app.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("job big: 1000000 records in"), "{stderr}");
    assert!(stderr.contains("records/s"), "{stderr}");
    assert!(stderr.contains("0 malformed skipped"), "{stderr}");
}

#[test]
fn failing_spec_shows_a_diff_and_exits_1() {
    let (_dir, spec) = temp_file("wrong.yaml", "cases:\n  - name: wrong\n    sql: CREATE STREAM out AS SELECT x FROM t;\n    inputs: {t: \"{\\\"x\\\": 1}\\n\"}\n    expected: {out: \"{\\\"x\\\": 2}\\n\"}\n");
    let out = run(&["test", spec.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL"), "{stdout}");
    assert!(
        stdout.contains("- {\"x\":2}    (expected, missing)"),
        "{stdout}"
    );
    assert!(stdout.contains("+ {\"x\":1}    (unexpected)"), "{stdout}");
    assert!(stdout.contains("0 passed, 1 failed"), "{stdout}");
}

#[test]
fn the_service_names_a_missing_or_invalid_config() {
    let out = run(&["--config", "no-such-config.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read no-such-config.yaml"));
    let (_dir, bad) = temp_file(
        "bad.yaml",
        "velostream:\n  monitoring:\n    metrics_prot: 9090\n",
    );
    let out = run(&["server", "--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("bad.yaml")
            && stderr.contains("velostream.monitoring")
            && stderr.contains("metrics_prot"),
        "{stderr}"
    );
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("velostream --config"));
}

#[test]
fn malformed_records_go_to_the_dead_letter_sink() {
    let (dir, app) = temp_file(
        "dlq.sql",
        "CREATE STREAM out AS SELECT id FROM src WITH ('src.type' = 'file_source', 'src.path' = 'in.jsonl', \
         'out.type' = 'null', 'dead_letter.type' = 'file_sink', 'dead_letter.path' = 'rejects.jsonl');",
    );
    std::fs::write(
        dir.path().join("in.jsonl"),
        "{\"id\": 1}\n{\"id\": oops}\n{\"id\": 3}\n",
    )
    .unwrap();
    let out = run(&["run", app.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("job out: 2 records in, 2 out, 1 malformed skipped"),
        "{stderr}"
    );
    let rejects = std::fs::read_to_string(dir.path().join("rejects.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = rejects
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{rejects}");
    assert_eq!(rows[0]["record"], "{\"id\": oops}");
    assert!(
        rows[0]["position"]
            .as_str()
            .unwrap()
            .ends_with("in.jsonl:2"),
        "{rejects}"
    );
    assert!(!rows[0]["reason"].as_str().unwrap().is_empty(), "{rejects}");
}

#[test]
fn windowed_join_example_matches_an_independent_computation() {
    let out = run(&["run", "-q", "examples/trades/per_minute.sql"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    // per sector and minute, computed with DuckDB over the same files
    assert_eq!(stdout.lines().count(), 9, "{stdout}");
    for row in [
        r#"{"sector":"Technology","minute":"2026-11-02T09:30:00","trades":7,"notional":1288497.00,"top_price":412.80}"#,
        r#"{"sector":"Communication","minute":"2026-11-02T09:33:00","trades":5,"notional":183015.50,"top_price":469.33}"#,
        r#"{"sector":"Technology","minute":"2026-11-02T09:34:00","trades":1,"notional":19266.00,"top_price":192.66}"#,
    ] {
        assert!(
            stdout.lines().any(|l| l == row),
            "missing {row} in\n{stdout}"
        );
    }
}

#[test]
fn explain_says_which_emit_mode_runs_by_default() {
    let (_dir, app) = temp_file(
        "w.sql",
        "CREATE STREAM t (k VARCHAR, ts TIMESTAMP) WITH ('type' = 'stdin');\n\
         SELECT k, COUNT(*) AS n FROM t GROUP BY k WINDOW TUMBLING(ts, 1m);\n\
         SELECT k, COUNT(*) AS n FROM t GROUP BY k;\n",
    );
    let out = run(&["explain", app.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("emit: FINAL (default for windows)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("emit: CHANGES (default without a window)"),
        "{stdout}"
    );
}

#[test]
fn health_names_an_unreachable_https_service_and_never_prints_the_token() {
    // a port nothing listens on: bind one, then let it go
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("https://127.0.0.1:{port}/health");
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let out = velostream()
        .args(["health", "--url", &url, "--metrics-url", &metrics])
        .env("VELOSTREAM_TOKEN", "s3cret-token")
        .output()
        .unwrap();
    let said = text(&out.stdout) + &text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!(
            "FAIL Velostream is unreachable ({url}): connecting to {url}"
        )),
        "{said}"
    );
    assert!(
        said.contains(&format!("FAIL Metrics is unreachable ({metrics})")),
        "{said}"
    );
    assert!(!said.contains("s3cret"), "{said}");

    // a CA file that does not exist fails before any request, naming the file
    let out = run(&["health", "--url", &url, "--cacert", "/nonexistent/ca.crt"]);
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("FAIL CA certificate file /nonexistent/ca.crt"),
        "{said}"
    );
    // --cert needs --key
    let out = run(&["health", "--cert", "client.crt"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--key"), "{}", text(&out.stderr));
}

/// `validate` and `explain` take the Kafka cluster from the environment as
/// `run` does, so an application that names no `bootstrap.servers` of its
/// own validates where `KAFKA_BROKERS` is set.
#[test]
fn validate_and_explain_read_the_cluster_from_the_environment() {
    let (_dir, app) = temp_file(
        "kafka.sql",
        "CREATE STREAM trades (symbol VARCHAR, qty BIGINT) WITH (
             'trades.type' = 'kafka_source', 'trades.topic' = 'trades');
         CREATE STREAM big AS SELECT symbol, qty FROM trades WHERE qty > 100
         WITH ('big.type' = 'file_sink', 'big.path' = 'big.jsonl');",
    );
    let app = app.to_str().unwrap();
    let without = velostream()
        .args(["validate", app])
        .env_remove("KAFKA_BROKERS")
        .output()
        .unwrap();
    assert!(!without.status.success());
    assert!(
        text(&without.stderr).contains("KAFKA_BROKERS"),
        "{}",
        text(&without.stderr)
    );
    for command in ["validate", "explain"] {
        let with = velostream()
            .args([command, app])
            .env("KAFKA_BROKERS", "127.0.0.1:19092")
            .output()
            .unwrap();
        assert!(with.status.success(), "{command}: {}", text(&with.stderr));
    }
}
