//! Nexmark: `velostream nexmark generate` writes the generator's three
//! streams as JSON Lines files or Kafka topics, and `velostream bench
//! nexmark` runs the queries of `benches/nexmark/` over N events from the
//! in-process generator, from those files and optionally from Kafka,
//! reporting events/s, events/s per core, batch latency and peak memory as
//! a Markdown table.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use velostream_connectors::nexmark::generator::{Generator, Kind};
use velostream_connectors::registry::types::{FILE_SOURCE, KAFKA_SOURCE, NEXMARK};
use velostream_sql::PropertyOverrides;

use crate::app::{run_jobs, Application, RunOptions};
use crate::bench::{peak_rss_line, properties, unique_suffix, Clock, Measurement};
use crate::progress::human;

/// The streams of the generator.
pub const STREAMS: [(&str, Kind); 3] = [
    ("person", Kind::Person),
    ("auction", Kind::Auction),
    ("bid", Kind::Bid),
];

/// Calls `emit(stream, line)` for each of `events` events in order, with
/// the event as one JSON line (no line break); `stream` indexes [`STREAMS`].
fn each_event(
    events: u64,
    seed: u64,
    rate: u64,
    mut emit: impl FnMut(usize, &str) -> std::io::Result<()>,
) -> std::io::Result<[u64; 3]> {
    let g = Generator { seed, rate };
    let mut counts = [0u64; 3];
    let time = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
            .unwrap_or_default()
    };
    let mut line = String::new();
    for n in 0..events {
        use std::fmt::Write as _;
        line.clear();
        let stream = match Kind::of(n) {
            Kind::Person => {
                let p = g.person(n);
                let _ = write!(
                    line,
                    r#"{{"id":{},"name":"{}","emailaddress":"{}","creditcard":"{}","city":"{}","state":"{}","datetime":"{}","extra":""}}"#,
                    p.id,
                    p.name,
                    p.email_address,
                    p.credit_card,
                    p.city,
                    p.state,
                    time(p.date_time)
                );
                0
            }
            Kind::Auction => {
                let a = g.auction(n);
                let _ = write!(
                    line,
                    r#"{{"id":{},"itemname":"{}","description":"{}","initialbid":{},"reserve":{},"datetime":"{}","expires":"{}","seller":{},"category":{},"extra":""}}"#,
                    a.id,
                    a.item_name,
                    a.description,
                    a.initial_bid,
                    a.reserve,
                    time(a.date_time),
                    time(a.expires),
                    a.seller,
                    a.category
                );
                1
            }
            Kind::Bid => {
                let b = g.bid(n);
                let _ = write!(
                    line,
                    r#"{{"auction":{},"bidder":{},"price":{},"channel":"{}","url":"{}","datetime":"{}","extra":""}}"#,
                    b.auction,
                    b.bidder,
                    b.price,
                    b.channel,
                    b.url,
                    time(b.date_time)
                );
                2
            }
        };
        counts[stream] += 1;
        emit(stream, &line)?;
    }
    Ok(counts)
}

/// Writes `events` events as `person.jsonl`, `auction.jsonl` and `bid.jsonl` in `dir`.
pub fn generate(dir: &Path, events: u64, seed: u64, rate: u64) -> std::io::Result<[u64; 3]> {
    std::fs::create_dir_all(dir)?;
    let mut files = STREAMS
        .iter()
        .map(|(name, _)| {
            Ok(BufWriter::with_capacity(
                1 << 20,
                std::fs::File::create(dir.join(format!("{name}.jsonl")))?,
            ))
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    let counts = each_event(events, seed, rate, |stream, line| {
        writeln!(files[stream], "{line}")
    })?;
    for f in &mut files {
        f.flush()?;
    }
    Ok(counts)
}

/// Messages produced per call to the broker while generating to Kafka.
const KAFKA_CHUNK: usize = 100_000;

/// Produces `events` events to the topics `<prefix>person`,
/// `<prefix>auction` and `<prefix>bid` (created with `partitions`
/// partitions when missing), one JSON message per event keyed by its id
/// (bids by auction); the event time is the `datetime` field.
pub fn generate_to_kafka(
    brokers: &str,
    prefix: &str,
    events: u64,
    seed: u64,
    rate: u64,
    partitions: i32,
) -> Result<[u64; 3], String> {
    let topics: Vec<String> = STREAMS
        .iter()
        .map(|(name, _)| format!("{prefix}{name}"))
        .collect();
    for topic in &topics {
        let client = velostream_connectors::kafka::admin::plain_client(brokers);
        velostream_connectors::kafka::admin::create_topic(&client, topic, partitions)
            .map_err(|e| e.to_string())?;
    }
    let mut config = rdkafka::ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000");
    let mut pending: Vec<Vec<String>> = vec![Vec::new(); 3];
    let flush = |stream: usize, lines: &mut Vec<String>| -> Result<(), String> {
        velostream_connectors::kafka::admin::produce(
            &config,
            &topics[stream],
            lines.iter().map(|l| (message_key(l), l.as_bytes(), None)),
        )
        .map_err(|e| e.to_string())?;
        lines.clear();
        Ok(())
    };
    let mut failure = None;
    let counts = each_event(events, seed, rate, |stream, line| {
        pending[stream].push(line.to_string());
        if pending[stream].len() >= KAFKA_CHUNK {
            if let Err(e) = flush(stream, &mut pending[stream]) {
                failure = Some(e);
                return Err(std::io::Error::other("produce failed"));
            }
        }
        Ok(())
    })
    .map_err(|e| failure.take().unwrap_or_else(|| e.to_string()))?;
    for (stream, lines) in pending.iter_mut().enumerate() {
        flush(stream, lines)?;
    }
    Ok(counts)
}

/// The id a message is keyed by: the first number of the JSON line
/// (`id` of persons and auctions, `auction` of bids).
fn message_key(line: &str) -> Option<&[u8]> {
    let start = line.find(':')? + 1;
    let end = start + line[start..].find(',')?;
    Some(&line.as_bytes()[start..end])
}

/// What `bench nexmark` runs.
pub struct NexmarkBench {
    pub queries_dir: PathBuf,
    pub queries: Vec<String>,
    pub events: u64,
    pub batch_size: usize,
    /// Also run over JSON Lines files of the same events.
    pub files: bool,
    /// Also run over the same events in Kafka topics on these brokers.
    pub kafka: Option<String>,
    /// Also run each query over the generator with this many pipelines
    /// per job (`processing.parallelism`), when above 1.
    pub parallelism: usize,
}

/// Where a run's events come from.
#[derive(Clone, Copy)]
enum Input<'a> {
    Generator,
    /// The generator, with this many pipelines per job.
    Parallel(usize),
    Files(&'a Path),
    /// Brokers and topic prefix.
    Kafka(&'a str, &'a str),
}

/// Runs every query over the generator (and the files) and returns the report.
pub fn bench(b: NexmarkBench) -> Result<String, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let parallel_label = format!("generator, {} pipelines", b.parallelism);
    let mut sources: Vec<(&str, Input)> = vec![("generator", Input::Generator)];
    if b.parallelism > 1 {
        sources.push((&parallel_label, Input::Parallel(b.parallelism)));
    }
    if b.files {
        eprintln!("writing {} events as JSON Lines ...", b.events);
        generate(dir.path(), b.events, 0, 10_000).map_err(|e| e.to_string())?;
        sources.push(("JSON files", Input::Files(dir.path())));
    }
    let prefix = format!("nexmark-bench-{}-", std::process::id());
    if let Some(brokers) = &b.kafka {
        eprintln!("producing {} events to Kafka ({prefix}*) ...", b.events);
        generate_to_kafka(brokers, &prefix, b.events, 0, 10_000, 3)?;
        sources.push(("Kafka (JSON)", Input::Kafka(brokers, &prefix)));
    }
    let mut rows = Vec::new();
    for query in &b.queries {
        let path = b.queries_dir.join(format!("{query}.sql"));
        let sql = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        for (label, input) in &sources {
            let m = run(query, &sql, &b.queries_dir, b.events, *input, b.batch_size)?;
            eprintln!(
                "  {query} ({label}): {} events/s, {} per core",
                human(m.rate()),
                human(m.rate_per_core())
            );
            rows.push((query.clone(), label.to_string(), m));
        }
    }
    let mut report = format!(
        "Nexmark, {} events (person : auction : bid = 1 : 3 : 46), batch size {}, one thread per statement\n\n\
         | query | input | events/s (wall) | events/s per core (CPU time) | batch latency p50 | p99 |\n|---|---|---|---|---|---|\n",
        b.events, b.batch_size
    );
    for (query, input, m) in &rows {
        report.push_str(&format!(
            "| {query} | {input} | {} | {} | {:.2} ms | {:.2} ms |\n",
            human(m.rate()),
            human(m.rate_per_core()),
            m.p50_us as f64 / 1000.0,
            m.p99_us as f64 / 1000.0
        ));
    }
    report.push_str(&peak_rss_line());
    Ok(report)
}

/// One run of `sql` over `events` events; results go to a null sink.
/// Relative paths in the query (q13's side table) resolve against `dir`.
fn run(
    query: &str,
    sql: &str,
    dir: &Path,
    events: u64,
    input: Input,
    batch_size: usize,
) -> Result<Measurement, String> {
    let mut overrides = PropertyOverrides::new();
    for (name, _) in STREAMS {
        let source = match input {
            Input::Generator | Input::Parallel(_) => {
                properties(&[("type", NEXMARK.into()), ("events", events.to_string())])
            }
            Input::Files(dir) => properties(&[
                ("type", FILE_SOURCE.into()),
                (
                    "path",
                    dir.join(format!("{name}.jsonl")).display().to_string(),
                ),
                ("format", "jsonl".into()),
            ]),
            Input::Kafka(brokers, prefix) => properties(&[
                ("type", KAFKA_SOURCE.into()),
                ("topic", format!("{prefix}{name}")),
                ("bootstrap.servers", brokers.to_string()),
                ("bounded", "true".into()),
                // every run reads the topics from the start
                (
                    "group.id",
                    format!("{prefix}{query}-{name}-{}", unique_suffix()),
                ),
                ("event.time.field", "datetime".into()),
            ]),
        };
        overrides.insert(name.to_string(), source);
    }
    overrides.insert(query.to_string(), properties(&[("type", "null")]));
    let options = RunOptions {
        batch_size,
        overrides,
        parallelism: match input {
            Input::Parallel(n) => n,
            _ => 1,
        },
        ..RunOptions::default()
    };
    let app = Application::from_text(&format!("{query}.sql"), sql, dir, &options)
        .map_err(|e| e.to_string())?;
    let jobs = app.build_jobs().map_err(|e| e.to_string())?;
    let last = jobs
        .last()
        .map(|j| j.metrics())
        .ok_or("the query has no statement")?;
    let clock = Clock::start();
    run_jobs(jobs).map_err(|e| e.to_string())?;
    let (seconds, cpu_seconds) = clock.stop();
    Ok(Measurement {
        label: "",
        records: events,
        seconds,
        cpu_seconds,
        p50_us: last.latency_quantile(0.5).unwrap_or(0),
        p99_us: last.latency_quantile(0.99).unwrap_or(0),
        checkpoint_ms: Vec::new(),
    })
}
