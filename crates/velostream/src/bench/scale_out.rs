//! `velostream bench scale-out`: one application run by 1, 2, 3 …
//! `velostream run` processes of one consumer group over the same Kafka
//! topic, each process reading the partitions the group assigns it.
//!
//! Reported per instance count: the wall time from starting the processes
//! to the last one ending its bounded read (the group's join included),
//! the records read (a partition moved by a rebalance during the read is
//! read again by its new owner, so this can exceed the topic), and the
//! CPU time of all processes per million records. On a machine with fewer
//! cores than processes the wall time cannot fall; CPU per record shows
//! what each added process costs.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use crate::bench::kafka::produce_trades;
use crate::bench::{children_cpu_seconds, unique_suffix};
use crate::progress::human;

#[derive(clap::Args)]
pub struct ScaleOutBench {
    /// Records produced to the input topic
    #[arg(long, default_value_t = 2_000_000)]
    pub records: u64,
    /// Bootstrap servers (default: KAFKA_BROKERS, else localhost:9092)
    #[arg(long)]
    pub brokers: Option<String>,
    /// Partitions of the input topic (at least the largest instance count)
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// Instance counts to run, one measurement each (comma-separated)
    #[arg(long, default_value = "1,2,3", value_delimiter = ',')]
    pub instances: Vec<usize>,
    /// Run a 1-minute tumbling count and sum per symbol instead of the
    /// filter + projection
    #[arg(long)]
    pub aggregate: bool,
    /// Mark the source shared (`'scale_out' = 'true'`): with --aggregate,
    /// every record crosses the statement's repartition topic
    #[arg(long)]
    pub scale_out: bool,
}

/// The statement every instance runs, into a file of the instance's own:
/// the filter + projection of `bench kafka`, or a per-symbol window
/// aggregate; `scale_out` marks the source shared.
fn application(
    topic: &str,
    brokers: &str,
    group: &str,
    out: &Path,
    bench: &ScaleOutBench,
) -> String {
    let query = if bench.aggregate {
        "SELECT symbol, _window_start AS w, COUNT(*) AS trades, SUM(quantity) AS volume \
           FROM trades GROUP BY symbol WINDOW TUMBLING(ts, 1m)"
    } else {
        "SELECT id, symbol, price * quantity AS notional, lower(side) AS side \
           FROM trades WHERE price > 100 AND exchange = 'NASDAQ'"
    };
    let scale_out = bench.scale_out;
    format!(
        "CREATE STREAM trades (id BIGINT, symbol VARCHAR, side VARCHAR, price DOUBLE, \
           quantity BIGINT, exchange VARCHAR, trader VARCHAR, ccy VARCHAR, ts BIGINT)
         WITH ('type' = 'kafka_source', 'topic' = '{topic}', 'bootstrap.servers' = '{brokers}',
               'group.id' = '{group}', 'bounded' = 'true', 'scale_out' = '{scale_out}');
         CREATE STREAM out AS {query}
         WITH ('out.type' = 'file_sink', 'out.path' = '{}');",
        out.display()
    )
}

/// One measurement: `instances` processes of one group, to the end.
struct Run {
    instances: usize,
    seconds: f64,
    cpu_seconds: f64,
    records: u64,
}

/// Records read, from a finished `velostream run`'s summary line
/// (`job out: N records in, …`).
fn records_in(stderr: &str) -> Option<u64> {
    let line = stderr.lines().find(|l| l.starts_with("job out:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn measure(
    dir: &Path,
    topic: &str,
    brokers: &str,
    instances: usize,
    suffix: u128,
    bench: &ScaleOutBench,
) -> Result<Run, String> {
    let group = format!("bench-scale-{suffix}-{instances}");
    let apps = (0..instances)
        .map(|i| {
            let app = dir.join(format!("scale-{instances}-{i}.sql"));
            let out = dir.join(format!("scale-{instances}-{i}.jsonl"));
            std::fs::write(&app, application(topic, brokers, &group, &out, bench))
                .map(|()| app)
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let cpu_before = children_cpu_seconds().unwrap_or(0.0);
    let started = Instant::now();
    let children: Vec<Child> = apps
        .iter()
        .map(|app| {
            Command::new(&exe)
                .arg("run")
                .arg(app)
                .stderr(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let mut records = 0;
    for child in children {
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            return Err(format!("an instance failed ({}):\n{stderr}", out.status));
        }
        records += records_in(&stderr)
            .ok_or_else(|| format!("no summary line in an instance's output:\n{stderr}"))?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = children_cpu_seconds().unwrap_or(0.0) - cpu_before;
    Ok(Run {
        instances,
        seconds,
        cpu_seconds,
        records,
    })
}

/// Produces the input once, measures each instance count; returns a
/// Markdown report.
pub fn run(bench: &ScaleOutBench, brokers: &str) -> Result<String, String> {
    let largest = bench.instances.iter().copied().max().unwrap_or(1);
    if bench.partitions < largest as i32 {
        return Err(format!(
            "{largest} instances need at least {largest} partitions (--partitions {})",
            bench.partitions
        ));
    }
    let suffix = unique_suffix();
    let topic = format!("bench-scale-{suffix}");
    let produced = produce_trades(brokers, &topic, bench.partitions, bench.records, true)?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;

    let mut runs = Vec::new();
    for &instances in &bench.instances {
        eprintln!("{instances} instance(s) ...");
        let run = measure(dir.path(), &topic, brokers, instances, suffix, bench)?;
        eprintln!(
            "  {:.2} s, {} records, {:.2} CPU s",
            run.seconds, run.records, run.cpu_seconds
        );
        runs.push(run);
    }
    let baseline = runs
        .first()
        .map(|r| r.cpu_seconds / r.records.max(1) as f64)
        .unwrap_or(0.0);
    let query = match (bench.aggregate, bench.scale_out) {
        (true, true) => "1-minute tumbling count and sum per symbol through the repartition topic",
        (true, false) => "1-minute tumbling count and sum per symbol (each process its own groups)",
        (false, _) => "filter + projection",
    };
    let mut report = format!(
        "Scale-out: {produced} JSON records on {} partitions, Kafka → {query} → file, \
         each instance a `velostream run` process of one consumer group, bounded read\n\n\
         | instances | wall s (join included) | records read | records/s (wall) | CPU s per M records | CPU per record vs {} instance(s) |\n\
         |---|---|---|---|---|---|\n",
        bench.partitions,
        runs.first().map_or(1, |r| r.instances)
    );
    for r in &runs {
        let per_record = r.cpu_seconds / r.records.max(1) as f64;
        report.push_str(&format!(
            "| {} | {:.2} | {} | {} | {:.2} | {:.0}% |\n",
            r.instances,
            r.seconds,
            r.records,
            human(r.records as f64 / r.seconds),
            per_record * 1e6,
            100.0 * per_record / baseline.max(f64::MIN_POSITIVE)
        ));
    }
    Ok(report)
}
