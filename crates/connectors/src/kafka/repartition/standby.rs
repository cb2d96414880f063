//! Standby copies (`processing.standby_replicas`): a process keeps, for
//! partitions of state it does not own, what the owner last wrote to the
//! changelog, read as it is written. Taking such a partition over then
//! reads only what was written since the copy's last read — the tail of
//! the dead owner's last checkpoint at most — instead of the partition's
//! whole state.
//!
//! Which partitions a process copies: when the broker names the group's
//! members and what each owns (Apache Kafka does), each partition is
//! copied by the `replicas` members that follow its owner in member-id
//! order; when it does not, or this process is not among them yet, a
//! process copies every partition it does not own. The group's assignor
//! does not know where the copies are, so with fewer replicas than other
//! processes a partition may move to a process without its copy, which
//! then reads the changelog as it would without standbys.
//!
//! The copies live on a thread of their own with two clients outside any
//! group: one reads a newly copied partition's latest checkpoint (the
//! same windowed read as a restore), the other tails every copied
//! partition. Each copy keeps the values of its newest checkpoint
//! complete in every operator's topic and of any newer one being written
//! ([`PartitionLog::prune`]), so it holds about one checkpoint of state.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{c_void, CStr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use velostream_engine::metrics::StandbyReport;
use velostream_engine::JobMetrics;

use super::changelog::{LogReader, PartitionLog};

/// How often the thread asks the group who owns what, besides when this
/// process's own partitions move.
const CHOOSE_EVERY: Duration = Duration::from_secs(3);

/// What the job's thread and the standby thread share.
#[derive(Default)]
struct Shared {
    /// The partitions this process owns (never copied).
    owned: BTreeSet<i32>,
    /// This process's member id in the repartition topic's group.
    member_id: Option<String>,
    /// Set when `owned` changed: the thread chooses again at once.
    moved: bool,
    copies: BTreeMap<i32, PartitionLog>,
    stop: bool,
}

/// The standby copies of one repartitioned statement, kept on their own
/// thread until dropped.
pub(super) struct Standby {
    shared: Arc<Mutex<Shared>>,
    thread: Option<JoinHandle<()>>,
}

/// Everything the standby thread needs.
pub(super) struct StandbySettings {
    pub name: String,
    /// Copies wanted per partition.
    pub replicas: usize,
    /// The repartition topic, and its consumer group.
    pub topic: String,
    pub partitions: usize,
    /// Reads a newly copied partition's latest checkpoint.
    pub reader: LogReader,
    /// Tails the copied partitions (no group).
    pub tail: BaseConsumer,
    pub metrics: Arc<JobMetrics>,
}

impl Standby {
    /// Starts the standby thread.
    pub(super) fn start(settings: StandbySettings) -> std::io::Result<Self> {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let thread = std::thread::Builder::new()
            .name(format!("standby-{}", settings.name))
            .spawn({
                let shared = shared.clone();
                move || run(settings, &shared)
            })?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Tells the thread which partitions this process owns now and its
    /// member id in the group.
    pub(super) fn owned(&self, owned: &BTreeSet<i32>, member_id: Option<String>) {
        let mut shared = lock(&self.shared);
        if shared.owned != *owned || shared.member_id != member_id {
            shared.owned = owned.clone();
            shared.member_id = member_id;
            shared.moved = true;
        }
    }

    /// The copy of `partition`, which this process now owns (so it is not
    /// copied again).
    pub(super) fn take(&self, partition: i32) -> Option<PartitionLog> {
        let mut shared = lock(&self.shared);
        shared.owned.insert(partition);
        shared.moved = true;
        shared.copies.remove(&partition)
    }
}

impl Drop for Standby {
    fn drop(&mut self) {
        lock(&self.shared).stop = true;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A panic on the standby thread while holding the lock leaves at worst a
/// copy missing a value: a takeover then reads the changelog afresh.
fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

fn run(settings: StandbySettings, shared: &Mutex<Shared>) {
    let topics: Vec<String> = settings.reader.topics().map(str::to_string).collect();
    let mut chosen_at: Option<Instant> = None;
    let mut tailed: BTreeSet<i32> = BTreeSet::new();
    let mut knows_members: Option<bool> = None;
    loop {
        let (owned, me, moved) = {
            let mut s = lock(shared);
            if s.stop {
                return;
            }
            (
                s.owned.clone(),
                s.member_id.clone(),
                std::mem::take(&mut s.moved),
            )
        };
        if moved || chosen_at.is_none_or(|t| t.elapsed() >= CHOOSE_EVERY) {
            chosen_at = Some(Instant::now());
            let members = group_members(&settings.tail, &settings.topic);
            let Some((wanted, known)) = standby_partitions(
                me.as_deref(),
                &owned,
                members.as_deref(),
                settings.replicas,
                settings.partitions,
            ) else {
                // not joined yet, or the group's view of who owns what is
                // not this process's yet: asked again soon
                chosen_at = Some(Instant::now() - CHOOSE_EVERY + Duration::from_millis(500));
                continue;
            };
            if knows_members != Some(known) {
                tracing::info!(
                    component = "kafka",
                    source = %settings.name,
                    "{}: standby copies of {} per partition of '{}' ({})",
                    settings.name,
                    settings.replicas,
                    settings.topic,
                    match known {
                        true => "chosen by the group's members",
                        false => "of every partition not owned here: the broker does not name the group's members",
                    }
                );
                knows_members = Some(known);
            }
            let held = hold(&settings, shared, &wanted);
            if held != tailed {
                tail(&settings, shared, &topics, &held);
                tailed = held;
            }
        }
        match settings.tail.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let Some(at) = topics.iter().position(|t| t == m.topic()) else {
                    continue;
                };
                let mut s = lock(shared);
                if let Some(copy) = s.copies.get_mut(&m.partition()) {
                    copy.push(at, m.offset(), m.payload().unwrap_or_default().to_vec());
                    let report = StandbyReport {
                        checkpoint: copy.prune(),
                        bytes: copy.bytes(),
                    };
                    if let Ok(mut reports) = settings.metrics.standby_partitions.lock() {
                        reports.insert(m.partition() as usize, report);
                    }
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => {
                tracing::warn!(component = "kafka", source = %settings.name, "{}: standby copy: {e}", settings.name);
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

/// Makes the copies those of `wanted`: drops the others and reads each
/// new one's latest checkpoint. Returns the partitions copied.
fn hold(
    settings: &StandbySettings,
    shared: &Mutex<Shared>,
    wanted: &BTreeSet<i32>,
) -> BTreeSet<i32> {
    let have: BTreeSet<i32> = {
        let mut s = lock(shared);
        s.copies.retain(|p, _| wanted.contains(p));
        s.copies.keys().copied().collect()
    };
    for &p in wanted.difference(&have) {
        // read outside the lock: the job may take another copy meanwhile
        match settings.reader.read_back(p, None) {
            Ok((copy, _)) => {
                let mut s = lock(shared);
                if !s.owned.contains(&p) {
                    s.copies.insert(p, copy);
                }
            }
            Err(e) => tracing::warn!(
                component = "kafka",
                source = %settings.name,
                "{}: standby copy of partition {p} not read (tried again in {CHOOSE_EVERY:?}): {e}",
                settings.name
            ),
        }
    }
    let s = lock(shared);
    if let Ok(mut reports) = settings.metrics.standby_partitions.lock() {
        *reports = s
            .copies
            .iter()
            .map(|(p, copy)| (*p as usize, report_of(copy)))
            .collect();
    }
    s.copies.keys().copied().collect()
}

/// Points the tailing client at the end of each copy of `held`.
fn tail(
    settings: &StandbySettings,
    shared: &Mutex<Shared>,
    topics: &[String],
    held: &BTreeSet<i32>,
) {
    let mut assignment = TopicPartitionList::new();
    {
        let s = lock(shared);
        for &p in held {
            let Some(copy) = s.copies.get(&p) else {
                continue;
            };
            for (at, topic) in topics.iter().enumerate() {
                let next = copy.next(at).unwrap_or(0);
                let _ = assignment.add_partition_offset(topic, p, Offset::Offset(next));
            }
        }
    }
    if let Err(e) = settings.tail.assign(&assignment) {
        tracing::warn!(component = "kafka", source = %settings.name, "{}: standby copies not tailed: {e}", settings.name);
    }
}

fn report_of(copy: &PartitionLog) -> StandbyReport {
    StandbyReport {
        checkpoint: copy.newest_complete(),
        bytes: copy.bytes(),
    }
}

/// The members of the group reading `topic` (its consumer group has the
/// topic's name) and the partitions of `topic` each owns; `None` when the
/// broker does not say.
fn group_members<C: ConsumerContext>(
    client: &BaseConsumer<C>,
    topic: &str,
) -> Option<Vec<(String, BTreeSet<i32>)>> {
    let list = client
        .fetch_group_list(Some(topic), Duration::from_secs(5))
        .ok()?;
    let group = list.groups().iter().find(|g| g.name() == topic)?;
    let members: Vec<(String, BTreeSet<i32>)> = group
        .members()
        .iter()
        .map(|m| {
            let owned = m
                .assignment()
                .map(|a| assigned(a, topic))
                .unwrap_or_default();
            (m.id().to_string(), owned)
        })
        .collect();
    (!members.is_empty()).then_some(members)
}

/// The partitions of `topic` in a member's assignment as the consumer
/// protocol encodes it (version, then per topic its name and partitions;
/// big-endian). Anything unreadable counts as nothing assigned.
fn assigned(bytes: &[u8], topic: &str) -> BTreeSet<i32> {
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (rest.get(..n)?, rest.get(n..)?);
        *rest = tail;
        Some(head)
    }
    fn int(rest: &mut &[u8], n: usize) -> Option<i64> {
        let b = take(rest, n)?;
        Some(match n {
            2 => i16::from_be_bytes([b[0], b[1]]) as i64,
            _ => i32::from_be_bytes([b[0], b[1], b[2], b[3]]) as i64,
        })
    }
    let mut out = BTreeSet::new();
    let mut rest = bytes;
    let read = (|| {
        int(&mut rest, 2)?;
        for _ in 0..int(&mut rest, 4)?.max(0) {
            let len = int(&mut rest, 2)?.max(0) as usize;
            let name = take(&mut rest, len)?;
            for _ in 0..int(&mut rest, 4)?.max(0) {
                let p = int(&mut rest, 4)? as i32;
                if name == topic.as_bytes() {
                    out.insert(p);
                }
            }
        }
        Some(())
    })();
    if read.is_none() {
        return BTreeSet::new();
    }
    out
}

/// The partitions of `0..partitions` the member `me` copies, and whether
/// they were chosen by the group's `members` and what each owns: those
/// whose owner `me` follows within `replicas` places in member-id order.
/// When the broker names no member or no assignment, every partition not
/// `owned`. `None` while that cannot be told: before `me` joined, or
/// while the group's view of what `me` owns is not `owned` (a rebalance
/// in flight).
fn standby_partitions(
    me: Option<&str>,
    owned: &BTreeSet<i32>,
    members: Option<&[(String, BTreeSet<i32>)]>,
    replicas: usize,
    partitions: usize,
) -> Option<(BTreeSet<i32>, bool)> {
    let me = me?;
    let members = members.filter(|m| m.iter().any(|(_, parts)| !parts.is_empty()));
    let Some(members) = members else {
        let all = (0..partitions as i32).filter(|p| !owned.contains(p));
        return Some((all.collect(), false));
    };
    let mut sorted: Vec<&(String, BTreeSet<i32>)> = members.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let n = sorted.len();
    let mine = sorted.iter().position(|(id, _)| id == me)?;
    if sorted[mine].1 != *owned {
        return None;
    }
    let chosen = sorted
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            let distance = (mine + n - i) % n;
            distance >= 1 && distance <= replicas
        })
        .flat_map(|(_, (_, parts))| parts.iter().copied())
        .filter(|p| !owned.contains(p) && (*p as usize) < partitions)
        .collect();
    Some((chosen, true))
}

/// `consumer`'s member id in its group, as the coordinator gave it;
/// `None` before it joined.
pub(super) fn member_id<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> Option<String> {
    let client = consumer.client().native_ptr();
    // SAFETY: `client` is the live handle owned by `consumer`, borrowed for
    // this call. `rd_kafka_memberid` returns NULL or a NUL-terminated copy
    // allocated by librdkafka that the caller owns: it is read while alive
    // and released exactly once, with the client's own allocator.
    unsafe {
        let id = rd::rd_kafka_memberid(client);
        if id.is_null() {
            return None;
        }
        let text = CStr::from_ptr(id).to_string_lossy().into_owned();
        rd::rd_kafka_mem_free(client, id as *mut c_void);
        (!text.is_empty()).then_some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(topics: &[(&str, &[i32])]) -> Vec<u8> {
        let mut out = 1i16.to_be_bytes().to_vec();
        out.extend((topics.len() as i32).to_be_bytes());
        for (name, parts) in topics {
            out.extend((name.len() as i16).to_be_bytes());
            out.extend(name.as_bytes());
            out.extend((parts.len() as i32).to_be_bytes());
            for p in *parts {
                out.extend(p.to_be_bytes());
            }
        }
        out.extend((-1i32).to_be_bytes()); // no user data
        out
    }

    #[test]
    fn a_members_partitions_are_read_from_its_assignment() {
        let bytes = assignment(&[("other", &[0, 1]), ("app-s-repartition", &[2, 5])]);
        assert_eq!(
            assigned(&bytes, "app-s-repartition"),
            BTreeSet::from([2, 5])
        );
        assert_eq!(assigned(&bytes[..9], "app-s-repartition"), BTreeSet::new());
        assert_eq!(assigned(&[], "app-s-repartition"), BTreeSet::new());
    }

    #[test]
    fn each_partition_is_copied_by_the_members_after_its_owner() {
        let set = |p: &[i32]| p.iter().copied().collect::<BTreeSet<i32>>();
        let members = vec![
            ("c".to_string(), set(&[4, 5])),
            ("a".to_string(), set(&[0, 1])),
            ("b".to_string(), set(&[2, 3])),
        ];
        let copies = |me: &str, replicas| {
            let owned = members.iter().find(|(id, _)| id == me).unwrap().1.clone();
            let (chosen, by_members) =
                standby_partitions(Some(me), &owned, Some(&members), replicas, 6).unwrap();
            assert!(by_members);
            chosen
        };
        // one replica: a copies c's (it follows c), b copies a's, c copies b's
        assert_eq!(copies("a", 1), set(&[4, 5]));
        assert_eq!(copies("b", 1), set(&[0, 1]));
        assert_eq!(copies("c", 1), set(&[2, 3]));
        // as many replicas as other members: everything not owned
        assert_eq!(copies("a", 2), set(&[2, 3, 4, 5]));
        assert_eq!(copies("a", 5), set(&[2, 3, 4, 5]));
        // every partition has exactly `replicas` copies
        for replicas in 1..=2 {
            let mut count = BTreeMap::new();
            for me in ["a", "b", "c"] {
                for p in copies(me, replicas) {
                    *count.entry(p).or_insert(0) += 1;
                }
            }
            assert!(count.values().all(|&c| c == replicas), "{count:?}");
            assert_eq!(count.len(), 6);
        }
    }

    #[test]
    fn without_the_members_every_partition_not_owned_is_copied() {
        let owned = BTreeSet::from([1, 3]);
        let all = Some((BTreeSet::from([0, 2, 4, 5]), false));
        assert_eq!(standby_partitions(Some("me"), &owned, None, 1, 6), all);
        // members named without their assignments
        let nameless = vec![
            ("me".to_string(), BTreeSet::new()),
            ("x".to_string(), BTreeSet::new()),
        ];
        assert_eq!(
            standby_partitions(Some("me"), &owned, Some(&nameless), 1, 6),
            all
        );
        // not joined yet, or the group does not see this member's
        // partitions as it does: nothing is decided
        assert_eq!(standby_partitions(None, &owned, None, 1, 6), None);
        let other = vec![("x".to_string(), BTreeSet::from([0]))];
        assert_eq!(
            standby_partitions(Some("me"), &owned, Some(&other), 1, 6),
            None
        );
        let stale = vec![
            ("me".to_string(), BTreeSet::from([1])),
            ("x".to_string(), BTreeSet::from([0, 2, 3, 4, 5])),
        ];
        assert_eq!(
            standby_partitions(Some("me"), &owned, Some(&stale), 1, 6),
            None
        );
    }
}
