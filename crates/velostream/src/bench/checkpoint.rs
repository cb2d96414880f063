//! `velostream bench checkpoint`: what checkpoints cost and how quickly a
//! job with a large state comes back.
//!
//! - Overhead: the tumbling-window benchmark query without checkpoints,
//!   then with a checkpoint every interval under each state backend, in
//!   the same run over the same file.
//! - Recovery: a GROUP BY holding one row per key (1 M keys by default) is
//!   checkpointed; a new job restores it and processes one more record.
//!   Reported: the time from building the job to that record's result.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use velostream_engine::checkpoint::{BackendKind, CheckpointSettings};

use crate::app::{run_jobs, Application, RunOptions};
use crate::bench::{
    file_overrides, generate_trades, measure_app, peak_rss_line, Measurement, WINDOW_QUERIES,
};
use crate::progress::human;

#[derive(clap::Args)]
pub struct CheckpointBench {
    /// Records of the overhead measurement
    #[arg(long, default_value_t = 5_000_000)]
    pub records: u64,
    /// Distinct group keys of the overhead measurement
    #[arg(long, default_value_t = 1000)]
    pub keys: u64,
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Time between checkpoints
    #[arg(long, default_value = "1s", value_parser = crate::state_args::parse_duration)]
    pub interval: Duration,
    /// Keys of state for the recovery measurement
    #[arg(long, default_value_t = 1_000_000)]
    pub recovery_keys: u64,
    /// Runs per configuration (the median is reported)
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

const BACKENDS: [BackendKind; 2] = [BackendKind::Memory, BackendKind::RocksDb];

fn settings(dir: &Path, backend: BackendKind, interval: Duration) -> CheckpointSettings {
    let mut s = CheckpointSettings::new(dir.join(backend.name()), interval);
    s.backend = backend;
    s
}

/// Runs both measurements; returns a Markdown report.
pub fn run(bench: &CheckpointBench) -> Result<String, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let trades = dir.path().join("trades.jsonl");
    eprintln!(
        "generating {} records over {} keys ...",
        bench.records, bench.keys
    );
    generate_trades(&trades, bench.records, bench.keys).map_err(|e| e.to_string())?;
    let (label, sql) = WINDOW_QUERIES[1];
    let options = |checkpoints| RunOptions {
        batch_size: bench.batch_size,
        overrides: file_overrides(&[("trades", trades.clone())]),
        checkpoints,
        ..RunOptions::default()
    };
    // interleaved runs (median of each) so that drift of the machine hits
    // every configuration alike
    let configs: Vec<Option<CheckpointSettings>> = std::iter::once(None)
        .chain(BACKENDS.map(|b| Some(settings(dir.path(), b, bench.interval))))
        .collect();
    let mut samples: Vec<Vec<Measurement>> = configs.iter().map(|_| Vec::new()).collect();
    for run in 0..bench.runs.max(1) {
        // each run starts with a different configuration, so none is
        // always first (a position effect showed in the measurements)
        let mut order: Vec<usize> = (0..configs.len()).collect();
        order.rotate_left(run % configs.len());
        for i in order {
            let (config, samples) = (&configs[i], &mut samples[i]);
            if let Some(s) = config {
                // every run starts without checkpoints to restore
                let _ = std::fs::remove_dir_all(s.job_dir("out"));
            }
            let m = measure_app(label, sql, options(config.clone())).map_err(|e| e.to_string())?;
            eprintln!(
                "  run {}, {}: {} records/s",
                run + 1,
                config
                    .as_ref()
                    .map_or("no checkpoints", |s| s.backend.name()),
                human(m.rate())
            );
            samples.push(m);
        }
    }
    let medians: Vec<Measurement> = samples
        .into_iter()
        .map(|mut runs| {
            runs.sort_by(|a, b| a.seconds.total_cmp(&b.seconds));
            runs.swap_remove(runs.len() / 2)
        })
        .collect();
    let baseline = &medians[0];
    let mut report = format!(
        "Checkpoint overhead: `{label}`, {} records, {} keys, batch size {}, one job thread, \
         a checkpoint every {:?}, median of {} interleaved runs\n\n\
         | run | records/s (wall) | records/s per core | vs no checkpoints | checkpoints | checkpoint time p50 / max |\n\
         |---|---|---|---|---|---|\n\
         | no checkpoints | {} | {} | 100% | – | – |\n",
        bench.records,
        bench.keys,
        bench.batch_size,
        bench.interval,
        bench.runs.max(1),
        human(baseline.rate()),
        human(baseline.rate_per_core()),
    );
    for (config, m) in configs.iter().zip(&medians).skip(1) {
        let Some(s) = config else { continue };
        let mut took = m.checkpoint_ms.clone();
        took.sort_by(f64::total_cmp);
        let p50 = took.get(took.len() / 2).copied().unwrap_or(0.0);
        let max = took.last().copied().unwrap_or(0.0);
        report.push_str(&format!(
            "| checkpoints, {} backend | {} | {} | {:.0}% | {} | {p50:.1} ms / {max:.1} ms |\n",
            s.backend.name(),
            human(m.rate()),
            human(m.rate_per_core()),
            100.0 * m.rate_per_core() / baseline.rate_per_core(),
            took.len(),
        ));
    }
    report.push_str(&format!(
        "\nRecovery: a GROUP BY holding {} keys, checkpointed, then restored by a new job that processes one more record\n\n\
         | backend | checkpoint size | writing it | start to first result after restore |\n|---|---|---|---|\n",
        bench.recovery_keys
    ));
    for backend in BACKENDS {
        report.push_str(&recovery(dir.path(), backend, bench)?);
    }
    report.push_str(&peak_rss_line());
    Ok(report)
}

/// One backend's recovery row.
fn recovery(dir: &Path, backend: BackendKind, bench: &CheckpointBench) -> Result<String, String> {
    let sql = "CREATE STREAM out AS SELECT symbol, COUNT(*) AS n, SUM(quantity) AS q \
               FROM trades GROUP BY symbol EMIT CHANGES";
    let file = dir.join(format!("keys-{}.jsonl", backend.name()));
    eprintln!(
        "recovery, {}: {} keys ...",
        backend.name(),
        bench.recovery_keys
    );
    generate_trades(&file, bench.recovery_keys * 2, bench.recovery_keys)
        .map_err(|e| e.to_string())?;
    let state = dir.join(format!("recovery-{}", backend.name()));
    let options = RunOptions {
        batch_size: bench.batch_size,
        overrides: file_overrides(&[("trades", file.clone())]),
        checkpoints: Some(settings(&state, backend, Duration::from_secs(3600))),
        ..RunOptions::default()
    };
    // the first job ends with a checkpoint of every key
    let app = Application::from_text("recovery.sql", sql, Path::new("."), &options)
        .map_err(|e| e.to_string())?;
    let jobs = app.build_jobs().map_err(|e| e.to_string())?;
    let metrics = jobs[0].metrics();
    run_jobs(jobs).map_err(|e| e.to_string())?;
    let written = metrics
        .last_checkpoint
        .lock()
        .ok()
        .and_then(|c| *c)
        .ok_or("the first job took no checkpoint")?;

    // one more record; a new job restores and processes it
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .map_err(|e| e.to_string())?;
    writeln!(
        f,
        r#"{{"id":-1,"symbol":"S0000","side":"BUY","price":1.00,"quantity":1,"exchange":"NYSE","trader":"t","ccy":"USD","ts":1}}"#
    )
    .map_err(|e| e.to_string())?;
    drop(f);
    let started = Instant::now();
    let app = Application::from_text("recovery.sql", sql, Path::new("."), &options)
        .map_err(|e| e.to_string())?;
    let jobs = app.build_jobs().map_err(|e| e.to_string())?;
    let metrics = jobs[0].metrics();
    let runner = std::thread::spawn(move || run_jobs(jobs));
    let mut first_result = None;
    while first_result.is_none() {
        if metrics.records_out.load(Ordering::Relaxed) > 0 {
            first_result = Some(started.elapsed());
        } else if runner.is_finished() {
            break;
        } else {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    let summaries = runner
        .join()
        .map_err(|_| "the recovery job panicked".to_string())?
        .map_err(|e| e.to_string())?;
    let read = summaries.first().map_or(0, |s| s.records_in);
    if read != 1 {
        return Err(format!(
            "the restored job read {read} records, expected the 1 new one"
        ));
    }
    let first = first_result.ok_or("the restored job produced no result")?;
    Ok(format!(
        "| {} | {:.1} MB | {} ms | {} ms |\n",
        backend.name(),
        written.bytes as f64 / 1e6,
        written.duration_ms,
        first.as_millis()
    ))
}
