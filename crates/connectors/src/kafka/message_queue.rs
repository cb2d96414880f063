//! The Kafka source's own message queue, read a batch at a time.
//!
//! librdkafka puts every fetched message on the consumer's queue, together
//! with the group's events (rebalances, commit results, statistics), and
//! the client crate takes them one per call: a lock, two clock reads, an
//! event object and an allocation per message. Here each assigned
//! partition's fetch queue is forwarded to a queue of the source's own
//! before the partition is assigned, so that queue holds only messages
//! (and per-partition errors such as end of partition), in each
//! partition's order, and `rd_kafka_consume_batch_queue` takes many of
//! them under one lock. The group's events stay on the consumer's queue,
//! which the source still polls every read.
//!
//! Invariants:
//! - A partition is routed before it is assigned (from the rebalance
//!   callback, or before a table's `assign`), so none of its messages
//!   reach the consumer's queue first; once routed by the application,
//!   librdkafka never forwards that partition's queue elsewhere again, so
//!   its order holds across rebalances (a partition taken away and given
//!   back is routed again; until then its messages wait in its own queue).
//! - The queue is destroyed before the consumer (see
//!   [`RoutedQueue::close`]): it refers to the client.

use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::types::RDKafkaRespErr;

/// A librdkafka queue that receives the messages of routed partitions.
pub struct MessageQueue {
    queue: NonNull<rd::rd_kafka_queue_t>,
}

// SAFETY: a librdkafka queue handle may be used from any thread: every
// operation on it (forwarding into it, consuming from it, destroying it)
// takes the queue's own lock inside librdkafka.
unsafe impl Send for MessageQueue {}
// SAFETY: as above; no method needs exclusive access on the Rust side.
unsafe impl Sync for MessageQueue {}

impl MessageQueue {
    /// A new, empty queue of `consumer`'s client.
    pub fn new<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> Option<Self> {
        // SAFETY: the client pointer is valid while `consumer` lives; the
        // returned handle is owned here and destroyed once, in `drop`.
        let queue = unsafe { rd::rd_kafka_queue_new(consumer.client().native_ptr()) };
        NonNull::new(queue).map(|queue| Self { queue })
    }

    /// Forwards the fetched messages of `partitions` of `topic` to this
    /// queue. Returns false when the topic name cannot be passed to C.
    pub fn route<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        topic: &str,
        partitions: impl IntoIterator<Item = i32>,
    ) -> bool {
        let Ok(topic) = CString::new(topic) else {
            return false;
        };
        let client = consumer.client().native_ptr();
        for partition in partitions {
            // SAFETY: `client` is valid while `consumer` lives and `topic`
            // is a NUL-terminated string that outlives the call. The
            // partition handle is a new reference, released right after
            // forwarding: the forward is kept on the partition's queue
            // itself, which holds its own reference to this queue.
            unsafe {
                let fetch = rd::rd_kafka_queue_get_partition(client, topic.as_ptr(), partition);
                if fetch.is_null() {
                    continue;
                }
                rd::rd_kafka_queue_forward(fetch, self.queue.as_ptr());
                rd::rd_kafka_queue_destroy(fetch);
            }
        }
        true
    }

    /// Moves up to `max` messages into `batch`, waiting up to `wait` for
    /// the first one only: librdkafka's batch call waits its whole timeout
    /// to fill a batch, so the wait asks for one message and the rest are
    /// taken without waiting. Returns how many were taken.
    pub fn take(&self, wait: Duration, max: usize, batch: &mut MessageBatch) -> usize {
        if max == 0 {
            return 0;
        }
        let mut taken = 0;
        if !wait.is_zero() {
            taken = self.consume(wait, 1, batch);
            if taken == 0 {
                return 0;
            }
        }
        taken + self.consume(Duration::ZERO, max - taken, batch)
    }

    fn consume(&self, wait: Duration, max: usize, batch: &mut MessageBatch) -> usize {
        if max == 0 {
            return 0;
        }
        batch.messages.reserve(max);
        let start = batch.messages.len();
        let spare = batch.messages.spare_capacity_mut();
        let timeout = wait.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `spare` has room for at least `max` pointers; librdkafka
        // writes at most `max` valid message pointers into it and returns
        // how many (or -1 on error, which writes none). Each message is
        // owned by the batch from here and destroyed once (`clear`/`drop`).
        let n = unsafe {
            rd::rd_kafka_consume_batch_queue(
                self.queue.as_ptr(),
                timeout,
                spare.as_mut_ptr().cast::<*mut rd::rd_kafka_message_t>(),
                max,
            )
        };
        let n = usize::try_from(n).unwrap_or(0).min(max);
        // SAFETY: the first `n` spare slots were just initialised with
        // non-null message pointers by librdkafka.
        unsafe { batch.messages.set_len(start + n) };
        n
    }
}

impl Drop for MessageQueue {
    fn drop(&mut self) {
        // SAFETY: the handle was created by `rd_kafka_queue_new` and is
        // destroyed only here; partitions still forwarding to it hold
        // their own references to the underlying queue.
        unsafe { rd::rd_kafka_queue_destroy(self.queue.as_ptr()) }
    }
}

/// The queue as the consumer's rebalance callback sees it: present while
/// the source is open, gone once it closes (partitions assigned after
/// that, during the consumer's own shutdown, stay on the consumer's queue).
#[derive(Default, Clone)]
pub struct RoutedQueue(Arc<Mutex<Option<Arc<MessageQueue>>>>);

impl RoutedQueue {
    pub fn set(&self, queue: Arc<MessageQueue>) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(queue);
        }
    }

    /// Routes `partitions` of `topic`, if the queue is open.
    pub fn route<C: ConsumerContext>(
        &self,
        consumer: &BaseConsumer<C>,
        topic: &str,
        partitions: impl IntoIterator<Item = i32>,
    ) {
        if let Ok(slot) = self.0.lock() {
            if let Some(queue) = slot.as_ref() {
                queue.route(consumer, topic, partitions);
            }
        }
    }

    /// Lets go of the queue: called before the consumer is dropped.
    pub fn close(&self) {
        if let Ok(mut slot) = self.0.lock() {
            slot.take();
        }
    }
}

/// Messages taken from a [`MessageQueue`], owned until cleared.
#[derive(Default)]
pub struct MessageBatch {
    messages: Vec<*mut rd::rd_kafka_message_t>,
}

// SAFETY: the messages are owned by the batch alone; librdkafka allows a
// message to be read and destroyed from any thread.
unsafe impl Send for MessageBatch {}

impl MessageBatch {
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// The message at `index`.
    pub fn get(&self, index: usize) -> Option<RawMessage<'_>> {
        self.messages.get(index).map(|&m| RawMessage {
            // SAFETY: a non-null pointer librdkafka returned, valid until
            // the batch destroys it; the borrow of `self` outlives no clear.
            message: unsafe { &*m },
        })
    }

    /// Destroys every message.
    pub fn clear(&mut self) {
        for m in self.messages.drain(..) {
            // SAFETY: each pointer came from librdkafka and is destroyed
            // exactly once, here.
            unsafe { rd::rd_kafka_message_destroy(m) }
        }
    }
}

impl Drop for MessageBatch {
    fn drop(&mut self) {
        self.clear();
    }
}

/// One message of a [`MessageBatch`].
pub struct RawMessage<'a> {
    message: &'a rd::rd_kafka_message_t,
}

impl RawMessage<'_> {
    /// The per-partition error this entry carries instead of a message
    /// (end of partition, an offset out of range, ...).
    pub fn error(&self) -> Option<RDKafkaRespErr> {
        (self.message.err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR).then_some(self.message.err)
    }

    /// The message's headers as names and text values.
    pub fn headers(&self) -> Vec<(String, Option<String>)> {
        let mut headers = std::ptr::null_mut();
        // SAFETY: the message is valid for `'a`; librdkafka sets
        // `headers` to a list the message owns, or returns an error.
        let found = unsafe { rd::rd_kafka_message_headers(self.message, &mut headers) };
        if found != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR || headers.is_null() {
            return Vec::new();
        }
        let mut out = Vec::new();
        for index in 0.. {
            let (mut name, mut value, mut size) = (std::ptr::null(), std::ptr::null(), 0usize);
            // SAFETY: `headers` belongs to the message (valid for `'a`);
            // librdkafka points `name` at a NUL-terminated string and
            // `value` at `size` bytes (or null), both owned by the list.
            let got = unsafe {
                rd::rd_kafka_header_get_all(headers, index, &mut name, &mut value, &mut size)
            };
            if got != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
                break;
            }
            // SAFETY: as above.
            let name = unsafe { std::ffi::CStr::from_ptr(name) }.to_string_lossy();
            let value = (!value.is_null()).then(|| {
                // SAFETY: `value` points at `size` bytes owned by the list.
                let bytes = unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) };
                String::from_utf8_lossy(bytes).into_owned()
            });
            out.push((name.into_owned(), value));
        }
        out
    }
}

impl super::columns::MessageFields for RawMessage<'_> {
    fn partition(&self) -> i32 {
        self.message.partition
    }

    fn offset(&self) -> i64 {
        self.message.offset
    }

    fn payload(&self) -> Option<&[u8]> {
        bytes(self.message.payload, self.message.len)
    }

    fn key(&self) -> Option<&[u8]> {
        bytes(self.message.key, self.message.key_len)
    }

    fn timestamp_ms(&self) -> Option<i64> {
        let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: the message is valid for `'a`; `kind` is written only.
        let t = unsafe { rd::rd_kafka_message_timestamp(self.message, &mut kind) };
        (kind != rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE && t != -1)
            .then_some(t)
    }

    fn header_pairs(&self) -> Vec<(String, Option<String>)> {
        self.headers()
    }
}

/// `len` bytes at `data`, as the message owns them.
fn bytes<'a>(data: *mut std::ffi::c_void, len: usize) -> Option<&'a [u8]> {
    // SAFETY: librdkafka gives a message's payload and key as a pointer
    // and length owned by the message (null when absent), valid while
    // the message is; callers tie `'a` to the message's borrow.
    (!data.is_null()).then(|| unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) })
}
