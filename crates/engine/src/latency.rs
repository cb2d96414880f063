//! Latency histograms a job fills as it runs and the metrics endpoint and
//! jobs API read: fixed buckets of atomic counters, so an observation is a
//! few relaxed additions (no lock, no allocation) and a long-running job
//! keeps observing for its whole life.
//!
//! The buckets are those the Prometheus families export; quantiles for
//! the jobs API interpolate inside a bucket the way Prometheus's
//! `histogram_quantile` does, so both report the same numbers.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the buckets, in milliseconds (the last bucket, above
/// every bound, is implicit).
pub const LATENCY_BUCKETS_MS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
    10000.0, 30000.0, 60000.0,
];

/// Observations per bucket, with their count and sum.
#[derive(Debug)]
pub struct LatencyHistogram {
    /// Non-cumulative: `buckets[i]` counts observations in
    /// `(bound[i-1], bound[i]]`; the last one those above every bound.
    buckets: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
    count: AtomicU64,
    /// Sum of the observations in microseconds (integral, so atomic).
    sum_us: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }
}

/// A consistent-enough copy of a histogram (each counter read once).
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySnapshot {
    /// Cumulative counts per bound of [`LATENCY_BUCKETS_MS`].
    pub cumulative: Vec<u64>,
    pub count: u64,
    pub sum_ms: f64,
}

impl LatencyHistogram {
    /// Records one latency of `micros` microseconds.
    pub fn observe_us(&self, micros: u64) {
        let ms = micros as f64 / 1000.0;
        let bucket = LATENCY_BUCKETS_MS.partition_point(|&bound| bound < ms);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(micros, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LatencySnapshot {
        let mut running = 0;
        let mut cumulative = Vec::with_capacity(LATENCY_BUCKETS_MS.len());
        for bucket in &self.buckets[..LATENCY_BUCKETS_MS.len()] {
            running += bucket.load(Ordering::Relaxed);
            cumulative.push(running);
        }
        let above = self.buckets[LATENCY_BUCKETS_MS.len()].load(Ordering::Relaxed);
        LatencySnapshot {
            cumulative,
            // the count agrees with the buckets even while observations race
            count: running + above,
            sum_ms: self.sum_us.load(Ordering::Relaxed) as f64 / 1000.0,
        }
    }

    /// The `q` quantile (0..=1) in milliseconds; see
    /// [`LatencySnapshot::quantile_ms`].
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        self.snapshot().quantile_ms(q)
    }
}

impl LatencySnapshot {
    /// What was observed after `earlier` (a snapshot of the same histogram).
    pub fn since(&self, earlier: &LatencySnapshot) -> LatencySnapshot {
        LatencySnapshot {
            cumulative: self
                .cumulative
                .iter()
                .zip(&earlier.cumulative)
                .map(|(now, then)| now.saturating_sub(*then))
                .collect(),
            count: self.count.saturating_sub(earlier.count),
            sum_ms: (self.sum_ms - earlier.sum_ms).max(0.0),
        }
    }

    /// The `q` quantile (0..=1) in milliseconds, interpolated linearly
    /// inside its bucket; `None` before the first observation. Above the
    /// last bound it is that bound (as Prometheus answers).
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * self.count as f64;
        let mut below = 0u64;
        let mut lower = 0.0;
        for (i, &upto) in self.cumulative.iter().enumerate() {
            let upper = LATENCY_BUCKETS_MS[i];
            if upto as f64 >= rank && upto > below {
                let within = (rank - below as f64) / (upto - below) as f64;
                return Some(lower + (upper - lower) * within);
            }
            below = upto;
            lower = upper;
        }
        LATENCY_BUCKETS_MS.last().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_upper_bound_inclusive_and_cumulative() {
        let h = LatencyHistogram::default();
        h.observe_us(1_000); // exactly 1 ms: the 1.0 bucket
        h.observe_us(1_001);
        h.observe_us(90_000_000); // above every bound
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        let at =
            |bound: f64| s.cumulative[LATENCY_BUCKETS_MS.iter().position(|&b| b == bound).unwrap()];
        assert_eq!(at(0.5), 0);
        assert_eq!(at(1.0), 1);
        assert_eq!(at(2.5), 2);
        assert_eq!(at(60000.0), 2);
        assert!((s.sum_ms - 90_002.001).abs() < 1e-6);
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let h = LatencyHistogram::default();
        assert_eq!(h.quantile_ms(0.5), None);
        // 100 observations of 3 ms: all in (2.5, 5]
        for _ in 0..100 {
            h.observe_us(3_000);
        }
        let p50 = h.quantile_ms(0.5).unwrap();
        assert!((p50 - 3.75).abs() < 1e-9, "{p50}");
        assert!((h.quantile_ms(0.99).unwrap() - 4.975).abs() < 1e-9);
        // one slow outlier moves p99 into its bucket only past its rank
        h.observe_us(40_000_000);
        assert!(h.quantile_ms(0.99).unwrap() <= 5.0);
        assert_eq!(h.quantile_ms(1.0), Some(60000.0));
    }

    #[test]
    fn a_snapshot_difference_holds_only_the_later_observations() {
        let h = LatencyHistogram::default();
        h.observe_us(4_000_000); // a slow start
        let before = h.snapshot();
        for _ in 0..10 {
            h.observe_us(3_000);
        }
        let later = h.snapshot().since(&before);
        assert_eq!(later.count, 10);
        assert!(later.quantile_ms(1.0).unwrap() <= 5.0);
        assert!((later.sum_ms - 30.0).abs() < 1e-9);
        assert!(h.quantile_ms(1.0).unwrap() > 2500.0);
    }
}
