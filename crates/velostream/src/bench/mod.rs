//! `velostream bench stateless`: throughput of the stateless pipeline
//! (decode → filter → project) against a decode-only pass over the same
//! JSON Lines file, measured in the same run.

pub mod checkpoint;
pub mod cli;
pub mod kafka;
pub mod latency;
pub mod nexmark;
pub mod postgres;
pub mod scale_out;
pub mod takeover;

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use velostream_connectors::registry::types::FILE_SOURCE;
use velostream_connectors::trade_records::TradeRecords;
use velostream_engine::JobMetrics;
use velostream_sql::PropertyOverrides;

use crate::app::{run_jobs, AppError, Application, RunOptions};
use crate::progress::human;

/// One measured query.
pub struct Measurement {
    pub label: &'static str,
    pub records: u64,
    /// Wall-clock time of the run.
    pub seconds: f64,
    /// CPU time the process used during the run (all threads).
    pub cpu_seconds: f64,
    pub p50_us: u32,
    pub p99_us: u32,
    /// How long each checkpoint took (ms), when the run took any.
    pub checkpoint_ms: Vec<f64>,
}

impl Measurement {
    pub fn rate(&self) -> f64 {
        self.records as f64 / self.seconds
    }

    /// A row of the report table, against `baseline` records per core.
    pub fn table_row(&self, baseline: f64) -> String {
        let latency = |us: u32| match us {
            0 => "–".to_string(),
            us => format!("{:.2} ms", us as f64 / 1000.0),
        };
        format!(
            "| {} | {} | {} | {:.0}% | {} | {} |\n",
            self.label,
            human(self.rate()),
            human(self.rate_per_core()),
            100.0 * self.rate_per_core() / baseline,
            latency(self.p50_us),
            latency(self.p99_us)
        )
    }

    /// Records per CPU-second: the per-core rate however many threads ran.
    pub fn rate_per_core(&self) -> f64 {
        self.records as f64 / self.cpu_seconds
    }
}

/// The queries compared, each over the same `trades` file.
pub const QUERIES: &[(&str, &str)] = &[
    ("decode only (all 9 columns)", "CREATE STREAM out AS SELECT * FROM trades"),
    (
        "decode only (the 6 columns the pipeline uses)",
        "CREATE STREAM out AS SELECT id, symbol, side, price, quantity, exchange FROM trades",
    ),
    (
        "filter + projection",
        "CREATE STREAM out AS SELECT id, symbol, price * quantity AS notional, lower(side) AS side \
         FROM trades WHERE price > 100 AND exchange = 'NASDAQ'",
    ),
    (
        "decode only (the same 6 columns, price an exact DECIMAL(12, 2))",
        "CREATE STREAM trades (id BIGINT, symbol VARCHAR, side VARCHAR, price DECIMAL(12, 2), \
         quantity BIGINT, exchange VARCHAR, trader VARCHAR, ccy VARCHAR, ts BIGINT); \
         CREATE STREAM out AS SELECT id, symbol, side, price, quantity, exchange FROM trades",
    ),
];

/// Writes `records` of the benchmarks' trade records (see
/// [`TradeRecords`]) over `keys` symbols as JSON Lines; returns the bytes.
pub fn generate_trades(path: &Path, records: u64, keys: u64) -> std::io::Result<u64> {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut trades = TradeRecords::new(keys);
    let mut line = String::new();
    let mut bytes = 0;
    for _ in 0..records {
        line.clear();
        trades.write_next(&mut line);
        bytes += line.len() as u64;
        out.write_all(line.as_bytes())?;
    }
    out.flush()?;
    Ok(bytes)
}

/// Runs one query over `file` into a null sink and measures it.
pub fn measure(
    label: &'static str,
    sql: &str,
    inputs: &[(&str, PathBuf)],
    batch_size: usize,
) -> Result<Measurement, AppError> {
    measure_app(
        label,
        sql,
        RunOptions {
            batch_size,
            overrides: file_overrides(inputs),
            // per-core rates of one decoding thread, comparable across
            // versions (benches/vs_duckdb.py measures the parallel wall time)
            decode_threads: Some(1),
            ..RunOptions::default()
        },
    )
}

/// File sources for `inputs` (`name`, path) and a null `out` sink.
pub fn file_overrides(inputs: &[(&str, PathBuf)]) -> PropertyOverrides {
    let mut overrides = PropertyOverrides::new();
    for (name, file) in inputs {
        overrides.insert(
            name.to_string(),
            BTreeMap::from([
                ("type".to_string(), FILE_SOURCE.to_string()),
                ("path".to_string(), file.display().to_string()),
                ("format".to_string(), "jsonl".to_string()),
            ]),
        );
    }
    overrides.insert(
        "out".into(),
        BTreeMap::from([("type".to_string(), "null".to_string())]),
    );
    overrides
}

/// Runs the application `sql` with `options` and measures it.
pub fn measure_app(
    label: &'static str,
    sql: &str,
    options: RunOptions,
) -> Result<Measurement, AppError> {
    let app = Application::from_text("bench.sql", sql, Path::new("."), &options)?;
    let jobs = app.build_jobs()?;
    let metrics: Vec<std::sync::Arc<JobMetrics>> = jobs.iter().map(|j| j.metrics()).collect();
    let clock = Clock::start();
    let summaries = run_jobs(jobs)?;
    let (seconds, cpu_seconds) = clock.stop();
    Ok(Measurement {
        label,
        records: summaries.iter().map(|s| s.records_in).sum(),
        seconds,
        cpu_seconds,
        p50_us: metrics[0].latency_quantile(0.5).unwrap_or(0),
        p99_us: metrics[0].latency_quantile(0.99).unwrap_or(0),
        checkpoint_ms: metrics[0]
            .checkpoint_durations_ms
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default(),
    })
}

/// A suffix no earlier run used: the time in nanoseconds, for the topics
/// and consumer groups of one benchmark run.
pub fn unique_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Connector properties (a statement's overrides) from `(key, value)` pairs.
pub fn properties<V: AsRef<str>>(pairs: &[(&str, V)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_ref().to_string()))
        .collect()
}

/// What a benchmark run covers.
pub struct Suite<'a> {
    pub title: &'a str,
    pub queries: &'a [(&'static str, &'static str)],
    /// Index of the query the others are compared with.
    pub baseline: usize,
    pub baseline_label: &'a str,
    pub records: u64,
    pub keys: u64,
    pub batch_size: usize,
    pub runs: usize,
    pub file: Option<PathBuf>,
    /// Rows of the `accounts` table (one per symbol) for join queries; 0 for none.
    pub table_rows: u64,
    /// Also generate a `fills` stream like `trades` (interval joins).
    pub second_stream: bool,
    /// More measurements over the suite's inputs after its queries (the
    /// join suite's PostgreSQL lookups, from `bench_postgres`).
    pub more: Option<MoreRows>,
}

/// Measurements a suite adds over its inputs.
pub type MoreRows = Box<dyn Fn(&SuiteInputs) -> Result<Vec<Measurement>, String>>;

/// What a suite's extra measurements run over.
pub struct SuiteInputs<'a> {
    /// Generated files by source name (`trades` first).
    pub inputs: &'a [(&'a str, PathBuf)],
    /// The suite's last query.
    pub last_sql: &'a str,
    pub runs: usize,
    pub batch_size: usize,
    pub table_rows: u64,
}

/// Runs every query `runs` times (keeping the median) over one generated
/// (or given) file and returns a Markdown report.
pub fn run_suite(suite: Suite) -> Result<String, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let file = match &suite.file {
        Some(f) => f.clone(),
        None => {
            let path = dir.path().join("trades.jsonl");
            eprintln!(
                "generating {} records over {} keys ...",
                suite.records, suite.keys
            );
            let bytes =
                generate_trades(&path, suite.records, suite.keys).map_err(|e| e.to_string())?;
            eprintln!(
                "  {:.1} MB, {:.0} bytes per record",
                bytes as f64 / 1e6,
                bytes as f64 / suite.records as f64
            );
            path
        }
    };
    let mut inputs = vec![("trades", file)];
    if suite.second_stream {
        let path = dir.path().join("fills.jsonl");
        generate_trades(&path, suite.records, suite.keys).map_err(|e| e.to_string())?;
        inputs.push(("fills", path));
    }
    if suite.table_rows > 0 {
        let path = dir.path().join("accounts.jsonl");
        generate_accounts(&path, suite.table_rows).map_err(|e| e.to_string())?;
        inputs.push(("accounts", path));
    }
    let mut rows = Vec::new();
    for (label, sql) in suite.queries {
        rows.push(median(suite.runs, label, || {
            measure(label, sql, &inputs, suite.batch_size).map_err(|e| e.to_string())
        })?);
    }
    if let (Some(more), Some((_, last_sql))) = (&suite.more, suite.queries.last()) {
        rows.extend(more(&SuiteInputs {
            inputs: &inputs,
            last_sql,
            runs: suite.runs,
            batch_size: suite.batch_size,
            table_rows: suite.table_rows,
        })?);
    }
    let baseline = rows[suite.baseline].rate_per_core();
    let mut report = format!(
        "{}, {} records, {} keys, batch size {}, median of {} runs, one job thread\n\n\
         | query | records/s (wall) | records/s per core (CPU time) | vs {} | batch latency p50 | p99 |\n|---|---|---|---|---|---|\n",
        suite.title, rows[0].records, suite.keys, suite.batch_size, suite.runs, suite.baseline_label
    );
    for m in &rows {
        report.push_str(&m.table_row(baseline));
    }
    report.push_str(&peak_rss_line());
    Ok(report)
}

/// The run of median wall time among `runs` runs of `measure`.
pub fn median(
    runs: usize,
    label: &str,
    mut measure: impl FnMut() -> Result<Measurement, String>,
) -> Result<Measurement, String> {
    let mut samples = Vec::new();
    for run in 0..runs.max(1) {
        let m = measure()?;
        eprintln!("  {label}, run {}: {} records/s", run + 1, human(m.rate()));
        samples.push(m);
    }
    samples.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
    Ok(samples.swap_remove(samples.len() / 2))
}

/// Windowed aggregation against the stateless pipeline, same file.
pub const WINDOW_QUERIES: &[(&str, &str)] = &[
    (
        "filter + projection (stateless)",
        "CREATE STREAM out AS SELECT id, symbol, price * quantity AS notional, lower(side) AS side \
         FROM trades WHERE price > 100 AND exchange = 'NASDAQ'",
    ),
    (
        "TUMBLING(1m) COUNT/SUM/AVG/MIN/MAX per key",
        "CREATE STREAM out AS SELECT symbol, _window_start, COUNT(*) AS n, SUM(quantity) AS q, AVG(price) AS a, \
         MIN(price) AS lo, MAX(price) AS hi FROM trades GROUP BY symbol WINDOW TUMBLING(ts, 1m)",
    ),
    (
        "SLIDING(5m, 1m) same aggregates",
        "CREATE STREAM out AS SELECT symbol, _window_start, COUNT(*) AS n, SUM(quantity) AS q, AVG(price) AS a, \
         MIN(price) AS lo, MAX(price) AS hi FROM trades GROUP BY symbol WINDOW SLIDING(ts, 5m, 1m)",
    ),
];

/// Stream–table enrichment against the stateless pipeline, same file.
pub const JOIN_QUERIES: &[(&str, &str)] = &[
    (
        "filter + projection (stateless)",
        "CREATE STREAM out AS SELECT id, symbol, price * quantity AS notional, lower(side) AS side \
         FROM trades WHERE price > 100 AND exchange = 'NASDAQ'",
    ),
    (
        "enrichment: JOIN accounts ON symbol",
        "CREATE STREAM out AS SELECT t.id, t.price * t.quantity AS notional, a.owner, a.tier \
         FROM trades t JOIN accounts a ON t.symbol = a.symbol",
    ),
];

/// Interval join of two trade streams against the stateless pipeline.
pub const INTERVAL_QUERIES: &[(&str, &str)] = &[
    (
        "filter + projection (stateless)",
        "CREATE STREAM out AS SELECT id, symbol, price * quantity AS notional, lower(side) AS side \
         FROM trades WHERE price > 100 AND exchange = 'NASDAQ'",
    ),
    (
        "interval join: fills of the symbol within 1 s after the trade",
        "CREATE STREAM out AS SELECT t.id, f.id AS fill FROM trades t JOIN fills f \
         ON t.symbol = f.symbol AND f.ts BETWEEN t.ts AND t.ts + 1000",
    ),
];

/// One account per symbol `S0000`.. (the table side of the join benchmark).
pub fn generate_accounts(path: &Path, rows: u64) -> std::io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    for i in 0..rows {
        let tier = ["gold", "silver", "bronze"][(i % 3) as usize];
        writeln!(
            out,
            "{{\"symbol\":\"S{i:04}\",\"owner\":\"owner_{}\",\"tier\":\"{tier}\",\"limit\":{}}}",
            i % 977,
            1000 + i % 50_000
        )?;
    }
    out.flush()
}

/// The report's closing line: peak memory of the whole run (empty where unknown).
pub fn peak_rss_line() -> String {
    peak_rss_bytes()
        .map(|peak| format!("\npeak RSS of the whole run: {:.0} MB\n", peak as f64 / 1e6))
        .unwrap_or_default()
}

/// Peak resident set size of this process (`VmHWM`), Linux only.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Wall-clock and CPU time (all threads) of a measured section.
pub struct Clock {
    started: Instant,
    cpu: Option<f64>,
}

impl Clock {
    pub fn start() -> Self {
        Self {
            started: Instant::now(),
            cpu: process_cpu_seconds(),
        }
    }

    /// (wall seconds, CPU seconds) since `start`.
    pub fn stop(&self) -> (f64, f64) {
        let seconds = self.started.elapsed().as_secs_f64();
        let cpu_seconds = match (self.cpu, process_cpu_seconds()) {
            // CPU time has 10 ms ticks: too coarse for very short runs
            (Some(a), Some(b)) if b - a >= 0.2 => b - a,
            _ => seconds,
        };
        (seconds, cpu_seconds)
    }
}

/// CPU time (user + system, all threads) of this process so far, from
/// `/proc/self/stat` (Linux; clock ticks of 1/100 s).
fn process_cpu_seconds() -> Option<f64> {
    own_stat_seconds(11, 12)
}

/// CPU time (user + system) of this process's children that have ended
/// and been waited for, from `/proc/self/stat`.
pub fn children_cpu_seconds() -> Option<f64> {
    own_stat_seconds(13, 14)
}

/// The sum of two clock-tick fields of `/proc/self/stat`, counted from
/// the field after the parenthesised command name, in seconds.
fn own_stat_seconds(user: usize, system: usize) -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // utime, stime, cutime and cstime are the 14th to 17th fields
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let user: f64 = fields.get(user)?.parse().ok()?;
    let system: f64 = fields.get(system)?.parse().ok()?;
    Some((user + system) / 100.0)
}
