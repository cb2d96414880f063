//! Who is calling the API, and what they may do.
//!
//! `security.auth.mode` picks how a caller is identified: `token` (HTTP
//! `Authorization: Bearer`, checked against [`tokens`]), `mtls` (the
//! verified client certificate's identity, [`certificate`], mapped to a
//! role by `security.auth.identities`) or `none`. Without `security.auth`
//! (the deployment guide's documents) or with `none`, a caller on a
//! loopback address acts as operator, so the guide's `curl -X POST
//! http://localhost:8080/checkpoint` procedures work, and everyone else as
//! viewer; nobody can deploy. [`access`] applies the roles to the routes
//! and writes the audit records.

pub mod access;
pub mod certificate;
pub mod tokens;

use std::collections::BTreeMap;
use std::net::SocketAddr;

pub use crate::config::schema::Role;
use crate::config::schema::{AuthMode, ClientAuth, Security};

/// The other end of a connection: its address and, over mutual TLS, the
/// identity of its verified client certificate.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub certificate: Option<String>,
}

/// An identified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name, the certificate's identity, or `local`/`anonymous`.
    pub name: String,
    pub role: Role,
}

/// Why a request is not served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 401: no credential, or one we do not know.
    Unauthenticated(String),
    /// 403: identified, without the role needed.
    Forbidden(String),
}

/// Identifies callers per `security.auth`.
#[derive(Debug)]
pub struct Authenticator {
    mode: Mode,
}

#[derive(Debug)]
enum Mode {
    /// By address: loopback is operator, the rest viewer.
    Address,
    Tokens(tokens::Tokens),
    Certificates(BTreeMap<String, Role>),
}

impl Authenticator {
    /// The authenticator of `security`; errors name the key.
    pub fn from_config(security: Option<&Security>) -> Result<Self, String> {
        let Some(auth) = security.and_then(|s| s.auth.as_ref()) else {
            return Ok(Self {
                mode: Mode::Address,
            });
        };
        let mode = match auth.mode {
            AuthMode::None => Mode::Address,
            AuthMode::Token => {
                let file = auth.tokens_file.as_ref().ok_or(
                    "security.auth.mode: token needs security.auth.tokens_file (a YAML list of {name, role, sha256})",
                )?;
                let tokens = tokens::Tokens::load(file)?;
                if tokens.is_empty() {
                    return Err(format!(
                        "security.auth.tokens_file {} lists no token",
                        file.display()
                    ));
                }
                Mode::Tokens(tokens)
            }
            AuthMode::Mtls => {
                let verified = security
                    .and_then(|s| s.tls.as_ref())
                    .is_some_and(|t| t.enabled && t.client_auth != ClientAuth::None);
                if !verified {
                    return Err("security.auth.mode: mtls identifies callers by their client certificates; set security.tls.enabled: true with client_auth: required (or optional) and ca_file".into());
                }
                Mode::Certificates(auth.identities.clone())
            }
        };
        Ok(Self { mode })
    }

    /// One line for the start-up log: how callers are identified.
    pub fn describe(&self) -> String {
        match &self.mode {
            Mode::Address => "API access without security.auth: callers on loopback act as operator, others as viewer; deploying through the API is off (set security.auth, docs/security.md)".into(),
            Mode::Tokens(t) => format!("API access by bearer token ({} token(s) in security.auth.tokens_file)", t.len()),
            Mode::Certificates(ids) => format!("API access by client certificate ({} identities in security.auth.identities)", ids.len()),
        }
    }

    /// Who sent a request from `peer` with header `authorization`.
    pub fn identify(&self, peer: &Peer, authorization: Option<&str>) -> Result<Caller, Refusal> {
        match &self.mode {
            Mode::Address => Ok(if peer.addr.ip().is_loopback() {
                Caller {
                    name: "local".into(),
                    role: Role::Operator,
                }
            } else {
                Caller {
                    name: "anonymous".into(),
                    role: Role::Viewer,
                }
            }),
            Mode::Tokens(tokens) => {
                let token = authorization
                    .and_then(|h| {
                        h.strip_prefix("Bearer ")
                            .or_else(|| h.strip_prefix("bearer "))
                    })
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| {
                        Refusal::Unauthenticated(
                            "no credential: send Authorization: Bearer <token>".into(),
                        )
                    })?;
                tokens
                    .find(token)
                    .map(|(name, role)| Caller {
                        name: name.to_string(),
                        role,
                    })
                    .ok_or_else(|| Refusal::Unauthenticated("unknown token".into()))
            }
            Mode::Certificates(identities) => {
                let identity = peer.certificate.as_deref().ok_or_else(|| {
                    Refusal::Unauthenticated(
                        "no credential: present a client certificate issued by security.tls.ca_file".into(),
                    )
                })?;
                identities
                    .get(identity)
                    .map(|role| Caller {
                        name: identity.to_string(),
                        role: *role,
                    })
                    .ok_or_else(|| {
                        Refusal::Forbidden(format!(
                            "'{identity}' has no role: map it in security.auth.identities"
                        ))
                    })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(addr: &str, certificate: Option<&str>) -> Peer {
        Peer {
            addr: addr.parse().unwrap(),
            certificate: certificate.map(str::to_string),
        }
    }

    #[test]
    fn without_auth_the_address_decides() {
        let auth = Authenticator::from_config(None).unwrap();
        assert_eq!(
            auth.identify(&peer("127.0.0.1:5000", None), None)
                .unwrap()
                .role,
            Role::Operator
        );
        assert_eq!(
            auth.identify(&peer("[::1]:5000", None), None).unwrap().role,
            Role::Operator
        );
        assert_eq!(
            auth.identify(&peer("10.1.2.3:5000", None), Some("Bearer x"))
                .unwrap()
                .role,
            Role::Viewer
        );
    }
}
