//! Watermark tracking across the partitions of a source.
//!
//! Each partition's watermark is the largest event time it has delivered
//! minus the allowed out-of-orderness; the source's watermark is the
//! minimum over its partitions, so one slow partition holds windows open
//! rather than having its records dropped as late. A partition that has
//! delivered nothing for `idle_timeout` (processing time) stops holding the
//! watermark back until it delivers again.

use std::time::{Duration, Instant};

/// Milliseconds since the Unix epoch now: processing time, and the time
/// stamps of checkpoints.
pub fn wall_clock_ms() -> i64 {
    wall_clock_us() / 1000
}

/// Microseconds since the Unix epoch now.
pub fn wall_clock_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

#[derive(Debug, Clone, Copy)]
struct PartitionState {
    max_event_time: i64,
    last_seen: Instant,
}

/// How long a partition the source announced but that has delivered
/// nothing yet holds the watermark back when no idle timeout is set.
pub const FIRST_RECORD_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct WatermarkTracker {
    lag_ms: i64,
    idle_timeout: Option<Duration>,
    partitions: Vec<Option<PartitionState>>,
    /// Partitions the source announced, waiting for their first record since.
    awaited: Vec<(usize, Instant)>,
    /// The watermark never goes back.
    current: Option<i64>,
    /// Whether a record has arrived since the tracker was created or
    /// restored. Waiting and idleness are measured from that first record:
    /// a source that takes a while to start (joining a consumer group after
    /// a restart) must not make every partition look idle.
    delivering: bool,
}

impl WatermarkTracker {
    pub fn new(lag: Duration, idle_timeout: Option<Duration>) -> Self {
        Self {
            lag_ms: lag.as_millis() as i64,
            idle_timeout,
            partitions: Vec::new(),
            awaited: Vec::new(),
            current: None,
            delivering: false,
        }
    }

    /// The source reads `partitions`: until each has delivered a record
    /// (or stayed silent for the idle timeout, by default
    /// [`FIRST_RECORD_WAIT`]), the watermark does not advance — records of
    /// a partition that starts late are not late. A partition not among
    /// them no longer holds the watermark back: another member of the
    /// source's consumer group reads it now.
    pub fn expect_partitions(&mut self, partitions: &[usize], now: Instant) {
        for (p, state) in self.partitions.iter_mut().enumerate() {
            if !partitions.contains(&p) {
                *state = None;
            }
        }
        self.awaited = partitions
            .iter()
            .copied()
            .filter(|&p| self.partitions.get(p).is_none_or(Option::is_none))
            .map(|p| (p, now))
            .collect();
    }

    /// Records that `partition` delivered an event at `event_time_ms`.
    pub fn observe(&mut self, partition: usize, event_time_ms: i64, now: Instant) {
        if !self.delivering {
            self.delivering = true;
            for (_, since) in &mut self.awaited {
                *since = now;
            }
            for p in self.partitions.iter_mut().flatten() {
                p.last_seen = now;
            }
        }
        self.record(partition, event_time_ms, now);
    }

    /// [`observe`](Self::observe) one record, then recompute the watermark
    /// if the record could have moved it (it raised its partition's largest
    /// event time); returns the watermark when it advanced. Called for every
    /// record, so the watermark a record is judged against is the one the
    /// records before it left, whatever the batch size.
    pub fn observe_record(
        &mut self,
        partition: usize,
        event_time_ms: i64,
        now: Instant,
    ) -> Option<i64> {
        let raised = self
            .partitions
            .get(partition)
            .copied()
            .flatten()
            .is_none_or(|p| event_time_ms > p.max_event_time);
        self.observe(partition, event_time_ms, now);
        if raised {
            self.advance(now)
        } else {
            None
        }
    }

    fn record(&mut self, partition: usize, event_time_ms: i64, now: Instant) {
        self.awaited.retain(|(p, _)| *p != partition);
        if self.partitions.len() <= partition {
            self.partitions.resize(partition + 1, None);
        }
        let state = self.partitions[partition].get_or_insert(PartitionState {
            max_event_time: event_time_ms,
            last_seen: now,
        });
        state.max_event_time = state.max_event_time.max(event_time_ms);
        state.last_seen = now;
    }

    /// Recomputes the watermark; returns it when it advanced.
    pub fn advance(&mut self, now: Instant) -> Option<i64> {
        let wait = self.idle_timeout.unwrap_or(FIRST_RECORD_WAIT);
        if !self.delivering && !self.awaited.is_empty() {
            return None;
        }
        if self
            .awaited
            .iter()
            .any(|(_, since)| now.duration_since(*since) < wait)
        {
            return None;
        }
        let active = self
            .partitions
            .iter()
            .flatten()
            .filter(|p| match self.idle_timeout {
                Some(timeout) => now.duration_since(p.last_seen) < timeout,
                None => true,
            });
        let candidate = active
            .map(|p| p.max_event_time)
            .min()?
            .saturating_sub(self.lag_ms);
        if self.current.is_none_or(|c| candidate > c) {
            self.current = Some(candidate);
            return self.current;
        }
        None
    }

    /// The watermark and each partition's largest event time, for a snapshot.
    pub fn positions(&self) -> (Option<i64>, Vec<(usize, i64)>) {
        let partitions = self
            .partitions
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.map(|p| (i, p.max_event_time)))
            .collect();
        (self.current, partitions)
    }

    /// Restores [`positions`](Self::positions); restored partitions count
    /// as seen when the first record after the restore arrives.
    pub fn restore(&mut self, current: Option<i64>, partitions: &[(usize, i64)], now: Instant) {
        self.current = current;
        for &(partition, max) in partitions {
            self.record(partition, max, now);
        }
        self.delivering = false;
    }

    /// The current watermark, if any event has been seen.
    pub fn current(&self) -> Option<i64> {
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_for_partitions_starts_with_the_first_record() {
        let start = Instant::now();
        let mut w = WatermarkTracker::new(Duration::ZERO, None);
        w.expect_partitions(&[0, 1], start);
        // the source took longer than the wait to deliver anything at all
        let first = start + FIRST_RECORD_WAIT * 2;
        w.observe(0, 5_000, first);
        assert_eq!(
            w.advance(first),
            None,
            "partition 1 has just started to be awaited"
        );
        let later = first + FIRST_RECORD_WAIT;
        assert_eq!(w.advance(later), Some(5_000));
    }

    #[test]
    fn a_restored_tracker_measures_idleness_from_the_first_record_after_restore() {
        let start = Instant::now();
        let mut w = WatermarkTracker::new(Duration::ZERO, Some(Duration::from_secs(5)));
        w.restore(Some(1_000), &[(0, 1_000), (1, 9_000)], start);
        w.expect_partitions(&[0, 1, 2], start);
        let first = start + Duration::from_secs(30);
        w.observe(1, 10_000, first);
        // partitions 0 and 2 are not idle: nothing was delivered for 30 s
        assert_eq!(w.advance(first), None);
        w.observe(2, 2_000, first);
        // partition 0 (restored at 1,000) still holds it where it was
        assert_eq!(w.advance(first), None);
        w.observe(0, 3_000, first);
        assert_eq!(w.advance(first), Some(2_000));
    }

    #[test]
    fn each_record_moves_the_watermark_it_raises() {
        let now = Instant::now();
        let mut w = WatermarkTracker::new(Duration::from_millis(10), None);
        assert_eq!(w.observe_record(0, 100, now), Some(90));
        assert_eq!(w.observe_record(0, 50, now), None, "behind: nothing moves");
        assert_eq!(w.current(), Some(90));
        assert_eq!(w.observe_record(0, 130, now), Some(120));
        // a second partition holds it back from its first record on
        assert_eq!(w.observe_record(1, 60, now), None);
        assert_eq!(w.observe_record(0, 200, now), None);
        assert_eq!(w.observe_record(1, 300, now), Some(190));
    }

    #[test]
    fn minimum_over_partitions_minus_the_bound() {
        let now = Instant::now();
        let mut w = WatermarkTracker::new(Duration::from_millis(10), None);
        w.observe(0, 100, now);
        assert_eq!(w.advance(now), Some(90));
        w.observe(1, 50, now);
        // partition 1 is behind, but the watermark never goes back
        assert_eq!(w.advance(now), None);
        assert_eq!(w.current(), Some(90));
        w.observe(1, 300, now);
        w.observe(0, 200, now);
        assert_eq!(w.advance(now), Some(190));
    }

    #[test]
    fn a_partition_another_member_now_reads_stops_holding_the_watermark() {
        let start = Instant::now();
        let mut w = WatermarkTracker::new(Duration::ZERO, None);
        w.expect_partitions(&[0, 1, 2, 3], start);
        w.observe(0, 5_000, start);
        w.observe(1, 9_000, start);
        // 2 and 3 went to another member before delivering here, and 0
        // (behind) after: only 1 is this member's now
        w.expect_partitions(&[1], start);
        assert_eq!(w.advance(start), Some(9_000));
        // a partition assigned here later is awaited from then on
        w.expect_partitions(&[1, 2], start);
        w.observe(1, 12_000, start);
        assert_eq!(w.advance(start), None);
        assert_eq!(w.advance(start + FIRST_RECORD_WAIT), Some(12_000));
    }

    #[test]
    fn slow_partition_holds_the_watermark() {
        let now = Instant::now();
        let mut w = WatermarkTracker::new(Duration::ZERO, None);
        w.observe(0, 10, now);
        w.observe(1, 10, now);
        w.advance(now);
        w.observe(0, 1000, now);
        assert_eq!(w.advance(now), None, "partition 1 is still at 10");
        w.observe(1, 500, now);
        assert_eq!(w.advance(now), Some(500));
    }

    #[test]
    fn announced_partitions_hold_the_watermark_until_they_deliver() {
        let start = Instant::now();
        let mut w = WatermarkTracker::new(Duration::ZERO, Some(Duration::from_secs(5)));
        w.expect_partitions(&[0, 1, 2], start);
        w.observe(0, 100, start);
        w.observe(2, 100, start);
        assert_eq!(w.advance(start), None, "partition 1 has not delivered yet");
        w.observe(1, 40, start);
        assert_eq!(w.advance(start), Some(40));
        // a partition that never delivers stops waiting after the idle timeout
        let mut w = WatermarkTracker::new(Duration::ZERO, Some(Duration::from_secs(5)));
        w.expect_partitions(&[0, 1], start);
        w.observe(0, 100, start);
        assert_eq!(w.advance(start + Duration::from_secs(1)), None);
        let later = start + Duration::from_secs(6);
        w.observe(0, 200, later);
        assert_eq!(w.advance(later), Some(200));
    }

    #[test]
    fn idle_partition_stops_holding_the_watermark() {
        let start = Instant::now();
        let mut w = WatermarkTracker::new(Duration::ZERO, Some(Duration::from_secs(5)));
        w.observe(0, 10, start);
        w.observe(1, 10, start);
        w.advance(start);
        let later = start + Duration::from_secs(6);
        w.observe(0, 1000, later);
        assert_eq!(
            w.advance(later),
            Some(1000),
            "partition 1 has been idle for 6s"
        );
        // it becomes active again and no longer lowers the watermark
        w.observe(1, 20, later);
        assert_eq!(w.advance(later), None);
        assert_eq!(w.current(), Some(1000));
    }
}
