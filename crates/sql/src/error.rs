//! Errors of the SQL front end: every one carries a position in the script
//! and, where we can offer one, a hint that tells the user what to do.

use std::fmt;

use datafusion::common::{DataFusionError, SchemaError};

/// A 1-based position in the SQL script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Location {
    pub line: u64,
    pub column: u64,
}

impl Location {
    pub fn new(line: u64, column: u64) -> Self {
        Self { line, column }
    }

    /// Converts a sqlparser location (0 means "unknown").
    pub fn from_sqlparser(loc: datafusion::sql::sqlparser::tokenizer::Location) -> Self {
        Self {
            line: loc.line,
            column: loc.column,
        }
    }

    pub fn is_known(&self) -> bool {
        self.line > 0
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// An error in a Velostream SQL application, positioned in its text.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message} (line {}, column {}){}", location.line, location.column, hint.as_ref().map(|h| format!("\n  hint: {h}")).unwrap_or_default())]
pub struct SqlError {
    pub message: String,
    pub location: Location,
    pub hint: Option<String>,
    /// The error may pass without a change to the application (a source
    /// whose server is not reachable yet): planning it again may succeed.
    pub transient: bool,
}

impl SqlError {
    pub fn new(message: impl Into<String>, location: Location) -> Self {
        Self {
            message: message.into(),
            location,
            hint: None,
            transient: false,
        }
    }

    /// Marks the error as one that may pass when `transient`.
    pub fn transient_if(mut self, transient: bool) -> Self {
        self.transient = transient;
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Renders the error like a compiler does: message, file position,
    /// the offending line with a caret under the column, and the hint.
    pub fn render(&self, file: &str, source: &str) -> String {
        let mut out = format!(
            "error: {}\n --> {}:{}:{}\n",
            self.message, file, self.location.line, self.location.column
        );
        if let Some(text) = source
            .lines()
            .nth(self.location.line.saturating_sub(1) as usize)
            .filter(|_| self.location.is_known())
        {
            let gutter = self.location.line.to_string();
            let pad = " ".repeat(gutter.len());
            let caret = " ".repeat(self.location.column.saturating_sub(1) as usize);
            out.push_str(&format!("{pad} |\n{gutter} | {text}\n{pad} | {caret}^\n"));
        }
        if let Some(hint) = &self.hint {
            out.push_str(&format!(" = hint: {hint}\n"));
        }
        crate::secrets::mask(&out)
    }
}

pub type Result<T, E = SqlError> = std::result::Result<T, E>;

/// Converts a DataFusion planning error, using its diagnostic span when it
/// has one, naming the columns that exist for an unknown column, and
/// reporting the root cause rather than the optimizer rule that hit it.
pub(crate) fn df_error(e: DataFusionError, fallback: Location) -> SqlError {
    let location = e
        .diagnostic()
        .and_then(|d| d.span)
        .map(|s| Location::new(s.start.line, s.start.column))
        .filter(Location::is_known)
        .unwrap_or(fallback);
    let root = e.find_root();
    let text = root.strip_backtrace();
    let first_line = text.lines().next().unwrap_or_default();
    let message = strip_prefixes(
        first_line
            .split(". Did you mean")
            .next()
            .unwrap_or_default(),
    )
    .to_string();
    let suggestion = text.find("Did you mean").map(|at| {
        text[at..]
            .lines()
            .next()
            .unwrap_or_default()
            .replace("Did you mean", "did you mean")
    });
    let hint = match root {
        DataFusionError::SchemaError(err, _) => match err.as_ref() {
            SchemaError::FieldNotFound { valid_fields, .. } => {
                let mut columns: Vec<String> = valid_fields.iter().map(|c| c.name.clone()).collect();
                columns.dedup();
                let existing = format!("the columns here are: {}", columns.join(", "));
                Some(match suggestion {
                    Some(s) => format!("{s} {existing}"),
                    None => existing,
                })
            }
            _ => suggestion,
        },
        DataFusionError::ArrowError(_, _) if message.contains("ast") => {
            Some("a literal cannot be converted to the type of the value it is compared with or assigned to".into())
        }
        _ => suggestion,
    };
    let mut err = SqlError::new(message, location);
    if let Some(h) = hint {
        err = err.with_hint(h);
    }
    err
}

fn strip_prefixes(mut text: &str) -> &str {
    for prefix in [
        "Error during planning: ",
        "Schema error: ",
        "Arrow error: ",
        "Cast error: ",
        "Execution error: ",
    ] {
        text = text.trim_start_matches(prefix);
    }
    text.trim_end_matches('.')
}
