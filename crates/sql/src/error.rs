//! Errors of the SQL front end: every one carries a position in the script
//! and, where we can offer one, a hint that tells the user what to do.

use std::fmt;

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
}

impl SqlError {
    pub fn new(message: impl Into<String>, location: Location) -> Self {
        Self {
            message: message.into(),
            location,
            hint: None,
        }
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
        out
    }
}

pub type Result<T, E = SqlError> = std::result::Result<T, E>;
