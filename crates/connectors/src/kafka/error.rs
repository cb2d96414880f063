//! What can go wrong talking to a Kafka cluster, with the kind of each
//! failure: librdkafka refusing a client's settings is the configuration's
//! fault and final; a request the cluster did not answer, a missing topic
//! or an undelivered message may pass and is retried.

use rdkafka::error::KafkaError as ClientError;
use rdkafka::types::RDKafkaErrorCode;
use velostream_engine::{EngineError, ErrorKind};

/// A Kafka client or cluster failure.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// librdkafka refused to create a client from the settings (an
    /// unknown property, a value it cannot use).
    #[error("cannot create a Kafka {client}: {source}")]
    Client {
        client: &'static str,
        #[source]
        source: ClientError,
    },
    /// A request to the cluster failed or timed out.
    #[error("{action}: {source}")]
    Request {
        action: String,
        #[source]
        source: ClientError,
    },
    /// The topic is not on the cluster (yet).
    #[error("topic '{topic}' does not exist")]
    NoTopic { topic: String },
    /// The cluster refused to create a topic.
    #[error("cannot create topic '{topic}': {code}")]
    CreateTopic {
        topic: String,
        code: RDKafkaErrorCode,
    },
    /// Messages the producer could not deliver.
    #[error("{failed} of {sent} messages could not be delivered to '{topic}'")]
    Undelivered {
        topic: String,
        failed: u64,
        sent: u64,
    },
    /// A topic with no messages to infer a source's columns from.
    #[error("topic '{topic}' has no messages to infer columns from; declare them with CREATE STREAM {stream} (col TYPE, ...)")]
    EmptyTopic { topic: String, stream: String },
}

impl KafkaError {
    /// A request `action` (`reading 'orders'`) that failed with `source`.
    pub fn request(action: impl Into<String>, source: ClientError) -> Self {
        Self::Request {
            action: action.into(),
            source,
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            KafkaError::Client { .. } => ErrorKind::Configuration,
            KafkaError::CreateTopic { code, .. } if refused_request(*code) => {
                ErrorKind::Configuration
            }
            KafkaError::Request { source, .. } => match source.rdkafka_error_code() {
                Some(code) if refused_request(code) => ErrorKind::Configuration,
                _ => ErrorKind::Unavailable,
            },
            KafkaError::NoTopic { .. }
            | KafkaError::CreateTopic { .. }
            | KafkaError::Undelivered { .. }
            | KafkaError::EmptyTopic { .. } => ErrorKind::Unavailable,
        }
    }

    /// The error as the engine reports it for source or sink `connector`.
    pub fn at(self, connector: &str) -> EngineError {
        EngineError::of_kind(connector, self.kind(), self)
    }
}

/// Codes that mean the cluster will refuse the same request every time:
/// credentials it rejects, an operation the client may not do, a request
/// it considers malformed.
fn refused_request(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::SaslAuthenticationFailed
            | RDKafkaErrorCode::Authentication
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::GroupAuthorizationFailed
            | RDKafkaErrorCode::ClusterAuthorizationFailed
            | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
            | RDKafkaErrorCode::InvalidConfig
            | RDKafkaErrorCode::InvalidPartitions
            | RDKafkaErrorCode::InvalidReplicationFactor
            | RDKafkaErrorCode::InvalidTopic
            | RDKafkaErrorCode::PolicyViolation
            | RDKafkaErrorCode::UnsupportedSASLMechanism
            | RDKafkaErrorCode::IllegalSASLState
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_settings_are_final_and_outages_are_retried() {
        let bad = KafkaError::Client {
            client: "consumer",
            source: ClientError::ClientCreation("No such configuration property: \"x\"".into()),
        };
        assert_eq!(bad.kind(), ErrorKind::Configuration);
        let down = KafkaError::request(
            "cannot read the metadata of 'orders'",
            ClientError::MetadataFetch(RDKafkaErrorCode::BrokerTransportFailure),
        );
        assert_eq!(down.kind(), ErrorKind::Unavailable);
        let denied = KafkaError::request(
            "cannot read the metadata of 'orders'",
            ClientError::MetadataFetch(RDKafkaErrorCode::TopicAuthorizationFailed),
        );
        assert_eq!(denied.kind(), ErrorKind::Configuration);
        assert_eq!(
            KafkaError::NoTopic {
                topic: "orders".into()
            }
            .at("orders")
            .kind(),
            ErrorKind::Unavailable
        );
    }
}
