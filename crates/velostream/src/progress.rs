//! The progress line on stderr during `velostream run`: records in/out and
//! the current rate, refreshed every second on a terminal, every ten
//! seconds otherwise.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use velostream_engine::JobMetrics;

pub struct Progress {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Progress {
    pub fn start(metrics: Vec<Arc<JobMetrics>>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let tty = std::io::stderr().is_terminal();
            let every = if tty {
                Duration::from_secs(1)
            } else {
                Duration::from_secs(10)
            };
            let started = Instant::now();
            let mut last = (Instant::now(), 0u64);
            let mut printed = false;
            while !flag.load(Ordering::Relaxed) {
                // woken at once by `stop`, so a finished run exits without waiting here
                std::thread::park_timeout(Duration::from_millis(100));
                if flag.load(Ordering::Relaxed) || last.0.elapsed() < every {
                    continue;
                }
                let records: u64 = metrics.iter().map(|m| JobMetrics::get(&m.records_in)).sum();
                let out: u64 = metrics
                    .iter()
                    .map(|m| JobMetrics::get(&m.records_out))
                    .sum();
                let rate = (records - last.1) as f64 / last.0.elapsed().as_secs_f64();
                last = (Instant::now(), records);
                let windows: u64 = metrics
                    .iter()
                    .map(|m| JobMetrics::get(&m.open_windows))
                    .sum();
                let keys: u64 = metrics.iter().map(|m| JobMetrics::get(&m.state_keys)).sum();
                let state = if windows + keys > 0 {
                    format!(", state: {windows} open windows, {keys} keys")
                } else {
                    String::new()
                };
                let line = format!(
                    "[{:>6.1}s] {records} records in, {out} out, {} records/s{state}",
                    started.elapsed().as_secs_f64(),
                    human(rate)
                );
                if tty {
                    eprint!("\r{line}\x1b[K");
                } else {
                    eprintln!("{line}");
                }
                let _ = std::io::stderr().flush();
                printed = true;
            }
            if printed && tty {
                eprintln!();
            }
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

/// `1234567.0` → `1.23 M`.
pub fn human(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.2} M", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.1} K", value / 1e3)
    } else {
        format!("{value:.0}")
    }
}
