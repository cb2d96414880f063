//! PostgreSQL benchmarks.
//!
//! `velostream bench postgres --url URL`: results written into a table —
//! appended, and upserted by key — against the same query into the null
//! sink, measured in the same run.
//!
//! `velostream bench join --postgres URL`: the enrichment join with its
//! table held in PostgreSQL and looked up by key, measured in the same run
//! as the stateless pipeline and the join against the same rows read from
//! a file. Two cache sizes: one that holds every key (after the first
//! lookups every record is answered from memory) and one that holds a
//! tenth of them (most batches ask the server). Per-core rates count the
//! CPU time of this process only; the server's work shows in the wall rate.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use velostream_connectors::registry::types::{POSTGRES_SINK, POSTGRES_SOURCE};
use velostream_engine::connector::LookupCache;

use crate::app::RunOptions;
use crate::bench::{
    file_overrides, generate_trades, measure_app, median, peak_rss_line, Measurement, MoreRows,
    SuiteInputs,
};

/// The table the benchmark loads and reads.
const TABLE: &str = "velostream_bench_accounts";

/// Copies the accounts file (JSON Lines) into a fresh table `TABLE`.
pub fn load_accounts(url: &str, accounts: &Path) -> Result<(), String> {
    let mut client = postgres::Client::connect(url, postgres::NoTls)
        .map_err(|e| format!("cannot connect to {}: {e}", without_password(url)))?;
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {TABLE};
             CREATE TABLE {TABLE} (symbol text PRIMARY KEY, owner text, tier text, \"limit\" bigint)"
        ))
        .map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(accounts).map_err(|e| e.to_string())?;
    let lines: Vec<&str> = text.lines().collect();
    for chunk in lines.chunks(10_000) {
        let array = format!("[{}]", chunk.join(","));
        client
            .execute(
                &format!(
                    "INSERT INTO {TABLE} SELECT * FROM json_populate_recordset(NULL::{TABLE}, $1::text::json)"
                ),
                &[&array],
            )
            .map_err(|e| e.to_string())?;
    }
    client
        .batch_execute(&format!("ANALYZE {TABLE}"))
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The two lookup configurations measured: (label, cache).
pub fn variants(table_rows: u64) -> [(&'static str, LookupCache); 2] {
    let cache = |keys: u64| LookupCache {
        max_keys: keys as usize,
        max_missing: 1_000,
        ttl: Duration::from_secs(3600),
    };
    [
        (
            "enrichment: JOIN a PostgreSQL table, cache holds every key",
            cache(table_rows),
        ),
        (
            "enrichment: JOIN a PostgreSQL table, cache holds 10% of keys",
            cache((table_rows / 10).max(1)),
        ),
    ]
}

/// Runs the join query with `accounts` looked up in PostgreSQL.
/// The join suite's lookups of `accounts` in the PostgreSQL server at
/// `url`: the table loaded, then each cache variant measured.
pub fn lookup_rows(url: String) -> MoreRows {
    Box::new(move |suite: &SuiteInputs| {
        let accounts = &suite.inputs.last().expect("the accounts table").1;
        eprintln!("loading {} accounts into PostgreSQL ...", suite.table_rows);
        load_accounts(&url, accounts)?;
        let mut rows = Vec::new();
        for (label, cache) in variants(suite.table_rows) {
            rows.push(median(suite.runs, label, || {
                measure_lookup(
                    label,
                    suite.last_sql,
                    &url,
                    &suite.inputs[0].1,
                    suite.batch_size,
                    cache,
                )
            })?);
        }
        Ok(rows)
    })
}

pub fn measure_lookup(
    label: &'static str,
    sql: &str,
    url: &str,
    trades: &Path,
    batch_size: usize,
    cache: LookupCache,
) -> Result<Measurement, String> {
    let mut overrides = file_overrides(&[("trades", trades.to_path_buf())]);
    overrides.insert(
        "accounts".into(),
        BTreeMap::from([
            ("type".to_string(), POSTGRES_SOURCE.to_string()),
            ("url".to_string(), url.to_string()),
            ("table".to_string(), TABLE.to_string()),
        ]),
    );
    measure_app(
        label,
        sql,
        RunOptions {
            batch_size,
            overrides,
            lookup_cache: cache,
            ..RunOptions::default()
        },
    )
    .map_err(|e| e.to_string())
}

/// What `bench postgres` measures: (label, query, where `out` goes: `None`
/// for the null sink, else the sink's mode).
const SINK_QUERIES: &[(&str, &str, Option<&str>)] = &[
    ("filter + projection -> null sink", PROJECTION, None),
    (
        "filter + projection -> postgres_sink (append)",
        PROJECTION,
        Some("append"),
    ),
    (
        "totals per symbol (EMIT CHANGES) -> null sink",
        TOTALS,
        None,
    ),
    (
        "totals per symbol (EMIT CHANGES) -> postgres_sink (upsert)",
        TOTALS,
        Some("upsert"),
    ),
];

const PROJECTION: &str = "CREATE STREAM out AS SELECT id, symbol, price * quantity AS notional, lower(side) AS side FROM trades WHERE price > 100";
const TOTALS: &str = "CREATE TABLE out AS SELECT symbol, COUNT(*) AS trades, SUM(price * quantity) AS notional FROM trades GROUP BY symbol";

/// Runs the sink benchmark over `records` generated trades on `keys` symbols.
pub fn run_sinks(
    url: &str,
    records: u64,
    keys: u64,
    batch_size: usize,
    runs: usize,
) -> Result<String, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let trades = dir.path().join("trades.jsonl");
    eprintln!("generating {records} records over {keys} keys ...");
    generate_trades(&trades, records, keys).map_err(|e| e.to_string())?;
    let mut client = postgres::Client::connect(url, postgres::NoTls)
        .map_err(|e| format!("cannot connect to {}: {e}", without_password(url)))?;
    let mut rows = Vec::new();
    for (label, sql, mode) in SINK_QUERIES {
        rows.push(median(runs, label, || {
            let mut overrides = file_overrides(&[("trades", trades.clone())]);
            if let Some(mode) = mode {
                let table = format!("velostream_bench_{mode}");
                client
                    .batch_execute(&format!("DROP TABLE IF EXISTS {table}"))
                    .map_err(|e| e.to_string())?;
                overrides.insert(
                    "out".into(),
                    BTreeMap::from([
                        ("type".to_string(), POSTGRES_SINK.to_string()),
                        ("url".to_string(), url.to_string()),
                        ("table".to_string(), table),
                        ("mode".to_string(), mode.to_string()),
                        ("auto.create".to_string(), "true".to_string()),
                    ]),
                );
            }
            let options = RunOptions {
                batch_size,
                overrides,
                ..RunOptions::default()
            };
            measure_app(label, sql, options).map_err(|e| e.to_string())
        })?);
    }
    let baseline = rows[0].rate_per_core();
    let mut report = format!(
        "PostgreSQL sinks, {} records, {keys} keys, batch size {batch_size}, median of {runs} runs, one job thread\n\n\
         | query | records/s (wall) | records/s per core (CPU time) | vs {} | batch latency p50 | p99 |\n|---|---|---|---|---|---|\n",
        rows[0].records, SINK_QUERIES[0].0
    );
    for m in &rows {
        report.push_str(&m.table_row(baseline));
    }
    report.push_str(&peak_rss_line());
    Ok(report)
}

/// `url` without its password, for messages.
fn without_password(url: &str) -> String {
    match url.parse::<postgres::Config>() {
        Ok(c) => format!(
            "{}@{:?}/{}",
            c.get_user().unwrap_or(""),
            c.get_hosts().first(),
            c.get_dbname().unwrap_or("")
        ),
        Err(_) => "the database".into(),
    }
}
