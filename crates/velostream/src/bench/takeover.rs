//! `velostream bench takeover`: how long a repartitioned statement's
//! partitions take to move when a process dies, and how fast their state
//! comes back from the changelog.
//!
//! Two `velostream run` processes share one application (a GROUP BY over
//! the trades' ids through the repartition topic: one group of state per
//! record), checkpointing every second. Once every record is answered,
//! one process is killed with SIGKILL and one probe record per 10 ids is
//! produced. Reported: when the survivor logged the moved partitions'
//! state restored (the group noticing the death is most of it: the
//! consumer session timeout), when every probe was answered, and the
//! state restored in bytes per second. The whole is run twice: without
//! standby copies, and with one (`--standby-replicas 1`: the survivor
//! keeps a copy of the other's partitions, so taking them over reads only
//! the changelog written since the copy's last read).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use velostream_connectors::kafka::admin;

use crate::bench::kafka::produce_trades;
use crate::bench::unique_suffix;

#[derive(clap::Args)]
pub struct TakeoverBench {
    /// Records produced to the input topic (one group of state each)
    #[arg(long, default_value_t = 200_000)]
    pub records: u64,
    /// Bootstrap servers (default: KAFKA_BROKERS, else localhost:9092)
    #[arg(long)]
    pub brokers: Option<String>,
    /// Partitions of the input topic
    #[arg(long, default_value_t = 6)]
    pub partitions: i32,
    /// The consumer groups' `session.timeout.ms`: how long the group waits
    /// before taking a silent process's partitions away
    #[arg(long, default_value_t = 6000)]
    pub session_timeout_ms: u64,
    /// The standby replicas of the second run (the first has none)
    #[arg(long, default_value_t = 1)]
    pub standby_replicas: usize,
}

/// Probe records produced after the kill, whose answers mark the takeover.
const PROBES: u64 = 60;
/// How long the processes may take to answer every record, and the
/// survivor every probe.
const PATIENCE: Duration = Duration::from_secs(600);

fn application(topic: &str, brokers: &str, group: &str, out: &Path, session_ms: u64) -> String {
    format!(
        "CREATE STREAM trades (id BIGINT, symbol VARCHAR, quantity BIGINT, ts BIGINT)
         WITH ('type' = 'kafka_source', 'topic' = '{topic}', 'bootstrap.servers' = '{brokers}',
               'group.id' = '{group}', 'scale_out' = 'true', 'session.timeout.ms' = '{session_ms}');
         CREATE STREAM per_trade AS
           SELECT id, COUNT(*) AS n, SUM(quantity) AS volume FROM trades GROUP BY id
         WITH ('per_trade.type' = 'file_sink', 'per_trade.path' = '{}');",
        out.display()
    )
}

/// A process of the application, its log in a file.
struct Process {
    child: Child,
    out: PathBuf,
    log: PathBuf,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(
    dir: &Path,
    name: &str,
    standby_replicas: usize,
    app_text: impl Fn(&Path) -> String,
) -> Result<Process, String> {
    let out = dir.join(format!("{name}.jsonl"));
    let app = dir.join(format!("{name}.sql"));
    let log = dir.join(format!("{name}.log"));
    std::fs::write(&app, app_text(&out)).map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let state = dir.join(format!("{name}-state"));
    let child = Command::new(exe)
        .args([
            "run",
            "-q",
            "--checkpoint-interval",
            "1s",
            "--standby-replicas",
        ])
        .arg(standby_replicas.to_string())
        .arg("--state-dir")
        .arg(&state)
        .arg(&app)
        .env("VELOSTREAM_LOG", "info")
        .stdout(Stdio::null())
        .stderr(File::create(&log).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| e.to_string())?;
    Ok(Process { child, out, log })
}

/// Ids answered in `out` so far.
fn answered(out: &Path) -> std::collections::HashSet<i64> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["id"].as_i64())
        .collect()
}

/// One restore a log reports.
#[derive(Debug, PartialEq)]
struct Restore {
    bytes: u64,
    ms: u64,
    from_standby: bool,
}

/// Every restore `log` reports
/// (`… (checkpoint K, B bytes in M ms[, from the standby copy])`).
fn restores(log: &str) -> Vec<Restore> {
    log.split("(checkpoint ")
        .skip(1)
        .filter_map(|rest| {
            let (_, rest) = rest.split_once(", ")?;
            let (bytes, rest) = rest.split_once(" bytes in ")?;
            let (ms, rest) = rest.split_once(" ms")?;
            Some(Restore {
                bytes: bytes.parse().ok()?,
                ms: ms.parse().ok()?,
                from_standby: rest.starts_with(", from the standby copy"),
            })
        })
        .collect()
}

pub fn run(bench: &TakeoverBench, brokers: &str) -> Result<String, String> {
    let mut report = format!(
        "Takeover: {} records, one group of state each, 2 processes of one application \
         (GROUP BY id through the repartition topic, checkpoints every second, \
         session.timeout.ms {}); one killed with SIGKILL\n\n\
         | standby replicas | partitions moved | from a standby copy | state restored (bytes) | restore ms | restore MB/s | kill → state restored | kill → every probe answered |\n\
         |---|---|---|---|---|---|---|---|\n",
        bench.records, bench.session_timeout_ms
    );
    for standby in [0, bench.standby_replicas] {
        eprintln!("standby replicas {standby}:");
        report.push_str(&takeover(bench, brokers, standby)?);
    }
    Ok(report)
}

/// One takeover, on a topic and group of its own: its row of the table.
fn takeover(bench: &TakeoverBench, brokers: &str, standby: usize) -> Result<String, String> {
    let suffix = unique_suffix();
    let topic = format!("bench-takeover-{suffix}");
    let group = format!("bench-takeover-{suffix}");
    let produced = produce_trades(brokers, &topic, bench.partitions, bench.records, true)?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let app = |out: &Path| application(&topic, brokers, &group, out, bench.session_timeout_ms);
    let killed = start(dir.path(), "a", standby, app)?;
    let survivor = start(dir.path(), "b", standby, app)?;
    eprintln!("two processes answering {produced} records ...");
    let deadline = Instant::now() + PATIENCE;
    while answered(&killed.out).len() + answered(&survivor.out).len() < produced as usize {
        if Instant::now() > deadline {
            return Err(format!("not every record was answered within {PATIENCE:?}"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // a checkpoint (each second) keeps the state of every partition
    std::thread::sleep(Duration::from_secs(3));
    let before = std::fs::read_to_string(&survivor.log).unwrap_or_default();
    let restores_before = restores(&before).len();

    let mut killed = killed;
    let killed_at = Instant::now();
    killed.child.kill().map_err(|e| e.to_string())?;
    let _ = killed.child.wait();
    let probes: Vec<(String, String)> = (produced..produced + PROBES)
        .map(|id| {
            (
                id.to_string(),
                format!(
                    r#"{{"id":{id},"symbol":"S0000","quantity":1,"ts":{}}}"#,
                    1_700_000_000_000u64 + id
                ),
            )
        })
        .collect();
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    admin::produce(
        &config,
        &topic,
        probes
            .iter()
            .map(|(k, v)| (Some(k.as_bytes()), v.as_bytes(), None)),
    )
    .map_err(|e| e.to_string())?;
    eprintln!("one process killed; waiting for the other to answer every probe ...");
    let mut restored_after = None;
    let answered_after = loop {
        let log = std::fs::read_to_string(&survivor.log).unwrap_or_default();
        if restored_after.is_none() && restores(&log).len() > restores_before {
            restored_after = Some(killed_at.elapsed());
        }
        let seen = answered(&survivor.out);
        if (produced..produced + PROBES).all(|id| seen.contains(&(id as i64))) {
            break killed_at.elapsed();
        }
        if Instant::now() > killed_at + PATIENCE {
            return Err(format!(
                "the surviving process did not answer every probe within {PATIENCE:?}:\n{log}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(&survivor.log).unwrap_or_default();
    let moved = restores(&log).split_off(restores_before);
    let bytes: u64 = moved.iter().map(|r| r.bytes).sum();
    let ms: u64 = moved.iter().map(|r| r.ms).sum();
    let row = format!(
        "| {standby} | {} | {} | {bytes} | {ms} | {} | {} | {:.2} s |\n",
        moved.len(),
        moved.iter().filter(|r| r.from_standby).count(),
        // a copy is read as it is written: only a changelog read counts
        match moved.iter().all(|r| r.from_standby) {
            true => "(copy)".to_string(),
            false => format!("{:.1}", bytes as f64 / 1e6 / (ms.max(1) as f64 / 1000.0)),
        },
        restored_after.map_or("not seen".to_string(), |d| format!(
            "{:.2} s",
            d.as_secs_f64()
        )),
        answered_after.as_secs_f64()
    );
    drop(survivor);
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_lines_are_read_for_their_bytes_and_time() {
        let log = "info: events: state of 't' partitions [1, 4] taken on (restored: 1 (checkpoint 7, 5120 bytes in 12 ms), 4 (checkpoint 3, 99 bytes in 1 ms, from the standby copy)), [] given up";
        assert_eq!(
            restores(log),
            vec![
                Restore {
                    bytes: 5120,
                    ms: 12,
                    from_standby: false
                },
                Restore {
                    bytes: 99,
                    ms: 1,
                    from_standby: true
                }
            ]
        );
    }
}
