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

use velostream_engine::connector::LookupCache;

use crate::app::RunOptions;
use crate::bench::{file_overrides, measure_app, Measurement};

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
            ("type".to_string(), "postgres_source".to_string()),
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
