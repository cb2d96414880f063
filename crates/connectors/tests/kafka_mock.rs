//! Kafka connectors against librdkafka's in-process mock cluster: fast
//! checks of behaviour that needs no real broker.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use velostream_connectors::kafka::{self, KafkaDefaults};
use velostream_engine::{Sink, Source};

fn batch() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("symbol", DataType::Utf8, true),
        Field::new("n", DataType::Int64, true),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec!["A", "B"])),
            Arc::new(Int64Array::from(vec![1, 2])),
        ],
    )
    .unwrap()
}

fn sink_props(bootstrap: &str, topic: &str) -> BTreeMap<String, String> {
    [
        ("type", "kafka_sink"),
        ("topic", topic),
        ("bootstrap.servers", bootstrap),
        ("message.timeout.ms", "1500"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A mock cluster with topic `out`, and a sink keyed by `symbol` writing to it.
fn cluster_and_sink() -> (MockCluster<'static, DefaultProducerContext>, Box<dyn Sink>) {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("out", 1, 1).unwrap();
    let props = sink_props(&cluster.bootstrap_servers(), "out");
    let sink = kafka::open_sink(
        "out",
        &props,
        &["symbol".to_string()],
        &KafkaDefaults::default(),
        false,
    )
    .unwrap();
    (cluster, sink)
}

#[test]
fn delivered_results_flush_cleanly() {
    let (_cluster, mut sink) = cluster_and_sink();
    sink.write(&batch()).unwrap();
    sink.flush().unwrap();
}

#[test]
fn undeliverable_results_stop_the_job_with_a_clear_error() {
    let (cluster, mut sink) = cluster_and_sink();
    cluster.broker_down(1).unwrap();
    sink.write(&batch()).unwrap();
    let err = sink.flush().unwrap_err().to_string();
    assert!(
        err.contains("could not be delivered") && err.contains("2 message"),
        "{err}"
    );
}

#[test]
fn unknown_client_properties_are_rejected_by_name() {
    let cluster = MockCluster::new(1).unwrap();
    let mut props = sink_props(&cluster.bootstrap_servers(), "out");
    props.insert("lingerr.ms".into(), "5".into());
    let err = match kafka::open_sink("out", &props, &[], &KafkaDefaults::default(), false) {
        Ok(_) => panic!("a misspelt property must be rejected"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("lingerr.ms"), "{err}");
}

/// Every payload of `topic` (the mock cluster does not hide uncommitted
/// transactions from `read_committed` consumers, so visibility is not
/// what these tests check).
fn read_topic(bootstrap: &str, topic: &str) -> Vec<String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "reader")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut assignment = rdkafka::TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        match consumer.poll(std::time::Duration::from_millis(100)) {
            Some(Ok(m)) => {
                out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned())
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
            _ => {}
        }
    }
    out
}

#[test]
fn transactions_follow_checkpoints_call_by_call() {
    use velostream_engine::SourceEvent;
    let cluster = MockCluster::new(3).unwrap();
    cluster.create_topic("in", 1, 3).unwrap();
    cluster.create_topic("out", 1, 3).unwrap();
    let servers = cluster.bootstrap_servers();
    let mut producer = rdkafka::ClientConfig::new();
    producer.set("bootstrap.servers", &servers);
    let input: Vec<String> = (0..5)
        .map(|i| format!(r#"{{"symbol":"A","n":{i}}}"#))
        .collect();
    kafka::admin::produce(
        &producer,
        "in",
        input.iter().map(|p| (None, p.as_bytes(), None)),
    )
    .unwrap();

    let schema = batch().schema();
    let props: BTreeMap<String, String> = [
        ("type", "kafka_source"),
        ("topic", "in"),
        ("group.id", "job"),
        ("bounded", "true"),
        ("bootstrap.servers", servers.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut source = kafka::open_source(
        "in",
        &props,
        &schema,
        &Default::default(),
        schema.clone(),
        100,
        &KafkaDefaults::default(),
        kafka::ReadMode::Group,
        Default::default(),
    )
    .unwrap();
    let mut read = 0;
    loop {
        match source.poll_batch().unwrap() {
            SourceEvent::Batch(b) => read += b.num_rows(),
            SourceEvent::End => break,
            _ => {}
        }
    }
    assert_eq!(read, 5);

    let open = || {
        kafka::open_sink(
            "out",
            &sink_props(&servers, "out"),
            &["symbol".to_string()],
            &KafkaDefaults::default(),
            true,
        )
        .unwrap()
    };
    let mut sink = open();
    assert!(sink.commits_source_position());
    sink.write(&batch()).unwrap();
    let state = sink.pre_commit().unwrap().unwrap();
    assert_eq!(state["transactional_id"], "velostream-out");
    assert_eq!(
        source.committed_position().unwrap().unwrap()["partitions"],
        serde_json::json!({}),
        "nothing is committed before the transaction"
    );

    // send_offsets_to_transaction, commit_transaction, begin_transaction
    sink.commit_checkpoint(&source).unwrap();
    assert_eq!(read_topic(&servers, "out").len(), 2);
    // (the mock cluster accepts the transactional calls but does not hide
    // uncommitted messages from read_committed consumers, fence old
    // producers, or apply a transaction's offsets to the group; the job
    // also commits the offsets after the checkpoint, as done here)
    source.commit().unwrap();

    // the next checkpoint's transaction, then the end of the job: the
    // transaction opened after the last checkpoint is aborted
    sink.write(&batch()).unwrap();
    sink.pre_commit().unwrap();
    sink.commit_checkpoint(&source).unwrap();
    assert_eq!(read_topic(&servers, "out").len(), 4);
    sink.close().unwrap();
    // a restarted job's producer takes over the transactional id
    let mut restarted = open();
    restarted.write(&batch()).unwrap();
    restarted.pre_commit().unwrap();
    restarted.commit_checkpoint(&source).unwrap();
    assert_eq!(read_topic(&servers, "out").len(), 6);
}
