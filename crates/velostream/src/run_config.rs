//! The part of a configuration file that `velostream run` uses:
//! `performance.batch_size`. The service reads the whole file.

use std::path::Path;

use serde_yaml_ng::Value;

/// Records per batch from `performance.batch_size`, if the file sets it.
pub fn batch_size(path: &Path) -> Result<Option<usize>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let doc: Value = serde_yaml_ng::from_str(&text)
        .map_err(|e| format!("{}: invalid YAML: {e}", path.display()))?;
    match doc.get("performance").and_then(|p| p.get("batch_size")) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 => Ok(Some(n as usize)),
            _ => Err(format!(
                "{}: performance.batch_size must be a positive integer",
                path.display()
            )),
        },
    }
}
