//! Is the configured Kafka cluster there, and may we use it? One metadata
//! request with the configured security settings, for `/ready`,
//! `kafka_broker_availability` and `velostream check`.
//!
//! A metadata request that fails says only that the broker could not be
//! reached in time (`BrokerTransportFailure`, `OperationTimedOut`), also
//! when the broker was reached and refused the TLS handshake or the SASL
//! credentials. librdkafka reports those causes to the client's error
//! callback, so the probe's client keeps the last one and the failure
//! names it: "authentication failed" is what an operator has to act on.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

use super::{client_settings, KafkaDefaults};
use crate::error::ConnectorResult;
use crate::kafka::error::KafkaError;

/// What a probe of the configured cluster learnt.
#[derive(Debug, Clone)]
pub struct KafkaProbe {
    /// The bootstrap servers asked.
    pub servers: String,
    pub brokers: usize,
    pub topics: usize,
}

/// The probe client's context: the last error librdkafka reported on its
/// own (connection, TLS and SASL failures), and whether it was one that
/// waiting longer cannot cure. Its messages name mechanisms and
/// certificates, never credentials.
#[derive(Default)]
struct ProbeContext {
    last_error: Mutex<Option<(String, bool)>>,
}

impl ProbeContext {
    fn last_error(&self) -> Option<(String, bool)> {
        self.last_error.lock().ok().and_then(|last| last.clone())
    }
}

impl ClientContext for ProbeContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        let refused = matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SSL)
        );
        let text = if reason.is_empty() {
            error.to_string()
        } else {
            reason.to_string()
        };
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some((text, refused));
        }
    }
}

impl ConsumerContext for ProbeContext {}

/// How long one metadata request may wait before the client's events are
/// served (which is when its error callback runs).
const ATTEMPT: Duration = Duration::from_millis(500);

/// Asks the cluster of `defaults` for its metadata within `timeout`,
/// connecting as the tools do ([`client_settings`]: the configured
/// security settings and credentials).
pub fn probe(defaults: &KafkaDefaults, timeout: Duration) -> ConnectorResult<KafkaProbe> {
    let settings = client_settings(defaults, None)?;
    let servers = settings.bootstrap_servers().to_string();
    let consumer: BaseConsumer<ProbeContext> = settings
        .client_config()
        .create_with_context(ProbeContext::default())
        .map_err(|source| KafkaError::Client {
            client: "consumer",
            source,
        })?;
    let deadline = Instant::now() + timeout;
    let metadata = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let failed = match consumer.fetch_metadata(None, left.min(ATTEMPT)) {
            Ok(metadata) => break metadata,
            Err(e) => e,
        };
        // serves the client's events: its error callback runs here
        let _ = consumer.poll(Duration::ZERO);
        let cause = consumer.context().last_error();
        let refused = cause.as_ref().is_some_and(|(_, refused)| *refused);
        if refused || Instant::now() >= deadline {
            let what = match cause {
                Some((cause, true)) => format!("{servers} refused the connection: {cause}"),
                Some((cause, false)) => {
                    format!("{servers} not reachable within {timeout:?} ({cause})")
                }
                None => format!("{servers} not reachable within {timeout:?}"),
            };
            return Err(KafkaError::request(what, failed).into());
        }
    };
    Ok(KafkaProbe {
        brokers: metadata.brokers().len(),
        topics: metadata.topics().len(),
        servers,
    })
}
