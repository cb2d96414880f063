//! `velostream bench kafka`: a Kafka → filter + projection → Kafka job next
//! to a plain librdkafka consume of the same topic, in the same run. The
//! ratio of the two is what the engine costs on top of the client library.
//! A second baseline consumes the way the Kafka source does (batches from
//! a routed queue), so the engine's cost past its own reading shows too.

use std::time::Duration;

use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;
use rdkafka::ClientConfig;
use velostream_connectors::kafka::admin;
use velostream_connectors::kafka::columns::MessageFields;
use velostream_connectors::kafka::message_queue::{MessageBatch, MessageQueue};
use velostream_connectors::registry::types::{KAFKA_SINK, KAFKA_SOURCE};
use velostream_sql::PropertyOverrides;

use crate::bench::{
    generate_trades, measure_app, peak_rss_line, properties, unique_suffix, Clock, Measurement,
};
use crate::progress::human;

/// What `bench kafka` runs.
pub struct KafkaBench {
    pub brokers: String,
    pub records: u64,
    pub partitions: i32,
    pub batch_size: usize,
    /// Runs of each reader; the one of median CPU time is reported (the
    /// wall time is mostly the group join and the broker).
    pub runs: usize,
}

/// The run of median CPU time among `runs` runs of `measure`.
fn median_cpu(
    runs: usize,
    mut measure: impl FnMut(usize) -> Result<Measurement, String>,
) -> Result<Measurement, String> {
    let mut samples = Vec::new();
    for run in 0..runs.max(1) {
        let m = measure(run)?;
        eprintln!(
            "  {}, run {}: {} records/s per core",
            m.label,
            run + 1,
            human(m.rate_per_core())
        );
        samples.push(m);
    }
    samples.sort_by(|a, b| a.cpu_seconds.total_cmp(&b.cpu_seconds));
    Ok(samples.swap_remove(samples.len() / 2))
}

const PIPELINE: &str = "CREATE STREAM out AS SELECT id, symbol, price * quantity AS notional, \
    lower(side) AS side FROM trades WHERE price > 100 AND exchange = 'NASDAQ'";

/// Creates `topic` with `partitions` and produces `records` generated
/// trades to it: keyed by their position when `keyed` (every partition
/// then holds a share), else placed by the producer's partitioner.
/// Returns how many were produced.
pub fn produce_trades(
    brokers: &str,
    topic: &str,
    partitions: i32,
    records: u64,
    keyed: bool,
) -> Result<u64, String> {
    let client = admin::plain_client(brokers);
    admin::create_topic(&client, topic, partitions).map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let file = dir.path().join("trades.jsonl");
    eprintln!("generating {records} records ...");
    generate_trades(&file, records, 1000).map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
    eprintln!("producing them to {topic} ({partitions} partitions) ...");
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("batch.size", "1000000");
    let keys: Vec<String> = match keyed {
        true => (0..records).map(|i| i.to_string()).collect(),
        false => Vec::new(),
    };
    let clock = Clock::start();
    let produced = admin::produce(
        &config,
        topic,
        text.lines()
            .enumerate()
            .map(|(i, l)| (keys.get(i).map(|k| k.as_bytes()), l.as_bytes(), None)),
    )
    .map_err(|e| e.to_string())?;
    let (produce_secs, _) = clock.stop();
    eprintln!("  {} messages/s", human(produced as f64 / produce_secs));
    Ok(produced)
}

pub fn run(bench: KafkaBench) -> Result<String, String> {
    let nanos = unique_suffix();
    let input = format!("bench-trades-{nanos}");
    let output = format!("bench-out-{nanos}");
    let produced = produce_trades(
        &bench.brokers,
        &input,
        bench.partitions,
        bench.records,
        false,
    )?;
    let client = admin::plain_client(&bench.brokers);
    admin::create_topic(&client, &output, bench.partitions).map_err(|e| e.to_string())?;

    eprintln!("plain librdkafka consume ...");
    let plain = median_cpu(bench.runs, |_| {
        plain_consume(&bench.brokers, &input, produced)
    })?;
    eprintln!("librdkafka batch consume ...");
    let batched = median_cpu(bench.runs, |_| {
        batch_consume(&bench.brokers, &input, produced)
    })?;
    eprintln!("Kafka -> filter + projection -> Kafka ...");
    let pipeline = median_cpu(bench.runs, |run| {
        // a group of its own per run: each reads the topic from its start
        let mut overrides = PropertyOverrides::new();
        let group = format!("bench-{nanos}-{run}");
        overrides.insert(
            "trades".into(),
            properties(&[
                ("type", KAFKA_SOURCE),
                ("topic", &input),
                ("bootstrap.servers", &bench.brokers),
                ("group.id", &group),
                ("bounded", "true"),
            ]),
        );
        overrides.insert(
            "out".into(),
            properties(&[
                ("type", KAFKA_SINK),
                ("topic", &output),
                ("bootstrap.servers", &bench.brokers),
            ]),
        );
        measure_app(
            "Kafka → filter + projection → Kafka",
            PIPELINE,
            crate::app::RunOptions {
                batch_size: bench.batch_size,
                overrides,
                ..Default::default()
            },
        )
        .map_err(|e| e.to_string())
    })?;

    let baseline = plain.rate_per_core();
    let mut report = format!(
        "Kafka pipeline, {} JSON records (~154 bytes) on {} partitions, batch size {}, one job thread, median of {} runs by CPU time\n\n\
         | pipeline | records/s (wall) | records/s per core (CPU time) | vs plain consume | batch latency p50 | p99 |\n|---|---|---|---|---|---|\n",
        produced, bench.partitions, bench.batch_size, bench.runs.max(1)
    );
    for m in [&plain, &batched, &pipeline] {
        report.push_str(&m.table_row(baseline));
    }
    report.push_str(&peak_rss_line());
    Ok(report)
}

fn bare_consumer(brokers: &str) -> Result<BaseConsumer, String> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "velostream-bench-plain")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| e.to_string())
}

/// Reads `count` messages of `topic` with a bare librdkafka consumer, one
/// message per poll as the client crate offers them, touching every
/// payload: the baseline.
fn plain_consume(brokers: &str, topic: &str, count: u64) -> Result<Measurement, String> {
    let consumer = bare_consumer(brokers)?;
    admin::assign_from_start(&consumer, topic, Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    timed_read("plain librdkafka consume (baseline)", || {
        let (mut seen, mut bytes) = (0u64, 0u64);
        while seen < count {
            match consumer.poll(Duration::from_secs(10)) {
                Some(Ok(m)) => {
                    seen += 1;
                    bytes += Message::payload(&m).map_or(0, |p| p.len() as u64);
                }
                Some(Err(e)) => return Err(format!("reading {topic}: {e}")),
                None => return Err(format!("{topic}: no message for 10 s after {seen}")),
            }
        }
        Ok((seen, bytes))
    })
}

/// Times `read`, which returns the messages it read and their payload
/// bytes (kept, so that touching each payload is not optimised away).
fn timed_read(
    label: &'static str,
    read: impl FnOnce() -> Result<(u64, u64), String>,
) -> Result<Measurement, String> {
    let clock = Clock::start();
    let (records, bytes) = read()?;
    let (seconds, cpu_seconds) = clock.stop();
    std::hint::black_box(bytes);
    Ok(Measurement {
        label,
        records,
        seconds,
        cpu_seconds,
        p50_us: 0,
        p99_us: 0,
        checkpoint_ms: Vec::new(),
    })
}

/// Reads `count` messages of `topic` as the Kafka source does, many per
/// call from a queue its partitions are routed to, touching every
/// payload: what the engine's own consuming costs.
fn batch_consume(brokers: &str, topic: &str, count: u64) -> Result<Measurement, String> {
    let consumer = bare_consumer(brokers)?;
    let queue = MessageQueue::new(&consumer).ok_or("librdkafka could not create a queue")?;
    let timeout = Duration::from_secs(10);
    let partitions = admin::partitions(&consumer, topic, timeout).map_err(|e| e.to_string())?;
    queue.route(&consumer, topic, partitions);
    admin::assign_from_start(&consumer, topic, timeout).map_err(|e| e.to_string())?;
    // the batch and the queue go before the consumer (they refer to it)
    let mut batch = MessageBatch::default();
    timed_read(
        "librdkafka batch consume (as the Kafka source reads)",
        || {
            let (mut seen, mut bytes) = (0u64, 0u64);
            while seen < count {
                batch.clear();
                if queue.take(timeout, 1000, &mut batch) == 0 {
                    return Err(format!("{topic}: no message for 10 s after {seen}"));
                }
                for i in 0..batch.len() {
                    let Some(m) = batch.get(i) else { break };
                    if let Some(e) = m.error() {
                        return Err(format!("reading {topic}: {e:?}"));
                    }
                    seen += 1;
                    bytes += MessageFields::payload(&m).map_or(0, |p| p.len() as u64);
                }
            }
            Ok((seen, bytes))
        },
    )
}
