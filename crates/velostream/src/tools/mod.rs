//! The operator's tools: Kafka `produce`, `consume` and `offsets`
//! ([`kafka`]), checkpoint directories (`velostream state`, [`state`]), the
//! pre-production checks (`velostream check`, [`preflight`]) and the client
//! of a running service's API ([`api_client`]).

pub mod api_client;
pub mod kafka;
pub mod preflight;
pub mod state;
