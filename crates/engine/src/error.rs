//! Errors of the streaming engine.

use datafusion::arrow::error::ArrowError;
use datafusion::common::DataFusionError;

/// Anything that stops a job.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    DataFusion(#[from] DataFusionError),
    #[error("{0}")]
    Arrow(#[from] ArrowError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A source or sink failed (opening, reading, writing).
    #[error("{connector}: {message}")]
    Connector { connector: String, message: String },
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
    pub fn connector(connector: impl Into<String>, message: impl ToString) -> Self {
        Self::Connector {
            connector: connector.into(),
            message: message.to_string(),
        }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
