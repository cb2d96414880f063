//! `velostream produce` and `velostream consume`: put JSON Lines on a
//! topic and read a topic back, so a Kafka quick start needs no other tools.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;
use rdkafka::message::Message;
use rdkafka::ClientConfig;
use velostream_connectors::kafka::admin;

/// Where the broker is: `--brokers`, else `KAFKA_BROKERS`, else localhost.
pub fn brokers(flag: Option<String>) -> String {
    flag.or_else(|| std::env::var("KAFKA_BROKERS").ok())
        .unwrap_or_else(|| "localhost:9092".to_string())
}

/// Sends each JSON line of `input` (stdin when `None`) as one message;
/// `key_field` names the field whose value becomes the message key.
pub fn produce(
    brokers: &str,
    topic: &str,
    input: Option<PathBuf>,
    key_field: Option<&str>,
    partitions: i32,
) -> Result<u64, String> {
    admin::create_topic(brokers, topic, partitions)?;
    let reader: Box<dyn BufRead> = match &input {
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path)
                .map_err(|e| format!("cannot open {}: {e}", path.display()))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    let mut lines = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| format!("reading line {}: {e}", n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let key = match key_field {
            Some(field) => match serde_json::from_str::<serde_json::Value>(&line) {
                Ok(value) => match value.get(field) {
                    Some(serde_json::Value::String(s)) => Some(s.clone()),
                    Some(serde_json::Value::Null) | None => None,
                    Some(other) => Some(other.to_string()),
                },
                // sent as it is: readers count and report it as malformed
                Err(e) => {
                    eprintln!(
                        "warning: line {} is not JSON ({e}); sent without a key",
                        n + 1
                    );
                    None
                }
            },
            None => None,
        };
        lines.push((key, line));
    }
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5");
    admin::produce(
        &config,
        topic,
        lines
            .iter()
            .map(|(k, v)| (k.as_deref().map(str::as_bytes), v.as_bytes(), None)),
    )
}

/// Prints the messages of `topic` from its start (one payload per line, or
/// `key<TAB>payload` with `keys`) until `max` messages or `idle` without any.
pub fn consume(
    brokers: &str,
    topic: &str,
    max: Option<u64>,
    idle: Duration,
    keys: bool,
) -> Result<u64, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "velostream-consume")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| format!("cannot create consumer: {e}"))?;
    admin::assign_from_start(&consumer, topic, Duration::from_secs(10))?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut seen = 0u64;
    let mut last = Instant::now();
    while max.is_none_or(|m| seen < m) && last.elapsed() < idle {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                if keys {
                    out.write_all(m.key().unwrap_or_default())
                        .and_then(|_| out.write_all(b"\t"))
                        .map_err(|e| e.to_string())?;
                }
                out.write_all(m.payload().unwrap_or_default())
                    .and_then(|_| out.write_all(b"\n"))
                    .map_err(|e| e.to_string())?;
                seen += 1;
                last = Instant::now();
            }
            Some(Err(e)) => return Err(format!("reading '{topic}': {e}")),
            None => {}
        }
    }
    out.flush().map_err(|e| e.to_string())?;
    Ok(seen)
}
