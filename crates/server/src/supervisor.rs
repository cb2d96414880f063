//! Runs the configured applications as supervised jobs: an application
//! whose job fails is reported and started again with exponential backoff
//! (1 s doubling to 30 s) while the others keep running — unless the
//! failure is its configuration's (an unknown key, an SQL error), which
//! running it again cannot fix: then it is reported once and left failed,
//! not retrying, until it is deployed again. Holding (for a state copy),
//! resuming and draining act on every job at its next batch boundary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use velostream_engine::{ErrorKind, Hold, Job, JobMetrics};

use crate::breaker::Breaker;
use crate::config::schema::CircuitBreaker;
use crate::metrics::ServiceMetrics;

/// Why an application could not be launched or run, and what kind of
/// failure it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchError {
    pub kind: ErrorKind,
    pub message: String,
}

impl From<String> for LaunchError {
    /// A failure of unknown kind: retried, as one that may pass.
    fn from(message: String) -> Self {
        Self {
            kind: ErrorKind::Unavailable,
            message,
        }
    }
}

impl From<&str> for LaunchError {
    fn from(message: &str) -> Self {
        message.to_string().into()
    }
}

/// Builds the jobs of an SQL application (implemented by the binary).
pub trait Launcher: Send + Sync + 'static {
    /// Builds the jobs of application `name` from the SQL file at `path`.
    fn launch(&self, name: &str, path: &Path) -> Result<Vec<Job>, LaunchError>;

    /// Plans and checks application `name` without running it (the
    /// checks of `launch`, nothing opened for writing): a deployment is
    /// refused with the reason instead of failing after it was accepted.
    fn validate(&self, _name: &str, _path: &Path) -> Result<(), String> {
        Ok(())
    }

    /// Checks the external dependencies the applications use (the Kafka
    /// cluster, ...): (name, outcome) each.
    fn probe(&self) -> Vec<(String, Result<(), String>)> {
        Vec::new()
    }

    /// Points applications launched from now on (and the probe) at this
    /// Kafka cluster (`regions` failover).
    fn use_kafka(&self, _bootstrap_servers: &str) {}

    /// Points applications launched from now on (and the probe) at this
    /// database (`host:port`, a `regions` failover).
    fn use_database(&self, _endpoint: &str) {}
}

/// What an application is doing.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AppStatus {
    Starting,
    Running,
    /// Its bounded inputs ended.
    Finished,
    /// Failed; restarted after the backoff while `retrying` (not when its
    /// configuration is wrong, which no restart fixes).
    Failed {
        error: String,
        restarts: u32,
        retrying: bool,
    },
    /// Failed too often: not started again before the recovery timeout.
    BreakerOpen {
        error: String,
        retry_in_ms: u64,
    },
    Stopped,
}

/// A running job as the API sees it.
#[derive(Clone)]
pub struct JobView {
    pub name: String,
    pub metrics: Arc<JobMetrics>,
    cancel: Arc<AtomicBool>,
    hold: Arc<Hold>,
}

struct App {
    path: PathBuf,
    status: Arc<Mutex<AppStatus>>,
    jobs: Arc<Mutex<Vec<JobView>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl App {
    /// Asks the application's supervision and its jobs to stop (at their
    /// next batch boundary: results flushed, positions committed).
    fn signal_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        for job in self.jobs.lock().map(|j| j.clone()).unwrap_or_default() {
            job.cancel.store(true, Ordering::Relaxed);
        }
    }
}

pub struct Supervisor {
    launcher: Arc<dyn Launcher>,
    metrics: Arc<ServiceMetrics>,
    breaker: Option<CircuitBreaker>,
    apps: Mutex<BTreeMap<String, App>>,
    held: AtomicBool,
    /// One lock per application name, held across a deploy, a stop or a
    /// restart, so two of them never interleave for one application.
    lifecycles: Mutex<BTreeMap<String, Arc<Mutex<()>>>>,
}

impl Supervisor {
    pub fn new(
        launcher: Arc<dyn Launcher>,
        metrics: Arc<ServiceMetrics>,
        breaker: Option<CircuitBreaker>,
    ) -> Self {
        Self {
            launcher,
            metrics,
            breaker,
            apps: Mutex::new(BTreeMap::new()),
            held: AtomicBool::new(false),
            lifecycles: Mutex::new(BTreeMap::new()),
        }
    }

    /// Runs `f` while holding application `name`'s lifecycle lock: deploys,
    /// stops and restarts of one application happen one at a time (a
    /// deployment through the API takes it around its check-store-start).
    pub fn one_at_a_time<T>(&self, name: &str, f: impl FnOnce() -> T) -> T {
        let lock = self
            .lifecycles
            .lock()
            .map(|mut l| l.entry(name.to_string()).or_default().clone())
            .unwrap_or_default();
        let _held = lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f()
    }

    /// Starts the application at `path` under `name`.
    pub fn deploy(&self, name: &str, path: &Path) -> Result<(), String> {
        let mut apps = self.apps.lock().map_err(|_| "supervisor lock poisoned")?;
        if apps
            .get(name)
            .is_some_and(|a| a.thread.as_ref().is_some_and(|t| !t.is_finished()))
        {
            return Err(format!("an application named '{name}' is running"));
        }
        let app = App {
            path: path.to_path_buf(),
            status: Arc::new(Mutex::new(AppStatus::Starting)),
            jobs: Arc::default(),
            stop: Arc::default(),
            thread: None,
        };
        let thread = {
            let run = AppRun {
                name: name.to_string(),
                path: path.to_path_buf(),
                launcher: self.launcher.clone(),
                metrics: self.metrics.clone(),
                status: app.status.clone(),
                views: app.jobs.clone(),
                stop: app.stop.clone(),
                breaker: Breaker::new(self.breaker.clone()),
                healthy_run: self
                    .breaker
                    .as_ref()
                    .map_or(HEALTHY_RUN, |b| b.recovery_timeout.0),
            };
            std::thread::Builder::new()
                .name(format!("app-{name}"))
                .spawn(move || run.supervise())
                .map_err(|e| e.to_string())?
        };
        apps.insert(
            name.to_string(),
            App {
                thread: Some(thread),
                ..app
            },
        );
        Ok(())
    }

    /// Checks application `name` at `path` as [`Launcher::validate`] does.
    pub fn validate(&self, name: &str, path: &Path) -> Result<(), String> {
        self.launcher
            .validate(name, path)
            .map_err(|e| velostream_sql::secrets::mask(&e))
    }

    /// How many applications the service holds (running or not).
    pub fn count(&self) -> usize {
        self.apps.lock().map_or(0, |apps| apps.len())
    }

    /// Whether an application of this name is known (running or not).
    pub fn contains(&self, name: &str) -> bool {
        self.apps.lock().is_ok_and(|apps| apps.contains_key(name))
    }

    /// True while application `name` has a running thread.
    pub fn is_running(&self, name: &str) -> bool {
        self.apps.lock().is_ok_and(|apps| {
            apps.get(name)
                .is_some_and(|a| a.thread.as_ref().is_some_and(|t| !t.is_finished()))
        })
    }

    /// Stops application `name` (its jobs flush and commit first).
    pub fn stop(&self, name: &str, timeout: Duration) -> Result<(), String> {
        let thread = {
            let mut apps = self.apps.lock().map_err(|_| "supervisor lock poisoned")?;
            let app = apps
                .get_mut(name)
                .ok_or_else(|| format!("no application named '{name}'"))?;
            app.signal_stop();
            app.thread.take()
        };
        if let Some(thread) = thread {
            if let Err((thread, e)) = join_within(thread, timeout) {
                // still running: it stays this application's, so nothing
                // starts a second instance beside it
                if let Ok(mut apps) = self.apps.lock() {
                    if let Some(app) = apps.get_mut(name) {
                        app.thread = Some(thread);
                    }
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Stops every application: intake stops, in-flight batches finish,
    /// sinks flush, offsets commit.
    pub fn drain(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        // every application starts stopping at once; then each is awaited
        let names: Vec<String> = self
            .apps
            .lock()
            .map(|apps| {
                apps.values().for_each(App::signal_stop);
                apps.keys().cloned().collect()
            })
            .unwrap_or_default();
        for name in names {
            self.stop(&name, deadline.saturating_duration_since(Instant::now()))?;
        }
        Ok(())
    }

    /// Holds every job at a consistent point; returns once all are held.
    pub fn hold(&self, timeout: Duration) -> Result<usize, String> {
        self.held.store(true, Ordering::Relaxed);
        // finished and stopped applications hold nothing
        let jobs: Vec<JobView> = self
            .applications()
            .into_iter()
            .filter(|(_, _, status, _)| *status == AppStatus::Running)
            .flat_map(|(_, _, _, jobs)| jobs)
            .collect();
        for job in &jobs {
            job.hold.requested.store(true, Ordering::Relaxed);
        }
        let deadline = Instant::now() + timeout;
        while jobs
            .iter()
            .any(|j| !j.hold.held.load(Ordering::Relaxed) && !j.cancel.load(Ordering::Relaxed))
        {
            if Instant::now() > deadline {
                self.resume();
                return Err(
                    "jobs did not reach a consistent point in time; processing goes on".into(),
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(jobs.len())
    }

    /// Releases a hold.
    pub fn resume(&self) -> usize {
        self.held.store(false, Ordering::Relaxed);
        let jobs = self.jobs();
        for job in &jobs {
            job.hold.requested.store(false, Ordering::Relaxed);
        }
        jobs.len()
    }

    pub fn is_held(&self) -> bool {
        self.held.load(Ordering::Relaxed)
    }

    /// Stops every application that runs (or is being started or retried)
    /// and starts it again, so that its jobs connect to new endpoints after
    /// a failover. Applications stopped with DELETE and finished bounded
    /// ones stay as they are: restarting them would repeat their output.
    pub fn restart_all(&self, timeout: Duration) -> Result<(), String> {
        let apps: Vec<(String, PathBuf)> = self
            .applications()
            .into_iter()
            .filter(|(_, _, status, _)| !matches!(status, AppStatus::Stopped | AppStatus::Finished))
            .map(|(name, path, _, _)| (name, path))
            .collect();
        for (name, path) in apps {
            self.one_at_a_time(&name, || {
                self.stop(&name, timeout)?;
                self.deploy(&name, &path)
            })?;
        }
        Ok(())
    }

    /// Every job of every application.
    pub fn jobs(&self) -> Vec<JobView> {
        self.apps
            .lock()
            .map(|apps| {
                apps.values()
                    .flat_map(|a| a.jobs.lock().map(|j| j.clone()).unwrap_or_default())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// (application, path, status, its jobs).
    pub fn applications(&self) -> Vec<(String, PathBuf, AppStatus, Vec<JobView>)> {
        self.apps
            .lock()
            .map(|apps| {
                apps.iter()
                    .map(|(name, a)| {
                        (
                            name.clone(),
                            a.path.clone(),
                            a.status
                                .lock()
                                .map(|s| s.clone())
                                .unwrap_or(AppStatus::Stopped),
                            a.jobs.lock().map(|j| j.clone()).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Waits for `thread` to end; after `timeout` hands it back with the error.
fn join_within(thread: JoinHandle<()>, timeout: Duration) -> Result<(), (JoinHandle<()>, String)> {
    let deadline = Instant::now() + timeout;
    while !thread.is_finished() {
        if Instant::now() > deadline {
            let e = format!(
                "{} did not stop within {:?}; it stops at its next batch boundary",
                thread.thread().name().unwrap_or("a job"),
                timeout
            );
            return Err((thread, e));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = thread.join();
    Ok(())
}

/// How long an application must run before a failure counts as a new
/// incident rather than one more failure of the same one (the breaker
/// records the run as a success, the backoff starts again at 1 s): the
/// breaker's `recovery_timeout`, else this.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// `velostream_circuit_breaker_state` values.
const BREAKER_CLOSED: i64 = 0;
const BREAKER_HALF_OPEN: i64 = 1;
const BREAKER_OPEN: i64 = 2;

/// One application's supervision: what its thread owns.
struct AppRun {
    name: String,
    path: PathBuf,
    launcher: Arc<dyn Launcher>,
    metrics: Arc<ServiceMetrics>,
    status: Arc<Mutex<AppStatus>>,
    views: Arc<Mutex<Vec<JobView>>>,
    stop: Arc<AtomicBool>,
    breaker: Breaker,
    /// A run this long was healthy, whatever ended it.
    healthy_run: Duration,
}

impl AppRun {
    fn set(&self, s: AppStatus) {
        if let Ok(mut status) = self.status.lock() {
            *status = s;
        }
    }

    /// Sets the application's `velostream_circuit_breaker_state`.
    fn publish_breaker(&self, state: i64) {
        self.metrics
            .circuit_breaker_state
            .with_label_values(&[self.name.as_str()])
            .set(state);
    }

    /// Sleeps up to `pause`, waking early when the application is stopped.
    fn pause(&self, pause: Duration) {
        let until = Instant::now() + pause;
        while Instant::now() < until && !self.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Launches the jobs and runs them to their end.
    fn attempt(&self) -> Result<(), LaunchError> {
        // errors reach the logs and the jobs API: no secret goes with them
        let mask = |e: LaunchError| LaunchError {
            message: velostream_sql::secrets::mask(&e.message),
            ..e
        };
        // a panic while planning or building is this application's failure
        let launched = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.launcher.launch(&self.name, &self.path)
        }))
        .unwrap_or_else(|panic| {
            Err(format!("launching panicked: {}", panic_message(&*panic)).into())
        });
        let jobs = launched.map_err(mask)?;
        let current: Vec<JobView> = jobs
            .iter()
            .map(|j| JobView {
                name: j.name.clone(),
                metrics: j.metrics(),
                cancel: j.cancel_handle(),
                hold: j.hold_handle(),
            })
            .collect();
        for j in &current {
            self.metrics.register_job(&j.name);
        }
        if let Ok(mut v) = self.views.lock() {
            *v = current;
        }
        self.set(AppStatus::Running);
        run_all(jobs).map_err(mask)
    }

    /// Launch, run, restart on failure with backoff (or after the recovery
    /// timeout when the circuit breaker opens).
    fn supervise(mut self) {
        let name = self.name.clone();
        self.metrics.register_application(&name);
        let mut restarts = 0u32;
        let mut backoff = Duration::from_secs(1);
        while !self.stop.load(Ordering::Relaxed) {
            // after a trip this attempt is the breaker's trial
            self.publish_breaker(if self.breaker.is_half_open() {
                BREAKER_HALF_OPEN
            } else {
                BREAKER_CLOSED
            });
            let started = Instant::now();
            let outcome = self.attempt();
            if outcome.is_err() && started.elapsed() >= self.healthy_run {
                // it ran well for a while before failing: that run was a
                // success, so old failures do not add up for the process's life
                self.breaker.record(false);
                restarts = 0;
                backoff = Duration::from_secs(1);
            }
            let error = match outcome {
                Ok(()) => {
                    self.breaker.record(false);
                    self.publish_breaker(BREAKER_CLOSED);
                    self.set(if self.stop.load(Ordering::Relaxed) {
                        AppStatus::Stopped
                    } else {
                        AppStatus::Finished
                    });
                    return;
                }
                Err(error) => error,
            };
            self.metrics.job_failed(&name);
            restarts += 1;
            if !error.kind.is_retryable() {
                let error = error.message;
                tracing::error!(
                    component = "supervisor",
                    error_type = "misconfigured",
                    application = %name,
                    "application {name} is misconfigured ({error}); not restarted until it is deployed again"
                );
                self.set(AppStatus::Failed {
                    error,
                    restarts,
                    retrying: false,
                });
                return;
            }
            let error = error.message;
            let wait = match self.breaker.record(true) {
                Some(recovery) => {
                    self.metrics
                        .circuit_breaker_trips
                        .with_label_values(&[name.as_str()])
                        .inc();
                    self.publish_breaker(BREAKER_OPEN);
                    tracing::error!(
                        component = "supervisor",
                        error_type = "circuit_breaker_open",
                        application = %name,
                        "application {name} keeps failing ({error}); not restarted for {recovery:?}"
                    );
                    self.set(AppStatus::BreakerOpen {
                        error,
                        retry_in_ms: recovery.as_millis() as u64,
                    });
                    recovery
                }
                None => {
                    tracing::error!(
                        component = "supervisor",
                        error_type = "job_failed",
                        application = %name,
                        "application {name} failed: {error}; restarting in {backoff:?}"
                    );
                    self.set(AppStatus::Failed {
                        error,
                        restarts,
                        retrying: true,
                    });
                    let wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    wait
                }
            };
            self.pause(wait);
            if !self.stop.load(Ordering::Relaxed) {
                self.metrics
                    .retries
                    .with_label_values(&[name.as_str()])
                    .inc();
            }
        }
        self.set(AppStatus::Stopped);
    }
}

/// The message of a panic's payload (`panic!("...")` gives a `&str` or a `String`).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}

/// Runs jobs on their own threads; the first error, if any, with its kind
/// (a job that finds its sink's table missing is misconfigured, one whose
/// broker went away is not). When one job fails, the others of its
/// application are stopped too (they are restarted together).
fn run_all(jobs: Vec<Job>) -> Result<(), LaunchError> {
    let cancels: Vec<Arc<AtomicBool>> = jobs.iter().map(|j| j.cancel_handle()).collect();
    let mut handles: Vec<_> = jobs
        .into_iter()
        .map(|job| {
            let name = job.name.clone();
            std::thread::Builder::new()
                .name(format!("job-{name}"))
                .spawn(move || {
                    job.run().map(|_| ()).map_err(|e| LaunchError {
                        kind: e.kind(),
                        message: format!("job {name}: {e}"),
                    })
                })
        })
        .collect::<Result<_, _>>()
        .map_err(|e| LaunchError::from(e.to_string()))?;
    let mut first = None;
    while !handles.is_empty() {
        let Some(i) = handles.iter().position(|h| h.is_finished()) else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let result = handles.swap_remove(i).join().unwrap_or_else(|panic| {
            Err(format!("a job panicked: {}", panic_message(&*panic)).into())
        });
        if let Err(e) = result {
            for c in &cancels {
                c.store(true, Ordering::Relaxed);
            }
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}
