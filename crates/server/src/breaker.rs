//! The circuit breaker of `velostream.circuit_breaker`: when an
//! application keeps failing — `failure_threshold` failures in a row, or
//! at least `failure_rate_threshold` percent of its last
//! `min_calls_in_window` attempts — the breaker opens and the application
//! is not started again for `recovery_timeout`. The next attempt is a trial
//! (half-open): a failure opens the breaker again at once, a success closes it.

use std::collections::VecDeque;
use std::time::Duration;

use crate::config::schema::CircuitBreaker;

pub struct Breaker {
    config: Option<CircuitBreaker>,
    consecutive: u32,
    /// Outcomes of the recent attempts, `true` for a failure.
    window: VecDeque<bool>,
    half_open: bool,
}

impl Breaker {
    pub fn new(config: Option<CircuitBreaker>) -> Self {
        Self {
            config,
            consecutive: 0,
            window: VecDeque::new(),
            half_open: false,
        }
    }

    /// Records an attempt; returns how long to pause when the breaker opens.
    pub fn record(&mut self, failed: bool) -> Option<Duration> {
        let config = self.config.clone()?;
        if !failed {
            self.consecutive = 0;
            self.half_open = false;
            self.push(false, &config);
            return None;
        }
        self.consecutive += 1;
        self.push(true, &config);
        let calls = self.window.len() as u32;
        let failures = self.window.iter().filter(|f| **f).count() as f64;
        let rate_tripped = calls >= config.min_calls_in_window.max(1)
            && 100.0 * failures / calls as f64 >= config.failure_rate_threshold;
        if self.half_open || self.consecutive >= config.failure_threshold.max(1) || rate_tripped {
            self.consecutive = 0;
            self.window.clear();
            self.half_open = true;
            return Some(config.recovery_timeout.0);
        }
        None
    }

    /// True after the breaker opened and until an attempt succeeds: the
    /// next attempt is a trial.
    pub fn is_half_open(&self) -> bool {
        self.half_open
    }

    fn push(&mut self, failed: bool, config: &CircuitBreaker) {
        // the window holds the last `min_calls_in_window` outcomes
        self.window.push_back(failed);
        while self.window.len() > config.min_calls_in_window.max(1) as usize {
            self.window.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::values::ConfigDuration;

    fn breaker(threshold: u32, rate: f64, calls: u32) -> Breaker {
        Breaker::new(Some(CircuitBreaker {
            failure_threshold: threshold,
            recovery_timeout: ConfigDuration(Duration::from_secs(60)),
            failure_rate_threshold: rate,
            min_calls_in_window: calls,
        }))
    }

    #[test]
    fn opens_after_consecutive_failures_and_reopens_from_half_open() {
        let mut b = breaker(3, 100.0, 10);
        assert_eq!(b.record(true), None);
        assert_eq!(b.record(true), None);
        assert_eq!(b.record(true), Some(Duration::from_secs(60)));
        // the trial after the pause fails: open again at once
        assert_eq!(b.record(true), Some(Duration::from_secs(60)));
        // a success closes it
        assert_eq!(b.record(false), None);
        assert_eq!(b.record(true), None);
    }

    #[test]
    fn opens_on_the_failure_rate_of_the_window() {
        let mut b = breaker(100, 50.0, 4);
        assert_eq!(b.record(false), None);
        assert_eq!(b.record(true), None);
        assert_eq!(b.record(false), None);
        // 2 of the last 4 failed: 50%
        assert_eq!(b.record(true), Some(Duration::from_secs(60)));
    }

    #[test]
    fn without_configuration_it_never_opens() {
        let mut b = Breaker::new(None);
        assert!((0..100).all(|_| b.record(true).is_none()));
    }
}
