//! One running job per job directory. A checkpointing job holds an
//! exclusive lock on `<job_dir>/LOCK` for as long as it runs, so two jobs
//! of the same name — statements of two applications, or two processes on
//! one state directory — cannot write over each other's checkpoints, and
//! `velostream state reset|restore` cannot pull state from under a running
//! job. The kernel drops the lock when the process ends, however it ends,
//! so a crash never leaves a job locked out.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;

use crate::error::{EngineError, Result};

/// The held lock; released when dropped.
#[derive(Debug)]
pub struct JobLock {
    _file: File,
}

impl JobLock {
    /// Locks `job_dir` for job `job`, or says who holds it.
    pub fn acquire(job_dir: &Path, job: &str) -> Result<Self> {
        let path = job_dir.join("LOCK");
        let fail = |e: std::io::Error| EngineError::State(format!("{}: {e}", path.display()));
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(fail)?;
        match file.try_lock() {
            Ok(()) => {
                // who holds it, for the message another job would get
                file.set_len(0).map_err(fail)?;
                file.rewind().map_err(fail)?;
                write!(file, "{}", std::process::id()).map_err(fail)?;
                Ok(Self { _file: file })
            }
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    pid if pid == std::process::id().to_string() => "this process".to_string(),
                    "" => "another process".to_string(),
                    pid => format!("process {pid}"),
                };
                Err(EngineError::State(format!(
                    "job {job}: its state in {} is in use by a running job of the same name ({holder}); give the statement another name (-- @name: ...) or use another state directory",
                    job_dir.display()
                )))
            }
            Err(TryLockError::Error(e)) => Err(fail(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = JobLock::acquire(dir.path(), "totals").unwrap();
        let refused = JobLock::acquire(dir.path(), "totals")
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("in use by a running job of the same name (this process)"),
            "{refused}"
        );
        drop(first);
        JobLock::acquire(dir.path(), "totals").unwrap();
    }
}
