//! Delivery outcomes of a Kafka producer: librdkafka reports each
//! message's fate on its callback thread; the sink and the produce tool
//! read the counts and the first error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::ClientContext;

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
