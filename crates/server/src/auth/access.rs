//! The roles routes need, the refusals, and the audit trail: every
//! request that changes something (allowed or refused) is one log record
//! of component `audit` with the caller, method, path, application and
//! status.

use std::sync::Arc;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{Authenticator, Caller, Peer, Refusal, Role};

/// The role each route needs; `None`: open, for probes and scrapers
/// (those answers show no SQL, paths or credentials).
pub const ROUTES: &[(&str, &str, Option<Role>)] = &[
    ("GET", "/health", None),
    ("GET", "/ready", None),
    ("GET", "/metrics", None),
    ("GET", "/jobs", Some(Role::Viewer)),
    ("GET", "/jobs/{name}", Some(Role::Viewer)),
    ("POST", "/checkpoint", Some(Role::Operator)),
    ("POST", "/resume", Some(Role::Operator)),
    ("DELETE", "/jobs/{name}", Some(Role::Operator)),
    ("POST", "/jobs", Some(Role::Admin)),
];

/// The role `method route` needs: `None` when it is open. A route missing
/// from [`ROUTES`] needs admin, so a new route is closed until listed.
pub fn required_role(method: &str, route: &str) -> Option<Role> {
    ROUTES
        .iter()
        .find(|(m, r, _)| *m == method && *r == route)
        .map_or(Some(Role::Admin), |(_, _, role)| *role)
}

/// Put on a response by a handler: the application the request acted on,
/// for the audit record.
#[derive(Debug, Clone)]
pub struct AuditedApplication(pub String);

/// Middleware of the health port's routes: identifies the caller, checks
/// the route's role, and audits mutating requests.
pub async fn guard(
    State(auth): State<Arc<Authenticator>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| path.clone());
    let mutating = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    // (who called, why they are refused): a caller refused for its role is still named
    let (caller, refusal) = match required_role(method.as_str(), &route) {
        None => (None, None),
        Some(needed) => {
            let header = request
                .headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            match auth.identify(&peer, header) {
                Ok(caller) if caller.role >= needed => (Some(caller), None),
                Ok(caller) => {
                    let refusal = Refusal::Forbidden(format!(
                        "{} has role {}; {method} {route} needs {}",
                        caller.name,
                        caller.role.name(),
                        needed.name()
                    ));
                    (Some(caller), Some(refusal))
                }
                Err(refusal) => (None, Some(refusal)),
            }
        }
    };
    let response = match &refusal {
        None => next.run(request).await,
        Some(refusal) => refused(refusal),
    };
    if mutating {
        let application = response
            .extensions()
            .get::<AuditedApplication>()
            .map(|a| a.0.clone())
            .or_else(|| {
                path.strip_prefix("/jobs/")
                    .filter(|n| !n.is_empty())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "-".into());
        audit(
            caller.as_ref(),
            &peer,
            &method,
            &path,
            &application,
            response.status(),
        );
    }
    response
}

/// The API's JSON error for a refusal; 401 asks for a bearer token.
fn refused(refusal: &Refusal) -> Response {
    match refusal {
        Refusal::Unauthenticated(m) => (
            StatusCode::UNAUTHORIZED,
            [(WWW_AUTHENTICATE, "Bearer")],
            Json(json!({"error": m})),
        )
            .into_response(),
        Refusal::Forbidden(m) => (StatusCode::FORBIDDEN, Json(json!({"error": m}))).into_response(),
    }
}

/// One audit record. The caller is named by its token's name or its
/// certificate's identity, never by a credential.
fn audit(
    caller: Option<&Caller>,
    peer: &Peer,
    method: &Method,
    path: &str,
    application: &str,
    status: StatusCode,
) {
    let identity = caller.map_or("-", |c| c.name.as_str());
    let role = caller.map_or("-", |c| c.role.name());
    tracing::info!(
        component = "audit",
        identity = identity,
        role = role,
        peer = %peer.addr,
        method = %method,
        path = path,
        application = application,
        status = status.as_u16(),
        "audit: {identity} ({role}) from {}: {method} {path} application {application}: {}",
        peer.addr,
        status.as_u16()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_a_rule_and_unknown_ones_need_admin() {
        assert_eq!(required_role("GET", "/metrics"), None);
        assert_eq!(required_role("GET", "/jobs/{name}"), Some(Role::Viewer));
        assert_eq!(
            required_role("DELETE", "/jobs/{name}"),
            Some(Role::Operator)
        );
        assert_eq!(required_role("POST", "/jobs"), Some(Role::Admin));
        assert_eq!(required_role("PUT", "/jobs"), Some(Role::Admin));
    }
}
