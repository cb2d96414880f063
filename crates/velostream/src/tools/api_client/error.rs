//! The errors of the API client: each names the URL and what went wrong.

use std::io;
use std::path::PathBuf;

use rustls::{AlertDescription, CertificateError};

use super::READ_TIMEOUT;

/// What went wrong with a request. An answer is not an error whatever its
/// status (401 and 403 included); only [`super::ApiClient::post_ok`] turns
/// an unwanted status into [`ApiError::Status`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Not an `http://` or `https://` URL the client can use.
    #[error("'{url}' is not a service URL: {reason}")]
    InvalidUrl { url: String, reason: &'static str },
    /// The token cannot go into a header.
    #[error("the API token contains a line break or another control character")]
    InvalidToken,
    /// A certificate or key file cannot be read or parsed.
    #[error("{what} {}: {reason}", path.display())]
    File {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// The TLS configuration cannot be built (no roots, a key that does not fit).
    #[error("TLS client setup: {0}")]
    TlsSetup(String),
    /// The host name does not resolve.
    #[error("{url}: cannot resolve the host: {source}")]
    Resolve { url: String, source: io::Error },
    /// No address of the host accepted a connection within 5 s.
    #[error("connecting to {url}: {source}")]
    Connect { url: String, source: io::Error },
    /// TLS failed: the certificate was not trusted, or the service refused ours.
    #[error("TLS handshake with {url}: {source}{}", tls_hint(.source))]
    Tls { url: String, source: rustls::Error },
    /// No answer within the read timeout.
    #[error("{url} did not answer within {}s", READ_TIMEOUT.as_secs())]
    Timeout { url: String },
    /// Sending the request or reading the answer failed.
    #[error("talking to {url}: {source}")]
    Io { url: String, source: io::Error },
    /// The answer is not an HTTP/1.x response.
    #[error("{url} did not answer valid HTTP: {reason}")]
    Malformed { url: String, reason: String },
    /// An answer whose status the caller did not accept (see [`super::ApiClient::post_ok`]).
    #[error("{method} {url} answered HTTP {status}{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Status {
        method: String,
        url: String,
        status: u16,
        message: Option<String>,
    },
}

/// What to do about the TLS failures a user can fix with a flag.
fn tls_hint(e: &rustls::Error) -> &'static str {
    match e {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            " (pass the CA that signed the service's certificate with --cacert)"
        }
        rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => {
            " (the service requires a client certificate: pass --cert and --key)"
        }
        rustls::Error::AlertReceived(
            AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::CertificateUnknown,
        ) => " (the service does not accept the client certificate of --cert)",
        _ => "",
    }
}
