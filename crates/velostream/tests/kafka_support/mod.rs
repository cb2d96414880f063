//! What the Kafka end-to-end tests share: the broker address, unique
//! names, producing input and reading a topic back.
#![allow(dead_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use velostream_connectors::kafka::admin;

pub fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").expect(
        "KAFKA_BROKERS must name a broker: run scripts/test.sh, or scripts/kafka-broker.sh start \
         and export KAFKA_BROKERS=$(scripts/kafka-broker.sh address)",
    )
}

/// A topic name no other run uses.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

pub fn produce(topic: &str, messages: &[(String, String, i64)]) {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers())
        .set("linger.ms", "20");
    let sent = admin::produce(
        &config,
        topic,
        messages
            .iter()
            .map(|(k, v, t)| (Some(k.as_bytes()), v.as_bytes(), Some(*t))),
    )
    .unwrap();
    assert_eq!(sent as usize, messages.len());
}

/// Every (key, payload) of `topic`, read from the start until `expected`
/// messages arrived or nothing came for a while.
pub fn read_all(topic: &str, expected: usize) -> Vec<(String, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", unique("reader"))
        .create()
        .unwrap();
    let partitions = admin::partitions(&consumer, topic, Duration::from_secs(10)).unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut out = Vec::new();
    let mut quiet = 0;
    while out.len() < expected && quiet < 50 {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                quiet = 0;
                out.push((
                    String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                    String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                ));
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => quiet += 1,
        }
    }
    // anything beyond the expected count would be a duplicate: look briefly
    if out.len() == expected {
        while let Some(Ok(m)) = consumer.poll(Duration::from_millis(500)) {
            out.push((
                String::new(),
                String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            ));
        }
    }
    out
}
