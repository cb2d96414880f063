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
use velostream_server::supervisor::{AppStatus, LaunchError, Launcher, Supervisor};

struct Failing(Arc<AtomicUsize>);

impl Launcher for Failing {
    fn launch(&self, _name: &str, _path: &Path) -> Result<Vec<Job>, LaunchError> {
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
        text.contains(r#"velostream_errors_total{job="bad",kind="job_failed"} 2"#),
        "{text}"
    );
    // stopping does not wait for the recovery timeout
    let started = Instant::now();
    supervisor.stop("bad", Duration::from_secs(5)).unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// Fails the way a misspelt property fails: a configuration error.
struct Misconfigured(Arc<AtomicUsize>);

impl Launcher for Misconfigured {
    fn launch(&self, _name: &str, _path: &Path) -> Result<Vec<Job>, LaunchError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Err(LaunchError {
            kind: velostream_engine::ErrorKind::Configuration,
            message: "trades: unknown property 'pth' for file_source".into(),
        })
    }
}

/// A configuration error is reported once and not retried: running the
/// same application again would fail the same way.
#[test]
fn a_configuration_error_fails_the_application_once() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let metrics = Arc::new(ServiceMetrics::new().unwrap());
    let supervisor = Supervisor::new(
        Arc::new(Misconfigured(attempts.clone())),
        metrics.clone(),
        None,
    );
    supervisor.deploy("typo", Path::new("typo.sql")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = supervisor.applications()[0].2.clone();
        if matches!(status, AppStatus::Failed { .. }) {
            break status;
        }
        assert!(Instant::now() < deadline, "never failed: {status:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let AppStatus::Failed {
        error,
        restarts: 1,
        retrying: false,
    } = status
    else {
        panic!("retrying: {status:?}")
    };
    assert!(error.contains("unknown property 'pth'"), "{error}");
    // a retry would have come after 1 s of backoff
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(attempts.load(Ordering::Relaxed), 1, "not retried");
    let text = metrics.render(&[]);
    assert!(
        text.contains("velostream_retries_total{job=\"typo\"} 0\n"),
        "{text}"
    );
    assert!(
        text.contains(r#"velostream_errors_total{job="typo",kind="job_failed"} 1"#),
        "{text}"
    );
}

/// An unavailable dependency is retried with backoff and each retry counted.
#[test]
fn an_unavailable_dependency_is_retried_and_counted() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let metrics = Arc::new(ServiceMetrics::new().unwrap());
    let supervisor = Supervisor::new(Arc::new(Failing(attempts.clone())), metrics.clone(), None);
    supervisor.deploy("down", Path::new("down.sql")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while attempts.load(Ordering::Relaxed) < 2 {
        assert!(Instant::now() < deadline, "not retried");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(matches!(
        supervisor.applications()[0].2,
        AppStatus::Failed { .. } | AppStatus::Running | AppStatus::Starting
    ));
    let text = metrics.render(&[]);
    assert!(
        text.contains(r#"velostream_retries_total{job="down"}"#),
        "{text}"
    );
    supervisor.stop("down", Duration::from_secs(5)).unwrap();
}

/// Launches by application name: `panics` panics while planning, `slow`
/// takes 2 s and then fails, `done` has nothing to run (finishes at once),
/// anything else fails.
struct ByName(Arc<std::sync::Mutex<Vec<String>>>);

impl Launcher for ByName {
    fn launch(&self, name: &str, _path: &Path) -> Result<Vec<Job>, LaunchError> {
        self.0.lock().unwrap().push(name.to_string());
        match name {
            "panics" => panic!("an operator was built from a plan it does not know"),
            "slow" => {
                std::thread::sleep(Duration::from_secs(2));
                Err("slow and failing".into())
            }
            "healthy" => {
                std::thread::sleep(Duration::from_millis(400));
                Err("failed after a healthy run".into())
            }
            "done" => Ok(Vec::new()),
            _ => Err("the broker is gone".into()),
        }
    }
}

fn by_name(breaker: Option<CircuitBreaker>) -> (Supervisor, Arc<std::sync::Mutex<Vec<String>>>) {
    let launches = Arc::new(std::sync::Mutex::new(Vec::new()));
    let supervisor = Supervisor::new(
        Arc::new(ByName(launches.clone())),
        Arc::new(ServiceMetrics::new().unwrap()),
        breaker,
    );
    (supervisor, launches)
}

fn status_of(supervisor: &Supervisor, name: &str) -> AppStatus {
    supervisor
        .applications()
        .into_iter()
        .find(|(n, ..)| n == name)
        .map(|(_, _, s, _)| s)
        .unwrap()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_panic_while_launching_is_the_applications_failure_and_it_is_retried() {
    let (supervisor, launches) = by_name(None);
    supervisor.deploy("panics", Path::new("p.sql")).unwrap();
    wait_until("the panic was never reported", || {
        matches!(status_of(&supervisor, "panics"), AppStatus::Failed { .. })
    });
    let AppStatus::Failed { error, .. } = status_of(&supervisor, "panics") else {
        unreachable!()
    };
    assert!(
        error.contains("launching panicked: an operator was built from a plan it does not know"),
        "{error}"
    );
    wait_until("no retry after the panic", || {
        launches.lock().unwrap().len() >= 2
    });
    supervisor.stop("panics", Duration::from_secs(5)).unwrap();
}

#[test]
fn a_failover_restarts_only_the_applications_that_run() {
    let (supervisor, launches) = by_name(None);
    supervisor.deploy("done", Path::new("done.sql")).unwrap();
    supervisor
        .deploy("deleted", Path::new("deleted.sql"))
        .unwrap();
    supervisor
        .deploy("retrying", Path::new("retrying.sql"))
        .unwrap();
    wait_until("done never finished", || {
        status_of(&supervisor, "done") == AppStatus::Finished
    });
    wait_until("retrying never failed", || {
        matches!(status_of(&supervisor, "retrying"), AppStatus::Failed { .. })
    });
    supervisor.stop("deleted", Duration::from_secs(5)).unwrap();
    assert_eq!(status_of(&supervisor, "deleted"), AppStatus::Stopped);
    let count = |name: &str| {
        launches
            .lock()
            .unwrap()
            .iter()
            .filter(|n| *n == name)
            .count()
    };
    let before = (count("done"), count("deleted"), count("retrying"));
    supervisor.restart_all(Duration::from_secs(5)).unwrap();
    wait_until("the running application was not restarted", || {
        count("retrying") > before.2
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!((count("done"), count("deleted")), (before.0, before.1));
    assert_eq!(status_of(&supervisor, "done"), AppStatus::Finished);
    assert_eq!(status_of(&supervisor, "deleted"), AppStatus::Stopped);
    supervisor.drain(Duration::from_secs(5)).unwrap();
}

#[test]
fn a_stop_that_times_out_leaves_no_room_for_a_second_instance() {
    let (supervisor, launches) = by_name(None);
    supervisor.deploy("slow", Path::new("slow.sql")).unwrap();
    wait_until("slow never launched", || {
        !launches.lock().unwrap().is_empty()
    });
    let e = supervisor
        .stop("slow", Duration::from_millis(100))
        .unwrap_err();
    assert!(e.contains("did not stop within"), "{e}");
    // the first instance still runs: a deployment under its name is refused
    assert!(supervisor.is_running("slow"));
    let e = supervisor
        .deploy("slow", Path::new("slow.sql"))
        .unwrap_err();
    assert!(e.contains("is running"), "{e}");
    // concurrent stop and deploy of one application take turns
    let both = std::thread::scope(|scope| {
        let stopper = scope.spawn(|| {
            supervisor.one_at_a_time("slow", || supervisor.stop("slow", Duration::from_secs(5)))
        });
        let deployer = scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(50));
            supervisor.one_at_a_time("slow", || {
                let running = supervisor.is_running("slow");
                (running, supervisor.deploy("slow", Path::new("slow.sql")))
            })
        });
        (stopper.join().unwrap(), deployer.join().unwrap())
    });
    assert!(both.0.is_ok(), "{:?}", both.0);
    assert!(!both.1 .0, "the deployment saw the stopped instance");
    assert!(both.1 .1.is_ok());
    wait_until("the new instance never launched", || {
        launches.lock().unwrap().len() == 2
    });
    supervisor.drain(Duration::from_secs(5)).ok();
}

#[test]
fn an_application_that_ran_well_for_a_while_does_not_trip_the_breaker() {
    let (supervisor, launches) = by_name(Some(CircuitBreaker {
        failure_threshold: 2,
        recovery_timeout: ConfigDuration(Duration::from_millis(300)),
        failure_rate_threshold: 100.0,
        min_calls_in_window: 10,
    }));
    supervisor.deploy("healthy", Path::new("h.sql")).unwrap();
    wait_until("too few attempts", || launches.lock().unwrap().len() >= 3);
    let status = status_of(&supervisor, "healthy");
    assert!(matches!(status, AppStatus::Failed { .. }), "{status:?}");
    supervisor.drain(Duration::from_secs(5)).ok();
}
