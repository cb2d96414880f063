//! Delivery outcomes of a Kafka producer: librdkafka reports each
//! message's fate on its callback thread; the sink and the produce tool
//! read the counts and the first error, and wait for the outstanding
//! ones with [`flush`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

/// How long [`flush`] waits for deliveries between two looks at the count.
const FLUSH_STEP: Duration = Duration::from_millis(1);

/// Waits until every message given to `producer` is delivered or has
/// failed (its outcome counted by the context), at most `timeout`.
///
/// The client library's own flush waits in steps of 100 ms once messages
/// are in flight, so a flush that the broker acknowledged within 2 ms
/// still took 100 ms: the sink flushes every second, and every record that
/// arrived meanwhile waited (about 1% of them, 100 ms each, at any rate).
/// This waits in steps of [`FLUSH_STEP`], serving the delivery reports
/// in between.
pub fn flush<C: ProducerContext>(producer: &BaseProducer<C>, timeout: Duration) -> KafkaResult<()> {
    let deadline = Instant::now() + timeout;
    loop {
        producer.poll(Duration::ZERO);
        if producer.in_flight_count() == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut));
        }
        producer.poll(FLUSH_STEP);
    }
}

/// How many epochs of messages ([`Epochs`]) can be awaited at once.
const EPOCHS: usize = 16;

/// Delivery outcomes, shared with librdkafka's callback thread.
#[derive(Default)]
pub struct Deliveries {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub(super) first_error: Mutex<Option<String>>,
    /// Outcomes (delivered or failed) per epoch slot: a message carries
    /// the slot of the epoch it was sent in as its delivery opaque.
    settled: [AtomicU64; EPOCHS],
}

impl Deliveries {
    /// One message sent in epoch slot `slot` has its outcome.
    fn settle(&self, slot: usize) {
        self.settled[slot % EPOCHS].fetch_add(1, Ordering::AcqRel);
    }
}

/// The producer's side of delivery marks: messages are sent in numbered
/// epochs, a mark closes the current one, and a mark is delivered once
/// every message of its epoch and the earlier ones has an outcome. This
/// holds whatever order the broker acknowledges partitions in, and costs
/// a counter per message (the slot travels as the message's opaque, no
/// allocation).
#[derive(Default)]
pub struct Epochs {
    current: u64,
    sent: [u64; EPOCHS],
    /// Every epoch below this one has all its messages settled.
    settled_below: u64,
}

/// The slot of `epoch` in the ring of [`EPOCHS`].
fn slot_of(epoch: u64) -> usize {
    (epoch % EPOCHS as u64) as usize
}

impl Epochs {
    /// The opaque of a message sent now.
    pub fn slot(&self) -> usize {
        slot_of(self.current)
    }

    /// `count` more messages were handed to the producer in the current
    /// epoch.
    pub fn sent(&mut self, count: u64) {
        self.sent[self.slot()] += count;
    }

    fn advance(&mut self, deliveries: &Deliveries) {
        while self.settled_below < self.current {
            let slot = slot_of(self.settled_below);
            if deliveries.settled[slot].load(Ordering::Acquire) < self.sent[slot] {
                break;
            }
            self.settled_below += 1;
        }
    }

    /// Closes the current epoch and returns it as a mark; `None` when the
    /// slot the next epoch needs still belongs to an unsettled one (the
    /// caller flushes, then calls [`all_settled`](Self::all_settled)).
    pub fn close(&mut self, deliveries: &Deliveries) -> Option<u64> {
        self.advance(deliveries);
        let next = self.current + 1;
        if next >= EPOCHS as u64 && self.settled_below <= next - EPOCHS as u64 {
            return None;
        }
        let slot = slot_of(next);
        self.sent[slot] = 0;
        deliveries.settled[slot].store(0, Ordering::Release);
        let mark = self.current;
        self.current = next;
        Some(mark)
    }

    /// After a flush: every message sent so far has an outcome.
    pub fn all_settled(&mut self) {
        self.settled_below = self.current;
    }

    /// Whether every message sent up to and including epoch `mark` has an
    /// outcome.
    pub fn settled(&mut self, deliveries: &Deliveries, mark: u64) -> bool {
        self.advance(deliveries);
        self.settled_below > mark
    }
}

/// Records each delivery outcome in the shared [`Deliveries`].
pub struct DeliveryContext(pub Arc<Deliveries>);

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    /// The [`Epochs`] slot the message was sent in.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, slot: usize) {
        self.0.settle(slot);
        match result {
            Ok(_) => {
                self.0.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.0.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.0.first_error.lock() {
                    first.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_is_delivered_once_its_epoch_and_the_earlier_ones_are_settled() {
        let d = Deliveries::default();
        let mut e = Epochs::default();
        let first = e.slot();
        e.sent(1);
        e.sent(1);
        let m0 = e.close(&d).unwrap();
        let second = e.slot();
        e.sent(1);
        let m1 = e.close(&d).unwrap();
        // the later epoch is acknowledged first: neither mark is delivered
        // until the earlier epoch is complete
        d.settle(second);
        assert!(!e.settled(&d, m1));
        d.settle(first);
        assert!(!e.settled(&d, m0));
        d.settle(first);
        assert!(e.settled(&d, m0) && e.settled(&d, m1));
        // messages sent after the mark do not hold it back
        e.sent(1);
        assert!(e.settled(&d, m1));
    }

    #[test]
    fn an_unsettled_epoch_keeps_its_slot_until_a_flush() {
        let d = Deliveries::default();
        let mut e = Epochs::default();
        e.sent(1); // epoch 0 never acknowledged
        for _ in 0..EPOCHS - 1 {
            assert!(e.close(&d).is_some());
        }
        // the next epoch would reuse epoch 0's slot
        assert_eq!(e.close(&d), None);
        e.all_settled();
        let mark = e.close(&d).unwrap();
        assert!(!e.settled(&d, mark + 1));
        assert!(e.settled(&d, mark));
    }
}
