//! Changelog topics: the state of each repartition partition kept in
//! Kafka, so that it moves with the partition to whichever process the
//! group gives it next.
//!
//! One compacted topic per stateful operator of the statement,
//! `<group.id>-<statement>-<index>-<operator>-changelog`, with the
//! repartition topic's partition count. At each checkpoint, the owner of
//! a repartition partition writes each operator's state of that partition
//! to the same partition of the operator's topic: the snapshot (Arrow IPC)
//! cut into chunks, each message holding a small header — the
//! partition's checkpoint number, the chunk's number, how many chunks —
//! and, in the first chunk, the last input offset handed over per input
//! partition, so that records written twice to the repartition topic are
//! dropped the same after a move.
//!
//! Chunks are keyed `<checkpoint parity>-<chunk>`: compaction keeps the
//! newest two checkpoints, so the last complete one survives a writer that
//! died in the middle of the next.
//!
//! A new owner reads the end of each operator's partition (a window that
//! widens until it holds a checkpoint complete in every operator's topic)
//! and restores the newest such checkpoint. Its records in the
//! repartition topic after that checkpoint are read again from the
//! group's committed offset, which the old owner committed only after the
//! changelog held the state (the job keeps state before it commits); what
//! was already counted is dropped by input offset.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::record_batch::RecordBatch;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::BaseProducer;
use rdkafka::{Offset, TopicPartitionList};
use velostream_engine::state::{OperatorSnapshot, StatefulOperator};
use velostream_engine::{EngineError, Result};

use crate::kafka::delivery::DeliveryContext;

/// A chunk's snapshot is cut at about this many bytes of Arrow data
/// (well under a broker's default 1 MB message limit).
const CHUNK_BYTES: usize = 512 * 1024;
/// Messages read from the end of a partition at first when restoring; the
/// window grows fourfold until it holds a complete checkpoint.
const FIRST_WINDOW: i64 = 64;
/// How long reading one window of a changelog partition may take (a
/// transaction left open hides what follows it from this `read_committed`
/// reader until the broker aborts it).
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// The changelog topic of `operator` of the statement whose topics start
/// with `prefix` (`<group.id>-<statement>`).
pub(super) fn topic_name(prefix: &str, operator: &StatefulOperator) -> String {
    format!("{prefix}-{}-{}-changelog", operator.index, operator.name)
}

/// One message of a changelog topic.
#[derive(Debug, Clone)]
pub(super) struct ChangelogRecord {
    topic: String,
    partition: i32,
    key: String,
    value: Vec<u8>,
}

impl ChangelogRecord {
    /// Queues the message on `producer`.
    pub(super) fn send(&self, producer: &BaseProducer<DeliveryContext>, name: &str) -> Result<()> {
        super::send(
            producer,
            name,
            &self.topic,
            self.partition,
            Some(&self.key),
            &self.value,
        )
    }
}

/// A repartition partition's state as read back from its changelog.
#[derive(Debug)]
pub(super) struct Restored {
    /// The partition's checkpoint number it was kept at.
    pub checkpoint: u64,
    /// Each stateful operator's snapshot, by its index in the pipeline.
    pub operators: Vec<(usize, OperatorSnapshot)>,
    /// The last input offset handed over per input partition.
    pub seen: BTreeMap<i32, i64>,
    /// Bytes read back (the chunks of the restored checkpoint).
    pub bytes: u64,
}

/// The changelog topics of one statement and the client reading them back.
pub(super) struct Changelog {
    reader: LogReader,
    /// The checkpoint number each partition was last kept or restored at:
    /// the next one written is one more, whichever process writes it.
    kept: BTreeMap<i32, u64>,
}

impl Changelog {
    pub(super) fn new(reader: LogReader) -> Self {
        Self {
            reader,
            kept: BTreeMap::new(),
        }
    }

    pub(super) fn topics(&self) -> impl Iterator<Item = &str> {
        self.reader.topics.iter().map(|(_, t)| t.as_str())
    }

    /// This process no longer owns `partition`.
    pub(super) fn forget(&mut self, partition: i32) {
        self.kept.remove(&partition);
    }

    /// The messages keeping the state of `partition` (every stateful
    /// operator's snapshot, and the input offsets handed over) as its next
    /// checkpoint, for the caller to write.
    pub(super) fn records(
        &mut self,
        partition: i32,
        operators: &[(usize, OperatorSnapshot)],
        seen: &BTreeMap<i32, i64>,
    ) -> Result<Vec<ChangelogRecord>> {
        let checkpoint = self.kept.get(&partition).copied().unwrap_or(0) + 1;
        let mut records = Vec::new();
        for (index, snapshot) in operators {
            let topic = self.topic_of(*index)?;
            let chunks = cut(snapshot)?;
            let count = chunks.len();
            for (chunk, ipc) in chunks.into_iter().enumerate() {
                let mut header = serde_json::json!({
                    "checkpoint": checkpoint,
                    "chunk": chunk,
                    "chunks": count,
                });
                if chunk == 0 {
                    header["seen"] = seen
                        .iter()
                        .map(|(p, o)| (p.to_string(), serde_json::Value::from(*o)))
                        .collect::<serde_json::Map<_, _>>()
                        .into();
                }
                records.push(ChangelogRecord {
                    topic: topic.to_string(),
                    partition,
                    key: format!("{}-{chunk}", checkpoint % 2),
                    value: frame(&header, &ipc),
                });
            }
        }
        self.kept.insert(partition, checkpoint);
        Ok(records)
    }

    fn topic_of(&self, index: usize) -> Result<&str> {
        self.reader
            .topics
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, t)| t.as_str())
            .ok_or_else(|| {
                EngineError::State(format!(
                    "{}: no changelog topic for operator #{index}",
                    self.reader.name
                ))
            })
    }

    /// The newest checkpoint of `partition` complete in every operator's
    /// topic; `None` when there is none (the partition starts empty).
    /// `prior` is what a standby copy already read of the partition: only
    /// what was written after it is read then. The second value says
    /// whether the state came from `prior`.
    pub(super) fn restore(
        &mut self,
        partition: i32,
        prior: Option<PartitionLog>,
    ) -> Result<(Option<Restored>, bool)> {
        let (log, from_prior) = self.reader.read_back(partition, prior)?;
        let restored = match log.newest_complete() {
            Some(checkpoint) => {
                self.kept.insert(partition, checkpoint);
                Some(self.reader.assemble(checkpoint, &log)?)
            }
            None => {
                self.kept.remove(&partition);
                None
            }
        };
        Ok((restored, from_prior))
    }
}

/// What has been read of one partition of every operator's changelog
/// topic (in the changelog's topic order): the values from some offset
/// on, and the next offset to read.
#[derive(Debug, Default)]
pub(super) struct PartitionLog {
    topics: Vec<TopicLog>,
}

#[derive(Debug, Default)]
struct TopicLog {
    values: Vec<Vec<u8>>,
    next: i64,
}

impl PartitionLog {
    /// The newest checkpoint complete in every operator's topic.
    pub(super) fn newest_complete(&self) -> Option<u64> {
        let found: Vec<BTreeSet<u64>> = self
            .topics
            .iter()
            .map(|t| complete_checkpoints(&t.values))
            .collect();
        found
            .first()?
            .iter()
            .rev()
            .find(|id| found.iter().all(|f| f.contains(id)))
            .copied()
    }

    /// Adds `value`, read at `offset` of the topic at `topic` (its place
    /// in the changelog's order).
    pub(super) fn push(&mut self, topic: usize, offset: i64, value: Vec<u8>) {
        if let Some(t) = self.topics.get_mut(topic) {
            t.values.push(value);
            t.next = offset + 1;
        }
    }

    /// The offset to read next in the topic at `topic`.
    pub(super) fn next(&self, topic: usize) -> Option<i64> {
        self.topics.get(topic).map(|t| t.next)
    }

    /// Drops the values of checkpoints older than the newest complete
    /// one (and anything not a changelog message), so that a copy kept
    /// up to date holds about one checkpoint. Returns that checkpoint.
    pub(super) fn prune(&mut self) -> Option<u64> {
        let newest = self.newest_complete()?;
        for t in &mut self.topics {
            t.values
                .retain(|v| parse(v).is_some_and(|chunk| chunk.checkpoint >= newest));
        }
        Some(newest)
    }

    /// Bytes held.
    pub(super) fn bytes(&self) -> u64 {
        self.topics
            .iter()
            .flat_map(|t| t.values.iter())
            .map(|v| v.len() as u64)
            .sum()
    }
}

/// Reads a statement's changelog topics back by offset, outside any group.
pub(super) struct LogReader {
    name: String,
    /// Topic per stateful operator's index.
    topics: Vec<(usize, String)>,
    consumer: BaseConsumer,
}

impl LogReader {
    pub(super) fn new(name: &str, topics: Vec<(usize, String)>, consumer: BaseConsumer) -> Self {
        Self {
            name: name.to_string(),
            topics,
            consumer,
        }
    }

    /// The changelog topics, in their order.
    pub(super) fn topics(&self) -> impl Iterator<Item = &str> {
        self.topics.iter().map(|(_, t)| t.as_str())
    }

    /// The end of `partition` of every operator's topic, read until it
    /// holds a checkpoint complete in all of them, or to the start. With
    /// `prior`, only what follows it is read first; the second value says
    /// whether that was enough (else the end is read afresh, as without).
    pub(super) fn read_back(
        &self,
        partition: i32,
        prior: Option<PartitionLog>,
    ) -> Result<(PartitionLog, bool)> {
        if let Some(mut log) = prior.filter(|p| p.topics.len() == self.topics.len()) {
            for (at, (_, topic)) in self.topics.iter().enumerate() {
                let (low, high) = self.watermarks(topic, partition)?;
                // compaction may have removed what follows the copy: what
                // it removed was superseded by what is still there
                let from = log.topics[at].next.max(low);
                for (offset, value) in self.read(topic, partition, from, high)? {
                    log.push(at, offset, value);
                }
                log.topics[at].next = log.topics[at].next.max(high);
            }
            if log.newest_complete().is_some() {
                return Ok((log, true));
            }
        }
        let mut window = FIRST_WINDOW;
        loop {
            let mut log = PartitionLog::default();
            let mut whole = true;
            for (_, topic) in &self.topics {
                let (low, high) = self.watermarks(topic, partition)?;
                let from = (high - window).max(low);
                whole &= from == low;
                let values = self.read(topic, partition, from, high)?;
                log.topics.push(TopicLog {
                    values: values.into_iter().map(|(_, v)| v).collect(),
                    next: high,
                });
            }
            if whole || log.newest_complete().is_some() {
                return Ok((log, false));
            }
            window *= 4;
        }
    }

    fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64)> {
        self.consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .map_err(|e| EngineError::connector(&self.name, format!("changelog '{topic}': {e}")))
    }

    /// The snapshots of `checkpoint` in `log`, each operator's chunks put
    /// together.
    fn assemble(&self, checkpoint: u64, log: &PartitionLog) -> Result<Restored> {
        let mut operators = Vec::with_capacity(self.topics.len());
        let mut seen = BTreeMap::new();
        let mut bytes = 0;
        for ((index, _), of_topic) in self.topics.iter().zip(&log.topics) {
            let Some(complete) = checkpoints(&of_topic.values).remove(&checkpoint) else {
                continue;
            };
            seen = complete.seen;
            let mut schema = None;
            let mut batches = Vec::new();
            for ipc in &complete.chunks {
                bytes += ipc.len() as u64;
                let part = OperatorSnapshot::from_bytes(ipc)?;
                schema.get_or_insert(part.schema);
                batches.extend(part.batches);
            }
            let schema = schema.ok_or_else(|| {
                EngineError::State(format!("{}: a kept checkpoint has no chunks", self.name))
            })?;
            operators.push((*index, OperatorSnapshot { schema, batches }));
        }
        Ok(Restored {
            checkpoint,
            operators,
            seen,
            bytes,
        })
    }

    /// The offsets and values of `topic`'s `partition` from offset `from`
    /// to `high`.
    fn read(
        &self,
        topic: &str,
        partition: i32,
        from: i64,
        high: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>> {
        if from >= high {
            return Ok(Vec::new());
        }
        let failed = |e: rdkafka::error::KafkaError| {
            EngineError::connector(&self.name, format!("changelog '{topic}': {e}"))
        };
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, partition, Offset::Offset(from))
            .map_err(failed)?;
        self.consumer.assign(&assignment).map_err(failed)?;
        let deadline = Instant::now() + READ_TIMEOUT;
        let mut values = Vec::new();
        loop {
            if Instant::now() > deadline {
                return Err(EngineError::connector(
                    &self.name,
                    format!(
                        "changelog '{topic}' partition {partition}: offsets {from}..{high} not read within {READ_TIMEOUT:?}"
                    ),
                ));
            }
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    if m.topic() != topic || m.partition() != partition {
                        continue;
                    }
                    values.push((m.offset(), m.payload().unwrap_or_default().to_vec()));
                    if m.offset() >= high - 1 {
                        break;
                    }
                }
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => return Err(failed(e)),
                None => {}
            }
        }
        self.consumer.unassign().map_err(failed)?;
        Ok(values)
    }
}

/// One checkpoint's chunks of one operator, all present.
#[derive(Debug, Default)]
struct Complete {
    chunks: Vec<Vec<u8>>,
    seen: BTreeMap<i32, i64>,
}

/// One changelog message, its header read.
struct Chunk<'a> {
    checkpoint: u64,
    chunk: usize,
    chunks: usize,
    /// Only in a checkpoint's first chunk.
    seen: Option<BTreeMap<i32, i64>>,
    ipc: &'a [u8],
}

/// `value` as a changelog message; `None` if it is not one.
fn parse(value: &[u8]) -> Option<Chunk<'_>> {
    let (header, ipc) = unframe(value)?;
    let number = |key: &str| header.get(key).and_then(serde_json::Value::as_u64);
    let seen = header
        .get("seen")
        .and_then(serde_json::Value::as_object)
        .map(|seen| {
            seen.iter()
                .filter_map(|(p, o)| Some((p.parse().ok()?, o.as_i64()?)))
                .collect()
        });
    Some(Chunk {
        checkpoint: number("checkpoint")?,
        chunk: number("chunk")? as usize,
        chunks: number("chunks")? as usize,
        seen,
        ipc,
    })
}

/// The numbers of the checkpoints whose chunks are all among `messages`.
fn complete_checkpoints(messages: &[Vec<u8>]) -> BTreeSet<u64> {
    let mut parts: BTreeMap<u64, (usize, BTreeSet<usize>)> = BTreeMap::new();
    for chunk in messages.iter().filter_map(|v| parse(v)) {
        let entry = parts.entry(chunk.checkpoint).or_default();
        entry.0 = chunk.chunks;
        entry.1.insert(chunk.chunk);
    }
    parts
        .into_iter()
        .filter(|(_, (chunks, have))| *chunks > 0 && have.len() == *chunks)
        .map(|(id, _)| id)
        .collect()
}

/// The checkpoints whose chunks are all among `messages` (in offset
/// order; a chunk written twice counts once).
fn checkpoints(messages: &[Vec<u8>]) -> BTreeMap<u64, Complete> {
    #[derive(Default)]
    struct Partial {
        chunks: usize,
        parts: BTreeMap<usize, Vec<u8>>,
        seen: BTreeMap<i32, i64>,
    }
    let mut partial: BTreeMap<u64, Partial> = BTreeMap::new();
    for chunk in messages.iter().filter_map(|v| parse(v)) {
        let entry = partial.entry(chunk.checkpoint).or_default();
        entry.chunks = chunk.chunks;
        if let Some(seen) = chunk.seen {
            entry.seen = seen;
        }
        entry.parts.insert(chunk.chunk, chunk.ipc.to_vec());
    }
    partial
        .into_iter()
        .filter(|(_, p)| p.chunks > 0 && p.parts.len() == p.chunks)
        .map(|(id, p)| {
            (
                id,
                Complete {
                    chunks: p.parts.into_values().collect(),
                    seen: p.seen,
                },
            )
        })
        .collect()
}

/// A snapshot cut into Arrow IPC streams of about [`CHUNK_BYTES`] each;
/// always at least one (an empty state is kept as such).
fn cut(snapshot: &OperatorSnapshot) -> Result<Vec<Vec<u8>>> {
    let encode = |batches: Vec<RecordBatch>| {
        OperatorSnapshot {
            schema: snapshot.schema.clone(),
            batches,
        }
        .to_bytes()
    };
    let mut chunks = Vec::new();
    let mut current: Vec<RecordBatch> = Vec::new();
    let mut size = 0;
    for batch in &snapshot.batches {
        let rows = batch.num_rows();
        if rows == 0 {
            continue;
        }
        let bytes = batch.get_array_memory_size().max(1);
        let per_chunk = (rows * CHUNK_BYTES / bytes).clamp(1, rows);
        let mut start = 0;
        while start < rows {
            let len = per_chunk.min(rows - start);
            let part_bytes = bytes * len / rows;
            if size + part_bytes > CHUNK_BYTES && !current.is_empty() {
                chunks.push(encode(std::mem::take(&mut current))?);
                size = 0;
            }
            current.push(batch.slice(start, len));
            size += part_bytes;
            start += len;
        }
    }
    if !current.is_empty() || chunks.is_empty() {
        // one batch per chunk keeps each IPC stream's dictionaries simple
        let merged = match current.len() {
            0 | 1 => current,
            _ => vec![concat_batches(&snapshot.schema, &current)?],
        };
        chunks.push(encode(merged)?);
    }
    Ok(chunks)
}

/// A message value: the header's length (4 bytes, big-endian), the
/// header as JSON, then the chunk.
fn frame(header: &serde_json::Value, ipc: &[u8]) -> Vec<u8> {
    let header = header.to_string();
    let mut out = Vec::with_capacity(4 + header.len() + ipc.len());
    out.extend_from_slice(&(header.len() as u32).to_be_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(ipc);
    out
}

/// The header and chunk of a message value; `None` if it is not one.
fn unframe(value: &[u8]) -> Option<(serde_json::Value, &[u8])> {
    let len = u32::from_be_bytes(value.get(..4)?.try_into().ok()?) as usize;
    let header = serde_json::from_slice(value.get(4..4 + len)?).ok()?;
    Some((header, &value[4 + len..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn snapshot(rows: usize) -> OperatorSnapshot {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("n", DataType::Int64, false),
        ]));
        let keys: Vec<String> = (0..rows).map(|i| format!("key-{i:08}")).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(keys)),
                Arc::new(Int64Array::from_iter_values(0..rows as i64)),
            ],
        )
        .unwrap();
        OperatorSnapshot {
            schema,
            batches: vec![batch],
        }
    }

    fn message(checkpoint: u64, chunk: usize, chunks: usize, ipc: &[u8]) -> Vec<u8> {
        let header = serde_json::json!({
            "checkpoint": checkpoint, "chunk": chunk, "chunks": chunks, "seen": {"3": 41}
        });
        frame(&header, ipc)
    }

    #[test]
    fn a_large_state_is_cut_into_chunks_that_put_back_together_equal_it() {
        let state = snapshot(100_000);
        let chunks = cut(&state).unwrap();
        assert!(chunks.len() > 1, "{} chunks", chunks.len());
        let mut rows = Vec::new();
        for c in &chunks {
            assert!(c.len() < 1024 * 1024, "a chunk of {} bytes", c.len());
            rows.extend(OperatorSnapshot::from_bytes(c).unwrap().batches);
        }
        let back = concat_batches(&state.schema, &rows).unwrap();
        assert_eq!(back, state.batches[0]);
        // an empty state is still one chunk, so a partition emptied is kept empty
        let empty = OperatorSnapshot {
            schema: state.schema.clone(),
            batches: vec![],
        };
        assert_eq!(cut(&empty).unwrap().len(), 1);
    }

    #[test]
    fn a_copy_kept_up_to_date_holds_its_newest_whole_checkpoint_and_what_follows() {
        let ipc = cut(&snapshot(3)).unwrap().remove(0);
        let mut log = PartitionLog {
            topics: vec![TopicLog::default(), TopicLog::default()],
        };
        let mut offset = [0i64; 2];
        let mut write = |log: &mut PartitionLog, topic: usize, m: Vec<u8>| {
            log.push(topic, offset[topic], m);
            offset[topic] += 1;
            log.prune();
        };
        for topic in 0..2 {
            write(&mut log, topic, message(1, 0, 1, &ipc));
        }
        assert_eq!(log.newest_complete(), Some(1));
        // checkpoint 2 whole in the first topic only: 1 is still the newest
        // whole in both, and kept
        write(&mut log, 0, message(2, 0, 1, &ipc));
        write(&mut log, 1, message(2, 0, 2, &ipc));
        assert_eq!(log.newest_complete(), Some(1));
        assert_eq!(log.topics[1].values.len(), 2);
        write(&mut log, 1, message(2, 1, 2, &ipc));
        assert_eq!(log.newest_complete(), Some(2));
        // checkpoint 1 is dropped once 2 is whole everywhere
        assert_eq!(log.topics[0].values.len(), 1);
        assert_eq!(log.topics[1].values.len(), 2);
        assert_eq!((log.next(0), log.next(1)), (Some(2), Some(3)));
        assert!(log.bytes() > 0);
    }

    #[test]
    fn the_newest_checkpoint_with_every_chunk_is_the_one_restored() {
        let ipc = cut(&snapshot(3)).unwrap().remove(0);
        let messages = vec![
            message(4, 0, 2, &ipc),
            message(4, 1, 2, &ipc),
            // the writer of checkpoint 5 died after its first chunk
            message(5, 0, 2, &ipc),
            b"not a changelog message".to_vec(),
        ];
        let found = checkpoints(&messages);
        assert_eq!(found.keys().copied().collect::<Vec<_>>(), vec![4]);
        assert_eq!(found[&4].chunks.len(), 2);
        assert_eq!(found[&4].seen, BTreeMap::from([(3, 41)]));
    }
}
