//! The Prometheus metrics of the deployment guide ("Key Metrics" and the
//! dashboard), labelled by job where they apply. Job counters live in each
//! job's [`JobMetrics`]; a scrape brings the Prometheus families up to date
//! from them, so the hot path never touches Prometheus.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use velostream_engine::latency::{LatencyHistogram, LATENCY_BUCKETS_MS};
use velostream_engine::JobMetrics;

/// Which of a job's histograms a family exports.
type HistogramOf = fn(&JobMetrics) -> &LatencyHistogram;

/// The latency histograms each job fills itself (see
/// [`velostream_engine::latency`]): name, help, and which of its histograms.
const JOB_HISTOGRAMS: &[(&str, &str, HistogramOf)] = &[
    (
        "velostream_processing_latency_ms",
        "Time from reading a batch to its results reaching the sink",
        |m| &m.processing_latency,
    ),
    (
        "velostream_e2e_latency_ms",
        "Time from a record's source timestamp (its Kafka message time) to its results reaching the sink, per input batch with results, for its oldest record",
        |m| &m.e2e_latency,
    ),
];

/// Every metric family the service exports.
pub struct ServiceMetrics {
    registry: Registry,
    records: IntCounterVec,
    bytes: IntCounterVec,
    events_per_second: GaugeVec,
    /// Observed by checkpoints.
    pub checkpoint_duration: HistogramVec,
    errors: IntCounterVec,
    /// Job restarts after failures.
    pub retries: IntCounterVec,
    pub circuit_breaker_trips: IntCounterVec,
    /// Per application: 0 closed, 1 half-open (a trial run), 2 open.
    pub circuit_breaker_state: IntGaugeVec,
    /// Seconds since each job's newest checkpoint (taken or restored).
    checkpoint_age: GaugeVec,
    /// 1 while `/ready` answers 200, else 0 (set at each scrape).
    pub ready: IntGauge,
    heap_inuse: IntGauge,
    consumer_lag: IntGaugeVec,
    partitions_owned: IntGaugeVec,
    state_partitions: IntGaugeVec,
    state_restored_bytes: IntCounterVec,
    standby_bytes: IntGaugeVec,
    producer_send_rate: GaugeVec,
    /// 1 while the configured Kafka cluster answers, else 0.
    pub broker_availability: Gauge,
    /// What the last scrape saw of each job run, keyed by its counters'
    /// address: a restarted job has new counters that start from zero.
    seen: Mutex<HashMap<usize, Seen>>,
}

#[derive(Clone, Copy)]
struct Seen {
    records_in: u64,
    records_out: u64,
    bytes: u64,
    errors: u64,
    row_errors: u64,
    restored_bytes: u64,
    /// The job has held standby copies (its gauges then stay, at zero).
    standby: bool,
    at: Instant,
}

impl ServiceMetrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let job = &["job"];
        let records = IntCounterVec::new(
            Opts::new(
                "velostream_records_processed_total",
                "Records read by each job",
            ),
            job,
        )?;
        let bytes = IntCounterVec::new(
            Opts::new("velostream_bytes_processed_total", "Bytes read by each job"),
            job,
        )?;
        let events_per_second = GaugeVec::new(
            Opts::new(
                "velostream_events_per_second",
                "Records per second of each job since the previous scrape",
            ),
            job,
        )?;
        let histogram = |name: &str, help: &str| {
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS_MS.to_vec()),
                job,
            )
        };
        let checkpoint_duration = histogram(
            "velostream_checkpoint_duration_ms",
            "Time to take a checkpoint",
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "velostream_errors_total",
                "Errors of each job by kind: malformed records, rows whose expression failed, job failures",
            ),
            &["job", "kind"],
        )?;
        let retries = IntCounterVec::new(
            Opts::new("velostream_retries_total", "Restarts of failed jobs"),
            job,
        )?;
        let circuit_breaker_trips = IntCounterVec::new(
            Opts::new(
                "velostream_circuit_breaker_trips",
                "Times a job's circuit breaker opened",
            ),
            job,
        )?;
        let circuit_breaker_state = IntGaugeVec::new(
            Opts::new(
                "velostream_circuit_breaker_state",
                "Each application's circuit breaker: 0 closed, 1 half-open (a trial run), 2 open",
            ),
            job,
        )?;
        let checkpoint_age = GaugeVec::new(
            Opts::new(
                "velostream_checkpoint_age_seconds",
                "Seconds since each job's newest checkpoint (taken, or restored at start)",
            ),
            job,
        )?;
        let ready = IntGauge::new(
            "velostream_ready",
            "Whether the service is ready (GET /ready answers 200): 1 yes, 0 no",
        )?;
        let heap_inuse = IntGauge::new(
            "go_memstats_heap_inuse_bytes",
            "Heap in use (the process's data segment; named as the dashboards expect)",
        )?;
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                "kafka_consumer_lag",
                "Messages not yet read, per job, topic and partition",
            ),
            &["job", "topic", "partition"],
        )?;
        let partitions_owned = IntGaugeVec::new(
            Opts::new(
                "velostream_source_partitions_owned",
                "Partitions of a topic the job's consumer-group member owns now",
            ),
            &["job", "topic"],
        )?;
        let state_partitions = IntGaugeVec::new(
            Opts::new(
                "velostream_state_partitions",
                "Partitions of state a job holds (a repartitioned statement): owned and restoring or active, or standby copies of partitions other processes own",
            ),
            &["job", "state"],
        )?;
        let state_restored_bytes = IntCounterVec::new(
            Opts::new(
                "velostream_state_restored_bytes_total",
                "Bytes of partition state read back from changelog topics when partitions moved to the job",
            ),
            job,
        )?;
        let standby_bytes = IntGaugeVec::new(
            Opts::new(
                "velostream_state_standby_bytes",
                "Bytes of changelog held as standby copies of partitions other processes own",
            ),
            job,
        )?;
        let producer_send_rate = GaugeVec::new(
            Opts::new(
                "kafka_producer_record_send_rate",
                "Records per second sent by each job",
            ),
            job,
        )?;
        let broker_availability = Gauge::new(
            "kafka_broker_availability",
            "Whether the configured Kafka cluster answers: 1 yes, 0 no",
        )?;
        for c in [&records, &bytes, &errors, &retries, &circuit_breaker_trips] {
            registry.register(Box::new(c.clone()))?;
        }
        for g in [&events_per_second, &producer_send_rate, &checkpoint_age] {
            registry.register(Box::new(g.clone()))?;
        }
        registry.register(Box::new(checkpoint_duration.clone()))?;
        registry.register(Box::new(circuit_breaker_state.clone()))?;
        registry.register(Box::new(ready.clone()))?;
        registry.register(Box::new(heap_inuse.clone()))?;
        registry.register(Box::new(consumer_lag.clone()))?;
        registry.register(Box::new(partitions_owned.clone()))?;
        registry.register(Box::new(state_partitions.clone()))?;
        registry.register(Box::new(state_restored_bytes.clone()))?;
        registry.register(Box::new(standby_bytes.clone()))?;
        registry.register(Box::new(broker_availability.clone()))?;
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Self {
            registry,
            records,
            bytes,
            events_per_second,
            checkpoint_duration,
            errors,
            retries,
            circuit_breaker_trips,
            circuit_breaker_state,
            checkpoint_age,
            ready,
            heap_inuse,
            consumer_lag,
            partitions_owned,
            state_partitions,
            state_restored_bytes,
            standby_bytes,
            producer_send_rate,
            broker_availability,
            seen: Mutex::new(HashMap::new()),
        })
    }

    /// Makes every labelled family show `job` (at zero) before it does anything.
    pub fn register_job(&self, job: &str) {
        self.records.with_label_values(&[job]);
        self.bytes.with_label_values(&[job]);
        for kind in [MALFORMED, EXPRESSION, JOB_FAILED] {
            self.errors.with_label_values(&[job, kind]);
        }
        self.retries.with_label_values(&[job]);
        self.circuit_breaker_trips.with_label_values(&[job]);
        self.events_per_second.with_label_values(&[job]);
        self.producer_send_rate.with_label_values(&[job]);
        self.checkpoint_duration.with_label_values(&[job]);
    }

    /// Makes the families counted per application (failures, restarts,
    /// breaker trips and state) show `application` at zero from its start,
    /// so `increase()` sees its first failure.
    pub fn register_application(&self, application: &str) {
        self.errors.with_label_values(&[application, JOB_FAILED]);
        self.retries.with_label_values(&[application]);
        self.circuit_breaker_trips.with_label_values(&[application]);
        self.circuit_breaker_state.with_label_values(&[application]);
    }

    /// Counts a job failure.
    pub fn job_failed(&self, job: &str) {
        self.errors.with_label_values(&[job, JOB_FAILED]).inc();
    }

    /// Brings the families up to date with `jobs` and renders the text format.
    pub fn render(&self, jobs: &[(String, Arc<JobMetrics>)]) -> String {
        self.update(jobs);
        let mut families = self.registry.gather();
        families.extend(
            job_histograms(jobs)
                .into_iter()
                .filter(|f| !f.get_metric().is_empty()),
        );
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&families, &mut out);
        let mut text = String::from_utf8(out).unwrap_or_default();
        // a family without samples yet (no Kafka partition read, no job
        // running) is still announced, so dashboards and alerts find the name
        let lag = (
            "kafka_consumer_lag",
            "Messages not yet read, per job, topic and partition",
            "gauge",
        );
        let histograms = JOB_HISTOGRAMS
            .iter()
            .map(|(name, help, _)| (*name, *help, "histogram"));
        for (name, help, kind) in std::iter::once(lag).chain(histograms) {
            if !text.contains(&format!("# TYPE {name} ")) {
                text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            }
        }
        text
    }

    fn update(&self, jobs: &[(String, Arc<JobMetrics>)]) {
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        let now = Instant::now();
        for (name, m) in jobs {
            let records_in = m.records_in.load(Ordering::Relaxed);
            let records_out = m.records_out.load(Ordering::Relaxed);
            let bytes = m.bytes_in.load(Ordering::Relaxed);
            let errors = m.bad_records.load(Ordering::Relaxed);
            let row_errors = m.row_errors.load(Ordering::Relaxed);
            let restored_bytes = m.state_restored_bytes.load(Ordering::Relaxed);
            let key = Arc::as_ptr(m) as usize;
            let before = seen.get(&key).copied().unwrap_or(Seen {
                records_in: 0,
                records_out: 0,
                bytes: 0,
                errors: 0,
                row_errors: 0,
                restored_bytes: 0,
                standby: false,
                at: now,
            });
            let label = &[name.as_str()];
            self.records
                .with_label_values(label)
                .inc_by(records_in.saturating_sub(before.records_in));
            self.bytes
                .with_label_values(label)
                .inc_by(bytes.saturating_sub(before.bytes));
            self.errors
                .with_label_values(&[name.as_str(), MALFORMED])
                .inc_by(errors.saturating_sub(before.errors));
            self.errors
                .with_label_values(&[name.as_str(), EXPRESSION])
                .inc_by(row_errors.saturating_sub(before.row_errors));
            let secs = now.duration_since(before.at).as_secs_f64();
            if secs > 0.0 {
                self.events_per_second
                    .with_label_values(label)
                    .set(records_in.saturating_sub(before.records_in) as f64 / secs);
                self.producer_send_rate
                    .with_label_values(label)
                    .set(records_out.saturating_sub(before.records_out) as f64 / secs);
            }
            if let Some(last) = m.last_checkpoint.lock().ok().and_then(|c| *c) {
                let age_ms = velostream_engine::watermark::wall_clock_ms() - last.at_ms;
                self.checkpoint_age
                    .with_label_values(label)
                    .set(age_ms.max(0) as f64 / 1000.0);
            }
            if let Ok(mut durations) = m.checkpoint_durations_ms.lock() {
                let histogram = self.checkpoint_duration.with_label_values(label);
                for ms in durations.drain(..) {
                    histogram.observe(ms);
                }
            }
            if let Ok(mut released) = m.released_partitions.lock() {
                for (topic, partition) in released.drain(..) {
                    // the group moved it away: its last lag is not this job's
                    let _ = self.consumer_lag.remove_label_values(&[
                        name.as_str(),
                        &topic,
                        &partition.to_string(),
                    ]);
                }
            }
            if let Ok(owned) = m.owned_partitions.lock() {
                for (topic, partitions) in owned.iter() {
                    self.partitions_owned
                        .with_label_values(&[name.as_str(), topic])
                        .set(partitions.len() as i64);
                }
            }
            if let Ok(partitions) = m.state_partitions.lock() {
                if !partitions.is_empty() || before.restored_bytes > 0 {
                    let restoring = partitions.values().filter(|p| p.restoring).count();
                    for (state, count) in [
                        ("restoring", restoring),
                        ("active", partitions.len() - restoring),
                    ] {
                        self.state_partitions
                            .with_label_values(&[name.as_str(), state])
                            .set(count as i64);
                    }
                }
            }
            let mut standby = before.standby;
            if let Ok(copies) = m.standby_partitions.lock() {
                standby |= !copies.is_empty();
                if standby {
                    self.state_partitions
                        .with_label_values(&[name.as_str(), "standby"])
                        .set(copies.len() as i64);
                    self.standby_bytes
                        .with_label_values(label)
                        .set(copies.values().map(|c| c.bytes as i64).sum());
                }
            }
            self.state_restored_bytes
                .with_label_values(label)
                .inc_by(restored_bytes.saturating_sub(before.restored_bytes));
            for ((topic, partition), lag) in m.source_lag() {
                self.consumer_lag
                    .with_label_values(&[name.as_str(), &topic, &partition.to_string()])
                    .set(lag);
            }
            seen.insert(
                key,
                Seen {
                    records_in,
                    records_out,
                    bytes,
                    errors,
                    row_errors,
                    restored_bytes,
                    standby,
                    at: now,
                },
            );
        }
        if let Some(data) = data_segment_bytes() {
            self.heap_inuse.set(data as i64);
        }
    }
}

/// The families of [`JOB_HISTOGRAMS`], one series per job, read from the
/// jobs' own counters (a restarted job starts again from zero, which
/// `rate()` reads as a counter reset).
fn job_histograms(jobs: &[(String, Arc<JobMetrics>)]) -> Vec<MetricFamily> {
    JOB_HISTOGRAMS
        .iter()
        .map(|(name, help, histogram)| {
            let mut family = MetricFamily::default();
            family.set_name(name.to_string());
            family.set_help(help.to_string());
            family.set_field_type(MetricType::HISTOGRAM);
            for (job, m) in jobs {
                let snapshot = histogram(m).snapshot();
                let mut h = proto::Histogram::default();
                h.set_sample_count(snapshot.count);
                h.set_sample_sum(snapshot.sum_ms);
                h.set_bucket(
                    LATENCY_BUCKETS_MS
                        .iter()
                        .zip(&snapshot.cumulative)
                        .map(|(&bound, &count)| {
                            let mut b = proto::Bucket::default();
                            b.set_upper_bound(bound);
                            b.set_cumulative_count(count);
                            b
                        })
                        .collect(),
                );
                let mut label = proto::LabelPair::default();
                label.set_name("job".into());
                label.set_value(job.clone());
                let mut metric = proto::Metric::default();
                metric.set_label(vec![label]);
                metric.set_histogram(h);
                family.mut_metric().push(metric);
            }
            family
        })
        .collect()
}

/// `velostream_errors_total` kinds: records that could not be decoded,
/// rows whose expression failed (isolated by the error policy), failures
/// of a whole application.
const MALFORMED: &str = "malformed";
const EXPRESSION: &str = "expression";
const JOB_FAILED: &str = "job_failed";

/// The process's data segment (heap and other private data), from `/proc/self/statm`.
fn data_segment_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(5)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// A consumer-group rebalance moves partitions between processes: each
    /// shows the count it owns, and the lag of a partition it gave away is
    /// withdrawn rather than kept at its last value.
    #[test]
    fn a_partition_moved_away_leaves_this_jobs_lag_and_count() {
        let metrics = ServiceMetrics::new().unwrap();
        let job = Arc::new(JobMetrics::default());
        job.set_owned_partitions("trades", &BTreeSet::from([0, 1, 2]));
        for p in 0..3 {
            job.set_source_lag("trades", p, 10 + i64::from(p));
        }
        let jobs = [("per_minute".to_string(), job.clone())];
        // the owned count, and the lag of one partition
        let shows = |owned: usize, (partition, lag): (i32, i64)| {
            let text = metrics.render(&jobs);
            let count = format!(
                r#"velostream_source_partitions_owned{{job="per_minute",topic="trades"}} {owned}"#
            );
            let lag = format!(
                r#"kafka_consumer_lag{{job="per_minute",partition="{partition}",topic="trades"}} {lag}"#
            );
            assert!(text.contains(&count) && text.contains(&lag), "{text}");
            text
        };
        shows(3, (2, 12));
        job.set_owned_partitions("trades", &BTreeSet::from([0]));
        assert!(!job.owns_partition("trades", 2));
        let text = shows(1, (0, 10));
        assert!(!text.contains(r#"partition="2""#), "{text}");
    }

    /// A job whose state moves with its partitions shows how many it owns,
    /// restoring or active, and the bytes it read back.
    #[test]
    fn partitions_of_state_and_bytes_restored_are_shown() {
        let metrics = ServiceMetrics::new().unwrap();
        let job = Arc::new(JobMetrics::default());
        {
            let mut parts = job.state_partitions.lock().unwrap();
            parts.insert(0, Default::default());
            parts.insert(
                3,
                velostream_engine::metrics::StatePartitionReport {
                    restoring: true,
                    ..Default::default()
                },
            );
        }
        job.state_restored_bytes.store(4096, Ordering::Relaxed);
        job.standby_partitions.lock().unwrap().insert(
            5,
            velostream_engine::metrics::StandbyReport {
                checkpoint: Some(9),
                bytes: 700,
            },
        );
        let text = metrics.render(&[("totals".to_string(), job)]);
        for line in [
            r#"velostream_state_partitions{job="totals",state="active"} 1"#,
            r#"velostream_state_partitions{job="totals",state="restoring"} 1"#,
            r#"velostream_state_restored_bytes_total{job="totals"} 4096"#,
            r#"velostream_state_partitions{job="totals",state="standby"} 1"#,
            r#"velostream_state_standby_bytes{job="totals"} 700"#,
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
    }
}
