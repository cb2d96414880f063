//! Errors of the streaming engine.

use datafusion::arrow::error::ArrowError;
use datafusion::common::DataFusionError;

/// What kind of failure an error is: it decides whether running the same
/// application again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The application or its configuration is wrong (a misspelt key, an
    /// unknown connector, an SQL error): running it again fails the same
    /// way, so it is not retried.
    Configuration,
    /// Something it needs is not reachable or not there yet (a broker, a
    /// database, a file): worth retrying with backoff.
    Unavailable,
    /// The data could not be processed.
    Data,
    /// A failure inside the engine.
    Internal,
}

impl ErrorKind {
    /// Whether running the application again may succeed.
    pub fn is_retryable(self) -> bool {
        self != ErrorKind::Configuration
    }
}

/// Anything that stops a job.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    DataFusion(#[from] DataFusionError),
    #[error("{0}")]
    Arrow(#[from] ArrowError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A source or sink failed (checking, opening, reading, writing).
    #[error("{connector}: {message}")]
    Connector {
        connector: String,
        kind: ErrorKind,
        message: String,
    },
    /// The query uses something the engine does not implement yet.
    #[error("not yet supported: {0}")]
    NotSupported(String),
    /// The plan is inconsistent with what the operator can do.
    #[error("invalid plan: {0}")]
    Plan(String),
    /// Restoring state from a snapshot failed.
    #[error("state: {0}")]
    State(String),
}

impl EngineError {
    /// A connector failed in a way that may pass (a broker or database
    /// unreachable, a failed read or write): retried.
    pub fn connector(connector: impl Into<String>, message: impl ToString) -> Self {
        Self::of_kind(connector, ErrorKind::Unavailable, message)
    }

    /// A connector is configured wrongly (an unknown type or key, a value
    /// it cannot use): not retried.
    pub fn misconfigured(connector: impl Into<String>, message: impl ToString) -> Self {
        Self::of_kind(connector, ErrorKind::Configuration, message)
    }

    /// Source or sink `connector` failed with an error of `kind`.
    pub fn of_kind(connector: impl Into<String>, kind: ErrorKind, message: impl ToString) -> Self {
        Self::Connector {
            connector: connector.into(),
            kind,
            message: message.to_string(),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            EngineError::Connector { kind, .. } => *kind,
            EngineError::NotSupported(_) | EngineError::Plan(_) => ErrorKind::Configuration,
            EngineError::Io(_) => ErrorKind::Unavailable,
            EngineError::Arrow(_) => ErrorKind::Data,
            EngineError::DataFusion(_) | EngineError::State(_) => ErrorKind::Internal,
        }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configuration_errors_are_final() {
        assert!(!EngineError::misconfigured("t", "unknown key")
            .kind()
            .is_retryable());
        assert!(EngineError::connector("t", "broker down")
            .kind()
            .is_retryable());
        assert_eq!(
            EngineError::Plan("x".into()).kind(),
            ErrorKind::Configuration
        );
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        assert_eq!(EngineError::Io(io).kind(), ErrorKind::Unavailable);
    }
}
