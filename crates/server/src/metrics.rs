//! The Prometheus metrics of the deployment guide ("Key Metrics" and the
//! dashboard), labelled by job where they apply. Job counters live in each
//! job's [`JobMetrics`]; a scrape brings the Prometheus families up to date
//! from them, so the hot path never touches Prometheus.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use velostream_engine::JobMetrics;

/// Latency buckets in milliseconds.
const LATENCY_BUCKETS_MS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
];

/// Every metric family the service exports.
pub struct ServiceMetrics {
    registry: Registry,
    records: IntCounterVec,
    bytes: IntCounterVec,
    events_per_second: GaugeVec,
    processing_latency: HistogramVec,
    /// Event creation to result; observed by jobs that know their events' times.
    pub e2e_latency: HistogramVec,
    /// Observed by checkpoints.
    pub checkpoint_duration: HistogramVec,
    errors: IntCounterVec,
    /// Job restarts after failures.
    pub retries: IntCounterVec,
    pub circuit_breaker_trips: IntCounterVec,
    heap_inuse: IntGauge,
    consumer_lag: IntGaugeVec,
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
    latencies: usize,
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
        let processing_latency = histogram(
            "velostream_processing_latency_ms",
            "Time from reading a batch to its results reaching the sink",
        )?;
        let e2e_latency = histogram(
            "velostream_e2e_latency_ms",
            "Time from an event's creation to its result",
        )?;
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
        for g in [&events_per_second, &producer_send_rate] {
            registry.register(Box::new(g.clone()))?;
        }
        for h in [&processing_latency, &e2e_latency, &checkpoint_duration] {
            registry.register(Box::new(h.clone()))?;
        }
        registry.register(Box::new(heap_inuse.clone()))?;
        registry.register(Box::new(consumer_lag.clone()))?;
        registry.register(Box::new(broker_availability.clone()))?;
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Self {
            registry,
            records,
            bytes,
            events_per_second,
            processing_latency,
            e2e_latency,
            checkpoint_duration,
            errors,
            retries,
            circuit_breaker_trips,
            heap_inuse,
            consumer_lag,
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
        self.processing_latency.with_label_values(&[job]);
        self.e2e_latency.with_label_values(&[job]);
        self.checkpoint_duration.with_label_values(&[job]);
    }

    /// Counts a job failure.
    pub fn job_failed(&self, job: &str) {
        self.errors.with_label_values(&[job, JOB_FAILED]).inc();
    }

    /// Brings the families up to date with `jobs` and renders the text format.
    pub fn render(&self, jobs: &[(String, Arc<JobMetrics>)]) -> String {
        self.update(jobs);
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        let mut text = String::from_utf8(out).unwrap_or_default();
        // a family without samples yet (no Kafka partition read so far) is
        // still announced, so dashboards and alerts find the name
        for (name, help) in [(
            "kafka_consumer_lag",
            "Messages not yet read, per job, topic and partition",
        )] {
            if !text.contains(&format!("# TYPE {name} ")) {
                text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
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
            let key = Arc::as_ptr(m) as usize;
            let before = seen.get(&key).copied().unwrap_or(Seen {
                records_in: 0,
                records_out: 0,
                bytes: 0,
                errors: 0,
                row_errors: 0,
                latencies: 0,
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
            let latencies = m
                .batch_latency_us
                .lock()
                .map(|samples| {
                    let histogram = self.processing_latency.with_label_values(label);
                    for &us in samples.iter().skip(before.latencies) {
                        histogram.observe(us as f64 / 1000.0);
                    }
                    samples.len()
                })
                .unwrap_or(before.latencies);
            if let Ok(mut durations) = m.checkpoint_durations_ms.lock() {
                let histogram = self.checkpoint_duration.with_label_values(label);
                for ms in durations.drain(..) {
                    histogram.observe(ms);
                }
            }
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
                    latencies,
                    at: now,
                },
            );
        }
        if let Some(data) = data_segment_bytes() {
            self.heap_inuse.set(data as i64);
        }
    }
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
