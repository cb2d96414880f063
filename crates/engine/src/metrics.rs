//! Per-job counters, shared between the job thread and whoever reports
//! progress (the CLI's progress line, later the metrics endpoint).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::dead_letter::DeadLetter;
use crate::latency::LatencyHistogram;

/// How many malformed records are described individually before only
/// counting them.
const DETAILED_BAD_RECORDS: u64 = 20;

#[derive(Debug, Default)]
pub struct JobMetrics {
    pub records_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub records_out: AtomicU64,
    pub batches: AtomicU64,
    pub bad_records: AtomicU64,
    /// Records dropped because every window they belong to had closed.
    pub late_records: AtomicU64,
    /// Rows whose expression failed, isolated by the error policy.
    pub row_errors: AtomicU64,
    /// Whether the job has a dead-letter sink; without one nothing is queued.
    pub dead_letters_enabled: AtomicBool,
    /// Rejected records waiting to be written to the dead-letter sink.
    pub dead_letters: Mutex<Vec<DeadLetter>>,
    /// Windows (and sessions) currently open, over all operators.
    pub open_windows: AtomicU64,
    /// Keys (groups, partitions) currently held, over all operators.
    pub state_keys: AtomicU64,
    /// The first few malformed-record reports, for the end-of-run summary.
    pub bad_record_samples: Mutex<Vec<String>>,
    /// Microseconds each batch took from the job asking its source for it
    /// (reading and decoding included) to its results reaching the sink
    /// (the first [`LATENCY_SAMPLES`]).
    pub batch_latency_us: Mutex<Vec<u32>>,
    /// Records not yet read per (topic, partition), as last seen by a Kafka source.
    pub source_lag: Mutex<BTreeMap<(String, i32), i64>>,
    /// The partitions of each topic this job's consumer-group member owns.
    pub owned_partitions: Mutex<BTreeMap<String, BTreeSet<i32>>>,
    /// Partitions the group moved away since the metrics endpoint last
    /// looked: their lag series are withdrawn.
    pub released_partitions: Mutex<Vec<(String, i32)>>,
    /// The newest checkpoint the job completed (or restored at start).
    pub last_checkpoint: Mutex<Option<CheckpointReport>>,
    /// The partitions of state this job owns, when its source divides
    /// state (a repartitioned read), and how each was restored.
    pub state_partitions: Mutex<BTreeMap<usize, StatePartitionReport>>,
    /// Bytes of partition state read back from where the partitions'
    /// previous owners kept it, over the job's life.
    pub state_restored_bytes: AtomicU64,
    /// The partitions of state this process keeps standby copies of
    /// (`processing.standby_replicas`), and what each holds.
    pub standby_partitions: Mutex<BTreeMap<usize, StandbyReport>>,
    /// Durations (ms) of checkpoints not yet taken by the metrics endpoint.
    pub checkpoint_durations_ms: Mutex<Vec<f64>>,
    /// Every batch's latency as `batch_latency_us` measures it, for the
    /// whole life of the job.
    pub processing_latency: LatencyHistogram,
    /// From a record's source timestamp (a Kafka message's time) to its
    /// results reaching the sink: observed once per input batch that had
    /// results, for the batch's oldest record.
    pub e2e_latency: LatencyHistogram,
}

/// One checkpoint, as the jobs API and logs report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointReport {
    pub id: u64,
    /// When it was taken (ms since the Unix epoch).
    pub at_ms: i64,
    pub duration_ms: u64,
    pub bytes: u64,
    /// True when the job restored it at start rather than taking it.
    pub restored: bool,
}

/// A partition of state a job owns, as the jobs API reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatePartitionReport {
    /// True while its state is being read back; it processes nothing then.
    pub restoring: bool,
    /// The checkpoint of the partition its state was restored from;
    /// `None`: it started empty (nothing was kept for it).
    pub restored_checkpoint: Option<u64>,
    /// Bytes of kept state read back, and the state rows they held.
    pub restored_bytes: u64,
    pub restored_rows: u64,
    /// How long reading it back took.
    pub restore_ms: u64,
    /// True when it was restored from this process's standby copy (only
    /// what was kept after the copy's last read was read back).
    pub from_standby: bool,
}

/// A standby copy of a partition of state another process owns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StandbyReport {
    /// The partition's newest checkpoint the copy holds whole (`None`:
    /// none yet).
    pub checkpoint: Option<u64>,
    /// Bytes held.
    pub bytes: u64,
}

/// How many per-batch latencies are kept.
pub const LATENCY_SAMPLES: usize = 1 << 20;

impl JobMetrics {
    pub fn add_input(&self, records: u64, bytes: u64) {
        self.records_in.fetch_add(records, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Records the consumer lag of one partition.
    pub fn set_source_lag(&self, topic: &str, partition: i32, lag: i64) {
        if let Ok(mut lags) = self.source_lag.lock() {
            match lags.get_mut(&(topic.to_string(), partition)) {
                Some(l) => *l = lag,
                None => {
                    lags.insert((topic.to_string(), partition), lag);
                }
            }
        }
    }

    /// The group now assigns this member `owned` of `topic`: the lag of
    /// the partitions it no longer reads is forgotten.
    pub fn set_owned_partitions(&self, topic: &str, owned: &BTreeSet<i32>) {
        let (Ok(mut all), Ok(mut lags), Ok(mut released)) = (
            self.owned_partitions.lock(),
            self.source_lag.lock(),
            self.released_partitions.lock(),
        ) else {
            return;
        };
        all.insert(topic.to_string(), owned.clone());
        lags.retain(|(t, p), _| {
            let keep = t != topic || owned.contains(p);
            if !keep {
                released.push((t.clone(), *p));
            }
            keep
        });
    }

    /// Whether this job reads `partition` of `topic` now (true when no
    /// consumer group has said otherwise).
    pub fn owns_partition(&self, topic: &str, partition: i32) -> bool {
        self.owned_partitions
            .lock()
            .map(|all| {
                all.get(topic)
                    .is_none_or(|owned| owned.contains(&partition))
            })
            .unwrap_or(true)
    }

    /// Consumer lag per (topic, partition).
    pub fn source_lag(&self) -> BTreeMap<(String, i32), i64> {
        self.source_lag
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    pub fn add_output(&self, records: u64) {
        self.records_out.fetch_add(records, Ordering::Relaxed);
    }

    /// Counts a record that could not be decoded and logs it (the first
    /// few in full, then every 10,000th). The job goes on.
    pub fn bad_record(&self, position: &str, reason: &str) {
        let n = self.bad_records.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= DETAILED_BAD_RECORDS {
            let line = format!("{position}: {reason}");
            tracing::warn!(
                component = "engine",
                error_type = "malformed_record",
                "skipped malformed record at {line}"
            );
            self.bad_record_samples
                .lock()
                .expect("metrics lock")
                .push(line);
        } else if n.is_multiple_of(10_000) {
            tracing::warn!(
                component = "engine",
                error_type = "malformed_record",
                "{n} malformed records skipped so far (latest at {position})"
            );
        }
    }

    /// A malformed record: counted and logged as [`bad_record`](Self::bad_record)
    /// does, and queued for the dead-letter sink with its text.
    pub fn malformed_record(&self, letter: DeadLetter) {
        self.bad_record(&letter.position, &letter.reason);
        self.dead_letter(|| letter);
    }

    /// Counts a row whose expression failed and that the error policy took
    /// out of its batch; logs the first few with the reason, then every
    /// 10,000th. The job goes on.
    pub fn row_error(&self, position: &str, reason: &str) {
        let n = self.row_errors.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= DETAILED_BAD_RECORDS {
            tracing::warn!(
                component = "engine",
                error_type = "row_error",
                "isolated a row that failed at {position}: {reason}"
            );
        } else if n.is_multiple_of(10_000) {
            tracing::warn!(
                component = "engine",
                error_type = "row_error",
                "{n} failing rows isolated so far (latest at {position})"
            );
        }
    }

    /// Queues a rejected record for the dead-letter sink, if the job has one.
    pub fn dead_letter(&self, letter: impl FnOnce() -> DeadLetter) {
        if self.dead_letters_enabled.load(Ordering::Relaxed) {
            self.dead_letters
                .lock()
                .expect("metrics lock")
                .push(letter());
        }
    }

    /// Takes the queued dead letters.
    pub fn take_dead_letters(&self) -> Vec<DeadLetter> {
        std::mem::take(&mut *self.dead_letters.lock().expect("metrics lock"))
    }

    /// Counts a record that arrived after its windows closed; the first few
    /// are described on stderr.
    pub fn late_record(&self, event_time_ms: i64, watermark_ms: i64) {
        let n = self.late_records.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= DETAILED_BAD_RECORDS {
            tracing::warn!(
                component = "engine",
                error_type = "late_record",
                "dropped late record (event time {}, watermark {})",
                format_millis(event_time_ms),
                format_millis(watermark_ms)
            );
        } else if n.is_multiple_of(10_000) {
            tracing::warn!(
                component = "engine",
                error_type = "late_record",
                "{n} late records dropped so far"
            );
        }
    }

    pub fn record_latency(&self, micros: u64) {
        self.processing_latency.observe_us(micros);
        let mut samples = self.batch_latency_us.lock().expect("metrics lock");
        if samples.len() < LATENCY_SAMPLES {
            samples.push(micros.min(u32::MAX as u64) as u32);
        }
    }

    /// The `q` quantile (0..=1) of recorded batch latencies, in microseconds.
    pub fn latency_quantile(&self, q: f64) -> Option<u32> {
        let mut samples = self.batch_latency_us.lock().expect("metrics lock").clone();
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let rank = ((samples.len() - 1) as f64 * q).round() as usize;
        Some(samples[rank])
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// `1793613659000` → `2026-11-02T10:00:59Z`.
fn format_millis(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| format!("{ms} ms"))
}
