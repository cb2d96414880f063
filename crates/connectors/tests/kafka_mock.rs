//! Kafka connectors against librdkafka's in-process mock cluster: fast
//! checks of behaviour that needs no real broker.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use velostream_connectors::kafka::{self, KafkaDefaults};
use velostream_engine::Sink;

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
    let err = match kafka::open_sink("out", &props, &[], &KafkaDefaults::default()) {
        Ok(_) => panic!("a misspelt property must be rejected"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("lingerr.ms"), "{err}");
}
