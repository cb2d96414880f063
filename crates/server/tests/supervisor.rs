//! A failing application is restarted with backoff until the circuit
//! breaker opens; then it waits out the recovery timeout.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use velostream_engine::Job;
use velostream_server::config::schema::CircuitBreaker;
use velostream_server::config::values::ConfigDuration;
use velostream_server::metrics::ServiceMetrics;
use velostream_server::supervisor::{AppStatus, Launcher, Supervisor};

struct Failing(Arc<AtomicUsize>);

impl Launcher for Failing {
    fn launch(&self, _name: &str, _path: &Path) -> Result<Vec<Job>, String> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Err("the broker is gone".into())
    }
}

#[test]
fn the_breaker_opens_after_consecutive_failures_and_holds_restarts() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let metrics = Arc::new(ServiceMetrics::new().unwrap());
    let supervisor = Supervisor::new(
        Arc::new(Failing(attempts.clone())),
        metrics.clone(),
        Some(CircuitBreaker {
            failure_threshold: 2,
            recovery_timeout: ConfigDuration(Duration::from_secs(60)),
            failure_rate_threshold: 100.0,
            min_calls_in_window: 10,
        }),
    );
    supervisor.deploy("bad", Path::new("bad.sql")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = supervisor.applications()[0].2.clone();
        if matches!(status, AppStatus::BreakerOpen { .. }) {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the breaker never opened: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(matches!(
        status,
        AppStatus::BreakerOpen {
            retry_in_ms: 60_000,
            ..
        }
    ));
    assert_eq!(
        attempts.load(Ordering::Relaxed),
        2,
        "one backoff restart, then open"
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(attempts.load(Ordering::Relaxed), 2, "no restart while open");
    let text = metrics.render(&[]);
    assert!(
        text.contains(r#"velostream_circuit_breaker_trips{job="bad"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"velostream_errors_total{job="bad"} 2"#),
        "{text}"
    );
    // stopping does not wait for the recovery timeout
    let started = Instant::now();
    supervisor.stop("bad", Duration::from_secs(5)).unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
}
