//! The checkpoints of one job on disk.
//!
//! Layout under the job's directory:
//!
//! ```text
//! checkpoints/
//!   chk-00000000000000000041/   complete, immutable
//!     manifest.json             written last; lists every other file with its CRC-32
//!     operator-2.arrow          (memory backend) or rocksdb/… (rocksdb backend)
//!   chk-00000000000000000042/
//!   .tmp-chk-00000000000000000043/   being written; never read
//! ```
//!
//! A checkpoint is assembled in a temporary directory, every file is
//! fsynced, the manifest is written and fsynced last, then the directory is
//! renamed into place and its parent fsynced: a directory named `chk-*`
//! is complete unless the disk damaged it afterwards, which the checksums
//! catch.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::manifest::{FileEntry, Manifest, MANIFEST_FILE};
use crate::error::{EngineError, Result};

const PREFIX: &str = "chk-";
const TMP_PREFIX: &str = ".tmp-chk-";

pub struct CheckpointStore {
    root: PathBuf,
}

impl CheckpointStore {
    /// The checkpoints under `job_dir/checkpoints` (created when missing);
    /// leftovers of checkpoints that were being written are removed.
    pub fn open(job_dir: &Path) -> Result<Self> {
        let root = job_dir.join("checkpoints");
        std::fs::create_dir_all(&root)
            .map_err(|e| EngineError::State(format!("cannot create {}: {e}", root.display())))?;
        for entry in std::fs::read_dir(&root)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                std::fs::remove_dir_all(entry.path())?;
            }
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of checkpoint `id`.
    pub fn dir(&self, id: u64) -> PathBuf {
        self.root.join(format!("{PREFIX}{id:020}"))
    }

    /// Ids of the complete checkpoints, oldest first.
    pub fn ids(&self) -> Result<Vec<u64>> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&self.root)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_prefix(PREFIX).and_then(|n| n.parse().ok()) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// A fresh temporary directory for checkpoint `id`.
    pub fn begin(&self, id: u64) -> Result<PathBuf> {
        let tmp = self.root.join(format!("{TMP_PREFIX}{id:020}"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir_all(&tmp)?;
        Ok(tmp)
    }

    /// Seals the checkpoint assembled in `tmp`: checksums and fsyncs its
    /// `files`, writes the manifest, and renames the directory into place.
    pub fn seal(&self, tmp: &Path, mut manifest: Manifest, files: &[String]) -> Result<u64> {
        manifest.files = files
            .iter()
            .map(|f| {
                File::open(tmp.join(f))?.sync_all()?;
                FileEntry::of(tmp, f)
            })
            .collect::<Result<_>>()?;
        let bytes: u64 = manifest.files.iter().map(|f| f.bytes).sum();
        let text = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| EngineError::State(format!("cannot encode the manifest: {e}")))?;
        let path = tmp.join(MANIFEST_FILE);
        std::fs::write(&path, text)?;
        File::open(&path)?.sync_all()?;
        for dir in files.iter().filter_map(|f| Path::new(f).parent()) {
            if !dir.as_os_str().is_empty() {
                sync_dir(&tmp.join(dir))?;
            }
        }
        sync_dir(tmp)?;
        std::fs::rename(tmp, self.dir(manifest.id))?;
        sync_dir(&self.root)?;
        Ok(bytes)
    }

    /// Reads and verifies checkpoint `id`: the manifest parses and every
    /// file it lists has its recorded size and checksum.
    pub fn verify(&self, id: u64) -> Result<Manifest> {
        let dir = self.dir(id);
        let text = std::fs::read(dir.join(MANIFEST_FILE)).map_err(|e| {
            EngineError::State(format!("{}: no readable manifest: {e}", dir.display()))
        })?;
        let manifest: Manifest = serde_json::from_slice(&text)
            .map_err(|e| EngineError::State(format!("{}: damaged manifest: {e}", dir.display())))?;
        if manifest.format != super::manifest::FORMAT || manifest.id != id {
            return Err(EngineError::State(format!(
                "{}: manifest of format {} for checkpoint {} (expected format {} and checkpoint {id})",
                dir.display(),
                manifest.format,
                manifest.id,
                super::manifest::FORMAT
            )));
        }
        for file in &manifest.files {
            file.verify(&dir)?;
        }
        Ok(manifest)
    }

    /// Deletes all but the newest `keep` checkpoints.
    pub fn prune(&self, keep: usize) -> Result<()> {
        let ids = self.ids()?;
        let excess = ids.len().saturating_sub(keep.max(1));
        for id in &ids[..excess] {
            std::fs::remove_dir_all(self.dir(*id))?;
        }
        Ok(())
    }
}

/// Makes a directory's entries (a rename, new files) durable.
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}
