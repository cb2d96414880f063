//! What can go wrong talking to PostgreSQL, with the kind of each failure.
//! The server's SQLSTATE decides: a rejected login, a missing database or
//! table and a syntax error fail the same way every time (configuration);
//! a dropped connection or a server shutting down may pass (unavailable);
//! a value a column refuses is the data's.

use postgres::error::SqlState;
use velostream_engine::{EngineError, ErrorKind};

/// A PostgreSQL client or server failure.
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    /// The server refused a request, or could not be reached for it.
    #[error("{context}: {message}")]
    Server {
        /// What was being done, and where (`cannot connect to PostgreSQL at app@db:5432/sales`).
        context: String,
        /// The server's message with its detail and hint, or the client's.
        message: String,
        /// The server's SQLSTATE; `None` when no server answered.
        code: Option<SqlState>,
    },
    /// TLS cannot be set up as the connection string asks.
    #[error("{0}")]
    Tls(String),
    /// A value that cannot travel between the server and Arrow.
    #[error("{0}")]
    Encoding(String),
}

impl PostgresError {
    /// `error` while doing `context`.
    pub fn server(context: impl Into<String>, error: &postgres::Error) -> Self {
        Self::Server {
            context: context.into(),
            message: describe(error),
            code: error.code().cloned(),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            PostgresError::Server { code: None, .. } => ErrorKind::Unavailable,
            PostgresError::Server {
                code: Some(code), ..
            } => kind_of(code),
            PostgresError::Tls(_) => ErrorKind::Configuration,
            PostgresError::Encoding(_) => ErrorKind::Internal,
        }
    }

    /// The error as the engine reports it for source or sink `connector`.
    pub fn at(self, connector: &str) -> EngineError {
        EngineError::of_kind(connector, self.kind(), self)
    }
}

/// A client error of source or sink `connector` while it runs, as the
/// engine reports it: the server's words, the kind its SQLSTATE says.
pub fn engine_error(connector: &str, error: &postgres::Error) -> EngineError {
    EngineError::of_kind(
        connector,
        error.code().map(kind_of).unwrap_or(ErrorKind::Unavailable),
        describe(error),
    )
}

/// A database error as the server worded it (with its detail and hint),
/// or the client's description.
pub fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = db.message().to_string();
            if let Some(d) = db.detail() {
                text.push_str(&format!(" ({d})"));
            }
            if let Some(h) = db.hint() {
                text.push_str(&format!("; hint: {h}"));
            }
            text
        }
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
    }
}

/// The kind of a SQLSTATE, by its class (the first two characters).
fn kind_of(code: &SqlState) -> ErrorKind {
    match &code.code()[..2] {
        // connection exception, insufficient resources, operator
        // intervention (shutdown), system error, serialization failure or deadlock
        "08" | "53" | "57" | "58" | "40" => ErrorKind::Unavailable,
        // data exception, integrity constraint violation
        "22" | "23" => ErrorKind::Data,
        // authorization, invalid catalog (no such database), syntax or
        // access rule (no such table or column), feature not supported,
        // invalid transaction state (no prepared transactions allowed)
        "28" | "3D" | "3F" | "42" | "0A" | "25" | "55" => ErrorKind::Configuration,
        _ => ErrorKind::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: SqlState) -> PostgresError {
        PostgresError::Server {
            context: "t".into(),
            message: "m".into(),
            code: Some(code),
        }
    }

    #[test]
    fn the_sqlstate_decides_whether_to_retry() {
        assert_eq!(
            server(SqlState::INVALID_PASSWORD).kind(),
            ErrorKind::Configuration
        );
        assert_eq!(
            server(SqlState::UNDEFINED_TABLE).kind(),
            ErrorKind::Configuration
        );
        assert_eq!(
            server(SqlState::ADMIN_SHUTDOWN).kind(),
            ErrorKind::Unavailable
        );
        assert_eq!(
            server(SqlState::TOO_MANY_CONNECTIONS).kind(),
            ErrorKind::Unavailable
        );
        assert_eq!(
            server(SqlState::NUMERIC_VALUE_OUT_OF_RANGE).kind(),
            ErrorKind::Data
        );
        let refused = PostgresError::Server {
            context: "cannot connect to PostgreSQL at db:5432".into(),
            message: "connection refused".into(),
            code: None,
        };
        assert!(refused.kind().is_retryable());
    }
}
