//! Where operator state goes at a checkpoint: Arrow IPC files (`memory`)
//! or a RocksDB database checkpointed with RocksDB's own mechanism
//! (`rocksdb`). Both sit behind [`StateBackend`], so the checkpoint
//! protocol does not care which one a job uses.
//!
//! Between checkpoints operators keep their working state in memory as
//! Arrow structures under both backends; the backend decides how that
//! state is persisted and read back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{EngineError, Result};
use crate::state::OperatorSnapshot;

/// Which backend a job uses (`processing.state_backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendKind {
    #[default]
    Memory,
    RocksDb,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::RocksDb => "rocksdb",
        }
    }
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "memory" => Ok(Self::Memory),
            "rocksdb" => Ok(Self::RocksDb),
            other => Err(format!(
                "unknown state backend '{other}': expected memory or rocksdb"
            )),
        }
    }
}

/// Persists operator snapshots into a checkpoint directory being built,
/// and reads them back from a finished one.
pub trait StateBackend: Send {
    fn kind(&self) -> BackendKind;
    /// Writes `snapshots` (by operator index) under `dir`; returns the
    /// files written, relative to `dir`, for the manifest's checksums.
    fn write(&mut self, dir: &Path, snapshots: &[(usize, OperatorSnapshot)])
        -> Result<Vec<String>>;
    /// The snapshots a previous `write` put under `dir`.
    fn read(&self, dir: &Path) -> Result<BTreeMap<usize, OperatorSnapshot>>;
}

/// Opens the backend `kind` for a job whose working files live in `job_dir`.
pub fn open(kind: BackendKind, job_dir: &Path) -> Result<Box<dyn StateBackend>> {
    Ok(match kind {
        BackendKind::Memory => Box::new(MemoryBackend),
        BackendKind::RocksDb => Box::new(RocksDbBackend::open(&job_dir.join("rocksdb"))?),
    })
}

/// State lives in memory; each checkpoint writes one Arrow IPC file per
/// stateful operator.
pub struct MemoryBackend;

fn operator_file(index: usize) -> String {
    format!("operator-{index}.arrow")
}

impl StateBackend for MemoryBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Memory
    }

    fn write(
        &mut self,
        dir: &Path,
        snapshots: &[(usize, OperatorSnapshot)],
    ) -> Result<Vec<String>> {
        let mut files = Vec::with_capacity(snapshots.len());
        for (index, snapshot) in snapshots {
            let name = operator_file(*index);
            std::fs::write(dir.join(&name), snapshot.to_bytes()?)?;
            files.push(name);
        }
        Ok(files)
    }

    fn read(&self, dir: &Path) -> Result<BTreeMap<usize, OperatorSnapshot>> {
        let mut out = BTreeMap::new();
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            let Some(index) = name
                .strip_prefix("operator-")
                .and_then(|n| n.strip_suffix(".arrow"))
                .and_then(|n| n.parse::<usize>().ok())
            else {
                continue;
            };
            let bytes = std::fs::read(dir.join(&name))?;
            out.insert(index, OperatorSnapshot::from_bytes(&bytes)?);
        }
        Ok(out)
    }
}

/// State is written into a RocksDB database under the job's directory —
/// one key per snapshot batch (`op/<index>/<batch>`, the batch as Arrow
/// IPC) — and each checkpoint is a RocksDB checkpoint of it: immutable
/// table files hard-linked, not copied.
pub struct RocksDbBackend {
    db: rocksdb::DB,
    path: PathBuf,
}

const CHECKPOINT_SUBDIR: &str = "rocksdb";

fn rocks_error(path: &Path, e: rocksdb::Error) -> EngineError {
    EngineError::State(format!("rocksdb at {}: {e}", path.display()))
}

fn state_key(index: usize, batch: usize) -> Vec<u8> {
    format!("op/{index:06}/{batch:010}").into_bytes()
}

impl RocksDbBackend {
    pub fn open(path: &Path) -> Result<Self> {
        std::fs::create_dir_all(path)?;
        let mut options = rocksdb::Options::default();
        options.create_if_missing(true);
        let db = rocksdb::DB::open(&options, path).map_err(|e| rocks_error(path, e))?;
        Ok(Self {
            db,
            path: path.to_path_buf(),
        })
    }
}

impl StateBackend for RocksDbBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::RocksDb
    }

    fn write(
        &mut self,
        dir: &Path,
        snapshots: &[(usize, OperatorSnapshot)],
    ) -> Result<Vec<String>> {
        let err = |e| rocks_error(&self.path, e);
        let mut batch = rocksdb::WriteBatch::default();
        // the previous checkpoint's keys go: the database holds one state
        batch.delete_range(b"op/".as_slice(), b"op0".as_slice());
        for (index, snapshot) in snapshots {
            // an empty operator still gets a key, so its schema is kept
            let parts: Vec<OperatorSnapshot> = if snapshot.batches.is_empty() {
                vec![snapshot.clone()]
            } else {
                snapshot
                    .batches
                    .iter()
                    .map(|b| OperatorSnapshot {
                        schema: snapshot.schema.clone(),
                        batches: vec![b.clone()],
                    })
                    .collect()
            };
            for (i, part) in parts.iter().enumerate() {
                batch.put(state_key(*index, i), part.to_bytes()?);
            }
        }
        self.db.write(batch).map_err(err)?;
        let target = dir.join(CHECKPOINT_SUBDIR);
        rocksdb::checkpoint::Checkpoint::new(&self.db)
            .and_then(|c| c.create_checkpoint(&target))
            .map_err(err)?;
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&target)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                files.push(format!(
                    "{CHECKPOINT_SUBDIR}/{}",
                    entry.file_name().to_string_lossy()
                ));
            }
        }
        files.sort();
        Ok(files)
    }

    fn read(&self, dir: &Path) -> Result<BTreeMap<usize, OperatorSnapshot>> {
        let path = dir.join(CHECKPOINT_SUBDIR);
        let db = rocksdb::DB::open_for_read_only(&rocksdb::Options::default(), &path, false)
            .map_err(|e| rocks_error(&path, e))?;
        let mut out: BTreeMap<usize, OperatorSnapshot> = BTreeMap::new();
        for item in db.prefix_iterator(b"op/") {
            let (key, value) = item.map_err(|e| rocks_error(&path, e))?;
            let Some(index) = std::str::from_utf8(&key)
                .ok()
                .and_then(|k| k.strip_prefix("op/"))
                .and_then(|k| k.split('/').next())
                .and_then(|n| n.parse::<usize>().ok())
            else {
                break; // past the state keys
            };
            let part = OperatorSnapshot::from_bytes(&value)?;
            match out.get_mut(&index) {
                Some(s) => s.batches.extend(part.batches),
                None => {
                    out.insert(index, part);
                }
            }
        }
        Ok(out)
    }
}
