//! `velostream state …`: the state directory's checkpoints as an operator
//! handles them — list and verify, back up, restore (optionally to a point
//! in time), and set aside to start a job fresh.
//!
//! A backup holds each job's complete checkpoints (verified against their
//! checksums while copying) and the applications deployed through the API;
//! a job's working RocksDB directory is left out, since every checkpoint
//! is self-contained and the working copy is rewritten at the next one.

use std::path::{Path, PathBuf};

use velostream_engine::checkpoint::{self, store::CheckpointStore};

/// One job directory of a state directory and its complete checkpoints.
struct JobState {
    name: String,
    store: CheckpointStore,
}

/// The job directories under `state_dir`: those with a `checkpoints`
/// folder, named by their path below it — `totals` for `velostream run`,
/// `jobs/<application>/<statement>` for the service.
fn jobs(state_dir: &Path) -> Result<Vec<JobState>, String> {
    std::fs::read_dir(state_dir).map_err(|e| {
        format!(
            "cannot read the state directory {}: {e}",
            state_dir.display()
        )
    })?;
    let mut jobs = Vec::new();
    find_jobs(state_dir, state_dir, 0, &mut jobs)?;
    jobs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(jobs)
}

/// How deep job directories lie at most (`jobs/<application>/<statement>`).
const JOB_DEPTH: usize = 3;

fn find_jobs(
    root: &Path,
    dir: &Path,
    depth: usize,
    jobs: &mut Vec<JobState>,
) -> Result<(), String> {
    if depth >= JOB_DEPTH {
        return Ok(());
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_dir() || entry.file_name() == "applications" {
            continue;
        }
        if path.join("checkpoints").is_dir() {
            let name = path.strip_prefix(root).unwrap_or(&path);
            jobs.push(JobState {
                name: name.to_string_lossy().into_owned(),
                store: CheckpointStore::open(&path).map_err(|e| e.to_string())?,
            });
        } else {
            find_jobs(root, &path, depth + 1, jobs)?;
        }
    }
    Ok(())
}

/// Prints each job's checkpoints: id, time, size and whether it verifies.
pub fn list(state_dir: &Path) -> Result<(), String> {
    for job in jobs(state_dir)? {
        println!("{}", job.name);
        for id in job.store.ids().map_err(|e| e.to_string())? {
            match job.store.verify(id) {
                Ok(m) => println!(
                    "  checkpoint {id}  {}  {} bytes  {} backend  {} records read",
                    timestamp(m.created_at_ms),
                    m.files.iter().map(|f| f.bytes).sum::<u64>(),
                    m.backend,
                    m.records_in
                ),
                Err(e) => println!("  checkpoint {id}  DAMAGED: {e}"),
            }
        }
    }
    Ok(())
}

/// Copies every verified checkpoint (and deployed applications) into
/// `to`, which must not exist yet. Returns how many checkpoints were copied.
pub fn backup(state_dir: &Path, to: &Path) -> Result<usize, String> {
    if to.exists() {
        return Err(format!(
            "{} exists already; back up into a new directory",
            to.display()
        ));
    }
    let mut copied = 0;
    for job in jobs(state_dir)? {
        for id in job.store.ids().map_err(|e| e.to_string())? {
            if let Err(e) = job.store.verify(id) {
                eprintln!("warning: {} checkpoint {id} left out: {e}", job.name);
                continue;
            }
            let from = job.store.dir(id);
            let target = to.join(&job.name).join("checkpoints").join(
                from.file_name()
                    .ok_or_else(|| format!("bad checkpoint path {}", from.display()))?,
            );
            copy_dir(&from, &target)?;
            copied += 1;
        }
    }
    let apps = state_dir.join("applications");
    if apps.is_dir() {
        copy_dir(&apps, &to.join("applications"))?;
    }
    std::fs::create_dir_all(to).map_err(|e| format!("cannot create {}: {e}", to.display()))?;
    Ok(copied)
}

/// Restores a backup into `state_dir` (the service must be stopped):
/// each job's checkpoints are replaced by the backup's — current ones are
/// set aside, not deleted. With `at_ms`, only checkpoints taken at or
/// before that time are restored (point-in-time recovery).
pub fn restore(backup: &Path, state_dir: &Path, at_ms: Option<i64>) -> Result<Vec<String>, String> {
    let mut report = Vec::new();
    for job in jobs(backup)? {
        let mut chosen = Vec::new();
        for id in job.store.ids().map_err(|e| e.to_string())? {
            let manifest = job
                .store
                .verify(id)
                .map_err(|e| format!("the backup of {} is damaged: {e}", job.name))?;
            if at_ms.is_none_or(|t| manifest.created_at_ms <= t) {
                chosen.push(id);
            }
        }
        let Some(newest) = chosen.last().copied() else {
            report.push(format!(
                "{}: no checkpoint at or before the time asked for; the job will start empty",
                job.name
            ));
            set_aside(&state_dir.join(&job.name))?;
            continue;
        };
        let job_dir = state_dir.join(&job.name);
        set_aside(&job_dir)?;
        for id in &chosen {
            let from = job.store.dir(*id);
            let name = from.file_name().unwrap_or_default().to_owned();
            copy_dir(&from, &job_dir.join("checkpoints").join(name))?;
        }
        report.push(format!("{}: restored up to checkpoint {newest}", job.name));
    }
    let apps = backup.join("applications");
    if apps.is_dir() {
        copy_dir(&apps, &state_dir.join("applications"))?;
    }
    Ok(report)
}

/// Sets a job's checkpoints aside so it starts with empty state.
pub fn reset(state_dir: &Path, job: &str) -> Result<Option<PathBuf>, String> {
    set_aside(&state_dir.join(job))
}

/// Moves a job's `checkpoints` (and its working RocksDB, which the next
/// checkpoint would rewrite anyway) into `discarded/`; returns where the
/// checkpoints went.
fn set_aside(job_dir: &Path) -> Result<Option<PathBuf>, String> {
    if !job_dir.is_dir() {
        return Ok(None);
    }
    // refused while the job runs: its state would change under it
    let job = job_dir.file_name().unwrap_or_default().to_string_lossy();
    let _lock = checkpoint::lock::JobLock::acquire(job_dir, &job).map_err(|e| e.to_string())?;
    let why = "state set aside by a velostream state command";
    let moved = checkpoint::set_aside(job_dir, "checkpoints", why).map_err(|e| e.to_string())?;
    checkpoint::set_aside(job_dir, "rocksdb", why).map_err(|e| e.to_string())?;
    Ok(moved)
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    let fail = |what: &Path, e: std::io::Error| format!("cannot copy {}: {e}", what.display());
    std::fs::create_dir_all(to).map_err(|e| fail(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| fail(from, e))? {
        let entry = entry.map_err(|e| fail(from, e))?;
        let path = entry.path();
        let target = to.join(entry.file_name());
        if entry.file_type().map_err(|e| fail(&path, e))?.is_dir() {
            copy_dir(&path, &target)?;
        } else {
            std::fs::copy(&path, &target).map_err(|e| fail(&path, e))?;
        }
    }
    Ok(())
}

/// Milliseconds since the epoch as an RFC 3339 UTC time.
fn timestamp(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// Parses `--at`: RFC 3339 (`2026-11-26T12:00:00Z`) or epoch milliseconds.
pub fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|e| {
            format!(
                "'{text}' is not a time: write 2026-11-26T12:00:00Z or epoch milliseconds ({e})"
            )
        })
}

/// `velostream state …`
#[derive(clap::Subcommand)]
pub enum StateCommand {
    /// List each job's checkpoints and verify their checksums
    List {
        #[arg(long, value_name = "DIR", default_value = velostream_server::service::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
    /// Copy every complete checkpoint into a new backup directory (hold a
    /// running service first with POST /checkpoint, or pass --service)
    Backup {
        #[arg(long, value_name = "DIR", default_value = velostream_server::service::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// The backup directory to create
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        /// Hold this running service during the copy (POST /checkpoint, then /resume),
        /// e.g. http://localhost:8080
        #[arg(long, value_name = "URL")]
        service: Option<String>,
        /// Credentials for --service
        #[command(flatten)]
        auth: crate::tools::api_client::ApiAuth,
    },
    /// Replace the state directory's checkpoints with a backup's (stop the
    /// service first); current checkpoints are set aside, not deleted
    Restore {
        /// The backup directory
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
        #[arg(long, value_name = "DIR", default_value = velostream_server::service::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// Point-in-time: only checkpoints taken at or before this time
        /// (2026-11-26T12:00:00Z or epoch milliseconds)
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
    },
    /// Set a job's checkpoints aside so it starts with empty state
    Reset {
        #[arg(long, value_name = "DIR", default_value = velostream_server::service::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        #[arg(long)]
        job: String,
    },
}

impl StateCommand {
    pub fn run(self) -> Result<(), String> {
        match self {
            Self::List { state_dir } => list(&state_dir),
            Self::Backup {
                state_dir,
                to,
                service,
                auth,
            } => {
                use crate::tools::api_client::{endpoint, ApiClient};
                // hold the service so the checkpoints do not change during the copy
                let service = match service {
                    Some(url) => Some((ApiClient::new(auth).map_err(|e| e.to_string())?, url)),
                    None => None,
                };
                let post = |path: &str| -> Result<(), String> {
                    match &service {
                        Some((client, url)) => client
                            .post_ok(&endpoint(url, path))
                            .map(drop)
                            .map_err(|e| e.to_string()),
                        None => Ok(()),
                    }
                };
                post("/checkpoint")?;
                let copied = backup(&state_dir, &to);
                post("/resume")?;
                eprintln!("backed up {} checkpoint(s) to {}", copied?, to.display());
                Ok(())
            }
            Self::Restore {
                from,
                state_dir,
                at,
            } => {
                let at = at.as_deref().map(parse_time).transpose()?;
                for line in restore(&from, &state_dir, at)? {
                    eprintln!("{line}");
                }
                Ok(())
            }
            Self::Reset { state_dir, job } => {
                match reset(&state_dir, &job)? {
                    Some(to) => eprintln!("{job}: checkpoints set aside in {}", to.display()),
                    None => eprintln!("{job}: no checkpoints"),
                }
                Ok(())
            }
        }
    }
}
