//! What an application the service runs may touch. `velostream run` in a
//! terminal is the user's own process and runs unconfined; the service
//! runs SQL that others deploy, so every file a source, sink or
//! dead-letter sink opens must lie inside one of the allowed directories,
//! Kafka connectors may only name the configured clusters and
//! allow-listed client properties (`kafka::config`), and PostgreSQL
//! connectors only use the configured database (`postgres::connection`).
//!
//! Paths are compared after canonicalisation (symlinks and `..` resolved),
//! so `allowed/../etc/passwd` and a symlink out of an allowed directory
//! are both refused. A path that does not exist yet (a sink's new file) is
//! judged by its nearest existing ancestor, with no `..` after it.

use std::path::{Component, Path, PathBuf};

use crate::error::{ConnectorError, ConnectorResult};

/// The confinement of one application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    /// Canonical directories files may be read and written in.
    allowed: Vec<PathBuf>,
}

impl Sandbox {
    /// A sandbox allowing the directories `allowed` (and what they hold).
    /// Directories that do not exist yet are kept as given: nothing can be
    /// inside them until they are created, and then their canonical form
    /// is the same unless a symlink is on the way.
    pub fn new(allowed: impl IntoIterator<Item = PathBuf>) -> Self {
        let mut dirs: Vec<PathBuf> = allowed
            .into_iter()
            .map(|d| d.canonicalize().unwrap_or_else(|_| lexical(&d)))
            .collect();
        dirs.sort();
        dirs.dedup();
        Self { allowed: dirs }
    }

    /// The directories files may be opened in.
    pub fn allowed_paths(&self) -> &[PathBuf] {
        &self.allowed
    }

    /// `path` (the value of property `key`) when it resolves inside an
    /// allowed directory; otherwise an error naming the key, the path and
    /// the rule.
    pub fn check_path(&self, key: &str, path: &Path) -> ConnectorResult<PathBuf> {
        let resolved = resolve(path).ok_or_else(|| {
            ConnectorError::Refused(format!(
                "'{key}' = '{}' is refused: a path of an application the service runs may not go up with '..' where nothing exists yet",
                path.display()
            ))
        })?;
        if self.allowed.iter().any(|dir| resolved.starts_with(dir)) {
            return Ok(resolved);
        }
        Err(ConnectorError::Refused(format!(
            "'{key}' = '{}' is refused: applications the service runs may only open files inside {} (security.sandbox.allowed_paths)",
            path.display(),
            match self.allowed.as_slice() {
                [] => "no directory".to_string(),
                dirs => dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        )))
    }
}

/// The canonical form of `path`: of the path itself when it exists, else
/// of its nearest existing ancestor with the missing components appended
/// (`None` when those contain `..`, which could climb out again once
/// created).
fn resolve(path: &Path) -> Option<PathBuf> {
    if let Ok(canonical) = path.canonicalize() {
        return Some(canonical);
    }
    let mut missing = Vec::new();
    let mut ancestor = path;
    loop {
        match ancestor.file_name() {
            Some(name) => missing.push(name.to_os_string()),
            None if ancestor.ends_with("..") => return None,
            None => {}
        }
        ancestor = ancestor.parent()?;
        let base = if ancestor.as_os_str().is_empty() {
            Path::new(".")
        } else {
            ancestor
        };
        if let Ok(canonical) = base.canonicalize() {
            let mut resolved = canonical;
            for name in missing.iter().rev() {
                resolved.push(name);
            }
            return Some(resolved);
        }
    }
}

/// `path` without `.` and with `..` applied, without touching the disk.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_inside_allowed_directories_pass_and_others_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let allowed = root.path().join("data");
        std::fs::create_dir(&allowed).unwrap();
        std::fs::write(allowed.join("in.jsonl"), "{}").unwrap();
        let sandbox = Sandbox::new([allowed.clone()]);

        assert!(sandbox
            .check_path("path", &allowed.join("in.jsonl"))
            .is_ok());
        // a sink's new file, also in a new subdirectory
        assert!(sandbox
            .check_path("path", &allowed.join("out/new.jsonl"))
            .is_ok());

        let e = sandbox
            .check_path("trades.path", Path::new("/etc/passwd"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("'trades.path' = '/etc/passwd' is refused")
                && e.contains("security.sandbox.allowed_paths"),
            "{e}"
        );
        // climbing out with .. through an existing directory
        let climb = allowed.join("../secret.txt");
        std::fs::write(root.path().join("secret.txt"), "x").unwrap();
        assert!(sandbox.check_path("path", &climb).is_err());
        // .. after a directory that does not exist yet
        assert!(sandbox
            .check_path("path", &allowed.join("new/../../x"))
            .is_err());
    }

    #[test]
    fn a_symlink_out_of_an_allowed_directory_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let allowed = root.path().join("data");
        std::fs::create_dir(&allowed).unwrap();
        std::os::unix::fs::symlink("/etc", allowed.join("etc")).unwrap();
        let sandbox = Sandbox::new([allowed.clone()]);
        assert!(sandbox
            .check_path("path", &allowed.join("etc/passwd"))
            .is_err());
        assert!(sandbox
            .check_path("path", &allowed.join("etc/new-file"))
            .is_err());
    }
}
