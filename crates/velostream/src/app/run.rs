//! Running an application's jobs: one thread each.

use std::thread;

use velostream_engine::{EngineError, Job, JobSummary};

use super::AppError;

/// Runs jobs concurrently, one thread each, and waits for all of them.
/// The first error is returned after every job has stopped.
pub fn run_jobs(jobs: Vec<Job>) -> Result<Vec<JobSummary>, AppError> {
    let handles: Vec<_> = jobs
        .into_iter()
        .map(|job| {
            let name = job.name.clone();
            let handle = thread::Builder::new()
                .name(format!("job-{name}"))
                .spawn(move || job.run())
                .expect("spawn job thread");
            (name, handle)
        })
        .collect();
    let mut summaries = Vec::new();
    let mut first_error = None;
    for (name, handle) in handles {
        match handle.join() {
            Ok(Ok(summary)) => summaries.push(summary),
            Ok(Err(source)) => {
                first_error.get_or_insert(AppError::Job { job: name, source });
            }
            Err(_) => {
                first_error.get_or_insert(AppError::Job {
                    job: name,
                    source: EngineError::Plan("the job thread panicked".into()),
                });
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(summaries),
    }
}
