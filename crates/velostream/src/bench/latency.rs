//! `velostream bench latency`: how long a record takes through a Kafka →
//! filter → Kafka job when the input arrives at a fixed rate, beside how
//! long the broker alone takes to hand the same records to a consumer.
//!
//! One producer writes each record with its send time (`sent_us`, wall
//! clock) at a fixed rate; one consumer reads the input topic directly
//! (the broker's produce-to-consume latency) and another reads the job's
//! output topic (produce to the consumer of the result: the end-to-end
//! latency a user sees). Both read the same records in the same run, so
//! the difference is what the engine adds. The job's own
//! `velostream_e2e_latency_ms` histogram (source message time to sink
//! delivery) is reported as well.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;
use velostream_connectors::kafka::{admin, SINK_LINGER_MS};
use velostream_connectors::registry::types::{KAFKA_SINK, KAFKA_SOURCE};
use velostream_sql::PropertyOverrides;

use crate::app::{Application, RunOptions};
use crate::bench::{properties, unique_suffix};

/// What `bench latency` runs.
pub struct LatencyBench {
    pub brokers: String,
    /// Input records per second, one run each.
    pub rates: Vec<u64>,
    /// How long each rate is produced, after the warm-up.
    pub seconds: f64,
    pub partitions: i32,
    pub batch_size: usize,
    /// `fetch.wait.max.ms` of every consumer: the job's source and both
    /// readers, so the broker's fetch wait counts the same on each hop.
    pub fetch_wait_ms: u64,
    /// `linger.ms` of the input's producer: at thousands of records per
    /// second a producer that sends every record alone (0) overwhelms the
    /// test broker; both paths include this wait alike.
    pub producer_linger_ms: u64,
    /// `linger.ms` of the job's sink, when not the sink's default.
    pub sink_linger_ms: Option<u64>,
}

/// The job: a filter every record passes (it is evaluated all the same)
/// and a projection that keeps the send time.
const PIPELINE: &str = "CREATE STREAM trades (id BIGINT, symbol VARCHAR, price DECIMAL(12, 2), \
    quantity BIGINT, sent_us BIGINT) WITH ('trades.type' = 'kafka_source'); \
    CREATE STREAM out AS SELECT id, symbol, price * quantity AS notional, sent_us \
    FROM trades WHERE price > 0";

/// How long the consumers wait for the last records after the producer ends.
const DRAIN: Duration = Duration::from_secs(30);

pub fn run(bench: LatencyBench) -> Result<String, String> {
    if bench.rates.is_empty() || bench.rates.contains(&0) {
        return Err("--rates needs one or more rates above 0 (records per second)".into());
    }
    let mut report = format!(
        "Latency at fixed input rates: Kafka → filter + projection → Kafka (one job thread, batch size {}, sink linger.ms {}, input producer linger.ms {}, {} partition(s), fetch.wait.max.ms {} on every consumer), {} s per rate\n\n\
         | rate (records/s) | path | records | p50 ms | p90 ms | p99 ms | max ms |\n|---|---|---|---|---|---|---|\n",
        bench.batch_size,
        bench
            .sink_linger_ms
            .map_or(format!("{SINK_LINGER_MS} (default)"), |ms| ms.to_string()),
        bench.producer_linger_ms,
        bench.partitions,
        bench.fetch_wait_ms,
        bench.seconds
    );
    for &rate in &bench.rates {
        eprintln!("rate {rate} records/s ...");
        let r = one_rate(&bench, rate)?;
        report.push_str(
            &r.broker
                .row(rate, "broker: produce → consume input (baseline)"),
        );
        report.push_str(&r.pipeline.row(rate, "Velostream: produce → consume output"));
        report.push_str(&format!(
            "| {rate} | job metric velostream_e2e_latency_ms (histogram) | {} | {} | {} | {} | |\n",
            r.job_observed,
            ms(r.job_p50),
            ms(r.job_p90),
            ms(r.job_p99),
        ));
    }
    report.push_str(
        "\nThe job metric counts batches, not records, and is interpolated inside histogram buckets.\n",
    );
    Ok(report)
}

fn ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

/// Latencies (µs) of one path, sorted.
struct Samples(Vec<u64>);

impl Samples {
    fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.0.is_empty() {
            return None;
        }
        let i = ((self.0.len() - 1) as f64 * q).round() as usize;
        Some(self.0[i] as f64 / 1000.0)
    }

    fn row(&self, rate: u64, path: &str) -> String {
        format!(
            "| {rate} | {path} | {} | {} | {} | {} | {} |\n",
            self.0.len(),
            ms(self.quantile_ms(0.5)),
            ms(self.quantile_ms(0.9)),
            ms(self.quantile_ms(0.99)),
            ms(self.quantile_ms(1.0)),
        )
    }
}

struct RateResult {
    broker: Samples,
    pipeline: Samples,
    job_observed: u64,
    job_p50: Option<f64>,
    job_p90: Option<f64>,
    job_p99: Option<f64>,
}

/// The wall clock the job's own latency metric uses, in µs.
fn now_us() -> u64 {
    velostream_engine::watermark::wall_clock_us().max(0) as u64
}

fn one_rate(bench: &LatencyBench, rate: u64) -> Result<RateResult, String> {
    let nanos = unique_suffix();
    let input = format!("bench-latency-in-{nanos}");
    let output = format!("bench-latency-out-{nanos}");
    let client = admin::plain_client(&bench.brokers);
    for topic in [&input, &output] {
        admin::create_topic(&client, topic, bench.partitions).map_err(|e| e.to_string())?;
    }

    let mut jobs = Application::from_text(
        "bench.sql",
        PIPELINE,
        std::path::Path::new("."),
        &options(bench, &input, &output, nanos),
    )
    .and_then(|app| app.build_jobs())
    .map_err(|e| e.to_string())?;
    if jobs.len() != 1 {
        return Err(format!(
            "the benchmark's pipeline became {} jobs",
            jobs.len()
        ));
    }
    let job = jobs.remove(0);
    let (cancel, metrics) = (job.cancel_handle(), job.metrics());
    let running = thread::Builder::new()
        .name("job-latency".into())
        .spawn(move || job.run())
        .map_err(|e| e.to_string())?;

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bench.brokers)
        .set("linger.ms", bench.producer_linger_ms.to_string())
        .create()
        .map_err(|e| format!("producer: {e}"))?;
    // warm-up: records until one comes out of the job, so the job's
    // consumer has its partitions and every connection is open
    let warm_up = Instant::now();
    let mut id = 0u64;
    let first_measured;
    {
        let watcher = reader(&bench.brokers, &output, bench.fetch_wait_ms)?;
        loop {
            send(&producer, &input, id)?;
            id += 1;
            producer.poll(Duration::ZERO);
            if watcher.poll(Duration::from_millis(100)).is_some() {
                break;
            }
            if warm_up.elapsed() > Duration::from_secs(60) {
                cancel.store(true, Ordering::Relaxed);
                return Err("no output from the job within 60 s of warm-up".into());
            }
        }
        first_measured = id;
    }
    let expected = (rate as f64 * bench.seconds).round().max(1.0) as u64;
    let broker = collect(bench, &input, first_measured, expected)?;
    let pipeline = collect(bench, &output, first_measured, expected)?;
    let job_before = metrics.e2e_latency.snapshot();

    let started = Instant::now();
    for i in 0..expected {
        let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
        // sleeping for less than a millisecond overshoots by more than a
        // record's interval at 10,000/s: sleep only when that far ahead
        let now = Instant::now();
        if due > now + Duration::from_millis(1) {
            thread::sleep(due - now);
        }
        send(&producer, &input, first_measured + i)?;
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(30))
        .map_err(|e| format!("flushing the input: {e}"))?;
    let achieved = expected as f64 / started.elapsed().as_secs_f64();
    if achieved < rate as f64 * 0.95 {
        eprintln!("  the producer reached {achieved:.0} records/s of {rate}");
    }
    let broker = broker.join().map_err(|_| "the input reader panicked")??;
    let pipeline = pipeline.join().map_err(|_| "the output reader panicked")?;
    cancel.store(true, Ordering::Relaxed);
    let ended = running.join().map_err(|_| "the job panicked".to_string())?;
    // what the job itself counted tells a stalled job from a slow reader
    let pipeline = pipeline.map_err(|e| {
        format!(
            "{e} (the job read {} records and wrote {}{})",
            metrics.records_in.load(Ordering::Relaxed),
            metrics.records_out.load(Ordering::Relaxed),
            match &ended {
                Ok(_) => String::new(),
                Err(e) => format!("; it failed: {e}"),
            }
        )
    })?;
    if let Err(e) = ended {
        return Err(format!("the job failed: {e}"));
    }
    let job = metrics.e2e_latency.snapshot().since(&job_before);
    Ok(RateResult {
        broker,
        pipeline,
        job_observed: job.count,
        job_p50: job.quantile_ms(0.5),
        job_p90: job.quantile_ms(0.9),
        job_p99: job.quantile_ms(0.99),
    })
}

/// The job's connectors: an unbounded source from the start of the input,
/// a sink that sends at once.
fn options(bench: &LatencyBench, input: &str, output: &str, nanos: u128) -> RunOptions {
    let mut overrides = PropertyOverrides::new();
    overrides.insert(
        "trades".into(),
        properties(&[
            ("type", KAFKA_SOURCE),
            ("topic", input),
            ("bootstrap.servers", &bench.brokers),
            ("group.id", &format!("bench-latency-{nanos}")),
            ("fetch.wait.max.ms", &bench.fetch_wait_ms.to_string()),
        ]),
    );
    let linger = bench.sink_linger_ms.map(|ms| ms.to_string());
    let mut sink = vec![
        ("type", KAFKA_SINK),
        ("topic", output),
        ("bootstrap.servers", &bench.brokers),
    ];
    if let Some(linger) = &linger {
        sink.push(("linger.ms", linger));
    }
    overrides.insert("out".into(), properties(&sink));
    RunOptions {
        batch_size: bench.batch_size,
        overrides,
        ..Default::default()
    }
}

fn send(producer: &BaseProducer, topic: &str, id: u64) -> Result<(), String> {
    let payload = format!(
        "{{\"id\":{id},\"symbol\":\"S{:03}\",\"price\":{}.25,\"quantity\":{},\"sent_us\":{}}}",
        id % 100,
        10 + id % 90,
        1 + id % 7,
        now_us()
    );
    let mut record = BaseRecord::<(), str>::to(topic).payload(payload.as_str());
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                producer.poll(Duration::from_millis(10));
            }
            Err((e, _)) => return Err(format!("cannot send to {topic}: {e}")),
        }
    }
}

fn reader(brokers: &str, topic: &str, fetch_wait_ms: u64) -> Result<BaseConsumer, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "velostream-bench-latency")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", fetch_wait_ms.to_string())
        // a reader that lost its place must say so, not jump to the end
        .set("auto.offset.reset", "error")
        .create()
        .map_err(|e| format!("consumer of {topic}: {e}"))?;
    admin::assign_from_start(&consumer, topic, Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    Ok(consumer)
}

/// Reads `topic` on a thread until the `count` records from id `first` on
/// have arrived (or [`DRAIN`] passes without one), noting each one's
/// latency from its `sent_us`.
fn collect(
    bench: &LatencyBench,
    topic: &str,
    first: u64,
    count: u64,
) -> Result<thread::JoinHandle<Result<Samples, String>>, String> {
    let consumer = Arc::new(reader(&bench.brokers, topic, bench.fetch_wait_ms)?);
    let topic = topic.to_string();
    thread::Builder::new()
        .name(format!("read-{topic}"))
        .spawn(move || {
            let mut latencies = Vec::with_capacity(count as usize);
            let mut last = Instant::now();
            while (latencies.len() as u64) < count {
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) => {
                        let at = now_us();
                        let Some(payload) = m.payload() else { continue };
                        if field(payload, b"\"id\":").is_some_and(|id| id >= first) {
                            if let Some(sent) = field(payload, b"\"sent_us\":") {
                                latencies.push(at.saturating_sub(sent));
                            }
                        }
                        last = Instant::now();
                    }
                    Some(Err(e)) => return Err(format!("reading {topic}: {e}")),
                    None if last.elapsed() > DRAIN => {
                        return Err(format!(
                            "{topic}: {} of {count} records arrived, then none for {} s",
                            latencies.len(),
                            DRAIN.as_secs()
                        ))
                    }
                    None => {}
                }
            }
            latencies.sort_unstable();
            Ok(Samples(latencies))
        })
        .map_err(|e| e.to_string())
}

/// The unsigned integer after `key` in a flat JSON object.
fn field(payload: &[u8], key: &[u8]) -> Option<u64> {
    let at = payload.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = payload[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&payload[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_from_the_records_the_benchmark_sends() {
        let p = br#"{"id":42,"symbol":"S042","notional":1.5,"sent_us":1767225600000000}"#;
        assert_eq!(field(p, b"\"id\":"), Some(42));
        assert_eq!(field(p, b"\"sent_us\":"), Some(1_767_225_600_000_000));
        assert_eq!(field(p, b"\"missing\":"), None);
    }

    #[test]
    fn quantiles_come_from_the_sorted_samples() {
        let s = Samples((1..=100).map(|i| i * 1000).collect());
        assert_eq!(s.quantile_ms(0.5), Some(51.0));
        assert_eq!(s.quantile_ms(0.99), Some(99.0));
        assert_eq!(s.quantile_ms(1.0), Some(100.0));
        assert_eq!(Samples(Vec::new()).quantile_ms(0.5), None);
    }
}
