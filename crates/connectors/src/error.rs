//! Why a connector failed, as a typed error whose [`kind`](ConnectorError::kind)
//! tells the supervisor what to do: a configuration error (a misspelt key,
//! a refused path) fails the application once with its message; an
//! unavailable server or file is retried with backoff.
//!
//! The shared cases (keys, values, confinement, files) live here; what only
//! one connector can fail at has its own enum ([`KafkaError`],
//! [`PostgresError`]), converted with `?`.

use velostream_engine::{EngineError, ErrorKind};

pub use crate::kafka::error::KafkaError;
pub use crate::postgres::error::PostgresError;

/// What a connector could not do, and why.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// A property the connector needs is absent.
    #[error("{connector} needs a '{key}' property")]
    MissingKey {
        connector: &'static str,
        key: &'static str,
    },
    /// A property the connector does not read (a misspelling, usually).
    #[error("unknown property '{key}' for {connector}; valid keys: {valid}")]
    UnknownKey {
        key: String,
        connector: String,
        valid: String,
    },
    /// A setting found neither in the properties nor in the
    /// configuration; the message says where it may be set.
    #[error("{0}")]
    MissingSetting(String),
    /// A `'type'` that names no connector of the role.
    #[error("unknown {role} type '{kind}'; expected one of: {known}")]
    UnknownType {
        role: &'static str,
        kind: String,
        known: String,
    },
    /// A value the connector cannot use; the message names the key and
    /// the form it expects.
    #[error("{0}")]
    InvalidValue(String),
    /// Something the service's confinement forbids its applications: a
    /// path outside the sandbox, another cluster, a host-reaching property.
    #[error("{0}")]
    Refused(String),
    /// A file or stream that could not be opened or read.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// Records that say nothing usable (a sample no columns can be
    /// inferred from).
    #[error("{0}")]
    Data(String),
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Postgres(#[from] PostgresError),
}

impl ConnectorError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ConnectorError::MissingKey { .. }
            | ConnectorError::UnknownKey { .. }
            | ConnectorError::UnknownType { .. }
            | ConnectorError::MissingSetting(_)
            | ConnectorError::InvalidValue(_)
            | ConnectorError::Refused(_) => ErrorKind::Configuration,
            ConnectorError::Io { .. } => ErrorKind::Unavailable,
            ConnectorError::Data(_) => ErrorKind::Data,
            ConnectorError::Kafka(e) => e.kind(),
            ConnectorError::Postgres(e) => e.kind(),
        }
    }

    /// The error as the engine reports it for source or sink `connector`.
    pub fn at(self, connector: &str) -> EngineError {
        EngineError::of_kind(connector, self.kind(), self)
    }
}

/// Results of connector code outside the engine's `Source`/`Sink` calls.
pub type ConnectorResult<T> = std::result::Result<T, ConnectorError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_value_mistakes_are_final_and_outages_are_retried() {
        let missing = ConnectorError::MissingKey {
            connector: "file_source",
            key: "path",
        };
        assert_eq!(missing.to_string(), "file_source needs a 'path' property");
        assert!(!missing.kind().is_retryable());
        assert!(!ConnectorError::Refused("outside the sandbox".into())
            .kind()
            .is_retryable());
        let io = ConnectorError::Io {
            what: "cannot open in.jsonl".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
        };
        assert!(io.kind().is_retryable());
        let engine = io.at("trades");
        assert_eq!(engine.kind(), ErrorKind::Unavailable);
        assert_eq!(engine.to_string(), "trades: cannot open in.jsonl: gone");
    }
}
