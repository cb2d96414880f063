//! The Kafka source's consumer-group membership: which partitions it owns
//! (rebalances), where each starts after a restored checkpoint, the
//! progress it may commit, and the lag librdkafka's statistics report.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rdkafka::bindings::rd_kafka_resp_err_t as RDKafkaRespErr;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use velostream_engine::JobMetrics;

/// Next offset to commit, per partition, of the records handed out so far.
pub type Progress = Arc<Mutex<BTreeMap<i32, i64>>>;

/// Forgets the progress of revoked partitions; publishes consumer lag
/// from librdkafka's periodic statistics (no extra broker round trips).
pub struct GroupContext {
    pub progress: Progress,
    pub metrics: Arc<JobMetrics>,
    /// Offsets a restored checkpoint holds: a partition assigned to this
    /// member starts there rather than at the group's committed offset
    /// (which may be older when the job stopped between writing a
    /// checkpoint and committing it). Kept until the next commit.
    pub start_at: Progress,
}

impl ClientContext for GroupContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            for (&partition, p) in &t.partitions {
                if partition >= 0 && p.consumer_lag >= 0 {
                    self.metrics
                        .set_source_lag(topic, partition, p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for GroupContext {
    /// Assigns what the group gives this member — from the restored
    /// checkpoint's offsets where there are any — and forgets the progress
    /// of partitions taken away.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        partitions: &mut TopicPartitionList,
    ) {
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let outcome = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if let Ok(start_at) = self.start_at.lock() {
                    let assigned: Vec<(String, i32)> = partitions
                        .elements()
                        .iter()
                        .map(|p| (p.topic().to_string(), p.partition()))
                        .collect();
                    for (topic, partition) in assigned {
                        if let Some(&offset) = start_at.get(&partition) {
                            let _ = partitions.set_partition_offset(
                                &topic,
                                partition,
                                Offset::Offset(offset),
                            );
                        }
                    }
                }
                if cooperative {
                    consumer.incremental_assign(partitions)
                } else {
                    consumer.assign(partitions)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                if let Ok(mut progress) = self.progress.lock() {
                    for p in partitions.elements() {
                        progress.remove(&p.partition());
                    }
                }
                if cooperative {
                    consumer.incremental_unassign(partitions)
                } else {
                    consumer.unassign()
                }
            }
            other => Err(KafkaError::Rebalance(other.into())),
        };
        if let Err(e) = outcome {
            tracing::warn!(
                component = "kafka",
                error_type = "rebalance",
                "rebalance: {e}"
            );
        }
    }
}
