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

/// Delivery outcomes, shared with librdkafka's callback thread.
#[derive(Default)]
pub struct Deliveries {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub(super) first_error: Mutex<Option<String>>,
}

/// Records each delivery outcome in the shared [`Deliveries`].
pub struct DeliveryContext(pub Arc<Deliveries>);

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
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
