//! Reading a batch of messages: the consumer's queue first (the group's
//! events, and messages of any partition not routed to the source's own
//! queue), then the source's own queue, many messages per call
//! (`message_queue.rs`). Each message's payload becomes one line of the
//! chunk the record decoder reads, and its system columns are noted.

use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError as ClientError;
use rdkafka::types::RDKafkaRespErr;
use velostream_engine::{EngineError, Result};

use super::super::columns::MessageFields;
use super::super::KafkaFormat;
use super::{poisoned, KafkaSource, ReadMode};

impl KafkaSource {
    /// Takes up to a batch of messages: first whatever the consumer's
    /// queue holds (serving the group's events on the way), then from the
    /// source's own queue, many per call.
    pub(super) fn read_messages(&mut self) -> Result<()> {
        self.chunk.clear();
        self.raw.clear();
        self.columns.clear();
        self.oldest_ms = None;
        let mut bytes = 0u64;
        if self.read_consumer_queue(&mut bytes)? {
            self.read_own_queue(&mut bytes)?;
        }
        if !self.columns.is_empty() {
            self.metrics.add_input(0, bytes);
            // a partition's offsets rise through the batch, which holds runs
            // of messages per partition: its last offset is what counts
            let mut last: Vec<(i32, i64)> = Vec::new();
            let mut run = 0;
            for (&p, &o) in self.columns.partitions.iter().zip(&self.columns.offsets) {
                if last.get(run).is_none_or(|&(q, _)| q != p) {
                    run = match last.iter().position(|&(q, _)| q == p) {
                        Some(i) => i,
                        None => {
                            last.push((p, o));
                            last.len() - 1
                        }
                    };
                }
                last[run].1 = o;
            }
            let mut progress = self.progress.lock().map_err(|_| poisoned())?;
            for (p, o) in last {
                progress.insert(p, o + 1);
            }
        }
        // read, though no row comes of it (it ended the batch, so it is
        // its partition's last): a partition whose last message is a
        // tombstone is then at its end by the watermarks
        if let Some((p, next)) = self.tombstone_at.take() {
            self.progress
                .lock()
                .map_err(|_| poisoned())?
                .insert(p, next);
        }
        Ok(())
    }

    /// Serves the consumer's queue: rebalances, commit results, statistics
    /// and errors, and the messages of any partition not routed to the
    /// source's own queue. False when the batch ends here.
    fn read_consumer_queue(&mut self, bytes: &mut u64) -> Result<bool> {
        let consumer = self.consumer.clone();
        while self.columns.len() < self.batch_size {
            // with a queue of its own, the source waits on that one
            let wait = if self.columns.is_empty() && self.queue.is_none() {
                self.batch_timeout
            } else {
                Duration::ZERO
            };
            let next = match consumer.poll(wait) {
                None => return Ok(true),
                Some(Ok(m)) => self.take_message(&m, bytes),
                Some(Err(e)) => self.on_error(e)?,
            };
            if next == Next::EndBatch {
                return Ok(false);
            }
        }
        Ok(false)
    }

    /// Reads the source's own queue until the batch is full or the queue
    /// is empty, waiting `batch_timeout` only for a batch's first message.
    fn read_own_queue(&mut self, bytes: &mut u64) -> Result<()> {
        let Some(queue) = self.queue.clone() else {
            return Ok(());
        };
        // taken out while its messages are read into the source's columns
        let mut taken = std::mem::take(&mut self.taken);
        let result = (|| {
            while self.columns.len() < self.batch_size {
                if self.next_taken == taken.len() {
                    taken.clear();
                    self.next_taken = 0;
                    let wait = if self.columns.is_empty() {
                        self.batch_timeout
                    } else {
                        Duration::ZERO
                    };
                    if queue.take(wait, self.batch_size - self.columns.len(), &mut taken) == 0 {
                        self.route_assigned_again();
                        return Ok(());
                    }
                }
                let Some(m) = taken.get(self.next_taken) else {
                    return Ok(());
                };
                self.next_taken += 1;
                let next = match m.error() {
                    None => self.take_message(&m, bytes),
                    Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR__PARTITION_EOF) => {
                        self.on_error(ClientError::PartitionEOF(m.partition()))?
                    }
                    Some(code) => {
                        // a partition's fetch error (librdkafka retries it):
                        // logged, or the job stopped if fatal, and the batch
                        // goes on, so no taken message is left for a later
                        // read that a rebalance may have come before
                        self.on_error(ClientError::MessageConsumption(code.into()))?;
                        Next::Continue
                    }
                };
                if next == Next::EndBatch {
                    return Ok(());
                }
            }
            Ok(())
        })();
        self.taken = taken;
        result
    }

    /// Routes every assigned partition to the source's queue again, at
    /// most once a second: a partition given back while the fetch of its
    /// earlier assignment was still stopping loses its route when that
    /// stop completes, and its messages wait in its own queue until then.
    fn route_assigned_again(&mut self) {
        if self.routes_checked.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.routes_checked = Instant::now();
        if let Ok(assigned) = self.consumer.assignment() {
            let partitions: Vec<i32> = assigned
                .elements_for_topic(&self.topic)
                .iter()
                .map(|p| p.partition())
                .collect();
            self.routed.route(&self.consumer, &self.topic, partitions);
        }
    }

    /// Adds one message to the batch being read.
    fn take_message(&mut self, message: &impl MessageFields, bytes: &mut u64) -> Next {
        if self.mode == ReadMode::Table && message.payload().is_none() {
            self.held_tombstone = Some(message.key().unwrap_or_default().to_vec());
            self.tombstone_at = Some((message.partition(), message.offset() + 1));
            return Next::EndBatch;
        }
        if let Some((_, at_end)) = &mut self.end {
            at_end.remove(&message.partition());
        }
        if let Some(t) = message.timestamp_ms() {
            self.oldest_ms = Some(self.oldest_ms.map_or(t, |o| o.min(t)));
        }
        let payload = message.payload();
        *bytes += payload.map_or(0, |p| p.len() as u64);
        match self.format {
            KafkaFormat::String | KafkaFormat::Bytes => self.raw.push(payload.map(<[u8]>::to_vec)),
            KafkaFormat::Json | KafkaFormat::Csv(_) => frame(payload, &mut self.chunk),
        }
        self.columns.push(message);
        Next::Continue
    }

    /// What an error in place of a message means for the batch: the end
    /// of a partition is noted, a fatal error stops the job, a transient
    /// one (broker restart, rebalance; librdkafka retries) ends the batch.
    fn on_error(&mut self, e: ClientError) -> Result<Next> {
        match e {
            ClientError::PartitionEOF(p) => {
                if let Some((_, at_end)) = &mut self.end {
                    at_end.insert(p);
                    if self.columns.is_empty() && self.reached_end() {
                        return Ok(Next::EndBatch);
                    }
                }
                Ok(Next::Continue)
            }
            e if is_fatal(&e) => Err(EngineError::connector(&self.name, e)),
            e => {
                tracing::warn!(component = "kafka", error_type = "consumer", source = %self.name, "{}: {e}", self.name);
                Ok(Next::EndBatch)
            }
        }
    }
}

/// One payload as one line: JSON's raw line breaks are whitespace (breaks
/// inside strings are escaped), so they become spaces; a message without a
/// payload becomes `null`, which decodes as a malformed record.
fn frame(payload: Option<&[u8]>, chunk: &mut Vec<u8>) {
    match payload {
        Some(p) if !p.iter().all(u8::is_ascii_whitespace) => {
            let start = chunk.len();
            chunk.extend_from_slice(p);
            // line breaks are rare in a payload: find them, do not test every byte
            for at in memchr::memchr2_iter(b'\n', b'\r', p) {
                chunk[start + at] = b' ';
            }
        }
        _ => chunk.extend_from_slice(b"null"),
    }
    chunk.push(b'\n');
}

/// Whether a batch goes on after a message or an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Continue,
    EndBatch,
}

fn is_fatal(e: &ClientError) -> bool {
    match e.rdkafka_error_code() {
        Some(code) => matches!(
            code,
            rdkafka::types::RDKafkaErrorCode::Fatal
                | rdkafka::types::RDKafkaErrorCode::TopicAuthorizationFailed
                | rdkafka::types::RDKafkaErrorCode::GroupAuthorizationFailed
                | rdkafka::types::RDKafkaErrorCode::SaslAuthenticationFailed
                | rdkafka::types::RDKafkaErrorCode::Authentication
        ),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_is_one_line_and_a_missing_one_is_null() {
        let mut chunk = Vec::new();
        frame(Some(b"{\"a\":\n1,\r\n\"b\": 2}"), &mut chunk);
        frame(None, &mut chunk);
        frame(Some(b"  \n"), &mut chunk);
        frame(Some(b"{}"), &mut chunk);
        assert_eq!(chunk, b"{\"a\": 1,  \"b\": 2}\nnull\nnull\n{}\n");
    }
}
