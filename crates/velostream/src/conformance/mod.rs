//! The conformance harness: runs spec cases (see [`spec`]) through the same
//! code path as `velostream run`, with each input written to a file read by
//! `file_source` and each expected sink captured by `file_sink`, then
//! compares the rows. Used by the test suite and by `velostream test`.

pub mod compare;
pub mod determinism;
pub mod spec;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use velostream_connectors::registry::types::{FILE_SINK, FILE_SOURCE};
use velostream_sql::plan::columns::window_role;
use velostream_sql::{EmitMode, PropertyOverrides};

use crate::app::{run_jobs, Application, RunOptions};
use compare::{compare, parse_rows};
use spec::Case;

/// The result of one case.
#[derive(Debug)]
pub struct CaseOutcome {
    pub file: PathBuf,
    pub name: String,
    /// `None` when the case passed.
    pub failure: Option<String>,
}

/// Spec files under `paths` (directories are searched for `*.yaml`).
pub fn find_specs(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(p)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .collect();
            entries.sort();
            for e in entries {
                if e.is_dir() || e.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                    out.extend(find_specs(&[e]));
                }
            }
        } else {
            out.push(p.clone());
        }
    }
    out
}

/// Runs every case of a spec file.
pub fn run_spec_file(path: &Path) -> Vec<CaseOutcome> {
    run_spec_file_with(path, Variant::default())
}

/// How a case is run besides its own settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant {
    /// Records per batch (`None`: the case's, else the default).
    pub batch_size: Option<usize>,
    /// Pipelines per job. With more than one, rows are compared in any
    /// order: keyed pipelines emit each batch's groups worker by worker.
    pub parallelism: usize,
    /// Threads decoding each input file (1: the job's own).
    pub decode_threads: usize,
    /// Bytes an input file is read and decoded in (`None`: the default).
    pub decode_chunk_bytes: Option<usize>,
}

impl Default for Variant {
    fn default() -> Self {
        Self {
            batch_size: None,
            parallelism: 1,
            decode_threads: 1,
            decode_chunk_bytes: None,
        }
    }
}

impl Variant {
    /// Each input decoded on three threads in chunks of a line or two,
    /// so even a spec's small inputs are spread over every thread.
    pub fn parallel_decoding() -> Self {
        Self {
            decode_threads: 3,
            decode_chunk_bytes: Some(48),
            ..Self::default()
        }
    }
}

/// Runs every case as `variant` says.
pub fn run_spec_file_with(path: &Path, variant: Variant) -> Vec<CaseOutcome> {
    match spec::load(path) {
        Ok(file) => file
            .cases
            .iter()
            .map(|case| CaseOutcome {
                file: path.to_path_buf(),
                name: case.name.clone(),
                failure: run_case_with(case, variant).err(),
            })
            .collect(),
        Err(e) => vec![CaseOutcome {
            file: path.to_path_buf(),
            name: "(spec file)".into(),
            failure: Some(e),
        }],
    }
}

/// Runs one case; `Err` describes how it failed.
pub fn run_case(case: &Case) -> Result<(), String> {
    run_case_with(case, Variant::default())
}

/// Runs one case as `variant` says.
pub fn run_case_with(case: &Case, variant: Variant) -> Result<(), String> {
    let variant = Variant {
        batch_size: variant.batch_size.or(case.batch_size),
        ..variant
    };
    let outcome = execute(case, variant);
    let run = match (outcome, &case.expect_error) {
        (Err(text), Some(want)) => {
            return if text.contains(want.as_str()) {
                Ok(())
            } else {
                Err(format!(
                    "expected an error containing {want:?}, got:\n{text}"
                ))
            };
        }
        (Err(e), None) => return Err(format!("the run failed:\n{e}")),
        (Ok(_), Some(want)) => {
            return Err(format!(
                "expected an error containing {want:?}, but the run succeeded"
            ))
        }
        (Ok(run), None) => run,
    };
    if let Some(want) = case.expect_bad_records {
        if run.bad_records != want {
            return Err(format!(
                "expected {want} malformed records to be reported, got {}",
                run.bad_records
            ));
        }
    }
    if let Some(want) = case.expect_late_records {
        if run.late_records != want {
            return Err(format!(
                "expected {want} late records to be dropped, got {}",
                run.late_records
            ));
        }
    }
    let mut failures = Vec::new();
    for (name, expected) in &case.expected {
        let actual = &run.sinks[name].rows;
        let wanted = parse_rows(expected.rows(), &format!("expected rows of {name}"))?;
        let ordered = expected.ordered() && variant.parallelism == 1;
        if let Some(diff) = compare(&wanted, actual, ordered) {
            failures.push(format!("sink {name}: {diff}"));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

/// Records per batch when a case does not say.
pub const DEFAULT_BATCH_SIZE: usize = 1000;

/// What one run of a case wrote and counted.
#[derive(Debug)]
pub struct Run {
    /// Rows per expected sink, in the order they were written.
    pub sinks: BTreeMap<String, SinkOutput>,
    pub bad_records: u64,
    pub late_records: u64,
}

/// The rows written to one sink, and how to read them.
#[derive(Debug)]
pub struct SinkOutput {
    pub rows: Vec<serde_json::Value>,
    /// Set when the sink receives a changelog (an aggregate emitting changes).
    pub changelog: Option<Changelog>,
}

/// How the rows of a changelog replace each other.
#[derive(Debug, Clone)]
pub struct Changelog {
    /// The output columns keying its rows (the GROUP BY columns present).
    pub key: Vec<String>,
    /// The output columns holding the window's start and end, if both are
    /// there: a row replaces earlier rows of its key whose window it covers
    /// (a session grows and merges; a fixed window covers only itself).
    pub window: Option<(String, String)>,
}

/// Runs `case` as `variant` says; `Err` is the run's error text.
pub fn execute(case: &Case, variant: Variant) -> Result<Run, String> {
    let dir =
        tempfile::tempdir().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let mut overrides = PropertyOverrides::new();
    for (name, input) in &case.inputs {
        let path = dir.path().join(format!("input_{name}.{}", input.format()));
        std::fs::write(&path, input.data()).map_err(|e| e.to_string())?;
        overrides.insert(
            name.clone(),
            props(&[
                ("type", FILE_SOURCE),
                ("path", &path.display().to_string()),
                ("format", input.format()),
            ]),
        );
    }
    let output = |name: &str| dir.path().join(format!("output_{name}.jsonl"));
    for name in case.expected.keys() {
        overrides.insert(
            name.clone(),
            props(&[
                ("type", FILE_SINK),
                ("path", &output(name).display().to_string()),
                ("format", "jsonl"),
            ]),
        );
    }
    let options = RunOptions {
        batch_size: variant.batch_size.unwrap_or(DEFAULT_BATCH_SIZE),
        overrides,
        parallelism: variant.parallelism,
        decode_threads: Some(variant.decode_threads),
        decode_chunk_bytes: variant.decode_chunk_bytes,
        ..RunOptions::default()
    };
    let app = Application::from_text(
        &format!("{}.sql", case.name),
        &case.sql,
        dir.path(),
        &options,
    )
    .map_err(|e| e.to_string())?;
    app.check().map_err(|e| e.to_string())?;
    let summaries = app
        .build_jobs()
        .and_then(run_jobs)
        .map_err(|e| e.to_string())?;
    let mut sinks = BTreeMap::new();
    for name in case.expected.keys() {
        let written = std::fs::read_to_string(output(name)).unwrap_or_default();
        let rows = parse_rows(&written, &format!("output of {name}"))?;
        let changelog = app
            .plans
            .iter()
            .find(|p| &p.name == name || p.sink.name == *name)
            .filter(|p| p.emit == Some(EmitMode::Changes))
            .map(|p| {
                let role = |wanted: &str| {
                    p.output_schema
                        .fields()
                        .iter()
                        .find(|f| window_role(f) == Some(wanted))
                        .map(|f| f.name().clone())
                };
                let (start, end) = (role("start"), role("end"));
                match start.clone().zip(end.clone()) {
                    Some(window) => Changelog {
                        key: p.key.clone(),
                        window: Some(window),
                    },
                    // one window column identifies a fixed window
                    None => Changelog {
                        key: p.key.iter().cloned().chain(start).chain(end).collect(),
                        window: None,
                    },
                }
            });
        sinks.insert(name.clone(), SinkOutput { rows, changelog });
    }
    Ok(Run {
        sinks,
        bad_records: summaries.iter().map(|s| s.bad_records).sum(),
        late_records: summaries.iter().map(|s| s.late_records).sum(),
    })
}

fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
