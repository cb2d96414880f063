//! The processing flags of `velostream run` — checkpoints
//! (`--checkpoint-interval`, `--state-dir`, `--state-backend`,
//! `--fresh-state`, `--from-checkpoint`), `--guarantee` and
//! `--parallelism` — merged over what `--config` says.

use std::path::PathBuf;
use std::time::Duration;

use velostream_connectors::Guarantee;
use velostream_engine::checkpoint::{BackendKind, CheckpointSettings};

use crate::app::RunOptions;

/// Checkpoints and recovery of `run` (the configuration's `processing.*`
/// and `state_dir` apply too; flags win).
#[derive(clap::Args, Default)]
pub struct StateArgs {
    /// Take a consistent checkpoint this often (e.g. 1s, 30s); a restarted
    /// run resumes from the newest one
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    checkpoint_interval: Option<Duration>,
    /// Where checkpoints live (default: velostream.state_dir, else /var/lib/velostream/state)
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// memory (snapshots written at checkpoints) or rocksdb
    #[arg(long, value_name = "BACKEND")]
    state_backend: Option<BackendKind>,
    /// at_least_once (default) or exactly_once (results published with checkpoints)
    #[arg(long, value_name = "GUARANTEE")]
    guarantee: Option<Guarantee>,
    /// Set existing checkpoints aside and start with empty state
    #[arg(long)]
    fresh_state: bool,
    /// Pipelines per job (default: processing.parallelism, else 1); a job
    /// whose plan cannot be divided runs on one
    #[arg(long, value_name = "N")]
    parallelism: Option<usize>,
    /// Restore this checkpoint instead of the newest (point-in-time restore)
    #[arg(long, value_name = "ID")]
    from_checkpoint: Option<u64>,
    /// Standby copies per partition of a repartitioned statement's state
    /// (default: processing.standby_replicas, else 0)
    #[arg(long, value_name = "N")]
    standby_replicas: Option<usize>,
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    velostream_sql::duration::parse_shorthand(text.trim())
        .ok_or_else(|| format!("'{text}' is not a duration; write 500ms, 1s, 30s or 5m"))
}

impl StateArgs {
    /// Merges the flags into `options` (which hold the configuration's
    /// settings); errors are usage errors.
    pub fn apply(
        self,
        options: &mut RunOptions,
        configured_state_dir: Option<PathBuf>,
    ) -> Result<(), String> {
        let state = self;
        if let Some(interval) = state.checkpoint_interval {
            let dir = configured_state_dir
                .unwrap_or_else(|| PathBuf::from(velostream_server::service::DEFAULT_STATE_DIR));
            let settings = options
                .checkpoints
                .get_or_insert_with(|| CheckpointSettings::new(dir, interval));
            settings.interval = interval;
        }
        let asked_for_state = state.state_dir.is_some()
            || state.state_backend.is_some()
            || state.fresh_state
            || state.from_checkpoint.is_some();
        match &mut options.checkpoints {
        Some(settings) => {
            if let Some(dir) = state.state_dir {
                settings.state_dir = dir;
            }
            if let Some(backend) = state.state_backend {
                settings.backend = backend;
            }
            settings.fresh = state.fresh_state;
            settings.restore_from = state.from_checkpoint;
        }
        None if asked_for_state => {
            return Err(
                "--state-dir, --state-backend, --fresh-state and --from-checkpoint need checkpoints: add --checkpoint-interval (or processing.checkpoint_interval in the configuration)".into(),
            )
        }
        None => {}
    }
        if let Some(n) = state.parallelism {
            options.parallelism = n.max(1);
            options.decode_threads = Some(n.max(1));
        }
        if let Some(n) = state.standby_replicas {
            options.standby_replicas = n;
        }
        if let Some(g) = state.guarantee {
            options.guarantee = g;
        }
        if options.guarantee == Guarantee::ExactlyOnce && options.checkpoints.is_none() {
            return Err(
                "exactly_once publishes results with checkpoints: add --checkpoint-interval".into(),
            );
        }
        Ok(())
    }
}
