//! Many messages to one topic in one call to librdkafka.
//!
//! The client crate's `send` produces one message per call and, for each,
//! copies the topic name into a new C string, looks the topic up by name
//! under the client's lock, and passes every field through a variadic
//! call. The sink writes a whole batch of rows to one topic, so here the
//! topic is looked up once (a handle kept for the sink's life) and each
//! batch goes through `rd_kafka_produce_batch`, which takes the topic's
//! lock once per batch. Each message is still placed by the producer's
//! configured partitioner and reported on the usual delivery callback.
//!
//! Invariant: the topic handle is destroyed before the producer that made
//! it (see [`TopicProducer`]'s owner, which declares it first).

use std::ffi::CString;
use std::ptr::{self, NonNull};

use rdkafka::bindings as rd;
use rdkafka::producer::{BaseProducer, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::IntoOpaque;

/// librdkafka's "unassigned partition": the partitioner places the message.
const UNASSIGNED: i32 = -1;

/// One message to produce: its value and its key, if any.
pub struct Outgoing<'a> {
    pub value: &'a [u8],
    pub key: Option<&'a [u8]>,
}

/// A producer's handle on one topic, producing many messages per call.
pub struct TopicProducer {
    topic: NonNull<rd::rd_kafka_topic_t>,
    /// The call's message array, kept to reuse its allocation.
    messages: Vec<rd::rd_kafka_message_t>,
}

// SAFETY: a librdkafka topic handle may be used from any thread (the
// library takes the topic's own lock inside every call); the message
// array holds only pointers into the caller's buffers during a call.
unsafe impl Send for TopicProducer {}

impl TopicProducer {
    /// A handle on `topic` of `producer`'s client; `None` when the name
    /// cannot be passed to C or the client refuses the topic.
    pub fn new<C: ProducerContext>(producer: &BaseProducer<C>, topic: &str) -> Option<Self> {
        let name = CString::new(topic).ok()?;
        // SAFETY: the client pointer is valid while `producer` lives and
        // the owner drops this handle before the producer; `name` is
        // NUL-terminated and outlives the call (librdkafka copies it). A
        // null configuration means the producer's default topic settings.
        let topic = unsafe {
            rd::rd_kafka_topic_new(
                producer.client().native_ptr(),
                name.as_ptr(),
                ptr::null_mut(),
            )
        };
        NonNull::new(topic).map(|topic| Self {
            topic,
            messages: Vec::new(),
        })
    }

    /// Hands `outgoing` to the producer in one call, each message carrying
    /// the delivery opaque `opaque`, placed by the configured partitioner
    /// and timestamped now. Returns the positions of the messages it did
    /// not take, with why (the queue being full among them), in order;
    /// every other message was taken and will have a delivery report.
    pub fn produce<'a>(
        &mut self,
        outgoing: impl IntoIterator<Item = Outgoing<'a>>,
        opaque: usize,
    ) -> Vec<(usize, RDKafkaErrorCode)> {
        self.messages.clear();
        for message in outgoing {
            let (key, key_len) = message
                .key
                .map_or((ptr::null_mut(), 0), |k| (k.as_ptr() as *mut _, k.len()));
            self.messages.push(rd::rd_kafka_message_t {
                err: rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR,
                rkt: ptr::null_mut(),
                partition: UNASSIGNED,
                payload: message.value.as_ptr() as *mut _,
                len: message.value.len(),
                key,
                key_len,
                offset: 0,
                _private: opaque.into_ptr(),
            });
        }
        if self.messages.is_empty() {
            return Vec::new();
        }
        let count = i32::try_from(self.messages.len()).unwrap_or(i32::MAX);
        // SAFETY: the topic handle is valid (see `new`), and `messages`
        // holds `count` initialised entries whose value and key pointers
        // point into buffers the caller keeps alive for this call. With
        // `RD_KAFKA_MSG_F_COPY` librdkafka copies value and key before
        // returning, so nothing refers to them afterwards; it writes only
        // each entry's `err` field.
        unsafe {
            rd::rd_kafka_produce_batch(
                self.topic.as_ptr(),
                UNASSIGNED,
                rd::RD_KAFKA_MSG_F_COPY,
                self.messages.as_mut_ptr(),
                count,
            );
        }
        let taken = count as usize;
        let mut refused: Vec<(usize, RDKafkaErrorCode)> = self.messages[..taken]
            .iter()
            .enumerate()
            .filter(|(_, m)| m.err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR)
            .map(|(i, m)| (i, RDKafkaErrorCode::from(m.err)))
            .collect();
        // beyond what fits one call (never, for the sink's batches)
        refused
            .extend((taken..self.messages.len()).map(|i| (i, RDKafkaErrorCode::InvalidArgument)));
        refused
    }
}

impl Drop for TopicProducer {
    fn drop(&mut self) {
        // SAFETY: the handle came from `rd_kafka_topic_new` and is
        // released once; its client is still alive (see the invariant).
        unsafe { rd::rd_kafka_topic_destroy(self.topic.as_ptr()) };
    }
}
