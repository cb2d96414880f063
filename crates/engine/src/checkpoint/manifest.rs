//! The manifest of a checkpoint: what it holds and the checksums that tell
//! a complete checkpoint from a damaged one.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::connector::Position;
use crate::error::{EngineError, Result};

/// Manifest format; bumped when its meaning changes.
pub const FORMAT: u32 = 1;

/// The file every checkpoint directory holds last.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Everything recovery needs besides the operator state files.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub id: u64,
    pub job: String,
    /// Wall-clock time the checkpoint was taken (ms since the Unix epoch).
    pub created_at_ms: i64,
    /// `memory` or `rocksdb`: which backend wrote the operator state.
    pub backend: String,
    /// The stateful operators, in pipeline order, with the shape of their
    /// state: a query changed incompatibly no longer matches.
    pub operators: Vec<OperatorEntry>,
    /// Where the source stood (records before it are in the state).
    pub source: Option<Position>,
    /// What the sink needs to find this point again.
    pub sink: Option<Position>,
    /// The same for the dead-letter sink, when the job has one.
    #[serde(default)]
    pub dead_letter_sink: Option<Position>,
    /// Records read up to this point (for reporting).
    pub records_in: u64,
    /// Every file of the checkpoint but the manifest, with its checksum.
    pub files: Vec<FileEntry>,
}

/// One stateful operator's place in the pipeline and its state's columns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorEntry {
    pub index: usize,
    pub name: String,
    /// `name: type` of each state column.
    pub state_columns: Vec<String>,
}

/// A file of the checkpoint (path relative to its directory).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub bytes: u64,
    pub crc32: u32,
}

impl FileEntry {
    /// Reads `dir/path` and records its size and CRC-32.
    pub fn of(dir: &Path, path: &str) -> Result<Self> {
        let (bytes, crc32) = checksum(&dir.join(path))?;
        Ok(Self {
            path: path.to_string(),
            bytes,
            crc32,
        })
    }

    /// Fails unless `dir/path` still has the recorded size and checksum.
    pub fn verify(&self, dir: &Path) -> Result<()> {
        let file = dir.join(&self.path);
        let (bytes, crc32) =
            checksum(&file).map_err(|e| EngineError::State(format!("{}: {e}", file.display())))?;
        if bytes != self.bytes || crc32 != self.crc32 {
            return Err(EngineError::State(format!(
                "{}: {bytes} bytes with checksum {crc32:08x}, expected {} bytes with checksum {:08x}",
                file.display(),
                self.bytes,
                self.crc32
            )));
        }
        Ok(())
    }
}

fn checksum(path: &Path) -> Result<(u64, u32)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok((bytes, hasher.finalize()))
}
