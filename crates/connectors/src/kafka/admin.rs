//! Plain Kafka operations for tools and tests: creating topics, listing
//! partitions, producing and reading raw messages.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError as ClientError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::delivery::{Deliveries, DeliveryContext};
use super::error::KafkaError;

/// The offsets the consumer's group has committed on the partitions of
/// `wanted`, as `(topic, partition, next offset)`; partitions without a
/// committed offset are left out.
pub fn committed_offsets<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    wanted: TopicPartitionList,
    timeout: Duration,
) -> Result<Vec<(String, i32, i64)>, ClientError> {
    Ok(consumer
        .committed_offsets(wanted, timeout)?
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.topic().to_string(), e.partition(), o)),
            _ => None,
        })
        .collect())
}

/// The partitions of `topic`. (End offsets are not asked of the broker
/// up front: some Kafka-protocol brokers report them wrongly for batched
/// writes, so reads that stop at the end use librdkafka's end-of-partition
/// events, and ask for the high watermark only once a partition is idle.)
pub fn partitions<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>, KafkaError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| KafkaError::request(format!("cannot read the metadata of '{topic}'"), e))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(KafkaError::NoTopic {
            topic: topic.to_string(),
        });
    }
    Ok(partitions)
}

/// Assigns `consumer` every partition of `topic` from its first message
/// (outside any group); returns the partitions.
pub fn assign_from_start<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>, KafkaError> {
    let partitions = partitions(consumer, topic, timeout)?;
    let assigning = || format!("cannot assign the partitions of '{topic}'");
    let mut assignment = TopicPartitionList::new();
    for &p in &partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .map_err(|e| KafkaError::request(assigning(), e))?;
    }
    consumer
        .assign(&assignment)
        .map_err(|e| KafkaError::request(assigning(), e))?;
    Ok(partitions)
}

/// Up to `limit` payloads of `topic`, read from the start of every
/// partition until each is at its end (no group offsets are used or
/// committed). `consumer` must have `enable.partition.eof` set.
pub fn read_from_start<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    limit: usize,
    timeout: Duration,
) -> Result<Vec<Vec<u8>>, KafkaError> {
    let partitions = assign_from_start(consumer, topic, timeout)?;
    let deadline = Instant::now() + timeout;
    let mut at_end = BTreeSet::new();
    let mut out = Vec::new();
    while out.len() < limit && at_end.len() < partitions.len() && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                out.push(m.payload().unwrap_or_default().to_vec())
            }
            Some(Err(ClientError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => return Err(KafkaError::request(format!("reading '{topic}'"), e)),
            None => {}
        }
    }
    Ok(out)
}

/// A client of the cluster at `bootstrap` with no other settings (for
/// benchmarks and tests on a local broker).
pub fn plain_client(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    config
}

/// Creates `topic` with `partitions` partitions (replication 1) unless it
/// exists, as a client configured by `client`.
pub fn create_topic(client: &ClientConfig, topic: &str, partitions: i32) -> Result<(), KafkaError> {
    create_topic_with(client, topic, partitions, &[])
}

/// [`create_topic`] with topic-level `settings` (such as
/// `cleanup.policy=compact`) for a topic created now.
pub fn create_topic_with(
    client: &ClientConfig,
    topic: &str,
    partitions: i32,
    settings: &[(&str, &str)],
) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> =
        client.create().map_err(|source| KafkaError::Client {
            client: "admin client",
            source,
        })?;
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for (key, value) in settings {
        new = new.set(key, value);
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = futures_executor::block_on(admin.create_topics([&new], &options))
        .map_err(|e| KafkaError::request(format!("cannot create topic '{topic}'"), e))?;
    for result in results {
        match result {
            Ok(_) => {}
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(KafkaError::CreateTopic { topic, code }),
        }
    }
    Ok(())
}

/// Sends `(key, payload)` messages to `topic` and waits until all are delivered.
pub fn produce<'a>(
    config: &ClientConfig,
    topic: &str,
    messages: impl IntoIterator<Item = (Option<&'a [u8]>, &'a [u8], Option<i64>)>,
) -> Result<u64, KafkaError> {
    let deliveries = Arc::new(Deliveries::default());
    let producer: BaseProducer<DeliveryContext> = config
        .create_with_context(DeliveryContext(deliveries.clone()))
        .map_err(|source| KafkaError::Client {
            client: "producer",
            source,
        })?;
    let mut sent = 0u64;
    for (key, payload, timestamp) in messages {
        // one epoch: the tool waits for everything with a flush
        let mut record: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(topic, 0).payload(payload);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(t) = timestamp {
            record = record.timestamp(t);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((
                    ClientError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    r,
                )) => {
                    record = r;
                    producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => {
                    return Err(KafkaError::request(format!("cannot send to '{topic}'"), e))
                }
            }
        }
        sent += 1;
        producer.poll(Duration::ZERO);
    }
    super::delivery::flush(&producer, Duration::from_secs(60))
        .map_err(|e| KafkaError::request(format!("flushing to '{topic}'"), e))?;
    let failed = deliveries.failed.load(Ordering::Relaxed);
    if failed > 0 {
        return Err(KafkaError::Undelivered {
            topic: topic.to_string(),
            failed,
            sent,
        });
    }
    Ok(sent)
}

/// The partitions of `topic` (`0..partitions`) whose committed offset in
/// `consumer`'s group has not reached the partition's end, or could not be
/// asked; an empty partition counts as read.
pub fn not_committed_to_end<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partitions: usize,
) -> Vec<i32> {
    let timeout = Duration::from_secs(5);
    let all: Vec<i32> = (0..partitions as i32).collect();
    let mut wanted = TopicPartitionList::new();
    for &p in &all {
        wanted.add_partition(topic, p);
    }
    let Ok(committed) = committed_offsets(consumer, wanted, timeout) else {
        return all;
    };
    let committed: BTreeMap<i32, i64> = committed.into_iter().map(|(_, p, o)| (p, o)).collect();
    all.into_iter()
        .filter(|&p| {
            let Ok((low, high)) = consumer.fetch_watermarks(topic, p, timeout) else {
                return true;
            };
            match committed.get(&p) {
                Some(&at) => at < high,
                None => high > low,
            }
        })
        .collect()
}
