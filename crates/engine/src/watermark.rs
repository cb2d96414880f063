//! Watermark tracking across the partitions of a source.
//!
//! Each partition's watermark is the largest event time it has delivered
//! minus the allowed out-of-orderness; the source's watermark is the
//! minimum over its partitions, so one slow partition holds windows open
//! rather than having its records dropped as late. A partition that has
//! delivered nothing for `idle_timeout` (processing time) stops holding the
//! watermark back until it delivers again.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct PartitionState {
    max_event_time: i64,
    last_seen: Instant,
}

#[derive(Debug)]
pub struct WatermarkTracker {
    lag_ms: i64,
    idle_timeout: Option<Duration>,
    partitions: Vec<Option<PartitionState>>,
    /// The watermark never goes back.
    current: Option<i64>,
}

impl WatermarkTracker {
    pub fn new(lag: Duration, idle_timeout: Option<Duration>) -> Self {
        Self {
            lag_ms: lag.as_millis() as i64,
            idle_timeout,
            partitions: Vec::new(),
            current: None,
        }
    }

    /// Records that `partition` delivered an event at `event_time_ms`.
    pub fn observe(&mut self, partition: usize, event_time_ms: i64, now: Instant) {
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

    /// Restores [`positions`](Self::positions); restored partitions count as just seen.
    pub fn restore(&mut self, current: Option<i64>, partitions: &[(usize, i64)], now: Instant) {
        self.current = current;
        for &(partition, max) in partitions {
            self.observe(partition, max, now);
        }
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
