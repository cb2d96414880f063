//! The Kafka source's consumer-group membership: which partitions it owns
//! (rebalances), where each starts after a restored checkpoint, the
//! progress it may commit, and the lag librdkafka's statistics report.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use rdkafka::bindings::rd_kafka_resp_err_t as RDKafkaRespErr;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use velostream_engine::JobMetrics;

use super::message_queue::RoutedQueue;

/// Next offset to commit, per partition, of the records handed out so far.
pub type Progress = Arc<Mutex<BTreeMap<i32, i64>>>;

/// The partitions this member owns, as rebalances change them. Several
/// members of one group each own some of the topic's partitions: a
/// bounded read ends when the ones it owns are read to their end, and
/// windows wait only for the ones it owns.
#[derive(Debug, Default)]
pub struct Assignment {
    owned: BTreeSet<i32>,
    /// False from a revocation until the assignment that follows it (and
    /// before the first): what is owned then is about to change.
    settled: bool,
    /// Counts the settled assignments, so readers notice a change.
    generation: u64,
    /// Assigned since the source last looked ([`Assignment::take_fresh`]):
    /// their ends must be reached again.
    fresh: BTreeSet<i32>,
}

impl Assignment {
    fn assigned(&mut self, partitions: impl IntoIterator<Item = i32>, cooperative: bool) {
        if !cooperative {
            self.owned.clear();
        }
        for p in partitions {
            self.owned.insert(p);
            self.fresh.insert(p);
        }
        self.settled = true;
        self.generation += 1;
    }

    fn revoked(&mut self, partitions: impl IntoIterator<Item = i32>, cooperative: bool) {
        if cooperative {
            for p in partitions {
                self.owned.remove(&p);
                self.fresh.remove(&p);
            }
        } else {
            self.owned.clear();
            self.fresh.clear();
        }
        self.settled = false;
    }

    /// The partitions owned now, settled or not: a revoked partition
    /// leaves at once.
    pub fn current(&self) -> &BTreeSet<i32> {
        &self.owned
    }

    /// The partitions owned now, once an assignment has settled.
    pub fn owned(&self) -> Option<&BTreeSet<i32>> {
        self.settled.then_some(&self.owned)
    }

    /// Which settled assignment this is (0 before the first).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The partitions assigned since the last call.
    pub fn take_fresh(&mut self) -> BTreeSet<i32> {
        std::mem::take(&mut self.fresh)
    }
}

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
    /// Where reading had reached in partitions the group took away. The
    /// records before it are already in this job's state, so a partition
    /// given back (an eager rebalance revokes everything, then often
    /// assigns the same partitions again) resumes there: starting at the
    /// group's committed offset would feed those records into the state a
    /// second time. Never committed while the partition is away, since
    /// another member may own it.
    pub held: Progress,
    /// The source's own message queue: partitions are routed to it before
    /// they are assigned (see `message_queue.rs`).
    pub routed: RoutedQueue,
    /// What this member owns; read by the source.
    pub assignment: Arc<Mutex<Assignment>>,
    /// The topic the source reads.
    pub topic: String,
    /// Set when the job's state moves with the partitions (a repartitioned
    /// read): a revoked partition's state is dropped, so its reading
    /// position is too, and a partition given back starts where the group
    /// (or its kept state) says, never where this member had read to.
    pub forget_revoked: std::sync::atomic::AtomicBool,
}

impl ClientContext for GroupContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            for (&partition, p) in &t.partitions {
                if partition >= 0
                    && p.consumer_lag >= 0
                    && self.metrics.owns_partition(topic, partition)
                {
                    self.metrics
                        .set_source_lag(topic, partition, p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for GroupContext {
    /// The outcome of an asynchronous (periodic) commit: a failure only
    /// delays the group's offsets, since a later commit covers them.
    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, _: &TopicPartitionList) {
        if let Err(e) = result {
            tracing::warn!(
                component = "kafka",
                error_type = "commit",
                "offsets not committed ({e}); the next commit covers them"
            );
        }
    }

    /// Assigns what the group gives this member — where this member had
    /// read to before a rebalance took the partition away, else from the
    /// restored checkpoint's offsets — and sets aside the progress of
    /// partitions taken away so that it is not committed.
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
                self.resume_positions(partitions);
                for p in partitions.elements() {
                    self.routed.route(consumer, p.topic(), [p.partition()]);
                }
                self.note_change(partitions, true, cooperative);
                if cooperative {
                    consumer.incremental_assign(partitions)
                } else {
                    consumer.assign(partitions)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.set_aside(partitions);
                self.note_change(partitions, false, cooperative);
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

impl GroupContext {
    /// Takes a rebalance's `partitions` (`assigned`, else revoked) into what
    /// this member owns, its metrics and the log.
    fn note_change(&self, partitions: &TopicPartitionList, assigned: bool, cooperative: bool) {
        // the source reads one topic: the partition numbers say which
        let numbers: Vec<i32> = partitions
            .elements()
            .iter()
            .map(|p| p.partition())
            .collect();
        let Ok(mut assignment) = self.assignment.lock() else {
            return;
        };
        if assigned {
            assignment.assigned(numbers.iter().copied(), cooperative);
        } else {
            assignment.revoked(numbers.iter().copied(), cooperative);
        }
        self.metrics
            .set_owned_partitions(&self.topic, &assignment.owned);
        tracing::info!(
            component = "kafka",
            "rebalance of {}: {} partitions {numbers:?}, owns {:?}",
            self.topic,
            if assigned { "assigned" } else { "revoked" },
            assignment.owned
        );
    }

    /// Moves the progress of revoked `partitions` out of what is committed
    /// into [`held`](Self::held).
    fn set_aside(&self, partitions: &TopicPartitionList) {
        let (Ok(mut progress), Ok(mut held)) = (self.progress.lock(), self.held.lock()) else {
            return;
        };
        let forget = self
            .forget_revoked
            .load(std::sync::atomic::Ordering::Relaxed);
        for p in partitions.elements() {
            if let Some(next) = progress.remove(&p.partition()) {
                if !forget {
                    held.insert(p.partition(), next);
                }
            }
        }
    }

    /// Sets the start of each newly assigned partition: where this member
    /// had read to when the partition was last taken away (its records are
    /// in the state, and committable again), else the restored
    /// checkpoint's offset; otherwise the group's committed offset applies.
    fn resume_positions(&self, partitions: &mut TopicPartitionList) {
        let (Ok(start_at), Ok(mut held), Ok(mut progress)) =
            (self.start_at.lock(), self.held.lock(), self.progress.lock())
        else {
            return;
        };
        let assigned: Vec<(String, i32)> = partitions
            .elements()
            .iter()
            .map(|p| (p.topic().to_string(), p.partition()))
            .collect();
        for (topic, partition) in assigned {
            let offset = match held.remove(&partition) {
                Some(next) => {
                    progress.insert(partition, next);
                    next
                }
                None => match start_at.get(&partition) {
                    Some(&offset) => offset,
                    None => continue,
                },
            };
            let _ = partitions.set_partition_offset(&topic, partition, Offset::Offset(offset));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> GroupContext {
        GroupContext {
            progress: Progress::default(),
            metrics: Arc::new(JobMetrics::default()),
            start_at: Progress::default(),
            held: Progress::default(),
            routed: RoutedQueue::default(),
            assignment: Arc::default(),
            topic: "t".to_string(),
            forget_revoked: Default::default(),
        }
    }

    fn list(partitions: &[i32]) -> TopicPartitionList {
        let mut list = TopicPartitionList::new();
        for &p in partitions {
            list.add_partition("t", p);
        }
        list
    }

    fn offset_of(list: &TopicPartitionList, partition: i32) -> Offset {
        list.find_partition("t", partition).unwrap().offset()
    }

    #[test]
    fn a_partition_given_back_resumes_where_this_member_had_read_to() {
        let group = context();
        group.progress.lock().unwrap().extend([(0, 10), (1, 4)]);
        group.start_at.lock().unwrap().insert(0, 2);
        group.set_aside(&list(&[0, 1]));
        // nothing of a revoked partition is committed while it is away
        assert!(group.progress.lock().unwrap().is_empty());

        let mut assigned = list(&[0, 2]);
        group.resume_positions(&mut assigned);
        // ahead of the restored checkpoint: those records are in the state
        assert_eq!(offset_of(&assigned, 0), Offset::Offset(10));
        // never read here: the group's committed offset applies
        assert_eq!(offset_of(&assigned, 2), Offset::Invalid);
        assert_eq!(*group.progress.lock().unwrap(), BTreeMap::from([(0, 10)]));
        assert_eq!(*group.held.lock().unwrap(), BTreeMap::from([(1, 4)]));
    }

    #[test]
    fn a_partition_assigned_after_a_restore_starts_at_the_checkpoint() {
        let group = context();
        group.start_at.lock().unwrap().insert(3, 7);
        let mut assigned = list(&[3]);
        group.resume_positions(&mut assigned);
        assert_eq!(offset_of(&assigned, 3), Offset::Offset(7));
    }

    #[test]
    fn what_a_member_owns_follows_its_rebalances() {
        let mut a = Assignment::default();
        assert_eq!(
            a.owned(),
            None,
            "nothing is settled before the first assignment"
        );
        a.assigned([0, 1, 2], false);
        assert_eq!(a.owned(), Some(&BTreeSet::from([0, 1, 2])));
        assert_eq!(a.take_fresh(), BTreeSet::from([0, 1, 2]));
        // eager: everything is revoked, then a part given back
        a.revoked([0, 1, 2], false);
        assert_eq!(
            a.owned(),
            None,
            "between a revocation and the next assignment"
        );
        a.assigned([2], false);
        assert_eq!(a.owned(), Some(&BTreeSet::from([2])));
        assert_eq!(a.generation(), 2);
        // cooperative: only the moved partitions come and go
        a.assigned([4], true);
        a.revoked([2], true);
        a.assigned([], true);
        assert_eq!(a.owned(), Some(&BTreeSet::from([4])));
        assert_eq!(a.take_fresh(), BTreeSet::from([4]));
    }
}
